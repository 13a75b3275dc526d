"""Image and video prompts: read with Pillow and PyAV, fitted to a bundle's size and frame rate.

Fit policies (`--fit`), applied to every image and video frame:

| policy | what happens                                                                          |
|--------|---------------------------------------------------------------------------------------|
| crop   | scale (bicubic) until the frame covers the target, then cut the centre (the default)  |
| pad    | scale until the frame fits inside the target, then pad the sides with black           |

A video whose frame rate differs from the target's by more than 1% is resampled in time:
each output frame is the input frame on screen at its time (as a player shows it). `Fitted.note` says in
one line what was done, or is None when the input already had the target size and rate.

Image modes: 1, L, P, RGB, RGBX, YCbCr are converted to 8-bit RGB; images with alpha (LA,
La, PA, RGBA, RGBa, P with transparency) are composited over black. Refused, with the reason:
16- and 32-bit integer and float images (I;16, I, F: their mapping to 8 bits is a choice this
tool should not make silently) and CMYK, LAB and HSV (a faithful RGB conversion needs the
file's colour profile, which Pillow does not apply); convert those to 8-bit RGB first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from .codecs import check_stream
from .constants import MAX_INPUT_PIXELS

FIT_POLICIES = ("crop", "pad")
FPS_TOLERANCE = 0.01
_CONVERTED = {"1", "L", "P", "RGB", "RGBX", "YCbCr"}
_WITH_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}
_REFUSED = {
    "I": "32-bit integer",
    "F": "32-bit float",
    "CMYK": "CMYK",
    "LAB": "LAB",
    "HSV": "HSV",
}


@dataclass(frozen=True)
class Fitted:
    """Frames (T, H, W, 3) uint8 at the target size and rate, and the one-line note of what was done."""

    frames: np.ndarray
    note: str | None


def check_fit(fit: str) -> str:
    if fit not in FIT_POLICIES:
        raise InputError(f"fit {fit!r} is unknown; choose one of {', '.join(FIT_POLICIES)}")
    return fit


def _file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such {what} file: {os.fspath(path)!r}")
    if not p.is_file():
        raise InputError(f"{what} {os.fspath(path)!r} is not a file")
    return p


def _mode_refused(mode: str) -> str | None:
    if mode.startswith("I;16"):
        return "16-bit"
    return _REFUSED.get(mode)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image as uint8 (H, W, 3) RGB (the first frame of an animated image), EXIF rotation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _file(path, "image")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_INPUT_PIXELS:
                raise InputError(f"image {p} is {w}x{h}: more than {MAX_INPUT_PIXELS // 1_000_000} megapixels; scale it down first")
            refused = _mode_refused(im.mode)
            if refused is not None:
                raise InputError(f"image {p} is {refused} (Pillow mode {im.mode}); kinema reads 8-bit images (grey, palette, RGB, with or without alpha): convert it to 8-bit RGB first")
            if im.mode not in _CONVERTED | _WITH_ALPHA:
                raise InputError(f"image {p} has Pillow mode {im.mode}, which kinema does not convert; save it as 8-bit RGB")
            im = ImageOps.exif_transpose(im)
            if im.mode in _WITH_ALPHA or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                im = Image.alpha_composite(black, rgba)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(f"cannot read {p}: not an image Pillow decodes (PNG, JPEG, WebP, GIF, BMP, TIFF, ...)") from None
    except Image.DecompressionBombError:
        raise InputError(f"image {p} is larger than {MAX_INPUT_PIXELS // 1_000_000} megapixels; scale it down first") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data (Pillow raises all three)
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _policy_note(src_w: int, src_h: int, width: int, height: int, fit: str) -> str | None:
    if (src_w, src_h) == (width, height):
        return None
    s = max(width / src_w, height / src_h) if fit == "crop" else min(width / src_w, height / src_h)
    scaled = (max(1, round(src_w * s)), max(1, round(src_h * s)))
    if scaled == (width, height):
        return f"--fit {fit}: scaled to {width}x{height}"
    if fit == "crop":
        return f"--fit crop: scaled to {scaled[0]}x{scaled[1]}, centre cut to {width}x{height}"
    return f"--fit pad: scaled to {scaled[0]}x{scaled[1]}, padded with black to {width}x{height}"


def fit_frame(frame: np.ndarray, width: int, height: int, fit: str = "crop") -> np.ndarray:
    """One uint8 (h, w, 3) frame at (height, width, 3) by the fit policy (bicubic, antialiased when shrinking)."""
    from PIL import Image

    src_h, src_w = frame.shape[:2]
    if (src_w, src_h) == (width, height):
        return frame
    im = Image.fromarray(np.ascontiguousarray(frame))
    if fit == "crop":
        s = max(width / src_w, height / src_h)
        cw, ch = width / s, height / s  # the part of the source that stays, in source pixels
        box = ((src_w - cw) / 2, (src_h - ch) / 2, (src_w + cw) / 2, (src_h + ch) / 2)
        return np.asarray(im.resize((width, height), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)
    s = min(width / src_w, height / src_h)
    nw, nh = max(1, round(src_w * s)), max(1, round(src_h * s))
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(im.resize((nw, nh), Image.Resampling.BICUBIC), ((width - nw) // 2, (height - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def fit_image(image: np.ndarray, width: int, height: int, fit: str = "crop", name: str = "image") -> Fitted:
    """An (H, W, 3) uint8 image fitted to (1, height, width, 3)."""
    check_fit(fit)
    _check_array(image[None] if isinstance(image, np.ndarray) and image.ndim == 3 else image, name)
    note = _policy_note(image.shape[1], image.shape[0], width, height, fit)
    line = None if note is None else f"{name} {image.shape[1]}x{image.shape[0]} -> {width}x{height} ({note})"
    return Fitted(fit_frame(image, width, height, fit)[None], line)


def _check_array(frames, name: str) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise InputError(f"{name} must be uint8 RGB frames (T, H, W, 3) or an image (H, W, 3), got {got}")


def fit_clip(frames: np.ndarray, src_fps: float, width: int, height: int, fps: float, fit: str = "crop",
             name: str = "video", max_frames: int | None = None) -> Fitted:
    """uint8 frames (T, h, w, 3) at `src_fps` fitted to (T', height, width, 3) at `fps`; 0 fps = keep every frame."""
    check_fit(fit)
    _check_array(frames, name)
    timed = ((f, k / src_fps if src_fps > 0 else 0.0) for k, f in enumerate(frames))
    return _fit_stream(timed, src_fps, width, height, fps, fit, name, max_frames)


def _fit_stream(timed, src_fps, width, height, fps, fit, name, max_frames) -> Fitted:
    """Fit (frame, seconds) pairs one at a time: flat memory for big inputs. src_fps 0 = one input frame per output frame."""
    out: list[np.ndarray] = []
    src_size = None
    resample = src_fps > 0 and abs(src_fps - fps) > FPS_TOLERANCE * fps
    prev = prev_t = t0 = None
    n_in = 0

    def emit(frame):
        if max_frames is not None and len(out) >= max_frames:
            raise InputError(f"{name} is longer than {max_frames} frames at {fps:g} fps ({max_frames / fps:.0f} s), the limit; trim it first")
        out.append(fit_frame(frame, width, height, fit))

    for frame, t in timed:
        n_in += 1
        if src_size is None:
            src_size = (frame.shape[1], frame.shape[0])
            if frame.shape[0] * frame.shape[1] > MAX_INPUT_PIXELS:
                raise InputError(f"{name} frames are {src_size[0]}x{src_size[1]}: more than {MAX_INPUT_PIXELS // 1_000_000} megapixels")
        if not resample:
            emit(frame)
            continue
        t0 = t if t0 is None else t0
        # the previous frame is on screen until this one's time: every output time before it shows it
        while prev is not None and t0 + len(out) / fps < t - 1e-6:
            emit(prev)
        prev, prev_t = frame, t
    if n_in == 0:
        raise InputError(f"{name} holds no frames")
    if resample:  # the last input frame stays on screen for one input interval
        while t0 + len(out) / fps < prev_t + 1.0 / src_fps - 1e-6:
            emit(prev)
    parts = []
    policy = _policy_note(src_size[0], src_size[1], width, height, fit)
    if policy:
        parts.append(policy)
    if resample:
        parts.append(f"{src_fps:g} -> {fps:g} fps, the frame on screen at each output time")
    note = None
    if parts:
        rate = f" @ {src_fps:g} fps" if src_fps > 0 else ""
        note = f"{name} {src_size[0]}x{src_size[1]}{rate}, {n_in} frames -> {width}x{height} @ {fps:g} fps, {len(out)} frames ({'; '.join(parts)})"
    return Fitted(np.stack(out), note)


def read_clip(path: str | os.PathLike, width: int, height: int, fps: float, fit: str = "crop",
              max_frames: int | None = None) -> Fitted:
    """A video file (anything FFmpeg decodes, or kinema's PNG frames) fitted to the target, frame by frame."""
    check_fit(fit)
    p = Path(path)
    name = os.fspath(path)
    if p.is_dir() or p.suffix.lower() == ".png":  # kinema's PNG frames: small, read whole
        from .core import read_video

        frames, src_fps = read_video(p)
        return fit_clip(frames, src_fps, width, height, fps, fit, name, max_frames)
    p = _file(path, "video")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise InputError(f"{p} holds no video stream")
            stream = container.streams.video[0]
            check_stream(stream, p)
            rate = stream.guessed_rate or stream.average_rate
            src_fps = float(rate) if rate else 0.0
            timed = (
                (f.to_ndarray(format="rgb24"), float(f.time) if f.time is not None else i / (src_fps or 1.0))
                for i, f in enumerate(container.decode(stream))
            )
            return _fit_stream(timed, src_fps, width, height, fps, fit, name, max_frames)
    except av.FFmpegError as e:
        raise InputError(f"cannot read {p}: {str(e).splitlines()[0]}") from None
