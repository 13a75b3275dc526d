"""kinema serve under load: concurrent SDK clients against a bounded queue, beside a plain loop of `kinema generate`.

    python benchmarks/serve_load.py [--clients 5] [--jobs 40] [--queue 16] [--loop 8] [--steps 20] [--out benchmarks/results]

One run, side by side on one machine: a loop of `kinema generate` processes (half before
the server run, half after), then a `kinema serve` process with `--queue` slots that
`--clients` threads of the official `openai` SDK fill with `--jobs` jobs in all (each
client submits its share at once, and a refused job is retried by the SDK's own retry on
the server's 429 and `retry-after-ms`). Recorded: every job's final status, how many
submissions were refused, the jobs per second of each side, and the peak RSS (VmHWM) of
the server process against that of one `kinema generate` process. Same prompt, settings
and threads on both sides; seeds differ per video.
Writes benchmarks/results/serve_load/result.json and result.md, with the machine.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import common

NAME = "serve_load"
PROMPT = "a red circle moving right and a blue square moving left on a black background"

_GENERATE = r"""
import sys
from kinema.runtime.cli import main
rc = main(sys.argv[1:])
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print(f"VMHWM_KB {hwm}", file=sys.stderr)
sys.exit(rc)
"""


def _vmhwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmHWM")).split()[1]) / 1024


def cli_loop(n: int, steps: int, threads: int, seed0: int, tmp: Path) -> tuple[float, list[float]]:
    """Seconds for `n` `kinema generate` processes in sequence, and each one's peak RSS in MiB."""
    peaks = []
    t0 = time.perf_counter()
    for i in range(n):
        p = subprocess.run([sys.executable, "-c", _GENERATE, "generate", PROMPT, "-o", str(tmp / f"cli{seed0 + i}.mp4"),
                            "--steps", str(steps), "--seed", str(seed0 + i), "--threads", str(threads), "-q"],
                           capture_output=True, text=True, check=True)
        peaks.append(int(p.stderr.split("VMHWM_KB ")[1].split()[0]) / 1024)
    return time.perf_counter() - t0, peaks


def serve_run(args, tmp: Path) -> dict:
    import httpx2 as httpx
    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "kinema.runtime.cli", "serve", "--port", str(port), "--data", str(tmp / "data"),
                             "--queue", str(args.queue), "--threads", str(args.threads)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        ids, errors, lock = [], [], threading.Lock()
        share = [args.jobs // args.clients + (k < args.jobs % args.clients) for k in range(args.clients)]

        def client(k: int):
            c = openai.OpenAI(base_url=url + "/v1", api_key="local", max_retries=1000)
            for j in range(share[k]):
                try:
                    v = c.videos.create(prompt=PROMPT, extra_body={"num_inference_steps": args.steps, "seed": 1000 + 100 * k + j})
                    with lock:
                        ids.append(v.id)
                except openai.APIError as e:
                    with lock:
                        errors.append(repr(e))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c = openai.OpenAI(base_url=url + "/v1", api_key="local")
        final = {}
        while len(final) < len(ids):
            for vid in ids:
                if vid not in final:
                    v = c.videos.retrieve(vid)
                    if v.status in ("completed", "failed"):
                        final[vid] = v.status
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        health = httpx.get(url + "/health").json()
        return {"wall_s": round(wall, 2), "accepted": len(ids), "submit_errors": errors, "refused_429": health["refused"],
                "completed": sum(s == "completed" for s in final.values()), "failed": sum(s == "failed" for s in final.values()),
                "server_peak_rss_mib": round(_vmhwm_mib(proc.pid), 1)}
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--loop", type=int, default=8, help="kinema generate processes in the plain loop (half before, half after)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}}")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        half = args.loop // 2
        a_s, a_peaks = cli_loop(half, args.steps, args.threads, 0, tmp)
        served = serve_run(args, tmp)
        b_s, b_peaks = cli_loop(args.loop - half, args.steps, args.threads, half, tmp)
    loop_rate = args.loop / (a_s + b_s)
    serve_rate = served["completed"] / served["wall_s"]
    one_peak = max(a_peaks + b_peaks)
    result = {
        "machine": common.machine(threads=args.threads), "when": common.utc_now(),
        "settings": {"prompt": PROMPT, "steps": args.steps, "clients": args.clients, "jobs": args.jobs, "queue": args.queue, "loop": args.loop},
        "serve": served, "loop": {"videos": args.loop, "wall_s": round(a_s + b_s, 2), "peak_rss_mib": [round(x, 1) for x in a_peaks + b_peaks]},
        "jobs_per_s": {"serve": round(serve_rate, 3), "generate_loop": round(loop_rate, 3)},
        "throughput_ratio": round(serve_rate / loop_rate, 2),
        "server_rss_over_one_generation": round(served["server_peak_rss_mib"] / one_peak, 3),
    }
    md = "\n".join([
        f"# kinema serve under load\n\nMachine: {common.describe_machine(result['machine'])}. Measured {result['when']}.\n",
        f"{args.clients} SDK clients submitted {args.jobs} jobs ({args.steps} steps, default clip) to a queue of {args.queue}; "
        f"a loop of {args.loop} `kinema generate` processes ran half before and half after, same settings.\n",
        "| | value |", "|---|---|",
        f"| accepted / completed / failed | {served['accepted']} / {served['completed']} / {served['failed']} |",
        f"| submissions refused with 429 (then retried by the SDK) | {served['refused_429']} |",
        f"| submit errors after the SDK's retries | {len(served['submit_errors'])} |",
        f"| serve: jobs per second | {serve_rate:.3f} |",
        f"| `kinema generate` loop: videos per second | {loop_rate:.3f} |",
        f"| throughput ratio, serve / loop | {result['throughput_ratio']:.2f}x |",
        f"| server peak RSS | {served['server_peak_rss_mib']:.0f} MiB |",
        f"| one `kinema generate` peak RSS (largest of the loop) | {one_peak:.0f} MiB |",
        f"| server peak RSS / one generation's | {result['server_rss_over_one_generation']:.2f} |",
    ])
    folder = common.write_result(NAME, result, md, args.out)
    print(md)
    print(f"wrote {folder}")
    return 0 if served["completed"] == served["accepted"] == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
