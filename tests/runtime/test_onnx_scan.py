"""runtime.bundle.scan: every external-data location inside an ONNX file, found without `onnx`.

Models are built with the `onnx` package (tensors marked external by hand, so no data
files are needed) and the scanner's answer is checked against what
`onnx.external_data_helper` reports for the same model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kinema.runtime.errors import BundleError
from kinema.runtime.bundle.scan import external_data_locations

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx import external_data_helper as edh  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]


def ext_tensor(name: str, location: str, offset: int = 0) -> TensorProto:
    """A 4-float tensor whose data is declared to live in `location` (no raw data kept)."""
    t = numpy_helper.from_array(np.arange(4, dtype=np.float32), name)
    edh.set_external_data(t, location=location, offset=offset, length=16)
    t.ClearField("raw_data")
    assert edh.uses_external_data(t)
    return t


def const_node(output: str, location: str) -> onnx.NodeProto:
    """A Constant node whose `value` attribute tensor is external."""
    return helper.make_node("Constant", [], [output], value=ext_tensor(output + "_value", location))


def onnx_reported(model: onnx.ModelProto) -> set[str]:
    """External-data locations according to the onnx package itself."""
    return {edh.ExternalDataInfo(t).location for t in edh._get_all_tensors(model) if edh.uses_external_data(t)}


def save(model: onnx.ModelProto, path: Path) -> Path:
    # Plain serialisation: onnx.save would try to resolve external data next to the file.
    path.write_bytes(model.SerializeToString())
    return path


def branch(name: str, nodes, initializers=()) -> onnx.GraphProto:
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [4])
    return helper.make_graph(nodes, name, [], [out], initializer=list(initializers))


def rich_model() -> tuple[onnx.ModelProto, set[str]]:
    """Initializers, node attributes (t and tensors), nested If subgraphs and a function, all external."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])

    # then: an initializer held by the subgraph itself
    then_g = branch("then", [helper.make_node("Identity", ["w_then"], ["then_out"])], [ext_tensor("w_then", "then_init.bin")])
    # else: a Constant attribute tensor, and one more If level whose branch holds an initializer
    inner_then = branch("inner_then", [helper.make_node("Identity", ["w_deep"], ["inner_then_out"])], [ext_tensor("w_deep", "deep/nested.bin")])
    inner_else = branch("inner_else", [const_node("inner_else_out", "inner_else_const.bin")])
    else_g = branch(
        "else",
        [
            const_node("c_else", "else_const.bin"),
            helper.make_node("If", ["cond"], ["inner"], then_branch=inner_then, else_branch=inner_else),
            helper.make_node("Add", ["c_else", "inner"], ["else_out"]),
        ],
    )
    # a custom-domain node with a repeated-tensor attribute (AttributeProto.tensors)
    custom = helper.make_node(
        "Keep", ["x"], ["kept"], domain="kinema.test",
        tables=[ext_tensor("tab0", "tables_a.bin"), ext_tensor("tab1", "tables_b.bin")],
    )
    # a model-local function whose body holds a Constant with external data
    fn = helper.make_function(
        "kinema.fn", "AddConst", ["a"], ["b"],
        [const_node("k", "function_const.bin"), helper.make_node("Add", ["a", "k"], ["b"])],
        OPSET,
    )
    nodes = [
        helper.make_node("Add", ["x", "w1"], ["s1"]),
        helper.make_node("Add", ["s1", "w2"], ["s2"]),
        helper.make_node("Add", ["s2", "w3"], ["s3"]),
        const_node("c_top", "top_const.bin"),
        helper.make_node("Add", ["s3", "c_top"], ["s4"]),
        helper.make_node("If", ["cond"], ["branched"], then_branch=then_g, else_branch=else_g),
        helper.make_node("AddConst", ["branched"], ["s5"], domain="kinema.fn"),
        custom,
        helper.make_node("Add", ["s5", "s4"], ["y"]),
    ]
    inits = [
        ext_tensor("w1", "weights.bin", 0),
        ext_tensor("w2", "weights.bin", 16),  # same file as w1: reported once
        ext_tensor("w3", "sub dir/more weights.bin"),
    ]
    graph = helper.make_graph(nodes, "rich", [x, cond], [y], initializer=inits)
    model = helper.make_model(
        graph, functions=[fn],
        opset_imports=OPSET + [helper.make_opsetid("kinema.fn", 1), helper.make_opsetid("kinema.test", 1)],
    )
    expected = {
        "weights.bin", "sub dir/more weights.bin", "top_const.bin", "then_init.bin", "else_const.bin",
        "deep/nested.bin", "inner_else_const.bin", "tables_a.bin", "tables_b.bin", "function_const.bin",
    }
    return model, expected


def test_finds_every_location_like_onnx_does(tmp_path):
    model, expected = rich_model()
    assert onnx_reported(model) == expected  # the fixture model really has them all
    found = external_data_locations(save(model, tmp_path / "rich.onnx"))
    assert set(found) == expected
    assert len(found) == len(set(found)), f"duplicates kept: {found}"


