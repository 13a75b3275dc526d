"""Each media task as a stream of uint8 frame chunks: long and looping clips, animate, extend, connect, edit."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..engine.decode import StreamingDecoder
from ..errors import InputError
from .rules import END_KNOWN, LOOP_REDECODE, OVERLAP, require
from .windows import Windows, fade_clip, decode_head, latent_count, ramp_mix, skip_frames, to_uint8, encode, encode_head, encode_tail, forward, plan


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
    total = latent_count(pipe, st.frames)
    win = Windows(pipe, st, callback=callback, cancel=cancel, accel=accel)
    dec = StreamingDecoder(pipe)
    bridge = win.native - OVERLAP - END_KNOWN if st.loop else 0  # new latents of the closing window
    main = total - bridge
    win.total = len(plan(main, win.native, 0)) + (1 if st.loop else 0)
    chunks = (to_uint8(c, st.fps) for c in forward(win, dec, main, seam=seam))
    yield from skip_frames(chunks, win.tm * LOOP_REDECODE + 1) if st.loop else chunks
    if st.loop:
        close = win.sample(OVERLAP + bridge + END_KNOWN, start=win.last[:, :, -OVERLAP:], end=win.first[:, :, 1:2])
        yield to_uint8(dec.push(close[:, :, OVERLAP : OVERLAP + bridge])[0], st.fps)
        yield to_uint8(dec.push(win.first[:, :, 1 : 1 + LOOP_REDECODE])[0], st.fps)


def animate_stream(pipe, st, image: np.ndarray, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 frame chunks of a clip whose latent frame 0 is the image's; frame 0 is its VAE round trip."""
    total = latent_count(pipe, st.frames)
    require(pipe.bundle, "animate an image", ("first",) + (("leading",) if total > 1 else ()), encoder=True)
    known = encode(pipe, image[:1])  # (1, C, 1, h, w)
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    win.total = len(plan(total - 1, win.native, 1))
    for chunk in forward(win, StreamingDecoder(pipe), total - 1, known=known, emit_known=True):
        yield to_uint8(chunk, st.fps)


def extend_stream(pipe, st, clip: np.ndarray, new_frames: int, *, callback=None, cancel=None) -> Iterator[np.ndarray]:
    """uint8 chunks: the clip, then about `new_frames` frames continuing it (whole latent frames: multiples of 4)."""
    require(pipe.bundle, "extend a video forward", ("leading",), encoder=True)
    new = max(1, round(new_frames / pipe.bundle.latent["temporal_compression"]))
    known = encode_tail(pipe, clip)
    win = Windows(pipe, st, callback=callback, cancel=cancel)
    win.total = len(plan(new, win.native, known.shape[2]))
    m = 1 + win.tm * (known.shape[2] - 1)  # the clip frames the known latents stand for
    yield from fade_clip(clip, forward(win, StreamingDecoder(pipe), new, known=known, emit_known=True), m, st.fps)


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
        head = decode_head(pipe, lat, tm * END_KNOWN, st.fps)
    rec = None  # the previous window's frames of its known end
    for lat in [*reversed(parts), None]:
        if lat is None:
            frames, next_rec = clip, None
        else:
            decoded = StreamingDecoder(pipe).push(lat)[0]
            n = decoded.shape[0] - tm * END_KNOWN
            frames, next_rec = to_uint8(decoded[:n], st.fps), decoded[n:]
        if rec is not None:
            m = len(rec)
            frames = np.concatenate([to_uint8(ramp_mix(frames[:m], rec, into=False), st.fps), frames[m:]])
        yield frames
        rec = next_rec


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
            yield to_uint8(ramp_mix(a[len(a) - ma :], held[:ma], into=True), st.fps)
            held, faded = held[ma:], True
        if faded and len(held) > mb:
            yield to_uint8(held[: len(held) - mb], st.fps)
            held = held[len(held) - mb :]
    yield to_uint8(ramp_mix(b[:mb], held, into=False), st.fps)
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
            yield to_uint8(frames[0], st.fps)
