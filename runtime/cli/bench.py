"""`kinema bench shapes`: ShapesBench on a bundle or on the ground truth, with an atomic JSON result."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ..errors import KinemaError


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
    _check_fan_out(args)
    out = _check_json_out(args.json)

    settings: dict = {"prompts": str(prompts), "seeds": seeds, "limit": args.limit, "ground_truth": args.ground_truth}
    if args.ground_truth:
        given = [f for f, v in (("--bundle", args.bundle), ("--steps", args.steps), ("--guidance", args.guidance), ("--workers", args.workers), ("--ray", args.ray)) if v is not None]
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
        made = _fan_out(args, checked, settings) if args.workers or args.ray else None

        def make(prompt: str, seed: int):
            return made[prompt, seed] if made is not None else pipe.run(checked[prompt, seed]).frames

    return _run(args, rows, seeds, bench_rows, make, settings, out)


def _check_fan_out(args) -> None:
    if args.workers is not None and args.workers < 1:
        raise KinemaError(f"--workers {args.workers} must be at least 1")
    if args.ray:
        from ..batch.ray_runner import connect  # an unreachable address is one line, before any work

        connect(args.ray)


def _fan_out(args, checked: dict, settings: dict) -> dict:
    """Every (prompt, seed) video made on the batch workers (a process pool, or Ray), as frames; `settings` records how."""
    from ..batch.dispatch import map_tasks
    from ..batch.main import cores
    from ..request import Request

    keys = list(checked)
    tasks = []
    for i, (prompt, seed) in enumerate(keys):
        st = checked[prompt, seed]
        r = Request(prompt=prompt, seed=seed, frames=st.frames, height=st.height, width=st.width, steps=st.steps, guidance=st.guidance)
        tasks.append({"key": str(i), "request": r.to_dict(), "mode": "frames"})
    workers = args.workers or cores()
    threads = args.threads or max(1, cores() // workers)
    made = {}

    def on_result(r: dict) -> None:
        if r.get("error"):
            raise KinemaError(f"bench shapes: a worker failed: {r['error']}")
        made[keys[int(r["key"])]] = r["frames"]
        if not args.quiet:
            sys.stderr.write(f"\rbench shapes: {len(made)}/{len(keys)} videos made on {workers} workers ")
            sys.stderr.flush()

    t0 = time.perf_counter()
    map_tasks(args.bundle, tasks, on_result, workers=workers, threads=threads, provider=args.provider, ray=args.ray)
    if not args.quiet:
        sys.stderr.write("\n")
    settings["fan_out"] = {"workers": workers, "threads": threads, "ray": args.ray, "wall_s": time.perf_counter() - t0}
    return made


def _run(args, rows, seeds, bench_rows, make, settings: dict, out) -> int:
    """Generate and score every row and seed, print the summary, write the JSON."""
    from kinema.models import shapes_bench

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
    if settings.get("fan_out"):  # made on workers before scoring: their wall time is the generation time
        gen_s = settings["fan_out"]["wall_s"]
        t_start -= gen_s
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
