"""ShapesBench: scores how well a video follows a ShapesWorld prompt, with classical image analysis.

Plain NumPy (no torch, no scipy) so `compare` and the benchmarks can score bundles without
the torch extra. For each video the scorer finds the background colour, segments the
objects by linear unmixing against the palette, and checks per expected object its
colour, shape, size (when the row states one) and motion, plus the object count; it also
reports temporal flicker and motion smoothness in the spirit of VBench.

This module runs the bench (score every row and seed, pool the results) and is its command
line; the parts live beside it: `shapes_prompts` (the rows and prompt files),
`shapes_analysis` (the image analysis) and `shapes_score` (one video's checks). Their names
that callers use are importable from here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from kinema.models import shapes_world as sw
from kinema.models.shapes_prompts import (
    DATA_DIR,
    HELDOUT_PROMPTS_PATH,
    PROMPTS_PATH,
    load_prompts,
    make_prompt_rows,
    validate_row,
    write_prompt_files,
)
from kinema.models.shapes_score import flicker_score, score_video, smoothness_score

ATTRIBUTES = ("background", "count", "color", "shape", "size", "motion")


def aggregate(scored_rows: Sequence[dict]) -> dict:
    """Per-attribute accuracy, overall `adherence` (mean of the per-video adherences), mean flicker and smoothness.

    An attribute's accuracy pools its checks over all videos (and objects); "size" counts only
    objects whose row states a size and is None when none does. `motion_by_kind` is the
    motion accuracy per expected motion. `rows` holds the per-video results.
    """
    if not scored_rows:
        raise ValueError("aggregate needs at least one scored video")
    pooled: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    by_motion: dict[str, list[bool]] = {}
    for s in scored_rows:
        pooled["background"].append(s["background"])
        pooled["count"].append(s["count"])
        for res in s["objects"]:
            for a in ("color", "shape", "size", "motion"):
                if a in res:
                    pooled[a].append(res[a])
            by_motion.setdefault(res["expected"]["motion"], []).append(res["motion"])
    return {
        "n": len(scored_rows),
        "adherence": float(np.mean([s["adherence"] for s in scored_rows])),
        "accuracy": {a: (float(np.mean(v)) if v else None) for a, v in pooled.items()},
        "motion_by_kind": {m: float(np.mean(v)) for m, v in sorted(by_motion.items())},
        "flicker": float(np.mean([s["flicker"] for s in scored_rows])),
        "smoothness": float(np.mean([s["smoothness"] for s in scored_rows])),
        "rows": list(scored_rows),
    }


def ground_truth_generate(row: dict, seed: int, frames: int = 17, height: int = 64, width: int = 64) -> np.ndarray:
    """ShapesWorld's own render of the row's spec, rng seeded by `seed`: what a perfect model would draw."""
    return sw.render(sw.row_to_spec(row), frames, height, width, rng=np.random.default_rng(seed))


def run_bench(rows: Iterable[dict], seeds: Sequence[int], generate: Callable[[str, int], np.ndarray]) -> dict:
    """Scores generate(prompt, seed) for every row and seed; returns `aggregate` of them."""
    scored = []
    for row in rows:
        for seed in seeds:
            s = score_video(generate(row["prompt"], seed), row)
            s["seed"] = seed
            scored.append(s)
    return aggregate(scored)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m kinema.models.shapes_bench write-prompts | ground-truth`."""
    parser = argparse.ArgumentParser(prog="shapes_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write-prompts", help="regenerate the prompt files in models/data")
    gt = sub.add_parser("ground-truth", help="score ShapesWorld's own renders (checks the scorer)")
    gt.add_argument("--prompts", default=str(PROMPTS_PATH))
    gt.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    gt.add_argument("--frames", type=int, default=17)
    gt.add_argument("--height", type=int, default=64)
    gt.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)
    if args.cmd == "write-prompts":
        for p in write_prompt_files():
            print(p)
        return
    rows = load_prompts(args.prompts)
    by_prompt = {r["prompt"]: r for r in rows}
    result = run_bench(
        rows,
        args.seeds,
        lambda prompt, seed: ground_truth_generate(by_prompt[prompt], seed, args.frames, args.height, args.width),
    )
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, indent=2))


__all__ = [
    "ATTRIBUTES", "DATA_DIR", "HELDOUT_PROMPTS_PATH", "PROMPTS_PATH", "aggregate", "flicker_score", "ground_truth_generate",
    "load_prompts", "main", "make_prompt_rows", "run_bench", "score_video", "smoothness_score", "validate_row", "write_prompt_files",
]


if __name__ == "__main__":
    main()
