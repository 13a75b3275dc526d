"""ODE samplers: stateless loops `sample_x(model, x, sigmas, *, callback=None) -> x`.

`model(x, sigma) -> denoised` returns the x0 estimate at state x and noise level sigma
(a Python float); prediction.make_denoiser builds it from a network. Euler and Heun step
the probability-flow ODE dx/dσ = (x - denoised) / σ, which is the same ODE for VE states
(x = x0 + σ ε) and for rectified flow (x = (1 - σ) x0 + σ ε, where (x - x0) / σ is the
velocity ε - x0), so they need no parametrisation switch. DPM-Solver++ and UniPC integrate
in λ = log(α/σ) and need the data coefficient α: α = 1 in VE, α = 1 - σ in flow; they take
`flow=True` for flow states (sampler_kwargs tells which samplers need it).

Every sampler calls `callback(payload)` once per step, before the state moves, with
payload {"step", "sigma", "sigma_next", "x", "denoised", "total"}; a callback may raise
errors.Cancelled, which propagates. The state is float32 (float64 if x is float64); coefficients are Python floats,
so they never change the state's dtype.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..errors import InputError

__all__ = ["sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_unipc", "SAMPLERS", "FLOW_SCHEDULE", "sampler_kwargs"]

Model = Callable[[np.ndarray, float], np.ndarray]
Callback = Callable[[dict[str, Any]], None]


def _check_sigmas(sigmas: np.ndarray, *, flow: bool = False) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or s.size < 2:
        raise InputError(f"sigmas has shape {s.shape}: it must be 1-D with at least 2 values (1 step)")
    if not np.all(np.isfinite(s)) or s.min() < 0.0:
        raise InputError("sigmas is invalid: every sigma must be finite and >= 0")
    if np.any(np.diff(s) >= 0.0):
        raise InputError("sigmas is invalid: sigmas must strictly decrease")
    if flow and s[0] > 1.0:
        raise InputError(f"sigmas[0]={float(s[0])!r} is invalid: rectified-flow sigmas must lie in [0, 1]")
    return s


def _check_x(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"x has dtype {a.dtype}: the initial latent must be a floating-point array")
    # float32 unless the caller passes float64 (used to check the algebra against references
    # at σ ~ 100, where float32 states carry ~1e-5 absolute rounding)
    return a if a.dtype == np.float64 else a.astype(np.float32)


def _denoise(model: Model, x: np.ndarray, sigma: float) -> np.ndarray:
    d = np.asarray(model(x, sigma))
    if d.shape != x.shape:
        raise ValueError(f"model returned shape {d.shape} for a state of shape {x.shape}: it must return the same shape")
    return d.astype(x.dtype, copy=False)


def _report(callback: Callback | None, i: int, s: float, s_next: float, x: np.ndarray, denoised: np.ndarray, n: int) -> None:
    if callback is not None:
        callback({"step": i, "sigma": s, "sigma_next": s_next, "x": x, "denoised": denoised, "total": n})


def sample_euler(model: Model, x: np.ndarray, sigmas: np.ndarray, *, callback: Callback | None = None) -> np.ndarray:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 with first-order steps)."""
    s = _check_sigmas(sigmas)
    x = _check_x(x)
    n = s.size - 1
    for i in range(n):
        sigma, sigma_next = float(s[i]), float(s[i + 1])
        denoised = _denoise(model, x, sigma)
        _report(callback, i, sigma, sigma_next, x, denoised, n)
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma)
    return x


def sample_heun(model: Model, x: np.ndarray, sigmas: np.ndarray, *, callback: Callback | None = None) -> np.ndarray:
    """Heun's second-order method, Euler on the step to σ = 0 (Karras et al. 2022, Algorithm 1)."""
    s = _check_sigmas(sigmas)
    x = _check_x(x)
    n = s.size - 1
    for i in range(n):
        sigma, sigma_next = float(s[i]), float(s[i + 1])
        denoised = _denoise(model, x, sigma)
        _report(callback, i, sigma, sigma_next, x, denoised, n)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        x_euler = x + d * dt
        if sigma_next == 0.0:
            x = x_euler  # the correction would divide by σ = 0
            continue
        denoised_2 = _denoise(model, x_euler, sigma_next)
        d_2 = (x_euler - denoised_2) / sigma_next
        x = x + (d + d_2) * (0.5 * dt)
    return x


