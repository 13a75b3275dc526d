"""Trace one module to one ONNX file, checked against PyTorch: the generic export path.

A family file wraps its module so `forward(*inputs)` takes the tensors named by a
`GraphSpec` in order, picks example and check inputs, and calls `export_graph`. This
file does the rest: trace with the dynamo exporter, check the saved graph (names, then
dynamic axes, then shapes, then values at a shape other than the traced one), and move
the file into place only when every check passed.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from kinema.runtime.bundle.load import sha256_file
from kinema.runtime.errors import KinemaError

if TYPE_CHECKING:
    import torch

# Weights above this go to a `<file>.data` sidecar. Protobuf cannot serialise a message
# of 2 GiB or more, and the graph itself needs room next to the weights.
EXTERNAL_DATA_BYTES = 2**31 - 2**26

# The same symbolic name on two inputs is one shared Dim, so the exporter collapses the
# second axis onto the first and warns that the name "will not be used". When both
# names are the same, the warning is noise; when they differ, it is left to show.
_SHARED_NAME_WARNING = (
    r"# The axis name: (\w+) will not be used, since it shares the same shape "
    r"constraints with another axis: \1\."
)


class ExportValidationError(KinemaError):
    """An exported graph disagrees with its GraphSpec or with PyTorch; no file was written."""


class InputNamesError(ExportValidationError):
    """The graph's input names are not the spec's input names, in order."""


class OutputNamesError(ExportValidationError):
    """The graph's (or the module's) outputs are not the spec's output names, in order."""


class FrozenAxisError(ExportValidationError):
    """A declared dynamic axis is a fixed number, or tied to another axis, in the graph."""


class OrtRunError(ExportValidationError):
    """ONNX Runtime could not load the graph or run it at the check inputs."""


class ShapeMismatchError(ExportValidationError):
    """An ONNX Runtime output has another shape or dtype than PyTorch's at the check inputs."""


class ValueMismatchError(ExportValidationError):
    """An ONNX Runtime output differs from PyTorch's by more than atol + rtol * |reference|."""


@dataclass(frozen=True)
class GraphSpec:
    """What one exported graph must be: I/O names in order, dynamic axes, tolerance."""

    name: str  # the component, e.g. "denoiser"
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # Per input and output name: axis index -> symbolic name ("B", "T", "H", "W", "L").
    # One name on several tensors is one size: the exporter is told they are equal.
    dynamic_axes: Mapping[str, Mapping[int, str]]
    atol: float
    rtol: float
    # 18 is the opset torchlib is written in, so no version-conversion pass runs, and it
    # has LayerNormalization. 23 emits the Attention op, which ORT 1.32's CPU kernel
    # rejects for a broadcast (B, 1, 1, L) mask.
    opset: int = 18
    # False selects the TorchScript exporter: only for a module the dynamo exporter
    # cannot trace.
    dynamo: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_names", tuple(self.input_names))
        object.__setattr__(self, "output_names", tuple(self.output_names))
        names = self.input_names + self.output_names
        if not self.name:
            raise ValueError("GraphSpec.name is empty; name the component, e.g. 'denoiser'")
        if not self.input_names or not self.output_names:
            raise ValueError(f"GraphSpec {self.name!r}: needs at least one input and one output name")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"GraphSpec {self.name!r}: names {dupes} repeat; input and output names must be unique")
        frozen: dict[str, Mapping[int, str]] = {}
        for tensor, axes in self.dynamic_axes.items():
            if tensor not in names:
                raise ValueError(
                    f"GraphSpec {self.name!r}: dynamic_axes names {tensor!r}, which is no input or output "
                    f"(inputs {list(self.input_names)}, outputs {list(self.output_names)})"
                )
            for axis, symbol in axes.items():
                if not isinstance(axis, int) or isinstance(axis, bool) or axis < 0:
                    raise ValueError(f"GraphSpec {self.name!r}: {tensor!r} axis {axis!r} must be an int >= 0")
                if not isinstance(symbol, str) or _parse_symbol(symbol) is None:
                    raise ValueError(
                        f"GraphSpec {self.name!r}: {tensor!r} axis {axis} is named {symbol!r}; "
                        "a symbolic name must be a Python identifier such as 'B' or 'T', or "
                        "a multiple of one such as '2*H' (a size the module derives from another)"
                    )
            frozen[tensor] = MappingProxyType(dict(axes))
        object.__setattr__(self, "dynamic_axes", MappingProxyType(frozen))
        for field in ("atol", "rtol"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"GraphSpec {self.name!r}: {field}={value!r}; it must be a finite number >= 0")


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


