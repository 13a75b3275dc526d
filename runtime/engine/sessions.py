"""ONNX Runtime sessions: execution provider choice and thread settings."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from ..errors import BundleError, InputError, ProviderError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
_INSTALL_HINT = {
    "cuda": "install onnxruntime-gpu (and a matching CUDA runtime) instead of onnxruntime",
    "dml": "install onnxruntime-directml (Windows only)",
    "coreml": "use the onnxruntime wheel for macOS",
    "cpu": "reinstall onnxruntime",
}
MAX_THREADS = 1024
# ONNX Runtime's load failures derive from Exception directly, not from one base of their own.
_ORT_LOAD_ERRORS = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, n)
    for n in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented", "RuntimeException")
    if hasattr(ort.capi.onnxruntime_pybind11_state, n)
) + (RuntimeError, ValueError, OSError)


def check_provider(name: str) -> list[str]:
    """ONNX Runtime provider list for a kinema provider name; raises ProviderError when unknown or unavailable."""
    if name not in PROVIDERS:
        raise ProviderError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[name]
    available = ort.get_available_providers()
    if wanted not in available:
        have = ", ".join(k for k, v in PROVIDERS.items() if v in available) or "none"
        raise ProviderError(f"provider {name!r} is not available in this onnxruntime build (available: {have}); {_INSTALL_HINT[name]}")
    # CPU stays as the fallback for the few ops an accelerator does not implement.
    return [wanted] if name == "cpu" else [wanted, PROVIDERS["cpu"]]


def check_threads(threads: int | None) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise InputError(f"threads={threads!r} must be a whole number from 1 to {MAX_THREADS} (or left unset for all cores)")
    return threads


def open_session(
    path: Path, provider: str = "cpu", threads: int | None = None, *, graph_sha256: str | None = None, cache_dir: Path | None = None
) -> ort.InferenceSession:
    """An inference session for one graph of a checked bundle.

    With `cache_dir` and the graph's verified `graph_sha256`, ONNX Runtime's optimised
    graph is kept there and reused by later sessions (runtime/engine/cache.py).
    """
    providers = check_provider(provider)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = check_threads(threads)
        opts.inter_op_num_threads = 1
    # Workers stop spinning when a run ends: a run goes through several sessions (text
    # encoder, denoiser, decoder prefix and step), each with its own pool, and a pool left
    # spinning takes the cores from the next session's. Spinning inside a run is kept (the
    # denoiser's hundreds of small nodes need it). Default clip, kinema-tiny int8, 2 cores,
    # 20 runs each interleaved in one process: ONNX Runtime's default spinning took 1.15x
    # as long as this (median of the paired ratios), never spinning 1.17x.
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3  # warnings from the graph optimiser are not the user's business
    try:
        if cache_dir is not None and graph_sha256:
            from .cache import open_cached

            return open_cached(path, graph_sha256, provider, opts, providers, cache_dir)[0]
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except _ORT_LOAD_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({first})") from None
