"""What one exported graph must be (GraphSpec), and the errors an export that is not raises."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kinema.runtime.errors import KinemaError


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
    # For a module with custom torch ops: a function returning their ONNX translations
    # (torch.onnx.export's custom_translation_table; export/tiny_forms.py).
    translations: Callable[[], dict] | None = None

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
                if not isinstance(symbol, str) or parse_symbol(symbol) is None:
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


def parse_symbol(symbol: str) -> tuple[int, str] | None:
    """'H' -> (1, 'H'); '2*H' -> (2, 'H'); anything else -> None."""
    factor, _, base = symbol.rpartition("*")
    if not base.isidentifier():
        return None
    if not factor:
        return 1, base
    return (int(factor), base) if factor.isdigit() and int(factor) > 0 else None


__all__ = [
    "ExportValidationError",
    "FrozenAxisError",
    "GraphSpec",
    "InputNamesError",
    "OrtRunError",
    "OutputNamesError",
    "ShapeMismatchError",
    "ValueMismatchError",
    "parse_symbol",
]
