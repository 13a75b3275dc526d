"""The runtime never imports torch (nor transformers, diffusers, onnx): a laptop install has none of them.

Checked in a fresh interpreter, because this test process has torch loaded already: the
child imports kinema.runtime, generates through the Python API and through the CLI,
saves an mp4, and reports every forbidden top-level module found in sys.modules and
every import of one that was attempted (a meta-path finder records attempts, so an
import swallowed by `try: ... except ImportError` is caught too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# exact top-level names: "onnxruntime" is the runtime's engine and allowed, "onnx" is not
FORBIDDEN = ("torch", "transformers", "diffusers", "onnx", "onnxscript", "torchvision", "safetensors")

PRELUDE = textwrap.dedent(
    f"""
    import importlib.abc, json, sys
    FORBIDDEN = {FORBIDDEN!r}
    attempted = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                attempted.append(name)
            return None  # record only; the normal finders do the import

    sys.meta_path.insert(0, Recorder())
    stages = {{}}

    def check(stage):
        loaded = sorted({{k.split(".")[0] for k in sys.modules}} & set(FORBIDDEN))
        stages[stage] = {{"loaded": loaded, "attempted": sorted(set(attempted))}}
    """
)

EPILOGUE = "\nprint('RESULT ' + json.dumps(stages))\n"


def probe(body: str, *args: str, cwd: Path) -> dict:
    """Run PRELUDE + body + EPILOGUE in a fresh interpreter; {stage: {"loaded": [...], "attempted": [...]}}."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    code = PRELUDE + textwrap.dedent(body) + EPILOGUE
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert r.returncode == 0, f"child failed ({r.returncode}):\n{r.stderr[-4000:]}"
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result from child:\nstdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def bad_stages(stages: dict) -> dict:
    return {k: v for k, v in stages.items() if v["loaded"] or v["attempted"]}


def test_probe_detects_torch(tmp_path):
    """Sanity: the same probe reports torch when something does import it."""
    pytest.importorskip("torch")
    stages = probe(
        """
        import kinema.runtime
        check("runtime")
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        check("after torch")
        """,
        cwd=tmp_path,
    )
    assert stages["runtime"] == {"loaded": [], "attempted": []}
    assert "torch" in stages["after torch"]["loaded"]
    assert "torch" in stages["after torch"]["attempted"]


def test_probe_detects_onnx_but_not_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    stages = probe(
        """
        import onnxruntime
        check("ort")
        import onnx
        check("onnx")
        """,
        cwd=tmp_path,
    )
    assert stages["ort"]["loaded"] == []
    assert stages["onnx"]["loaded"] == ["onnx"]


def test_runtime_generates_without_torch(tiny_bundle, tmp_path):
    stages = probe(
        """
        bundle, out = sys.argv[1], sys.argv[2]
        import kinema.runtime
        check("import kinema.runtime")

        from kinema.runtime import Pipeline
        video = Pipeline.from_bundle(bundle).generate("a red ball", steps=2, frames=5, seed=3, guidance=3.0)
        assert video.num_frames == 5, video.num_frames
        video.save(out + "/api.mp4")
        from kinema.runtime.engine.sessions import open_session
        pipe = Pipeline.from_bundle(bundle)
        open_session(pipe.bundle.component_path("denoiser"), graph_sha256=pipe.bundle.components["denoiser"]["sha256"], cache_dir=out + "/cache")
        check("Pipeline.generate + Video.save")

        from kinema.runtime import cli
        rc = cli.main(["generate", "a red ball", "--bundle", bundle, "--steps", "2", "--frames", "5",
                       "--teacache", "0.1", "--cfg-cache", "2", "--leap", "0.9", "-q", "-o", out + "/cli.mp4"])
        assert rc == 0, rc
        rc = cli.main(["info", bundle])
        assert rc == 0, rc
        try:
            cli.main(["export", "--help"])  # the export parser is built, its torch side is not imported
        except SystemExit as e:
            assert e.code == 0, e.code
        check("kinema generate / info / export --help")

        from kinema.runtime import video as video_io
        for name in ("api.mp4", "cli.mp4"):
            frames, fps = video_io.read_video(out + "/" + name)
            assert frames.shape[0] == 5, (name, frames.shape)
        check("read back")

        import numpy as np
        from PIL import Image
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(out + "/img.png")
        assert Pipeline.from_bundle(bundle).animate(out + "/img.png", "a red ball", steps=1, frames=5).num_frames == 5
        rc = cli.main(["extend", out + "/api.mp4", "--prompt", "a red ball", "--seconds", "0.5", "--steps", "1",
                       "--bundle", bundle, "-q", "-o", out + "/ext.mp4"])
        assert rc == 0, rc
        check("image and video prompts (Pillow, PyAV)")

        from kinema.runtime.safety import policy, verify  # c2pa-python, cryptography, the watermark
        policy.check_prompt("a red ball")
        report = verify.verify_file(out + "/cli.mp4")
        assert report["c2pa"]["valid"], report["c2pa"]
        check("policy, C2PA sign + verify, watermark")
        """,
        str(tiny_bundle),
        str(tmp_path),
        cwd=tmp_path,
    )
    assert len(stages) == 6, stages
    assert bad_stages(stages) == {}, f"forbidden modules in the runtime: {bad_stages(stages)}"
    assert (tmp_path / "api.mp4").stat().st_size > 0 and (tmp_path / "cli.mp4").stat().st_size > 0
