"""Noise schedules: plain functions returning a descending array of sigmas that ends in 0.

Two families of sigma appear here, and the samplers treat both alike:

- rectified flow: x_t = (1 - σ) x0 + σ ε with σ in [0, 1];
- VE (k-diffusion's convention): x = x0 + σ ε with σ in [0, inf). A VP/DDPM model trained
  on x_vp = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε is sampled in VE coordinates, x = x_vp / sqrt(ᾱ),
  σ = sqrt((1 - ᾱ) / ᾱ); prediction.py converts between the two.

Schedules are float64: the σ -> timestep interpolation and the DPM-Solver's log-ratios
are taken from them, and float64 keeps those within 1e-6 of diffusers' own grids.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import InputError

__all__ = [
    "flow_sigmas",
    "flow_sigmas_multistep",
    "flow_sigmas_unipc",
    "flow_sigmas_listed",
    "karras_sigmas",
    "vp_sigmas",
    "vp_alphas_cumprod",
    "vp_train_sigmas",
    "vp_timesteps",
    "sigma_to_timestep",
    "timestep_to_sigma",
    "SCHEDULES",
]

_FLOW_TRAIN_TIMESTEPS = 1000  # diffusers' num_train_timesteps default; it sets σ_min of the flow grids


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps={steps!r} is invalid: steps must be a whole number >= 1")
    return int(steps)


def _check_positive(name: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is invalid: {name} must be a finite number > 0") from None
    if not math.isfinite(v) or v <= 0.0:
        raise InputError(f"{name}={value!r} is invalid: {name} must be a finite number > 0")
    return v


def _shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    # SD3/Wan time shift: spends more of the steps at high noise when shift > 1.
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def flow_sigmas(steps: int, shift: float = 1.0) -> np.ndarray:
    """Rectified-flow sigmas 1 -> 0 with the SD3 time shift, as FlowMatchEulerDiscreteScheduler.set_timesteps gives them."""
    n = _check_steps(steps)
    s = _check_positive("shift", shift)
    # diffusers spaces the grid linearly from 1 to its σ_min, and its σ_min is the
    # *already shifted* 1/1000, which set_timesteps then shifts again; we reproduce that.
    sigma_min = _shift(np.float64(1.0 / _FLOW_TRAIN_TIMESTEPS), s)
    grid = np.linspace(1.0, sigma_min, n, dtype=np.float64)  # (n,)
    return np.append(_shift(grid, s), 0.0)  # (n + 1,)


def flow_sigmas_multistep(steps: int, shift: float = 1.0) -> np.ndarray:
    """Rectified-flow sigmas as diffusers' multistep solvers (DPMSolverMultistep, UniPC) give them with use_flow_sigmas."""
    n = _check_steps(steps)
    s = _check_positive("shift", shift)
    # Linear in 1 - σ from 1/1000 to 1, so the grid starts just below σ = 1 (there α = 0
    # and λ = log(α/σ) = -inf); the trailing 0 is final_sigmas_type="zero". Prefer it for
    # DPM-Solver++: flow_sigmas' last interval (≈0.1 -> ≈0.003·shift) is a long jump in λ
    # that makes the 2M extrapolation inaccurate at few steps (it still converges).
    grid = np.linspace(1.0 - 1.0 / _FLOW_TRAIN_TIMESTEPS, 0.0, n + 1, dtype=np.float64)[:-1]  # (n,)
    return np.append(_shift(grid, s), 0.0)  # (n + 1,)


def flow_sigmas_unipc(steps: int, shift: float = 1.0) -> np.ndarray:
    """Rectified-flow sigmas as UniPCMultistepScheduler(use_flow_sigmas=True) gives them: Wan's default grid."""
    n = _check_steps(steps)
    s = _check_positive("shift", shift)
    grid = _shift(np.linspace(1.0, 1.0 / _FLOW_TRAIN_TIMESTEPS, n + 1, dtype=np.float64)[:-1], s)  # (n,)
    # diffusers nudges σ = 1 down by 1e-6 so that λ = log(α/σ) stays finite at the first step.
    if abs(grid[0] - 1.0) < 1e-6:
        grid[0] -= 1e-6
    return np.append(grid, 0.0)  # (n + 1,)


def flow_sigmas_listed(timesteps, shift: float = 1.0) -> np.ndarray:
    """Rectified-flow sigmas at a distilled model's own timesteps (0-1000, before the shift), then 0.

    σ_i = shift(t_i / 1000), as FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(
    sigmas=[t_i / 1000]) gives them; its model timesteps are σ_i * 1000.
    """
    ts = np.asarray(timesteps, dtype=np.float64)
    s = _check_positive("shift", shift)
    if ts.ndim != 1 or ts.size < 1 or not np.all(np.isfinite(ts)) or np.any(ts <= 0) or np.any(ts > _FLOW_TRAIN_TIMESTEPS):
        raise InputError(f"timesteps {timesteps!r} are invalid: they must be numbers in (0, {_FLOW_TRAIN_TIMESTEPS}]")
    if np.any(np.diff(ts) >= 0):
        raise InputError(f"timesteps {timesteps!r} are invalid: they must strictly descend")
    return np.append(_shift(ts / _FLOW_TRAIN_TIMESTEPS, s), 0.0)  # (n + 1,)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """VE sigmas spaced uniformly in σ^(1/ρ) from sigma_max to sigma_min, then 0 (Karras et al. 2022, eq. 5)."""
    n = _check_steps(steps)
    lo = _check_positive("sigma_min", sigma_min)
    hi = _check_positive("sigma_max", sigma_max)
    r = _check_positive("rho", rho)
    if hi <= lo:
        raise InputError(f"sigma_max={sigma_max!r} is invalid: it must be greater than sigma_min={sigma_min!r}")
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float64)  # (n,)
    sigmas = (hi ** (1.0 / r) + ramp * (lo ** (1.0 / r) - hi ** (1.0 / r))) ** r
    return np.append(sigmas, 0.0)  # (n + 1,)