def _alpha_lambda(sigma: float, flow: bool) -> tuple[float, float]:
    """(α, λ = log(α/σ)) for VE (α = 1) or rectified flow (α = 1 - σ); λ = ±inf at the ends."""
    alpha = 1.0 - sigma if flow else 1.0
    if sigma == 0.0:
        return alpha, math.inf
    if alpha == 0.0:  # flow at σ = 1: pure noise
        return alpha, -math.inf
    return alpha, math.log(alpha) - math.log(sigma)


def sample_dpmpp_2m(
    model: Model, x: np.ndarray, sigmas: np.ndarray, *, callback: Callback | None = None, flow: bool = False
) -> np.ndarray:
    """DPM-Solver++(2M), multistep second order in data prediction (Lu et al. 2022, Algorithm 2); flow=True for rectified flow."""
    s = _check_sigmas(sigmas, flow=flow)
    x = _check_x(x)
    n = s.size - 1
    old_denoised: np.ndarray | None = None
    h_last = math.inf
    for i in range(n):
        sigma, sigma_next = float(s[i]), float(s[i + 1])
        denoised = _denoise(model, x, sigma)
        _report(callback, i, sigma, sigma_next, x, denoised, n)
        _, lam = _alpha_lambda(sigma, flow)
        alpha_next, lam_next = _alpha_lambda(sigma_next, flow)
        h = lam_next - lam  # > 0; +inf from σ = 1 in flow or to σ = 0
        if sigma_next == 0.0:
            # The update's limit: σ_next/σ = 0, α_next = 1, e^-h = 0, so x = denoised exactly
            # (diffusers takes a first-order step here with final_sigmas_type="zero").
            x = denoised
            continue
        if old_denoised is None or math.isinf(h_last):
            # First step, or the previous step started at σ = 1 (λ = -inf): the 2nd-order
            # correction weight 1/(2r) with r = h_last/h is 0, i.e. a first-order step.
            d = denoised
        else:
            half_inv_r = h / (2.0 * h_last)
            d = denoised * (1.0 + half_inv_r) - old_denoised * half_inv_r
        # x_next = (σ_next/σ) x + α_next (1 - e^-h) D; at σ = 1 in flow the first term is σ_next x.
        x = x * (sigma_next / sigma) - d * (alpha_next * math.expm1(-h))
        old_denoised, h_last = denoised, h
    return x


def _unipc_update(x: np.ndarray, m0: np.ndarray, d1: np.ndarray | None, rho: float, s0: float, s1: float, flow: bool) -> np.ndarray:
    """x at σ=s1 from x at σ=s0: (σ1/σ0) x - α1 (e^-h - 1) m0 - α1 B(h) rho d1, with B(h) = e^-h - 1 (bh2)."""
    alpha_1, lam_1 = _alpha_lambda(s1, flow)
    _, lam_0 = _alpha_lambda(s0, flow)
    h_phi_1 = math.expm1(-(lam_1 - lam_0))  # = B(h) for bh2; -1 when σ1 = 0 or σ0 = 1 (flow)
    x = x * (s1 / s0) - m0 * (alpha_1 * h_phi_1)
    if d1 is not None:
        x = x - d1 * (alpha_1 * h_phi_1 * rho)
    return x


