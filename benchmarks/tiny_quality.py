"""How well a tiny bundle follows prompts: ShapesBench in and out of distribution, ground truth, wall time.

    python benchmarks/tiny_quality.py [--bundle DIR] [--seeds 2] [--out benchmarks/results]

Writes benchmarks/results/tiny_quality/result.json and result.md (a table for the README;
under --out, the results root), with the machine it ran on, and docs/contact_sheet.png
(generated clips, one row per prompt, every 4th frame). A quantized bundle's results are
named after its recipe instead of `result` (the int8 bundle: int8.json and int8.md), so
that the fp32 and quantized runs of one model sit side by side.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import common
from kinema.models import shapes_bench as sb
from kinema.runtime import Pipeline

NAME = "tiny_quality"

DATA = Path(sb.__file__).resolve().parent / "data"
SHEET_PROMPTS = [
    "a yellow star spinning on a gray background",
    "a red ball bouncing on a white background",
    "a large blue square moving left on a black background",
    "a small green triangle moving up on a gray background",
    "a purple circle growing on a black background",
    "an orange square shrinking on a white background",
]


def bench(pipe: Pipeline, rows, seeds, **settings) -> dict:
    def generate(prompt, seed):
        return pipe.generate(prompt, seed=seed, **settings).frames

    sw = common.Stopwatch()
    res = sb.run_bench(rows, seeds, generate)
    res["seconds_per_video"] = sw.elapsed() / (len(rows) * len(seeds))
    return res


def ground_truth(rows, seeds) -> dict:
    scored = []
    for row in rows:
        for seed in seeds:
            s = sb.score_video(sb.ground_truth_generate(row, seed), row)
            scored.append(s)
    return sb.aggregate(scored)


def vae_round_trip(pipe: Pipeline, rows, seeds) -> dict:
    """Ground truth encoded and decoded by the bundle's own VAE graphs: the ceiling the DiT can reach."""
    from kinema.runtime.media.windows import encode

    scored = []
    for row in rows:
        for seed in seeds:
            lat = encode(pipe, sb.ground_truth_generate(row, seed))
            frames = (np.clip(pipe.decode(lat)[0], 0.0, 1.0) * 255.0).round().astype(np.uint8)
            scored.append(sb.score_video(frames, row))
    return sb.aggregate(scored)


def contact_sheet(pipe: Pipeline, path: Path, seed: int = 0):
    from PIL import Image, ImageDraw

    scale, pad, label_h = 2, 4, 16
    rows = []
    for prompt in SHEET_PROMPTS:
        frames = pipe.generate(prompt, seed=seed).frames  # (T, H, W, 3)
        picks = frames[::4]
        strip = np.concatenate([np.pad(f, ((0, 0), (0, pad), (0, 0)), constant_values=255) for f in picks], axis=1)
        rows.append((prompt, np.kron(strip, np.ones((scale, scale, 1), dtype=np.uint8))))
    width = max(r.shape[1] for _, r in rows)
    height = sum(r.shape[0] + label_h + pad for _, r in rows)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for prompt, strip in rows:
        draw.text((2, y + 2), prompt, fill="black")
        sheet.paste(Image.fromarray(strip), (0, y + label_h))
        y += strip.shape[0] + label_h + pad
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def wall_time(bundle: str | None) -> dict:
    """Command start to file written for the default clip at default settings, in a fresh process."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "kinema.runtime.cli.main", "generate", "a yellow star spinning on a gray background", "-o", f"{d}/star.mp4", "-q"]
        if bundle:
            cmd += ["--bundle", bundle]
        sw = common.Stopwatch()
        subprocess.run(cmd, check=True)
        seconds = sw.elapsed()
    shown = "kinema generate \"a yellow star spinning on a gray background\" -o star.mp4" + (f" --bundle {bundle}" if bundle else "")
    return {"command": shown, "seconds": seconds}


def result_stem(bundle) -> str:
    """`result` for a float bundle; for a quantized one, its recipe's name (e.g. `int8`)."""
    recipe = (bundle.manifest.get("quantization") or {}).get("recipe") or {}
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(recipe.get("name") or "")).strip("._")
    return name or "result"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=common.RESULTS,
                    help=f"results root: writes OUT/{NAME}/result.{{json,md}}, or <recipe>.{{json,md}} for a quantized bundle (default: benchmarks/results)")
    ap.add_argument("--sheet", default="docs/contact_sheet.png", help="contact sheet path ('' for none)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per graph (default: all cores)")
    ap.add_argument("--no-references", action="store_true",
                    help="skip the ground-truth rows (they do not depend on the bundle's DiT: one run per VAE is enough)")
    args = ap.parse_args(argv)
    pipe = Pipeline.from_bundle(args.bundle, threads=args.threads)
    seeds = list(range(args.seeds))
    rows_in = sb.load_prompts(DATA / "shapes_prompts.jsonl")
    rows_out = sb.load_prompts(DATA / "shapes_prompts_heldout.jsonl")
    result = {
        "bundle": str(pipe.bundle.path),
        "bundle_sha256": pipe.bundle.digest,
        "settings": {k: pipe.bundle.sampler[k] for k in ("sampler", "steps", "guidance", "shift")},
        "seeds": seeds,
        "machine": common.machine(threads=args.threads),
        "in_distribution": bench(pipe, rows_in, seeds),
        "held_out": bench(pipe, rows_out, seeds),
        "wall_time": wall_time(args.bundle),
    }
    if not args.no_references:
        result["ground_truth"] = ground_truth(rows_in, seeds)
        result["ground_truth_through_vae"] = vae_round_trip(pipe, rows_in, seeds)
    if args.sheet:
        contact_sheet(pipe, Path(args.sheet))
    slim = {k: ({kk: vv for kk, vv in v.items() if kk != "rows"} if isinstance(v, dict) else v) for k, v in result.items()}
    attrs = ["background", "count", "color", "shape", "size", "motion"]
    lines = [
        f"ShapesBench, {len(seeds)} seeds, bundle {pipe.bundle.name} ({slim['settings']})",
        "",
        "| set | videos | adherence | " + " | ".join(attrs) + " | flicker | smoothness |",
        "|---|---:|---:|" + "---:|" * len(attrs) + "---:|---:|",
    ]
    for name in ("in_distribution", "held_out", "ground_truth", "ground_truth_through_vae"):
        if name not in result:
            continue
        r = result[name]
        acc = r["accuracy"]
        lines.append(
            f"| {name.replace('_', ' ')} | {r['n']} | {r['adherence']:.3f} | "
            + " | ".join(f"{acc.get(a, float('nan')):.3f}" for a in attrs)
            + f" | {r['flicker']:.4f} | {r['smoothness']:.4f} |"
        )
    lines += ["", "Motion accuracy by kind (in distribution): " + ", ".join(f"{k} {v:.2f}" for k, v in result["in_distribution"].get("motion_by_kind", {}).items())]
    lines += ["", f"Wall time, command start to file written: {result['wall_time']['seconds']:.1f} s (`{result['wall_time']['command']}`)"]
    lines += ["", f"Machine: {common.describe_machine(result['machine'])}."]
    common.write_result(NAME, result, "\n".join(lines) + "\n", args.out, stem=result_stem(pipe.bundle))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
