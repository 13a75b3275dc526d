"""Dynamic int8 of a graph's MatMuls, one weight at a time: a large graph quantized in little memory.

ORT's quantize_dynamic holds the whole float model two to three times over (it saves and
reloads it for shape inference after its Gemm rewrite), which for a 5.7 GB transformer
peaked at 16 GB. This writes the same graph as ORT's tool for MatMul/Gemm recipes, each
weight read from the source's external data, quantized, and appended to the output's
external data before the next is read; the weights it does not quantize are copied across
the same way. The numbers are ORT's: the scales and rounding of its per-channel (or
per-tensor) symmetric int8 weights, and the nodes it writes (DynamicQuantizeLinear on
each activation once, MatMulInteger, Cast, and the two scale Muls), which ONNX Runtime
fuses at load as it fuses the tool's output. tests/quantize/test_stream_int8.py checks
the result against quantize_dynamic, initializer for initializer and output for output.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

# tensors at least this large go to the external data file, smaller ones stay in the graph
EXTERNAL_MIN_BYTES = 1024
_ALIGN = 4096  # offsets of external tensors: page-aligned, so ONNX Runtime may map them


class _Weights:
    """Reads the source graph's initializers one at a time (external data by offset) and appends the output's."""

    def __init__(self, src: Path, dst: Path):
        self.src_dir = src.parent.resolve()
        self.data_name = f"{dst.name}.data"
        self.out = open(dst.parent / self.data_name, "wb")

    def read(self, init) -> np.ndarray:
        from onnx import helper, numpy_helper

        if init.data_location != init.EXTERNAL:
            return numpy_helper.to_array(init)
        info = {e.key: e.value for e in init.external_data}
        path = (self.src_dir / info["location"]).resolve()
        if not path.is_relative_to(self.src_dir) or not path.is_file():
            raise ValueError(f"initializer {init.name!r}: external data {info['location']!r} is not a file beside the graph")
        dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
        count = int(np.prod(init.dims, dtype=np.int64))
        arr = np.fromfile(path, dtype=dtype, count=count, offset=int(info.get("offset", 0)))
        if arr.size != count:
            raise ValueError(f"initializer {init.name!r}: {info['location']!r} holds {arr.size} of its {count} values")
        return arr.reshape(tuple(init.dims))

    def tensor(self, arr: np.ndarray, name: str):
        """A TensorProto of `arr`: inline when small, else appended to the output's external data."""
        from onnx import TensorProto, helper, numpy_helper

        arr = np.asarray(arr)
        if not arr.flags.c_contiguous:
            arr = arr.copy()  # (np.ascontiguousarray would make a scalar 1-D)
        if arr.nbytes < EXTERNAL_MIN_BYTES:
            return numpy_helper.from_array(arr, name)
        pad = -self.out.tell() % _ALIGN
        self.out.write(b"\0" * pad)
        offset = self.out.tell()
        self.out.write(arr.tobytes())
        t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_name), ("offset", str(offset)), ("length", str(arr.nbytes))):
            t.external_data.add(key=k, value=v)
        return t

    def close(self) -> None:
        self.out.close()


