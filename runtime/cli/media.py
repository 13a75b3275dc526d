"""`kinema animate`, `extend`, `connect`, `edit`, and long or looping `generate`: image and video prompts.

Every value is checked before a graph is opened; input files are read (and fitted, with one
line saying how) before sampling starts; output is streamed to a temporary file and renamed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time

from ..media import conditioning
from ..video import inputs


def _progress(quiet: bool):
    """Step progress on stderr, with the window number when there is more than one."""
    start = time.perf_counter()
    done = 0

    def callback(p):
        nonlocal done
        done += 1
        if quiet:
            return
        total, step = p["total"], p["step"] + 1
        win = f"window {p['window'] + 1}/{p['windows']} " if p.get("windows", 1) > 1 else ""
        bar = int(30 * step / total)
        sys.stderr.write(f"\r{win}[{'#' * bar}{'.' * (30 - bar)}] {step}/{total} steps, {(time.perf_counter() - start) / done:.2f} s/step ")
        if step == total and p.get("window", 0) + 1 >= p.get("windows", 1):
            sys.stderr.write("\n")
        sys.stderr.flush()

    return callback


def _note(args, note: str | None) -> None:
    if note and not args.quiet:
        print(f"kinema: {note}", file=sys.stderr)


def _open(args, *, frames=None, seconds=None, loop=False):
    """(pipeline, settings, writer): everything checked, nothing heavy run, nothing written yet."""
    from ..pipeline import Pipeline
    from ..video.core import VideoWriter

    seed = args.seed if args.seed >= 0 else secrets.randbelow(2**32)
    pipe = Pipeline.from_bundle(args.bundle, provider=args.provider, threads=args.threads)
    st = pipe.check_inputs(
        args.prompt, negative_prompt=args.negative_prompt, frames=frames, seconds=seconds, height=args.height,
        width=args.width, fps=args.fps, steps=args.steps, guidance=args.guidance, shift=args.shift, seed=seed,
        sampler=args.sampler, cfg_mode=args.cfg_mode, loop=loop,
    )
    writer = VideoWriter(args.output, st.fps, st.width, st.height, scale=1 if args.native_size else "auto")
    return pipe, st, writer


def _write(args, writer, chunks, meta: dict, t0: float) -> int:
    """Stream uint8 frame chunks to the writer; the file appears only when the last chunk is in."""
    writer.metadata = {k: str(v) for k, v in meta.items()}
    with writer as w:
        for chunk in chunks:
            w.write(chunk)
    if not args.quiet:
        print(f"kinema: wrote {writer.paths[0] if writer.paths else args.output} ({writer.frames_written} frames) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _start(args, pipe, st, what: str) -> float:
    if not args.quiet:
        print(f"kinema: {what}, {st.width}x{st.height} @ {st.fps:g} fps, {st.steps} steps, guidance {st.guidance:g}, seed {st.seed}, bundle {pipe.bundle.name}", file=sys.stderr)
    return time.perf_counter()


def generate_windowed(args, pipe, st, writer, accel=None) -> int:
    """`kinema generate` past one window or with --loop: windows streamed to the file as they are decoded."""
    t0 = time.perf_counter()
    chunks = conditioning.long_stream(pipe, st, callback=_progress(args.quiet), accel=accel)
    meta = conditioning.media_metadata(pipe, st, "loop" if st.loop else "generate")
    if accel is not None and accel.active:
        meta["accel"] = accel.metadata()
    return _write(args, writer, chunks, meta, t0)


def cmd_animate(args) -> int:
    inputs.check_fit(args.fit)
    pipe, st, writer = _open(args, frames=args.frames, seconds=args.seconds)
    conditioning.require(pipe.bundle, "animate an image", ("first",), encoder=True)
    img = conditioning.load_image(args.image, st, args.fit)
    _note(args, img.note)
    t0 = _start(args, pipe, st, f"animating {args.image} into {st.frames} frames")
    chunks = conditioning.animate_stream(pipe, st, img.frames, callback=_progress(args.quiet))
    return _write(args, writer, chunks, conditioning.media_metadata(pipe, st, "animate"), t0)


def cmd_extend(args) -> int:
    inputs.check_fit(args.fit)
    pipe, st, writer = _open(args)
    new = conditioning.check_seconds(args.seconds, st.fps)
    direction = "backward" if args.backward else "forward"
    conditioning.require(pipe.bundle, f"extend a video {direction}", ("last",) if args.backward else ("leading",), encoder=True)
    clip = conditioning.load_clip(args.video, st, args.fit)
    _note(args, clip.note)
    t0 = _start(args, pipe, st, f"extending {args.video} ({len(clip.frames)} frames) {direction} by {args.seconds:g} s")
    meta = conditioning.media_metadata(pipe, st, "extend", seconds=args.seconds, backward=args.backward)
    if args.backward:
        chunks = conditioning.extend_backward_stream(pipe, st, clip.frames, new, callback=_progress(args.quiet))
    else:
        chunks = conditioning.extend_stream(pipe, st, clip.frames, new, callback=_progress(args.quiet))
    return _write(args, writer, chunks, meta, t0)


def cmd_connect(args) -> int:
    inputs.check_fit(args.fit)
    pipe, st, writer = _open(args)
    new = None if args.seconds is None else conditioning.check_seconds(args.seconds, st.fps)
    conditioning.require(pipe.bundle, "connect two videos", ("leading", "last"), encoder=True)
    a = conditioning.load_clip(args.a, st, args.fit)
    _note(args, a.note)
    b = conditioning.load_clip(args.b, st, args.fit)
    _note(args, b.note)
    t0 = _start(args, pipe, st, f"connecting {args.a} ({len(a.frames)} frames) to {args.b} ({len(b.frames)} frames)")
    chunks = conditioning.connect_stream(pipe, st, a.frames, b.frames, new, callback=_progress(args.quiet))
    return _write(args, writer, chunks, conditioning.media_metadata(pipe, st, "connect"), t0)


def cmd_edit(args) -> int:
    from dataclasses import replace

    strength = conditioning.check_strength(args.strength)
    inputs.check_fit(args.fit)
    pipe, st, writer = _open(args)
    conditioning.require(pipe.bundle, "edit a video", (), encoder=True)
    clip = conditioning.load_clip(args.video, st, args.fit)
    n = conditioning.edit_length(pipe.bundle, len(clip.frames), args.video)
    _note(args, clip.note)
    if n < len(clip.frames):
        _note(args, f"editing the first {n} of {len(clip.frames)} frames (the decoder needs 4k+1)")
    st = replace(st, frames=n)
    t0 = _start(args, pipe, st, f"editing {args.video} ({n} frames) at strength {strength:g}")
    chunks = conditioning.edit_stream(pipe, st, clip.frames[:n], strength, callback=_progress(args.quiet))
    return _write(args, writer, chunks, conditioning.media_metadata(pipe, st, "edit", strength=strength), t0)


SHARED_FLAGS = ("output", "negative_prompt", "fps", "width", "height", "steps", "guidance", "seed", "sampler", "shift",
                "cfg_mode", "provider", "threads", "bundle", "native_size", "quiet")


def _common(p: argparse.ArgumentParser, generate: argparse.ArgumentParser) -> None:
    """--prompt and --fit, and the generation flags of `kinema generate` (the same argparse actions, as `parents=` shares them)."""
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("--fit", default="crop", help="fit inputs to the model's size: crop (scale, cut the centre; default) or pad (scale, pad with black)")
    for action in generate._actions:
        if action.dest in SHARED_FLAGS:
            p._add_action(action)


def add_commands(sub, generate: argparse.ArgumentParser) -> None:
    """Register animate, extend, connect and edit on the `kinema` subparsers, sharing `generate`'s flags."""
    a = sub.add_parser("animate", help="turn an image into a video that starts from it",
                       description="Make a video whose first frame is the image (through the VAE), following the prompt.")
    a.add_argument("image", help="image file (PNG, JPEG, WebP, ...; 8-bit)")
    length = a.add_mutually_exclusive_group()
    length.add_argument("--frames", type=int, default=None, help="number of frames, 4k+1 (default: bundle's)")
    length.add_argument("--seconds", type=float, default=None, help="length in seconds; past one window, made window by window")
    _common(a, generate)
    a.set_defaults(func=cmd_animate)

    e = sub.add_parser("extend", help="continue a video forward, or lead into it (--backward)",
                       description="Output the video with SECONDS of new frames after it (or before it, --backward).")
    e.add_argument("video", help="video file (anything FFmpeg reads) or PNG frames")
    e.add_argument("--seconds", type=float, required=True, help=f"how much to add, up to {conditioning.MAX_SECONDS:g} s")
    e.add_argument("--backward", action="store_true", help="add the new frames before the video")
    _common(e, generate)
    e.set_defaults(func=cmd_extend)

    c = sub.add_parser("connect", help="join two videos with a generated transition",
                       description="Output video A, a transition from A's end into B's start, then video B.")
    c.add_argument("a", help="first video")
    c.add_argument("b", help="second video")
    c.add_argument("--seconds", type=float, default=None, help="transition length (default: one native window's new frames)")
    _common(c, generate)
    c.set_defaults(func=cmd_connect)

    d = sub.add_parser("edit", help="redo a video under a new prompt (SDEdit)",
                       description="Noise the video's latents to sigma = STRENGTH and sample back under the prompt.")
    d.add_argument("video", help="video file (anything FFmpeg reads) or PNG frames; one window long at most")
    d.add_argument("--strength", type=float, required=True, help="in (0, 1]: how much to redo (1 = ignore the video)")
    _common(d, generate)
    d.set_defaults(func=cmd_edit)


__all__ = ["add_commands", "generate_windowed"]
