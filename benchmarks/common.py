"""Helpers the benchmark scripts share: the machine, peak RSS, timing, and result files.

A script in this folder imports it as `common` (running `python benchmarks/X.py` puts this
folder first on sys.path). It imports only the standard library, so it adds next to
nothing to a process whose memory is measured.

- `cpu_name()`, `cpu_amx()`, `machine(**extra)`, `describe_machine(m)`: what a result was
  measured on, as a dict for the JSON and one line for the Markdown;
- `peak_rss_mib()`, `reset_peak_rss()`: VmHWM from /proc/self/status, and resetting it
  through /proc/self/clear_refs so that a stage's peak can be read on its own;
  `source_of(...)` gives their code to a `python -c` child;
- `Stopwatch`, `timed`, `interleaved`, `utc_now()`: timing;
- `result_dir(name, out)`, `write_json(path, data)`, `write_result(name, data, markdown,
  out, stem)`: every script's results go to benchmarks/results/<script name>/, written
  atomically (a temporary file, then os.replace), so a killed run never leaves half a file.

Peak RSS note: `resource.getrusage(RUSAGE_SELF).ru_maxrss` in a child started with
subprocess counts the peak of the process it was started from (Linux carries the peak
over exec), while VmHWM is the child's own.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
AMX_FLAGS = ("amx_bf16", "amx_int8")


# ------------------------------------------------------------------ the machine


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo; platform.processor() where there is none."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The widest vector tier the CPU reports, which picks ONNX Runtime's kernels: amx, avx512vnni, avx512, avx2 or other."""
    flags = set(_cpuinfo().get("flags", "").split())
    for flag, tier in (("amx_int8", "amx"), ("avx512_vnni", "avx512vnni"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return tier
    return "other"


def cpu_amx() -> list[str]:
    """The AMX flags the CPU reports (amx_bf16, amx_int8), sorted; [] when it has none."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [f for f in AMX_FLAGS if f in flags]


def _version(module: str, *dists: str) -> str | None:
    """A package's version without importing it: the loaded module's if it is imported, else its metadata's."""
    loaded = sys.modules.get(module)
    if loaded is not None and getattr(loaded, "__version__", None):
        return loaded.__version__
    for dist in dists or (module,):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine(**extra: Any) -> dict:
    """What a result was measured on: cpu, amx, cores, os, python, numpy and onnxruntime versions.

    `extra` adds or overrides keys (e.g. threads=2, torch=torch.__version__). A package
    that is not installed is recorded as None. Nothing is imported (a package's version
    comes from its metadata unless it is loaded), so calling it does not raise this
    process's peak RSS.
    """
    m = {
        "cpu": cpu_name(),
        "amx": cpu_amx(),
        "isa": cpu_isa(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime", "onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    }
    return m | extra


def describe_machine(m: dict | str) -> str:
    """One line for a report: `AMD EPYC (no AMX), 2 cores, Linux x86_64; Python 3.11.7, numpy 2.1, onnxruntime 1.20`."""
    if isinstance(m, str):  # a result written before the machine was a dict
        return m
    head = m.get("cpu", "?")
    if "amx" in m:  # results from before it was recorded say nothing about AMX
        head += f" (AMX {', '.join(f.removeprefix('amx_') for f in m['amx'])})" if m["amx"] else " (no AMX)"
    if m.get("isa"):
        head += f", {m['isa']}"
    head += f", {m.get('cores', '?')} cores"
    if m.get("threads") is not None:
        head += f", {m['threads']} threads used"
    if m.get("os"):
        head += f", {m['os']}"
    versions = [f"Python {m['python']}"] if m.get("python") else []
    versions += [f"{k} {m[k]}" for k in ("numpy", "onnxruntime", "torch") if m.get(k)]
    return head + ("; " + ", ".join(versions) if versions else "")


# ------------------------------------------------------------------ peak RSS


def peak_rss_mib() -> float | None:
    """This process's peak resident set (VmHWM of /proc/self/status) in MiB; None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Reset VmHWM to the current resident set (writes 5 to /proc/self/clear_refs), to time a stage's peak alone."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def source_of(*functions: Callable) -> str:
    """The source of self-contained helpers (e.g. peak_rss_mib, reset_peak_rss), to begin a `python -c` child's code with.

    A child started with `python -c` has neither this folder on sys.path nor a reason to
    import more than it measures; it gets the same functions as text.
    """
    return "".join(inspect.getsource(f) + "\n" for f in functions)


# ------------------------------------------------------------------ timing


class Stopwatch:
    """Seconds on `clock` (default time.perf_counter: wall time) since it started.

    `sw = Stopwatch()` starts it; `sw.elapsed()` reads it while running. As a context
    manager it restarts on entry and keeps the block's time in `sw.seconds`:

        with Stopwatch() as sw:
            work()
        print(sw.seconds)
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.start = clock()
        self.seconds: float | None = None

    def elapsed(self) -> float:
        """Seconds since the start (the block's seconds once a `with` block ended)."""
        return self.seconds if self.seconds is not None else self.clock() - self.start

    def __enter__(self) -> Stopwatch:
        self.seconds = None
        self.start = self.clock()
        return self

    def __exit__(self, *exc) -> bool:
        self.seconds = self.clock() - self.start
        return False


def timed(fn: Callable[[], Any], n: int, warm: int = 2, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """`warm` untimed calls of fn, then the seconds of each of `n` calls on `clock`."""
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, per_round: int, warm: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each function, round by round in turn (so a slow spell of the machine hits all alike)."""
    for fn in fns.values():
        timed(fn, 0, warm=warm, clock=clock)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k] += timed(fn, per_round, warm=0, clock=clock)
    return times


def utc_now() -> str:
    """The date and time for a result: `2026-12-01 22:17 UTC`."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


# ------------------------------------------------------------------ result files


def result_dir(name: str, out: Path | str | None = None) -> Path:
    """The folder of a benchmark's results: <out>/<name>, with out the results root (default benchmarks/results)."""
    return Path(out if out is not None else RESULTS) / name


def _jsonable(v: Any) -> Any:
    """json.dumps' fallback: numpy scalars and arrays, paths, sets."""
    if hasattr(v, "tolist"):  # numpy arrays and scalars
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then os.replace it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would make it (mkstemp's file is private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> Path:
    """`data` as indented JSON (UTF-8, numpy values converted) to `path`, atomically; the path."""
    _write_atomic(Path(path), json.dumps(data, indent=1, ensure_ascii=False, default=_jsonable) + "\n")
    return Path(path)


def write_result(name: str, data: dict, markdown: str, out: Path | str | None = None, stem: str = "result") -> Path:
    """Write <out>/<name>/<stem>.json and <stem>.md atomically (the folder made if needed); the folder.

    `name` is the script's name, `out` the results root (default benchmarks/results),
    `stem` the file name without suffix ("result" for a script's main result).
    """
    folder = result_dir(name, out)
    write_json(folder / f"{stem}.json", data)
    _write_atomic(folder / f"{stem}.md", markdown if markdown.endswith("\n") else markdown + "\n")
    return folder
