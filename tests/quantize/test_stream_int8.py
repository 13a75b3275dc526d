"""The streaming dynamic int8 quantizer against ONNX Runtime's quantize_dynamic on the same graph."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kinema.quantize.stream_int8 import quantize_dynamic_streaming

K, H, N = 48, 64, 32


def _graph(tmp_path, rng):
    """Two MatMuls sharing a weight and one sharing an activation, a Gemm (transB, bias), one excluded, one activation x activation."""
    w1 = rng.standard_normal((K, H)).astype(np.float32)
    w1[:, 3] = 0.0  # an all-zero column: ORT's scale 1.0 case
    w2 = (rng.standard_normal((H, N)) * 0.05).astype(np.float32)
    wg = rng.standard_normal((N, H)).astype(np.float32)  # Gemm weight, transposed
    bg = rng.standard_normal((N,)).astype(np.float32)
    w3 = rng.standard_normal((K, N)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm_a"),
        helper.make_node("MatMul", ["z", "w1"], ["b"], name="mm_b"),  # the same weight, quantized once
        helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
        helper.make_node("MatMul", ["ab", "w2"], ["c"], name="mm_c"),
        helper.make_node("MatMul", ["x", "w3"], ["d"], name="mm_keep"),  # excluded: stays float
        helper.make_node("MatMul", ["x", "w3"], ["e"], name="mm_e"),  # the same activation as mm_a
        helper.make_node("Gemm", ["t", "wg", "bg"], ["f"], name="gemm", transB=1),
        helper.make_node("Transpose", ["c"], ["ct"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["d", "ct"], ["g"], name="mm_act"),  # no constant weight: stays float
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in dict(w1=w1, w2=w2, wg=wg, bg=bg, w3=w3).items()]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", f, ["B", "S", K]), helper.make_tensor_value_info("z", f, ["B", "S", K]), helper.make_tensor_value_info("t", f, ["M", H])],
        [helper.make_tensor_value_info(n, f, None) for n in ("c", "d", "e", "f", "g")],
        inits,
    )
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src, save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    return src


def _initializers(path):
    # ORT names the Gemm's transposed weight `wg_Transposed`, kinema's rewrite `wg_transposed`
    return {i.name.replace("_Transposed", "_transposed"): numpy_helper.to_array(i, str(path.parent))
            for i in onnx.load(str(path), load_external_data=False).graph.initializer}


@pytest.mark.parametrize("per_channel,reduce_range", [(True, False), (False, False), (True, True)])
def test_streaming_int8_equals_onnx_runtime_quantize_dynamic(tmp_path, per_channel, reduce_range):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    src = _graph(tmp_path, rng)
    ref = tmp_path / "ref" / "m.onnx"
    ref.parent.mkdir()
    # ORT's tool on a private copy (it writes a scratch file beside its input), excluding mm_keep
    quantize_dynamic(src, ref, op_types_to_quantize=["MatMul"], per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                     nodes_to_exclude=["mm_keep"], use_external_data_format=True)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    n = quantize_dynamic_streaming(src, out, nodes_to_exclude=["mm_keep"], per_channel=per_channel, reduce_range=reduce_range)
    assert n == 5  # mm_a, mm_b, mm_c, mm_e and the Gemm's MatMul

    got, want = _initializers(out), _initializers(ref)
    quantized = [k for k in want if k.endswith(("_quantized", "_scale", "_zero_point"))]
    assert len(quantized) == 12  # w1, w2, w3, wg_transposed: three tensors each
    for name in quantized:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    ops = [nd.op_type for nd in onnx.load(str(out), load_external_data=False).graph.node]
    assert ops.count("DynamicQuantizeLinear") == 4 and ops.count("MatMulInteger") == 5  # x, z, ab, t: each activation once
    assert ops.count("MatMul") == 2  # mm_keep and the activation x activation product

    feeds = {"x": rng.standard_normal((2, 5, K)).astype(np.float32), "z": rng.standard_normal((2, 5, K)).astype(np.float32),
             "t": rng.standard_normal((3, H)).astype(np.float32)}
    a = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"]).run(None, feeds)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # the same graph, bit for bit
    assert sorted(p.name for p in src.parent.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_streaming_int8_refuses_external_data_outside_the_graph_folder(tmp_path):
    rng = np.random.default_rng(0)
    src = _graph(tmp_path, rng)
    model = onnx.load(str(src), load_external_data=False)
    for e in model.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = "../elsewhere.data"
    (tmp_path / "elsewhere.data").write_bytes(b"\0" * 1_000_000)
    onnx.save(model, str(src))
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(ValueError, match="not a file beside the graph"):
        quantize_dynamic_streaming(src, out)
