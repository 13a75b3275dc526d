"""Checks of an exported graph: its inputs, its saved signature and dynamic axes, and its values against PyTorch.

Each check raises its own ExportValidationError subclass (graph_spec.py), naming what
differs and what to look for in the wrapper.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kinema.export.graph_spec import FrozenAxisError, GraphSpec, InputNamesError, OrtRunError, OutputNamesError, ShapeMismatchError, ValueMismatchError, parse_symbol

if TYPE_CHECKING:
    import torch


def onnx_io_signature(model_path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of a saved graph: name, numpy dtype name, shape of ints/symbols.

    A shape entry is an int (fixed), a str (symbolic, e.g. "B" or "(H//2)") or None
    (unknown); a shape is None when the rank itself is unknown. External weights are
    not read.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    # Models from before IR 4 list initializers as inputs too; they are weights, not inputs.
    weights = {init.name for init in graph.initializer}

    def describe(value: Any) -> dict:
        if value.type.WhichOneof("value") != "tensor_type":
            raise ValueError(f"{model_path}: {value.name!r} is not a tensor; kinema graphs take and return tensors only")
        tensor_type = value.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        except KeyError:
            dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        shape = None
        if tensor_type.HasField("shape"):
            shape = [
                d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                for d in tensor_type.shape.dim
            ]
        return {"name": value.name, "dtype": dtype, "shape": shape}

    inputs = [describe(v) for v in graph.input if v.name not in weights]
    outputs = [describe(v) for v in graph.output]
    return inputs, outputs


def validate_graph(
    path: str | os.PathLike,
    module: torch.nn.Module,
    spec: GraphSpec,
    check_inputs: tuple[torch.Tensor, ...] | Sequence[tuple[torch.Tensor, ...]],
    *,
    release_module: bool = False,
) -> float:
    """Check a saved graph against `spec` and against `module` run on `check_inputs`; returns the max |ONNX - PyTorch|.

    Checks, in order, each with its own error: input and output names, declared dynamic
    axes symbolic in the graph, ONNX Runtime (CPU) runs, output shapes and dtypes, values
    within atol + rtol * |reference| for every output and every check set.

    PyTorch's outputs are computed before ONNX Runtime loads the graph. With
    `release_module`, the module's weights are then dropped (`release_weights`), so the
    two copies of a large model are never in memory at once; the module is unusable after.
    """
    import onnxruntime as ort

    check_sets = as_check_sets(check_inputs)
    check_module(module)
    for n, check in enumerate(check_sets):
        check_inputs_fit(spec, check, f"check_inputs[{n}]")

    inputs, outputs = onnx_io_signature(path)
    _check_names(spec, path, inputs, outputs)
    _check_dynamic_axes(spec, path, inputs, outputs)

    references = [_reference(module, spec, check) for check in check_sets]
    if release_module:
        release_weights(module)
    ort_errors = _ort_errors()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's shape-annotation warnings would bury the error we raise
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except ort_errors as e:
        raise OrtRunError(f"{spec.name}: ONNX Runtime cannot load {path}: {e}") from e

    max_abs_diff = 0.0
    for n, (check, reference) in enumerate(zip(check_sets, references)):
        at = f"check_inputs[{n}] ({_describe_shapes(spec.input_names, check)})"
        feed = {name: t.detach().cpu().numpy() for name, t in zip(spec.input_names, check)}
        try:
            got = session.run(list(spec.output_names), feed)
        except ort_errors as e:
            raise OrtRunError(
                f"{spec.name}: ONNX Runtime failed at {at}: {e}. A size the trace took as a constant "
                "inside the graph shows up this way; find the Python int taken from a shape"
            ) from e
        for name, ref, onnx_value in zip(spec.output_names, reference, got):
            if onnx_value.shape != ref.shape or onnx_value.dtype != ref.dtype:
                raise ShapeMismatchError(
                    f"{spec.name}: output {name!r} at {at} is {onnx_value.dtype} {tuple(onnx_value.shape)} from "
                    f"ONNX Runtime but {ref.dtype} {tuple(ref.shape)} from PyTorch; the graph computes "
                    "something else than the module at this shape"
                )
            max_abs_diff = max(max_abs_diff, _compare_values(spec, name, at, ref, onnx_value))
    return max_abs_diff


def _reference(module, spec: GraphSpec, check: tuple) -> list[np.ndarray]:
    """The module's outputs at one check set, as NumPy arrays (one per spec output)."""
    import torch

    with torch.no_grad():
        reference = _as_outputs(module(*check))
    if len(reference) != len(spec.output_names):
        raise OutputNamesError(
            f"{spec.name}: the module returns {len(reference)} outputs but the spec names "
            f"{len(spec.output_names)} {list(spec.output_names)}; make the wrapper return one tensor per name"
        )
    return [t.detach().cpu().numpy() for t in reference]


