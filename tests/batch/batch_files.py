"""Batch files for the tests, and the `kinema` commands that must make the same videos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kinema.runtime.cli import main
from kinema.runtime.video.codecs import read_video

PROMPT = "a red circle moving right on a black background"


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mixed(tmp: Path) -> Path:
    """Two generate lines (one with two seeds) and an animate line with its image."""
    img = np.zeros((48, 48, 3), np.uint8)
    img[10:30, 12:32] = (220, 40, 40)
    Image.fromarray(img).save(tmp / "red.png")
    return write_lines(tmp / "batch.jsonl", [
        {"prompt": PROMPT, "seeds": [3, 4], "steps": 3, "name": "circle"},
        {"prompt": "a blue square moving left on a white background", "seed": 7, "steps": 3, "frames": 9},
        {"task": "animate", "prompt": "a red square moving right", "inputs": ["red.png"], "seed": 1, "steps": 3, "name": "anim.webm"},
    ])


MIXED_OUTPUTS = {"circle-seed3.mp4": ["generate", PROMPT, "--steps", "3", "--seed", "3"],
                 "circle-seed4.mp4": ["generate", PROMPT, "--steps", "3", "--seed", "4"],
                 "00002-seed7.mp4": ["generate", "a blue square moving left on a white background", "--steps", "3", "--seed", "7", "--frames", "9"],
                 "anim.webm": ["animate", "{tmp}/red.png", "--prompt", "a red square moving right", "--steps", "3", "--seed", "1"]}


def same_as_commands(tmp: Path, out: Path, threads: int = 1) -> None:
    """Every batch output has the frames the matching `kinema` command makes at the same ONNX Runtime threads.

    (The thread count matters where a task runs the fp32 encoder: its last bits differ between
    thread counts, and the int8 denoiser's rounding can turn that into a visible change.)
    """
    for name, cmd in MIXED_OUTPUTS.items():
        ref = tmp / f"ref-{name}"
        assert main([c.format(tmp=tmp) for c in cmd] + ["-o", str(ref), "-q", "--threads", str(threads)]) == 0
        a, b = read_video(out / name)[0], read_video(ref)[0]
        assert a.shape == b.shape and np.array_equal(a, b), name


def rows(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]


def start_batch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kinema.runtime.cli", "batch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def wait_for(pred, timeout: float = 60.0, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
