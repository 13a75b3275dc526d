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

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from ..engine.decode import StreamingDecoder
from ..errors import Cancelled, InputError
from ..sampling import prediction
from ..video.core import Video
from .rules import END_KNOWN, OVERLAP, SEAMS


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
                self.callback(replace(p, window=i, windows=n))
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


def ramp_mix(clip: np.ndarray, decoded: np.ndarray, into: bool) -> np.ndarray:
    """Float frames mixing uint8 `clip` frames with their `decoded` reconstruction ([0, 1]):
    into=True fades from the clip into the reconstruction (all of it at the last frame);
    into=False from the reconstruction into the clip (all clip at the last frame)."""
    m = len(clip)
    w = (np.arange(1, m + 1, dtype=np.float32) / m)[:, None, None, None]  # the weight of what is faded into
    c = clip.astype(np.float32) / 255.0
    return (1 - w) * c + w * decoded if into else (1 - w) * decoded + w * c


def fade_clip(clip: np.ndarray, chunks: Iterator[np.ndarray], m: int, fps: float) -> Iterator[np.ndarray]:
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
    yield np.concatenate([clip[: len(clip) - m], to_uint8(ramp_mix(clip[len(clip) - m :], head[:m], into=True), fps)])
    if len(head) > m:
        yield to_uint8(head[m:], fps)
    for c in rest:
        yield to_uint8(c, fps)


def to_uint8(frames: np.ndarray, fps: float) -> np.ndarray:
    return Video.from_float(frames, fps).frames


def latent_count(pipe, frames: int) -> int:
    v = pipe.bundle.video
    return (frames - v.frame_offset) // pipe.bundle.latent["temporal_compression"] + 1


def skip_frames(chunks: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The frame chunks without their first n frames."""
    for c in chunks:
        if n >= len(c):
            n -= len(c)
            continue
        yield c[n:]
        n = 0


def decode_head(pipe, lat: np.ndarray, n: int, fps: float) -> np.ndarray:
    """The first n uint8 frames of latents `lat`, decoded only as far as they need."""
    dec, got = StreamingDecoder(pipe), []
    for i in range(lat.shape[2]):
        f = dec.push(lat[:, :, i : i + 1])
        if f is not None:
            got.append(f[0])
            if sum(len(g) for g in got) >= n:
                break
    return to_uint8(np.concatenate(got)[:n], fps)
