"""A bundle's distilled schedule (sampler.timesteps, shift, guidance): sampled exactly, step for step against
diffusers' FlowMatchEulerDiscreteScheduler given the same list, and a warning when settings leave it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bundle_copies import clone
from kinema.runtime import Pipeline
from kinema.runtime.bundle.load import default_bundle_path
from kinema.runtime.bundle.manifest import parse_manifest
from kinema.runtime.cli.main import main
from kinema.runtime.errors import BundleError
from kinema.runtime.run import prepare
from kinema.runtime.request import Request
from kinema.runtime.sampling import schedules

TIMESTEPS = [1000.0, 750.0, 500.0, 250.0]  # lightx2v's 4-step Wan list, shift 5, guidance 1
PROMPT = "a red ball bouncing"


def _distilled(tmp_path: Path, **sampler) -> Path:
    """The built-in tiny bundle with a 4-step distilled schedule in its manifest."""
    out = clone(default_bundle_path(), tmp_path / "distilled")
    m = json.loads((out / "manifest.json").read_text())
    m["sampler"].update({"timesteps": TIMESTEPS, "steps": 4, "shift": 5.0, "guidance": 1.0, "sampler": "euler", **sampler})
    (out / "manifest.json").unlink()  # a hard link to the installed bundle's manifest
    (out / "manifest.json").write_text(json.dumps(m))
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return _distilled(tmp_path_factory.mktemp("distilled"))


def test_the_bundle_samples_exactly_its_timesteps_as_diffusers_does(bundle):
    torch = pytest.importorskip("torch")
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = Pipeline.from_bundle(bundle)
    st = pipe.check_inputs(PROMPT, frames=5, height=32, width=32, seed=3)
    assert (st.steps, st.guidance, st.shift, st.sampler) == (4, 1.0, 5.0, "euler")
    sigmas = pipe.sigmas(st)
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    ref.set_timesteps(sigmas=[t / 1000 for t in TIMESTEPS])  # diffusers' way to a shifted custom schedule
    assert np.abs(sigmas - ref.sigmas.double().numpy()).max() < 1e-6  # measured 2.0e-8 (diffusers keeps float32)
    assert np.abs(sigmas[:-1] * 1000 - ref.timesteps.double().numpy()).max() < 1e-4  # the model's timesteps: 1000, 937.5, 833.3, 625
    assert sigmas[1] == pytest.approx(0.9375, abs=1e-12)

    embeds, mask = pipe.encode_text([st.prompt, st.negative_prompt])
    x0 = pipe.initial_noise(st)
    states = []
    ours = pipe.sample(st, x0, sigmas, text=(embeds, mask), callback=lambda p: states.append((p.sigma, p.x.copy())))
    states.append((0.0, ours))
    assert [s for s, _ in states] == pytest.approx(list(sigmas), abs=1e-12)

    # Step for step: diffusers' scheduler steps from kinema's state with the same network's velocity. (The built-in
    # denoiser is dynamic int8, whose activation ranges follow the input: two free-running chains part by rounding.)
    session = pipe.session("denoiser")
    worst = 0.0
    for i, t in enumerate(ref.timesteps):
        x = states[i][1]
        feeds = {"latents": x, "timestep": np.array([float(ref.sigmas[i])], np.float32), "text_embeds": embeds[:1], "text_mask": mask[:1],
                 "cond_latents": np.zeros_like(x0), "cond_mask": np.zeros((1, 1, x0.shape[2], 1, 1), np.float32)}
        (v,) = session.run(["prediction"], feeds)
        want = ref.step(torch.from_numpy(v), t, torch.from_numpy(x)).prev_sample.numpy()
        worst = max(worst, float(np.abs(want - states[i + 1][1]).max()))
    assert float(np.abs(ours - x0).max()) > 0.1
    assert worst < 1e-5, f"a step differs from diffusers' by {worst}"  # measured 0 .. 2.4e-7 over the 4 steps


def test_settings_that_leave_the_schedule_warn_in_one_line(bundle, tmp_path, capsys):
    pipe = Pipeline.from_bundle(bundle)
    assert prepare(pipe, Request("generate", PROMPT, frames=5, height=32, width=32)).warnings == []
    eight = prepare(pipe, Request("generate", PROMPT, frames=5, height=32, width=32, steps=8))
    (line,) = eight.warnings
    assert line.startswith("steps=8 leaves this bundle's distilled schedule (4 steps at timesteps 1000, 750, 500, 250, shift 5, guidance 1)")
    assert "sampling 8 steps on the euler flow grid instead" in line
    assert np.array_equal(pipe.sigmas(eight.settings), schedules.flow_sigmas(8, 5.0))  # the sampler's own grid
    (line,) = prepare(pipe, Request("generate", PROMPT, frames=5, height=32, width=32, guidance=5.0)).warnings
    assert line.startswith("guidance=5 leaves") and line.endswith("the distilled model may lose quality")
    assert len(pipe.sigmas(pipe.check_inputs(PROMPT, guidance=5.0))) == 5  # still the 4 listed steps

    out = tmp_path / "v.mp4"
    assert main(["generate", PROMPT, "--bundle", str(bundle), "-o", str(out), "--frames", "5", "--height", "32", "--width", "32",
                 "--steps", "2", "-q"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert [ln for ln in err if "warning" in ln] == [
        "kinema: warning: steps=2 leaves this bundle's distilled schedule (4 steps at timesteps 1000, 750, 500, 250, shift 5, "
        "guidance 1): sampling 2 steps on the euler flow grid instead"]


@pytest.mark.parametrize("sampler,needle", [
    ({"steps": 3}, "sampler.timesteps has 4 entries but sampler.steps = 3; they must be equal"),
    ({"timesteps": [1000, 500, 750, 250]}, "sampler.timesteps must be strictly descending"),
    ({"timesteps": [1500, 750, 500, 250]}, "sampler.timesteps[0] = 1500.0 is outside (0, 1000]"),
    ({"timesteps": "1000,750"}, "sampler.timesteps = '1000,750' is not a list"),
])
def test_a_bad_timestep_list_is_refused_naming_the_key(tmp_path, sampler, needle):
    m = json.loads((default_bundle_path() / "manifest.json").read_text())
    m["sampler"].update({"timesteps": TIMESTEPS, "steps": 4, **sampler})
    with pytest.raises(BundleError) as e:
        parse_manifest(m)
    assert needle in str(e.value)


def test_info_shows_the_timestep_list(bundle, capsys):
    assert main(["info", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "euler, 4 steps, guidance 1, shift 5" in out
    assert "distilled  timesteps 1000, 750, 500, 250 (before the shift)" in out