def quantize_weight(w: np.ndarray, *, per_channel: bool, reduce_range: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weight, float scale, int8 zero point) of a (K, N) float32 weight, as ORT's quantizer computes them.

    Symmetric int8: per output column (axis 1) or over the whole tensor, scale =
    2 max|w| / (qmax - qmin) in float64, stored as float32 (1.0 for an all-zero range),
    zero point 0, q = round-half-even(w / scale) clipped to int8.
    """
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=reduce_range, symmetric=True)
    absmax = np.abs(w).max(axis=0) if per_channel else np.abs(w).max()
    absmax = np.asarray(absmax, dtype=w.dtype)
    scale64 = (absmax.astype(np.float64) * 2.0) / (float(qmax) - float(qmin))
    tiny = np.finfo(w.dtype).tiny
    scale = np.where(scale64 < tiny, np.array(1.0, w.dtype), scale64.astype(w.dtype)).astype(w.dtype)
    q = np.round(w / scale)
    np.clip(q, -128, 127, out=q)
    return q.astype(np.int8), scale, np.zeros(scale.shape, np.int8)


def _float_tensors(model) -> set[str]:
    """Names of float32 values in the graph: inputs, initializers and inferred value infos, graph outputs."""
    from onnx import TensorProto

    vals = [*model.graph.input, *model.graph.value_info, *model.graph.output]
    out = {v.name for v in vals if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return out | {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}


def _inputs_used(nodes) -> set[str]:
    """Every name the nodes read, subgraphs (If, Loop, Scan bodies) included: outer initializers they use stay."""
    used: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        used.update(node.input)
        for a in node.attribute:
            stack.extend(n for sub in ([a.g] if a.HasField("g") else list(a.graphs)) for n in sub.node)
    return used


def quantize_dynamic_streaming(
    src: Path,
    dst: Path,
    *,
    nodes_to_exclude: Iterable[str] = (),
    per_channel: bool = True,
    reduce_range: bool = False,
) -> int:
    """Write `src` with its constant-weight MatMuls (and Gemms, rewritten as MatMul + Add) as dynamic int8 to `dst`.

    The graph is read without its external data; each weight is read when its node is
    rewritten. `dst` gets `<name>.data` beside it. Returns the number of MatMuls quantized.
    """
    import onnx
    from onnx import TensorProto, helper

    from kinema.quantize.graph_rewrite import gemms_as_matmuls

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=False)
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 11:
        raise ValueError(f"{src.name}: opset below 11 has no DynamicQuantizeLinear; use ORT's quantize_dynamic")
    weights = _Weights(src, dst)
    try:
        gemms_as_matmuls(model, read=weights.read)
        # value types for the float check; the inferred shapes stay in the graph, as ORT's tool leaves
        # them (ONNX Runtime's optimiser fuses by them: without them the output differs in the last bits)
        model = onnx.shape_inference.infer_shapes(model)
        g = model.graph
        floats = _float_tensors(model)
        inits = {i.name: i for i in g.initializer}
        exclude = set(nodes_to_exclude)
        quantized_w: dict[str, tuple[str, str, str]] = {}
        quantized_x: dict[str, tuple[str, str, str]] = {}
        new_inits, nodes, n = [], [], 0
        for node in g.node:
            w_name = node.input[1] if node.op_type == "MatMul" else None
            w = inits.get(w_name) if w_name else None
            if (
                w is None
                or node.name in exclude
                or w.data_type != TensorProto.FLOAT
                or len(w.dims) != 2
                or node.input[0] not in floats
            ):
                nodes.append(node)
                continue
            x = node.input[0]
            if x not in quantized_x:
                quantized_x[x] = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
                nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(quantized_x[x]), f"{x}_QuantizeLinear"))
            if w_name not in quantized_w:
                q, scale, zp = quantize_weight(weights.read(w), per_channel=per_channel, reduce_range=reduce_range)
                names = (f"{w_name}_quantized", f"{w_name}_scale", f"{w_name}_zero_point")
                new_inits += [weights.tensor(q, names[0]), weights.tensor(scale, names[1]), weights.tensor(zp, names[2])]
                quantized_w[w_name] = names
            xq, xs, xz = quantized_x[x]
            wq, ws, wz = quantized_w[w_name]
            out = node.output[0]
            base = f"{node.name}_quant" if node.name else f"{out}_quant"
            nodes += [
                helper.make_node("MatMulInteger", [xq, wq, xz, wz], [f"{out}_output_quantized"], base),
                helper.make_node("Cast", [f"{out}_output_quantized"], [f"{out}_output_quantized_cast_output"], f"{out}_output_quantized_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [xs, ws], [f"{base}_scales_mul:0"], f"{base}_scales_mul"),
                helper.make_node("Mul", [f"{out}_output_quantized_cast_output", f"{base}_scales_mul:0"], [out], f"{base}_output_scale_mul"),
            ]
            n += 1
        used = _inputs_used(nodes) | {o.name for o in g.output}
        kept = [weights.tensor(weights.read(i), i.name) for i in g.initializer if i.name in used]
        del g.node[:]
        g.node.extend(nodes)
        del g.initializer[:]
        g.initializer.extend(kept + new_inits)
    finally:
        weights.close()
    onnx.save(model, str(dst))
    return n


__all__ = ["EXTERNAL_MIN_BYTES", "quantize_dynamic_streaming", "quantize_weight"]
