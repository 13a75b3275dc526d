"""The streaming decoder as static int8 (QDQ Conv) against fp32: its time per clip and the video PSNR it costs.

    python benchmarks/decoder_int8.py [--source DIR] [--prompts 40] [--calibration 32] [--threads 2] [--out benchmarks/results]

From an fp32 bundle (`kinema export tiny --out DIR`), two bundles are quantized side by side:
the `int8` preset (decoders fp32, as shipped) and the same with both decoder graphs as static
int8: StaticInt8 on their Convs, activation ranges calibrated on `--calibration` prompts of
the bundle's own calibration set (quantize/calibration.py), the last Conv (to RGB) kept
float. Their denoisers and text encoders are the same graphs, so the two videos of a prompt
differ by the decoder alone. Measured: video PSNR of every one of the first `--prompts`
in-distribution ShapesBench prompts (seed 0, default clip) against the fp32-decoder video,
and the decoder graphs' time for one clip (the prefix call and every step call of a recorded
clip), the two bundles interleaved round by round. Writes
benchmarks/results/decoder_int8/result.json and result.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import common

NAME = "decoder_int8"
KEEP_FLOAT = ("node_conv3d_14",)  # the decoders' last Conv, to RGB: quantized it cost the most PSNR
DECODERS = ("decoder_prefix", "decoder_step")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True, help="an fp32 tiny bundle (kinema export tiny --out DIR)")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--calibration", type=int, default=32, help="calibration prompts for the decoders' activation ranges")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from kinema.models.shapes_prompts import DATA_DIR, load_prompts
    from kinema.quantize.calibration import record_inputs
    from kinema.quantize.quantize_bundle import quantize_bundle
    from kinema.quantize.recipes import BundleRecipe, StaticInt8, preset
    from kinema.runtime import Pipeline

    base = preset("int8", "tiny")
    conv = StaticInt8(op_types=("Conv",), calibration_prompts=args.calibration, nodes_to_exclude=KEEP_FLOAT)
    recipe = BundleRecipe("int8-decoders", {**base.components, **{d: conv for d in DECODERS}})
    rows = load_prompts(Path(DATA_DIR) / "shapes_prompts.jsonl")[: args.prompts]
    with tempfile.TemporaryDirectory(prefix="kinema-decoder-int8.") as tmp:
        t0 = time.perf_counter()
        fp32_dec = quantize_bundle(args.source, Path(tmp) / "int8", base)
        int8_dec = quantize_bundle(args.source, Path(tmp) / "int8-decoders", recipe)
        quantize_s = time.perf_counter() - t0
        a, b = Pipeline.from_bundle(fp32_dec, threads=args.threads), Pipeline.from_bundle(int8_dec, threads=args.threads)
        per_prompt = []
        for row in rows:
            va, vb = a.generate(row["prompt"], seed=0), b.generate(row["prompt"], seed=0)
            per_prompt.append({"prompt": row["prompt"], "psnr_db": round(psnr(va.frames, vb.frames), 2)})
        rec = record_inputs(a, [rows[0]["prompt"]], components=DECODERS)
        sessions = {"fp32": {d: a.session(d) for d in DECODERS}, "int8": {d: b.session(d) for d in DECODERS}}

        def clip(s):
            return lambda: [s[d].run(None, f) for d in DECODERS for f in rec[d]]

        times = common.interleaved({k: clip(s) for k, s in sessions.items()}, rounds=args.rounds, per_round=1, warm=2)
        calls = sum(len(rec[d]) for d in DECODERS)
    ps = [p["psnr_db"] for p in per_prompt]
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    res = {
        "machine": common.machine(threads=args.threads),
        "date": common.utc_now(),
        "settings": {"prompts": len(rows), "calibration_prompts": args.calibration, "keep_float": list(KEEP_FLOAT), "rounds": args.rounds, "decoder_calls_per_clip": calls},
        "quantize_s": round(quantize_s, 1),
        "decode_ms_per_clip": {k: round(v, 1) for k, v in ms.items()},
        "speedup": round(ms["fp32"] / ms["int8"], 3),
        "psnr_db": {"min": min(ps), "median": statistics.median(ps), "max": max(ps)},
        "per_prompt": per_prompt,
    }
    md = (
        f"Streaming decoder, static int8 Conv (QDQ, {args.calibration} calibration prompts, last Conv float) against fp32, "
        f"{common.describe_machine(res['machine'])}, {res['date']}.\n\n"
        "| decoder | time per clip (median) | video PSNR vs fp32 decoder (min / median / max) |\n|---|---:|---:|\n"
        f"| fp32 | {ms['fp32']:.1f} ms | - |\n"
        f"| static int8 | {ms['int8']:.1f} ms | {min(ps):.2f} / {statistics.median(ps):.2f} / {max(ps):.2f} dB |\n\n"
        f"Speed-up {res['speedup']:.2f}x over {args.rounds} interleaved rounds ({calls} decoder calls per clip); "
        f"PSNR over the first {len(rows)} in-distribution ShapesBench prompts, seed 0, default clip.\n"
    )
    common.write_result(NAME, res, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
