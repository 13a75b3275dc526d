"""Golden outputs: frame hashes of every task at fixed seeds, and a quantized bundle's manifest.

The redesign of the request type and run path must not change a single output byte. These
cases run every task once through `Pipeline` and once through the `kinema` command (PNG
frames, so the invisible watermark and visible mark are in the hashed pixels), on the
built-in bundle at few steps. Outputs depend on the processor's kernels and the ONNX
Runtime version, so goldens are stored per machine (`machine_key`).

    python tests/golden/cases.py --record    # (re)record this machine's goldens
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden.json")
PROMPT = "a red circle moving right on a black background"
FAST = dict(steps=3, seed=5)


def machine_key() -> str:
    import onnxruntime

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        # ONNX Runtime picks its int8 and fp32 kernels by instruction set, so outputs are
        # bit-identical only between processors of the same tier.
        have = set(flags.split(":", 1)[-1].split())
        for flag, tier in (("amx_int8", "amx"), ("avx512_vnni", "avx512vnni"), ("avx512f", "avx512"), ("avx2", "avx2")):
            if flag in have:
                model += f" {tier}"
                break
    except OSError:
        pass
    return f"{model} | onnxruntime {onnxruntime.__version__} | numpy {np.__version__}"


def frames_hash(frames: np.ndarray) -> str:
    a = np.ascontiguousarray(frames)
    return f"{a.shape} " + hashlib.sha256(a.tobytes()).hexdigest()[:20]


def source_clip(pipe) -> np.ndarray:
    """A 17-frame clip the media tasks start from (itself a generation)."""
    return pipe.generate("a blue square moving left on a white background", steps=3, seed=11).frames


def pipeline_cases() -> dict[str, str]:
    from kinema.runtime import Pipeline

    pipe = Pipeline.from_bundle(threads=1)
    clip = source_clip(pipe)
    image = clip[0]
    out = {
        "generate": pipe.generate(PROMPT, **FAST),
        "generate_long": pipe.generate(PROMPT, frames=41, **FAST),
        "loop": pipe.generate(PROMPT, loop=True, frames=25, **FAST),
        "animate": pipe.animate(image, PROMPT, **FAST),
        "extend": pipe.extend(clip, PROMPT, 1.0, **FAST),
        "extend_backward": pipe.extend(clip, PROMPT, 1.0, backward=True, **FAST),
        "connect": pipe.connect(clip, clip[::-1].copy(), PROMPT, **FAST),
        "edit": pipe.edit(clip, PROMPT, 0.6, **FAST),
    }
    return {k: frames_hash(v.frames) for k, v in out.items()}


def cli_cases() -> dict[str, str]:
    from kinema.runtime import Pipeline, Video
    from kinema.runtime.cli.main import main
    from kinema.runtime.video.core import read_video

    pipe = Pipeline.from_bundle(threads=1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        clip = source_clip(pipe)
        Video(clip, 8.0).save(d / "clip.png", scale=1)
        Video(clip[::-1].copy(), 8.0).save(d / "back.png", scale=1)
        Video(clip[:1], 8.0).save(d / "image.png", scale=1)
        img = d / "image_00000.png"
        fast = ["--steps", "3", "--seed", "5", "--threads", "1", "-q", "--native-size"]
        runs = {
            "generate": ["generate", PROMPT],
            "generate_marked": ["generate", PROMPT, "--visible-watermark", "--frames", "9"],
            "loop": ["generate", PROMPT, "--loop", "--frames", "25"],
            "animate": ["animate", str(img), "--prompt", PROMPT],
            "extend": ["extend", str(d / "clip.png"), "--seconds", "1", "--prompt", PROMPT],
            "extend_backward": ["extend", str(d / "clip.png"), "--seconds", "1", "--backward", "--prompt", PROMPT],
            "connect": ["connect", str(d / "clip.png"), str(d / "back.png"), "--prompt", PROMPT],
            "edit": ["edit", str(d / "clip.png"), "--strength", "0.6", "--prompt", PROMPT],
        }
        out = {}
        for name, argv in runs.items():
            target = d / name / "f.png"
            target.parent.mkdir()
            rc = main([*argv, *fast, "-o", str(target)])
            if rc != 0:
                raise RuntimeError(f"kinema {' '.join(argv)} exited {rc}")
            out[name] = frames_hash(read_video(target)[0])
        return out


def graph_digest(path: Path) -> str:
    """sha256 of an ONNX graph without its nodes' metadata: torch.onnx records each node's
    source file path there, so the raw bytes depend on where the repository is checked out."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [sub for a in node.attribute for sub in a.graphs]
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def comparable(folder: Path) -> dict:
    """A bundle's manifest with each graph's checkout-dependent bytes and hash replaced by `graph_digest`."""
    m = json.loads((Path(folder) / "manifest.json").read_text())
    for name, c in m["components"].items():
        c.pop("bytes")
        c["sha256"] = "graph " + graph_digest(Path(folder) / c["file"])
    if "quantization" in m:
        q = m["quantization"]
        q.pop("source_bundle_sha256")  # the source manifest's hash: it holds the raw graph hashes
        for measured in q.get("measured", {}).values():
            measured.pop("size_ratio", None)  # file sizes, metadata included
    return m


def random_export(folder: Path) -> Path:
    """The random-init tiny export the suite's `tiny_bundle` fixture makes."""
    from kinema.export.tiny import export_tiny

    return export_tiny(folder, random_init=True, size="test", seed=0)


def quantized_manifest(src: Path | None = None) -> dict:
    """The manifests of a random-init tiny export (`src`, made when None) and of its int8 quantization."""
    from kinema.quantize.quantize_bundle import quantize_bundle
    from kinema.quantize.recipes import preset

    with tempfile.TemporaryDirectory() as d:
        src = random_export(Path(d) / "fp32") if src is None else src
        out = quantize_bundle(src, Path(d) / "int8", preset("int8", "tiny"))
        return {"export": comparable(src), "int8": comparable(out)}


def compute() -> dict:
    return {"pipeline": pipeline_cases(), "cli": cli_cases(), "quantized": quantized_manifest()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/golden/cases.py --record")
    stored = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    stored[machine_key()] = compute()
    GOLDEN.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    print(f"recorded {machine_key()}")
