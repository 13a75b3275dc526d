"""Trace one module to one ONNX file, checked against PyTorch: the generic export path.

A family file wraps its modules so `forward(*inputs)` takes the tensors named by a
`GraphSpec` in order, picks example and check inputs, and declares each graph as a
`ComponentExport` (export/tiny.py, export/wan_graphs.py); `export_components`
runs them. This file does the rest: trace with the dynamo exporter, check the saved
graph (names, then dynamic axes, then shapes, then values at a shape other than the
traced one; export/graph_checks.py), and move the file into place only when every
check passed."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinema.runtime.bundle.load import sha256_file

# the spec, the errors and the checks live beside this file; imported here too, where callers know them
from kinema.export.graph_checks import (
    as_check_sets,
    check_differs_from_example,
    check_inputs_fit,
    check_module,
    shared_sizes,
    onnx_io_signature,
    validate_graph,
)
from kinema.export.graph_spec import (
    ExportValidationError,
    FrozenAxisError,
    GraphSpec,
    InputNamesError,
    OrtRunError,
    OutputNamesError,
    ShapeMismatchError,
    ValueMismatchError,
    parse_symbol,
)

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


@dataclass(frozen=True)
class ComponentExport:
    """One graph of a bundle, declared by its family file: wrapper module, spec, traced and check inputs."""

    spec: GraphSpec
    module: Any  # a torch.nn.Module in eval mode whose forward takes the spec's inputs in order
    example_inputs: tuple  # traced at these
    check_inputs: Any  # a tuple of tensors, or a list of them, at other sizes than the traced ones
    release_module: bool = False  # drop the module's weights once its outputs are known (no later graph uses it)

    @property
    def file(self) -> str:
        return f"{self.spec.name}.onnx"


def export_components(stage: Path, components: Iterable[ComponentExport]) -> dict[str, dict]:
    """Export each declared graph into `stage`; returns the manifest's components section, in order.

    `components` is consumed one at a time: a family's generator builds a graph's inputs
    only when the one before it is written, so the draws from torch's global generator
    happen in the order they always did.
    """
    return {c.spec.name: export_graph(c.module, c.spec, c.example_inputs, c.check_inputs, stage / c.file, release_module=c.release_module) for c in components}


def export_graph(
    module: torch.nn.Module,
    spec: GraphSpec,
    example_inputs: tuple[torch.Tensor, ...],
    check_inputs: tuple[torch.Tensor, ...] | Sequence[tuple[torch.Tensor, ...]],
    path: str | os.PathLike,
    *,
    release_module: bool = False,
) -> dict:
    """Trace `module` at `example_inputs`, check it at `check_inputs`, write `path`; returns its manifest entry.

    With `release_module` the module's weights are dropped after tracing, once PyTorch's
    outputs at `check_inputs` are computed and before ONNX Runtime loads the graph: peak
    memory is then one copy of the weights, not two. The module is unusable afterwards.

    The entry: {"file", "bytes", "sha256", "inputs", "outputs", "max_abs_diff", "atol",
    "rtol", "external_data"}; "external_data" is None, or {"file", "bytes", "sha256"} of
    the weights sidecar when they exceed EXTERNAL_DATA_BYTES. The graph is staged in a
    hidden folder beside `path` and moved into place only after every check passed, so
    a failure (an ExportValidationError or the exporter's own) leaves nothing behind.
    """
    path = Path(path)
    example_inputs = tuple(example_inputs)
    check_sets = as_check_sets(check_inputs)
    check_module(module)
    check_inputs_fit(spec, example_inputs, "example_inputs")
    shared_sizes(spec, example_inputs)
    for n, check in enumerate(check_sets):
        check_inputs_fit(spec, check, f"check_inputs[{n}]")
        check_differs_from_example(spec, example_inputs, check, n)

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    moved: list[Path] = []
    try:
        staged = staging / path.name  # the final name, so an external-data reference stays valid after the move
        if spec.dynamo:
            _trace_dynamo(module, spec, example_inputs, staged)
        else:
            _trace_torchscript(module, spec, example_inputs, staged)
        max_abs_diff = validate_graph(staged, module, spec, check_sets, release_module=release_module)

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


def _trace_dynamo(module: torch.nn.Module, spec: GraphSpec, example_inputs: tuple, staged: Path) -> None:
    """Export with torch.export + torchlib and save as one file, or with a sidecar when large."""
    import onnx_ir as ir
    import torch
    from torch.export import Dim

    symbols = sorted({s for axes in spec.dynamic_axes.values() for s in axes.values()})
    bases = sorted({parse_symbol(s)[1] for s in symbols})
    dims = {b: Dim(b) for b in bases}  # one Dim per name: inputs sharing "B" share one size
    for s in symbols:
        factor, base = parse_symbol(s)
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
            custom_translation_table=spec.translations() if spec.translations else None,
            optimize=True,  # constant folding and dead-node removal; ORT would redo part of it at every load
            verbose=False,
        )
    weight_bytes = sum(
        v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None
    )
    external = f"{staged.name}.data" if weight_bytes > EXTERNAL_DATA_BYTES else None
    ir.save(program.model, staged, external_data=external)
    # The exporter's program outlives this call (measured: after gc.collect its initializers
    # still held the module's own weight tensors; what keeps it alive was not traced): cut
    # them loose, so dropping the module's weights (release_weights) frees them.
    for value in program.model.graph.initializers.values():
        value.const_value = None


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


__all__ = [
    "EXTERNAL_DATA_BYTES",
    "ComponentExport",
    "ExportValidationError",
    "FrozenAxisError",
    "GraphSpec",
    "InputNamesError",
    "OrtRunError",
    "OutputNamesError",
    "ShapeMismatchError",
    "ValueMismatchError",
    "export_components",
    "export_graph",
    "onnx_io_signature",
    "sha256_file",
    "validate_graph",
]
