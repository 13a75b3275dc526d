"""Bundle in, quantized bundle out: apply a recipe per component with ONNX Runtime's tools, record and measure.

    from kinema.quantize.quantize_bundle import quantize_bundle
    quantize_bundle("kinema-tiny", "kinema-tiny-int8", "int8")

The recipe's float groups are bound to the source manifest's tools.float_groups, then it
is checked against the source graphs (plan.py: components exist, every node or module
scope it keeps in float is there) before anything is written. Each component is written
by apply.py and measured by measure.py; the result is staged beside the output, its
manifest records the recipe, the source bundle's sha256 and the SQNR of each changed
graph against its source on fixed inputs, and it is checked with the runtime's
`load_bundle` before it is moved into place (kinema.runtime.bundle.writer).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kinema.runtime.bundle.load import Bundle, load_bundle
from kinema.runtime.bundle.scan import external_data_locations
from kinema.runtime.bundle.writer import check_output, file_entry, write_bundle
from kinema.runtime.errors import InputError
from kinema.runtime.pipeline import Pipeline

from kinema.quantize.apply import apply_recipe, copy_graph
from kinema.quantize.bundle_tools import fallback_note, tools_of
from kinema.quantize.calibration import calibration_prompts, record_inputs
from kinema.quantize.graph_rewrite import gemms_as_matmuls
from kinema.quantize.measure import measure
from kinema.quantize.plan import ComponentPlan, plan, resolve_nodes, scopes
from kinema.quantize.recipes import BundleRecipe, KeepFloat, Recipe, StaticInt8, bind_float_groups, group_refs, preset

log = logging.getLogger(__name__)


def _entry(stage: Path, src_entry: dict, recipe: Recipe) -> dict:
    """Manifest entry for a staged graph: the source's signature, the new file's size, hash and precision."""
    rel = src_entry["file"]
    entry = {k: v for k, v in src_entry.items() if k not in ("external_data", "export_check", "precision")}
    entry.update(file_entry(stage, rel))
    folder = Path(rel).parent
    ext = [file_entry(stage, (folder / loc).as_posix()) for loc in external_data_locations(stage / rel)]
    if ext:
        entry["external_data"] = ext
    if isinstance(recipe, KeepFloat) and "export_check" in src_entry:
        entry["export_check"] = src_entry["export_check"]  # still the exported graph: its parity check holds
    entry["precision"] = recipe.precision
    return entry


def _graph_bytes(entry: dict) -> int:
    return entry["bytes"] + sum(e["bytes"] for e in entry.get("external_data", []))


def derived_spec(src: Bundle, name: str, components: dict) -> dict:
    """write_bundle's spec for a bundle made from `src`: its manifest fields, tokenizer and files, a new name and components."""
    m = src.manifest
    tok = m["tokenizer"]
    rest = {k: v for k, v in m.items() if k not in ("format", "format_version", "created_by", "name", "components", "tokenizer", "files")}
    return {
        **rest,
        "name": name,
        "components": components,
        "tokenizer": {"source": src.path / tok["file"], **{k: v for k, v in tok.items() if k not in ("file", "bytes", "sha256")}},
        "copy_files": {f["file"]: src.path / f["file"] for f in m["files"]},
    }


def quantize_bundle(src_dir, out_dir, recipe: BundleRecipe | str, overwrite: bool = False, record: dict | None = None) -> Path:
    """Write a quantized copy of the bundle at `src_dir` to `out_dir`; returns the new bundle's path.

    `recipe` is a BundleRecipe or a preset name (see recipes.PRESETS); `record` adds keys to
    the manifest's "quantization" (the search's measurements). Raises InputError
    for a bad recipe or output path, BundleError for a bad source, before writing anything.
    """
    out = check_output(Path(out_dir), overwrite=overwrite)
    src = load_bundle(src_dir)  # hashes checked
    if out.resolve() == src.path:
        raise InputError(f"output {out} is the source bundle; write the quantized bundle to another folder")
    already = {n: c.get("precision") for n, c in src.components.items() if c.get("precision", "fp32") != "fp32"}
    if already or "quantization" in src.manifest:
        # the family named from the manifest, so the hint fits every family without naming one here
        raise InputError(
            f"bundle {src.path} is already quantized ({already or 'quantization recorded'}); quantize from its fp32 source "
            f"(`kinema export {src.family}` writes a {src.family} bundle in fp32)"
        )
    recipe = bound_recipe(src, preset(recipe) if isinstance(recipe, str) else recipe)
    plans = plan(src, recipe)

    def build(stage: Path) -> dict:
        comps, changed = {}, []
        calibration = _calibration(src, plans)
        for name, p in plans.items():
            entry = src.components[name]
            if isinstance(p.recipe, KeepFloat):
                copy_graph(src.path, entry["file"], stage)
            else:
                apply_recipe(
                    p, src.component_path(name), stage / entry["file"], external_data=bool(entry.get("external_data")), calibration=calibration.get(name)
                )
                changed.append(name)
            comps[name] = _entry(stage, entry, p.recipe)
        measured = measure(src, stage, changed)
        for name in changed:
            measured[name]["size_ratio"] = round(_graph_bytes(comps[name]) / _graph_bytes(src.components[name]), 4)
        return {
            **derived_spec(src, f"{src.name}-{recipe.name}", comps),
            "quantization": {
                "recipe": recipe.describe(list(plans)),
                # how many graph nodes the recipe's float groups resolved to (the groups are in the recipe)
                "float_nodes": {n: len(p.float_nodes) for n, p in plans.items() if p.float_nodes},
                "source_bundle": src.name,
                "source_bundle_sha256": src.digest,
                "tool": _tool_versions(),
                "measured": measured,
                **(record or {}),
            },
        }

    return write_bundle(out, build, overwrite=overwrite)


def bound_recipe(src: Bundle, recipe: BundleRecipe) -> BundleRecipe:
    """`recipe` with its "@float_groups.<group>" entries taken from the source manifest's tools.float_groups.

    A bundle without a tools section has no float groups: each referenced group is empty,
    and a warning says so (the recipe then quantizes what a family would keep in float).
    """
    refs = group_refs(recipe)
    tools = tools_of(src)
    if refs and not tools.declared:
        log.warning("%s: recipe %r keeps its float groups (%s) empty", fallback_note(src), recipe.name, ", ".join(refs))
        return bind_float_groups(recipe, dict.fromkeys(refs, ()))
    return bind_float_groups(recipe, tools.float_groups)


def _calibration(src: Bundle, plans: dict[str, ComponentPlan]) -> dict[str, list[dict]]:
    """Feeds recorded while the source bundle generates, for each component with a StaticInt8 recipe."""
    static = {n: p.recipe for n, p in plans.items() if isinstance(p.recipe, StaticInt8)}
    if not static:
        return {}
    n = max(r.calibration_prompts for r in static.values())
    return record_inputs(Pipeline(src), calibration_prompts(src, n), components=list(static))


def _tool_versions() -> str:
    import onnx
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}"


__all__ = [
    "ComponentPlan",
    "apply_recipe",
    "bound_recipe",
    "copy_graph",
    "derived_spec",
    "gemms_as_matmuls",
    "measure",
    "plan",
    "quantize_bundle",
    "resolve_nodes",
    "scopes",
]
