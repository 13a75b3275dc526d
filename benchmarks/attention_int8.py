"""Self-attention at the largest tiny clip: ONNX Runtime's fp32 Attention against int8 attention products.

    python benchmarks/attention_int8.py [--rounds 20] [--threads 2] [--out benchmarks/results]

At the largest clip the built-in model allows (33 frames 128x128: 576 tokens per sample,
batch 2 with guidance) the self-attention products (QK^T and PV, 2 x 2 N^2 D per sample
and layer) are a quarter of the denoiser's FLOPs and, in fp32, close to half its int8
time. This script asks whether doing them in int8 would pay, on the trained model's own
activations: it runs the trained TinyDiT in PyTorch on the first sampling step of a
ShapesBench-style prompt (pure noise, sigma 1) and records every block's self-attention
inputs (q and k after their norms and rotary embedding, and v), then times, interleaved
in one process on those tensors:

- `fp32 Attention`: opset 23's Attention op, as the exported denoiser graph holds it (the reference);
- `fp32 MatMul + Softmax`: the same products as separate nodes;
- `int8 QK^T, fp32 PV`: q and k quantized per tensor (u8), QK^T by MatMulInteger, softmax and PV in fp32;
- `int8 QK^T and PV`: as above, then the probabilities quantized with the fixed scale 1/255
  (they lie in [0, 1]) and v per tensor, PV by MatMulInteger.

Each int8 form is reported with its time against the fp32 Attention op's and the SQNR of
its output against it, per layer (min and median over the 8 blocks). Writes
benchmarks/results/attention_int8/result.{json,md} (under --out), with the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

import common

NAME = "attention_int8"
PROMPT = "a red ball bouncing on a white background"


def capture_qkv(frames: int, side: int, seed: int = 0) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """([(q, k, v)] (B=2, N, D) float32, one per block, from the trained model's first guided step; heads)."""
    import torch

    from kinema.export import tiny_forms
    from kinema.export.tiny import load_tiny
    from kinema.models.text_encoder import load_tokenizer

    dit, _, te = load_tiny()
    tiny_forms.use_export_attention(dit)
    enc = load_tokenizer().encode_batch([PROMPT, ""])
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    t = (frames - 1) // 4 + 1
    x = torch.randn(1, 8, t, side // 8, side // 8, generator=torch.Generator().manual_seed(seed)).repeat(2, 1, 1, 1, 1)
    seen, n_heads = [], set()
    real = tiny_forms.attention

    def record(q, k, v, bias, heads):
        if bias is None:  # self-attention (cross-attention carries the text mask)
            seen.append(tuple(a.detach().numpy().copy() for a in (q, k, v)))
            n_heads.add(heads)
        return real(q, k, v, bias, heads)

    tiny_forms.attention = record
    try:
        with torch.no_grad():
            dit(x, torch.full((2,), 1.0), te(ids, mask), mask, torch.zeros_like(x), torch.zeros(2, 1, t, 1, 1))
    finally:
        tiny_forms.attention = real
    (heads,) = n_heads
    return seen, heads


def graphs(b: int, n: int, d: int, heads: int) -> dict[str, bytes]:
    """The four forms as serialized ONNX models with inputs Q, K, V (b, n, d) and output Y."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    hd = d // heads
    c = lambda name, v: nh.from_array(np.asarray(v), name)  # noqa: E731
    inits = [c("s4", np.array([b, n, heads, hd], np.int64)), c("s3", np.array([b, n, d], np.int64)), c("inv", np.array(hd**-0.5, np.float32)),
             c("ps", np.array(1 / 255, np.float32)), c("pz", np.array(0, np.uint8))]
    split = [h.make_node("Reshape", ["Q", "s4"], ["q4"]), h.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
             h.make_node("Reshape", ["K", "s4"], ["k4"]), h.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
             h.make_node("Reshape", ["V", "s4"], ["v4"]), h.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3])]
    merge = [h.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), h.make_node("Reshape", ["ot", "s3"], ["Y"])]
    qk8 = [h.make_node("DynamicQuantizeLinear", ["qt"], ["qu", "qs", "qz"]), h.make_node("DynamicQuantizeLinear", ["kt"], ["ku", "ks", "kz"]),
           h.make_node("Mul", ["qs", "ks"], ["s1"]), h.make_node("Mul", ["s1", "inv"], ["s2"]),
           h.make_node("MatMulInteger", ["qu", "ku", "qz", "kz"], ["l32"]), h.make_node("Cast", ["l32"], ["lf"], to=T.FLOAT),
           h.make_node("Mul", ["lf", "s2"], ["lg"]), h.make_node("Softmax", ["lg"], ["p"], axis=-1)]
    pv8 = [h.make_node("QuantizeLinear", ["p", "ps", "pz"], ["pu"]), h.make_node("DynamicQuantizeLinear", ["vt"], ["vu", "vs", "vz"]),
           h.make_node("MatMulInteger", ["pu", "vu", "pz", "vz"], ["o32"]), h.make_node("Cast", ["o32"], ["of"], to=T.FLOAT),
           h.make_node("Mul", ["vs", "ps"], ["s3s"]), h.make_node("Mul", ["of", "s3s"], ["o"])]
    forms = {
        "fp32 Attention": ([h.make_node("Attention", ["Q", "K", "V"], ["Y"], q_num_heads=heads, kv_num_heads=heads)], []),
        "fp32 MatMul + Softmax": (split + [h.make_node("MatMul", ["qt", "kt"], ["l"]), h.make_node("Mul", ["l", "inv"], ["lg"]),
                                           h.make_node("Softmax", ["lg"], ["p"], axis=-1), h.make_node("MatMul", ["p", "vt"], ["o"])] + merge, inits[:3]),
        "int8 QK^T, fp32 PV": (split + qk8 + [h.make_node("MatMul", ["p", "vt"], ["o"])] + merge, inits[:3]),
        "int8 QK^T and PV": (split + qk8 + pv8 + merge, inits),
    }
    out = {}
    for name, (nodes, init) in forms.items():
        g = h.make_graph(nodes, name, [h.make_tensor_value_info(x, T.FLOAT, [b, n, d]) for x in "QKV"], [h.make_tensor_value_info("Y", T.FLOAT, [b, n, d])], init)
        out[name] = h.make_model(g, opset_imports=[h.make_opsetid("", 23)]).SerializeToString()
    return out


def main(argv=None) -> int:
    import tempfile

    import onnxruntime as ort

    from kinema.quantize.metrics import sqnr_db
    from kinema.runtime.engine.sessions import open_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    qkv, heads = capture_qkv(args.frames, args.side)
    b, n, d = qkv[0][0].shape
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:  # opened as the runtime opens a bundle's graphs
        for i, (k, m) in enumerate(graphs(b, n, d, heads).items()):
            (Path(tmp) / f"{i}.onnx").write_bytes(m)
            sessions[k] = open_session(Path(tmp) / f"{i}.onnx", "cpu", args.threads)
    feeds = [{"Q": q, "K": k, "V": v} for q, k, v in qkv]
    ref = [sessions["fp32 Attention"].run(None, f)[0] for f in feeds]
    quality = {k: [sqnr_db(r, s.run(None, f)[0]) for r, f in zip(ref, feeds)] for k, s in sessions.items() if k != "fp32 Attention"}
    # time: one call = every block's self-attention (the 8 layers' own tensors), interleaved by round
    fns = {k: (lambda s=s: [s.run(None, f) for f in feeds]) for k, s in sessions.items()}
    times = common.interleaved(fns, args.rounds, 1, warm=2)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = len(feeds) * b * 4 * n * n * d
    res = {
        "machine": common.machine(threads=args.threads, onnxruntime=ort.__version__),
        "date": common.utc_now(),
        "settings": {"frames": args.frames, "side": args.side, "batch": b, "tokens": n, "width": d, "heads": heads, "layers": len(feeds), "rounds": args.rounds},
        "products_flops_all_layers": flops,
        "seconds_all_layers": med,
        "gflops": {k: flops / v / 1e9 for k, v in med.items()},
        "vs_fp32_attention": {k: med["fp32 Attention"] / v for k, v in med.items()},
        "sqnr_db_per_layer": quality,
    }
    rows = ["| form | ms, 8 layers (median) | GFLOP/s | speed vs fp32 Attention | SQNR vs fp32 Attention dB (min / median over layers) |", "|---|---:|---:|---:|---|"]
    for k in sessions:
        q = quality.get(k)
        rows.append(f"| {k} | {med[k] * 1e3:.1f} | {res['gflops'][k]:.0f} | {res['vs_fp32_attention'][k]:.2f}x | "
                    + (f"{min(q):.1f} / {statistics.median(q):.1f} |" if q else "reference |"))
    md = (f"Self-attention of the trained kinema-tiny at {args.frames} frames {args.side}x{args.side} ({n} tokens per sample, batch {b}, "
          f"{heads} heads of {d // heads}), the {len(feeds)} blocks' own q, k, v from the first guided step, {args.threads} threads, "
          f"{common.describe_machine(res['machine'])}, {res['date']}; {args.rounds} interleaved rounds.\n\n" + "\n".join(rows) + "\n")
    common.write_result(NAME, res, md, args.out)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
