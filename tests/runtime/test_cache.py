"""The optimised-graph cache: reused when the graph is the same, never when it changed, rebuilt when damaged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kinema.runtime.bundle.load import sha256_file
from kinema.runtime.engine.cache import OPTIMIZED, RECORD, cache_key, open_cached
from kinema.runtime.engine.sessions import open_session


def write_graph(path, scale: float):
    """Y = (X @ W) * scale + 0: a MatMul, a Mul and an Add ORT's optimiser can fold."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["h"]),
        helper.make_node("Mul", ["h", "s"], ["m"]),
        helper.make_node("Add", ["m", "z"], ["Y"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([scale], np.float32), "s"), numpy_helper.from_array(np.zeros(3, np.float32), "z")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", 4])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["B", 3])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return w * scale


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def _open(path, cache):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return open_cached(path, sha256_file(path), "cpu", opts, ["CPUExecutionProvider"], cache)


def test_second_open_reuses_the_optimised_graph(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    graph = bundle / "g.onnx"
    w = write_graph(graph, 2.0)
    before = sorted(p.name for p in bundle.iterdir())
    s1, hit1 = _open(graph, tmp_path / "cache")
    s2, hit2 = _open(graph, tmp_path / "cache")
    assert (hit1, hit2) == (False, True)
    for s in (s1, s2):
        np.testing.assert_allclose(s.run(None, {"X": X})[0], X @ w, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in bundle.iterdir()) == before  # the bundle stays read-only
    entry = tmp_path / "cache" / "ort" / cache_key(sha256_file(graph), "cpu")
    assert (entry / OPTIMIZED).is_file() and (entry / RECORD).is_file()
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]


def test_a_changed_graph_never_reuses_the_stale_entry(tmp_path):
    graph = tmp_path / "g.onnx"
    write_graph(graph, 2.0)
    _open(graph, tmp_path / "cache")
    w3 = write_graph(graph, 3.0)  # same path, new content
    s, hit = _open(graph, tmp_path / "cache")
    assert not hit
    np.testing.assert_allclose(s.run(None, {"X": X})[0], X @ w3, rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "cache" / "ort").iterdir())) == 2
    assert cache_key("ab" * 32, "cpu") != cache_key("ab" * 32, "cuda")


@pytest.mark.parametrize("damage", ["truncate", "record"])
def test_a_damaged_entry_is_rebuilt(tmp_path, damage):
    graph = tmp_path / "g.onnx"
    w = write_graph(graph, 2.0)
    _open(graph, tmp_path / "cache")
    entry = tmp_path / "cache" / "ort" / cache_key(sha256_file(graph), "cpu")
    if damage == "truncate":
        (entry / OPTIMIZED).write_bytes((entry / OPTIMIZED).read_bytes()[:20])
    else:
        (entry / RECORD).write_text("{not json")
    s, hit = _open(graph, tmp_path / "cache")
    assert not hit
    np.testing.assert_allclose(s.run(None, {"X": X})[0], X @ w, rtol=1e-5, atol=1e-6)
    assert _open(graph, tmp_path / "cache")[1]


def test_open_session_uses_the_cache_only_when_asked(tmp_path):
    graph = tmp_path / "g.onnx"
    w = write_graph(graph, 2.0)
    s = open_session(graph, graph_sha256=sha256_file(graph), cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(s.run(None, {"X": X})[0], X @ w, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "cache" / "ort").is_dir()
    open_session(graph, cache_dir=tmp_path / "other")  # no verified hash: no cache
    assert not (tmp_path / "other").exists()
