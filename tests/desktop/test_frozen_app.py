"""The desktop example's headless mode, and its PyInstaller one-folder build run without Python.

The frozen test builds examples/desktop/kinema_desktop.spec (the built-in bundle inside),
then runs the binary with a bare environment: PATH without the virtual environment, no
PYTHONPATH, HOME in a temporary folder, no display. It must write an MP4 that reads back,
and the folder must hold no torch (no torch/ directory, no libtorch* library).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kinema.runtime.video.core import read_video

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "examples" / "desktop"
sys.path.insert(0, str(APP_DIR))

import kinema_desktop  # noqa: E402

SMALL = ["--frames", "5", "--steps", "2", "--width", "32", "--height", "32"]


def test_headless_generates_a_clip(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert kinema_desktop.main(["--generate", "a red ball", "-o", str(out), "--bundle", str(tiny_bundle), *SMALL]) == 0
    frames, _ = read_video(out)
    assert frames.shape[0] == 5
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"wrote {out} (5 frames, 32x32)")


def test_headless_bad_value_exits_2_and_writes_nothing(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = kinema_desktop.main(["--generate", "a red ball", "-o", str(out), "--bundle", str(tiny_bundle), "--frames", "6"])
    err = capsys.readouterr().err
    assert rc == 2 and "frames=6" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
def test_frozen_app_runs_without_python(tmp_path, record_property):
    build = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN", "--distpath", str(tmp_path / "dist"),
         "--workpath", str(tmp_path / "build"), str(APP_DIR / "kinema_desktop.spec")],
        capture_output=True, text=True, timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    app = tmp_path / "dist" / "kinema-desktop"
    exe = app / "kinema-desktop"
    assert exe.is_file()

    # no torch: not as a package folder, not as a native library
    assert not [p for p in app.rglob("*") if p.is_dir() and p.name in ("torch", "transformers", "diffusers")]
    assert not [p for p in app.rglob("libtorch*")]
    assert (app / "_internal" / "kinema" / "runtime" / "bundles" / "kinema-tiny" / "manifest.json").is_file()
    size = folder_bytes(app)
    record_property("frozen_folder_bytes", size)
    print(f"frozen folder: {size / 2**20:.0f} MiB")

    home = tmp_path / "home"
    home.mkdir()
    out = home / "clip.mp4"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}  # no venv, no PYTHONPATH, no DISPLAY
    assert str(Path(sys.executable).parent) not in env["PATH"]
    run = subprocess.run([str(exe), "--generate", "a red ball bouncing", "-o", str(out), *SMALL],
                         capture_output=True, text=True, cwd=home, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    frames, fps = read_video(out)
    assert frames.shape[0] == 5 and fps == pytest.approx(8.0)
