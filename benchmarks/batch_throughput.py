"""Batch throughput side by side: a shell loop of `kinema generate`, one in-process Pipeline loop, `kinema batch`, and `kinema batch --ray`.

    python benchmarks/batch_throughput.py [--videos 24] [--steps 20] [--workers 2] [--out benchmarks/results]

One run on one machine, the same requests in each (the default clip, one prompt, seeds
0..N-1):

- `loop`: N `kinema generate` processes, one after the other, each with every core;
- `pipeline`: one Python process with one `Pipeline`, generating N videos in a loop;
- `batch`: `kinema batch` with its default plan (workers and threads from cores and memory);
- `batch_w`: `kinema batch --workers W`, and `ray_w`: `kinema batch --ray ADDRESS --workers W`
  on a local Ray cluster (one head node started here, the CPUs of the machine), so the Ray
  runner is measured against the built-in runner at equal workers. The cluster's start is
  not counted; the driver's connection, its actors' start and its leaving are.

Each variant is timed as a whole command (process start included), in `--rounds` rounds
that run every variant in turn, so a slow spell of a shared machine falls on all of them
alike. The cluster is up through all rounds: every variant runs beside its idle daemons,
and the Ray figure is what the runner adds. Reported: each variant's min, median and max,
the ratios of the medians, and Ray's overhead as the median of its per-round ratios to the
built-in runner at equal workers. Also recorded: the per-video time inside the workers and
the per-job overhead, for the scaling model in docs/batch.md. Writes
benchmarks/results/batch_throughput/result.json and result.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "batch_throughput"
PROMPT = "a red circle moving right and a blue square moving left on a black background"

_PIPELINE = r"""
import sys
from kinema.runtime import Pipeline
n, steps, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pipe = Pipeline.from_bundle()
for s in range(n):
    pipe.generate(sys.argv[4], steps=steps, seed=s).save(f"{out}/p{s}.mp4")
"""


def _timed(cmd: list[str], env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def _batch_file(tmp: Path, n: int, steps: int) -> Path:
    f = tmp / "batch.jsonl"
    f.write_text(json.dumps({"prompt": PROMPT, "seeds": list(range(n)), "steps": steps, "name": "v"}) + "\n")
    return f


def _kinema(*args: str) -> list[str]:
    return [sys.executable, "-m", "kinema.runtime.cli", *args]


def _per_video(out: Path) -> list[float]:
    return [json.loads(ln)["seconds"] for ln in (out / "results.jsonl").read_text().splitlines()]


def _median(v: list[float]) -> float:
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="workers of the built-in and Ray runners compared at equal workers")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every variant in turn")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}}")
    args = ap.parse_args(argv)
    n, steps, w = args.videos, args.steps, args.workers
    wall: dict[str, list[float]] = {}
    inside: dict[str, list[float]] = {}
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    port = "6391"
    ray_up = False
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        f = _batch_file(tmp, n, steps)

        def loop(out: Path) -> None:
            for s in range(n):
                _timed(_kinema("generate", PROMPT, "--steps", str(steps), "--seed", str(s), "-q", "-o", str(out / f"l{s}.mp4")))

        variants = {
            "loop": lambda out: loop(out),
            "pipeline": lambda out: _timed([sys.executable, "-c", _PIPELINE, str(n), str(steps), str(out), PROMPT]),
            "batch": lambda out: _timed(_kinema("batch", str(f), "--out", str(out), "-q")),
            f"batch_w{w}": lambda out: _timed(_kinema("batch", str(f), "--out", str(out), "--workers", str(w), "-q")),
        }
        if not args.no_ray:
            variants[f"ray_w{w}"] = lambda out: _timed(
                _kinema("batch", str(f), "--out", str(out), "--workers", str(w), "--ray", f"127.0.0.1:{port}", "-q"), env=env)
            subprocess.run(["ray", "start", "--head", "--port", port, "--num-cpus", str(os.cpu_count()), "--include-dashboard=false", "--disable-usage-stats"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            ray_up = True
        try:
            for r in range(args.rounds):
                for name, run in variants.items():
                    out = tmp / f"{name}-{r}"
                    out.mkdir()
                    t0 = time.perf_counter()
                    run(out)
                    wall.setdefault(name, []).append(time.perf_counter() - t0)
                    if name.startswith(("batch", "ray")):
                        inside.setdefault(name, []).extend(_per_video(out))
                    for p in out.iterdir():  # keep the disk small over the rounds
                        p.unlink()
        finally:
            if ray_up:
                subprocess.run(["ray", "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    med = {k: _median(v) for k, v in wall.items()}
    rate = {k: n / v for k, v in med.items()}
    ratios = {"batch_over_loop": rate["batch"] / rate["loop"], "batch_over_pipeline": rate["batch"] / rate["pipeline"]}
    if f"ray_w{w}" in wall:
        ratios["ray_overhead"] = _median([a / b - 1 for a, b in zip(wall[f"ray_w{w}"], wall[f"batch_w{w}"])])
        ratios["ray_overhead_of_medians"] = med[f"ray_w{w}"] / med[f"batch_w{w}"] - 1
    # scaling model: T(N machines) = jobs * (t_job + overhead) / (N * workers) + start
    t_job = sum(inside[f"batch_w{w}"]) / len(inside[f"batch_w{w}"])
    overhead = max(0.0, med[f"batch_w{w}"] * w / n - t_job)
    result = {
        "machine": common.machine(), "when": common.utc_now(),
        "settings": {"prompt": PROMPT, "videos": n, "steps": steps, "workers_compared": w, "rounds": args.rounds},
        "wall_s": {k: [round(x, 2) for x in v] for k, v in wall.items()},
        "median_wall_s": {k: round(v, 2) for k, v in med.items()},
        "videos_per_s": {k: round(v, 3) for k, v in rate.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "per_video_inside_worker_s": {k: round(sum(v) / len(v), 3) for k, v in inside.items()},
        "scaling_model": {"t_job_s": round(t_job, 3), "overhead_per_job_s": round(overhead, 3), "workers_per_machine": w},
    }
    lines = [f"# Batch throughput\n\nMachine: {common.describe_machine(result['machine'])}. Measured {result['when']}.\n",
             f"{n} default clips ({steps} steps), one prompt, seeds 0..{n - 1}; each variant timed as a whole command, "
             f"{args.rounds} rounds of every variant in turn.\n",
             "| variant | min s | median s | max s | videos/s (median) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {min(v):.1f} | {med[k]:.1f} | {max(v):.1f} | {rate[k]:.3f} |" for k, v in wall.items()]
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    if "ray_overhead" in ratios:
        per_round = ", ".join(f"{a / b - 1:+.1%}" for a, b in zip(wall[f"ray_w{w}"], wall[f"batch_w{w}"]))
        lines += ["", f"Ray over the built-in runner at {w} workers, round by round: {per_round} (ray_overhead is their median)."]
    lines += ["", f"Per video inside a worker: {t_job:.3f} s; per-job overhead at {w} workers: {overhead:.3f} s."]
    folder = common.write_result(NAME, result, "\n".join(lines), args.out)
    print("\n".join(lines))
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
