"""The `kinema` command: generate, info, export, quantize, bench.

Bad input exits with code 2 and one line on stderr, before any graph is opened or file
written. The torch-side folders are imported inside the subcommands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from ..errors import KinemaError

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
    from .media import generate_windowed
    from ..media.conditioning import windowed
    from ..pipeline import Pipeline
    from ..safety.policy import check_prompt, load_policy
    from ..safety.provenance import signer_for_output
    from ..video.core import VideoWriter

    from ..sampling.accel import Accel

    policy = load_policy(args.policy)  # the prompt is checked before anything else is opened
    for note in policy.notes:
        print(f"kinema: note: {note}", file=sys.stderr)
    check_prompt(args.prompt, policy)
    sign = signer_for_output(args.output, args.sign_cert, args.sign_key, include_prompt=args.c2pa_include_prompt)
    seed = args.seed if args.seed >= 0 else secrets.randbelow(2**32)
    accel = Accel(teacache=args.teacache, cfg_cache=args.cfg_cache, leap=args.leap)  # checked before the bundle opens
    pipe = Pipeline.from_bundle(args.bundle, provider=args.provider, threads=args.threads, low_memory=args.low_memory)
    pipe.policy = policy
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
        loop=args.loop,
    )
    # Opening the writer checks the output path and format now, before any heavy work.
    writer = VideoWriter(args.output, st.fps, st.width, st.height, scale=1 if args.native_size else "auto")
    writer.sign, writer.visible_watermark = sign, args.visible_watermark  # C2PA for mp4; the invisible mark is always on
    t0 = time.perf_counter()
    if not args.quiet:
        print(f"kinema: {st.frames} frames {st.width}x{st.height} @ {st.fps:g} fps, {st.steps} steps, guidance {st.guidance:g}, seed {st.seed}, bundle {pipe.bundle.name}", file=sys.stderr)
    if windowed(pipe.bundle, st):  # past one window, or --loop: windows streamed to the file
        return generate_windowed(args, pipe, st, writer, accel)
    video = pipe.run(st, callback=_progress(st.steps, args.quiet), accel=accel)
    writer.metadata = dict(video.metadata)
    with writer as w:
        w.write(video.frames)
    if not args.quiet:
        print(f"kinema: wrote {writer.paths[0] if writer.paths else args.output} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from ..bundle.load import load_bundle

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
    if args.family == "wan":
        return _export_wan(args)
    if args.recipe is not None:
        raise KinemaError("--recipe is an option of `export wan`; quantize a tiny bundle with `kinema quantize`")
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


def _export_wan(args) -> int:
    if args.checkpoint is None:
        raise KinemaError("export wan needs --checkpoint DIR: a local Wan diffusers folder such as Wan2.1-T2V-1.3B-Diffusers")
    if args.random_init or args.no_encoder:
        raise KinemaError("--random-init and --no-encoder are options of `export tiny`")
    if args.recipe is not None:
        from kinema.quantize.recipes import preset

        preset(args.recipe)  # an unknown name fails before any weight is loaded
    try:
        from kinema.export.wan import export_wan
    except ImportError as e:
        raise KinemaError(f"export needs the torch side: pip install 'kinema[export]' ({e})") from None
    if args.recipe in (None, "fp32"):
        out = export_wan(args.checkpoint, Path(args.out), overwrite=args.overwrite)
    else:
        # export/ and quantize/ do not import each other: the command composes them, exporting
        # to a scratch folder beside the output and quantizing from it
        import shutil
        import tempfile

        from kinema.quantize.quantize_bundle import quantize_bundle
        from kinema.runtime.bundle.writer import check_output

        out = check_output(Path(args.out), overwrite=args.overwrite)  # before the weights load, as export_wan checks it
        parent = out.parent if out.parent.exists() else None
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.fp32.", dir=parent))
        try:
            src = export_wan(args.checkpoint, scratch / "bundle")
            out = quantize_bundle(src, out, args.recipe, overwrite=args.overwrite)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


def cmd_quantize(args) -> int:
    from kinema.quantize import commands

    from ..bundle.load import load_bundle

    if (args.recipe is None) == (args.target_psnr is None):
        raise KinemaError("give one of --recipe NAME|FILE.json and --target-psnr DB")
    if args.recipe is not None:
        commands.recipe_arg(args.recipe)  # an unknown name or a bad file fails before the bundle is read
    else:
        commands.check_target_psnr(args.target_psnr)
    src = load_bundle(args.bundle, verify_hashes=False)  # a missing or malformed bundle fails here, in one line
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401

        from kinema.quantize.quantize_bundle import quantize_bundle
    except ImportError as e:
        raise KinemaError(f"quantize needs the torch side: pip install 'kinema[export]' ({e})") from None
    if args.target_psnr is not None:
        return commands.run_search(args)
    recipe = commands.recipe_arg(args.recipe)
    out = quantize_bundle(args.bundle, args.output, recipe, overwrite=args.overwrite)
    q = load_bundle(out, verify_hashes=False)
    measured = q.manifest["quantization"]["measured"]
    print(f"{q.name}  (recipe {recipe.name}, from {src.name})")
    for name, c in q.components.items():
        size = c["bytes"] + sum(e["bytes"] for e in c.get("external_data", []))
        line = f"  {name:<15} {c.get('precision', '?'):<18} {size / 2**20:8.1f} MiB"
        if name in measured:
            sqnr = ", ".join(f"{o} {'identical' if v is None else f'{v:.1f} dB'}" for o, v in measured[name]["sqnr_db"].items())
            line += f"  x{measured[name]['size_ratio']:.2f} of fp32  SQNR {sqnr}"
        print(line)
    print(f"kinema: wrote bundle {out}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from kinema.quantize.commands import run_compare

    return run_compare(args)


def _check_json_out(path: str | None) -> Path | None:
    """The --json output path, checked before any work: its folder must exist and be writable."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise KinemaError(f"--json {path}: is a folder; give a file name such as {out / 'bench.json'}")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise KinemaError(f"--json {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KinemaError(f"--json {path}: folder {folder} is not writable")
    return out


def _write_json_atomic(out: Path, data: dict) -> None:
    """Write `data` to a temporary file beside `out`, then rename it over `out`: never a half-written file."""

    def plain(o):  # numpy scalars and arrays that slip into scorer output
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    text = json.dumps(data, indent=2, default=plain) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if str(out.parent) else ".")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _bench_summary(result: dict, settings: dict, timing: dict) -> str:
    lines = [
        f"ShapesBench  {settings['generator']}  ({settings['prompts']}, {len(settings['seeds'])} seed(s), "
        f"{settings['frames']} frames {settings['width']}x{settings['height']})",
        f"  videos       {result['n']}",
        f"  adherence    {_fmt(result['adherence'])}",
        "  accuracy     " + "  ".join(f"{a} {_fmt(v)}" for a, v in result["accuracy"].items()),
        "  motion       " + "  ".join(f"{m} {_fmt(v)}" for m, v in result["motion_by_kind"].items()),
        f"  flicker      {_fmt(result['flicker'])}",
        f"  smoothness   {_fmt(result['smoothness'])}",
        f"  s/video      {timing['generate_s_per_video']:.3f} generate + {timing['score_s_per_video']:.3f} score "
        f"({timing['wall_s']:.1f} s in all)",
    ]
    return "\n".join(lines)


