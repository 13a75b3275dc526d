"""What the sampler's denoiser callable costs beyond its graph: `model(x, sigma)` against `session.run` alone.

    python benchmarks/denoiser_overhead.py [--bundle DIR] [--threads 2] [--rounds 25] [--out benchmarks/results]

At the default clip and settings (guidance on, batched guidance): the callable the samplers
call (`Engine.denoiser`: feeds built, guidance combined, prediction converted) and one
`session.run` of the same denoiser session on the same feeds prepared beforehand, timed in
interleaved rounds so a slow spell of the machine hits both alike. Writes
benchmarks/results/denoiser_overhead/result.json and result.md with the machine it ran on;
the JSON's `callable_over_graph` is the median ratio (the goal is at most 1.1).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import common
from perf_suite import denoiser_feeds

NAME = "denoiser_overhead"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the built-in one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--out", default=str(common.RESULTS))
    args = ap.parse_args()
    from kinema.runtime import Pipeline
    from kinema.runtime.bundle.load import default_bundle_path

    bundle = args.bundle or str(default_bundle_path())
    pipe = Pipeline.from_bundle(bundle, threads=args.threads)
    st = pipe.check_inputs("a yellow star spinning on a gray background")
    model = pipe.denoiser(st, pipe.encode_text([st.prompt, st.negative_prompt]))
    x = pipe.initial_noise(st)
    session = pipe.session("denoiser")
    feeds = denoiser_feeds(pipe, st)
    fns = {"callable": lambda: model(x, 0.5), "graph alone": lambda: session.run(None, feeds)}
    runs = common.interleaved(fns, args.rounds, 1, warm=3)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    paired = [c / g for c, g in zip(runs["callable"], runs["graph alone"])]
    data = {
        "bundle": pipe.bundle.name, "bundle_sha256": pipe.bundle.digest, "threads": args.threads,
        "settings": {k: getattr(st, k) for k in ("frames", "height", "width", "guidance", "cfg_mode")},
        "seconds": med, "runs": runs, "callable_over_graph": med["callable"] / med["graph alone"],
        "paired_ratio_median": float(np.median(paired)), "machine": common.machine(threads=args.threads),
    }
    md = "\n".join([
        "# The denoiser callable against its graph alone", "",
        f"Bundle {data['bundle']}, default clip {st.frames} frames {st.width}x{st.height}, guidance {st.guidance:g} ({st.cfg_mode}), "
        f"{args.threads} threads, {args.rounds} interleaved rounds, medians.", "",
        "| call | median | min | max |", "|---|---:|---:|---:|",
        *[f"| {k} | {med[k] * 1e3:.2f} ms | {min(v) * 1e3:.2f} ms | {max(v) * 1e3:.2f} ms |" for k, v in runs.items()], "",
        f"Callable / graph alone: {data['callable_over_graph']:.3f} (median of the paired rounds {data['paired_ratio_median']:.3f}).", "",
        f"Machine: {common.describe_machine(data['machine'])}.", "",
    ])
    common.write_result(NAME, data, md, args.out)
    print(md)


if __name__ == "__main__":
    main()
