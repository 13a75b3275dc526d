"""Does kinema's invisible watermark survive re-encoding, rescaling and flipping, and how often does it fire without it?

    python benchmarks/watermark_robustness.py [--clips 120] [--generated 20] [--bundle DIR] [--out benchmarks/results]

Clips: ShapesWorld ground-truth renders of the ShapesBench prompts (17 frames, 64x64; what
a perfect kinema-tiny would draw), plus `--generated` real generations of the same prompts
with a bundle (default: the built-in one) at its default settings. Each clip is written the
way `kinema generate` writes it (runtime.video.VideoWriter: scaled up to 256x256, H.264
CRF 18), once with the watermark and once without, then attacked:

- crf28:       decoded and re-encoded with libx264 at CRF 28, same size
- down0.75:    decoded, scaled to 0.75x with libswscale bicubic, re-encoded at CRF 28
- flip:        decoded, mirrored left to right, re-encoded at CRF 28
- crf40:       decoded and re-encoded with libx264 at CRF 40 (heavy compression), same size
- native ...:  the same, for a clip written at the model's own 64x64 (`--native-size`)

Reports the detection rate on watermarked clips, the false-positive rate on clips without
it (same attacks), the score distributions, the watermark's PSNR cost, and the false-positive
rate of 200 wrong keys on the watermarked clips (a denser sample of the null distribution).
Writes benchmarks/results/watermark_robustness/result.json and result.md (under --out, the
results root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: BLAS threads only contend
os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
from kinema.models import shapes_bench
from kinema.runtime.safety import watermark as wm
from kinema.runtime.safety.marks import MarkRule
from kinema.runtime.video.core import VideoWriter, read_video

NAME = "watermark_robustness"
PROMPTS = Path(shapes_bench.__file__).parent / "data" / "shapes_prompts.jsonl"
WRONG_KEYS = 200


def write(frames: np.ndarray, path: Path, *, mark: bool, native: bool) -> np.ndarray:
    """Write as kinema generate does (no C2PA: not what is measured); the decoded frames."""
    with VideoWriter(path, 8.0, frames.shape[2], frames.shape[1], scale=1 if native else "auto",
                     marks=MarkRule(watermark=mark, sign=False)) as w:
        w.write(frames)
    return read_video(path)[0]


def reencode(frames: np.ndarray, crf: int, scale: float = 1.0) -> np.ndarray:
    """libx264 at `crf` (after a bicubic rescale), decoded back to RGB."""
    h, w = frames.shape[1:3]
    ow, oh = (max(2, round(w * scale) // 2 * 2), max(2, round(h * scale) // 2 * 2))
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        with av.open(tmp.name, "w") as c:
            s = c.add_stream("libx264", rate=8)
            s.width, s.height, s.pix_fmt = ow, oh, "yuv420p"
            s.options = {"crf": str(crf)}
            for f in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                for p in s.encode(vf.reformat(width=ow, height=oh, format="yuv420p", interpolation="BICUBIC", dst_colorspace="ITU709")):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        return read_video(tmp.name)[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def clips(n_truth: int, n_generated: int, bundle: str | None, used: dict):
    rows = shapes_bench.load_prompts(PROMPTS)
    for i in range(n_truth):
        yield "ground truth", shapes_bench.ground_truth_generate(rows[i % len(rows)], i // len(rows), 17, 64, 64)
    if n_generated:
        from kinema.runtime import Pipeline

        pipe = Pipeline.from_bundle(bundle)
        used.update(bundle=pipe.bundle.name, bundle_sha256=pipe.bundle.digest)
        for i in range(n_generated):
            yield "generated", pipe.generate(rows[(7 * i) % len(rows)]["prompt"], seed=1000 + i).frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=120, help="ShapesWorld ground-truth clips")
    ap.add_argument("--generated", type=int, default=20, help="clips generated with the bundle")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--out", default=str(common.RESULTS), help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args()

    keys = np.random.default_rng(1).integers(1, 2**62, WRONG_KEYS)
    attacks = ("written", "crf28", "down0.75", "flip", "crf40")
    rows = []
    used: dict = {}
    sw = common.Stopwatch()
    with tempfile.TemporaryDirectory() as d:
        for i, (source, frames) in enumerate(clips(args.clips, args.generated, args.bundle, used)):
            row = {"source": source}
            for native in (False, True):
                tag = "native " if native else ""
                marked = write(frames, Path(d) / "m.mp4", mark=True, native=native)
                plain = write(frames, Path(d) / "p.mp4", mark=False, native=native)
                if not native:
                    ref = np.stack([VideoWriter(Path(d) / "x.mp4", 8, 64, 64)._prepare(f) for f in frames])  # unmarked, at output size
                    row["psnr_embed_db"] = psnr(wm.embed(ref), ref)
                    row["psnr_embed_native_db"] = psnr(wm.embed(frames), frames)
                    row["psnr_file_db"] = psnr(marked, plain)
                    r = wm.residual(wm.mean_luma(marked))
                    row["wrong_key_scores"] = [wm.score_residual(r, key=int(k)) for k in keys]
                for name, m, p in (("written", marked, plain), ("crf28", reencode(marked, 28), reencode(plain, 28)),
                                   ("down0.75", reencode(marked, 28, 0.75), reencode(plain, 28, 0.75)),
                                   ("flip", reencode(marked[:, :, ::-1], 28), reencode(plain[:, :, ::-1], 28)),
                                   ("crf40", reencode(marked, 40), reencode(plain, 40))):
                    row[f"{tag}{name}"] = wm.detect(m).score
                    row[f"{tag}{name} unmarked"] = wm.detect(p).score
            rows.append(row)
            sys.stderr.write(f"\rwatermark: {i + 1}/{args.clips + args.generated} clips, {sw.elapsed():.0f} s ")
            sys.stderr.flush()
    sys.stderr.write("\n")

    def stats(key: str, source: str | None = None) -> dict:
        v = np.array([r[key] for r in rows if source is None or r["source"] == source])
        return {"n": int(v.size), "rate": float((v > wm.THRESHOLD).mean()), "min": float(v.min()),
                "median": float(np.median(v)), "max": float(v.max())}

    table = {}
    for tag in ("", "native "):
        for a in attacks:
            for source in ("ground truth", "generated", None):
                if source == "generated" and not args.generated:
                    continue
                table[f"{tag}{a} / {source or 'all'}"] = {"marked": stats(f"{tag}{a}", source),
                                                          "unmarked": stats(f"{tag}{a} unmarked", source)}
    wrong = np.array([s for r in rows for s in r.pop("wrong_key_scores")])  # summarised below, not stored per row
    result = {
        "method": "spread spectrum, 32x32 keyed grid, bilinear carrier in luma", "strength": wm.STRENGTH,
        "threshold": wm.THRESHOLD, "clips": {"ground truth": args.clips, "generated": args.generated}, **used,
        "wall_s": sw.elapsed(),
        "machine": common.machine(),
        "psnr_embed_db": {"mean": float(np.mean([r["psnr_embed_db"] for r in rows])), "min": float(np.min([r["psnr_embed_db"] for r in rows]))},
        "psnr_embed_native_db": {"mean": float(np.mean([r["psnr_embed_native_db"] for r in rows])), "min": float(np.min([r["psnr_embed_native_db"] for r in rows]))},
        "psnr_file_db": {"mean": float(np.mean([r["psnr_file_db"] for r in rows])), "min": float(np.min([r["psnr_file_db"] for r in rows]))},
        "wrong_keys": {"scores": int(wrong.size), "false_positive_rate": float((wrong > wm.THRESHOLD).mean()),
                       "mean": float(wrong.mean()), "std": float(wrong.std()), "max": float(wrong.max())},
        "table": table, "rows": rows,
    }
    lines = [f"Watermark {wm.NAME}: strength {wm.STRENGTH:g} levels, threshold {wm.THRESHOLD:g}. "
             f"PSNR of the mark at 256x256: {result['psnr_embed_db']['mean']:.1f} dB (min {result['psnr_embed_db']['min']:.1f}); "
             f"written file marked vs unmarked: {result['psnr_file_db']['mean']:.1f} dB; "
             f"at 64x64 native (strength {wm.strength_for(64, 64):g}): {result['psnr_embed_native_db']['mean']:.1f} dB. "
             f"Generated clips: {used.get('bundle', '-')} sha256 {used.get('bundle_sha256', '-')}.", "",
             "| written as / attack / clips | n | detected (marked) | min / median score | false positives (unmarked) | max unmarked score |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, v in table.items():
        m, u = v["marked"], v["unmarked"]
        size = "64x64 native" if k.startswith("native") else "256x256 default"
        lines.append(f"| {size} / {k.removeprefix('native ')} | {m['n']} | {m['rate']:.3f} | {m['min']:.1f} / {m['median']:.1f} | "
                     f"{u['rate']:.3f} | {u['max']:.1f} |")
    w = result["wrong_keys"]
    lines += ["", f"Wrong keys on marked clips: {w['scores']} scores, mean {w['mean']:.2f}, std {w['std']:.2f}, max {w['max']:.1f}, "
              f"false-positive rate {w['false_positive_rate']:.4f}. Wall time {result['wall_s']:.0f} s.",
              "", f"Machine: {common.describe_machine(result['machine'])}."]
    common.write_result(NAME, result, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
