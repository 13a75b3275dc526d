"""Step-skipping accelerations: off is exactly the plain sampler; on skips the expected calls and stays close."""

from __future__ import annotations

import numpy as np
import pytest

from kinema.quantize.metrics import psnr_db as psnr
from kinema.runtime import InputError, Pipeline
from kinema.runtime.sampling import samplers, schedules
from kinema.runtime.sampling.accel import Accel, GuidanceCache, accelerate
from kinema.runtime.cli.main import main as cli_main

PROMPT = "a red ball bouncing on a white background"
# PSNR of the accelerated video against the plain one on the random-init test bundle
# (10 steps, guidance 5, seed 3): measured 49.1-54.2 dB; bound with margin.
PSNR_BOUND_DB = 40.0


class CountingSession:
    """Wraps the denoiser session; counts calls and latent rows (one row = one guidance branch)."""

    def __init__(self, session):
        self.session, self.calls, self.rows = session, 0, 0

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feeds, *a, **k):
        self.calls += 1
        self.rows += feeds["latents"].shape[0]
        return self.session.run(outputs, feeds, *a, **k)


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.from_bundle(tiny_bundle)


@pytest.fixture
def counter(pipe, monkeypatch):
    wrapped = CountingSession(pipe.session("denoiser"))
    real = Pipeline.session
    monkeypatch.setattr(Pipeline, "session", lambda self, name: wrapped if name == "denoiser" else real(self, name))
    return wrapped


@pytest.fixture(scope="module")
def plain(pipe):
    return pipe.generate(PROMPT, steps=10, seed=3)


def test_off_is_exactly_the_plain_output(pipe, plain):
    for off in (None, Accel(), Accel(teacache=0.0, cfg_cache=1, leap=0.0)):
        v = pipe.generate(PROMPT, steps=10, seed=3, accel=off)
        assert np.array_equal(v.frames, plain.frames)
        assert "accel" not in v.metadata
    model = lambda x, s: x  # noqa: E731
    assert accelerate(model, np.array([1.0, 0.0]), Accel()) is model


@pytest.mark.parametrize(
    "accel,rows",
    [
        # cfg_cache=3, warmup 3: both branches at calls 0,1,2 then 3,6,9; cond only at 4,5,7,8.
        (Accel(cfg_cache=3), 6 * 2 + 4 * 1),
        (Accel(cfg_cache=2, cfg_warmup=0), 5 * 2 + 5 * 1),
    ],
)
def test_guidance_cache_runs_the_unconditional_branch_less(pipe, plain, counter, accel, rows):
    v = pipe.generate(PROMPT, steps=10, seed=3, accel=accel)
    assert counter.calls == 10 and counter.rows == rows
    assert psnr(v.frames, plain.frames) >= PSNR_BOUND_DB
    assert v.metadata["accel"] == accel.metadata()


@pytest.mark.parametrize("accel", [Accel(teacache=0.15), Accel(leap=0.9, leap_after=0.5)])
def test_step_skipping_calls_less_and_stays_close(pipe, plain, counter, accel):
    v = pipe.generate(PROMPT, steps=10, seed=3, accel=accel)
    assert 2 <= counter.calls < 10
    assert psnr(v.frames, plain.frames) >= PSNR_BOUND_DB


def _euler(model, steps=20, shift=1.0, dim=64):
    x = np.random.default_rng(0).standard_normal(dim).astype(np.float64)
    return samplers.sample_euler(model, x, schedules.flow_sigmas(steps, shift)), x


@pytest.mark.parametrize("threshold,shift", [(0.1, 1.0), (0.25, 1.0), (0.3, 3.0)])
def test_teacache_skips_where_the_input_changed_little(threshold, shift):
    # denoised = 0 makes x_i = x_0 σ_i / σ_0 whether or not a call is skipped (the reused
    # direction x/σ is the same), so the input's relative L1 change is 1 - σ_i/σ_{i-1}.
    calls = []

    def model(x, s):
        calls.append(s)
        return np.zeros_like(x)

    sigmas = schedules.flow_sigmas(20, shift)
    plain, x0 = _euler(lambda x, s: np.zeros_like(x), shift=shift)
    stats = {}
    out = samplers.sample_euler(accelerate(model, sigmas, Accel(teacache=threshold), stats), x0, sigmas)
    expected, acc = [0], 0.0
    for i in range(1, 20):
        acc += 1.0 - sigmas[i] / sigmas[i - 1]
        if acc >= threshold or i == 19:
            expected.append(i)
            acc = 0.0
    assert calls == [float(sigmas[i]) for i in expected]
    assert stats == {"calls": 20, "skipped": 20 - len(expected)}
    assert len(expected) < 20
    np.testing.assert_allclose(out, plain, atol=1e-12)


def test_leap_jumps_once_the_path_is_straight():
    calls = []

    def straight(x, s):
        calls.append(s)
        return np.zeros_like(x)  # d = x / σ: the same direction at every step

    sigmas = schedules.flow_sigmas(20, 1.0)
    out, _ = _euler(accelerate(straight, sigmas, Accel(leap=0.999, leap_after=0.5)))
    assert len(calls) == 11  # calls 0..10; at step 10 (half of 20) the directions agree
    np.testing.assert_allclose(out, 0.0, atol=1e-12)  # the leap lands on x0 = 0, as the plain path does

    calls.clear()
    e = np.eye(64)

    def turning(x, s):  # the direction alternates between two orthogonal axes: never straight
        calls.append(s)
        return x - s * e[len(calls) % 2]

    _euler(accelerate(turning, sigmas, Accel(leap=0.5, leap_after=0.1)))
    assert len(calls) == 20


def test_guidance_cache_reuses_the_last_difference():
    gc = GuidanceCache(interval=3, warmup=1)
    cond, uncond = np.array([2.0, 1.0]), np.array([1.0, 1.0])
    assert gc.full()
    gc.store(cond, uncond)
    assert [gc.full() for _ in range(6)] == [True, False, False, True, False, False]
    np.testing.assert_allclose(gc.apply(np.array([5.0, 0.0]), 4.0), [5.0 + 3.0 * 1.0, 0.0])


@pytest.mark.parametrize(
    "kw,needle",
    [({"teacache": -0.1}, "teacache=-0.1"), ({"cfg_cache": 2.5}, "cfg-cache=2.5"), ({"leap": 1.0}, "leap=1.0"), ({"leap_after": 0.0}, "leap-after=0.0")],
)
def test_bad_settings_name_the_value(kw, needle):
    with pytest.raises(InputError, match=needle.replace(".", r"\.")):
        Accel(**kw)


def test_cli_refuses_a_bad_flag_before_work(tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert cli_main(["generate", "a ball", "-o", str(out), "--cfg-cache", "-2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cfg-cache=-2" in err and "\n" not in err and not out.exists()
