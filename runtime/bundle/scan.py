"""What an ONNX file says of itself, read from the protobuf without `onnx`.

A bundle is untrusted input: before ONNX Runtime opens a graph, kinema checks that every
external-data file the graph names stays inside the bundle folder, and that the graph's
real inputs and outputs are the ones its manifest declares. The runtime does not depend on
the `onnx` package, so this walks the few protobuf messages that matter directly: those
that can hold tensors (graph initializers, node attributes, subgraphs, functions) and the
main graph's input and output value infos.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleError

# Field numbers from onnx.proto (stable since IR version 3).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_NAME = 8
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_GRAPH_INPUT, _GRAPH_OUTPUT = 11, 12
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2
# onnx.TensorProto.DataType numbers, as numpy names them (the manifest's dtype strings)
DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
          9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}

_MAX_DEPTH = 64


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) where value is an int or a memoryview."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise ValueError("truncated length-delimited field")
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = None, i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > n:
            raise ValueError("truncated field")
        yield field, wire, value


def _tensor(buf, out):
    for f, w, v in _fields(buf):
        if f == _TENSOR_EXTERNAL_DATA and w == 2:
            key = value = None
            for ef, ew, ev in _fields(v):
                if ef == _ENTRY_KEY and ew == 2:
                    key = bytes(ev).decode("utf-8", "replace")
                elif ef == _ENTRY_VALUE and ew == 2:
                    value = bytes(ev).decode("utf-8", "replace")
            if key == "location" and value is not None:
                out.append(value)


def _sparse(buf, out):
    for f, w, v in _fields(buf):
        if f in (_SPARSE_VALUES, _SPARSE_INDICES) and w == 2:
            _tensor(v, out)


def _attribute(buf, out, depth):
    for f, w, v in _fields(buf):
        if w != 2:
            continue
        if f in (_ATTR_T, _ATTR_TENSORS):
            _tensor(v, out)
        elif f in (_ATTR_G, _ATTR_GRAPHS):
            _graph(v, out, depth + 1)
        elif f in (_ATTR_SPARSE, _ATTR_SPARSES):
            _sparse(v, out)


def _node(buf, out, depth):
    for f, w, v in _fields(buf):
        if f == _NODE_ATTRIBUTE and w == 2:
            _attribute(v, out, depth)


def _graph(buf, out, depth):
    if depth > _MAX_DEPTH:
        raise ValueError("subgraphs nested too deeply")
    for f, w, v in _fields(buf):
        if w != 2:
            continue
        if f == _GRAPH_INITIALIZER:
            _tensor(v, out)
        elif f == _GRAPH_SPARSE_INIT:
            _sparse(v, out)
        elif f == _GRAPH_NODE:
            _node(v, out, depth)


def _text(v) -> str:
    return bytes(v).decode("utf-8", "replace")


def _dims(buf) -> list:
    """A TensorShapeProto's dims: ints, axis names, or None where the graph names neither."""
    dims = []
    for f, w, v in _fields(buf):
        if f == _SHAPE_DIM and w == 2:
            dim = None
            for xf, xw, xv in _fields(v):
                if xf == _DIM_VALUE and xw == 0:
                    dim = xv
                elif xf == _DIM_PARAM and xw == 2:
                    dim = _text(xv)
            dims.append(dim)
    return dims


def _value_info(buf) -> dict:
    """{"name", "dtype", "shape"} of one graph input or output; shape None when the graph gives no rank."""
    out = {"name": "", "dtype": None, "shape": None}
    for f, w, v in _fields(buf):
        if f == _VALUE_NAME and w == 2:
            out["name"] = _text(v)
        elif f == _VALUE_TYPE and w == 2:
            tensors = [tv for tf, tw, tv in _fields(v) if tf == _TYPE_TENSOR and tw == 2]
            for tv in tensors:
                for ef, ew, ev in _fields(tv):
                    if ef == _TENSOR_ELEM_TYPE and ew == 0:
                        out["dtype"] = DTYPES.get(ev, f"onnx type {ev}")
                    elif ef == _TENSOR_SHAPE and ew == 2:
                        out["shape"] = _dims(ev)
    return out


def _signature(buf) -> tuple[list[dict], list[dict]]:
    weights, inputs, outputs = set(), [], []
    for f, w, v in _fields(buf):
        if w != 2:
            continue
        if f == _GRAPH_INPUT:
            inputs.append(_value_info(v))
        elif f == _GRAPH_OUTPUT:
            outputs.append(_value_info(v))
        elif f == _GRAPH_INITIALIZER:
            for tf, tw, tv in _fields(v):
                if tf == _TENSOR_NAME and tw == 2:
                    weights.add(_text(tv))
    # Models from before IR 4 list initializers as inputs too; they are weights, not inputs.
    return [i for i in inputs if i["name"] not in weights], outputs


def scan_model(path: Path) -> tuple[list[str], list[dict], list[dict]]:
    """(external-data locations, inputs, outputs) of the ONNX model at path, from one read.

    Locations are every external-data `location` string (duplicates kept once); inputs and
    outputs are those of the main graph, each {"name", "dtype", "shape"} (shape None when
    the graph leaves the rank unknown).
    """
    data = memoryview(Path(path).read_bytes())
    out: list[str] = []
    inputs: list[dict] = []
    outputs: list[dict] = []
    graphs = 0
    try:
        for f, w, v in _fields(data):
            if f == _MODEL_GRAPH and w == 2:
                graphs += 1
                _graph(v, out, 0)
                inputs, outputs = _signature(v)
            elif f == _MODEL_FUNCTIONS and w == 2:
                for ff, fw, fv in _fields(v):
                    if ff == _FUNCTION_NODE and fw == 2:
                        _node(fv, out, 0)
    except ValueError as e:
        raise BundleError(f"{path}: not a readable ONNX model ({e})") from None
    if graphs != 1:
        raise BundleError(f"{path}: not a readable ONNX model ({'no graph' if not graphs else 'more than one graph'})")
    return list(dict.fromkeys(out)), inputs, outputs


def external_data_locations(path: Path) -> list[str]:
    """Every external-data `location` string in the ONNX model at path (duplicates kept once)."""
    return scan_model(path)[0]
