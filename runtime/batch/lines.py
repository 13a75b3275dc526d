"""A batch file: one request per JSONL line, checked whole before any worker starts.

    {"prompt": "a red ball bouncing on a white background", "seeds": [0, 1, 2], "name": "ball"}
    {"task": "animate", "prompt": "the cat turns its head", "inputs": ["cat.png"], "seconds": 2}
    {"prompt": "a blue square moving left", "steps": 30, "guidance": 6, "seed": 7, "name": "square.webm"}

A line holds `Request` fields (runtime/request.py: the task, its input files, the settings,
step skipping, marks) plus `seed` or `seeds` and `name`, the output file's name inside the
output folder (a stem gets `.mp4`; with several seeds each file gets `-seed<N>`). Input
paths are relative to the batch file's folder. `--seeds N` runs seeds 0..N-1 for every line
that names none. Output and policy paths are the batch runner's to set, not a line's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..request import Request

SUFFIXES = (".mp4", ".webm", ".gif")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
_NOT_FROM_A_LINE = ("output", "policy")


@dataclass(frozen=True)
class Item:
    """One video of the batch: the line it came from, its seed, its request (output set) and its key."""

    line: int
    seed: int
    request: Request

    @property
    def key(self) -> str:
        return f"{self.line}:{self.seed}"


def _name(line: int, given, seed: int, several: bool) -> str:
    if given is None:
        stem, suffix = f"{line:05d}", ".mp4"
    else:
        if not isinstance(given, str) or not _NAME.match(given):
            raise InputError(f"line {line}: name={given!r} must be a file name (letters, digits, . _ -), no folders")
        stem, suffix = (given[: -len(Path(given).suffix)], Path(given).suffix) if Path(given).suffix in SUFFIXES else (given, ".mp4")
    return f"{stem}-seed{seed}{suffix}" if several or given is None else f"{stem}{suffix}"


def parse(path: str | Path, out: Path, *, seeds: int | None = None, keep_going: bool = False) -> tuple[list[Item], list[str]]:
    """(items, errors): every line checked as JSON and as a request; errors name the line and field.

    Without `keep_going` the first error is raised (InputError); with it, bad lines are
    returned as errors and the good ones run.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"batch file {path}: cannot be read ({e.strerror if isinstance(e, OSError) else 'not UTF-8'})") from None
    items, errors, names = [], [], {}
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            made = _line(n, raw, path.parent, out, seeds)
            seen = dict(names)
            for item in made:
                if item.request.output in seen:
                    raise InputError(f"line {n}: output {Path(item.request.output).name} is also that of line {seen[item.request.output]}")
                seen[item.request.output] = n
            names = seen
            items += made
        except InputError as e:
            if not keep_going:
                raise
            errors.append(str(e))
    if not items and not errors:
        raise InputError(f"batch file {path}: has no requests")
    return items, errors


def _line(n: int, raw: str, base: Path, out: Path, seeds: int | None) -> list[Item]:
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise InputError(f"line {n}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"line {n}: must be a JSON object, got {type(data).__name__}")
    for key in _NOT_FROM_A_LINE:
        if key in data:
            raise InputError(f"line {n}: {key} is set by the batch runner (--out, --policy), not by a line")
    name = data.pop("name", None)
    if "seed" in data and "seeds" in data:
        raise InputError(f"line {n}: give seed or seeds, not both")
    line_seeds = data.pop("seeds", None)
    if line_seeds is None:
        line_seeds = [data.pop("seed")] if "seed" in data else list(range(seeds)) if seeds else [0]
    if not isinstance(line_seeds, list) or not line_seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in line_seeds):
        raise InputError(f"line {n}: seeds={line_seeds!r} must be a non-empty list of integers in [0, 2^32)")
    if isinstance(data.get("inputs"), list):
        data["inputs"] = [str(base / p) if isinstance(p, str) else p for p in data["inputs"]]
    try:
        request = Request.from_dict(data)
    except InputError as e:
        raise InputError(f"line {n}: {str(e).removeprefix('request.')}") from None
    for p in request.inputs:
        if not Path(p).is_file():
            raise InputError(f"line {n}: input file {p} does not exist")
    several = len(line_seeds) > 1
    return [Item(n, s, replace(request, seed=s, output=str(out / _name(n, name, s, several)))) for s in line_seeds]
