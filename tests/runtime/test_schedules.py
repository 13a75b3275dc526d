"""Schedules against diffusers' own grids (the reference), plus input validation."""

import math

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")

from kinema.runtime.sampling import schedules
from kinema.runtime.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn.t accept a copy keyword:DeprecationWarning")


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (4, 1.0), (10, 3.0), (30, 5.0), (50, 7.0), (7, 0.5)])
def test_flow_sigmas_match_flow_match_euler(steps, shift):
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(steps)
    ours = schedules.flow_sigmas(steps, shift)
    assert ours.shape == (steps + 1,)
    assert ours[0] == 1.0 and ours[-1] == 0.0
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (5, 1.0), (20, 3.0), (40, 5.0)])
def test_flow_sigmas_multistep_match_dpmsolver_flow_grid(steps, shift):
    ref = diffusers.DPMSolverMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift, final_sigmas_type="zero"
    )
    ref.set_timesteps(steps)
    ours = schedules.flow_sigmas_multistep(steps, shift)
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=0, atol=1e-6)
    assert ours[0] < 1.0  # starts below σ = 1, where α = 0


@pytest.mark.parametrize("steps", [1, 3, 25])
def test_karras_sigmas_match_edm_euler(steps):
    ref = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0, final_sigmas_type="zero")
    ref.set_timesteps(steps)
    ours = schedules.karras_sigmas(steps, 0.002, 80.0, rho=7.0)
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=1e-6, atol=0)
    if steps > 1:
        assert ours[0] == pytest.approx(80.0) and ours[-2] == pytest.approx(0.002)


def test_vp_alphas_cumprod_match_ddim():
    for kwargs in (
        dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear"),
        dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    ):
        ref = diffusers.DDIMScheduler(**kwargs).alphas_cumprod.numpy()  # float32 cumprod
        np.testing.assert_allclose(schedules.vp_alphas_cumprod(1000, **kwargs), ref, rtol=2e-5, atol=0)


@pytest.mark.parametrize(
    "steps,spacing,offset", [(10, "leading", 1), (50, "leading", 0), (7, "leading", 1), (25, "trailing", 0), (8, "trailing", 0)]
)
def test_vp_sigmas_at_ddim_timesteps(steps, spacing, offset):
    ref = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing=spacing, steps_offset=offset
    )
    ref.set_timesteps(steps)
    ac = ref.alphas_cumprod.numpy().astype(np.float64)
    t = ref.timesteps.numpy()
    np.testing.assert_array_equal(schedules.vp_timesteps(steps, 1000, spacing, offset), t)
    expected = np.append(np.sqrt((1 - ac[t]) / ac[t]), 0.0)
    np.testing.assert_allclose(schedules.vp_sigmas(steps, ac, spacing, offset), expected, rtol=1e-12, atol=0)


def test_vp_sigmas_trailing_match_dpmsolver():
    ref = diffusers.DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", final_sigmas_type="zero"
    )
    ref.set_timesteps(20)
    ours = schedules.vp_sigmas(20, ref.alphas_cumprod.numpy(), "trailing")
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=1e-6, atol=0)


def test_sigma_timestep_round_trip_and_diffusers_interpolation():
    ac = schedules.vp_alphas_cumprod(1000, 0.00085, 0.012, "scaled_linear")
    train = schedules.vp_train_sigmas(ac)
    # integer timesteps map to their own sigma and back
    for t in (0, 1, 17, 500, 998, 999):
        assert schedules.timestep_to_sigma(float(t), train) == pytest.approx(train[t], rel=1e-12)
        assert schedules.sigma_to_timestep(train[t], train) == pytest.approx(t, abs=1e-9)
    # between timesteps: log-linear interpolation, as diffusers' _sigma_to_t computes it
    ref = diffusers.DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    log_train = np.log(train)
    sig = schedules.karras_sigmas(12, float(train[0]), float(train[-1]))[:-1]
    expected = np.array([ref._sigma_to_t(np.array(s), log_train) for s in sig])
    np.testing.assert_allclose(schedules.sigma_to_timestep(sig, train), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(schedules.timestep_to_sigma(expected, train), sig, rtol=1e-9, atol=0)
    # clamped outside the table
    assert schedules.sigma_to_timestep(1e4, train) == 999.0
    assert schedules.sigma_to_timestep(1e-6, train) == 0.0


def test_registry_names_the_functions():
    assert schedules.SCHEDULES["flow"] is schedules.flow_sigmas
    assert schedules.SCHEDULES["karras"] is schedules.karras_sigmas
    assert schedules.SCHEDULES["vp"] is schedules.vp_sigmas
    for name, fn in schedules.SCHEDULES.items():
        s = fn(4, 0.5, 2.0) if name == "karras" else (
            fn(4, schedules.vp_alphas_cumprod()) if name == "vp" else fn(4)
        )
        assert s[-1] == 0.0 and np.all(np.diff(s) < 0), name


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, "10", None])
def test_bad_steps(steps):
    with pytest.raises(InputError, match=r"steps=.* must be a whole number >= 1"):
        schedules.flow_sigmas(steps)


@pytest.mark.parametrize("shift", [-1.0, 0.0, math.nan, math.inf, "big"])
def test_bad_shift(shift):
    for fn in (schedules.flow_sigmas, schedules.flow_sigmas_multistep):
        with pytest.raises(InputError, match=r"shift=.* must be a finite number > 0"):
            fn(10, shift)


def test_bad_karras_and_vp_inputs():
    with pytest.raises(InputError, match=r"sigma_max=0.5 .* greater than sigma_min=1.0"):
        schedules.karras_sigmas(10, 1.0, 0.5)
    with pytest.raises(InputError, match=r"sigma_min=nan"):
        schedules.karras_sigmas(10, math.nan, 1.0)
    ac = schedules.vp_alphas_cumprod()
    with pytest.raises(InputError, match=r"spacing='linspace' .* 'leading' or 'trailing'"):
        schedules.vp_sigmas(10, ac, spacing="linspace")
    with pytest.raises(InputError, match=r"steps=1001 .* at most 1000 steps"):
        schedules.vp_sigmas(1001, ac)
    with pytest.raises(InputError, match=r"steps_offset=105 .* within 0..999"):
        schedules.vp_sigmas(10, ac, spacing="leading", steps_offset=105)
    with pytest.raises(InputError, match=r"alphas_cumprod .* strictly decrease"):
        schedules.vp_sigmas(10, ac[::-1])
    with pytest.raises(InputError, match=r"beta_schedule='cosine'"):
        schedules.vp_alphas_cumprod(beta_schedule="cosine")
