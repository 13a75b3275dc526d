"""A run whose estimated peak is over the available memory is refused before any graph opens, unless told otherwise."""

from __future__ import annotations

import pytest

from kinema.runtime import Pipeline, run
from kinema.runtime.cli import main
from kinema.runtime.engine.memory import estimate_memory
from kinema.runtime.errors import InputError

PROMPT = "a red circle moving right on a black background"


def test_over_the_available_memory_is_exit_2_before_any_graph(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run, "available_bytes", lambda: 50 << 20)
    opened = []
    monkeypatch.setattr(Pipeline, "session", lambda self, name: opened.append(name))
    assert main(["generate", PROMPT, "--steps", "2", "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "by kinema's estimate" in err[0] and "0.05 GiB are available" in err[0] and "--no-memory-check" in err[0]
    assert opened == [] and list(tmp_path.iterdir()) == []


def test_no_memory_check_runs_anyway(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "available_bytes", lambda: 50 << 20)
    assert main(["generate", PROMPT, "--steps", "2", "--frames", "5", "-q", "--no-memory-check", "-o", str(tmp_path / "x.mp4")]) == 0


def test_the_limit_is_the_estimate_of_one_window():
    pipe = Pipeline.from_bundle()
    st = pipe.check_inputs(PROMPT, seconds=30)  # past one window
    v = pipe.bundle.video
    peak = estimate_memory(pipe.bundle, v.max_frames, st.height, st.width, guidance=True)["peak"]
    run.check_memory(pipe, st, in_memory=False, available=peak)
    with pytest.raises(InputError, match=f"{v.max_frames} frames at"):
        run.check_memory(pipe, st, in_memory=False, available=peak - 1)
    held = st.frames * st.height * st.width * 3  # a returned Video holds every frame
    run.check_memory(pipe, st, in_memory=True, available=peak + held)
    with pytest.raises(InputError):
        run.check_memory(pipe, st, in_memory=True, available=peak + held - 1)
