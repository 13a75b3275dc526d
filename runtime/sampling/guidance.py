"""Wrappers of `model(x, sigma) -> denoised` for the samplers: known frames held at their latents."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def hold_known(model: Callable, cond_latents: np.ndarray, cond_mask: np.ndarray) -> Callable:
    """Wrap `model(x, sigma) -> denoised` so known frames (cond_mask 1) denoise to cond_latents."""
    known = np.broadcast_to(cond_mask > 0.5, cond_latents.shape)

    def held(x: np.ndarray, sigma: float) -> np.ndarray:
        return np.where(known, cond_latents, model(x, sigma)).astype(x.dtype, copy=False)

    return held
