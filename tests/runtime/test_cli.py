"""The `kinema` command, run as a user runs it (a subprocess): exit codes, one-line errors, outputs.

Every bad input exits 2 with exactly one line on stderr, no traceback, and nothing in
the output folder (no video, no hidden temporary or partial file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_copies import clone, replace_bytes
from kinema.runtime.bundle.load import sha256_file
from kinema.runtime.engine.sessions import PROVIDERS

CLI = [sys.executable, "-m", "kinema.runtime.cli"]
SCRIPT = Path(sys.executable).with_name("kinema")
FAST = ["--steps", "2", "--frames", "5"]


def run_cli(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("kinema"), lines[0]
    assert "error" in lines[0], lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def outdir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def assert_empty(folder: Path) -> None:
    left = sorted(p.name for p in folder.iterdir())
    assert left == [], f"left behind in {folder}: {left}"


def generate_fails(bundle: Path, outdir: Path, *args, output: str = "clip.mp4", needles=()) -> str:
    r = run_cli("generate", "a red ball", "--bundle", bundle, "-o", outdir / output, *args, cwd=outdir)
    line = assert_one_line_error(r, *needles)
    assert_empty(outdir)
    return line


# ----------------------------------------------------------------------------- tampered bundle helpers
# Copies are hard links; a file is unlinked before it is rewritten, so the fixture stays untouched.


def edit_manifest(bundle: Path, change) -> None:
    m = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    change(m)
    replace_bytes(bundle / "manifest.json", json.dumps(m, indent=1).encode())


@pytest.fixture
def copy(tiny_bundle, tmp_path) -> Path:
    return clone(tiny_bundle, tmp_path / "a" / "b" / "bundle")


# ----------------------------------------------------------------------------- happy paths


def test_generate_writes_a_playable_mp4(tiny_bundle, outdir):
    from kinema.runtime.video.core import read_metadata, read_video

    r = run_cli("generate", "a red ball", "--bundle", tiny_bundle, *FAST, "-o", "out.mp4", cwd=outdir)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in outdir.iterdir()) == ["out.mp4"]  # no temporary file left
    frames, fps = read_video(outdir / "out.mp4")
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] == 5 and frames.shape[-1] == 3
    assert fps == pytest.approx(8.0)
    assert frames.std() > 0  # not a blank clip
    meta = read_metadata(outdir / "out.mp4")
    assert meta["prompt"] == "a red ball" and meta["steps"] == "2" and meta["frames"] == "5"
    assert meta["bundle_sha256"] == sha256_file(tiny_bundle / "manifest.json")


def test_info_names_every_component(tiny_bundle):
    r = run_cli("info", tiny_bundle)
    assert r.returncode == 0, r.stderr
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    for name, comp in m["components"].items():
        assert name in r.stdout and comp["file"] in r.stdout
    assert m["family"] in r.stdout
    r = run_cli("info", tiny_bundle, "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == m


@pytest.mark.parametrize("argv", [[], ["generate"], ["info"], ["export"]], ids=["kinema", "generate", "info", "export"])
def test_help(argv):
    r = run_cli(*argv, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: kinema") and r.stderr == ""


@pytest.mark.skipif(not SCRIPT.exists(), reason="kinema console script not installed next to this python")
def test_console_script(tiny_bundle, outdir):
    r = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, cwd=outdir)
    assert r.returncode == 0 and "generate" in r.stdout
    r = subprocess.run([str(SCRIPT), "generate", "x", "--bundle", str(tiny_bundle), "--frames", "16"], capture_output=True, text=True, timeout=60, cwd=outdir)
    assert_one_line_error(r, "frames=16")
    assert_empty(outdir)


# ----------------------------------------------------------------------------- bad settings


BAD_SETTINGS = [
    (["--frames", "16"], ["frames=16", "4k+1"]),
    (["--frames", "2401"], ["frames=2401", "300 s"]),
    (["--frames", "0"], ["frames=0"]),
    (["--width", "70"], ["width=70", "multiple of 16"]),
    (["--height", "256"], ["height=256", "[32, 128]"]),
    (["--steps", "0"], ["steps=0"]),
    (["--guidance", "nan"], ["guidance=nan"]),
    (["--cfg", "nan"], ["guidance=nan"]),
    (["--guidance", "inf"], ["guidance=inf"]),
    (["--fps", "0"], ["fps=0"]),
    (["--seconds", "301"], ["seconds=301", "300 s"]),
    (["--sampler", "ddim"], ["'ddim'"]),
    (["--cfg-mode", "parallel"], ["'parallel'"]),
    (["--threads", "0"], ["threads=0"]),
    (["--provider", "tpu"], ["'tpu'", "cpu"]),
    (["--frames", "abc"], ["'abc'"]),  # argparse's own error, still one line
    (["--frames", "5", "--seconds", "1"], ["--seconds"]),
]


@pytest.mark.parametrize("args, needles", BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_bad_settings(tiny_bundle, outdir, args, needles):
    generate_fails(tiny_bundle, outdir, *args, needles=needles)


def test_empty_prompt(tiny_bundle, outdir):
    r = run_cli("generate", "   ", "--bundle", tiny_bundle, "-o", outdir / "clip.mp4")
    assert_one_line_error(r, "prompt")
    assert_empty(outdir)


def test_no_command():
    assert_one_line_error(run_cli())


@pytest.mark.parametrize("provider", ["cuda", "dml", "coreml"])
def test_unavailable_provider(tiny_bundle, outdir, provider):
    import onnxruntime

    if PROVIDERS[provider] in onnxruntime.get_available_providers():
        pytest.skip(f"{provider} is available here")
    generate_fails(tiny_bundle, outdir, "--provider", provider, needles=[f"'{provider}'", "not available"])


def test_unknown_extension(tiny_bundle, outdir):
    generate_fails(tiny_bundle, outdir, *FAST, output="clip.avi", needles=["'.avi'"])


def test_missing_output_folder(tiny_bundle, outdir):
    generate_fails(tiny_bundle, outdir, *FAST, output="missing/clip.mp4", needles=["missing", "does not exist"])


def test_existing_output_left_untouched_on_error(tiny_bundle, outdir):
    (outdir / "clip.mp4").write_bytes(b"old")
    r = run_cli("generate", "x", "--bundle", tiny_bundle, "--frames", "16", "-o", outdir / "clip.mp4")
    assert_one_line_error(r, "frames=16")
    assert sorted(p.name for p in outdir.iterdir()) == ["clip.mp4"]
    assert (outdir / "clip.mp4").read_bytes() == b"old"


# ----------------------------------------------------------------------------- bad bundles


def test_bundle_missing_file(copy, outdir):
    (copy / "decoder_step.onnx").unlink()
    generate_fails(copy, outdir, *FAST, needles=["'decoder_step.onnx'", "missing"])


def test_bundle_not_a_folder(tmp_path, outdir):
    generate_fails(tmp_path / "nothing-here", outdir, *FAST, needles=["not a folder"])


def test_bundle_wrong_hash(copy, outdir):
    den = copy / "denoiser.onnx"
    data = bytearray(den.read_bytes())
    data[len(data) // 3] ^= 0x10  # same size: only the sha256 can tell
    replace_bytes(den, bytes(data))
    generate_fails(copy, outdir, *FAST, needles=["denoiser.onnx", "sha256"])


@pytest.mark.parametrize("where", ["../x.onnx", "absolute"])
def test_bundle_path_escape(copy, outdir, where):
    target = copy.parent / "x.onnx" if where == "../x.onnx" else copy.parent.parent / "abs.onnx"
    shutil.copyfile(copy / "denoiser.onnx", target)  # reachable, right size and hash
    rel = where if where == "../x.onnx" else str(target)
    edit_manifest(copy, lambda m: m["components"]["denoiser"].update(file=rel))
    generate_fails(copy, outdir, *FAST, needles=[repr(rel), "escapes"])


def test_bundle_newer_format(copy, outdir):
    edit_manifest(copy, lambda m: m.update(format_version=2))
    generate_fails(copy, outdir, *FAST, needles=["format_version 2", "newer"])


def test_info_on_a_bad_bundle(copy):
    edit_manifest(copy, lambda m: m.update(format_version=2))
    assert_one_line_error(run_cli("info", copy), "format_version 2")


@pytest.mark.parametrize("location", ["../../secret.bin", "/etc/hostname"])
def test_bundle_external_data_outside(copy, outdir, location):
    """A graph whose initializer's external data points outside the bundle, otherwise consistent."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, external_data_helper, helper, numpy_helper

    secret = copy.parent.parent / "secret.bin"  # where '../../secret.bin' lands; really there
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    external_data_helper.set_external_data(w, location=location, offset=0, length=16)
    w.ClearField("raw_data")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "evil", [], [y], initializer=[w]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    evil = copy / "evil.onnx"
    replace_bytes(evil, model.SerializeToString())
    edit_manifest(
        copy,
        lambda m: m["components"]["encoder"].update(file="evil.onnx", bytes=evil.stat().st_size, sha256=sha256_file(evil)),
    )
    generate_fails(copy, outdir, *FAST, needles=["encoder", "external data", repr(location)])
