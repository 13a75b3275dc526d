"""The one progress event every run reports, once per sampling step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class Progress:
    """Step `step` of `total` (0-based) at noise level `sigma`, in window `window` of `windows`.

    `x` and `denoised` are the sampler's state and its clean estimate before the step;
    `preview(scale=1)` renders `denoised` as uint8 RGB (t, h, w, 3) per latent frame, computed
    only when called, or is None for a bundle without a preview map. Indexing by field name
    (`event["step"]`) reads the same values, as the sampler payloads do.
    """

    step: int
    total: int
    sigma: float
    sigma_next: float
    x: np.ndarray
    denoised: np.ndarray
    preview: Callable[..., np.ndarray] | None = None
    window: int = 0
    windows: int = 1

    def __getitem__(self, key: str):
        if key not in _NAMES:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in _NAMES else default


_NAMES = frozenset(f.name for f in fields(Progress))
