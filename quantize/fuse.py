"""Transformer fusions (onnxruntime.transformers.optimizer) as a bundle -> bundle pass, before quantizing.

    python -m kinema.quantize.fuse SRC_BUNDLE OUT_BUNDLE [--overwrite]
    kinema quantize OUT_BUNDLE --recipe int8 -o OUT_INT8     # the fusions survive quantization

ONNX Runtime's own ORT_ENABLE_ALL pass already fuses LayerNormalization, MatMul+Add and
some GELU patterns at load time; the transformers optimizer also rewrites the tiny DiT's
decomposed RMSNorm (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul: 16 of them) into
SimplifiedLayerNormalization and its tanh GELU into FastGelu (8), on a DiT traced as written;
the export form (export/tiny_forms.py) already has these as single opset-23 nodes, so on
bundles exported now it finds nothing to do. Its attention fusion does
not match (rotary positions sit between the projections and the product), nor does
SkipLayerNormalization (the DiT's LayerNorms have no affine parameters; the optimizer
crashes on them, so it is turned off). The fused graph runs on plain onnxruntime (both
ops are in its CPU kernels), so the runtime needs nothing extra; this pass needs onnx.
Every fused graph is checked against its source on random inputs before it is written.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.load import load_bundle
from kinema.runtime.errors import InputError, KinemaError

__all__ = ["FUSED_COMPONENTS", "fuse_graph", "fuse_bundle"]

FUSED_COMPONENTS = ("denoiser",)
MAX_ABS_DIFF = 1e-4  # fp32 rewrites of the same arithmetic: measured 3.3e-6 on kinema-tiny's denoiser


def fuse_graph(src: Path, dst: Path, *, heads: int, width: int) -> dict[str, int]:
    """Write the fused graph of `src` to `dst`; returns {fused op type: count} for the fusions that applied."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    opts = FusionOptions("bert")
    opts.enable_skip_layer_norm = False  # LayerNorms without affine parameters crash this fusion
    opts.enable_bias_skip_layer_norm = False
    # Add + Gelu(approximate="tanh") (opset 20, what the export form has) would become BiasGelu,
    # which is the erf GELU: 1.9e-3 off on kinema-tiny's denoiser. Decomposed tanh GELUs still
    # become FastGelu, which keeps the tanh form.
    opts.enable_bias_gelu = False
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=width, optimization_options=opts, opt_level=0, use_gpu=False)
    model.save_model_to_file(str(dst))
    import onnx

    before = collections.Counter(n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node)
    # the optimizer's statistics count every node of a fused type, also those the source already had
    stats = model.get_fused_operator_statistics()
    return {k: v - before[k] for k, v in stats.items() if v > before[k] and k != "LayerNormalization"}


def _random_feeds(session, bundle, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at the bundle's default clip for a graph (B = 2: the guided batch)."""
    rng = np.random.default_rng(seed)
    v, lat = bundle.video, bundle.latent
    t = (v.frames - v.frame_offset) // lat["temporal_compression"] + 1
    sizes = {"B": 2, "T": t, "H": v.height // lat["spatial_compression"], "W": v.width // lat["spatial_compression"], "L": bundle.tokenizer["max_length"]}
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else sizes[d] for d in inp.shape]
        if "int64" in inp.type:
            feeds[inp.name] = np.ones(shape, np.int64)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32) * (0.5 if inp.name == "timestep" else 1.0)
    return feeds


def _check_same(src: Path, dst: Path, bundle) -> float:
    import onnxruntime as ort

    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, dst))
    feeds = _random_feeds(a, bundle)
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a.run(None, feeds), b.run(None, feeds)))
    if not diff <= MAX_ABS_DIFF:
        raise KinemaError(f"{dst.name}: the fused graph differs from its source by {diff:.3g} (bound {MAX_ABS_DIFF:g}); not written")
    return diff


def fuse_bundle(src_dir, out_dir, *, overwrite: bool = False) -> Path:
    """Write a copy of an fp32 bundle whose transformer graphs carry the fusions; returns its path."""
    from kinema.runtime.bundle.writer import check_output, file_entry, write_bundle

    from kinema.quantize.apply import copy_graph
    from kinema.quantize.quantize_bundle import derived_spec

    out = check_output(Path(out_dir), overwrite=overwrite)
    src = load_bundle(src_dir)
    if out.resolve() == src.path:
        raise InputError(f"output {out} is the source bundle; write the fused bundle to another folder")
    if any(c.get("precision", "fp32") != "fp32" for c in src.components.values()) or "quantization" in src.manifest:
        raise InputError(f"bundle {src.path} is quantized; fuse its fp32 source, then quantize")
    dit = src.manifest.get("model", {}).get("dit", {})
    if not {"heads", "width"} <= dit.keys():
        raise InputError(f"bundle {src.path}: manifest.model.dit has no heads/width; the attention layout is needed to fuse")

    def build(stage: Path) -> dict:
        comps, record = {}, {}
        for name, entry in src.components.items():
            if name in FUSED_COMPONENTS and not entry.get("external_data"):
                fused = fuse_graph(src.component_path(name), stage / entry["file"], heads=int(dit["heads"]), width=int(dit["width"]))
                record[name] = {"fused": fused, "max_abs_diff": _check_same(src.component_path(name), stage / entry["file"], src)}
            else:
                copy_graph(src.path, entry["file"], stage)
            comps[name] = {**entry, **file_entry(stage, entry["file"])}
        import onnxruntime

        return {
            **derived_spec(src, f"{src.name}-fused", comps),
            "optimization": {"transformer_fusions": record, "source_bundle_sha256": src.digest, "tool": f"onnxruntime {onnxruntime.__version__}"},
        }

    return write_bundle(out, build, overwrite=overwrite)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kinema.quantize.fuse", description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="fp32 bundle folder")
    p.add_argument("output", help="bundle folder to write")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        out = fuse_bundle(args.bundle, args.output, overwrite=args.overwrite)
    except KinemaError as e:
        print(f"kinema fuse: error: {e}", file=sys.stderr)
        return 2
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
