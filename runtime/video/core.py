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

import json
import math
import numbers
import os
import re
import secrets
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..safety import watermark as wm
from ..errors import InputError

SUPPORTED_EXTENSIONS = (".mp4", ".webm", ".gif", ".png")
VIEW_MIN_SIDE = 256  # scale="auto" upscales until the short side is at least this
MAX_SIDE = 8192  # largest output width/height, after upscaling
MAX_FPS = 240.0
GIF_MAX_FPS = 50.0  # GIF delays are 1/100 s; browsers stretch delays under 0.02 s to 0.1 s
_DEFAULT_CRF = {".mp4": 18, ".webm": 24}
_CRF_RANGE = {".mp4": (0, 51), ".webm": (0, 63)}
_INTERPOLATION = "BICUBIC"  # libswscale bicubic: Keys cubic with a = -0.6 (swscale's default C)
_PNG_DIGITS = 5
_PNG_FPS_KEY = "kinema-fps"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(eq=False)
class Video:
    """A generated clip: `frames` uint8 (T, H, W, 3) RGB, `fps`, and the generation settings."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    metadata: dict[str, str] = field(default_factory=dict)

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
             sign: Callable[[Path, Path, dict], None] | bool | None = None) -> Path:
        """Write the clip to `path` (format from its extension, see the module doc); returns the
        written file, or the first frame for PNG frames (`out.png` -> `out_00000.png, ...`;
        `folder/` -> `folder/frame_00000.png, ...`).

        scale: "auto" upscales by the smallest whole factor that makes the short side at least
        256 pixels (64 -> x4), with libswscale's bicubic scaler; 1 or None keeps the native size.
        crf: quality for .mp4 (0-51, default 18) and .webm (0-63, default 24); lower is better.
        sign: see `VideoWriter`: a clip kinema generated gets its watermark and, as .mp4, a C2PA manifest.
        """
        with VideoWriter(path, self.fps, self.width, self.height, metadata=self.metadata, scale=scale, crf=crf,
                         sign=sign) as w:
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
        sign: Callable[[Path, Path, dict], None] | bool | None = None,
        watermark: bool | None = None,
        visible_watermark: bool = False,
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
        if callable(sign) and ext != ".mp4":
            raise InputError(f"content credentials (C2PA) are written into .mp4 files only, not {ext}")
        self.sign, self.watermark, self.visible_watermark = sign, watermark, visible_watermark
        self._invisible = False
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
            if t.create_folder:
                t.folder.mkdir(exist_ok=True)
            self._sink = _PngSink(t.folder, t.png_prefix, self.fps, self.metadata)
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
        """Decide the marks as writing starts (metadata is final then); returns the mp4 signing hook or None.

        A clip kinema generated (metadata "generator" is kinema's) gets the invisible watermark
        (watermark=None means that rule; True/False force it) and, as .mp4, a C2PA manifest
        signed with `sign`, or with this machine's local key when sign is None (False: none).
        """
        made_here = self.metadata.get("generator", "").startswith("kinema")
        self._invisible = made_here if self.watermark is None else bool(self.watermark)
        if self._invisible:
            self.metadata = self.metadata | {"watermark": wm.NAME}
        if self._target.ext != ".mp4" or self.sign is False or (self.sign is None and not made_here):
            return None
        if self.sign is None or self.sign is True:
            from ..safety import provenance

            return provenance.signer_for(provenance.local_credentials())
        return self.sign

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        """The frame at output size: upscaled, edge-padded to the sink's even sides, then marked."""
        out = upscale(frame, self.factor)  # (H*k, W*k, 3)
        pad_h, pad_w = self.out_height - out.shape[0], self.out_width - out.shape[1]
        if pad_h or pad_w:
            out = np.pad(out, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self.visible_watermark:
            out = wm.visible_mark(out)
        if self._invisible:  # at the written size; detection resamples whatever size it reads
            out = wm.embed(out[None])[0]
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


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames of a video file as uint8 (T, H, W, 3) RGB, and its frame rate.

    Reads anything FFmpeg decodes (mp4, webm, gif, ...), plus kinema's PNG frames: a single
    .png file, `clip.png` for the set `clip_00000.png, ...`, or a folder of `frame_NNNNN.png`.
    For PNG frames the fps is the one kinema recorded, or 0.0 when the files record none.
    """
    png_files = _png_files_for_reading(path)
    if png_files is not None:
        frames = [_decode_all(p)[0][0] for p in png_files]
        fps_text = _png_text(png_files[0]).get(_PNG_FPS_KEY, "0")
        return np.stack(frames), float(fps_text)
    frames, fps = _decode_all(Path(path))
    return frames, fps


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The generation settings kinema stored in a video file (see the module doc); {} if none."""
    png_files = _png_files_for_reading(path)
    if png_files is not None:
        comment = _png_text(png_files[0]).get("Comment")
    else:
        path = _existing_file(path)
        if path.suffix.lower() == ".gif":
            comment = _gif_comment(path)
        else:
            try:
                with av.open(str(path)) as container:
                    tags = {k.lower(): v for k, v in container.metadata.items()}
            except av.FFmpegError as e:
                raise InputError(f"cannot read {path}: {e}") from e
            comment = tags.get("comment")
    return _parse_settings(comment)


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such video file: {os.fspath(path)!r}")
    return p


def _decode_all(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Every frame of the first video stream as uint8 (T, H, W, 3) RGB, and the stream's rate."""
    path = _existing_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} holds no video stream")
            stream = container.streams.video[0]
            # to_ndarray converts with the matrix the file is tagged with (BT.709 for ours)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.guessed_rate or stream.average_rate
    except av.FFmpegError as e:
        raise InputError(f"cannot read {path}: {e}") from e
    if not frames:
        raise InputError(f"{path} holds no frames")
    return np.stack(frames), float(rate) if rate else 0.0


# ---- validation -------------------------------------------------------------------------


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
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (0 < float(fps) <= MAX_FPS):
        raise InputError(f"fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")


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


# ---- writers ----------------------------------------------------------------------------


def _reserve_temp(folder: Path, name: str, *, directory: bool = False) -> Path:
    """A new hidden temporary path in `folder` (same filesystem as the target, so rename is atomic)."""
    tmp = folder / f".{name}.{secrets.token_hex(4)}.part"
    if directory:
        tmp.mkdir()
    else:  # O_EXCL reserves the name; mode 0o666 lets the umask set the usual permissions
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def _settings_json(metadata: dict[str, str]) -> str:
    return json.dumps(metadata, ensure_ascii=True, sort_keys=True)


def _parse_settings(comment: str | None) -> dict[str, str]:
    try:
        value = json.loads(comment) if comment else None
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


class _AvSink:
    """mp4 / webm / gif through one PyAV container; GIF frames pass a palette filter graph."""

    def __init__(self, target: Path, ext: str, fps: float, width: int, height: int,
                 metadata: dict[str, str], crf: int | None, sign=None) -> None:
        self.target, self.ext, self.metadata, self.sign = target, ext, metadata, sign
        self.signed: Path | None = None
        self.tmp = _reserve_temp(target.parent, target.name)
        self.rate = Fraction(fps).limit_denominator(1001)
        self.count = 0
        self.graph = None
        try:
            self._open(width, height, crf)
        except BaseException:
            self.abort()
            raise

    def _open(self, width: int, height: int, crf: int | None) -> None:
        fmt = self.ext[1:]
        options = {"movflags": "+faststart"} if self.ext == ".mp4" else {}
        if self.ext == ".gif":
            options = {"loop": "0"}  # 0: loop forever
        self.container = av.open(str(self.tmp), "w", format=fmt, options=options)
        if self.ext == ".gif":
            self.stream = self.container.add_stream("gif", rate=self.rate)
            self.stream.pix_fmt = "pal8"
            self.time_base = Fraction(1, 100)  # GIF delays are centiseconds
            self.graph = _palette_graph(width, height, self.time_base)
        else:
            if self.ext == ".webm":
                for key, value in self.metadata.items():  # matroska keeps any tag
                    if key:
                        self.container.metadata[key] = value
            self.container.metadata["comment"] = _settings_json(self.metadata)
            codec = "libx264" if self.ext == ".mp4" else "libvpx-vp9"
            self.stream = self.container.add_stream(codec, rate=self.rate)
            self.stream.pix_fmt = "yuv420p"  # what browsers decode
            # "b": "0" makes libvpx-vp9's crf constant quality instead of a bitrate cap
            self.stream.options = {"crf": str(crf)} if self.ext == ".mp4" else {
                "crf": str(crf), "b": "0", "row-mt": "1", "cpu-used": "4"}
            cc = self.stream.codec_context
            # Tag what _yuv420 converts with, so players do not guess BT.601 vs BT.709.
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited
            self.time_base = 1 / self.rate
        self.stream.width, self.stream.height = width, height
        self.stream.time_base = self.time_base

    def add(self, rgb: np.ndarray) -> None:  # (H, W, 3) uint8 at output size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = round(self.count / self.rate / self.time_base)
        frame.time_base = self.time_base
        self.count += 1
        if self.graph is not None:
            self.graph.push(frame)
            self._drain_graph()
        else:
            self._encode(frame.reformat(format="yuv420p", dst_colorspace="ITU709"))

    def _encode(self, frame) -> None:
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def _drain_graph(self) -> None:
        while True:
            try:
                self._encode(self.graph.pull())
            except (av.BlockingIOError, av.EOFError):
                return

    def commit(self) -> tuple[Path, ...]:
        if self.graph is not None:
            self.graph.push(None)
            self._drain_graph()
        for packet in self.stream.encode(None):  # flush the encoder
            self.container.mux(packet)
        self.container.close()
        if self.ext == ".gif":
            _append_gif_comment(self.tmp, _settings_json(self.metadata))
        if self.sign is not None:  # the signed copy is a second temporary file, renamed into place
            self.signed = _reserve_temp(self.target.parent, self.target.name)
            self.sign(self.tmp, self.signed, self.metadata)
            os.replace(self.signed, self.target)
            self.tmp.unlink()
            return (self.target,)
        os.replace(self.tmp, self.target)
        return (self.target,)

    def abort(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # already failing; the file is deleted next, the first error is reported
                pass
        self.tmp.unlink(missing_ok=True)
        if self.signed is not None:
            self.signed.unlink(missing_ok=True)


def _palette_graph(width: int, height: int, time_base: Fraction):
    """rgb24 -> pal8 with a palette made for each frame (stats_mode=single streams; no second pass)."""
    graph = av.filter.Graph()
    src = graph.add_buffer(width=width, height=height, format="rgb24", time_base=time_base)
    split = graph.add("split")
    palettegen = graph.add("palettegen", stats_mode="single", reserve_transparent="0")
    paletteuse = graph.add("paletteuse", new="1")
    sink = graph.add("buffersink")
    src.link_to(split)
    split.link_to(paletteuse, 0, 0)
    split.link_to(palettegen, 1, 0)
    palettegen.link_to(paletteuse, 0, 1)
    paletteuse.link_to(sink)
    graph.configure()
    return graph


class _PngSink:
    """PNG frames written into a hidden sibling folder, moved into place on commit."""

    def __init__(self, folder: Path, prefix: str, fps: float, metadata: dict[str, str]) -> None:
        self.folder, self.prefix = folder, prefix
        self.tmp = _reserve_temp(folder, prefix, directory=True)
        self.text = {"Comment": _settings_json(metadata), _PNG_FPS_KEY: repr(float(fps)), "Software": "kinema"}
        self.names: list[str] = []

    def add(self, rgb: np.ndarray) -> None:  # (H, W, 3) uint8
        name = f"{self.prefix}_{len(self.names):0{_PNG_DIGITS}d}.png"
        (self.tmp / name).write_bytes(_png_bytes(rgb, self.text))
        self.names.append(name)

    def commit(self) -> tuple[Path, ...]:
        paths = []
        for name in self.names:
            os.replace(self.tmp / name, self.folder / name)
            paths.append(self.folder / name)
        self.tmp.rmdir()
        pattern = re.compile(re.escape(self.prefix) + r"_(\d{%d,})\.png" % _PNG_DIGITS)
        for old in self.folder.iterdir():  # the new set replaces the old one as a whole
            m = pattern.fullmatch(old.name)
            if m and int(m.group(1)) >= len(self.names) and old.is_file():
                old.unlink()
        return tuple(paths)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- PNG and GIF details ----------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(rgb: np.ndarray, text: dict[str, str]) -> bytes:
    """An 8-bit RGB PNG (ISO/IEC 15948) with "Up"-filtered rows and Latin-1 tEXt chunks."""
    h, w, _ = rgb.shape
    rows = rgb.reshape(h, w * 3)
    up = np.empty((h, w * 3 + 1), np.uint8)  # filter byte 2 ("Up") + row minus the row above
    up[:, 0] = 2
    up[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=up[1:, 1:])  # uint8 wraps mod 256, as PNG wants
    out = [_PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
           _png_chunk(b"sRGB", b"\x00")]
    out += [_png_chunk(b"tEXt", k.encode("latin-1") + b"\x00" + v.encode("latin-1")) for k, v in text.items()]
    out += [_png_chunk(b"IDAT", zlib.compress(up.tobytes(), 6)), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG file, keyword -> text."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise InputError(f"{path} is not a PNG file")
    text, pos = {}, len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + length].partition(b"\x00")
            text[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return text


def _png_files_for_reading(path: str | os.PathLike) -> list[Path] | None:
    """The PNG frame files `path` names, in order, or None when it is not a PNG path."""
    p = Path(path)
    if p.is_dir():
        prefix, folder = "frame", p
    elif p.suffix.lower() == ".png":
        prefix, folder = p.stem, p.parent
    else:
        return None
    pattern = re.compile(re.escape(prefix) + r"_(\d{%d,})\.png" % _PNG_DIGITS)
    numbered = sorted(
        (int(m.group(1)), f) for f in (folder.iterdir() if folder.is_dir() else ()) if (m := pattern.fullmatch(f.name))
    )
    if numbered:
        return [f for _, f in numbered]
    if p.is_file():
        return [p]
    raise InputError(f"no PNG frames at {os.fspath(path)!r} (looked for {prefix}_{'0' * _PNG_DIGITS}.png, ...)")


def _append_gif_comment(path: Path, comment: str) -> None:
    """Insert a GIF89a comment extension before the trailer byte that ends the file."""
    data = comment.encode("ascii")
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255))
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\x3b":
            raise RuntimeError(f"{path}: the GIF muxer did not end the file with a trailer")
        f.seek(-1, os.SEEK_END)
        f.write(b"\x21\xfe" + blocks + b"\x00\x3b")


def _gif_comment(path: Path) -> str | None:
    """The first comment extension of a GIF file, walking its blocks (GIF89a spec)."""
    data = path.read_bytes()

    def skip_sub_blocks(pos: int) -> tuple[int, bytes]:
        chunks = []
        while pos < len(data) and data[pos]:
            chunks.append(data[pos + 1:pos + 1 + data[pos]])
            pos += 1 + data[pos]
        return pos + 1, b"".join(chunks)

    if not data.startswith((b"GIF87a", b"GIF89a")) or len(data) < 13:
        raise InputError(f"{path} is not a GIF file")
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header, screen, global table
    while pos < len(data):
        if data[pos] == 0x21:  # extension: label, sub-blocks
            label = data[pos + 1]
            pos, body = skip_sub_blocks(pos + 2)
            if label == 0xFE:
                return body.decode("latin-1")
        elif data[pos] == 0x2C:  # image: descriptor, local table, LZW code size, sub-blocks
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            pos, _ = skip_sub_blocks(pos)
        else:  # 0x3B trailer, or garbage
            return None
    return None