def export_graph(
    module: torch.nn.Module,
    spec: GraphSpec,
    example_inputs: tuple[torch.Tensor, ...],
    check_inputs: tuple[torch.Tensor, ...] | Sequence[tuple[torch.Tensor, ...]],
    path: str | os.PathLike,
) -> dict:
    """Trace `module` at `example_inputs`, check it at `check_inputs`, write `path`; returns its manifest entry.

    The entry: {"file", "bytes", "sha256", "inputs", "outputs", "max_abs_diff", "atol",
    "rtol", "external_data"}; "external_data" is None, or {"file", "bytes", "sha256"} of
    the weights sidecar when they exceed EXTERNAL_DATA_BYTES. The graph is staged in a
    hidden folder beside `path` and moved into place only after every check passed, so
    a failure (an ExportValidationError or the exporter's own) leaves nothing behind.
    """
    path = Path(path)
    example_inputs = tuple(example_inputs)
    check_sets = _as_check_sets(check_inputs)
    _check_module(module)
    _check_inputs_fit(spec, example_inputs, "example_inputs")
    _shared_sizes(spec, example_inputs)
    for n, check in enumerate(check_sets):
        _check_inputs_fit(spec, check, f"check_inputs[{n}]")
        _check_differs_from_example(spec, example_inputs, check, n)

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    moved: list[Path] = []
    try:
        staged = staging / path.name  # the final name, so an external-data reference stays valid after the move
        if spec.dynamo:
            _trace_dynamo(module, spec, example_inputs, staged)
        else:
            _trace_torchscript(module, spec, example_inputs, staged)
        max_abs_diff = validate_graph(staged, module, spec, check_sets)

        inputs, outputs = onnx_io_signature(staged)
        sidecars = sorted(p for p in staging.iterdir() if p != staged)
        external = None
        if sidecars:
            if len(sidecars) > 1:
                raise RuntimeError(f"exporter wrote several sidecar files {[p.name for p in sidecars]}; expected one")
            external = {
                "file": sidecars[0].name,
                "bytes": sidecars[0].stat().st_size,
                "sha256": sha256_file(sidecars[0]),
            }
        entry = {
            "file": path.name,
            "bytes": staged.stat().st_size,
            "sha256": sha256_file(staged),
            "inputs": inputs,
            "outputs": outputs,
            "max_abs_diff": max_abs_diff,
            "atol": spec.atol,
            "rtol": spec.rtol,
            "external_data": external,
        }
        # Weights first, graph last: a graph at `path` always has its weights beside it.
        for sidecar in sidecars:
            os.replace(sidecar, path.parent / sidecar.name)
            moved.append(path.parent / sidecar.name)
        stale = path.parent / f"{path.name}.data"
        if external is None and stale.exists():
            stale.unlink()  # the weights of the graph being replaced; the new one is self-contained
        os.replace(staged, path)
        return entry
    except BaseException:
        for p in moved:
            p.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def validate_graph(
    path: str | os.PathLike,
    module: torch.nn.Module,
    spec: GraphSpec,
    check_inputs: tuple[torch.Tensor, ...] | Sequence[tuple[torch.Tensor, ...]],
) -> float:
    """Check a saved graph against `spec` and against `module` run on `check_inputs`; returns the max |ONNX - PyTorch|.

    Checks, in order, each with its own error: input and output names, declared dynamic
    axes symbolic in the graph, ONNX Runtime (CPU) runs, output shapes and dtypes, values
    within atol + rtol * |reference| for every output and every check set.
    """
    import onnxruntime as ort
    import torch

    check_sets = _as_check_sets(check_inputs)
    _check_module(module)
    for n, check in enumerate(check_sets):
        _check_inputs_fit(spec, check, f"check_inputs[{n}]")

    inputs, outputs = onnx_io_signature(path)
    _check_names(spec, path, inputs, outputs)
    _check_dynamic_axes(spec, path, inputs, outputs)

    ort_errors = _ort_errors()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's shape-annotation warnings would bury the error we raise
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except ort_errors as e:
        raise OrtRunError(f"{spec.name}: ONNX Runtime cannot load {path}: {e}") from e

    max_abs_diff = 0.0
    for n, check in enumerate(check_sets):
        at = f"check_inputs[{n}] ({_describe_shapes(spec.input_names, check)})"
        with torch.no_grad():
            reference = _as_outputs(module(*check))
        if len(reference) != len(spec.output_names):
            raise OutputNamesError(
                f"{spec.name}: the module returns {len(reference)} outputs but the spec names "
                f"{len(spec.output_names)} {list(spec.output_names)}; make the wrapper return one tensor per name"
            )
        feed = {name: t.detach().cpu().numpy() for name, t in zip(spec.input_names, check)}
        try:
            got = session.run(list(spec.output_names), feed)
        except ort_errors as e:
            raise OrtRunError(
                f"{spec.name}: ONNX Runtime failed at {at}: {e}. A size the trace took as a constant "
                "inside the graph shows up this way; find the Python int taken from a shape"
            ) from e
        for name, ref_t, onnx_value in zip(spec.output_names, reference, got):
            ref = ref_t.detach().cpu().numpy()
            if onnx_value.shape != ref.shape or onnx_value.dtype != ref.dtype:
                raise ShapeMismatchError(
                    f"{spec.name}: output {name!r} at {at} is {onnx_value.dtype} {tuple(onnx_value.shape)} from "
                    f"ONNX Runtime but {ref.dtype} {tuple(ref.shape)} from PyTorch; the graph computes "
                    "something else than the module at this shape"
                )
            max_abs_diff = max(max_abs_diff, _compare_values(spec, name, at, ref, onnx_value))
    return max_abs_diff


