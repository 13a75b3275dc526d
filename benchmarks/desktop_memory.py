"""Pipeline.estimate_memory against the measured peak resident set of real generations.

    python benchmarks/desktop_memory.py [--bundle DIR] [--steps 2] [--out benchmarks/results]

Each size runs in a fresh subprocess (peak RSS is per process): import kinema.runtime,
open the bundle, generate once at that size with guidance on, and read ru_maxrss. The
estimate is computed in the same child before any graph opens. Steps do not change the
peak (every step has the same tensors), so 2 steps keep it quick. Writes
benchmarks/results/desktop_memory/result.json and result.md (under --out, the results
root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import common

NAME = "desktop_memory"
SIZES = ((17, 64, 64), (9, 32, 32), (33, 64, 64), (17, 128, 128), (33, 128, 128))

_CHILD = r"""
import json, resource, sys
from kinema.runtime import Pipeline
bundle, frames, h, w, steps = sys.argv[1] or None, *map(int, sys.argv[2:6])
pipe = Pipeline.from_bundle(bundle)
est = pipe.estimate_memory(frames, h, w)
video = pipe.generate("a red ball bouncing on a black background", frames=frames, height=h, width=w, steps=steps, seed=0)
assert video.num_frames == frames
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"estimate": est, "peak_rss": peak}))
"""

MIB = 1 << 20


def run_child(bundle: str, frames: int, h: int, w: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, bundle, str(frames), str(h), str(w), str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="", help="bundle folder (default: the built-in one)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args(argv)
    rows = []
    for frames, h, w in SIZES:
        r = run_child(args.bundle, frames, h, w, args.steps)
        est = r["estimate"]
        rows.append({"frames": frames, "height": h, "width": w, "estimate": est, "estimate_peak_mib": est["peak"] / MIB,
                     "measured_peak_mib": r["peak_rss"] / MIB, "ratio": est["peak"] / r["peak_rss"]})
        print(f"{frames}x{h}x{w}: estimate {est['peak'] / MIB:.0f} MiB, measured {r['peak_rss'] / MIB:.0f} MiB, ratio {rows[-1]['ratio']:.2f}", flush=True)
    result = {"bundle": args.bundle or "built-in", "steps": args.steps, "machine": common.machine(), "rows": rows}
    lines = [
        f"# Pipeline.estimate_memory vs measured peak RSS ({result['bundle']} bundle, {args.steps} steps, {common.describe_machine(result['machine'])})",
        "",
        "| frames x H x W | estimate peak (MiB) | measured peak RSS (MiB) | estimate / measured | weights | largest stage | video |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["estimate"]
        stage = max(("text_encoder", "denoiser", "decoder"), key=lambda k: e[k])
        lines.append(f"| {r['frames']}x{r['height']}x{r['width']} | {r['estimate_peak_mib']:.0f} | {r['measured_peak_mib']:.0f} | {r['ratio']:.2f} | "
                     f"{e['weights'] / MIB:.0f} | {stage} {e[stage] / MIB:.1f} | {e['video'] / MIB:.1f} |")
    common.write_result(NAME, result, "\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
