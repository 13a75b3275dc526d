"""Video results and video files: `Video`, the streaming `VideoWriter`, `read_video`, `read_metadata`.

Formats, chosen by the output path (all encoded through PyAV, no Pillow):

| path             | writes                                                                      |
|------------------|-----------------------------------------------------------------------------|
| `clip.mp4`       | H.264 (libx264), yuv420p, BT.709 tags, +faststart, CRF 18 by default        |
| `clip.webm`      | VP9 (libvpx-vp9), yuv420p, BT.709 tags, constant quality CRF 24 by default  |
| `clip.gif`       | 8-bit palette per frame (ffmpeg palettegen + paletteuse), loops forever     |
| `clip.png`       | PNG frames `clip_00000.png, clip_00001.png, ...` next to it (lossless)      |
| `frames/` or an  | PNG frames `frames/frame_00000.png, ...` (a path ending in "/" or an        |
| existing folder  | existing directory; a missing folder named with a trailing "/" is created)  |

Every write is atomic: frames go to a hidden temporary file (or folder, for PNG frames)
in the target folder and are renamed into place only when the last frame is written;
on any error the temporary output is deleted and an existing file at the target is left
untouched. A PNG frame set replaces the previous set of the same name as a whole: stale
`<name>_NNNNN.png` frames numbered past the new last frame are deleted.

The generation settings (`Video.metadata`, str -> str) are stored as one JSON object in
the container's "comment" tag (mp4, webm), a GIF comment extension, or a PNG tEXt
"Comment" chunk; webm also keeps each setting as its own tag. `read_metadata` gives the
JSON back.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from .codecs import _AvSink, _PngSink, read_metadata, read_video  # noqa: F401  (the readers, re-exported)

from .constants import (  # noqa: F401
    _CRF_RANGE,
    _DEFAULT_CRF,
    _INTERPOLATION,
    _PNG_DIGITS,
    GIF_MAX_FPS,
    MAX_FPS,
    MIN_FPS,
    MAX_SIDE,
    SUPPORTED_EXTENSIONS,
    VIEW_MIN_SIDE,
)


@dataclass(frozen=True)
class FrameMarks:
    """What a writer applies: a function on each frame at output size, metadata to add, and the .mp4 signer."""

    frame: Callable[[np.ndarray], np.ndarray] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    sign: Callable[[Path, Path, dict], None] | None = None


# Marks given to a writer: the marks themselves, or a rule called with the file's final
# metadata and extension as writing starts (kinema's rule: runtime/safety/marks.py).
Marks = FrameMarks | Callable[[dict, str], FrameMarks]


@dataclass(eq=False)
class Video:
    """A generated clip: `frames` uint8 (T, H, W, 3) RGB, `fps`, and the generation settings."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    metadata: dict[str, str] = field(default_factory=dict)
    marks: Marks | None = field(default=None, repr=False)  # what `save` applies; a clip kinema made carries kinema's rule

    def __post_init__(self) -> None:
        _check_frames(self.frames, "Video frames")
        _check_fps(self.fps)
        _check_metadata(self.metadata)

    @classmethod
    def from_float(cls, frames: np.ndarray, fps: float, metadata: dict[str, str] | None = None) -> Video:
        """A Video from float frames in [0, 1] (a decoder's output): clipped, rounded to uint8."""
        frames = np.asarray(frames)
        if frames.dtype.kind != "f":
            raise InputError(f"from_float needs float frames in [0, 1], got dtype {frames.dtype}")
        if not np.isfinite(frames).all():
            raise InputError("frames contain NaN or infinity; a decoder output must be finite")
        frames = np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
        return cls(frames, fps, dict(metadata or {}))

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Seconds of playback: num_frames / fps."""
        return self.num_frames / float(self.fps)

    def save(self, path: str | os.PathLike, *, scale: str | int | None = "auto", crf: int | None = None,
             sign: Callable[[Path, Path, dict], None] | bool | None = None, marks: Marks | None = None) -> Path:
        """Write the clip to `path` (format from its extension, see the module doc); returns the
        written file, or the first frame for PNG frames (`out.png` -> `out_00000.png, ...`;
        `folder/` -> `folder/frame_00000.png, ...`).

        scale: "auto" upscales by the smallest whole factor that makes the short side at least
        256 pixels (64 -> x4), with libswscale's bicubic scaler; 1 or None keeps the native size.
        crf: quality for .mp4 (0-51, default 18) and .webm (0-63, default 24); lower is better.
        marks: what to apply (default: the clip's own `marks`; a clip kinema generated gets its
        watermark and, as .mp4, a C2PA manifest). sign: the signer for those marks (False: none).
        """
        marks = self.marks if marks is None else marks
        if sign is not None and hasattr(marks, "with_sign"):
            marks = marks.with_sign(sign)
        with VideoWriter(path, self.fps, self.width, self.height, metadata=self.metadata, scale=scale, crf=crf,
                         marks=marks) as w:
            w.write(self.frames)
        return w.path


class VideoWriter:
    """Streams frame chunks into a video file with flat memory; the file appears only on clean exit.

        with VideoWriter("clip.mp4", fps=8, width=64, height=64, metadata=settings) as w:
            for chunk in decoded_chunks:  # each (t, 64, 64, 3) uint8
                w.write(chunk)

    `width`/`height` are the size of the frames you write; the file is `scale` times larger
    (see `Video.save`). mp4 and webm store 4:2:0 chroma, which needs even sides: an odd
    output side gets one copied edge row/column. Leaving the block by an exception, or
    writing no frames, deletes the temporary output and leaves any existing target as it was.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        metadata: dict[str, str] | None = None,
        scale: str | int | None = "auto",
        crf: int | None = None,
        marks: Marks | None = None,
    ) -> None:
        metadata = {} if metadata is None else metadata
        _check_fps(fps)
        _check_metadata(metadata)
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
        self._target = _resolve_target(path)
        ext = self._target.ext
        if ext == ".gif" and fps > GIF_MAX_FPS:
            raise InputError(
                f"fps {fps} is too high for .gif: GIF frame delays are 1/100 s and browsers slow "
                f"delays under 0.02 s down; use fps <= {GIF_MAX_FPS:g} or write .mp4/.webm"
            )
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.factor = _resolve_scale(scale, self.width, self.height)
        self.out_width, self.out_height = self.width * self.factor, self.height * self.factor
        if max(self.out_width, self.out_height) > MAX_SIDE:
            raise InputError(
                f"output size {self.out_width}x{self.out_height} (scale {self.factor}) exceeds "
                f"{MAX_SIDE} pixels per side; pass a smaller scale"
            )
        if ext in (".mp4", ".webm"):  # 4:2:0 chroma: even sides
            self.out_width += self.out_width % 2
            self.out_height += self.out_height % 2
        self.crf = _resolve_crf(crf, ext)
        if hasattr(marks, "check"):
            marks.check(ext)  # a rule refuses what this file cannot hold now, before any work
        self.marks = marks
        self._mark_frame = None
        self.metadata = dict(metadata)
        self.frames_written = 0
        self.paths: tuple[Path, ...] = ()  # every file written, set on clean exit
        self._sink: _AvSink | _PngSink | None = None

    @property
    def path(self) -> Path:
        """The output file; for PNG frames, the first frame's file."""
        return self._target.first_path

    def __enter__(self) -> VideoWriter:
        t = self._target
        sign = self._marks()
        if t.ext == ".png":
            self._sink = _PngSink(t.folder, t.png_prefix, self.fps, self.metadata, new_folder=t.create_folder and not t.folder.exists())
        else:
            self._sink = _AvSink(t.file, t.ext, self.fps, self.out_width, self.out_height, self.metadata, self.crf, sign)
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append frames (t, height, width, 3) uint8, at the size given to the writer."""
        if self._sink is None:
            raise RuntimeError("VideoWriter.write called outside its `with` block")
        _check_frames(frames, "frames")
        if frames.shape[1:3] != (self.height, self.width):
            raise InputError(
                f"frames are {frames.shape[2]}x{frames.shape[1]} (WxH) but the writer was opened "
                f"for {self.width}x{self.height}; every chunk must have the same size"
            )
        for frame in frames:  # (H, W, 3): one frame at a time keeps memory flat
            self._sink.add(self._prepare(frame))
            self.frames_written += 1

    def _marks(self):
        """Resolve the marks as writing starts (metadata is final then); returns the .mp4 signer or None."""
        m = self.marks(self.metadata, self._target.ext) if callable(self.marks) else (self.marks or FrameMarks())
        self.metadata = self.metadata | m.metadata
        self._mark_frame = m.frame
        return m.sign if self._target.ext == ".mp4" else None

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        """The frame at output size: upscaled, edge-padded to the sink's even sides, then marked."""
        out = upscale(frame, self.factor)  # (H*k, W*k, 3)
        pad_h, pad_w = self.out_height - out.shape[0], self.out_width - out.shape[1]
        if pad_h or pad_w:
            out = np.pad(out, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self._mark_frame is not None:
            out = self._mark_frame(out)
        return out

    def __exit__(self, exc_type, exc, tb) -> bool:
        sink, self._sink = self._sink, None
        if sink is None:
            return False
        if exc_type is not None:
            sink.abort()
            return False
        try:
            if self.frames_written == 0:
                raise InputError(f"no frames were written to {self._target.first_path}; nothing was saved")
            self.paths = sink.commit()
        except BaseException:
            sink.abort()
            raise
        return False


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    """The (H, W, 3) uint8 frame enlarged `factor` times with libswscale's bicubic scaler."""
    if factor == 1:
        return frame
    h, w = frame.shape[:2]
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return vf.reformat(width=w * factor, height=h * factor, interpolation=_INTERPOLATION).to_ndarray()


def _check_frames(frames: object, what: str) -> None:
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{what} must be a numpy array (T, H, W, 3) uint8, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise InputError(
            f"{what} must have dtype uint8 (0-255), got {frames.dtype}; "
            f"for floats in [0, 1] use Video.from_float"
        )
    if frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise InputError(f"{what} must have shape (T, H, W, 3) with T, H, W >= 1, got {frames.shape}")


def _check_fps(fps: object) -> None:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (MIN_FPS <= float(fps) <= MAX_FPS):
        raise InputError(f"fps must be a number in [{MIN_FPS:g}, {MAX_FPS:g}], got {fps!r}")


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict):
        raise InputError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(
                f"metadata must map str to str, got {key!r}: {value!r}; convert values with str()"
            )