def release_weights(module) -> int:
    """Drop every parameter and buffer of `module` (each replaced by an empty tensor); returns the bytes dropped.

    For a large model whose graph is written and whose outputs are known: ONNX Runtime can
    then load the graph without PyTorch's copy of the same weights beside it.
    """
    import gc

    import torch

    freed = 0
    for t in [*module.parameters(), *module.buffers()]:
        freed += t.numel() * t.element_size()
        t.data = torch.empty(0, dtype=t.dtype)
    gc.collect()  # the exporter's program holds the weights in reference cycles
    return freed


def _check_names(spec: GraphSpec, path: Path, inputs: list[dict], outputs: list[dict]) -> None:
    got_in = [v["name"] for v in inputs]
    if got_in != list(spec.input_names):
        raise InputNamesError(
            f"{spec.name}: graph {Path(path).name} has inputs {got_in}, the spec {list(spec.input_names)}; "
            "the wrapper's forward must take exactly the spec's inputs, in order"
        )
    got_out = [v["name"] for v in outputs]
    if got_out != list(spec.output_names):
        raise OutputNamesError(
            f"{spec.name}: graph {Path(path).name} has outputs {got_out}, the spec {list(spec.output_names)}; "
            "the wrapper's forward must return one tensor per spec output, in order"
        )


def _check_dynamic_axes(spec: GraphSpec, path: Path, inputs: list[dict], outputs: list[dict]) -> None:
    """Every declared dynamic axis must be symbolic; on inputs, under its own name (not tied to another)."""
    for kind, values in (("input", inputs), ("output", outputs)):
        for value in values:
            for axis, symbol in sorted(spec.dynamic_axes.get(value["name"], {}).items()):
                shape = value["shape"]
                if shape is None:
                    continue  # rank unknown: nothing is pinned
                where = f"{spec.name}: {kind} {value['name']!r} axis {axis} (declared {symbol!r})"
                if axis >= len(shape):
                    raise FrozenAxisError(f"{where}: the graph gives it rank {len(shape)} {shape}; fix the spec's axis")
                dim = shape[axis]
                if isinstance(dim, int):
                    raise FrozenAxisError(
                        f"{where} is frozen to {dim} in {Path(path).name} (shape {shape}); the exporter took the "
                        "traced size as a constant. Look in forward for a Python int taken from a shape, a "
                        "tensor or parameter sized to the example, or a torch._check on this size, and make "
                        "it follow the input shape; or drop the axis from spec.dynamic_axes"
                    )
                if kind == "input" and dim is not None and dim != symbol and parse_symbol(symbol)[0] == 1:
                    raise FrozenAxisError(
                        f"{where} is tied to {dim!r} in {Path(path).name} (shape {shape}); the module forces "
                        f"the two sizes equal. Give them one name in the spec, or make forward not need it"
                    )


def _compare_values(spec: GraphSpec, name: str, at: str, ref: np.ndarray, got: np.ndarray) -> float:
    """Max |got - ref| over one output; raises ValueMismatchError naming the worst element past tolerance."""
    if ref.size == 0:
        return 0.0
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(got64 - ref64)
    same = (ref64 == got64) | (np.isnan(ref64) & np.isnan(got64))  # equal infinities and NaN in both agree
    diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    allowed = spec.atol + spec.rtol * np.abs(np.nan_to_num(ref64, nan=0.0, posinf=0.0, neginf=0.0))
    excess = diff - allowed
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[worst] > 0:
        bad = int(np.count_nonzero(excess > 0))
        raise ValueMismatchError(
            f"{spec.name}: output {name!r} at {at}: {bad} of {ref.size} values differ from PyTorch beyond "
            f"atol + rtol*|ref| = {spec.atol:g} + {spec.rtol:g}*|ref|; worst at index {tuple(int(i) for i in worst)}: "
            f"PyTorch {ref64[worst]:.7g}, ONNX {got64[worst]:.7g}, |diff| {diff[worst]:.3g} > allowed "
            f"{allowed[worst]:.3g} (max |diff| over the output {float(diff.max()):.3g})"
        )
    return float(diff.max())


