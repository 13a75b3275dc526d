"""Peak memory of streaming decode against clip length: it should stay flat.

    python benchmarks/decoder_memory.py [--bundle DIR] [--out benchmarks/results]

Each measurement runs in a fresh subprocess (peak RSS is per process): the decoder graphs
are opened, then latents for N frames are decoded one latent frame at a time and each
chunk is dropped (as a streaming video writer would consume it). For contrast, the same
latents decoded by the PyTorch VAE in one call (whole clip), when torch is installed.
Writes benchmarks/results/decoder_memory/result.json and result.md (under --out, the
results root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import common

NAME = "decoder_memory"
FRAMES = (17, 33, 65, 129, 257)

_ONNX_CHILD = r"""
import json, resource, sys, numpy as np
from kinema.runtime import Pipeline
pipe = Pipeline.from_bundle(sys.argv[1] or None, threads=int(sys.argv[4]))
frames, h, w = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[3])
t = (frames - 1) // 4 + 1
z = np.random.default_rng(0).standard_normal((1, pipe.bundle.latent["channels"], t, h // 8, w // 8), dtype=np.float32)
pipe.decode(z[:, :, :2])  # open both graphs before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
for chunk in pipe.decode_stream(z):
    n += chunk.shape[1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": n, "peak_rss_mib": peak / 1024, "after_load_rss_mib": base / 1024}))
"""

_TORCH_CHILD = r"""
import json, resource, sys, numpy as np, torch
from kinema.models.tiny_vae import TinyVAE
torch.set_num_threads(int(sys.argv[4]))
vae = TinyVAE().eval()
frames, h, w = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[3])
t = (frames - 1) // 4 + 1
z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 8, t, h // 8, w // 8), dtype=np.float32))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    n = vae.decode(z).shape[1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": n, "peak_rss_mib": peak / 1024, "after_load_rss_mib": base / 1024}))
"""


def run_child(code: str, bundle: str, frames: int, side: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", code, bundle, str(frames), str(side), str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="", help="bundle folder (default: the built-in one)")
    ap.add_argument("--side", type=int, default=64, help="frame width and height")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args(argv)
    rows = []
    for f in FRAMES:
        row = {"frames": f, "onnx_streaming": run_child(_ONNX_CHILD, args.bundle, f, args.side, args.threads)}
        try:
            row["torch_whole_clip"] = run_child(_TORCH_CHILD, args.bundle, f, args.side, args.threads)
        except subprocess.CalledProcessError:
            row["torch_whole_clip"] = None
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"side": args.side, "threads": args.threads, "machine": common.machine(), "rows": rows}
    lines = [
        f"Decoder peak RSS (MiB) by clip length, {args.side}x{args.side}, {args.threads} threads",
        "",
        "| frames | ONNX streaming: after load | ONNX streaming: peak | PyTorch whole clip: peak |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        o, t = r["onnx_streaming"], r["torch_whole_clip"]
        lines.append(f"| {r['frames']} | {o['after_load_rss_mib']:.0f} | {o['peak_rss_mib']:.0f} | {t['peak_rss_mib']:.0f} |" if t else f"| {r['frames']} | {o['after_load_rss_mib']:.0f} | {o['peak_rss_mib']:.0f} | - |")
    lines += ["", f"Machine: {common.describe_machine(result['machine'])}."]
    common.write_result(NAME, result, "\n".join(lines) + "\n", args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
