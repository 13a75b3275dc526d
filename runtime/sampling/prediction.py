"""Prediction types: turn a denoiser network's raw output into the sampler's x0 estimate.

The samplers work on a state x at noise level σ and want `model(x, sigma) -> denoised`
(the estimate of x0). What the network is fed and what it returns depends on how it
was trained:

| kind      | training process                                   | network input        | timestep input       | raw output        | denoised                              |
|-----------|----------------------------------------------------|----------------------|----------------------|-------------------|---------------------------------------|
| "flow"    | x = (1 - σ) x0 + σ ε  (rectified flow)              | x                    | σ                    | v = ε - x0        | x - σ v                               |
| "epsilon" | x_vp = √ᾱ x0 + √(1-ᾱ) ε; sampler state x = x_vp/√ᾱ  | x / √(1 + σ²) = x_vp | training t of σ      | ε                 | x - σ ε                               |
| "v"       | same VP process, v = √ᾱ ε - √(1-ᾱ) x0               | x / √(1 + σ²) = x_vp | training t of σ      | v                 | x / (1 + σ²) - σ v / √(1 + σ²)        |

For the VP kinds σ = √((1-ᾱ)/ᾱ), so √ᾱ = 1/√(1+σ²) and the sampler's state is
x = x0 + σ ε (k-diffusion's VE coordinates); the training timestep of σ is interpolated in
log σ (schedules.sigma_to_timestep), so it is continuous between the integer timesteps.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import InputError
from .schedules import sigma_to_timestep

__all__ = ["KINDS", "network_inputs", "to_denoised", "initial_noise_scale", "make_denoiser"]

KINDS = ("flow", "epsilon", "v")

Network = Callable[[np.ndarray, float], np.ndarray]  # (scaled_x, timestep) -> raw prediction
Denoiser = Callable[[np.ndarray, float], np.ndarray]  # (x, sigma) -> denoised


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"prediction type {kind!r} is unknown: use one of {', '.join(KINDS)}")


def network_inputs(
    x: np.ndarray, sigma: float, kind: str, train_sigmas: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """(scaled_x, timestep) to feed the network at sampler state x and noise level sigma."""
    _check_kind(kind)
    if kind == "flow":
        return x, float(sigma)
    if train_sigmas is None:
        raise InputError(f"prediction type {kind!r} needs the training sigmas (schedules.vp_train_sigmas) for its timestep")
    scaled = x * (1.0 / math.sqrt(1.0 + sigma * sigma))  # x_vp, same dtype as x
    return scaled, float(sigma_to_timestep(sigma, train_sigmas))


def to_denoised(raw: np.ndarray, x: np.ndarray, sigma: float, kind: str) -> np.ndarray:
    """The x0 estimate from the network's raw output at sampler state x and noise level sigma."""
    _check_kind(kind)
    s = float(sigma)
    if kind == "flow" or kind == "epsilon":
        # flow: x - σ (ε - x0) = (1 - σ) x0 + σ ε - σ ε + σ x0 = x0; epsilon: x - σ ε = x0 (VE).
        return x - s * raw
    # v: x0 = √ᾱ x_vp - √(1-ᾱ) v with x_vp = x / √(1+σ²), √ᾱ = 1/√(1+σ²), √(1-ᾱ) = σ/√(1+σ²).
    return x * (1.0 / (1.0 + s * s)) - raw * (s / math.sqrt(1.0 + s * s))


def initial_noise_scale(sigmas: np.ndarray, kind: str) -> float:
    """Factor c such that the sampler starts from x = c · ε with ε ~ N(0, I)."""
    _check_kind(kind)
    sigma_max = float(np.asarray(sigmas)[0])
    if kind == "flow":
        # Pure noise, as diffusers' flow pipelines start, also when the grid starts just
        # below σ = 1 (flow_sigmas_multistep): the difference is below 1/1000 of a step.
        return 1.0
    # DDIM starts from x_vp = ε (init_noise_sigma = 1), i.e. x = ε √(1 + σ_max²) in VE
    # coordinates; k-diffusion's σ_max ε differs from it by O(1/σ_max).
    return math.sqrt(1.0 + sigma_max * sigma_max)


def make_denoiser(network: Network, kind: str, train_sigmas: np.ndarray | None = None) -> Denoiser:
    """Wrap `network(scaled_x, timestep) -> raw` into the samplers' `model(x, sigma) -> denoised`."""
    _check_kind(kind)
    if kind != "flow" and train_sigmas is None:
        raise InputError(f"prediction type {kind!r} needs the training sigmas (schedules.vp_train_sigmas) for its timestep")

    def model(x: np.ndarray, sigma: float) -> np.ndarray:
        scaled, timestep = network_inputs(x, sigma, kind, train_sigmas)
        return to_denoised(np.asarray(network(scaled, timestep)), x, sigma, kind)

    return model