def _parse_symbol(symbol: str) -> tuple[int, str] | None:
    """'H' -> (1, 'H'); '2*H' -> (2, 'H'); anything else -> None."""
    factor, _, base = symbol.rpartition("*")
    if not base.isidentifier():
        return None
    if not factor:
        return 1, base
    return (int(factor), base) if factor.isdigit() and int(factor) > 0 else None


def _trace_dynamo(module: torch.nn.Module, spec: GraphSpec, example_inputs: tuple, staged: Path) -> None:
    """Export with torch.export + torchlib and save as one file, or with a sidecar when large."""
    import onnx_ir as ir
    import torch
    from torch.export import Dim

    symbols = sorted({s for axes in spec.dynamic_axes.values() for s in axes.values()})
    bases = sorted({_parse_symbol(s)[1] for s in symbols})
    dims = {b: Dim(b) for b in bases}  # one Dim per name: inputs sharing "B" share one size
    for s in symbols:
        factor, base = _parse_symbol(s)
        if factor != 1:
            dims[s] = factor * dims[base]  # a derived size, e.g. a cache at twice the latent height
    dynamic_shapes = tuple(
        {axis: dims[s] for axis, s in spec.dynamic_axes.get(name, {}).items()} or None for name in spec.input_names
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SHARED_NAME_WARNING)
        program = torch.onnx.export(
            module,
            example_inputs,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            opset_version=spec.opset,
            optimize=True,  # constant folding and dead-node removal; ORT would redo part of it at every load
            verbose=False,
        )
    weight_bytes = sum(
        v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None
    )
    external = f"{staged.name}.data" if weight_bytes > EXTERNAL_DATA_BYTES else None
    ir.save(program.model, staged, external_data=external)


def _trace_torchscript(module: torch.nn.Module, spec: GraphSpec, example_inputs: tuple, staged: Path) -> None:
    """Export with the legacy TorchScript exporter, which writes a sidecar by itself past 2 GB."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based")
        torch.onnx.export(
            module,
            example_inputs,
            str(staged),
            dynamo=False,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_axes={name: dict(axes) for name, axes in spec.dynamic_axes.items()},
            opset_version=spec.opset,
        )


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
                if kind == "input" and dim is not None and dim != symbol and _parse_symbol(symbol)[0] == 1:
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


def _as_check_sets(check_inputs: Any) -> list[tuple]:
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


def _check_module(module: Any) -> None:
    if getattr(module, "training", False):
        raise ValueError(
            f"{type(module).__name__} is in training mode (dropout and batch statistics would differ "
            "between trace and check); call module.eval() before exporting"
        )


def _check_inputs_fit(spec: GraphSpec, tensors: tuple, label: str) -> None:
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


def _shared_sizes(spec: GraphSpec, tensors: tuple) -> dict[str, int]:
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


def _check_differs_from_example(spec: GraphSpec, example: tuple, check: tuple, n: int) -> None:
    """A check at the traced shape cannot catch a frozen axis, so it must move at least one dynamic axis."""
    traced = _shared_sizes(spec, example)
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
