"""Image and video prompts on a trained bundle: image-to-video fidelity and adherence, seams, 60-second memory.

    python benchmarks/media_quality.py [--bundle DIR] [--rows 28] [--seam-rows 6] [--parts i2v,seams,memory] [--out benchmarks/results]

Measured in one run, at the bundle's default settings (size, steps, guidance, sampler):
- image-to-video: for ShapesBench prompt rows, the row's ShapesWorld render (frame 0) is the
  image; PSNR of the first output frame against the raw image and against the image's VAE
  round trip (decode(encode(image))), and ShapesBench adherence of the animated clips next
  to text-only clips of the same rows and seeds;
- seams: mean absolute frame-to-frame difference (0-255) across each window seam of long
  text-to-video clips (latent reuse, the default, and decode/re-encode), across the seam
  between a ShapesWorld clip and its forward extension (every pair from entering the
  clip's faded last frames to the first new frame), and across a loop's wrap; each beside
  the typical (mean, median, p90) difference between consecutive frames inside clips;
- a 60-second and a 4-second clip made by `kinema generate` in fresh processes: wall time
  (command start to file written) and peak RSS.
Writes benchmarks/results/media_quality/result.json and result.md (under --out, the
results root), with the machine each part ran on; with --parts, the named parts replace
theirs in an existing result.json of the same bundle (parts can be run apart).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import common
from kinema.models import shapes_bench as sb
from kinema.runtime import Pipeline
from kinema.runtime.media import rules, tasks, windows

NAME = "media_quality"
PROMPT_60S = "a red ball bouncing on a white background"

_CLI_CHILD = r"""
import json, resource, sys, time
from kinema.runtime import cli
rc = cli.main(sys.argv[1:])
print("RESULT " + json.dumps({"rc": rc, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR in dB of two uint8 images; None when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0 else 10 * math.log10(255.0**2 / mse)


def frame_diffs(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0-255) between each pair of consecutive frames: (T-1,)."""
    f = frames.astype(np.float32)
    return np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))


def image_to_video(pipe: Pipeline, rows: list[dict], seed: int) -> dict:
    per, animated, text_only = [], [], []
    for row in rows:
        image = sb.ground_truth_generate(row, seed)[0]  # (64, 64, 3): the row's scene at frame 0
        video = pipe.animate(image, row["prompt"], seed=seed).frames
        rt = np.rint(np.clip(pipe.decode(windows.encode(pipe, image[None]))[0, 0], 0, 1) * 255).astype(np.uint8)
        per.append({
            "prompt": row["prompt"],
            "psnr_vs_image_db": psnr(video[0], image),
            "psnr_vs_round_trip_db": psnr(video[0], rt),
            "max_abs_vs_round_trip": int(np.abs(video[0].astype(int) - rt).max()),
            "round_trip_psnr_vs_image_db": psnr(rt, image),
        })
        animated.append(sb.score_video(video, row))
        text_only.append(sb.score_video(pipe.generate(row["prompt"], seed=seed).frames, row))
        print(f"image-to-video {len(per)}/{len(rows)}", file=sys.stderr, flush=True)
    rt = [p["psnr_vs_round_trip_db"] for p in per]
    raw = [p["psnr_vs_image_db"] for p in per]
    strip = lambda a: {k: v for k, v in a.items() if k != "rows"}  # noqa: E731
    return {
        "clips": len(per),
        "first_frame_identical_to_round_trip": sum(v is None for v in rt),
        "min_psnr_vs_round_trip_db": min((v for v in rt if v is not None), default=None),
        "mean_psnr_vs_image_db": float(np.mean(raw)),
        "min_psnr_vs_image_db": float(np.min(raw)),
        "mean_round_trip_psnr_vs_image_db": float(np.mean([p["round_trip_psnr_vs_image_db"] for p in per])),
        "adherence_animate": strip(sb.aggregate(animated)),
        "adherence_text_only": strip(sb.aggregate(text_only)),
        "rows": per,
    }


def _seam_stats(diffs: list[np.ndarray], seams: list[list[list[int]]]) -> dict:
    """diffs per clip, and per clip its seams, each the list of indices i of the frame pairs
    (i, i + 1) it spans: one pair for a cut, every pair of a faded transition."""
    across = np.concatenate([d[i] for d, ss in zip(diffs, seams) for i in ss])
    worst = np.array([d[i].max() for d, ss in zip(diffs, seams) for i in ss])
    inside = np.concatenate([np.delete(d, [j for i in ss for j in i]) for d, ss in zip(diffs, seams)])
    return {
        "seams": len(worst),
        "pairs_per_seam": across.size / len(worst),
        "seam_diff_mean": float(across.mean()),
        "seam_worst_pair_mean": float(worst.mean()),
        "seam_diff_max": float(across.max()),
        "within_diff_mean": float(inside.mean()),
        "within_diff_median": float(np.median(inside)),
        "within_diff_p90": float(np.percentile(inside, 90)),
        "seam_over_within_mean": float(across.mean() / inside.mean()),
    }


def seams(pipe: Pipeline, rows: list[dict], seed: int, frames: int) -> dict:
    out = {}
    for seam in rules.SEAMS:
        diffs, where = [], []
        for row in rows:
            st = pipe.check_inputs(row["prompt"], frames=frames, seed=seed)
            chunks = list(tasks.long_stream(pipe, st, seam=seam))
            video = np.concatenate(chunks)
            diffs.append(frame_diffs(video))
            bounds = np.cumsum([len(c) for c in chunks])[:-1]  # index of each window's first new frame
            where.append([[int(b) - 1] for b in bounds])
        # a window seam is always a latent boundary (frame 4j -> 4j+1 of the causal VAE): the
        # same kind of pair inside the clips, for a like-for-like reference
        tm = pipe.bundle.latent["temporal_compression"]
        boundary = [d[i] for d, w in zip(diffs, where) for i in range(0, len(d), tm) if all(i not in s for s in w)]
        out[f"long_{seam}"] = _seam_stats(diffs, where) | {
            "frames": frames, "windows": len(where[-1]) + 1, "within_latent_boundary_mean": float(np.mean(boundary))}
        print(f"seams {seam} done", file=sys.stderr, flush=True)
    diffs, where = [], []
    for row in rows:
        clip = sb.ground_truth_generate(row, seed)  # 17 frames
        video = pipe.extend(clip, row["prompt"], 3.0, seed=seed).frames
        diffs.append(frame_diffs(video))  # inside: the ShapesWorld clip's and the generated frames' differences
        # the clip's last 5 frames fade into their reconstruction, then the new frames follow:
        # the pairs from entering the fade to the first new frame
        m = 1 + pipe.bundle.latent["temporal_compression"] * (rules.OVERLAP - 1)
        where.append([list(range(len(clip) - m - 1, len(clip)))])
    out["extend_clip"] = _seam_stats(diffs, where) | {
        "within_source_clip_mean": float(np.mean([frame_diffs(sb.ground_truth_generate(r, seed)).mean() for r in rows])),
        "within_generated_mean": float(np.mean([d[len(sb.ground_truth_generate(r, seed)):].mean() for d, r in zip(diffs, rows)])),
    }
    diffs, where = [], []
    for row in rows:
        clip = sb.ground_truth_generate(row, seed)
        st = pipe.check_inputs(row["prompt"], seed=seed)
        # backward: windows made from the clip back in time, each decoded on its own, then the
        # clip; a seam between each pair of chunks (the last one: new frames -> the clip), its
        # pairs from the window's last new frame through the next part's faded first frames
        chunks = list(tasks.extend_backward_stream(pipe, st, clip, rules.check_seconds(3.0, st.fps)))
        diffs.append(frame_diffs(np.concatenate(chunks)))
        m = pipe.bundle.latent["temporal_compression"] * rules.END_KNOWN
        where.append([list(range(int(b) - 1, int(b) - 1 + m)) for b in np.cumsum([len(c) for c in chunks])[:-1]])
    out["extend_backward_clip"] = _seam_stats(diffs, where)
    diffs, where = [], []
    for row in rows:
        video = pipe.generate(row["prompt"], frames=25, loop=True, seed=seed).frames
        d = frame_diffs(np.concatenate([video, video[:1]]))  # the last diff is the wrap
        diffs.append(d)
        where.append([[len(d) - 1]])
    out["loop_wrap"] = _seam_stats(diffs, where) | {"frames": 24}
    # reference: the same prompts as plain one-window clips (what a window is on its own)
    plain = [frame_diffs(pipe.generate(row["prompt"], seed=seed).frames) for row in rows]
    tm = pipe.bundle.latent["temporal_compression"]
    pairs = np.concatenate(plain)
    out["plain_clip"] = {
        "clips": len(plain), "frames": len(plain[0]) + 1, "diff_mean": float(pairs.mean()), "diff_median": float(np.median(pairs)),
        "latent_boundary_mean": float(np.mean([d[i] for d in plain for i in range(0, len(d), tm)])),
    }
    return out


def cli_run(args: list[str]) -> dict:
    """Wall time and peak RSS of one `kinema` command in a fresh process."""
    sw = common.Stopwatch()
    r = subprocess.run([sys.executable, "-c", _CLI_CHILD, *args], capture_output=True, text=True)
    wall = sw.elapsed()
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"kinema {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return json.loads(lines[-1][7:]) | {"wall_s": wall}


def long_memory(bundle: str | None, long_seconds: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for seconds in (4, long_seconds):
            args = ["generate", PROMPT_60S, "--seconds", str(seconds), "-o", f"{d}/clip{seconds}.mp4", "-q"] + (["--bundle", bundle] if bundle else [])
            r = cli_run(args)
            from kinema.runtime.video.core import read_video

            r["frames"] = int(read_video(f"{d}/clip{seconds}.mp4")[0].shape[0])
            r["command"] = f'kinema generate "{PROMPT_60S}" --seconds {seconds} -o clip.mp4'
            out["short" if seconds == 4 else "long"] = r | {"seconds": seconds}
            print(f"{seconds} s clip: {r['wall_s']:.1f} s, {r['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    out["rss_ratio_long_over_short"] = out["long"]["peak_rss_mib"] / out["short"]["peak_rss_mib"]
    return out


def _f(v, digits=2) -> str:
    return "identical" if v is None else f"{v:.{digits}f}"


def table(result: dict) -> str:
    lines = [f"Bundle {result['bundle_name']} ({result['bundle_sha256'][:12]}), default settings {result['settings']}, seed {result['seed']}"]
    if "machine" in result:
        lines += ["", f"Machine: {common.describe_machine(result['machine'])}."]
    for part, fn in (("image_to_video", _i2v_table), ("seams", _seams_table), ("memory", _memory_table)):
        if part in result:
            run = result["runs"][part]
            lines += ["", *fn(result[part]), "", f"({part}: bundle {run.get('bundle_sha256', result['bundle_sha256'])[:12]}, {run['wall_s']:.0f} s, "
                      f"load average {run['load_before']:.1f} before, {run['load_after']:.1f} after, on {run.get('machine', {}).get('cores', os.cpu_count())} cores)"]
    return "\n".join(lines)


def _i2v_table(i2v: dict) -> list[str]:
    a, t = i2v["adherence_animate"], i2v["adherence_text_only"]
    lines = [
        f"Image-to-video, {i2v['clips']} ShapesBench rows (image = the row's ShapesWorld frame 0):",
        "",
        "| first output frame vs | PSNR |",
        "|---|---:|",
        f"| the image's VAE round trip | identical in {i2v['first_frame_identical_to_round_trip']} of {i2v['clips']} clips"
        + (f"; min {_f(i2v['min_psnr_vs_round_trip_db'])} dB in the others" if i2v['min_psnr_vs_round_trip_db'] is not None else "") + " |",
        f"| the raw image | mean {i2v['mean_psnr_vs_image_db']:.2f} dB, min {i2v['min_psnr_vs_image_db']:.2f} dB |",
        f"| (VAE round trip vs raw image) | mean {i2v['mean_round_trip_psnr_vs_image_db']:.2f} dB |",
        "",
        "| ShapesBench, same rows and seed | adherence | " + " | ".join(a["accuracy"]) + " | flicker | smoothness |",
        "|---|---:|" + "---:|" * len(a["accuracy"]) + "---:|---:|",
    ]
    for name, r in (("image + prompt (animate)", a), ("prompt only (generate)", t)):
        lines.append(f"| {name} | {r['adherence']:.3f} | " + " | ".join(_f(v, 3) if v is not None else "n/a" for v in r["accuracy"].values())
                     + f" | {r['flicker']:.4f} | {r['smoothness']:.4f} |")
    return lines


def _seams_table(sm: dict) -> list[str]:
    lines = [
        "Frame-to-frame difference (mean |Δ| of consecutive frames, 0-255):",
        "",
        "| seam | seams × pairs | across the seam (mean / worst pair per seam / max) | inside clips (mean / median / p90) | seam / inside (means) |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {
        "long_latents": f"long clip, {sm['long_latents']['frames']} frames, latents reused (default)",
        "long_reencode": f"long clip, {sm['long_reencode']['frames']} frames, decode + re-encode",
        "extend_clip": "ShapesWorld clip -> its extension (3 s)",
        "extend_backward_clip": "backward extension (3 s, window by window) -> ShapesWorld clip",
        "loop_wrap": "loop wrap (24-frame loop, last -> first)",
    }
    for key, name in names.items():
        if key not in sm:  # a result file from before the row existed
            continue
        s = sm[key]
        lines.append(f"| {name} | {s['seams']} × {s['pairs_per_seam']:g} | {s['seam_diff_mean']:.2f} / {s['seam_worst_pair_mean']:.2f} / {s['seam_diff_max']:.2f} | "
                     f"{s['within_diff_mean']:.2f} / {s['within_diff_median']:.2f} / {s['within_diff_p90']:.2f} | {s['seam_over_within_mean']:.2f} |")
    lines += ["", "A seam's pairs: one (the cut) for window seams and the loop wrap; for a forward extension, every "
              "pair from entering the clip's faded last frames to the first new frame; for a backward one, every pair "
              "from a window's last new frame through the next part's faded first frames."]
    lines += ["", "A window seam is a latent boundary (frame 4j -> 4j+1); the same pairs inside the long clips: "
              + ", ".join(f"{k.split('_')[1]} {sm[k]['within_latent_boundary_mean']:.2f}" for k in ("long_latents", "long_reencode")
                          if "within_latent_boundary_mean" in sm[k]) + " (mean)."]
    if "plain_clip" in sm:
        p = sm["plain_clip"]
        lines += ["", f"The same prompts as plain {p['frames']}-frame clips (one window): {p['diff_mean']:.2f} per frame pair "
                  f"(median {p['diff_median']:.2f}; latent boundaries {p['latent_boundary_mean']:.2f})."]
    e = sm["extend_clip"]
    lines += ["", f"Extension: inside the ShapesWorld clips {e['within_source_clip_mean']:.2f}, inside the generated parts {e['within_generated_mean']:.2f} (mean)."]
    return lines


def _memory_table(mem: dict) -> list[str]:
    lines = [
        "Long clips, `kinema generate` in a fresh process each (command start to file written):",
        "",
        "| clip | frames | wall time | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for k in ("short", "long"):
        m = mem[k]
        lines.append(f"| {m['seconds']} s (`{m['command']}`) | {m['frames']} | {m['wall_s']:.1f} s | {m['peak_rss_mib']:.0f} MiB |")
    lines += ["", f"Peak RSS {mem['long']['seconds']} s / {mem['short']['seconds']} s: {mem['rss_ratio_long_over_short']:.3f}"]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the built-in one)")
    ap.add_argument("--rows", type=int, default=28, help="ShapesBench rows for image-to-video (spread over the file)")
    ap.add_argument("--seam-rows", type=int, default=6, help="prompts for the seam measurements")
    ap.add_argument("--seam-frames", type=int, default=65, help="length of the long clips whose seams are measured")
    ap.add_argument("--long-seconds", type=int, default=60, help="the long clip whose wall time and peak RSS are set against a 4 s one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    ap.add_argument("--parts", default="i2v,seams,memory", help="which measurements to run (comma-separated)")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    if not set(parts) <= {"i2v", "seams", "memory"}:
        raise SystemExit(f"--parts {args.parts}: choose from i2v, seams, memory")
    pipe = Pipeline.from_bundle(args.bundle)
    rows = sb.load_prompts(sb.PROMPTS_PATH)
    pick = lambda n: [rows[i] for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]  # noqa: E731
    path = common.result_dir(NAME, args.out) / "result.json"
    result = json.loads(path.read_text()) if path.is_file() and parts != ["i2v", "seams", "memory"] else {}
    if result.get("bundle_sha256") != pipe.bundle.digest or result.get("seed") != args.seed:
        result = {}  # parts of another bundle or seed are not mixed in
    result |= {
        "bundle": str(pipe.bundle.path),
        "bundle_name": pipe.bundle.name,
        "bundle_sha256": pipe.bundle.digest,
        "settings": {k: pipe.bundle.sampler[k] for k in ("sampler", "steps", "guidance", "shift")},
        "seed": args.seed,
        "machine": common.machine(),  # this run's; each part's own is in runs
    }
    result.setdefault("runs", {})
    jobs = {
        "i2v": ("image_to_video", lambda: image_to_video(pipe, pick(args.rows), args.seed)),
        "seams": ("seams", lambda: seams(pipe, pick(args.seam_rows), args.seed, args.seam_frames)),
        "memory": ("memory", lambda: long_memory(args.bundle, args.long_seconds)),
    }
    for part in parts:
        key, run = jobs[part]
        load0, sw = os.getloadavg()[0], common.Stopwatch()
        result[key] = run()
        if pipe.bundle.digest != result["bundle_sha256"]:  # graphs open lazily: a bundle replaced mid-run mixes versions
            raise SystemExit(f"{pipe.bundle.path} changed while {key} was measured; run again")
        result["runs"][key] = {"wall_s": sw.elapsed(), "load_before": load0, "load_after": os.getloadavg()[0],
                               "bundle_sha256": result["bundle_sha256"], "machine": result["machine"]}
    md = table(result) + "\n\nCommand: `python benchmarks/media_quality.py` (parts: --parts i2v,seams,memory).\n"
    common.write_result(NAME, result, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
