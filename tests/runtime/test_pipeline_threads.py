"""Pipeline guarantees for embedding: concurrent generation, memory estimate, logging instead of prints."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from kinema.runtime import Pipeline
from kinema.runtime.engine import memory

SETTINGS = dict(frames=5, steps=3, guidance=3.0)


def test_two_threads_match_two_sequential_runs(tiny_bundle):
    # Fresh pipelines: the threads also race to open the graphs for the first time.
    sequential = Pipeline.from_bundle(tiny_bundle)
    expected = {seed: sequential.generate("a red ball", seed=seed, **SETTINGS).frames for seed in (1, 2)}
    pipe = Pipeline.from_bundle(tiny_bundle)
    got, errors = {}, []
    start = threading.Barrier(2)

    def work(seed):
        try:
            start.wait()
            got[seed] = pipe.generate("a red ball", seed=seed, **SETTINGS).frames
        except BaseException as e:  # reported below, in the test's own thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not np.array_equal(expected[1], expected[2])  # the seeds give different clips
    for seed in (1, 2):
        # ONNX Runtime on CPU is deterministic run to run: the frames are identical, not just close
        assert np.array_equal(got[seed], expected[seed]), seed


def test_estimate_memory_per_stage(tiny_bundle):
    pipe = Pipeline.from_bundle(tiny_bundle)
    small, large = pipe.estimate_memory(9, 32, 32), pipe.estimate_memory(33, 128, 128)
    assert set(small) == {"runtime", "weights", "text_encoder", "denoiser", "decoder", "video", "peak"}
    assert small["peak"] == sum(v for k, v in small.items() if k != "peak")
    graphs = sum((tiny_bundle / f"{n}.onnx").stat().st_size for n in ("text_encoder", "denoiser", "decoder_prefix", "decoder_step"))
    assert small["weights"] == int(graphs * memory.WEIGHT_FACTOR) == large["weights"]
    assert large["video"] == 33 * 128 * 128 * 3 * 9  # two float copies and the uint8 video
    for stage in ("denoiser", "decoder", "video", "peak"):
        assert large[stage] > small[stage], stage
    assert pipe.estimate_memory() == pipe.estimate_memory(pipe.bundle.video.frames, pipe.bundle.video.height, pipe.bundle.video.width)


def test_bad_size_for_an_estimate_is_refused(tiny_bundle):
    from kinema.runtime import InputError

    with pytest.raises(InputError, match="frames=6"):
        Pipeline.from_bundle(tiny_bundle).estimate_memory(6, 64, 64)


def test_logs_to_the_kinema_logger_and_prints_nothing(tiny_bundle, caplog, capsys):
    pipe = Pipeline.from_bundle(tiny_bundle)
    with caplog.at_level(logging.INFO, logger="kinema"):
        pipe.generate("a red ball", frames=5, steps=1)
    opened = [r.getMessage() for r in caplog.records if r.name == "kinema" and r.getMessage().startswith("opened ")]
    assert len(opened) == 4 and any("denoiser graph" in m for m in opened)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_an_estimate_checks_the_size_only_not_a_prompt(tiny_bundle, monkeypatch):
    from kinema.runtime import settings as pipeline_mod

    def refuse(prompt, policy):
        raise AssertionError(f"the prompt policy ran on {prompt!r}")

    monkeypatch.setattr(pipeline_mod, "check_prompt", refuse)
    pipe = Pipeline.from_bundle(tiny_bundle)
    assert pipe.estimate_memory(9, 32, 32)["peak"] > 0
    with pytest.raises(AssertionError, match="policy ran"):
        pipe.check_inputs("a red ball")
