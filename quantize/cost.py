"""What a bundle costs to run: load time, peak RSS, time per denoiser step, end-to-end time, file size.

Each bundle is measured in a fresh interpreter (`measure_cost` runs this module), so its
peak RSS is its own and not what an earlier bundle left in the parent process:

    python -m kinema.quantize.cost BUNDLE --prompt "a red ball" [--threads N] [--repeats 2]

prints one JSON line. Runtime only: no torch, no onnx.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def bundle_bytes(path: str | Path) -> int:
    """Bytes of every graph (and its external data), the tokenizer and listed files of a bundle."""
    from kinema.runtime.bundle.load import load_bundle

    b = load_bundle(path, verify_hashes=False)
    m = b.manifest
    graphs = sum(c["bytes"] + sum(e["bytes"] for e in c.get("external_data", [])) for c in b.components.values())
    return graphs + m["tokenizer"]["bytes"] + sum(f["bytes"] for f in m.get("files", []))


def _peak_rss_mib() -> float:
    """This process's peak resident memory, MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory
    map (a new one at exec). ru_maxrss is not used there: it survives fork + exec, so a
    child of a large parent (a test run with torch loaded) reports the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
    return kib / (2**20 if sys.platform == "darwin" else 2**10)


def _measure(bundle: str, prompt: str, seed: int, threads: int | None, repeats: int, settings: dict) -> dict:
    """In this process: open the bundle, warm up once, then time `repeats` generations step by step."""
    import numpy as np

    rss_start = _peak_rss_mib()
    from kinema.runtime.pipeline import Pipeline

    rss_imported = _peak_rss_mib()
    t0 = time.perf_counter()
    pipe = Pipeline.from_bundle(bundle, threads=threads)  # hashes checked, as a user's run checks them
    for name in pipe.bundle.components:
        if name != "encoder":  # text-to-video never opens the video encoder
            pipe.session(name)
    pipe.tokenizer()
    load_s = time.perf_counter() - t0
    st = pipe.check_inputs(prompt, seed=seed, **settings)
    pipe.run(st)  # warm-up: first-run allocations and kernel choices
    e2e, steps, cpu = [], [], []
    for _ in range(repeats):
        marks, cpu_marks = [], []

        def mark(_payload):
            marks.append(time.perf_counter())
            cpu_marks.append(time.process_time())

        t = time.perf_counter()
        pipe.run(st, callback=mark)
        e2e.append(time.perf_counter() - t)
        steps += list(np.diff(marks))  # one denoiser call (both guidance branches) + the sampler update each
        cpu += list(np.diff(cpu_marks))
    return {
        "load_s": load_s,
        "step_s": float(np.median(steps)) if steps else None,
        # CPU seconds of this process per step (all its threads): steadier than wall time on a shared machine
        "step_cpu_s": float(np.median(cpu)) if cpu else None,
        "e2e_s": float(np.median(e2e)),
        "peak_rss_mib": _peak_rss_mib(),
        "rss_after_imports_mib": rss_imported,
        "rss_at_start_mib": rss_start,
        "steps_timed": len(steps),
        "threads": threads,
    }


def measure_cost(bundle: str | Path, prompt: str, *, seed: int = 0, threads: int | None = None, repeats: int = 2, timeout: float = 1800, **settings) -> dict:
    """Cost of generating `prompt` with the bundle, measured in a fresh interpreter; adds the bundle's bytes."""
    cmd = [sys.executable, "-m", "kinema.quantize.cost", str(bundle), "--prompt", prompt, "--seed", str(seed), "--repeats", str(repeats)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    cmd += ["--settings", json.dumps(settings)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"cost measurement of {bundle} failed (exit {r.returncode}): {tail}")
    return {"bytes": bundle_bytes(bundle), **json.loads(lines[-1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kinema.quantize.cost", description="Measure one bundle's load time, peak RSS and speed; one JSON line.")
    p.add_argument("bundle")
    p.add_argument("--prompt", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--settings", default="{}", help="JSON object of generate settings (steps, frames, ...)")
    a = p.parse_args(argv)
    print(json.dumps(_measure(a.bundle, a.prompt, a.seed, a.threads, max(1, a.repeats), json.loads(a.settings))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
