"""What a bundle's exporter wrote for the quantize tools: float groups and prompt sets.

Everything a family's quantization needs to know about the family lives in its bundle's
manifest, under "tools" (written by export/tiny.py, export/wan.py), so this package never
branches on a family's name:

    "tools": {
      "float_groups": {"denoiser": ["t_embed", "ada", ...], "text_encoder_int8": [...]},
      "calibration_prompts": ["a red ball bouncing", {"prompt": "...", "objects": [...]}, ...],
      "probe_prompts": ["a red ball bouncing", ...]
    }

A calibration prompt is a string or a prompt row (an object with a "prompt", the form of
`kinema compare --prompts` JSONL files; rows with ShapesBench "objects" are scored for
adherence by compare). A bundle without the section (made before it existed) gets the
generic fallbacks below: no float groups, and neutral prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from kinema.runtime.errors import BundleError

# The fallback prompts of a bundle whose manifest has no tools section.
GENERIC_PROMPTS = (
    "a red ball bouncing",
    "two blue squares sliding left on a white background",
    "a small green triangle spinning slowly",
    "a yellow star moving up on a black background",
)
GENERIC_PROBE_PROMPTS = GENERIC_PROMPTS[:3]
TOOLS_KEY = "tools"


@dataclass(frozen=True)
class BundleTools:
    """A bundle's tools section, checked; `declared` is False when the generic fallbacks stand in for it."""

    float_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    calibration_prompts: tuple[str | Mapping, ...] = GENERIC_PROMPTS
    probe_prompts: tuple[str, ...] = GENERIC_PROBE_PROMPTS
    declared: bool = False

    def prompts(self, n: int) -> list[str]:
        """`n` calibration prompt texts (see `spread`)."""
        return [prompt_text(r) for r in spread(self.calibration_prompts, n)]


def prompt_text(row: str | Mapping) -> str:
    return row if isinstance(row, str) else row["prompt"]


def spread(items: Sequence, n: int) -> list:
    """`n` items of `items`: evenly spread over it when it has that many, else cycled through it.

    Spread rather than the first `n`: a prompt file is often grouped by attribute (all the
    circles first), and a few spread prompts cover more of it.
    """
    if n <= len(items):
        idx = np.linspace(0, len(items) - 1, n).round().astype(int)
        return [items[i] for i in idx]
    return [items[i % len(items)] for i in range(n)]


def _strings(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise BundleError(f"manifest {where} must be a list of non-empty strings, not {value!r}"[:300])
    return tuple(value)


def tools_from_manifest(manifest: Mapping, where: str = "manifest") -> BundleTools:
    """The checked tools section of a manifest; the generic fallbacks when it has none."""
    t = manifest.get(TOOLS_KEY)
    if t is None:
        return BundleTools()
    if not isinstance(t, dict):
        raise BundleError(f"{where}: \"tools\" must be an object with float_groups, calibration_prompts, probe_prompts, not {t!r}"[:300])
    groups = t.get("float_groups", {})
    if not isinstance(groups, dict):
        raise BundleError(f"{where}: tools.float_groups must map group names to lists of node scopes, not {groups!r}"[:300])
    float_groups = {str(g): _strings(v, f"tools.float_groups.{g}") for g, v in groups.items()}
    prompts = t.get("calibration_prompts", list(GENERIC_PROMPTS))
    if not isinstance(prompts, list) or not prompts:
        raise BundleError(f"{where}: tools.calibration_prompts must be a non-empty list, not {prompts!r}"[:300])
    for i, r in enumerate(prompts):
        text = r if isinstance(r, str) else r.get("prompt") if isinstance(r, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BundleError(f"{where}: tools.calibration_prompts[{i}] must be a prompt or an object with a non-empty \"prompt\", not {r!r}"[:300])
    probes = _strings(t.get("probe_prompts", list(GENERIC_PROBE_PROMPTS)), "tools.probe_prompts")
    if not probes:
        raise BundleError(f"{where}: tools.probe_prompts must hold at least one prompt")
    return BundleTools(float_groups, tuple(prompts), probes, declared=True)


def tools_of(bundle) -> BundleTools:
    """The tools section of a loaded bundle (see `tools_from_manifest`)."""
    return tools_from_manifest(bundle.manifest, f"bundle {bundle.path}")


def fallback_note(bundle) -> str:
    """What a tool says when a bundle's manifest has no tools section."""
    return (
        f"bundle {bundle.path} (family {bundle.family!r}) has no \"tools\" section in its manifest, so no node groups are kept "
        f"in float and generic prompts are used; export the bundle again to record its family's"
    )


__all__ = ["GENERIC_PROMPTS", "BundleTools", "fallback_note", "prompt_text", "spread", "tools_from_manifest", "tools_of"]