def as_check_sets(check_inputs: Any) -> list[tuple]:
    """One tuple of tensors, or a list of such tuples, as a list of tuples."""
    import torch

    if isinstance(check_inputs, torch.Tensor):
        raise TypeError("check_inputs is a tensor; pass a tuple of tensors (one per spec input), or a list of them")
    sets = list(check_inputs)
    if not sets:
        raise ValueError("check_inputs is empty; pass a tuple of tensors at a shape other than the traced one")
    if isinstance(sets[0], torch.Tensor):
        return [tuple(sets)]
    return [tuple(s) for s in sets]


def check_module(module: Any) -> None:
    if getattr(module, "training", False):
        raise ValueError(
            f"{type(module).__name__} is in training mode (dropout and batch statistics would differ "
            "between trace and check); call module.eval() before exporting"
        )


def check_inputs_fit(spec: GraphSpec, tensors: tuple, label: str) -> None:
    if len(tensors) != len(spec.input_names):
        raise ValueError(
            f"{spec.name}: {label} has {len(tensors)} tensors but the spec names {len(spec.input_names)} "
            f"inputs {list(spec.input_names)}"
        )
    for name, t in zip(spec.input_names, tensors):
        for axis in spec.dynamic_axes.get(name, {}):
            if axis >= t.dim():
                raise ValueError(
                    f"{spec.name}: {label} {name!r} has shape {tuple(t.shape)} but the spec declares dynamic axis {axis}"
                )


def shared_sizes(spec: GraphSpec, tensors: tuple) -> dict[str, int]:
    """Size of each symbolic name in `tensors`; a name with two sizes is an error (they share one Dim)."""
    sizes: dict[str, tuple[int, str]] = {}
    for name, t in zip(spec.input_names, tensors):
        for axis, symbol in spec.dynamic_axes.get(name, {}).items():
            size = int(t.shape[axis])
            if symbol in sizes and sizes[symbol][0] != size:
                raise ValueError(
                    f"{spec.name}: {symbol!r} is {sizes[symbol][0]} on {sizes[symbol][1]} but {size} on "
                    f"{name!r} axis {axis}; inputs sharing a symbolic name must share its size"
                )
            sizes.setdefault(symbol, (size, f"{name!r} axis {axis}"))
    return {symbol: size for symbol, (size, _) in sizes.items()}


def check_differs_from_example(spec: GraphSpec, example: tuple, check: tuple, n: int) -> None:
    """A check at the traced shape cannot catch a frozen axis, so it must move at least one dynamic axis."""
    traced = shared_sizes(spec, example)
    checked = {
        f"{name}[{axis}]": (int(e.shape[axis]), int(c.shape[axis]))
        for name, e, c in zip(spec.input_names, example, check)
        for axis in spec.dynamic_axes.get(name, {})
    }
    if checked and all(e == c for e, c in checked.values()):
        raise ValueError(
            f"{spec.name}: check_inputs[{n}] has the traced size on every dynamic axis "
            f"({', '.join(f'{s}={v}' for s, v in sorted(traced.items()))}); a check there cannot catch a frozen "
            "axis. Pick check inputs whose dynamic axes differ from the example's, ideally all of them"
        )


def _as_outputs(result: Any) -> tuple:
    import torch

    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
        return tuple(result)
    raise TypeError(
        f"the module returned {type(result).__name__}; the wrapper's forward must return a tensor or a tuple of tensors"
    )


def _describe_shapes(names: Sequence[str], tensors: tuple) -> str:
    return ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, tensors))


def _ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception types; they derive from Exception directly, with no common base."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel",
             "RuntimeException", "NotImplemented", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


__all__ = ["as_check_sets", "check_differs_from_example", "check_inputs_fit", "check_module", "onnx_io_signature", "shared_sizes", "validate_graph"]
