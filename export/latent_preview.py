"""Fit a bundle's latent->RGB preview map with its own VAE on ShapesWorld clips.

The VAE is anything with `encode(frames)` (B, T', H', W', 3) in [0, 1] -> the normalised
latent the sampler sees (B, C, T, H, W), and `decode(latent)` back to frames in [0, 1]:
the tiny family's TinyVAE, or models/wan.py's WanVAECodec around a diffusers Wan VAE.
"""

from __future__ import annotations

import numpy as np
import torch

from kinema.models.shapes_world import render, sample_spec
from kinema.runtime.bundle.preview import PreviewMap, cell_means, latent_rgb

FIT_CLIPS = 16
FIT_FRAMES = 9  # three latent frames: the first (1 video frame) and two of 4 frames
FIT_SIDE = 64
BATCH = 8


@torch.no_grad()
def preview_fit_data(
    vae, *, clips: int = FIT_CLIPS, frames: int = FIT_FRAMES, side: int = FIT_SIDE, seed: int = 0, temporal: int = 4, spatial: int = 8,
):
    """(latent cells (N, C), decoded mean RGB per cell (N, 3)) from ShapesWorld clips through `vae`.

    temporal, spatial: the VAE's compression (a latent cell covers `temporal` frames of
    `spatial` x `spatial` pixels; latent frame 0 covers frame 0 alone).
    """
    rng = np.random.default_rng(seed)
    videos = np.stack([render(sample_spec(rng, allow_heldout=True), frames, side, side, rng) for _ in range(clips)])  # (N, T', H', W', 3)
    zs, rgbs = [], []
    for i in range(0, clips, BATCH):
        x = torch.from_numpy(videos[i : i + BATCH].astype(np.float32) / 255.0)
        z = vae.encode(x)  # (b, C, T, H, W) normalised, as the sampler sees it
        decoded = vae.decode(z).numpy()  # (b, T', H', W', 3) in [0, 1]
        for zi, di in zip(z.numpy(), decoded):
            zs.append(zi.transpose(1, 2, 3, 0).reshape(-1, zi.shape[0]))
            rgbs.append(cell_means(di, temporal, spatial).reshape(-1, 3))  # (T*H*W, 3)
    return np.concatenate(zs).astype(np.float64), np.concatenate(rgbs).astype(np.float64)


def fit_preview_map(vae, *, clips: int = FIT_CLIPS, seed: int = 0, temporal: int = 4, spatial: int = 8, side: int = FIT_SIDE) -> dict:
    """Manifest entry: least-squares matrix (C, 3) and bias (3,), with the fit's RMSE and the constant-colour baseline."""
    z, rgb = preview_fit_data(vae, clips=clips, seed=seed, temporal=temporal, spatial=spatial, side=side)
    design = np.concatenate([z, np.ones((len(z), 1))], axis=1)  # (N, C + 1)
    coef, *_ = np.linalg.lstsq(design, rgb, rcond=None)  # (C + 1, 3)
    pmap = PreviewMap(coef[:-1].astype(np.float32), coef[-1].astype(np.float32))
    c = z.shape[1]
    pred = latent_rgb(z.T.reshape(c, 1, 1, -1), pmap).reshape(-1, 3)
    return {
        **pmap.to_manifest(),
        "method": "least squares: latent channels + bias -> decoded mean RGB per latent cell",
        "fit_clips": clips,
        "fit_cells": int(len(z)),
        "rmse": round(float(np.sqrt(np.mean((pred - rgb) ** 2))), 5),
        "baseline_rmse": round(float(np.sqrt(np.mean((rgb - rgb.mean(axis=0)) ** 2))), 5),  # constant mean colour
    }
