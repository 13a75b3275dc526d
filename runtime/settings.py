"""Generation settings, checked against a bundle's rules before any graph opens."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError
from .video.constants import MAX_FPS, MIN_FPS
from .media.rules import check_length
from .safety.policy import Policy, check_prompt
from .sampling import samplers

CFG_MODES = ("batched", "sequential")
MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class GenerationSettings:
    """Every value that decides a generated video, resolved against the bundle's defaults."""

    prompt: str
    negative_prompt: str
    frames: int
    height: int
    width: int
    fps: float
    steps: int
    guidance: float
    shift: float
    seed: int
    sampler: str
    cfg_mode: str = "batched"
    loop: bool = False  # close the clip into a seamless loop (runtime/media/tasks.py)

    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def check_settings(
    bundle,
    prompt: str,
    policy: Policy | None = None,
    *,
    negative_prompt: str | None = None,
    frames: int | None = None,
    seconds: float | None = None,
    height: int | None = None,
    width: int | None = None,
    fps: float | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    shift: float | None = None,
    seed: int = 0,
    sampler: str | None = None,
    cfg_mode: str = "batched",
    loop: bool = False,
) -> GenerationSettings:
    """Settings resolved against the bundle's defaults; raises InputError naming the first bad value."""
    s = bundle.sampler
    if not isinstance(prompt, str) or not visible_text(prompt).strip():
        shown = "" if not isinstance(prompt, str) or not prompt else f" ({len(prompt)} invisible or control characters)"
        raise InputError(f"prompt is empty{shown}; describe the video to generate")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    check_prompt(prompt, policy)
    negative_prompt = s.get("negative_prompt", "") if negative_prompt is None else negative_prompt
    if not isinstance(negative_prompt, str) or len(negative_prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"negative prompt must be text of at most {MAX_PROMPT_CHARS} characters")

    fps, frames, height, width = check_size(bundle, fps, frames, seconds, height, width, loop)

    steps = s["steps"] if steps is None else steps
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps={steps!r} must be a whole number from 1 to {MAX_STEPS}")
    guidance = s["guidance"] if guidance is None else guidance
    if not _is_real(guidance) or not math.isfinite(guidance) or not 0 <= guidance <= MAX_GUIDANCE:
        raise InputError(f"guidance={guidance!r} must be a finite number from 0 to {MAX_GUIDANCE:g} (1 turns guidance off)")
    shift = s["shift"] if shift is None else shift
    if not _is_real(shift) or not math.isfinite(shift) or shift <= 0:
        raise InputError(f"shift={shift!r} must be a finite number > 0")
    if not _is_int(seed) or not 0 <= seed < 2**64:
        raise InputError(f"seed={seed!r} must be a whole number from 0 to 2**64-1")
    sampler = s["sampler"] if sampler is None else sampler
    if sampler not in samplers.SAMPLERS:
        raise InputError(f"sampler {sampler!r} is unknown; choose one of {', '.join(samplers.SAMPLERS)}")
    if cfg_mode not in CFG_MODES:
        raise InputError(f"cfg mode {cfg_mode!r} is unknown; choose one of {', '.join(CFG_MODES)}")
    return GenerationSettings(
        prompt=prompt,
        negative_prompt=negative_prompt,
        frames=int(frames),
        height=int(height),
        width=int(width),
        fps=float(fps),
        steps=int(steps),
        guidance=float(guidance),
        shift=float(shift),
        seed=int(seed),
        sampler=sampler,
        cfg_mode=cfg_mode,
        loop=bool(loop),
    )

def schedule_warning(bundle, st: GenerationSettings) -> str | None:
    """One line when the settings leave a distilled bundle's schedule (its timesteps, shift or guidance), else None."""
    s = bundle.spec.sampler
    if s.timesteps is None:
        return None
    listed = ", ".join(f"{t:g}" for t in s.timesteps)
    made = f"this bundle's distilled schedule ({len(s.timesteps)} steps at timesteps {listed}, shift {s.shift:g}, guidance {s.guidance:g})"
    changed = [f"{k}={v:g}" for k, v, d in (("steps", st.steps, s.steps), ("shift", st.shift, s.shift), ("guidance", st.guidance, s.guidance)) if v != d]
    if not changed:
        return None
    then = f"sampling {st.steps} steps on the {st.sampler} flow grid instead" if st.steps != s.steps else "the distilled model may lose quality"
    return f"{' '.join(changed)} leaves {made}: {then}"


def visible_text(text: str) -> str:
    """The text as it reads: NFKC, without format characters (zero-width, bidi marks) or control characters (NUL...)."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Cc") or ch in " \t\n")


def check_size(bundle, fps, frames, seconds, height, width, loop) -> tuple[float, int, int, int]:
    """fps, frames, height and width resolved against the bundle's video rules."""
    v = bundle.video
    fps = v.fps if fps is None else fps
    if not _is_real(fps) or not math.isfinite(fps) or not MIN_FPS <= fps <= MAX_FPS:
        raise InputError(f"fps={fps!r} must be a number in [{MIN_FPS:g}, {MAX_FPS:g}]")
    rule = f"{v.frame_multiple}k+{v.frame_offset}"
    if frames is not None and seconds is not None:
        raise InputError("give --frames or --seconds, not both")
    if seconds is not None:
        if not _is_real(seconds) or not math.isfinite(seconds) or seconds <= 0:
            raise InputError(f"seconds={seconds!r} must be a number > 0")
        k = max(0, round((seconds * fps - v.frame_offset) / v.frame_multiple))
        frames = v.frame_multiple * k + v.frame_offset
    frames = v.frames if frames is None else frames
    if not _is_int(frames) or frames < 1 or (frames - v.frame_offset) % v.frame_multiple:
        ok = ", ".join(str(v.frame_multiple * k + v.frame_offset) for k in range(1, 5))
        raise InputError(f"frames={frames!r} must be {rule} (e.g. {ok}, ...) for this bundle's video decoder")
    check_length(bundle, frames, fps, seconds, bool(loop))  # past one window: window by window

    height = v.height if height is None else height
    width = v.width if width is None else width
    for name, side in (("height", height), ("width", width)):
        if not _is_int(side) or side % v.size_multiple:
            raise InputError(f"{name}={side!r} must be a multiple of {v.size_multiple} for this bundle")
        if not v.min_side <= side <= v.max_side:
            raise InputError(f"{name}={side} is outside this bundle's range [{v.min_side}, {v.max_side}]")
    return float(fps), int(frames), int(height), int(width)