def test_hostile_locations_are_reported_verbatim(tmp_path):
    """Escaping locations come back as written, for bundle.py to reject."""
    locs = ["../../secret.bin", "/etc/passwd", "a/../../b.bin", "C:\\x.bin", "caf\u00e9.bin"]
    inits = [ext_tensor(f"w{i}", loc) for i, loc in enumerate(locs)]
    out = helper.make_tensor_value_info("w0", TensorProto.FLOAT, [4])
    model = helper.make_model(helper.make_graph([], "g", [], [out], initializer=inits), opset_imports=OPSET)
    found = external_data_locations(save(model, tmp_path / "m.onnx"))
    assert found == locs  # first-seen order
    assert set(found) == onnx_reported(model)


def test_sparse_initializer_with_external_values(tmp_path):
    values = ext_tensor("sp_values", "sparse_values.bin")
    indices = numpy_helper.from_array(np.array([0, 2, 5, 7], dtype=np.int64), "sp_indices")
    sparse = helper.make_sparse_tensor(values, indices, [8])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])
    graph = helper.make_graph([helper.make_node("Identity", ["sp_values"], ["y"])], "g", [], [out], sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=OPSET)
    assert external_data_locations(save(model, tmp_path / "sparse.onnx")) == ["sparse_values.bin"]


def test_model_saved_with_external_data_by_onnx(tmp_path):
    """The way real exports look: onnx.save_model(save_as_external_data=True)."""
    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=OPSET)
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "model.onnx.data").stat().st_size == 64 * 64 * 4
    assert external_data_locations(path) == ["model.onnx.data"]
    assert set(external_data_locations(path)) == onnx_reported(onnx.load(str(path), load_external_data=False))


def test_no_external_data(tmp_path):
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")  # inline raw_data
    y = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])
    model = helper.make_model(helper.make_graph([], "g", [], [y], initializer=[w]), opset_imports=OPSET)
    assert external_data_locations(save(model, tmp_path / "inline.onnx")) == []


def test_fixture_bundle_graph_matches_onnx(tiny_bundle):
    """The exported denoiser: whatever onnx reports (nothing, below 2 GB), the scanner reports."""
    path = tiny_bundle / "denoiser.onnx"
    model = onnx.load(str(path), load_external_data=False)
    assert set(external_data_locations(path)) == onnx_reported(model)


def _model_bytes_and_graph_span() -> tuple[bytes, int, int]:
    model, _ = rich_model()
    # a large inline initializer so the graph field is most of the file
    model.graph.initializer.append(numpy_helper.from_array(np.arange(2048, dtype=np.float32), "big"))
    data = model.SerializeToString()
    g = model.graph.SerializeToString()
    start = data.find(g)
    assert start > 0
    return data, start, start + len(g)


@pytest.mark.parametrize("where", [0.05, 0.5, 0.95, 1.0])
def test_truncated_file_raises_bundle_error(tmp_path, where):
    data, start, end = _model_bytes_and_graph_span()
    cut = min(end - 1, start + int((end - start) * where))
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(BundleError, match="not a readable ONNX model") as e:
        external_data_locations(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x3a\xff\xff\xff\xff\x0f",  # field 7 (graph), length 4 GiB, no data
        b"\x3a\x80",  # field 7 with a truncated length varint
        b"\x0b\x00",  # wire type 3 (groups): never in ONNX
        b"\xff" * 12,  # an over-long varint
        b"{\"not\": \"onnx\"}",
    ],
)
def test_garbage_raises_bundle_error(tmp_path, payload):
    path = tmp_path / "bad.onnx"
    path.write_bytes(payload)
    with pytest.raises(BundleError):
        external_data_locations(path)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_nesting_depth_is_bounded(tmp_path):
    """Subgraphs nested past the scanner's limit are refused, not a RecursionError.

    Written at the wire level: the protobuf runtime itself refuses to build messages this deep.
    """
    leaf = branch("leaf", [helper.make_node("Identity", ["w"], ["leaf_out"])], [ext_tensor("w", "deep.bin")])
    g = leaf.SerializeToString()
    for _ in range(70):
        attr = _field(1, b"then_branch") + _field(6, g)  # AttributeProto.name, .g
        node = _field(4, b"If") + _field(5, attr)  # NodeProto.op_type, .attribute
        g = _field(1, node)  # GraphProto.node
    path = tmp_path / "deep.onnx"
    path.write_bytes(_field(7, g))  # ModelProto.graph
    with pytest.raises(BundleError, match="nested too deeply"):
        external_data_locations(path)

    # the same construction a few levels deep is read, down to the leaf's initializer
    g = leaf.SerializeToString()
    for _ in range(5):
        g = _field(1, _field(4, b"If") + _field(5, _field(1, b"then_branch") + _field(6, g)))
    path.write_bytes(_field(7, g))
    assert external_data_locations(path) == ["deep.bin"]
