"""The built wheel: one `kinema` package, the built-in bundle inside, generate works from it alone."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("kinema-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"kinema"}, f"top-level entries besides kinema: {tops}"
    for sub in ("runtime", "export", "quantize", "models"):
        assert f"kinema/{sub}/__init__.py" in names
    bundle = [n for n in names if n.startswith("kinema/runtime/bundles/kinema-tiny/")]
    for f in ("manifest.json", "tokenizer.json", "text_encoder.onnx", "denoiser.onnx", "decoder_prefix.onnx", "decoder_step.onnx"):
        assert f"kinema/runtime/bundles/kinema-tiny/{f}" in bundle
    assert any(n.endswith("LICENSE-all-MiniLM-L6-v2.txt") for n in bundle)
    assert "kinema/models/data/shapes_prompts.jsonl" in names


@pytest.mark.slow
def test_generate_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    code = (
        "import sys, kinema; from kinema.runtime.cli import main;"
        "assert kinema.__file__.startswith(sys.argv[1]), kinema.__file__;"
        "rc = main(['generate', 'a red ball bouncing on a white background', '--steps', '2', '-q', '-o', sys.argv[2]]);"
        "assert 'torch' not in sys.modules; sys.exit(rc)"
    )
    out = tmp_path / "ball.mp4"
    subprocess.run([sys.executable, "-c", code, str(target), str(out)], check=True, env=env, cwd=tmp_path)
    from kinema.runtime.video.core import read_video

    frames, fps = read_video(out)
    assert frames.shape[0] == 17 and fps == 8
