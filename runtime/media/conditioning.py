"""Known latent frames: image-to-video, extension, connection, SDEdit, long videos and loops.

The denoiser takes known latent frames (`cond_latents`, `cond_mask`): the tiny family was
trained with the first, the first k or the last latent frame given and the loss on the
others only. While sampling, a known frame's x0 estimate is its given latent, so its state
stays on x = (1 - σ) c + σ ε (flow) and the network sees it noised to the current σ, as in
training; it ends at the given latent.

How pixel frames map onto a causal VAE's latent frames (4x in time): latent 0 is frame 0
alone, latent j >= 1 is frames 4j-3 .. 4j. So
- known frames at a window's start: a clip's last 4(m-1)+1 frames encode to m latents whose
  first is a one-frame latent, as a window's latent 0 is in training;
- known frames at a window's end: a clip's first 4m frames, with frame 0 repeated in front,
  encode to 1 + m latents; the m four-frame ones end the window, whose new frames then lead
  straight into the clip's frame 0;
- a long video reuses the previous window's last latents as the next window's known start
  and decodes every window through one causal decoder stream, so a seam has no
  decode/encode round trip (benchmarks/media_quality.py measures it against re-encoding).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator

import numpy as np

from ..video import inputs
from ..sampling import prediction
from ..engine.decode import StreamingDecoder
from ..errors import BundleError, Cancelled, InputError
from ..video.core import Video

log = logging.getLogger("kinema")

MAX_SECONDS = 300.0  # longest video (generated or extended) kinema makes window by window
OVERLAP = 2  # latent frames a window takes from the one before it ("first k frames known")
END_KNOWN = 1  # latent frames known at a window's end ("last frame known", as trained)
LOOP_REDECODE = 2  # a loop's first latents decoded again after its closing window (see long_stream)
SEAMS = ("latents", "reencode")
POSITIONS = ("first", "leading", "last")  # manifest conditioning.known_frames vocabulary


# ---------------------------------------------------------------------------- capability checks


def can_condition(bundle, position: str) -> str | None:
    """None when the bundle's denoiser can take known latent frames at `position`, else why not."""
    cond = bundle.manifest.get("conditioning", {})
    if not isinstance(cond, dict) or cond.get("cond_latents") is not True:
        return "its denoiser takes no known latent frames (manifest conditioning.cond_latents is not true)"
    known = cond.get("known_frames")  # absent: any position
    if known is not None and (not isinstance(known, list) or position not in known):
        return f"its manifest says the denoiser cannot condition on the {position} latent frames (conditioning.known_frames = {known!r})"
    return None


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


# ---------------------------------------------------------------------------- sampler pieces


def hold_known(model: Callable, cond_latents: np.ndarray, cond_mask: np.ndarray) -> Callable:
    """Wrap `model(x, sigma) -> denoised` so known frames (cond_mask 1) denoise to cond_latents."""
    known = np.broadcast_to(cond_mask > 0.5, cond_latents.shape)

    def held(x: np.ndarray, sigma: float) -> np.ndarray:
        return np.where(known, cond_latents, model(x, sigma)).astype(x.dtype, copy=False)

    return held


def edit_sigmas(full: np.ndarray, strength: float, kind: str) -> np.ndarray:
    """The schedule from sigma = strength down (flow), or its last strength share of steps (VP)."""
    if strength >= 1.0:
        return full
    if kind == "flow":
        below = full[full < strength * (1 - 1e-9)]
        return np.concatenate([[strength], below])
    steps = len(full) - 1
    n = max(1, round(steps * strength))
    return full[steps - n :]


def noised(x0: np.ndarray, noise: np.ndarray, sigma: float, kind: str) -> np.ndarray:
    """The sampler state at sigma for clean latents x0 and noise ε."""
    if kind == "flow":
        return ((1.0 - sigma) * x0 + sigma * noise).astype(np.float32)
    return (x0 + sigma * noise).astype(np.float32)  # VE coordinates of the VP kinds


# ---------------------------------------------------------------------------- encoding


