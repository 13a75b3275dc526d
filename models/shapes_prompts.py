"""ShapesBench's prompt rows: their format, checking and loading them, and the committed prompt files.

Prompt rows are JSON lines:
    {"prompt": "...", "background": "black",
     "objects": [{"color": "red", "shape": "circle", "motion": "left", "size": "small"}]}
("size" optional). Objects of one row have distinct colours: colour is how the scorer tells
them apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kinema.models import shapes_world as sw

DATA_DIR = Path(__file__).parent / "data"
PROMPTS_PATH = DATA_DIR / "shapes_prompts.jsonl"
HELDOUT_PROMPTS_PATH = DATA_DIR / "shapes_prompts_heldout.jsonl"


def validate_row(row: object, where: str = "row") -> dict:
    """The row itself when it is a valid prompt row; otherwise ValueError naming `where` and the problem."""

    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(row, dict):
        raise bad(f"expected a JSON object, got {type(row).__name__}")
    extra = set(row) - {"prompt", "background", "objects"}
    if extra:
        raise bad(f"unknown keys {sorted(extra)}; allowed: prompt, background, objects")
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise bad('"prompt" must be a non-empty string')
    if row.get("background") not in sw.BACKGROUNDS:
        raise bad(f'"background" {row.get("background")!r} is not one of {", ".join(sw.BACKGROUNDS)}')
    objects = row.get("objects")
    if not isinstance(objects, list) or not 1 <= len(objects) <= 2:
        raise bad('"objects" must be a list of 1 or 2 objects')
    allowed = {"color": tuple(sw.COLORS), "shape": sw.SHAPES, "motion": sw.MOTIONS, "size": sw.SIZES}
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise bad(f"object {i} must be a JSON object")
        extra = set(obj) - set(allowed)
        if extra:
            raise bad(f"object {i} has unknown keys {sorted(extra)}; allowed: {', '.join(allowed)}")
        for key, values in allowed.items():
            if key == "size" and key not in obj:
                continue
            if obj.get(key) not in values:
                raise bad(f"object {i} {key} {obj.get(key)!r} is not one of {', '.join(values)}")
        if obj["shape"] == "circle" and obj["motion"] == "spin":
            raise bad(f"object {i} is a spinning circle, which looks the same as a still one")
    colors = [o["color"] for o in objects]
    if len(set(colors)) != len(colors):
        raise bad(f"objects must have distinct colours (the scorer tells them apart by colour), got {colors}")
    return row


def load_prompts(path: str | Path) -> list[dict]:
    """The validated prompt rows of a JSONL file; ValueError names the line and the problem."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            rows.append(validate_row(row, where))
    if not rows:
        raise ValueError(f"{path}: no prompt rows")
    return rows



def make_prompt_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(in-distribution rows, held-out rows), deterministic for `seed`.

    In-distribution: every legal (shape, motion) alone twice (random colour, size,
    background) plus 70 sampled clips, mostly with two objects; captions are varied.
    Held-out: each HELD_OUT combination alone and next to an in-distribution object.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for shape in sw.SHAPES:
        for motion in sw.MOTIONS:
            if shape == "circle" and motion == "spin":
                continue
            for _ in range(2):
                while True:
                    obj = sw.ObjectSpec(shape, _pick(rng, tuple(sw.COLORS)), _pick(rng, sw.SIZES), motion)
                    spec = sw.ClipSpec(_pick(rng, tuple(sw.BACKGROUNDS)), (obj,))
                    if not sw.is_heldout(spec):
                        break
                rows.append(sw.spec_to_row(spec, sw.caption(spec, rng)))
    while len(rows) < 70 + 70:
        spec = sw.sample_spec(rng)
        if len(spec.objects) == 1 and rng.random() < 0.7:
            continue
        rows.append(sw.spec_to_row(spec, sw.caption(spec, rng)))

    held = []
    for color, shape, motion in sorted(sw.HELD_OUT):
        obj = sw.ObjectSpec(shape, color, _pick(rng, sw.SIZES), motion)
        spec = sw.ClipSpec(_pick(rng, tuple(sw.BACKGROUNDS)), (obj,))
        held.append(sw.spec_to_row(spec, sw.caption(spec, rng)))
        while True:
            other = sw.sample_spec(rng).objects[0]
            pair = sw.ClipSpec(_pick(rng, tuple(sw.BACKGROUNDS)), (obj, other))
            if other.color != color and not (other.size == obj.size == "large") and not sw.is_heldout(
                sw.ClipSpec(pair.background, (other,))
            ):
                break
        held.append(sw.spec_to_row(pair, sw.caption(pair, rng)))
    return rows, held


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def write_prompt_files(directory: str | Path = DATA_DIR, seed: int = 0) -> tuple[Path, Path]:
    """Writes shapes_prompts.jsonl and shapes_prompts_heldout.jsonl into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows, held = make_prompt_rows(seed)
    paths = directory / PROMPTS_PATH.name, directory / HELDOUT_PROMPTS_PATH.name
    for path, data in zip(paths, (rows, held)):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
        tmp.replace(path)
    return paths
