"""Cheap RGB previews of latents: a per-bundle linear map from latent channels to colour.

The exporter fits the map by least squares (latent channels + bias -> the decoded frames'
mean RGB over each latent cell, on clips encoded and decoded by the bundle's own VAE) and
stores it in the manifest as `preview = {"matrix": C x 3, "bias": 3}`. A preview then costs
one (C x 3) matrix product per latent cell: no decoder run. A bundle without the entry
has no preview (`Bundle.preview_map` is None, step callbacks get `preview=None`).

    from kinema.runtime.bundle.preview import latent_preview
    img = latent_preview(payload["denoised"], pipe.bundle.preview_map, scale=4)  # (t, 4h, 4w, 3) uint8
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Coefficients far beyond this cannot come from a fit of [0, 1] colours on unit-scale latents.
MAX_COEFFICIENT = 1e4
MAX_SCALE = 64


@dataclass(frozen=True)
class PreviewMap:
    """rgb = latent_channels @ matrix + bias, per latent cell; colours in [0, 1]."""

    matrix: np.ndarray  # (C, 3) float32
    bias: np.ndarray  # (3,) float32

    @property
    def channels(self) -> int:
        return self.matrix.shape[0]

    def to_manifest(self) -> dict:
        return {"matrix": self.matrix.astype(float).tolist(), "bias": self.bias.astype(float).tolist()}


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_COEFFICIENT


def parse_preview(entry, channels: int) -> PreviewMap:
    """A `PreviewMap` from a manifest's untrusted `preview` entry; ValueError names the broken rule."""
    if not isinstance(entry, dict):
        raise ValueError("must be an object with 'matrix' and 'bias'")
    matrix, bias = entry.get("matrix"), entry.get("bias")
    rows_ok = isinstance(matrix, list) and len(matrix) == channels and all(isinstance(r, list) and len(r) == 3 for r in matrix)
    if not rows_ok:
        raise ValueError(f"matrix must be {channels} rows (latent channels) of 3 numbers")
    if not (isinstance(bias, list) and len(bias) == 3):
        raise ValueError("bias must be a list of 3 numbers")
    if not all(_finite_number(v) for v in [*bias, *(v for r in matrix for v in r)]):
        raise ValueError(f"matrix and bias values must be finite numbers with magnitude at most {MAX_COEFFICIENT:g}")
    return PreviewMap(np.asarray(matrix, np.float32), np.asarray(bias, np.float32))


def latent_rgb(latent: np.ndarray, pmap: PreviewMap) -> np.ndarray:
    """Float colours (T, H, W, 3), unclipped, of the first item of a (B, C, T, H, W) or (C, T, H, W) latent."""
    z = np.asarray(latent)
    if z.ndim == 5:
        z = z[0]
    if z.ndim != 4 or z.shape[0] != pmap.channels:
        raise ValueError(f"latent has shape {np.shape(latent)}; expected (B, {pmap.channels}, T, H, W) or ({pmap.channels}, T, H, W)")
    return np.einsum("cthw,ck->thwk", z.astype(np.float32, copy=False), pmap.matrix) + pmap.bias  # (T, H, W, 3)


def latent_preview(latent: np.ndarray, pmap: PreviewMap | None, *, scale: int = 1) -> np.ndarray | None:
    """uint8 RGB (T, H*scale, W*scale, 3), one image per latent frame, or None when there is no map."""
    if pmap is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale={scale!r} must be a whole number from 1 to {MAX_SCALE}")
    img = np.clip(latent_rgb(latent, pmap) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if scale > 1:  # nearest neighbour: each latent cell becomes a scale x scale block
        img = img.repeat(scale, axis=1).repeat(scale, axis=2)
    return img


def cell_means(frames: np.ndarray, temporal: int, spatial: int) -> np.ndarray:
    """Decoded frames (T', H', W', 3) averaged over each latent cell -> (T, H, W, 3).

    A causal video VAE maps latent frame 0 to video frame 0 and latent frame i >= 1 to
    video frames temporal*(i-1)+1 .. temporal*i; space is cut into spatial x spatial blocks.
    """
    f = np.asarray(frames, np.float32)
    n, h, w, _ = f.shape
    if (n - 1) % temporal or h % spatial or w % spatial:
        raise ValueError(f"frames {f.shape[:3]} do not tile into {temporal}k+1 frames of {spatial}x{spatial} cells")
    blocks = f.reshape(n, h // spatial, spatial, w // spatial, spatial, 3).mean(axis=(2, 4))  # (T', H, W, 3)
    first = blocks[:1]
    rest = blocks[1:].reshape(-1, temporal, h // spatial, w // spatial, 3).mean(axis=1)
    return np.concatenate([first, rest], axis=0)


__all__ = ["PreviewMap", "parse_preview", "latent_rgb", "latent_preview", "cell_means"]
