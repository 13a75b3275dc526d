"""Samplers and prediction conversion: step for step against diffusers' schedulers, a
closed-form Gaussian check of the sampled distribution, the callback contract, bad input."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from kinema.runtime.sampling import prediction, samplers, schedules
from kinema.runtime.errors import Cancelled, InputError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

# ---------------------------------------------------------------------------------------
# A fixed nonlinear "network" over (B, C, T, H, W) latents: mixes channels, depends on the
# timestep input. The same function drives diffusers and kinema, so any difference is the
# sampler's.

_rng = np.random.default_rng(1234)
_C = 4
_W1 = _rng.standard_normal((_C, _C)) / 2
_W2 = _rng.standard_normal((_C, _C)) / 2
_B1 = _rng.standard_normal(_C)
_SHAPE = (2, _C, 3, 4, 4)  # (B, C, T, H, W)


def network(x, t, dtype=np.float32, t_scale=1.0):
    """raw = W2 tanh((1 + τ) W1 x + τ b) + 0.3 x with τ = t / t_scale, channel-wise; float64 inside."""
    x = np.asarray(x, dtype=np.float64)
    tau = float(t) / t_scale
    h = np.tanh(np.einsum("oc,bcthw->bothw", _W1, x) * (1.0 + tau) + _B1[None, :, None, None, None] * tau)
    return (np.einsum("oc,bcthw->bothw", _W2, h) + 0.3 * x).astype(dtype)


def initial_noise(dtype=np.float32):
    return np.random.default_rng(7).standard_normal(_SHAPE).astype(dtype)


def run_kinema(sampler, model, x, sigmas, **kwargs):
    """States after every step (the callback sees the state before each step)."""
    states = []
    out = sampler(model, x, sigmas, callback=lambda p: states.append(p["x"]), **kwargs)
    return states[1:] + [out]


def max_diff(ours, ref):
    assert len(ours) == len(ref)
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) for a, b in zip(ours, ref))


# ---------------------------------------------------------------------------------------
# Rectified flow, step for step against diffusers


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (10, 3.0), (30, 5.0)])
def test_euler_flow_matches_flow_match_euler(steps, shift):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    x = torch.from_numpy(initial_noise())
    ref = []
    for i, t in enumerate(sched.timesteps):
        raw = network(x.numpy(), sched.sigmas[i].item())  # velocity, timestep input σ
        x = sched.step(torch.from_numpy(raw), t, x).prev_sample
        ref.append(x.numpy())
    model = prediction.make_denoiser(network, "flow")
    ours = run_kinema(samplers.sample_euler, model, initial_noise(), schedules.flow_sigmas(steps, shift))
    assert max_diff(ours, ref) < 1e-5  # measured 2.4e-7 .. 4.8e-7


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (10, 3.0), (30, 5.0)])
def test_heun_flow_matches_flow_match_heun(steps, shift):
    sched = diffusers.FlowMatchHeunDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    # diffusers interleaves the two evaluations: sigmas [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0],
    # 2n - 1 model calls, the last step (to 0) first order only, as in Karras' Algorithm 1.
    assert len(sched.timesteps) == 2 * steps - 1
    x = torch.from_numpy(initial_noise())
    ref = []
    for k, t in enumerate(sched.timesteps):
        raw = network(x.numpy(), sched.sigmas[k].item())
        x = sched.step(torch.from_numpy(raw), t, x).prev_sample
        if k % 2 == 1 or k == len(sched.timesteps) - 1:  # a full step is done
            ref.append(x.numpy())
    calls = []
    model = prediction.make_denoiser(lambda a, t: calls.append(t) or network(a, t), "flow")
    ours = run_kinema(samplers.sample_heun, model, initial_noise(), schedules.flow_sigmas(steps, shift))
    assert len(calls) == 2 * steps - 1
    assert max_diff(ours, ref) < 1e-5  # measured 1.2e-7 .. 8.3e-7


def _dpm_flow_reference(steps, shift, sigmas=None):
    # Settings needed to be DPM-Solver++(2M) on flow: use_flow_sigmas + flow_prediction,
    # solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="zero" (the last step
    # is then first order, which to σ = 0 is exactly x = denoised). lower_order_final (True
    # by default) only changes 3rd-order solvers and that final step, so it does not matter.
    sched = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        flow_shift=shift,
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    if sigmas is not None:  # diffusers' own flow grid never reaches σ = 1; patch it in
        sched.sigmas = torch.from_numpy(sigmas.astype(np.float32))
    return _run_flow_scheduler(sched)


def _run_flow_scheduler(sched):
    """States after every step of a diffusers flow scheduler driven by `network` (velocity, timestep input σ)."""
    x = torch.from_numpy(initial_noise())
    ref = []
    for i, t in enumerate(sched.timesteps):
        raw = network(x.numpy(), sched.sigmas[i].item())
        x = sched.step(torch.from_numpy(raw), t, x).prev_sample
        ref.append(x.numpy())
    return ref


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (10, 3.0), (30, 5.0)])
def test_dpmpp_2m_flow_matches_dpmsolver_multistep(steps, shift):
    ref = _dpm_flow_reference(steps, shift)
    model = prediction.make_denoiser(network, "flow")
    sigmas = schedules.flow_sigmas_multistep(steps, shift)
    ours = run_kinema(samplers.sample_dpmpp_2m, model, initial_noise(), sigmas, flow=True)
    assert max_diff(ours, ref) < 1e-5  # measured 3.6e-7 .. 1.7e-6
    # the flow flag matters: the VE form (α = 1) is a different solver on the same states
    ve = run_kinema(samplers.sample_dpmpp_2m, model, initial_noise(), sigmas, flow=False)
    assert max_diff(ve, ref) > 1e-2


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (10, 3.0)])
def test_dpmpp_2m_flow_from_sigma_one_matches_diffusers_arithmetic(steps, shift):
    # At σ = 1, α = 0 and λ = -inf: diffusers' torch arithmetic gives h = inf, e^-h = 0 (so
    # x_1 = σ_1 x + α_1 x0) and on the next step r = inf, a zero 2nd-order correction.
    sigmas = schedules.flow_sigmas(steps, shift)
    assert sigmas[0] == 1.0
    ref = _dpm_flow_reference(steps, shift, sigmas=sigmas)
    assert all(np.isfinite(r).all() for r in ref)
    model = prediction.make_denoiser(network, "flow")
    with np.errstate(all="raise"):  # no log(0) or inf - inf inside the sampler
        ours = run_kinema(samplers.sample_dpmpp_2m, model, initial_noise(), sigmas, flow=True)
    assert max_diff(ours, ref) < 1e-5  # measured 1.4e-6 .. 1.9e-6


def _unipc_flow_reference(steps, shift, solver_order=2):
    """diffusers' UniPC as Wan's checkpoints configure it: bh2, order 2, flow prediction on the flow grid."""
    sched = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, solver_order=solver_order, solver_type="bh2"
    )
    sched.set_timesteps(steps)
    return _run_flow_scheduler(sched), sched.sigmas.numpy()


@pytest.mark.parametrize("steps,shift", [(2, 1.0), (5, 3.0), (12, 5.0), (30, 3.0)])
def test_unipc_flow_matches_unipc_multistep(steps, shift):
    ref, ref_sigmas = _unipc_flow_reference(steps, shift)
    sigmas = schedules.flow_sigmas_unipc(steps, shift)
    np.testing.assert_allclose(sigmas, ref_sigmas, rtol=1e-6, atol=1e-7)  # diffusers keeps float32
    model = prediction.make_denoiser(network, "flow")
    ours = run_kinema(samplers.sample_unipc, model, initial_noise(), sigmas, flow=True)
    assert max_diff(ours, ref) < 1e-5  # measured 2.4e-7 .. 2.1e-6 (first order instead: 0.035 .. 0.10)
    # the corrector and the second order both matter: first-order UniPC is another solver
    first, _ = _unipc_flow_reference(steps, shift, solver_order=1)
    if steps > 2:
        assert max_diff(first, ref) > 1e-3


# ---------------------------------------------------------------------------------------
# DDIM(eta=0) is Euler on VE sigmas with the epsilon / v conversion


def _ddim_reference(pred, steps, spacing, offset, betas, dtype):
    sched = diffusers.DDIMScheduler(
        **betas,
        clip_sample=False,  # default True clamps x0 to [-1, 1]
        set_alpha_to_one=True,  # the last step lands on ᾱ = 1, i.e. σ = 0
        steps_offset=offset,
        timestep_spacing=spacing,
        prediction_type=pred,
    )
    sched.set_timesteps(steps)
    alphas_cumprod = sched.alphas_cumprod.numpy().astype(np.float64)
    if dtype == np.float64:  # let diffusers do its coefficient arithmetic in float64 too
        sched.alphas_cumprod = sched.alphas_cumprod.double()
        sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    x = torch.from_numpy(initial_noise(dtype))  # DDIM starts from x_vp = ε
    ref = []
    for t in sched.timesteps:
        raw = network(x.numpy(), float(t), dtype, t_scale=1000.0)
        x = sched.step(torch.from_numpy(raw), t, x, eta=0.0).prev_sample
        ref.append(x.numpy())
    return ref, alphas_cumprod, sched.timesteps.numpy()


def _ddim_kinema(kind, steps, spacing, offset, alphas_cumprod, dtype):
    train = schedules.vp_train_sigmas(alphas_cumprod)
    sigmas = schedules.vp_sigmas(steps, alphas_cumprod, spacing, offset)
    timesteps = []

    def net(x_vp, t):
        timesteps.append(t)
        return network(x_vp, t, dtype, t_scale=1000.0)

    model = prediction.make_denoiser(net, kind, train)
    x = initial_noise(dtype) * prediction.initial_noise_scale(sigmas, kind)
    states = []
    out = samplers.sample_euler(
        model, x, sigmas, callback=lambda p: states.append(p["x"] / math.sqrt(1.0 + p["sigma"] ** 2))
    )
    return states[1:] + [out], np.array(timesteps)  # in VP coordinates, x_vp = x / √(1 + σ²)


_SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")  # σ_max 14.6
_DDPM_BETAS = dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear")  # σ_max 157
_DDIM_CASES = [(10, "leading", 1, _SD_BETAS), (25, "trailing", 0, _SD_BETAS), (50, "leading", 0, _DDPM_BETAS), (20, "trailing", 0, _DDPM_BETAS)]


@pytest.mark.parametrize("pred,kind", [("epsilon", "epsilon"), ("v_prediction", "v")])
@pytest.mark.parametrize("steps,spacing,offset,betas", _DDIM_CASES)
def test_euler_ve_equals_ddim_eta0(pred, kind, steps, spacing, offset, betas):
    # float64 on both sides isolates the algebra from rounding
    ref64, alphas_cumprod, ddim_t = _ddim_reference(pred, steps, spacing, offset, betas, np.float64)
    ours64, our_t = _ddim_kinema(kind, steps, spacing, offset, alphas_cumprod, np.float64)
    assert max_diff(ours64, ref64) < 1e-10  # measured 2e-15 .. 1.5e-13
    # the network saw DDIM's integer timesteps, recovered from σ by log-σ interpolation
    np.testing.assert_allclose(our_t, ddim_t, rtol=0, atol=1e-6)

    # float32: both sides round; VE states are √(1 + σ²) times larger than VP states, so
    # compare each against the float64 truth: kinema's float32 error is at most diffusers' own
    # (x 1.25), and below 1e-5 (SD betas) / 1e-4 (DDPM betas, σ_max 157).
    ref32, _, _ = _ddim_reference(pred, steps, spacing, offset, betas, np.float32)
    ours32, _ = _ddim_kinema(kind, steps, spacing, offset, alphas_cumprod, np.float32)
    err_ours, err_diffusers = max_diff(ours32, ref64), max_diff(ref32, ref64)
    assert err_ours <= 1.25 * err_diffusers + 1e-7
    assert err_ours < (1e-5 if betas is _SD_BETAS else 1e-4)  # measured 7e-7 .. 4.1e-5
    assert ours32[-1].dtype == np.float32


# ---------------------------------------------------------------------------------------
# Closed form: Gaussian data, whose exact denoiser is affine, so the probability-flow ODE's
# exact solution is x0 = μ + s · z for the standardised noise z it started from.

_MU = np.array([0.5, -1.0, 2.0, 0.0])
_SD = np.array([0.5, 1.5, 0.7, 1.0])
_AC = schedules.vp_alphas_cumprod(1000, **_SD_BETAS)
_TRAIN = schedules.vp_train_sigmas(_AC)


def _gaussian_noise(n=20000):
    z = np.random.default_rng(0).standard_normal((n, _MU.size))  # (N, 4)
    return (z - z.mean(0)) / z.std(0)  # standardised, so sampling noise does not blur the check


def flow_denoiser(x, sigma):
    """E[x0 | x] for x = (1 - σ) x0 + σ ε, x0 ~ N(μ, s²)."""
    a = 1.0 - sigma
    return _MU + a * _SD**2 / (a * a * _SD**2 + sigma * sigma) * (x - a * _MU)


def exact_flow_velocity(x, t):
    """A perfect flow network: v = ε - x0 = (x - denoised) / σ, timestep input t = σ."""
    return (x - flow_denoiser(x, t)) / t


def exact_epsilon_network(x_vp, t):
    """A perfect VP epsilon network for x0 ~ N(μ, s²), taking the training timestep t."""
    sigma = schedules.timestep_to_sigma(t, _TRAIN)
    x = x_vp * math.sqrt(1.0 + sigma * sigma)  # VE coordinates
    return (x - (_MU + _SD**2 / (_SD**2 + sigma * sigma) * (x - _MU))) / sigma


def _sample_gaussian(name, family, steps, z):
    """Run sampler `name` on Gaussian data; return (samples, exact ODE solution) for noise z."""
    if family == "flow":
        model = prediction.make_denoiser(exact_flow_velocity, "flow")
        # DPM-Solver++ on the multistep grid: the Euler grid's last interval (σ ≈ 0.1 -> 0.003)
        # is a long jump in λ that makes the 2M extrapolation inaccurate.
        grid = schedules.SCHEDULES[samplers.FLOW_SCHEDULE.get(name, "flow")]
        sigmas = grid(steps, shift=3.0)
        s0 = float(sigmas[0])
        x = (1.0 - s0) * _MU + np.sqrt((1.0 - s0) ** 2 * _SD**2 + s0**2) * z  # exact marginal (= z at σ = 1)
    else:
        model = prediction.make_denoiser(exact_epsilon_network, "epsilon", _TRAIN)
        sigmas = schedules.karras_sigmas(steps, float(_TRAIN[0]), float(_TRAIN[-1]))
        x = _MU + np.sqrt(_SD**2 + float(sigmas[0]) ** 2) * z  # exact VE marginal at σ_max
    kwargs = samplers.sampler_kwargs(name, flow=family == "flow")
    out = samplers.SAMPLERS[name](model, x.astype(np.float32), sigmas, **kwargs)
    return out, _MU + _SD * z


@pytest.mark.parametrize("family", ["flow", "epsilon"])
@pytest.mark.parametrize("name,steps", [("euler", 200), ("heun", 30), ("dpmpp_2m", 30), ("unipc", 30)])
def test_gaussian_data_recovers_mean_and_std(name, steps, family):
    out, _ = _sample_gaussian(name, family, steps, _gaussian_noise())
    assert out.shape == (20000, 4) and out.dtype == np.float32
    # The mean path of an affine ODE is integrated exactly by all three (a wrong α in
    # DPM-Solver++ or a wrong conversion breaks it); the std carries the truncation error.
    np.testing.assert_allclose(out.mean(0), _MU, rtol=0, atol=1e-3)  # measured < 4e-6
    np.testing.assert_allclose(out.std(0) / _SD, 1.0, rtol=0, atol=0.02)  # measured 0.19% .. 1.44%


@pytest.mark.parametrize("family", ["flow", "epsilon"])
def test_second_order_beats_euler_at_few_steps(family):
    z = _gaussian_noise(4000)
    steps = 12
    rms = {}
    for name in ("euler", "heun", "dpmpp_2m", "unipc"):
        out, exact = _sample_gaussian(name, family, steps, z)
        rms[name] = float(np.sqrt(np.mean((out - exact) ** 2)))
    # Euler on DPM-Solver++'s grid, for a like-for-like comparison in flow
    if family == "flow":
        model = prediction.make_denoiser(exact_flow_velocity, "flow")
        sigmas = schedules.flow_sigmas_multistep(steps, shift=3.0)
        s0 = float(sigmas[0])
        x = (1.0 - s0) * _MU + np.sqrt((1.0 - s0) ** 2 * _SD**2 + s0**2) * z
        euler_ms = float(np.sqrt(np.mean((samplers.sample_euler(model, x, sigmas) - (_MU + _SD * z)) ** 2)))
    else:
        euler_ms = rms["euler"]
    # measured rms, flow: euler 0.149 (0.139 on the multistep grid), heun 0.013, dpmpp_2m 0.041;
    # epsilon: euler 0.127, heun 0.035, dpmpp_2m 0.036
    assert rms["heun"] < 0.5 * rms["euler"], rms
    assert rms["dpmpp_2m"] < 0.5 * euler_ms, (rms, euler_ms)
    assert rms["unipc"] < 0.5 * rms["euler"], rms


# ---------------------------------------------------------------------------------------
# Prediction conversion, in closed form


def test_prediction_conversions_are_exact():
    rng = np.random.default_rng(3)
    x0, eps = rng.standard_normal((2, 5, 6))
    train = _TRAIN
    for sigma in (0.05, 1.3, 14.0):
        alpha = 1.0 / math.sqrt(1.0 + sigma**2)  # √ᾱ
        beta = sigma * alpha  # √(1 - ᾱ)
        x_vp = alpha * x0 + beta * eps
        x = x0 + sigma * eps  # sampler state, VE
        scaled, t = prediction.network_inputs(x, sigma, "epsilon", train)
        np.testing.assert_allclose(scaled, x_vp, rtol=0, atol=1e-12)
        assert schedules.timestep_to_sigma(t, train) == pytest.approx(sigma, rel=1e-9)
        np.testing.assert_allclose(prediction.to_denoised(eps, x, sigma, "epsilon"), x0, rtol=0, atol=1e-12)
        v = alpha * eps - beta * x0
        np.testing.assert_allclose(prediction.to_denoised(v, x, sigma, "v"), x0, rtol=0, atol=1e-12)
    for sigma in (0.01, 0.5, 1.0):
        x = (1.0 - sigma) * x0 + sigma * eps
        scaled, t = prediction.network_inputs(x, sigma, "flow")
        assert scaled is x and t == sigma
        np.testing.assert_allclose(prediction.to_denoised(eps - x0, x, sigma, "flow"), x0, rtol=0, atol=1e-12)
    assert prediction.initial_noise_scale(schedules.flow_sigmas(10, 3.0), "flow") == 1.0
    sig = schedules.vp_sigmas(10, _AC, "trailing")
    assert prediction.initial_noise_scale(sig, "epsilon") == pytest.approx(math.sqrt(1.0 + sig[0] ** 2), rel=1e-15)


def test_prediction_bad_inputs():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(InputError, match=r"prediction type 'sample' is unknown: use one of flow, epsilon, v"):
        prediction.to_denoised(x, x, 1.0, "sample")
    with pytest.raises(InputError, match=r"'epsilon' needs the training sigmas"):
        prediction.network_inputs(x, 1.0, "epsilon")
    with pytest.raises(InputError, match=r"'v' needs the training sigmas"):
        prediction.make_denoiser(lambda a, t: a, "v")


# ---------------------------------------------------------------------------------------
# Callback contract, cancellation, registry, bad input


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "unipc"])
def test_callback_payload_once_per_step(name):
    sigmas = schedules.flow_sigmas(5, 2.0)
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return 0.5 * x

    payloads = []
    x_init = initial_noise()
    samplers.SAMPLERS[name](model, x_init, sigmas, callback=payloads.append, **samplers.sampler_kwargs(name, flow=True))
    assert [p["step"] for p in payloads] == [0, 1, 2, 3, 4]
    for i, p in enumerate(payloads):
        assert set(p) == {"step", "sigma", "sigma_next", "x", "denoised", "total"}
        assert type(p["sigma"]) is float and type(p["sigma_next"]) is float
        assert p["sigma"] == sigmas[i] and p["sigma_next"] == sigmas[i + 1]
        assert p["total"] == 5
        assert p["x"].shape == _SHAPE and p["x"].dtype == np.float32
        np.testing.assert_array_equal(p["denoised"], (0.5 * p["x"]).astype(np.float32))
    np.testing.assert_array_equal(payloads[0]["x"], x_init)
    assert len(calls) == (9 if name == "heun" else 5)  # Heun: 2 per step, 1 on the last


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "unipc"])
def test_cancelled_from_callback_stops_sampling(name):
    calls = []

    def model(x, sigma):
        calls.append(sigma)
        return 0.5 * x

    def callback(payload):
        if payload["step"] == 2:
            raise Cancelled("stopped by the user")

    with pytest.raises(Cancelled, match="stopped by the user"):
        samplers.SAMPLERS[name](model, initial_noise(), schedules.flow_sigmas(8), callback=callback)
    assert len(calls) == (5 if name == "heun" else 3)  # nothing after step 2's first evaluation


def test_registry_and_flow_keywords():
    assert samplers.SAMPLERS == {
        "euler": samplers.sample_euler,
        "heun": samplers.sample_heun,
        "dpmpp_2m": samplers.sample_dpmpp_2m,
        "unipc": samplers.sample_unipc,
    }
    assert samplers.sampler_kwargs("dpmpp_2m", flow=True) == {"flow": True}
    assert samplers.sampler_kwargs("unipc", flow=True) == {"flow": True}
    assert samplers.sampler_kwargs("dpmpp_2m", flow=False) == {"flow": False}
    assert samplers.sampler_kwargs("euler", flow=True) == {}
    assert samplers.sampler_kwargs("heun", flow=True) == {}
    with pytest.raises(InputError, match=r"sampler 'ddim' is unknown: use one of euler, heun, dpmpp_2m, unipc"):
        samplers.sampler_kwargs("ddim", flow=False)


@pytest.mark.parametrize(
    "sigmas,match",
    [
        ([1.0], r"at least 2 values"),
        ([[1.0, 0.0]], r"1-D"),
        ([1.0, math.nan, 0.0], r"finite and >= 0"),
        ([1.0, -0.5], r"finite and >= 0"),
        ([0.5, 0.5, 0.0], r"strictly decrease"),
        ([0.0, 1.0], r"strictly decrease"),
    ],
)
def test_bad_sigmas(sigmas, match):
    for sampler in samplers.SAMPLERS.values():
        with pytest.raises(InputError, match=match):
            sampler(lambda x, s: x, np.zeros(3, np.float32), np.array(sigmas, dtype=np.float64))


def test_bad_state_and_flow_range():
    with pytest.raises(InputError, match=r"sigmas\[0\]=2.0 is invalid: rectified-flow sigmas must lie in \[0, 1\]"):
        samplers.sample_dpmpp_2m(lambda x, s: x, np.zeros(3, np.float32), np.array([2.0, 0.0]), flow=True)
    with pytest.raises(InputError, match=r"x has dtype int64"):
        samplers.sample_euler(lambda x, s: x, np.zeros(3, np.int64), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"model returned shape \(2,\) for a state of shape \(3,\)"):
        samplers.sample_euler(lambda x, s: np.zeros(2, np.float32), np.zeros(3, np.float32), np.array([1.0, 0.0]))
