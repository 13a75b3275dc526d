"""ONNX Runtime's optimised graphs, cached on disk so graph optimisation is paid once per graph and machine.

The bundle stays read-only: the optimised copy goes to a cache folder
($KINEMA_CACHE_DIR, else $XDG_CACHE_HOME/kinema, else ~/.cache/kinema), under a key made
of the graph's sha256, the ONNX Runtime version, the provider and the CPU's instruction
set (ORT_ENABLE_ALL writes layout-specific kernels such as NCHWc into the saved graph).
A changed graph has another sha256 and so another key: a stale entry is never reused.
An entry is written to a temporary name and renamed, with a small record of its key and
size that is checked before use; an entry that does not match is rebuilt.

Graphs with external data are not cached (ORT would inline their weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import onnxruntime as ort

__all__ = ["cache_root", "cache_key", "open_cached"]

OPTIMIZED = "optimized.onnx"
RECORD = "entry.json"


def cache_root() -> Path:
    """The folder kinema caches into (not created here)."""
    if os.environ.get("KINEMA_CACHE_DIR"):
        return Path(os.environ["KINEMA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kinema"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return hashlib.sha256(line.encode()).hexdigest()[:16]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(graph_sha256: str, provider: str) -> str:
    """The entry name for one graph on this machine's ONNX Runtime and provider."""
    ident = "|".join([graph_sha256.lower(), f"onnxruntime {ort.__version__}", provider, platform.machine(), _cpu_flags(), "ORT_ENABLE_ALL"])
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _valid(entry: Path, key: str) -> bool:
    try:
        rec = json.loads((entry / RECORD).read_text())
        return rec.get("key") == key and rec.get("bytes") == (entry / OPTIMIZED).stat().st_size
    except (OSError, ValueError, AttributeError):
        return False


def open_cached(path: Path, graph_sha256: str, provider: str, opts: ort.SessionOptions, providers: list[str], root: Path | None = None):
    """(session, hit): the cached optimised graph when a valid entry exists, else the graph, optimised and saved."""
    root = cache_root() if root is None else Path(root)
    key = cache_key(graph_sha256, provider)
    entry = root / "ort" / key
    if _valid(entry, key):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimised
        try:
            return ort.InferenceSession(str(entry / OPTIMIZED), sess_options=opts, providers=providers), True
        except Exception:  # noqa: BLE001 - a damaged entry is rebuilt below, never fatal
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        entry.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry, suffix=".onnx.tmp")
        os.close(fd)
    except OSError:  # read-only home, full disk: run without the cache
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers), False
    opts.optimized_model_filepath = tmp
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        size = Path(tmp).stat().st_size
        os.replace(tmp, entry / OPTIMIZED)
        rec_tmp = entry / f"{RECORD}.{os.getpid()}.tmp"
        rec_tmp.write_text(json.dumps({"key": key, "bytes": size, "graph_sha256": graph_sha256, "onnxruntime": ort.__version__, "provider": provider}))
        os.replace(rec_tmp, entry / RECORD)
        return session, False
    finally:
        Path(tmp).unlink(missing_ok=True)
