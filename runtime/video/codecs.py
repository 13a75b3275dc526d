"""Video codecs and readers: the PyAV and PNG sinks `VideoWriter` streams into, `read_video` and `read_metadata`."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from .constants import _PNG_DIGITS, _PNG_FPS_KEY, _PNG_SIGNATURE, MAX_INPUT_PIXELS


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


def check_stream(stream, path) -> None:
    """Refuse a video stream whose header declares frames over MAX_INPUT_PIXELS, before one frame is decoded."""
    w, h = stream.codec_context.width or 0, stream.codec_context.height or 0
    if w * h > MAX_INPUT_PIXELS:
        raise InputError(f"{os.fspath(path)}: its frames are {w}x{h}, more than {MAX_INPUT_PIXELS // 1_000_000} megapixels; kinema does not decode it")


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
            check_stream(stream, path)
            # to_ndarray converts with the matrix the file is tagged with (BT.709 for ours)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.guessed_rate or stream.average_rate
    except av.FFmpegError as e:
        raise InputError(f"cannot read {path}: {e}") from e
    if not frames:
        raise InputError(f"{path} holds no frames")
    return np.stack(frames), float(rate) if rate else 0.0


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

    def __init__(self, folder: Path, prefix: str, fps: float, metadata: dict[str, str], *, new_folder: bool = False) -> None:
        self.folder, self.prefix, self.new_folder = folder, prefix, new_folder
        # a folder that does not exist yet is made whole: frames go into a hidden sibling, renamed once
        self.tmp = _reserve_temp(folder.parent, folder.name, directory=True) if new_folder else _reserve_temp(folder, prefix, directory=True)
        self.text = {"Comment": _settings_json(metadata), _PNG_FPS_KEY: repr(float(fps)), "Software": "kinema"}
        self.names: list[str] = []

    def add(self, rgb: np.ndarray) -> None:  # (H, W, 3) uint8
        name = f"{self.prefix}_{len(self.names):0{_PNG_DIGITS}d}.png"
        (self.tmp / name).write_bytes(_png_bytes(rgb, self.text))
        self.names.append(name)

    def commit(self) -> tuple[Path, ...]:
        if self.new_folder:
            try:
                os.rename(self.tmp, self.folder)  # one step: the folder appears with every frame in it
                return tuple(self.folder / n for n in self.names)
            except OSError:  # made by someone else meanwhile: move the frames in one by one
                self.folder.mkdir(exist_ok=True)
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


def _reserve_temp(folder: Path, name: str, *, directory: bool = False) -> Path:
    """A new hidden temporary path in `folder` (same filesystem as the target, so rename is atomic).

    The name carries this process's id, so a later run can tell a killed run's leftover
    (`sweep_stale`) from one still being written.
    """
    sweep_stale(folder, name)
    tmp = folder / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    if directory:
        tmp.mkdir()
    else:  # O_EXCL reserves the name; mode 0o666 lets the umask set the usual permissions
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.part$")


def sweep_stale(folder: Path, name: str) -> list[Path]:
    """Remove the temporary files and folders of `name` that runs no longer alive left in `folder` (a SIGKILL, a power cut)."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _STALE.match(p.name)
        if not m or m.group("name") != name or _alive(int(m.group("pid"))):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