def encode(pipe, frames: np.ndarray) -> np.ndarray:
    """Normalised latents (1, C, t, h, w) of uint8 frames (T, H, W, 3), T = 4k+1."""
    x = frames[None].astype(np.float32) / 255.0  # (1, T, H, W, 3)
    (lat,) = pipe.session("encoder").run(["latents"], {"frames": x})
    return lat.astype(np.float32)


def encode_tail(pipe, frames: np.ndarray, m: int = OVERLAP) -> np.ndarray:
    """m latents (fewer for a short clip) of a clip's last 4(m-1)+1 frames: a window's known start."""
    tm = pipe.bundle.latent["temporal_compression"]
    m = max(1, min(m, (len(frames) - 1) // tm + 1))
    return encode(pipe, frames[-(tm * (m - 1) + 1) :])


def encode_head(pipe, frames: np.ndarray, m: int = END_KNOWN) -> np.ndarray:
    """m four-frame latents of a clip's first 4m frames (frame 0 repeated in front): a window's known end."""
    tm = pipe.bundle.latent["temporal_compression"]
    if len(frames) < tm * m:
        raise InputError(f"a clip needs at least {tm * m} frames to be continued from its start; it has {len(frames)}")
    return encode(pipe, np.concatenate([frames[:1], frames[: tm * m]]))[:, :, 1:]


# ---------------------------------------------------------------------------- windows


class Windows:
    """Samples windows of latent frames for one prompt and seed: text encoded once, one noise stream."""

    def __init__(self, pipe, st, *, callback=None, cancel=None, accel=None, windows: int = 1):
        self.pipe, self.st = pipe, st
        self.text = pipe.encode_text([st.prompt, st.negative_prompt])
        self.rng = np.random.Generator(np.random.PCG64(st.seed))  # window 0 draws what initial_noise draws
        self.kind = pipe.bundle.sampler["prediction"]
        self.sigmas = pipe.sigmas(st)
        self.callback, self.cancel, self.accel = callback, cancel, accel
        self.index, self.total = 0, windows
        self.first = self.last = None  # latents of the first and the latest window (forward sets them)
        lat = pipe.bundle.latent
        self.channels = lat["channels"]
        self.tm = lat["temporal_compression"]
        self.h, self.w = st.height // lat["spatial_compression"], st.width // lat["spatial_compression"]
        v = pipe.bundle.video
        self.native = (v.frames - v.frame_offset) // self.tm + 1  # latent frames of the model's native clip
        self.most = (v.max_frames - v.frame_offset) // self.tm + 1

    def check_cancel(self):
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("generation cancelled")

    def noise(self, t: int) -> np.ndarray:
        return self.rng.standard_normal((1, self.channels, t, self.h, self.w), dtype=np.float32)

    def sample(self, t: int, *, start=None, end=None, x0=None, strength: float = 1.0) -> np.ndarray:
        """Latents (1, C, t, h, w): `start`/`end` latents known at the window's ends; x0 + strength = SDEdit."""
        self.check_cancel()
        shape = (1, self.channels, t, self.h, self.w)
        noise = self.noise(t)
        sigmas = self.sigmas
        if x0 is not None and strength < 1.0:
            sigmas = edit_sigmas(sigmas, strength, self.kind)
            x = noised(x0, noise, float(sigmas[0]), self.kind)
        else:
            x = noise * np.float32(prediction.initial_noise_scale(sigmas, self.kind))
        cond = mask = None
        if start is not None or end is not None:
            cond = np.zeros(shape, np.float32)
            mask = np.zeros((1, 1, t, 1, 1), np.float32)
            if start is not None:
                k = start.shape[2]
                cond[:, :, :k], mask[:, :, :k] = start, 1.0
            if end is not None:
                k = end.shape[2]
                cond[:, :, t - k :], mask[:, :, t - k :] = end, 1.0
        i, n = self.index, self.total

        def on_step(p):
            self.check_cancel()
            if self.callback is not None:
                self.callback({**p, "window": i, "windows": n})
            self.check_cancel()

        out = self.pipe.sample(self.st, x, sigmas, text=self.text, cond_latents=cond, cond_mask=mask, callback=on_step, accel=self.accel)
        self.index += 1
        return out


def plan(new: int, native: int, known: int) -> list[tuple[int, int]]:
    """(known start, new) latent frames per window: `new` latents after `known` ones (0: from nothing)."""
    windows = []
    if known == 0 and new > 0:
        windows.append((0, min(native, new)))
        known, new = windows[0][1], new - windows[0][1]
    while new > 0:
        k = min(OVERLAP, known)
        n = min(native - k, new)
        windows.append((k, n))
        known, new = k + n, new - n
    return windows


def forward(win: Windows, dec: StreamingDecoder, new: int, *, known: np.ndarray | None = None,
            emit_known: bool = False, seam: str = "latents") -> Iterator[np.ndarray]:
    """Float frames (t, H, W, 3) of `new` latent frames after `known` (or from nothing), window by window.

    Windows are the model's native length; each takes the previous window's last OVERLAP
    latents as its known start. seam "latents" decodes the whole video through `dec`, one
    causal stream; "reencode" decodes each window on its own and encodes the previous
    window's last 4(OVERLAP-1)+1 decoded frames as the next known start (for measuring).
    `win.first` and `win.last` hold the first and the latest window's latents afterwards.
    """
    if seam not in SEAMS:
        raise InputError(f"seam {seam!r} is unknown; choose one of {', '.join(SEAMS)}")
    keep = win.tm * (OVERLAP - 1) + 1
    tail = None  # the last decoded frames, for seam="reencode"

    def decoded(lat):
        nonlocal tail
        frames = dec.push(lat)
        if frames is None:
            return None
        tail = frames[0] if tail is None else np.concatenate([tail, frames[0]])[-keep:]
        return frames[0]

    prev = known
    if known is not None:
        frames = decoded(known)
        if emit_known and frames is not None:
            yield frames
    for k, n in plan(new, win.native, 0 if known is None else known.shape[2]):
        if k == 0:
            lat = win.sample(n)
        elif seam == "latents":
            lat = win.sample(k + n, start=prev[:, :, -k:])
        else:
            start = encode_tail(win.pipe, np.rint(np.clip(tail, 0, 1) * 255).astype(np.uint8), k)
            dec = StreamingDecoder(win.pipe)
            dec.push(start)
            k = start.shape[2]
            lat = win.sample(k + n, start=start)
        win.first = lat if win.first is None else win.first
        win.last = prev = lat
        frames = decoded(lat[:, :, k:])
        if frames is not None:
            yield frames


def _ramp_mix(clip: np.ndarray, decoded: np.ndarray, into: bool) -> np.ndarray:
    """Float frames mixing uint8 `clip` frames with their `decoded` reconstruction ([0, 1]):
    into=True fades from the clip into the reconstruction (all of it at the last frame);
    into=False from the reconstruction into the clip (all clip at the last frame)."""
    m = len(clip)
    w = (np.arange(1, m + 1, dtype=np.float32) / m)[:, None, None, None]  # the weight of what is faded into
    c = clip.astype(np.float32) / 255.0
    return (1 - w) * c + w * decoded if into else (1 - w) * decoded + w * c


def _fade_clip(clip: np.ndarray, chunks: Iterator[np.ndarray], m: int, fps: float) -> Iterator[np.ndarray]:
    """uint8 chunks: `clip` whose last m frames fade into the first m frames of `chunks` (their
    decoded reconstruction), then the rest of `chunks`; the weight of the reconstruction
    rises linearly to 1 at the clip's last frame, so the new frames continue it without a jump."""
    m = min(m, len(clip))
    got, rest = [], iter(chunks)
    for c in rest:
        got.append(c)
        if sum(len(g) for g in got) >= m:
            break
    head = np.concatenate(got)
    yield np.concatenate([clip[: len(clip) - m], _u8(_ramp_mix(clip[len(clip) - m :], head[:m], into=True), fps)])
    if len(head) > m:
        yield _u8(head[m:], fps)
    for c in rest:
        yield _u8(c, fps)


# ---------------------------------------------------------------------------- whole features


def _u8(frames: np.ndarray, fps: float) -> np.ndarray:
    return Video.from_float(frames, fps).frames


def _latents(pipe, frames: int) -> int:
    v = pipe.bundle.video
    return (frames - v.frame_offset) // pipe.bundle.latent["temporal_compression"] + 1


def loop_min_frames(bundle) -> int:
    """Fewest frames a --loop clip can have: LOOP_REDECODE + 1 latent frames before the closing window."""
    v = bundle.video
    bridge = (v.frames - v.frame_offset) // v.frame_multiple + 1 - OVERLAP - END_KNOWN
    return v.frame_multiple * (bridge + LOOP_REDECODE) + v.frame_offset


def _skip(chunks: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The frame chunks without their first n frames."""
    for c in chunks:
        if n >= len(c):
            n -= len(c)
            continue
        yield c[n:]
        n = 0


def long_stream(pipe, st, *, callback=None, cancel=None, accel=None, seam: str = "latents") -> Iterator[np.ndarray]:
    """uint8 frame chunks of a text-to-video clip of any length up to the limit; `st.loop` closes it into a loop.

    A loop: after the clip, a closing window whose known start is the clip's last latents
    and whose known end is the clip's latent 1; its new frames lead back into the clip's
    start. Latents 1..LOOP_REDECODE are then decoded again after them, in the same decoder
    stream, and the clip's first 4 LOOP_REDECODE + 1 frames are left out: every frame
    pair of the loop comes from one continuous decode except the wrap from the re-decoded
    latents to the next original frame, where the causal decoder's context has faded
    (a loop of 4k+1 frames asked writes 4k; playback starts at original frame 4 LOOP_REDECODE + 1).
    """
    require(pipe.bundle, "make long videos window by window" if not st.loop else "make loops",
            ("leading",) + (("last",) if st.loop else ()), encoder=seam == "reencode")
    total = _latents(pipe, st.frames)
    win = Windows(pipe, st, callback=callback, cancel=cancel, accel=accel)
    dec = StreamingDecoder(pipe)
    bridge = win.native - OVERLAP - END_KNOWN if st.loop else 0  # new latents of the closing window
    main = total - bridge
    win.total = len(plan(main, win.native, 0)) + (1 if st.loop else 0)
    chunks = (_u8(c, st.fps) for c in forward(win, dec, main, seam=seam))
    yield from _skip(chunks, win.tm * LOOP_REDECODE + 1) if st.loop else chunks
    if st.loop:
        close = win.sample(OVERLAP + bridge + END_KNOWN, start=win.last[:, :, -OVERLAP:], end=win.first[:, :, 1:2])
        yield _u8(dec.push(close[:, :, OVERLAP : OVERLAP + bridge])[0], st.fps)
        yield _u8(dec.push(win.first[:, :, 1 : 1 + LOOP_REDECODE])[0], st.fps)


def animate_stream(pipe, st, image: np.ndarray, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 frame chunks of a clip whose latent frame 0 is the image's; frame 0 is its VAE round trip."""
    total = _latents(pipe, st.frames)
    require(pipe.bundle, "animate an image", ("first",) + (("leading",) if total > 1 else ()), encoder=True)
    known = encode(pipe, image[:1])  # (1, C, 1, h, w)
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    win.total = len(plan(total - 1, win.native, 1))
    for chunk in forward(win, StreamingDecoder(pipe), total - 1, known=known, emit_known=True):
        yield _u8(chunk, st.fps)


def extend_stream(pipe, st, clip: np.ndarray, new_frames: int, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 chunks: the clip, then about `new_frames` frames continuing it (whole latent frames: multiples of 4)."""
    require(pipe.bundle, "extend a video forward", ("leading",), encoder=True)
    new = max(1, round(new_frames / pipe.bundle.latent["temporal_compression"]))
    known = encode_tail(pipe, clip)
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    win.total = len(plan(new, win.native, known.shape[2]))
    m = 1 + win.tm * (known.shape[2] - 1)  # the clip frames the known latents stand for
    yield from _fade_clip(clip, forward(win, StreamingDecoder(pipe), new, known=known, emit_known=True), m, st.fps)


def extend_backward_stream(pipe, st, clip: np.ndarray, new_frames: int, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 frame chunks: about `new_frames` frames leading into the clip, then the clip.

    Each window has its known latent at its end (the next part's first frames, encode_head)
    and 4j+1 new frames. Windows are made from the clip back in time, keeping only their
    latents and the few decoded frames the earlier window is conditioned on; once the earliest
    is made, each window is decoded again in time order and streamed, so memory holds latents,
    not frames. Each window decodes through its known end as well: those frames (its
    reconstruction of the next part's first frames) fade into the next part's own, so the
    cut is not a jump from the new frames to frames they were only conditioned on.
    """
    require(pipe.bundle, "extend a video backward", ("last",), encoder=True)
    tm = pipe.bundle.latent["temporal_compression"]
    if len(clip) < tm * END_KNOWN:
        raise InputError(f"extending backward needs a clip of at least {tm * END_KNOWN} frames; it has {len(clip)}")
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    most = win.native - END_KNOWN - 1  # four-frame latents per window besides its one-frame latent 0
    sizes, left = [], new_frames
    while left > 0:
        j = min(most, max(1, round((left - 1) / tm)))  # at least 5 frames: the next window encodes 4
        sizes.append(j)
        left -= tm * j + 1
    win.total = len(sizes)
    parts, head = [], clip[: tm * END_KNOWN]
    for j in sizes:
        lat = win.sample(j + 1 + END_KNOWN, end=encode_head(pipe, head))
        parts.append(lat)
        head = _head(pipe, lat, tm * END_KNOWN, st.fps)
    rec = None  # the previous window's frames of its known end
    for lat in [*reversed(parts), None]:
        if lat is None:
            frames, next_rec = clip, None
        else:
            decoded = StreamingDecoder(pipe).push(lat)[0]
            n = decoded.shape[0] - tm * END_KNOWN
            frames, next_rec = _u8(decoded[:n], st.fps), decoded[n:]
        if rec is not None:
            m = len(rec)
            frames = np.concatenate([_u8(_ramp_mix(frames[:m], rec, into=False), st.fps), frames[m:]])
        yield frames
        rec = next_rec


def _head(pipe, lat: np.ndarray, n: int, fps: float) -> np.ndarray:
    """The first n uint8 frames of latents `lat`, decoded only as far as they need."""
    dec, got = StreamingDecoder(pipe), []
    for i in range(lat.shape[2]):
        f = dec.push(lat[:, :, i : i + 1])
        if f is not None:
            got.append(f[0])
            if sum(len(g) for g in got) >= n:
                break
    return _u8(np.concatenate(got)[:n], fps)


def connect_stream(pipe, st, a: np.ndarray, b: np.ndarray, new_frames: int | None = None, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 frame chunks: clip a, a transition from a's end into b's start, clip b.

    A transition of one window starts from a's last latents and ends on b's first. A longer
    one goes window by window like a long `generate` (each window starting from the previous
    one's last OVERLAP latents) and only its last window ends on b. One decoder stream runs
    over a's tail, the transition and b's head: a's last frames fade into their
    reconstruction and b's first frames out of theirs, so neither cut is a jump from sharp
    frames to decoded ones. Frames are streamed; only b's head reconstruction is held back.
    """
    require(pipe.bundle, "connect two videos", ("leading", "last"), encoder=True)
    tm = pipe.bundle.latent["temporal_compression"]
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    room = win.most - OVERLAP - END_KNOWN  # new latents a window with both ends known can hold
    n = win.native - OVERLAP - END_KNOWN if new_frames is None else max(1, round(new_frames / tm))
    last = min(n, room)
    start, end = encode_tail(pipe, a), encode_head(pipe, b)
    k = start.shape[2]
    win.total = len(plan(n - last, win.native, k)) + 1
    ma, mb = 1 + tm * (k - 1), tm * END_KNOWN

    def transition() -> Iterator[np.ndarray]:  # float frames of a's tail, the new latents and b's head
        dec = StreamingDecoder(pipe)
        yield from forward(win, dec, n - last, known=start, emit_known=True)
        prev = win.last if n > last else start
        j = min(OVERLAP, prev.shape[2])
        lat = win.sample(j + last + END_KNOWN, start=prev[:, :, -j:], end=end)
        frames = dec.push(lat[:, :, j:])
        if frames is not None:
            yield frames[0]

    yield a[: len(a) - ma]
    held = np.zeros((0, *a.shape[1:]), np.float32)
    faded = False
    for f in transition():
        held = np.concatenate([held, f])
        if not faded and len(held) >= ma:
            yield _u8(_ramp_mix(a[len(a) - ma :], held[:ma], into=True), st.fps)
            held, faded = held[ma:], True
        if faded and len(held) > mb:
            yield _u8(held[: len(held) - mb], st.fps)
            held = held[len(held) - mb :]
    yield _u8(_ramp_mix(b[:mb], held, into=False), st.fps)
    yield b[mb:]


def edit_stream(pipe, st, clip: np.ndarray, strength: float, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 frame chunks of the clip redone from sigma = strength (SDEdit); strength 1 = plain generation.

    A clip of one window is redone at once. A longer one goes window by window, as a long
    video does: each window encodes its own stretch of the clip (so the encoder's memory
    does not grow with the clip) and redoes it with the previous window's last OVERLAP
    edited latents known at its start; every window is decoded through one causal stream.
    """
    require(pipe.bundle, "edit a video", (), encoder=True)
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    t = (len(clip) - 1) // win.tm + 1
    windows = [(0, t)] if t <= win.most else plan(t, win.native, 0)
    win.total = len(windows)
    dec = StreamingDecoder(pipe)
    prev, done = None, 0
    for k, n in windows:
        # latents done-k .. done+n-1: a one-frame latent of frame tm*(done-k), then four-frame ones
        src = encode(pipe, clip[win.tm * (done - k) : win.tm * (done + n - 1) + 1])
        if k:
            src[:, :, :k] = prev[:, :, -k:]  # the known start is the edited video, noised like the rest
        lat = win.sample(k + n, start=prev[:, :, -k:] if k else None, x0=src, strength=strength)
        prev, done = lat, done + n
        frames = dec.push(lat[:, :, k:])
        if frames is not None:
            yield _u8(frames[0], st.fps)


def edit_length(bundle, n: int, name: str) -> int:
    """Frames of a clip an edit uses: the most of the form 4k+1 it has; past one window only window by window."""
    v = bundle.video
    if n > v.max_frames and (why := can_condition(bundle, "leading")) is not None:
        raise InputError(f"{name} has {n} frames after fitting; this bundle edits at most {v.max_frames} frames ({v.max_frames / v.fps:g} s at {v.fps:g} fps) and cannot go on window by window ({why}): trim it first")
    return v.frame_multiple * ((n - v.frame_offset) // v.frame_multiple) + v.frame_offset


# ---------------------------------------------------------------------------- Pipeline methods


def media_metadata(pipe, st, mode: str, **extra) -> dict[str, str]:
    """What a file made by `mode` stores: the settings, the mode and its values, the bundle and kinema's version."""
    from ..pipeline import _generator

    return st.metadata() | {k: str(v) for k, v in extra.items()} | {
        "mode": mode, "bundle": pipe.bundle.name, "bundle_sha256": pipe.bundle.digest, "generator": _generator()}


def load_image(image, st, fit: str, name: str = "image") -> inputs.Fitted:
    """An image path or uint8 array fitted to the settings' size."""
    if isinstance(image, (str, os.PathLike)):
        name, image = os.fspath(image), inputs.read_image(image)
    return inputs.fit_image(image, st.width, st.height, fit, name)


def load_clip(video, st, fit: str, name: str = "video", max_frames: int | None = None) -> inputs.Fitted:
    """A video path, `Video` or uint8 (T, H, W, 3) array (at the settings' fps) fitted to the settings."""
    limit = max_frames if max_frames is not None else math.floor(MAX_SECONDS * st.fps)
    if isinstance(video, (str, os.PathLike)):
        return inputs.read_clip(video, st.width, st.height, st.fps, fit, max_frames=limit)
    if isinstance(video, Video):
        return inputs.fit_clip(video.frames, video.fps, st.width, st.height, st.fps, fit, name, limit)
    return inputs.fit_clip(video, st.fps, st.width, st.height, st.fps, fit, name, limit)


class MediaMixin:
    """Image and video prompts on `Pipeline` (see the module doc); notes about fitting go to the "kinema" logger."""

    def _video(self, frames: np.ndarray, st, mode: str, **extra) -> Video:
        return Video(frames, st.fps, media_metadata(self, st, mode, **extra))

    def animate(self, image, prompt: str, *, fit: str = "crop", callback=None, cancel=None, **settings) -> Video:
        """A clip that starts from `image` (a path or uint8 (H, W, 3)); settings as in `generate`."""
        require(self.bundle, "animate an image", ("first",), encoder=True)
        st = self.check_inputs(prompt, **settings)
        img = load_image(image, st, fit)
        if img.note:
            log.info(img.note)
        frames = np.concatenate(list(animate_stream(self, st, img.frames, callback=callback, cancel=cancel)))
        return self._video(frames, st, "animate")

    def extend(self, video, prompt: str, seconds: float, *, backward: bool = False, fit: str = "crop",
               callback=None, cancel=None, **settings) -> Video:
        """The clip (a path, `Video` or uint8 frames) with `seconds` more before (backward) or after it."""
        require(self.bundle, f"extend a video {'backward' if backward else 'forward'}", ("last",) if backward else ("leading",), encoder=True)
        st = self.check_inputs(prompt, **settings)
        new = check_seconds(seconds, st.fps)
        clip = load_clip(video, st, fit)
        if clip.note:
            log.info(clip.note)
        if backward:
            frames = np.concatenate(list(extend_backward_stream(self, st, clip.frames, new, callback=callback, cancel=cancel)))
        else:
            frames = np.concatenate(list(extend_stream(self, st, clip.frames, new, callback=callback, cancel=cancel)))
        return self._video(frames, st, "extend", seconds=seconds, backward=backward)

    def connect(self, a, b, prompt: str, *, seconds: float | None = None, fit: str = "crop",
                callback=None, cancel=None, **settings) -> Video:
        """Clip a, a generated transition into clip b, then clip b."""
        require(self.bundle, "connect two videos", ("leading", "last"), encoder=True)
        st = self.check_inputs(prompt, **settings)
        new = None if seconds is None else check_seconds(seconds, st.fps)
        clips = [load_clip(v, st, fit, name) for v, name in ((a, "video A"), (b, "video B"))]
        for c in clips:
            if c.note:
                log.info(c.note)
        frames = np.concatenate(list(connect_stream(self, st, clips[0].frames, clips[1].frames, new, callback=callback, cancel=cancel)))
        return self._video(frames, st, "connect")

    def edit(self, video, prompt: str, strength: float, *, fit: str = "crop", callback=None, cancel=None, **settings) -> Video:
        """The clip redone under `prompt` from noise level `strength` in (0, 1] (SDEdit)."""
        strength = check_strength(strength)
        require(self.bundle, "edit a video", (), encoder=True)
        st = self.check_inputs(prompt, **settings)
        clip = load_clip(video, st, fit, max_frames=math.floor(MAX_SECONDS * st.fps))
        n = edit_length(self.bundle, len(clip.frames), "video")
        if clip.note:
            log.info(clip.note)
        from dataclasses import replace

        st = replace(st, frames=n)
        frames = np.concatenate(list(edit_stream(self, st, clip.frames[:n], strength, callback=callback, cancel=cancel)))
        return self._video(frames, st, "edit", strength=strength)


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
