"""The `kinema` command: generate, info, export, bench.

Bad input exits with code 2 and one line on stderr, before any graph is opened or file
written. The torch-side folders are imported inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

from .errors import KinemaError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _progress(total: int, quiet: bool):
    start = time.perf_counter()

    def callback(payload):
        if quiet:
            return
        done = payload["step"] + 1
        width = 30
        filled = int(width * done / total)
        rate = (time.perf_counter() - start) / done
        sys.stderr.write(f"\rsampling [{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps, {rate:.2f} s/step")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return callback


def cmd_generate(args) -> int:
    from .pipeline import Pipeline
    from .video import VideoWriter

    seed = args.seed if args.seed >= 0 else secrets.randbelow(2**32)
    pipe = Pipeline.from_bundle(args.bundle, provider=args.provider, threads=args.threads)
    st = pipe.check_inputs(
        args.prompt,
        negative_prompt=args.negative_prompt,
        frames=args.frames,
        seconds=args.seconds,
        height=args.height,
        width=args.width,
        fps=args.fps,
        steps=args.steps,
        guidance=args.guidance,
        shift=args.shift,
        seed=seed,
        sampler=args.sampler,
        cfg_mode=args.cfg_mode,
    )
    # Opening the writer checks the output path and format now, before any heavy work.
    writer = VideoWriter(args.output, st.fps, st.width, st.height, scale=1 if args.native_size else "auto")
    t0 = time.perf_counter()
    if not args.quiet:
        print(f"kinema: {st.frames} frames {st.width}x{st.height} @ {st.fps:g} fps, {st.steps} steps, guidance {st.guidance:g}, seed {st.seed}, bundle {pipe.bundle.name}", file=sys.stderr)
    video = pipe.run(st, callback=_progress(st.steps, args.quiet))
    writer.metadata = dict(video.metadata)
    with writer as w:
        w.write(video.frames)
    if not args.quiet:
        print(f"kinema: wrote {writer.paths[0] if writer.paths else args.output} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from .bundle import load_bundle

    b = load_bundle(args.bundle)
    m = b.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    v, s, lat = b.video, b.sampler, b.latent
    print(f"{b.name}  (family {b.family}, format {m['format']} v{m['format_version']}, {m.get('created_by', '?')})")
    print(f"  folder     {b.path}")
    print("  components")
    total = 0
    for name, c in b.components.items():
        size = c["bytes"] + sum(e["bytes"] for e in c.get("external_data", []))
        total += size
        print(f"    {name:<15} {c['file']:<22} {size / 2**20:8.1f} MiB  {c.get('precision', '?')}")
    print(f"    {'total':<15} {'':<22} {total / 2**20:8.1f} MiB")
    print(f"  latent     {lat['channels']} channels, {lat['temporal_compression']}x time, {lat['spatial_compression']}x space")
    print(f"  video      {v.frames} frames ({v.frame_multiple}k+{v.frame_offset}, max {v.max_frames}) {v.width}x{v.height} "
          f"(multiple of {v.size_multiple}, {v.min_side}-{v.max_side}) @ {v.fps:g} fps")
    print(f"  sampler    {s['sampler']}, {s['steps']} steps, guidance {s['guidance']:g}, shift {s['shift']:g}, {s['prediction']} prediction")
    q = m.get("quantization")
    if q:
        print(f"  quantized  {json.dumps(q)}")
    return 0


def cmd_export(args) -> int:
    try:
        from kinema.export.tiny import export_tiny
    except ImportError as e:
        raise KinemaError(f"export needs the torch side: pip install 'kinema[export]' ({e})") from None
    out = export_tiny(
        Path(args.out),
        checkpoint_dir=args.checkpoint,
        random_init=args.random_init,
        overwrite=args.overwrite,
        with_encoder=not args.no_encoder,
    )
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kinema import __version__

    p = _Parser(prog="kinema", description="Offline text-to-video with ONNX Runtime.")
    p.add_argument("--version", action="version", version=f"kinema {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="turn a prompt into a video", description="Turn a prompt into a video file (mp4, webm, gif, or PNG frames).")
    g.add_argument("prompt", help="what the video shows")
    g.add_argument("-o", "--output", default="output.mp4", help="output file: .mp4, .webm, .gif, .png (frames), or a folder/ (default: output.mp4)")
    g.add_argument("--negative-prompt", default=None, help="what to steer away from (default: the bundle's, usually empty)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--frames", type=int, default=None, help="number of frames; the tiny bundle needs 4k+1 (default: bundle's)")
    length.add_argument("--seconds", type=float, default=None, help="length in seconds, rounded to a valid frame count")
    g.add_argument("--fps", type=float, default=None, help="frames per second of the file (default: bundle's)")
    g.add_argument("--width", type=int, default=None, help="width in pixels (default: bundle's)")
    g.add_argument("--height", type=int, default=None, help="height in pixels (default: bundle's)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: bundle's)")
    g.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None, help="classifier-free guidance scale; 1 turns it off (default: bundle's)")
    g.add_argument("--seed", type=int, default=42, help="noise seed; negative for a random one (default: 42)")
    g.add_argument("--sampler", default=None, help="euler, heun or dpmpp_2m (default: bundle's)")
    g.add_argument("--shift", type=float, default=None, help="flow-matching time shift (default: bundle's)")
    g.add_argument("--cfg-mode", default="batched", help="batched (faster) or sequential (half the peak memory)")
    g.add_argument("--provider", default="cpu", help="cpu, cuda, dml or coreml (default: cpu)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    g.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    g.add_argument("--native-size", action="store_true", help="keep the model's size instead of scaling up for viewing")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="show a bundle's components, sizes, precisions and defaults")
    i.add_argument("bundle", help="bundle folder")
    i.add_argument("--json", action="store_true", help="print the whole manifest")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="trace a model family to a bundle (needs kinema[export])")
    e.add_argument("family", choices=["tiny"], help="model family")
    e.add_argument("--out", required=True, help="bundle folder to write")
    e.add_argument("--checkpoint", type=Path, default=None, help="folder with tiny_dit.safetensors and tiny_vae.safetensors (default: the trained weights shipped with kinema)")
    e.add_argument("--random-init", action="store_true", help="random weights instead of trained ones (for tests)")
    e.add_argument("--no-encoder", action="store_true", help="leave out the video encoder graph (no image/video prompting)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KinemaError as e:
        print(f"kinema {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kinema: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