def _resolve_scale(scale: object, width: int, height: int) -> int:
    if scale is None:
        return 1
    if scale == "auto":
        return max(1, math.ceil(VIEW_MIN_SIDE / min(width, height)))
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise InputError(f"scale must be 'auto', None or a whole number >= 1, got {scale!r}")
    return int(scale)


def _resolve_crf(crf: object, ext: str) -> int | None:
    if ext not in _CRF_RANGE:
        if crf is not None:
            raise InputError(f"crf {crf!r} applies to .mp4 and .webm only, not {ext}")
        return None
    if crf is None:
        return _DEFAULT_CRF[ext]
    lo, hi = _CRF_RANGE[ext]
    if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not lo <= crf <= hi:
        raise InputError(f"crf for {ext} must be a whole number in [{lo}, {hi}] (lower is better), got {crf!r}")
    return int(crf)


@dataclass(frozen=True)
class _Target:
    ext: str  # one of SUPPORTED_EXTENSIONS
    folder: Path
    file: Path | None  # the output file (mp4, webm, gif)
    png_prefix: str | None  # PNG frames are folder / f"{png_prefix}_{i:05d}.png"
    create_folder: bool = False  # a missing "frames/" folder, made when writing starts

    @property
    def first_path(self) -> Path:
        if self.file is not None:
            return self.file
        return self.folder / f"{self.png_prefix}_{0:0{_PNG_DIGITS}d}.png"


def _resolve_target(path: str | os.PathLike) -> _Target:
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir():
        if not p.is_dir() and not p.parent.is_dir():
            raise InputError(f"cannot create folder {text!r}: its parent folder {str(p.parent)!r} does not exist")
        return _Target(".png", p, None, "frame", create_folder=not p.is_dir())
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(
            f"unsupported output extension {ext or '(none)'!r} in {text!r}; use one of "
            f"{', '.join(SUPPORTED_EXTENSIONS)} (PNG frames), or a folder path ending in '/'"
        )
    folder = p.parent
    if not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable")
    if ext == ".png":
        return _Target(ext, folder, None, p.stem)
    return _Target(ext, folder, p, None)


