"""Generic ONNX export path: trace, validate (names, axes, shapes, values), atomic write."""

import dataclasses
import hashlib
import math
import re
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from kinema.export import onnx_graph
from kinema.export.onnx_graph import ExportValidationError, FrozenAxisError, GraphSpec, OutputNamesError, ShapeMismatchError, ValueMismatchError, export_graph, onnx_io_signature, sha256_file, validate_graph
from kinema.runtime.errors import KinemaError

C, D = 4, 8  # latent channels, text width


class TinyDenoiser(nn.Module):
    """Video tokens attend to masked text; timestep enters through a sinusoidal embedding."""

    def __init__(self, hidden: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.proj_in = nn.Linear(C, hidden)
        self.text_in = nn.Linear(D, hidden)
        self.time_mlp = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.proj_out = nn.Linear(hidden, C)

    def forward(self, x, text, mask, t):
        B, _, T, H, W = x.shape  # (B, C, T, H, W)
        h = self.proj_in(x.flatten(2).transpose(1, 2))  # (B, N, hidden), N = T*H*W
        half = h.shape[-1] // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        angles = t[:, None] * freqs[None]  # (B, half)
        emb = self.time_mlp(torch.cat([angles.cos(), angles.sin()], -1))  # (B, hidden)
        h = self.norm(h + emb[:, None])
        q = self.q(h).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, N, d)
        kv = self.kv(self.text_in(text)).unflatten(-1, (2 * self.heads, -1)).transpose(1, 2)
        k, v = kv.chunk(2, dim=1)  # (B, heads, L, d) each
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :].bool())
        h = h + a.transpose(1, 2).flatten(2)  # (B, N, hidden)
        return self.proj_out(h).transpose(1, 2).reshape(B, C, T, H, W)


def denoiser_inputs(B, T, H, W, L, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, H, W, generator=g)
    text = torch.randn(B, L, D, generator=g)
    mask = torch.ones(B, L, dtype=torch.int64)
    mask[:, L // 2 + 1 :] = 0  # padded text tokens
    t = torch.rand(B, generator=g) * 1000.0
    return x, text, mask, t


DENOISER = GraphSpec(
    name="denoiser",
    input_names=("x", "text", "mask", "t"),
    output_names=("out",),
    dynamic_axes={
        "x": {0: "B", 2: "T", 3: "H", 4: "W"},
        "text": {0: "B", 1: "L"},
        "mask": {0: "B", 1: "L"},
        "t": {0: "B"},
        "out": {0: "B", 2: "T", 3: "H", 4: "W"},
    },
    atol=1e-5,
    rtol=1e-4,
)
EXAMPLE = dict(B=2, T=3, H=4, W=4, L=5)
CHECK = dict(B=3, T=2, H=6, W=2, L=7)
THIRD = dict(B=1, T=5, H=3, W=5, L=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    module = TinyDenoiser().eval()
    folder = tmp_path_factory.mktemp("denoiser")
    start = time.perf_counter()
    entry = export_graph(
        module, DENOISER, denoiser_inputs(**EXAMPLE), denoiser_inputs(**CHECK, seed=2), folder / "denoiser.onnx"
    )
    seconds = time.perf_counter() - start
    print(f"\nexport_graph(TinyDenoiser): {seconds:.2f} s")
    return module, entry, folder / "denoiser.onnx", seconds


def _copy_model(src, dst, edit):
    model = onnx.load(str(src))
    edit(model)
    onnx.save(model, str(dst))
    return dst


def test_export_writes_one_checked_file(exported):
    module, entry, path, _ = exported
    assert sorted(p.name for p in path.parent.iterdir()) == ["denoiser.onnx"]  # no staging folder, no .data
    assert entry["file"] == "denoiser.onnx"
    assert entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["external_data"] is None
    assert (entry["atol"], entry["rtol"]) == (1e-5, 1e-4)
    assert 0.0 < entry["max_abs_diff"] < 1e-5
    assert entry["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": ["B", C, "T", "H", "W"]},
        {"name": "text", "dtype": "float32", "shape": ["B", "L", D]},
        {"name": "mask", "dtype": "int64", "shape": ["B", "L"]},
        {"name": "t", "dtype": "float32", "shape": ["B"]},
    ]
    assert entry["outputs"] == [{"name": "out", "dtype": "float32", "shape": ["B", C, "T", "H", "W"]}]


def test_saved_graph_is_symbolic_and_self_contained(exported):
    _, entry, path, _ = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 18
    x = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in x] == ["B", "", "T", "H", "W"] and x[1].dim_value == C
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert onnx_io_signature(path) == (entry["inputs"], entry["outputs"])


