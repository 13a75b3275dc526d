"""Signals and leftovers: SIGTERM, SIGHUP and SIGINT mid-generation leave nothing; after SIGKILL the next run sweeps the stale file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kinema.runtime.cli import main

PROMPT = "a red circle moving right on a black background"


def _start(target, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kinema.runtime.cli", "generate", PROMPT, "--seconds", "40", "--steps", "20", "-o", str(target), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_part(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> list[Path]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        parts = [p for p in folder.iterdir() if p.name.endswith(".part")]
        if parts:
            time.sleep(0.5)  # well inside the sampling loop
            return parts
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never started writing")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_mid_run_leaves_nothing(tmp_path, sig, code):
    proc = _start(tmp_path / "clip.mp4")
    _wait_for_part(tmp_path, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("kinema")]
    assert "Traceback" not in err and ("stopped by" in lines[-1] or "interrupted" in lines[-1])
    assert list(tmp_path.iterdir()) == []


def test_sigterm_into_a_new_frames_folder_leaves_no_folder(tmp_path):
    proc = _start(f"{tmp_path}/frames/")
    _wait_for_part(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143 and list(tmp_path.iterdir()) == []


def test_after_sigkill_the_next_run_sweeps_the_stale_file(tmp_path):
    proc = _start(tmp_path / "clip.mp4")
    stale = _wait_for_part(tmp_path, proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert all(p.exists() for p in stale)  # nothing can clean up after SIGKILL itself
    assert main(["generate", PROMPT, "--steps", "2", "--frames", "5", "-q", "-o", str(tmp_path / "clip.mp4")]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_new_frames_folder_appears_whole(tmp_path):
    assert main(["generate", PROMPT, "--steps", "2", "--frames", "5", "-q", "-o", f"{tmp_path}/frames/"]) == 0
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:05d}.png" for i in range(5)]
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]


@pytest.mark.parametrize("prompt", ["\u200b\u200b\u200b", "\x00", " \u2060\ufeff ", "\u202e\u202c"])
def test_an_invisible_prompt_is_empty(tmp_path, capsys, prompt):
    assert main(["generate", prompt, "-o", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompt is empty" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from kinema.runtime import run

    def broken(*a, **k):
        raise ZeroDivisionError("float division by zero\nmore detail")

    monkeypatch.setattr(run, "run", broken)
    monkeypatch.delenv("KINEMA_DEBUG", raising=False)
    assert main(["generate", PROMPT, "--steps", "2", "--frames", "5", "-o", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "kinema generate: internal error: ZeroDivisionError: float division by zero (KINEMA_DEBUG=1 shows the traceback)"
    assert not any("Traceback" in ln for ln in err) and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("KINEMA_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["generate", PROMPT, "--steps", "2", "--frames", "5", "-o", str(tmp_path / "x.mp4")])


def test_a_disk_error_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from kinema.runtime.video import core

    def full(self, frames):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.VideoWriter, "write", full)
    assert main(["generate", PROMPT, "--steps", "2", "--frames", "5", "-q", "-o", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kinema generate: error: No space left on device"] and list(tmp_path.iterdir()) == []
