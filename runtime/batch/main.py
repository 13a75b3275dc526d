"""The `kinema batch` command: check every line, skip what is done, run the rest on a pool or on Ray.

Nothing starts before every line is checked against the bundle (settings, task, input
files): a bad line, an unknown bundle, a missing input file or an unreachable Ray address
is one line and exit code 2, and no worker is started and no output folder made.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from .. import run
from ..engine.memory import available_bytes
from ..errors import InputError, KinemaError
from . import lines
from .results import Results


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan(pipe, items, workers: int | None, threads: int | None) -> tuple[int, int, str]:
    """(workers, threads per worker, why): from the cores and the memory one generation needs, unless given."""
    n_cores = cores()
    if workers is None:
        peak = max(pipe.estimate_memory(*_size(pipe, i.request))["peak"] for i in items)
        avail = available_bytes()
        fit = n_cores if avail is None else max(1, int(avail * 0.8 // peak))
        workers = max(1, min(n_cores, len(items), fit))
        why = f"{n_cores} cores, {peak / 2**20:.0f} MiB per generation" + (f", {avail / 2**30:.1f} GiB available" if avail else "")
    else:
        why = "--workers"
    if threads is None:
        threads = max(1, n_cores // workers)
    return workers, threads, why


def _size(pipe, request):
    st = run.prepare(pipe, replace(request, output=None)).settings
    return st.frames, st.height, st.width


def check(pipe, items, keep_going: bool) -> tuple[list, list[str]]:
    """The items whose request the run path accepts (inputs read and fitted), and the errors of the others."""
    good, errors = [], []
    for item in items:
        try:
            run.prepare(pipe, replace(item.request, output=None))
            good.append(item)
        except KinemaError as e:
            if not keep_going:
                raise InputError(f"line {item.line} (seed {item.seed}): {e}") from None
            errors.append(f"line {item.line} (seed {item.seed}): {e}")
    return good, errors


class Bar:
    """One progress line on stderr: videos done of all, failures, seconds per video."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.done, self.failed, self.t0 = total, quiet, 0, 0, time.perf_counter()

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        if self.quiet:
            return
        bar = int(30 * self.done / max(1, self.total))
        rate = (time.perf_counter() - self.t0) / self.done
        sys.stderr.write(f"\r[{'#' * bar}{'.' * (30 - bar)}] {self.done}/{self.total} videos, {self.failed} failed, {rate:.2f} s/video ")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _say(args, text: str) -> None:
    if not args.quiet:
        print(f"kinema batch: {text}", file=sys.stderr)


def _flags(args) -> None:
    for name in ("workers", "threads", "seeds"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name} {v} must be >= 1")
    if args.retries < 0:
        raise InputError(f"--retries {args.retries} must be >= 0")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")


def cmd_batch(args) -> int:
    from ..pipeline import Pipeline

    _flags(args)
    out = args.out.resolve()
    items, bad = lines.parse(args.file, out, seeds=args.seeds, keep_going=args.keep_going)
    if args.policy:
        items = [replace(i, request=replace(i.request, policy=str(Path(args.policy).resolve()))) for i in items]
    if args.ray_bytes and not args.ray:
        raise InputError("--ray-bytes applies with --ray only")
    if args.ray:
        from .ray_runner import connect  # checks the address before any bundle or worker

        connect(args.ray)
    pipe = Pipeline.from_bundle(args.bundle, provider=args.provider)  # graphs open lazily: only the manifest is read
    items, more_bad = check(pipe, items, args.keep_going)
    for line in bad + more_bad:
        print(f"kinema batch: skipped: {line}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for part in out.glob(".*.part"):  # a killed earlier run's unfinished files
        part.unlink(missing_ok=True) if part.is_file() else None
    results = Results(out)
    todo = [i for i in items if not results.done(i.key, i.request.output)]
    if len(todo) < len(items):
        _say(args, f"{len(items) - len(todo)} of {len(items)} videos were made by an earlier run; skipping them")
    failed = 0
    if todo:
        workers, threads, why = plan(pipe, todo, args.workers, args.threads)
        _say(args, f"{len(todo)} videos on {'Ray ' + args.ray if args.ray else 'this machine'}: {workers} workers x {threads} threads ({why})")
        try:
            failed = _run(args, todo, results, workers, threads)
        except KeyboardInterrupt:
            made = sum(1 for i in items if i.key in results.rows and results.rows[i.key].get("error") is None)
            print(f"\nkinema batch: interrupted; {made} of {len(items)} videos made; run the same command again to finish", file=sys.stderr)
            return 130
    results.finish([i.key for i in items])
    _say(args, f"done: {len(items)} videos, {failed} failed; results in {results.path}")
    return 1 if failed or bad or more_bad else 0


def _run(args, todo, results: Results, workers: int, threads: int) -> int:
    by_key = {i.key: i for i in todo}
    tasks = [{"key": i.key, "request": i.request.to_dict(), "mode": "file"} for i in todo]
    bar = Bar(len(todo), args.quiet)
    failed = 0

    def on_result(r: dict) -> None:
        nonlocal failed
        item = by_key[r["key"]]
        row = {"key": item.key, "line": item.line, "seed": item.seed, "request": item.request.to_dict(),
               "settings": r.get("settings"), "output": r.get("output"), "sha256": r.get("sha256"),
               "seconds": r.get("seconds"), "worker": r.get("worker"), "error": r.get("error")}
        if "data" in r:  # a Ray worker without the shared folder sent the file's bytes
            from .ray_runner import write_bytes

            write_bytes(item.request.output, r["data"])
        results.add(row)
        failed += row["error"] is not None
        bar.update(row["error"] is not None)

    from .dispatch import map_tasks

    if args.ray_bytes:
        tasks = [dict(t, mode="bytes") for t in tasks]
    try:
        map_tasks(args.bundle, tasks, on_result, workers=workers, threads=threads, provider=args.provider,
                  ray=args.ray, retries=args.retries, ship=args.ray_bytes)
    except BaseException:  # an interrupt: the rows so far are in results.jsonl already
        for part in Path(args.out).glob(".*.part"):
            part.unlink(missing_ok=True)
        raise
    return failed
