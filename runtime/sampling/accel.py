"""Opt-in step-skipping accelerations of the sampler: fewer denoiser calls for nearly the same video.

Three ways to skip work, each off by default (an `Accel()` with every field at its
default gives exactly the plain sampler's output):

- `teacache`: TeaCache (Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache
  for Video Diffusion Model"). The relative L1 change of the network's input between
  model calls is accumulated; while the sum stays under the threshold the previous
  prediction is reused and the network is not called. TeaCache measures the
  timestep-modulated input of the first block; that lives inside the ONNX graph, and the
  block's input is a linear function of the latent (the patch embedding), so the latent's
  own change is the proxy. The first call and the calls at the last σ always run.
- `cfg_cache`: a guidance cache (as in FasterCache, Lv et al. 2024): after `cfg_warmup`
  full calls, both guidance branches run only every `cfg_cache`-th call; in between only
  the conditional branch runs and the last conditional-minus-unconditional difference is
  reused: out = cond + (g - 1) (cond - uncond)_cached.
- `leap`: On-device Sora's linear proportional leap (Kim et al. 2025): once at least
  `leap_after` of the steps are done and two consecutive predicted directions
  d = (x - denoised) / σ have cosine similarity >= `leap`, the trajectory is taken as
  straight and every later call reuses that direction. For Euler this lands exactly on
  x - σ d, the one-step jump to σ = 0 the paper takes.

Reusing a prediction means reusing the ODE direction d = (x - denoised) / σ (the velocity
for flow models, ε for VE-epsilon ones): `denoised = x - σ d_prev` at the new state, so
the skipping is the same for every sampler and prediction type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

__all__ = ["Accel", "GuidanceCache", "accelerate", "guidance_cache"]

Model = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class Accel:
    """Which accelerations to use; every default is off."""

    teacache: float = 0.0  # accumulated relative L1 change of the input that triggers a call; 0 = off
    cfg_cache: int = 0  # run both guidance branches every N-th call; 0 or 1 = off
    cfg_warmup: int = 3  # calls that always run both branches first
    leap: float = 0.0  # cosine similarity that counts as straight; 0 = off
    leap_after: float = 0.5  # fraction of the steps that must be done before a leap

    def __post_init__(self):
        t = self.teacache
        if not _real(t) or not 0.0 <= t <= 10.0:
            raise InputError(f"teacache={t!r} must be a number from 0 (off) to 10")
        for name in ("cfg_cache", "cfg_warmup"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v <= 1000:
                raise InputError(f"{name.replace('_', '-')}={v!r} must be a whole number from 0 to 1000")
        if not _real(self.leap) or not 0.0 <= self.leap < 1.0:
            raise InputError(f"leap={self.leap!r} must be a cosine similarity in [0, 1) (0 = off)")
        if not _real(self.leap_after) or not 0.0 < self.leap_after <= 1.0:
            raise InputError(f"leap-after={self.leap_after!r} must be a fraction of the steps in (0, 1]")

    @property
    def active(self) -> bool:
        return self.teacache > 0 or self.cfg_cache > 1 or self.leap > 0

    def metadata(self) -> str:
        on = {k: v for k, v in asdict(self).items() if v != getattr(Accel, k)}
        return ",".join(f"{k}={v}" for k, v in on.items()) if self.active else "off"


def _real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _rel_l1(prev: np.ndarray, cur: np.ndarray) -> float:
    return float(np.abs(cur - prev).mean() / max(float(np.abs(prev).mean()), 1e-12))


class _TeaCache:
    """Online TeaCache decision per model call; the first call and every call at the last σ run."""

    def __init__(self, threshold: float, last_sigma: float):
        self.threshold, self.last_sigma = threshold, last_sigma
        self.prev_x: np.ndarray | None = None
        self.acc = 0.0

    def compute(self, x: np.ndarray, sigma: float) -> bool:
        if self.prev_x is None or sigma <= self.last_sigma:
            run = True
        else:
            self.acc += _rel_l1(self.prev_x, x)
            run = self.acc >= self.threshold
        if run:
            self.acc = 0.0
        self.prev_x = x
        return run


class GuidanceCache:
    """Decides per denoiser call whether both guidance branches run, and keeps the last difference."""

    def __init__(self, interval: int, warmup: int):
        self.interval, self.warmup = interval, warmup
        self.calls = 0
        self.diff: np.ndarray | None = None

    def full(self) -> bool:
        """True when this call must run both branches (then `store`); False: run cond only and `apply`."""
        i = self.calls
        self.calls += 1
        return self.diff is None or i < self.warmup or (i - self.warmup) % self.interval == 0

    def store(self, cond: np.ndarray, uncond: np.ndarray) -> None:
        self.diff = cond - uncond

    def apply(self, cond: np.ndarray, guidance: float) -> np.ndarray:
        return cond + (guidance - 1.0) * self.diff


def guidance_cache(accel: Accel | None) -> GuidanceCache | None:
    """A fresh guidance cache for one generation, or None when it is off."""
    if accel is None or accel.cfg_cache <= 1:
        return None
    return GuidanceCache(accel.cfg_cache, accel.cfg_warmup)


def accelerate(model: Model, sigmas: np.ndarray, accel: Accel | None, stats: dict | None = None) -> Model:
    """`model` wrapped with TeaCache and the proportional leap; the same `model` when both are off.

    `stats`, when given, counts {"calls", "skipped"} (calls of the wrapped model and how
    many reused a direction instead).
    """
    if accel is None or (accel.teacache <= 0 and accel.leap <= 0):
        return model
    s = np.asarray(sigmas, dtype=np.float64)
    nonzero = s[s > 0]
    tea = _TeaCache(accel.teacache, float(nonzero[-1])) if accel.teacache > 0 else None
    n_steps = s.size - 1
    leap_from = math.ceil(accel.leap_after * n_steps)
    st = {"d": None, "leapt": False, "seen": []}
    if stats is not None:
        stats.update(calls=0, skipped=0)

    def wrapped(x: np.ndarray, sigma: float) -> np.ndarray:
        sigma = float(sigma)
        if sigma not in st["seen"]:
            st["seen"].append(sigma)
        step = len(st["seen"]) - 1  # index of the step this σ starts (Heun's second call repeats one)
        if st["d"] is None:  # nothing to reuse yet
            run = True
            if tea is not None:
                tea.compute(x, sigma)
        elif st["leapt"]:
            run = False
        else:
            run = tea.compute(x, sigma) if tea is not None else True
        if stats is not None:
            stats["calls"] += 1
            stats["skipped"] += not run
        if not run:
            return x - sigma * st["d"]
        denoised = np.asarray(model(x, sigma))
        d = (x - denoised) / sigma
        if accel.leap > 0 and st["d"] is not None and step >= leap_from and _cosine(st["d"], d) >= accel.leap:
            st["leapt"] = True
        st["d"] = d
        return denoised

    return wrapped


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a64 @ b64 / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-30))
