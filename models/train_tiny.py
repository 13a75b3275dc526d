"""Train the tiny family from scratch: the causal VAE, then the DiT on cached latents.

    python -m kinema.models.train_tiny all --out runs/tiny

Stages: the VAE; the DiT on latents of the frozen VAE encoder; then the decoder alone
(encoder still frozen) for sharper frames in the same latent space. Each stage resumes from `<out>/<stage>.pt` when it exists, so training can be spread over
several runs; `--max-minutes` stops a run cleanly (checkpoint written) before a deadline.
The final weights go to models/data/ as safetensors (EMA weights for the DiT), and the
loss curves to `<out>/loss_<stage>.png`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

# The stages live in their own modules; their names stay importable from here, where the
# CLI, the benchmarks and the tests knew them.
from kinema.models.train_data import BUCKETS, build_dataset, pick_bucket, render_batch
from kinema.models.train_dit import DiTTrainConfig, first_known_mask, inside_window, random_cond_mask, train_dit
from kinema.models.train_loop import LossLog, lr_at, plot_loss, run_loop
from kinema.models.train_vae import VAETrainConfig, fit_latent_stats, recon_loss, train_vae, tune_decoder
from kinema.models.weights import DATA_DIR, DIT_WEIGHTS, VAE_WEIGHTS, load_weights, save_weights


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m kinema.models.train_tiny", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["vae", "dit", "decoder", "all"], help="all = vae, then dit, then decoder")
    ap.add_argument("--out", type=Path, default=Path("runs/tiny"))
    ap.add_argument("--max-minutes", type=float, default=float("inf"), help="stop cleanly (checkpoint saved) after this long")
    ap.add_argument("--vae-steps", type=int, default=VAETrainConfig.steps)
    ap.add_argument("--dit-steps", type=int, default=DiTTrainConfig.steps)
    ap.add_argument("--two-object-share", type=float, default=DiTTrainConfig.two_objects, help="share of the DiT's cached clips with two objects")
    ap.add_argument("--decoder-steps", type=int, default=1000, help="decoder fine-tune steps with the encoder frozen")
    ap.add_argument("--decoder-edge-weight", type=float, default=0.0, help="weight of the spatial-gradient L1 in the decoder fine-tune")
    ap.add_argument("--decoder-temporal-weight", type=float, default=0.0, help="weight of the frame-difference L1 in the decoder fine-tune")
    ap.add_argument("--decoder-lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: a GPU when at hand, else the CPU)")
    ap.add_argument("--warm-start", action="store_true", help="with no checkpoint in --out, continue the DiT from the committed weights for --dit-steps more steps")
    args = ap.parse_args(argv)
    if not 0.0 <= args.two_object_share <= 1.0:
        ap.error(f"--two-object-share {args.two_object_share}: must be between 0 and 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.max_minutes * 60
    if args.stage in ("vae", "all"):
        if not train_vae(args.out, VAETrainConfig(steps=args.vae_steps), args.max_minutes, args.device):
            return
    if args.stage in ("dit", "all"):
        if not train_dit(args.out, DiTTrainConfig(steps=args.dit_steps, two_objects=args.two_object_share), (deadline - time.time()) / 60, args.warm_start, args.device):
            return
    if args.stage in ("decoder", "all"):
        tune_decoder(args.out, VAETrainConfig(steps=args.decoder_steps, lr=args.decoder_lr, edge_weight=args.decoder_edge_weight, temporal_weight=args.decoder_temporal_weight), (deadline - time.time()) / 60, args.device)



__all__ = [
    "BUCKETS", "DATA_DIR", "DIT_WEIGHTS", "DiTTrainConfig", "LossLog", "VAETrainConfig", "VAE_WEIGHTS", "build_dataset",
    "first_known_mask", "fit_latent_stats", "inside_window", "load_weights", "lr_at", "main", "pick_bucket", "plot_loss",
    "random_cond_mask", "recon_loss", "render_batch", "run_loop", "save_weights", "train_dit", "train_vae", "tune_decoder",
]

if __name__ == "__main__":
    main()
