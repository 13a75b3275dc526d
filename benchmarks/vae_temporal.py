"""Motion through the tiny VAE: frame-to-frame difference by position in the 4-frame latent group.

    python benchmarks/vae_temporal.py [--weights A.safetensors B.safetensors ...] [--clips 32] [--out benchmarks/results]

ShapesWorld ground-truth clips of 33 frames are encoded and decoded by the PyTorch tiny VAE
(the committed weights unless --weights names others, e.g. an earlier version saved from
git). Frame pair i is frames (i, i+1); with 4x causal time compression, pairs with
i % 4 == 0 cross a latent boundary (frame 4j -> 4j+1), which is also where a long video's
window seams fall. Reports the mean absolute difference (0-255) of each pair position for
the clips and for their round trip, and the round trip's mean absolute error.
Writes benchmarks/results/vae_temporal/result.json and result.md (under --out, the results
root), with the machine it ran on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import common
from kinema.models import train_tiny as tt
from kinema.models.tiny_vae import TinyVAE, VAEConfig

NAME = "vae_temporal"


def to_uint8(v: torch.Tensor) -> torch.Tensor:  # (n, 3, T, H, W) in [-1, 1]
    return ((v.clamp(-1, 1) + 1) * 127.5).round()


def by_position(video: torch.Tensor) -> list[float]:
    u = to_uint8(video)
    d = (u[:, :, 1:] - u[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4)).numpy()  # per pair index
    return [float(d[k::4].mean()) for k in range(4)]


@torch.no_grad()
def measure(weights: Path, clips: int, seed: int) -> dict:
    vae = tt.load_weights(TinyVAE(VAEConfig()), weights).eval()
    video, _ = tt.render_batch(np.random.default_rng(seed), clips, 33, 64, 64)
    z, _ = vae.encode_moments(video)
    recon, _ = vae.decoder(z)
    err = (to_uint8(recon) - to_uint8(video)).abs().mean().item()
    return {"weights": str(weights), "clips": by_position(video), "round_trip": by_position(recon), "round_trip_abs_error": err}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, nargs="+", default=[tt.VAE_WEIGHTS])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help=f"results root: writes OUT/{NAME}/result.{{json,md}} (default: benchmarks/results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    rows = [measure(w, args.clips, args.seed) for w in args.weights]
    lines = [
        f"Frame-to-frame difference (mean |Δ|, 0-255) by pair position, {args.clips} ShapesWorld clips of 33 frames, seed {args.seed}",
        "",
        "| weights | frames | pair 4j->4j+1 (latent boundary) | 4j+1->4j+2 | 4j+2->4j+3 | 4j+3->4j+4 | mean | round-trip error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for kind in ("clips", "round_trip"):
            d = r[kind]
            err = f"{r['round_trip_abs_error']:.2f}" if kind == "round_trip" else ""
            lines.append(f"| {Path(r['weights']).name} | {kind.replace('_', ' ')} | " + " | ".join(f"{x:.3f}" for x in d) + f" | {np.mean(d):.3f} | {err} |")
    machine = common.machine(torch=torch.__version__, threads=torch.get_num_threads())
    result = {"clips": args.clips, "seed": args.seed, "machine": machine, "rows": rows}
    md = "\n".join(lines) + f"\n\nCommand: `python benchmarks/vae_temporal.py`. Machine: {common.describe_machine(machine)}.\n"
    common.write_result(NAME, result, md, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
