"""Pipeline behaviour beyond parity: settings resolution, callbacks, cancellation, noise."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from kinema.runtime.engine.progress import Progress

from kinema.runtime import Cancelled, InputError, Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.from_bundle(tiny_bundle)


def test_defaults_come_from_the_manifest(pipe):
    st = pipe.check_inputs("a red ball")
    v, s = pipe.bundle.video, pipe.bundle.sampler
    assert (st.frames, st.height, st.width, st.fps) == (v.frames, v.height, v.width, v.fps)
    assert (st.steps, st.guidance, st.shift, st.sampler) == (s["steps"], s["guidance"], s["shift"], s["sampler"])


@pytest.mark.parametrize("seconds,frames", [(2.0, 17), (1.0, 9), (0.1, 1), (2.3, 17), (2.6, 21)])
def test_seconds_round_to_the_nearest_valid_frame_count(pipe, seconds, frames):
    # 8 fps: 2.3 s = 18.4 frames -> 4k+1 nearest is 17; 2.6 s = 20.8 -> 21.
    assert pipe.check_inputs("x", seconds=seconds, fps=8.0).frames == frames


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"frames": 16}, "frames=16"),
        ({"frames": 2401}, "frames=2401"),
        ({"width": 72}, "width=72"),
        ({"height": 16}, "height=16"),
        ({"steps": 0}, "steps=0"),
        ({"guidance": float("nan")}, "guidance=nan"),
        ({"shift": -1.0}, "shift=-1.0"),
        ({"seed": -3}, "seed=-3"),
        ({"sampler": "lms"}, "'lms'"),
        ({"seconds": 0.0}, "seconds=0.0"),
        ({"seconds": 301.0}, "seconds=301"),
        ({"frames": 9, "seconds": 1.0}, "not both"),
        ({"cfg_mode": "parallel"}, "'parallel'"),
    ],
)
def test_bad_settings_name_the_value(pipe, kw, needle):
    with pytest.raises(InputError) as e:
        pipe.check_inputs("a red ball", **kw)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_empty_prompt_is_refused(pipe):
    with pytest.raises(InputError, match="prompt is empty"):
        pipe.check_inputs("   ")


def test_callback_once_per_step_with_the_payload(pipe):
    seen = []
    pipe.generate("a red ball", frames=5, steps=4, callback=seen.append)
    assert [p["step"] for p in seen] == [0, 1, 2, 3]
    assert all(isinstance(p, Progress) and p.total == 4 and p.windows == 1 and p.x.shape == p.denoised.shape for p in seen)
    sigmas = [p["sigma"] for p in seen]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] == pytest.approx(1.0)
    assert seen[-1]["sigma_next"] == 0.0


def test_cancel_stops_within_one_step(pipe):
    cancel = threading.Event()
    seen = []

    def cb(p):
        seen.append(p["step"])
        if p["step"] == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        pipe.generate("a red ball", frames=5, steps=10, callback=cb, cancel=cancel)
    assert seen == [0, 1]


def test_cancel_from_callback(pipe):
    def cb(p):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        pipe.generate("a red ball", frames=5, steps=3, callback=cb)


def test_noise_is_seeded_pcg64(pipe):
    st = pipe.check_inputs("x", frames=9, height=32, width=48, seed=123)
    noise = pipe.initial_noise(st)
    expected = np.random.Generator(np.random.PCG64(123)).standard_normal((1, 8, 3, 4, 6), dtype=np.float32)
    assert noise.dtype == np.float32 and np.array_equal(noise, expected)


def test_metadata_records_the_settings(pipe):
    video = pipe.generate("a red ball", frames=5, steps=2, seed=9, guidance=3.0)
    m = video.metadata
    assert (m["prompt"], m["seed"], m["steps"], m["guidance"], m["frames"]) == ("a red ball", "9", "2", "3.0", "5")
    assert m["bundle_sha256"] == pipe.bundle.digest and m["generator"].startswith("kinema ")