def vp_alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    beta_schedule: str = "linear",
) -> np.ndarray:
    """ᾱ_t = prod(1 - β) for a DDPM beta schedule ("linear" or "scaled_linear"), as diffusers builds it."""
    t = _check_steps(num_train_timesteps)
    b0 = _check_positive("beta_start", beta_start)
    b1 = _check_positive("beta_end", beta_end)
    if beta_schedule == "linear":
        betas = np.linspace(b0, b1, t, dtype=np.float64)
    elif beta_schedule == "scaled_linear":  # the latent-diffusion (Stable Diffusion) schedule
        betas = np.linspace(b0**0.5, b1**0.5, t, dtype=np.float64) ** 2
    else:
        raise InputError(f"beta_schedule={beta_schedule!r} is invalid: use 'linear' or 'scaled_linear'")
    if betas.max() >= 1.0:
        raise InputError(f"beta_end={beta_end!r} is invalid: betas must stay below 1")
    return np.cumprod(1.0 - betas)  # (T,)


def _check_alphas_cumprod(alphas_cumprod: object) -> np.ndarray:
    a = np.asarray(alphas_cumprod, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise InputError(f"alphas_cumprod has shape {a.shape}: it must be 1-D with at least 2 training timesteps")
    if not (np.all(np.isfinite(a)) and np.all(a > 0.0) and np.all(a <= 1.0)):
        raise InputError("alphas_cumprod is invalid: every value must lie in (0, 1]")
    if np.any(np.diff(a) >= 0.0):
        raise InputError("alphas_cumprod is invalid: it must strictly decrease with the timestep")
    return a


def vp_train_sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """VE-equivalent sigma of every training timestep, σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), ascending in t."""
    a = _check_alphas_cumprod(alphas_cumprod)
    return np.sqrt((1.0 - a) / a)  # (T,)


def vp_timesteps(steps: int, num_train_timesteps: int, spacing: str = "leading", steps_offset: int = 0) -> np.ndarray:
    """The integer training timesteps DDIMScheduler visits for `steps` steps, descending."""
    n = _check_steps(steps)
    t = int(num_train_timesteps)
    if n > t:
        raise InputError(f"steps={steps!r} is invalid: at most {t} steps for a model trained on {t} timesteps")
    if spacing == "leading":
        ts = np.arange(n - 1, -1, -1, dtype=np.int64) * (t // n) + int(steps_offset)
    elif spacing == "trailing":
        ts = np.round(np.arange(t, 0, -t / n)).astype(np.int64) - 1
    else:
        raise InputError(f"spacing={spacing!r} is invalid: use 'leading' or 'trailing'")
    if ts[0] >= t or ts[-1] < 0:
        raise InputError(f"steps_offset={steps_offset!r} is invalid: timesteps must stay within 0..{t - 1}")
    return ts  # (n,)


def vp_sigmas(
    steps: int, alphas_cumprod: np.ndarray, spacing: str = "leading", steps_offset: int = 0
) -> np.ndarray:
    """VE sigmas at DDIM's timesteps, then 0 (DDIM's set_alpha_to_one=True final step), Song et al. 2021."""
    train = vp_train_sigmas(alphas_cumprod)
    ts = vp_timesteps(steps, train.size, spacing, steps_offset)
    # DDIMScheduler steps from t to t - T // steps; that is the next timestep in this list
    # whenever steps divides T (always for "leading"); otherwise DDIM's own targets differ.
    return np.append(train[ts], 0.0)  # (steps + 1,)


def sigma_to_timestep(sigma: float | np.ndarray, train_sigmas: np.ndarray) -> float | np.ndarray:
    """Continuous training timestep for σ: linear interpolation in log σ between neighbouring timesteps, clamped."""
    log_train = np.log(np.asarray(train_sigmas, dtype=np.float64))  # (T,) ascending
    log_sigma = np.log(np.maximum(np.asarray(sigma, dtype=np.float64), 1e-10))
    t = np.interp(log_sigma, log_train, np.arange(log_train.size, dtype=np.float64))
    return float(t) if t.ndim == 0 else t


def timestep_to_sigma(timestep: float | np.ndarray, train_sigmas: np.ndarray) -> float | np.ndarray:
    """σ for a continuous training timestep, interpolating log σ linearly in t (inverse of sigma_to_timestep)."""
    log_train = np.log(np.asarray(train_sigmas, dtype=np.float64))
    t = np.asarray(timestep, dtype=np.float64)
    s = np.exp(np.interp(t, np.arange(log_train.size, dtype=np.float64), log_train))
    return float(s) if s.ndim == 0 else s


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "flow": flow_sigmas,
    "flow_multistep": flow_sigmas_multistep,
    "flow_unipc": flow_sigmas_unipc,
    "karras": karras_sigmas,
    "vp": vp_sigmas,
}