def test_graph_matches_pytorch_at_a_third_shape(exported):
    module, _, path, _ = exported
    inputs = denoiser_inputs(**THIRD, seed=3)
    with torch.no_grad():
        ref = module(*inputs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(DENOISER.input_names, inputs)})
    assert got.shape == (1, C, 5, 3, 5)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)
    assert np.abs(ref).max() > 0.1  # the comparison is not between two near-zero tensors


def test_export_time_is_reported(exported):
    *_, seconds = exported
    assert seconds < 30.0


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x * 2.0, x + 1.0


def test_wrong_output_names_raise_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_graph, "EXTERNAL_DATA_BYTES", -1)  # a staged sidecar must not survive either
    spec = GraphSpec("two", ("x",), ("y",), {"x": {0: "B"}, "y": {0: "B"}}, atol=1e-6, rtol=0.0)
    with pytest.raises(OutputNamesError, match=r"outputs \['y', '\w+'\], the spec \['y'\]"):
        export_graph(TwoOutputs().eval(), spec, (torch.randn(2, 3),), (torch.randn(4, 3),), tmp_path / "two.onnx")
    assert list(tmp_path.iterdir()) == []


class BiasSizedToExample(nn.Module):
    """The bias is sized to the traced W, so W can only ever be 4: the exporter pins it silently."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.arange(4, dtype=torch.float32))

    def forward(self, x):  # (B, C, H, W)
        return x * 2.0 + self.bias


def test_frozen_input_axis_is_caught(tmp_path):
    spec = GraphSpec(
        "bias", ("x",), ("y",), {"x": {0: "B", 2: "H", 3: "W"}, "y": {0: "B", 2: "H", 3: "W"}}, atol=1e-6, rtol=0.0
    )
    with pytest.raises(FrozenAxisError, match=r"input 'x' axis 3 \(declared 'W'\) is frozen to 4"):
        export_graph(
            BiasSizedToExample().eval(), spec, (torch.randn(2, 3, 5, 4),), (torch.randn(3, 3, 6, 4),),
            tmp_path / "bias.onnx",
        )
    assert list(tmp_path.iterdir()) == []


class ReshapeWithTracedInt(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.h = h  # a Python int taken from the example shape

    def forward(self, x):  # (B, C, H, W)
        return (x * 2.0).reshape(x.shape[0], x.shape[1], self.h, -1)


def test_frozen_output_axis_is_caught(tmp_path):
    spec = GraphSpec("rs", ("x",), ("y",), {"x": {0: "B", 2: "H"}, "y": {0: "B", 2: "H"}}, atol=1e-6, rtol=0.0)
    with pytest.raises(FrozenAxisError, match=r"output 'y' axis 2 \(declared 'H'\) is frozen to 4"):
        export_graph(
            ReshapeWithTracedInt(4).eval(), spec, (torch.randn(2, 3, 4, 4),), (torch.randn(1, 3, 8, 4),),
            tmp_path / "rs.onnx",
        )


def test_tied_axes_are_caught(tmp_path):
    class Square(nn.Module):
        def forward(self, x):
            return x + x.transpose(2, 3)  # forces H == W

    spec = GraphSpec("sq", ("x",), ("y",), {"x": {2: "H", 3: "W"}}, atol=1e-6, rtol=0.0)
    with pytest.raises(FrozenAxisError, match=r"axis 3 \(declared 'W'\) is tied to 'H'"):
        export_graph(Square().eval(), spec, (torch.randn(1, 2, 4, 4),), (torch.randn(1, 2, 6, 6),), tmp_path / "s.onnx")


def test_shape_mismatch_is_caught(exported, tmp_path):
    module, _, path, _ = exported

    def duplicate_output(model):  # out := concat(out, out) along W; the declared type still says W
        producer = next(n for n in model.graph.node if "out" in n.output)
        producer.output[list(producer.output).index("out")] = "out_inner"
        model.graph.node.append(helper.make_node("Concat", ["out_inner", "out_inner"], ["out"], axis=-1))

    edited = _copy_model(path, tmp_path / "edited.onnx", duplicate_output)
    with pytest.raises(ShapeMismatchError, match=r"\(3, 4, 2, 6, 4\) from ONNX Runtime but float32 \(3, 4, 2, 6, 2\)"):
        validate_graph(edited, module, DENOISER, denoiser_inputs(**CHECK))


def test_value_mismatch_names_the_worst_element(exported, tmp_path):
    module, _, path, _ = exported

    def bump_one_weight(model):  # proj_out.bias[1] += 0.5 shifts every value of channel 1
        init = next(i for i in model.graph.initializer if i.name.endswith("proj_out.bias"))
        bias = numpy_helper.to_array(init).copy()
        bias[1] += 0.5
        init.CopyFrom(numpy_helper.from_array(bias, init.name))

    edited = _copy_model(path, tmp_path / "tampered.onnx", bump_one_weight)
    inputs = denoiser_inputs(**CHECK)
    with pytest.raises(ValueMismatchError) as caught:
        validate_graph(edited, module, DENOISER, inputs)
    # Recompute the worst element independently and find it in the message.
    with torch.no_grad():
        ref = module(*inputs).numpy().astype(np.float64)
    session = ort.InferenceSession(str(edited), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(DENOISER.input_names, inputs)})[0].astype(np.float64)
    excess = np.abs(got - ref) - (1e-5 + 1e-4 * np.abs(ref))
    worst = np.unravel_index(np.argmax(excess), ref.shape)
    message = str(caught.value)
    assert worst[1] == 1
    assert f"worst at index {tuple(int(i) for i in worst)}" in message
    assert f"PyTorch {ref[worst]:.7g}, ONNX {got[worst]:.7g}" in message
    assert f"{ref[:, 1].size} of {ref.size} values" in message
    assert re.search(r"\|diff\| 0\.5\d* > allowed", message)


def test_validate_accepts_the_untouched_graph(exported):
    module, entry, path, _ = exported
    diff = validate_graph(path, module, DENOISER, [denoiser_inputs(**CHECK, seed=2), denoiser_inputs(**THIRD)])
    assert diff < 1e-5


def test_check_at_traced_shape_is_refused_before_tracing(tmp_path):
    with pytest.raises(ValueError, match="traced size on every dynamic axis"):
        export_graph(
            TinyDenoiser().eval(), DENOISER, denoiser_inputs(**EXAMPLE), denoiser_inputs(**EXAMPLE, seed=2),
            tmp_path / "d.onnx",
        )
    assert list(tmp_path.iterdir()) == []


def test_external_data_past_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_graph, "EXTERNAL_DATA_BYTES", 0)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 32), nn.GELU()).eval()  # weight above ir.save's 256-byte inline limit
    spec = GraphSpec("mlp", ("x",), ("y",), {"x": {0: "N"}, "y": {0: "N"}}, atol=1e-6, rtol=1e-5)
    entry = export_graph(module, spec, (torch.randn(3, 6),), (torch.randn(7, 6),), tmp_path / "mlp.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "mlp.onnx.data"]
    data = tmp_path / "mlp.onnx.data"
    assert entry["external_data"] == {"file": "mlp.onnx.data", "bytes": data.stat().st_size, "sha256": sha256_file(data)}
    assert data.stat().st_size >= 6 * 32 * 4
    x = torch.randn(2, 6)
    (got,) = ort.InferenceSession(str(tmp_path / "mlp.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, module(x).detach().numpy(), atol=1e-6, rtol=1e-5)


def test_release_module_frees_the_weights_before_onnx_runtime_loads(tmp_path, monkeypatch):
    """With release_module, no tensor holds the module's weights once ONNX Runtime opens the graph (the large-model path)."""
    import gc

    monkeypatch.setattr(onnx_graph, "EXTERNAL_DATA_BYTES", 0)  # weights in a sidecar, as for a model past 2 GiB
    torch.manual_seed(0)
    module = TinyDenoiser().eval()
    third = denoiser_inputs(**THIRD, seed=3)
    with torch.no_grad():
        expected = module(*third).numpy()
    weights = {t.untyped_storage().data_ptr() for t in module.parameters()}
    seen = []

    def live_weight_storages() -> int:
        count = 0
        for o in gc.get_objects():
            if isinstance(o, torch.Tensor):
                try:
                    count += o.untyped_storage().data_ptr() in weights and o.numel() > 0
                except (RuntimeError, NotImplementedError):  # fake and meta tensors have no storage
                    pass
        return count

    opened = ort.InferenceSession

    def session(*args, **kwargs):
        seen.append(live_weight_storages())
        return opened(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    entry = export_graph(module, DENOISER, denoiser_inputs(**EXAMPLE), denoiser_inputs(**CHECK, seed=2), tmp_path / "d.onnx", release_module=True)
    monkeypatch.undo()
    assert seen == [0]  # the one validation session, opened with no tensor left on the weights' memory
    assert entry["max_abs_diff"] < 1e-5
    assert all(p.numel() == 0 for p in module.parameters())
    feeds = {n: t.numpy() for n, t in zip(DENOISER.input_names, third)}
    (got,) = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)  # the graph kept the weights the module dropped


