"""What every bundle of a comparison generates: prompts (optionally ShapesBench rows), seeds, settings; and the checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kinema.runtime.bundle.load import Bundle
from kinema.runtime.errors import InputError
from kinema.runtime.pipeline import Pipeline

from kinema.quantize.bundle_tools import BundleTools, prompt_text, spread, tools_of


@dataclass(frozen=True)
class CompareSettings:
    """What every bundle generates: prompts (optionally ShapesBench rows), seeds and generate settings."""

    prompts: tuple[str, ...]
    rows: tuple[dict, ...] | None = None  # ShapesBench rows, one per prompt: adherence is scored
    seeds: tuple[int, ...] = (0,)
    detail_prompts: int = 2  # prompts whose every step and graph input is compared
    generate: Mapping = field(default_factory=dict)  # steps, frames, height, width, guidance, ...

    def __post_init__(self):
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise InputError("compare needs at least one non-empty prompt")
        if self.rows is not None and len(self.rows) != len(self.prompts):
            raise InputError("compare: rows and prompts differ in length")
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise InputError(f"seeds {self.seeds!r} must be whole numbers >= 0")
        if not isinstance(self.detail_prompts, int) or self.detail_prompts < 1:
            raise InputError(f"detail_prompts={self.detail_prompts!r} must be at least 1")
        object.__setattr__(self, "generate", dict(self.generate))

    @classmethod
    def default(cls, source: Bundle | BundleTools, n: int = 8, **kw) -> "CompareSettings":
        """`n` prompts spread over the bundle's manifest tools.calibration_prompts (generic ones when it has none).

        Prompt rows with ShapesBench "objects" (the tiny family's) are scored for adherence.
        """
        if isinstance(source, str):
            raise TypeError(f"CompareSettings.default takes the bundle (its manifest lists the prompts), not the name {source!r}")
        tools = source if isinstance(source, BundleTools) else tools_of(source)
        picked = spread(tools.calibration_prompts, n)
        return cls(tuple(prompt_text(r) for r in picked), scored_rows(picked, lambda i: f"manifest tools.calibration_prompts, picked prompt {i}"), **kw)


def load_prompt_file(path: str | Path, limit: int | None = None) -> tuple[tuple[str, ...], tuple[dict, ...] | None]:
    """Prompts from a file: JSONL rows with a "prompt" (rows with ShapesBench "objects" are scored), or one prompt per line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {p}: {'is a folder, not a file' if p.is_dir() else 'no such file'}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--prompts {p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if limit is not None:
        lines = lines[:limit]
    if not lines:
        raise InputError(f"--prompts {p}: no prompts in the file")
    if not lines[0].lstrip().startswith("{"):
        return tuple(line.strip() for line in lines), None
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"--prompts {p} line {i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise InputError(f"--prompts {p} line {i}: a row needs a non-empty \"prompt\"")
        rows.append(row)
    return tuple(r["prompt"] for r in rows), scored_rows(rows, lambda i: f"--prompts {p} line {i}")


def scored_rows(rows, where: Callable[[int], str]) -> tuple[dict, ...] | None:
    """The rows, checked, when every one is a ShapesBench row (has "objects"): their videos get adherence scores.

    A row says itself what its video should show, so this holds for any family's bundle.
    `where(i)` names the i-th row (1-based) in errors.
    """
    if not rows or not all(isinstance(r, dict) and "objects" in r for r in rows):
        return None
    from kinema.models import shapes_bench

    try:
        return tuple(shapes_bench.validate_row(r, where(i)) for i, r in enumerate(rows, 1))
    except ValueError as e:
        raise InputError(str(e)) from None


def check_comparable(ref: Bundle, others: Sequence[Bundle], settings: CompareSettings) -> None:
    """InputError unless every bundle is of the reference's family and makes the same latent for the settings."""
    pipe = Pipeline(ref)
    st = pipe.check_inputs(settings.prompts[0], seed=settings.seeds[0], **settings.generate)
    shape = pipe.latent_shape(st)
    for b in others:
        if b.family != ref.family:
            raise InputError(f"cannot compare {b.path} (family {b.family!r}) with {ref.path} (family {ref.family!r}): bundles must be of one family")
        if b.latent != ref.latent:
            raise InputError(f"cannot compare {b.path} with {ref.path}: latent geometry differs ({b.latent} vs {ref.latent})")
        other = Pipeline(b)
        other_shape = other.latent_shape(other.check_inputs(settings.prompts[0], seed=settings.seeds[0], **settings.generate))
        if other_shape != shape:
            raise InputError(f"cannot compare {b.path} with {ref.path}: latent shapes differ for these settings ({list(other_shape)} vs {list(shape)})")


__all__ = ["CompareSettings", "check_comparable", "load_prompt_file", "scored_rows"]
