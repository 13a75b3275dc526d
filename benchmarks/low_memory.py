"""Peak RSS of one generation with and without the Pipeline's low-memory mode.

    python benchmarks/low_memory.py [--bundle DIR] [--frames 17] [--steps 4] [--out benchmarks/results]

Each mode runs in a fresh subprocess (peak RSS is per process): the same prompt, seed and
settings; low_memory=True keeps one graph open at a time (the text encoder is released
before the denoiser loads, the denoiser before the decoder). Also records which graphs
were still open at the end and that both videos are identical.
Writes benchmarks/results/low_memory/result.json and result.md (under --out, the results
root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import common

NAME = "low_memory"

_CHILD = r"""
import hashlib, json, resource, sys, time
from kinema.runtime import Pipeline
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
pipe = Pipeline.from_bundle(cfg["bundle"], threads=cfg["threads"], low_memory=cfg["low_memory"])
video = pipe.generate("a red ball bouncing on a white background", frames=cfg["frames"], steps=cfg["steps"], seed=1)
print("RESULT " + json.dumps({
    "low_memory": cfg["low_memory"], "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "wall_s": round(time.perf_counter() - t0, 2), "open_at_end": sorted(pipe._sessions),
    "video_sha256": hashlib.sha256(video.frames.tobytes()).hexdigest()}))
"""


def graph_mib(bundle) -> dict:
    from kinema.runtime.bundle.load import default_bundle_path, load_bundle

    b = load_bundle(bundle or default_bundle_path(), verify_hashes=False)
    return {n: round((c["bytes"] + sum(e["bytes"] for e in c.get("external_data", []))) / 2**20, 1) for n, c in b.components.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args(argv)
    rows = []
    for low in (False, True):
        cfg = {"bundle": args.bundle, "frames": args.frames, "steps": args.steps, "threads": args.threads, "low_memory": low}
        p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, check=True)
        rows.append(json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:]))
    result = {
        "bundle": args.bundle or "kinema-tiny (built-in)",
        "graph_mib": graph_mib(args.bundle),
        "settings": {"frames": args.frames, "steps": args.steps, "threads": args.threads},
        "machine": common.machine(),
        "date": common.utc_now(),
        "runs": rows,
        "same_video": rows[0]["video_sha256"] == rows[1]["video_sha256"],
    }
    md = [f"Bundle {result['bundle']} (graphs MiB: {result['graph_mib']}), {args.frames} frames, {args.steps} steps, {args.threads} threads, {result['date']}", "",
          "| mode | peak RSS MiB | wall s | graphs open at the end |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {'low_memory' if r['low_memory'] else 'default'} | {r['peak_rss_mib']:.0f} | {r['wall_s']} | {', '.join(r['open_at_end'])} |")
    md.append(f"\nSame video in both modes: {result['same_video']}")
    md.append(f"\nMachine: {common.describe_machine(result['machine'])}.")
    common.write_result(NAME, result, "\n".join(md) + "\n", args.out)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
