"""The request fields the server accepts, and how each becomes a `Request` field.

A field arrives as a string (multipart form, what the OpenAI SDK always sends) or as a
JSON value. The OpenAI names come first (`prompt`, `model`, `seconds`, `size`), then the
names other OpenAI-style video servers use for the usual settings, then kinema's own
settings under the names the `kinema` commands give them (with `_` for `-`). Anything
else is refused with a message naming the field, as is a value of the wrong kind: the
server never guesses. File paths (a policy, a signing key, an output) are the server's
to choose and are not accepted from a client.
"""

from __future__ import annotations

import math
import re

from ..errors import InputError

# client name -> (Request field, kind)
SETTINGS = {
    "negative_prompt": ("negative_prompt", str),
    "width": ("width", int),
    "height": ("height", int),
    "num_frames": ("frames", int),
    "fps": ("fps", float),
    "num_inference_steps": ("steps", int),
    "guidance_scale": ("guidance", float),
    "flow_shift": ("shift", float),
    "seed": ("seed", int),
    # kinema's own, as its commands name them
    "sampler": ("sampler", str),
    "cfg_mode": ("cfg_mode", str),
    "loop": ("loop", bool),
    "fit": ("fit", str),
    "strength": ("strength", float),
    "backward": ("backward", bool),
    "native_size": ("native_size", bool),
    "teacache": ("teacache", float),
    "cfg_cache": ("cfg_cache", int),
    "leap": ("leap", float),
    "visible_watermark": ("visible", bool),
    "c2pa_include_prompt": ("include_prompt", bool),
}
MARKS = ("visible", "include_prompt")
OPENAI = ("prompt", "model", "seconds", "size", "input_reference", "video")
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")


def _value(name: str, raw, kind):
    """`raw` (a form string or a JSON value) as `kind`; InputError naming the field otherwise."""
    if kind is str:
        if not isinstance(raw, str):
            raise InputError(f"{name} must be a string, got {raw!r}")
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            value = kind(text)
        except ValueError:
            raise InputError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a boolean' if kind is bool else 'a number'}") from None
    else:
        if kind is bool:
            if not isinstance(raw, bool):
                raise InputError(f"{name}={raw!r} is not a boolean")
            return raw
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (kind is int and not float(raw).is_integer()):
            raise InputError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}")
        value = kind(raw)
    if kind is float and not math.isfinite(value):
        raise InputError(f"{name}={raw!r} is not a finite number")
    return value


def parse_size(raw) -> tuple[int, int]:
    """(width, height) from "WxH"."""
    m = _SIZE.match(raw) if isinstance(raw, str) else None
    if not m:
        raise InputError(f"size={raw!r} must be WIDTHxHEIGHT, e.g. 64x64")
    return int(m.group(1)), int(m.group(2))


def round_side(name: str, side: int, video) -> int:
    """A requested side rounded to the bundle's multiple, as kinema rounds seconds to its frame rule; outside the range is an error."""
    if not video.min_side <= side <= video.max_side:
        raise InputError(f"size: {name} {side} is outside this model's range [{video.min_side}, {video.max_side}]")
    m = video.size_multiple
    return int(min(video.max_side, max(video.min_side, m * round(side / m))))


def parse_fields(form: dict, *, allowed: tuple[str, ...] = OPENAI) -> tuple[dict, dict, dict]:
    """(openai, settings, marks): the client's fields sorted; unknown or doubled names are errors."""
    openai, settings, marks = {}, {}, {}
    for name, raw in form.items():
        if name in allowed:
            openai[name] = raw
        elif name in SETTINGS:
            field, kind = SETTINGS[name]
            (marks if field in MARKS else settings)[field] = _value(name, raw, kind)
        else:
            known = ", ".join((*allowed, *SETTINGS))
            raise InputError(f"{name} is not a field this server accepts; known: {known}")
    if "seconds" in openai and "frames" in settings:
        raise InputError("give seconds or num_frames, not both")
    if "size" in openai and ("width" in settings or "height" in settings):
        raise InputError("give size or width/height, not both")
    return openai, settings, marks


def parse_seconds(raw) -> float:
    value = _value("seconds", raw, float)
    if value <= 0:
        raise InputError(f"seconds={raw!r} must be a number > 0")
    return value
