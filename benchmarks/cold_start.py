"""Cold start of the built-in bundle: from a fresh process's launch to the first sampling step's callback.

    python benchmarks/cold_start.py [--bundle DIR] [--runs 7] [--threads 2] [--out benchmarks/results]

Each run is a new Python process that imports kinema, opens the bundle, checks the prompt
(policy included), encodes the text and reaches the first step's callback, then stops: the
time a user waits before anything moves. Wall clock from just before the launch to the
callback, and the child's CPU seconds. Writes benchmarks/results/cold_start/result.json and
result.md with the machine it ran on; the goal is at most 1 s (the JSON's `median_s`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import common

NAME = "cold_start"
PROMPT = "a yellow star spinning on a gray background"
CHILD = r"""
import json, sys, time
from kinema.runtime import Cancelled, Pipeline
pipe = Pipeline.from_bundle(sys.argv[1], threads=int(sys.argv[3]))
def first(p):
    print(json.dumps({"first_step": time.time(), "cpu": time.process_time()}), flush=True)
    raise Cancelled("done")
try:
    pipe.generate(sys.argv[2], callback=first)
except Cancelled:
    pass
"""


def one_run(bundle: str, threads: int) -> dict:
    launch = time.time()
    r = subprocess.run([sys.executable, "-c", CHILD, bundle, PROMPT, str(threads)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"child failed ({r.returncode}): {r.stderr[-2000:]}")
    out = json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])
    return {"wall_s": out["first_step"] - launch, "cpu_s": out["cpu"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the built-in one)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(common.RESULTS))
    args = ap.parse_args()
    from kinema.runtime.bundle.load import default_bundle_path

    bundle = args.bundle or str(default_bundle_path())
    one_run(bundle, args.threads)  # the first run warms the file cache; not counted
    runs = [one_run(bundle, args.threads) for _ in range(args.runs)]
    wall = [r["wall_s"] for r in runs]
    data = {"bundle": args.bundle or "built-in", "threads": args.threads, "runs": runs, "median_s": float(np.median(wall)),
            "min_s": min(wall), "max_s": max(wall), "cpu_median_s": float(np.median([r["cpu_s"] for r in runs])),
            "machine": common.machine(threads=args.threads)}
    md = "\n".join([
        "# Cold start: launch to the first step's callback", "",
        f"Built-in bundle, prompt {PROMPT!r}, {args.threads} threads, {args.runs} fresh processes after one uncounted run.", "",
        "| | median | min | max |", "|---|---:|---:|---:|",
        f"| wall clock | {data['median_s']:.3f} s | {data['min_s']:.3f} s | {data['max_s']:.3f} s |",
        f"| CPU seconds of the process | {data['cpu_median_s']:.3f} s | | |", "",
        f"Machine: {common.describe_machine(data['machine'])}.", "",
    ])
    common.write_result(NAME, data, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
