"""Sampler defaults an export writes for a step-distilled model: a timestep list, shift and guidance.

    kinema export wan ... --distilled lightx2v-4step
    kinema export wan ... --timesteps 1000,750,500,250 --shift 5 --guidance 1

The list is the distilled model's denoising steps on the 0-1000 scale before the time
shift (lightx2v's `denoising_step_list`); the runtime samples σ_i = shift·s/(1 + (shift-1)·s)
with s = t_i/1000, then 0, which is what FlowMatchEulerDiscreteScheduler(shift).set_timesteps
(sigmas=[t_i/1000]) gives (runtime/sampling/schedules.py: flow_sigmas_listed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kinema.runtime.errors import InputError

MAX_TIMESTEP = 1000.0
MAX_LIST = 1000


@dataclass(frozen=True)
class Distilled:
    """What --distilled / --timesteps / --shift / --guidance put in the manifest's sampler section."""

    timesteps: tuple[float, ...] | None = None
    shift: float | None = None
    guidance: float | None = None

    def sampler_fields(self) -> dict:
        """The sampler section's keys this sets: with a list, Euler (the step distillation trains) and steps = its length."""
        out = {}
        if self.timesteps is not None:
            out.update(timesteps=list(self.timesteps), steps=len(self.timesteps), sampler="euler")
        if self.shift is not None:
            out["shift"] = self.shift
        if self.guidance is not None:
            out["guidance"] = self.guidance
        return out


# lightx2v's 4-step Wan distillation: denoising_step_list [1000, 750, 500, 250], shift 5, no guidance.
PRESETS = {"lightx2v-4step": Distilled(timesteps=(1000.0, 750.0, 500.0, 250.0), shift=5.0, guidance=1.0)}


def check_timesteps(values, what: str = "--timesteps") -> tuple[float, ...]:
    """A descending list of numbers in (0, 1000]; InputError naming the value and the rule."""
    rule = f"{what} must be numbers in (0, {MAX_TIMESTEP:g}], strictly descending, at most {MAX_LIST} (e.g. 1000,750,500,250)"
    ts = tuple(values)
    if not ts or len(ts) > MAX_LIST:
        raise InputError(f"{what} has {len(ts)} entries; {rule}")
    for t in ts:
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or not 0 < t <= MAX_TIMESTEP:
            raise InputError(f"{what} entry {t!r} is out of range; {rule}")
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise InputError(f"{what} {', '.join(f'{t:g}' for t in ts)} is not strictly descending; {rule}")
    return tuple(float(t) for t in ts)


def parse_timesteps(text: str) -> tuple[float, ...]:
    """`1000,750,500,250` -> (1000.0, 750.0, 500.0, 250.0)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--timesteps {text!r} is not a comma-separated list of numbers (e.g. 1000,750,500,250)") from None
    return check_timesteps(values)


def distilled_from_options(preset: str | None, timesteps: str | None, shift: float | None, guidance: float | None) -> Distilled | None:
    """The schedule the options ask for (a preset, then explicit values over it), or None."""
    if preset is None and timesteps is None and shift is None and guidance is None:
        return None
    if preset is not None and preset not in PRESETS:
        raise InputError(f"--distilled {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    base = PRESETS.get(preset, Distilled())
    if shift is not None and (not math.isfinite(shift) or not 0 < shift <= 1000):
        raise InputError(f"--shift {shift:g} must be a number in (0, 1000]")
    if guidance is not None and (not math.isfinite(guidance) or not 0 <= guidance <= 100):
        raise InputError(f"--guidance {guidance:g} must be a number from 0 to 100 (1 turns guidance off)")
    return Distilled(
        timesteps=parse_timesteps(timesteps) if timesteps is not None else base.timesteps,
        shift=shift if shift is not None else base.shift,
        guidance=guidance if guidance is not None else base.guidance,
    )


__all__ = ["PRESETS", "Distilled", "check_timesteps", "distilled_from_options", "parse_timesteps"]
