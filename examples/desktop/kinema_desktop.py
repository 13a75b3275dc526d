"""kinema desktop: a small Qt app on kinema.runtime, and its headless mode.

    python examples/desktop/kinema_desktop.py [--bundle DIR]
    python examples/desktop/kinema_desktop.py --generate "a red ball bouncing" -o ball.mp4 [--bundle DIR]

The window (desktop_app.py) needs PySide6 and a display (or QT_QPA_PLATFORM=offscreen).
`--generate` runs without either: it is how the frozen app is checked on a build machine.
Without --bundle the built-in bundle is used (inside the frozen folder, for the frozen app).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="kinema-desktop", description="Text to video on this computer, offline.")
    ap.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the built-in one)")
    ap.add_argument("--generate", metavar="PROMPT", help="generate one clip without a window, then exit")
    ap.add_argument("-o", "--output", type=Path, help="with --generate: the .mp4 or .gif to write")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--guidance", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--screenshot", type=Path, help="with the window: generate --prompt's clip, save a PNG of the window, exit")
    ap.add_argument("--prompt", default="a red ball bouncing on a black background", help="the prompt the window starts with")
    args = ap.parse_args(argv)
    if args.generate is not None and args.output is None:
        ap.error("--generate needs -o/--output (an .mp4 or .gif path)")
    return args


def settings_of(args: argparse.Namespace) -> dict:
    """The generation settings given on the command line (unset ones come from the bundle)."""
    keys = ("frames", "steps", "guidance", "seed", "width", "height")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def headless(args: argparse.Namespace) -> int:
    """Generate one clip and write it; progress and errors on the terminal. Exit 2 for bad input."""
    from kinema.runtime import KinemaError, Pipeline

    try:
        pipe = Pipeline.from_bundle(args.bundle)
        settings = settings_of(args)
        pipe.check_inputs(args.generate, **settings)  # bad values fail before any graph opens
        video = pipe.generate(args.generate, callback=lambda p: print(f"step {p['step'] + 1}/{p['total']}", flush=True), **settings)
        path = video.save(args.output)
    except KinemaError as e:
        print(f"kinema-desktop: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({video.num_frames} frames, {video.width}x{video.height})")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.generate is not None:
        return headless(args)
    from desktop_app import run_app  # PySide6 only when there is a window

    return run_app(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
