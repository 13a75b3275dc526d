"""What a bundle's denoiser can condition on, and the length rules of long and conditioned clips."""

from __future__ import annotations

import math

import numpy as np

from ..errors import BundleError, InputError

MAX_SECONDS = 300.0  # longest video (generated or extended) kinema makes window by window
OVERLAP = 2  # latent frames a window takes from the one before it ("first k frames known")
END_KNOWN = 1  # latent frames known at a window's end ("last frame known", as trained)
LOOP_REDECODE = 2  # a loop's first latents decoded again after its closing window (see long_stream)
SEAMS = ("latents", "reencode")
POSITIONS = ("first", "leading", "last")  # manifest conditioning.known_frames vocabulary


def can_condition(bundle, position: str) -> str | None:
    """None when the bundle's denoiser can take known latent frames at `position`, else why not."""
    cond = bundle.spec.conditioning
    if cond is None or not cond.cond_latents:
        return "its denoiser takes no known latent frames (manifest conditioning.cond_latents is not true)"
    known = cond.known_frames  # None: any position
    if known is not None and position not in known:
        return f"its manifest says the denoiser cannot condition on the {position} latent frames (conditioning.known_frames = {list(known)!r})"
    if position == "leading" and (n := window_latents(bundle)) <= OVERLAP + END_KNOWN:
        # each window would add no new frames: a long clip could never be finished
        return (f"its window of {n} latent frames (video.max_frames = {bundle.video.max_frames}) is not longer than "
                f"the {OVERLAP + END_KNOWN} latent frames consecutive windows share")
    return None


def window_latents(bundle) -> int:
    """Latent frames in one window of the bundle's longest clip."""
    v = bundle.video
    return (v.max_frames - v.frame_offset) // bundle.latent["temporal_compression"] + 1


def require(bundle, what: str, positions: tuple[str, ...], encoder: bool) -> None:
    """Raise BundleError in one line when the bundle cannot do `what`."""
    for pos in positions:
        why = can_condition(bundle, pos)
        if why:
            raise BundleError(f"bundle {bundle.name} cannot {what}: {why}")
    if encoder and not bundle.has("encoder"):
        raise BundleError(f"bundle {bundle.name} cannot {what}: it has no encoder graph (image and video prompts need one; export without --no-encoder)")


def frame_limit(bundle, fps: float) -> int:
    """Most frames one generate call makes: one window, or MAX_SECONDS window by window if the bundle can."""
    v = bundle.video
    if can_condition(bundle, "leading"):
        return v.max_frames
    return v.frame_multiple * max(0, math.floor((MAX_SECONDS * fps - v.frame_offset) / v.frame_multiple)) + v.frame_offset


def check_seconds(seconds, fps: float, what: str = "seconds") -> int:
    """New frames for `seconds` at `fps` (at least one latent frame's worth); InputError for <= 0 or over MAX_SECONDS."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) or not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{what}={seconds!r} must be a number > 0")
    if seconds > MAX_SECONDS:
        raise InputError(f"{what}={seconds:g} is over the limit of {MAX_SECONDS:g} s for window-by-window generation")
    return max(1, round(seconds * fps))


def check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)) or not math.isfinite(strength) or not 0 < strength <= 1:
        raise InputError(f"strength={strength!r} must be in (0, 1]: the share of the noise schedule to redo (1 = ignore the video)")
    return float(strength)


def loop_min_frames(bundle) -> int:
    """Fewest frames a --loop clip can have: LOOP_REDECODE + 1 latent frames before the closing window."""
    v = bundle.video
    bridge = (v.frames - v.frame_offset) // v.frame_multiple + 1 - OVERLAP - END_KNOWN
    return v.frame_multiple * (bridge + LOOP_REDECODE) + v.frame_offset


def edit_length(bundle, n: int, name: str) -> int:
    """Frames of a clip an edit uses: the most of the form 4k+1 it has; past one window only window by window."""
    v = bundle.video
    if n > v.max_frames and (why := can_condition(bundle, "leading")) is not None:
        raise InputError(f"{name} has {n} frames after fitting; this bundle edits at most {v.max_frames} frames ({v.max_frames / v.fps:g} s at {v.fps:g} fps) and cannot go on window by window ({why}): trim it first")
    return v.frame_multiple * ((n - v.frame_offset) // v.frame_multiple) + v.frame_offset


def check_length(bundle, frames: int, fps: float, seconds: float | None, loop: bool) -> None:
    """InputError when a text-to-video clip of `frames` is over the limit, or too short to loop."""
    v = bundle.video
    limit = frame_limit(bundle, fps)
    asked = f"seconds={seconds:g} needs {frames} frames at {fps:g} fps" if seconds is not None else f"frames={frames} is over the limit"
    if frames > limit:
        if limit == v.max_frames:
            why = can_condition(bundle, "leading")
            raise InputError(f"{asked}; this bundle makes at most {v.max_frames} frames ({v.max_frames / fps:.2f} s) and cannot go on window by window: {why}")
        raise InputError(f"{asked}; the limit is {MAX_SECONDS:g} s ({limit} frames at {fps:g} fps)")
    if loop:
        require(bundle, "make loops", ("leading", "last"), encoder=False)
        if frames < loop_min_frames(bundle):
            raise InputError(f"frames={frames} is too short to loop: a loop needs at least {loop_min_frames(bundle)} frames with this bundle")


def windowed(bundle, st) -> bool:
    """Whether the settings need more than one window (a long clip or a loop)."""
    return st.frames > bundle.video.max_frames or st.loop