def _unic_rhos(lam_prev: float, lam_0: float, lam_1: float) -> tuple[float, float]:
    """UniC-bh2 order-2 weights (ρ for the older difference, ρ for the new one): the 2x2 system R ρ = b of Zhao et al."""
    h = lam_1 - lam_0
    hh = -h  # data prediction integrates in -λ
    rk = (lam_prev - lam_0) / h
    b_h = math.expm1(hh)
    phi_1 = math.expm1(hh) / hh - 1.0
    phi_2 = phi_1 / hh - 0.5
    b = np.array([phi_1 / b_h, 2.0 * phi_2 / b_h])
    rhos = np.linalg.solve(np.array([[1.0, 1.0], [rk, 1.0]]), b)
    return float(rhos[0]), float(rhos[1])


def sample_unipc(
    model: Model, x: np.ndarray, sigmas: np.ndarray, *, callback: Callback | None = None, flow: bool = False
) -> np.ndarray:
    """UniPC-bh2, order 2: multistep predictor with a corrector after each model call (Zhao et al. 2023); flow=True for rectified flow.

    Data prediction, first order on the first and last step (diffusers' lower_order_final),
    as Wan's UniPCMultistepScheduler(solver_order=2, solver_type="bh2") runs it. A step
    whose λ history holds an infinity (σ = 1 in flow) falls back to first order.
    """
    s = _check_sigmas(sigmas, flow=flow)
    x = _check_x(x)
    n = s.size - 1
    lam = [_alpha_lambda(float(v), flow)[1] for v in s]
    history: list[np.ndarray] = []  # denoised at the previous two steps, newest last
    last_x = x
    last_order = 1
    for i in range(n):
        sigma, sigma_next = float(s[i]), float(s[i + 1])
        denoised = _denoise(model, x, sigma)
        _report(callback, i, sigma, sigma_next, x, denoised, n)  # x: the state the model saw (diffusers' prev_sample)
        if i > 0:
            # UniC: redo the last step from last_x with this evaluation as an extra node.
            m0 = history[-1]
            d1_t = denoised - m0
            if last_order == 2 and all(math.isfinite(v) for v in lam[i - 2 : i + 1]):
                rho_old, rho_new = _unic_rhos(lam[i - 2], lam[i - 1], lam[i])
                rk = (lam[i - 2] - lam[i - 1]) / (lam[i] - lam[i - 1])
                corr = (history[-2] - m0) * (rho_old / rk) + d1_t * rho_new
                x = _unipc_update(last_x, m0, corr, 1.0, float(s[i - 1]), sigma, flow)
            else:
                x = _unipc_update(last_x, m0, d1_t, 0.5, float(s[i - 1]), sigma, flow)
        history = (history + [denoised])[-2:]
        order = min(2, i + 1, n - i)
        if order == 2 and not all(math.isfinite(v) for v in lam[i - 1 : i + 2]):
            order = 1
        last_x, last_order = x, order
        if sigma_next == 0.0 and order == 1:
            x = denoised  # the update's limit at σ = 0: (σ1/σ0) x -> 0, α1 = 1, e^-h - 1 = -1
            continue
        d1 = None
        if order == 2:
            rk = (lam[i - 1] - lam[i]) / (lam[i + 1] - lam[i])
            d1 = (history[-2] - denoised) / rk
        x = _unipc_update(x, denoised, d1, 0.5, sigma, sigma_next, flow)  # UniP-2 takes ρ = 1/2
    return x


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "unipc": sample_unipc,
}

_NEEDS_FLOW_FLAG = frozenset({"dpmpp_2m", "unipc"})
# The flow sigma grid each sampler is run on (schedules.SCHEDULES keys): the multistep
# solvers use the grids diffusers gives them with use_flow_sigmas.
FLOW_SCHEDULE = {"dpmpp_2m": "flow_multistep", "unipc": "flow_unipc"}


def sampler_kwargs(name: str, *, flow: bool) -> dict[str, bool]:
    """Keyword arguments sampler `name` needs for this parametrisation: {"flow": flow} for DPM-Solver++, else {}."""
    if name not in SAMPLERS:
        raise InputError(f"sampler {name!r} is unknown: use one of {', '.join(SAMPLERS)}")
    return {"flow": bool(flow)} if name in _NEEDS_FLOW_FLAG else {}