def test_torchscript_fallback_passes_the_same_checks(tmp_path):
    torch.manual_seed(0)
    spec = dataclasses.replace(DENOISER, dynamo=False)
    entry = export_graph(
        TinyDenoiser().eval(), spec, denoiser_inputs(**EXAMPLE), denoiser_inputs(**CHECK), tmp_path / "ts.onnx"
    )
    assert entry["inputs"][0]["shape"] == ["B", C, "T", "H", "W"]
    assert entry["max_abs_diff"] < 1e-5


def test_sha256_file_streams(tmp_path):
    blob = np.random.default_rng(0).bytes(10_000)
    (tmp_path / "b").write_bytes(blob)
    assert sha256_file(tmp_path / "b", chunk=999) == hashlib.sha256(blob).hexdigest()


def test_errors_are_kinema_errors():
    for cls in (OutputNamesError, FrozenAxisError, ShapeMismatchError, ValueMismatchError):
        assert issubclass(cls, ExportValidationError) and issubclass(cls, KinemaError)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dynamic_axes": {"z": {0: "B"}}}, "no input or output"),
        ({"dynamic_axes": {"x": {0: "2B"}}}, "Python identifier"),
        ({"dynamic_axes": {"x": {-1: "B"}}}, "int >= 0"),
        ({"output_names": ("x",)}, "repeat"),
        ({"atol": -1.0}, "atol=-1.0"),
    ],
)
def test_spec_rejects_bad_fields(overrides, message):
    fields = dict(name="g", input_names=("x",), output_names=("y",), dynamic_axes={}, atol=1e-6, rtol=0.0)
    with pytest.raises(ValueError, match=message):
        GraphSpec(**{**fields, **overrides})


def test_hidden_constant_shape_fails_in_onnx_runtime(exported, tmp_path):
    module, _, path, _ = exported

    def pin_inner_shape(model):  # a Reshape to the traced shape, invisible in the I/O types
        producer = next(n for n in model.graph.node if "out" in n.output)
        producer.output[list(producer.output).index("out")] = "out_inner"
        traced = np.array([EXAMPLE["B"], C, EXAMPLE["T"], EXAMPLE["H"], EXAMPLE["W"]], dtype=np.int64)
        model.graph.initializer.append(numpy_helper.from_array(traced, "traced_shape"))
        model.graph.node.append(helper.make_node("Reshape", ["out_inner", "traced_shape"], ["out"]))

    edited = _copy_model(path, tmp_path / "pinned.onnx", pin_inner_shape)
    validate_graph(edited, module, DENOISER, denoiser_inputs(**EXAMPLE))  # fine at the traced shape
    with pytest.raises(onnx_graph.OrtRunError, match=r"failed at check_inputs\[0\] \(x \(3, 4, 2, 6, 2\)"):
        validate_graph(edited, module, DENOISER, denoiser_inputs(**CHECK))