def cmd_bench_shapes(args) -> int:
    # numpy-only modules on the torch side of the repository: imported here, never at module top
    from kinema.models import shapes_bench

    # ---- every setting is checked before any graph is opened or video generated
    prompts = Path(args.prompts) if args.prompts else Path(shapes_bench.__file__).parent / "data" / "shapes_prompts.jsonl"
    if not prompts.is_file():
        raise KinemaError(f"--prompts {prompts}: {'is a folder, not a JSONL file' if prompts.is_dir() else 'no such file'}")
    try:
        rows = shapes_bench.load_prompts(prompts)
    except UnicodeDecodeError as e:
        raise KinemaError(f"{prompts}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (ValueError, OSError) as e:
        raise KinemaError(str(e).replace("\n", " ")) from None
    if args.seeds < 1:
        raise KinemaError(f"--seeds {args.seeds} must be at least 1 (seeds 0..N-1 are run)")
    if args.limit is not None:
        if args.limit < 1:
            raise KinemaError(f"--limit {args.limit} must be at least 1")
        rows = rows[: args.limit]
    seeds = list(range(args.seeds))
    out = _check_json_out(args.json)

    settings: dict = {"prompts": str(prompts), "seeds": seeds, "limit": args.limit, "ground_truth": args.ground_truth}
    if args.ground_truth:
        given = [f for f, v in (("--bundle", args.bundle), ("--steps", args.steps), ("--guidance", args.guidance)) if v is not None]
        if given:
            raise KinemaError(f"--ground-truth scores ShapesWorld's own renders; {', '.join(given)} do(es) not apply")
        frames = 17 if args.frames is None else args.frames
        height = 64 if args.height is None else args.height
        width = 64 if args.width is None else args.width
        if not 2 <= frames <= 1000:
            raise KinemaError(f"--frames {frames} must be from 2 to 1000 (the scorer needs motion)")
        for name, side in (("--height", height), ("--width", width)):
            if not 16 <= side <= 1024:
                raise KinemaError(f"{name} {side} must be from 16 to 1024")
        settings.update(generator="ground truth (ShapesWorld renders)", frames=frames, height=height, width=width)
        current: list[dict] = []

        def tracked(rs):  # run_bench calls generate(prompt, seed) right after taking each row
            for r in rs:
                current[:] = [r]
                yield r

        bench_rows = tracked(rows)

        def make(prompt: str, seed: int):
            return shapes_bench.ground_truth_generate(current[0], seed, frames, height, width)

    else:
        from ..pipeline import Pipeline

        pipe = Pipeline.from_bundle(args.bundle, provider=args.provider, threads=args.threads)
        checked = {}
        for row in rows:
            for seed in seeds:
                checked[row["prompt"], seed] = pipe.check_inputs(
                    row["prompt"], frames=args.frames, height=args.height, width=args.width,
                    steps=args.steps, guidance=args.guidance, seed=seed,
                )
        st0 = next(iter(checked.values()))
        if st0.frames < 2:
            raise KinemaError(f"frames={st0.frames}: the scorer needs at least 2 frames to see motion")
        settings.update(
            generator=f"bundle {pipe.bundle.name}",
            bundle=str(pipe.bundle.path),
            bundle_sha256=pipe.bundle.digest,
            provider=args.provider,
            frames=st0.frames, height=st0.height, width=st0.width,
            steps=st0.steps, guidance=st0.guidance, shift=st0.shift, sampler=st0.sampler,
        )
        bench_rows = rows

        def make(prompt: str, seed: int):
            return pipe.run(checked[prompt, seed]).frames

    # ---- the work
    total = len(rows) * len(seeds)
    gen_s = 0.0
    done = 0
    t_start = time.perf_counter()
    last_end = t_start

    def generate(prompt: str, seed: int):
        nonlocal gen_s, done, last_end
        t0 = time.perf_counter()
        frames = make(prompt, seed)
        t1 = time.perf_counter()
        gen_s += t1 - t0
        done += 1
        last_end = t1
        if not args.quiet:
            elapsed = t1 - t_start
            eta = elapsed / done * (total - done)
            sys.stderr.write(f"\rbench shapes: {done}/{total} videos, {gen_s / done:.2f} s/video, ~{eta:.0f} s left ")
            sys.stderr.flush()
        return frames

    result = shapes_bench.run_bench(bench_rows, seeds, generate)
    wall = time.perf_counter() - t_start
    if not args.quiet:
        sys.stderr.write("\n")
        sys.stderr.flush()
    timing = {
        "videos": total,
        "wall_s": wall,
        "generate_s": gen_s,
        "generate_s_per_video": gen_s / total,
        "score_s_per_video": (wall - gen_s) / total,
    }
    from kinema import __version__

    if out is not None:
        _write_json_atomic(out, {"bench": "shapes", "kinema": __version__, "settings": settings, "timing": timing, **result})
    print(_bench_summary(result, settings, timing))
    if out is not None and not args.quiet:
        print(f"kinema: wrote {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kinema import __version__

    from .media import add_commands as add_media_commands

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
    g.add_argument("--sampler", default=None, help="euler, heun, dpmpp_2m or unipc (default: bundle's)")
    g.add_argument("--shift", type=float, default=None, help="flow-matching time shift (default: bundle's)")
    g.add_argument("--cfg-mode", default="batched", help="batched (faster) or sequential (half the peak memory)")
    g.add_argument("--provider", default="cpu", help="cpu, cuda, dml or coreml (default: cpu)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    g.add_argument("--low-memory", action="store_true", help="load one graph at a time, releasing each before the next (lower peak memory)")
    g.add_argument("--teacache", type=float, default=0.0, help="TeaCache: reuse the last prediction until the input's relative L1 change adds up to this (e.g. 0.2; default 0 = off)")
    g.add_argument("--cfg-cache", type=int, default=0, help="run both guidance branches only every N-th step, reusing their difference in between (e.g. 3; default 0 = off)")
    g.add_argument("--leap", type=float, default=0.0, help="linear proportional leap: once predictions agree to this cosine similarity after half the steps, jump to the end (e.g. 0.99; default 0 = off)")
    g.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    g.add_argument("--native-size", action="store_true", help="keep the model's size instead of scaling up for viewing")
    g.add_argument("--policy", default=None, metavar="FILE", help="prompt policy JSON replacing the built-in one (sexual content involving minors is always refused)")
    g.add_argument("--sign-cert", default=None, metavar="PEM", help="C2PA signer certificate chain (default: this machine's local kinema key, made on first use)")
    g.add_argument("--sign-key", default=None, metavar="PEM", help="private key of --sign-cert (unencrypted PEM)")
    g.add_argument("--c2pa-include-prompt", action="store_true", help="record the prompt in the mp4's C2PA manifest (left out by default)")
    g.add_argument("--visible-watermark", action="store_true", help='draw a small "AI" label in the corner of every frame')
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g.add_argument("--loop", action="store_true", help="close the clip into a seamless loop (4k+1 frames asked, 4k written)")
    g.set_defaults(func=cmd_generate)
    add_media_commands(sub, g)  # animate, extend, connect, edit (runtime/cli_media.py)

    vf = sub.add_parser("verify", help="check a video's C2PA content credentials and kinema's invisible watermark",
                        description="Print what a video's C2PA manifest says and whether it validates, and whether kinema's "
                        "invisible watermark is in its frames (found even when re-encoding stripped the manifest). "
                        "Exit 0 when checked, 1 when a manifest is present but invalid, 2 for a file that is not a video.")
    vf.add_argument("video", help="video file (mp4, webm, gif, ...)")
    vf.add_argument("--json", action="store_true", help="print the full report as JSON")
    vf.set_defaults(func=lambda a: __import__("kinema.runtime.safety.verify", fromlist=["cmd_verify"]).cmd_verify(a))

    i = sub.add_parser("info", help="show a bundle's components, sizes, precisions and defaults")
    i.add_argument("bundle", help="bundle folder")
    i.add_argument("--json", action="store_true", help="print the whole manifest")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="trace a model family to a bundle (needs kinema[export])")
    e.add_argument("family", choices=["tiny", "wan"], help="model family")
    e.add_argument("--out", required=True, help="bundle folder to write")
    e.add_argument("--checkpoint", type=Path, default=None, help="tiny: folder with tiny_dit.safetensors and tiny_vae.safetensors (default: the trained weights shipped with kinema); "
                   "wan: a local Wan diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)")
    e.add_argument("--recipe", default=None, help="wan: quantize the exported bundle with this recipe (int8, int4, fp16, fp32)")
    e.add_argument("--random-init", action="store_true", help="random weights instead of trained ones (for tests)")
    e.add_argument("--no-encoder", action="store_true", help="leave out the video encoder graph (no image/video prompting)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    e.set_defaults(func=cmd_export)

    q = sub.add_parser(
        "quantize",
        help="write a quantized copy of a bundle (needs kinema[export])",
        description="Apply a quantization recipe to each graph of a bundle with ONNX Runtime's tools, "
        "measure each changed graph's SQNR against the source, and write a new bundle.",
    )
    q.add_argument("bundle", help="source bundle folder (fp32)")
    q.add_argument("--recipe", default=None, help="int8 (dynamic, uint8 activations), int8-static (calibrated), int4 (weight-only), fp16, fp32 (a copy), or a recipe .json file")
    q.add_argument("--target-psnr", type=float, default=None, metavar="DB", help="search the smallest mixed recipe whose video PSNR vs this bundle stays >= DB")
    q.add_argument("-o", "--output", required=True, help="bundle folder to write")
    q.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --output")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser(
        "compare",
        help="compare bundles: accuracy per graph, per step and end to end; size, memory, speed; pictures",
        description="Run every bundle on the same prompts, seeds and initial noise and write a report (JSON, Markdown, "
        "PNG plots, contact sheet, side-by-side video, HTML) against the first bundle.",
    )
    c.add_argument("reference", help="reference bundle folder (usually fp32)")
    c.add_argument("others", nargs="+", metavar="OTHER", help="bundle folders to compare with it")
    c.add_argument("-o", "--output", required=True, help="report folder to write")
    c.add_argument("--prompts", default=None, help="JSONL rows with a \"prompt\" (ShapesBench rows are scored) or one prompt per line (default: 8 ShapesBench rows for tiny)")
    c.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    c.add_argument("--seeds", type=int, default=1, help="run seeds 0..N-1 per prompt (default: 1)")
    c.add_argument("--detail-prompts", type=int, default=2, help="prompts whose every step and graph input is compared (default: 2)")
    c.add_argument("--steps", type=int, default=None, help="sampling steps (default: bundle's)")
    c.add_argument("--frames", type=int, default=None, help="frames per video (default: bundle's)")
    c.add_argument("--width", type=int, default=None, help="width in pixels (default: bundle's)")
    c.add_argument("--height", type=int, default=None, help="height in pixels (default: bundle's)")
    c.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None, help="classifier-free guidance scale (default: bundle's)")
    c.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    c.add_argument("--no-cost", action="store_true", help="skip the per-bundle load/memory/speed runs in fresh processes")
    c.add_argument("--overwrite", action="store_true", help="replace an earlier report at --output")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_compare)

    b = sub.add_parser("bench", help="score a bundle on a benchmark", description="Score a bundle (or the ground truth) on a benchmark.")
    bsub = b.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True, parser_class=_Parser)
    bs = bsub.add_parser(
        "shapes",
        help="ShapesBench: does the video show the prompt's shapes, colours and motions",
        description="Generate a video per prompt row and seed, and score colour, shape, size, motion, count and background "
        "with classical image analysis, plus flicker and smoothness. Needs numpy only.",
    )
    src = bs.add_mutually_exclusive_group()
    src.add_argument("--bundle", default=None, help="bundle folder (default: the built-in kinema-tiny)")
    src.add_argument("--ground-truth", action="store_true", help="score ShapesWorld's own renders instead of a bundle (checks the scorer)")
    bs.add_argument("--prompts", default=None, help="JSONL prompt rows (default: the shipped shapes_prompts.jsonl)")
    bs.add_argument("--seeds", type=int, default=2, help="run seeds 0..N-1 per prompt (default: 2)")
    bs.add_argument("--limit", type=int, default=None, help="only the first N prompt rows")
    bs.add_argument("--json", default=None, metavar="OUT", help="write the full result (per-video rows included) to this file")
    bs.add_argument("--steps", type=int, default=None, help="sampling steps (default: bundle's)")
    bs.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None, help="classifier-free guidance scale (default: bundle's)")
    bs.add_argument("--frames", type=int, default=None, help="frames per video (default: bundle's; 17 for --ground-truth)")
    bs.add_argument("--width", type=int, default=None, help="width in pixels (default: bundle's; 64 for --ground-truth)")
    bs.add_argument("--height", type=int, default=None, help="height in pixels (default: bundle's; 64 for --ground-truth)")
    bs.add_argument("--provider", default="cpu", help="cpu, cuda, dml or coreml (default: cpu)")
    bs.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: all cores)")
    bs.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    bs.set_defaults(func=cmd_bench_shapes)
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
