"""Per-layer sensitivity: which groups of a graph cost the accuracy of a quantized bundle.

For every graph a candidate bundle quantizes, its own recipe is applied to the reference's
fp32 graph twice per group: with only that group quantized (every other group kept in
float), and with only that group kept in float (every other group quantized). Both graphs
run the inputs recorded while the reference sampled (every step, both guidance branches);
the SQNR of their outputs against the fp32 outputs is the group's figure.

A group is a repeated module of the exported PyTorch model (`dit.blocks.3`,
`bert.encoder.layer.2`, `vae.decoder.blocks.0`: the module path up to its first index),
or, outside repeated containers, the module two levels below the root (`dit.final`).
Only groups with nodes the recipe would quantize are listed; a family's float groups,
which the recipe keeps in float anyway, are not.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from kinema.runtime.bundle.load import Bundle
from kinema.runtime.engine.sessions import open_session

from kinema.quantize.apply import apply_recipe
from kinema.quantize.compare.metrics import component_sqnr
from kinema.quantize.plan import plan, resolve_nodes, scopes
from kinema.quantize.recipes import BundleRecipe, Float16, KeepFloat, Mixed, Recipe, WeightOnly, float_nodes, recipe_from_dict

_INDEX = re.compile(r"^\d+$")


def module_path(node) -> str | None:
    """The deepest module scope the exporter recorded for a node (op-level scopes such as `linear_3` left out)."""
    s = scopes(node)
    if not s:
        return None
    root = s[0]
    mods = [x for x in s if x == root or x.startswith(root + ".")]
    return mods[-1]


def group_name(path: str) -> str:
    """The group of a module path: up to its first numeric part, else the root and two levels below it."""
    parts = path.split(".")
    for i, p in enumerate(parts[1:], start=1):
        if _INDEX.match(p):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:3])


def _targets(recipe: Recipe, node, inits: set[str]) -> bool:
    """Whether the recipe would quantize this node, before its float-node list is applied."""
    weighted = any(i in inits for i in node.input)
    if isinstance(recipe, Float16):
        return weighted
    if isinstance(recipe, WeightOnly):
        ops = ("MatMul", "Gemm") if recipe.gemm_as_matmul else ("MatMul",)
    elif isinstance(recipe, Mixed):
        ops = ("MatMul", "Gemm")
    else:
        ops = recipe.op_types
    return node.op_type in ops and len(node.input) > 1 and node.input[1] in inits


def groups_of(graph, recipe: Recipe, graph_file: str) -> dict[str, int]:
    """{group: number of nodes} of the nodes the recipe quantizes in this graph, in graph order."""
    inits = {i.name for i in graph.initializer}
    keep = set(resolve_nodes(graph, float_nodes(recipe), graph_file)) if float_nodes(recipe) else set()
    if isinstance(recipe, Mixed):
        chosen = set(resolve_nodes(graph, recipe.weight_only_groups + recipe.dynamic_groups, graph_file))
    out: dict[str, int] = {}
    for node in graph.node:
        if node.name in keep or not _targets(recipe, node, inits):
            continue
        if isinstance(recipe, Mixed) and node.name not in chosen:
            continue
        path = module_path(node)
        if path is None:
            continue
        g = group_name(path)
        out[g] = out.get(g, 0) + 1
    return out


def _float_field(recipe: Recipe) -> str:
    return "node_block_list" if isinstance(recipe, Float16) else "nodes_to_exclude"


def only(recipe: Recipe, group: str, groups: list[str], *, quantized: bool) -> Recipe:
    """The recipe with only `group` quantized (quantized=True) or only `group` kept in float."""
    if isinstance(recipe, Mixed):
        # a Mixed recipe names its groups itself: narrow the lists to (or drop) the group's nodes
        if quantized:
            return replace(recipe, nodes_to_exclude=recipe.nodes_to_exclude + tuple(g for g in groups if g != group))
        return replace(recipe, nodes_to_exclude=recipe.nodes_to_exclude + (group,))
    name = _float_field(recipe)
    extra = tuple(g for g in groups if g != group) if quantized else (group,)
    return replace(recipe, **{name: getattr(recipe, name) + extra})


def _outputs(path: Path, feeds: list[dict], threads: int | None) -> tuple[list[str], list[list[np.ndarray]]]:
    s = open_session(path, threads=threads)
    names = [o.name for o in s.get_outputs()]
    inputs = {i.name for i in s.get_inputs()}
    return names, [s.run(names, {k: v for k, v in f.items() if k in inputs}) for f in feeds]


def _worst(sqnr: dict) -> float | None:
    vals = [v for v in sqnr.values() if v is not None]
    return min(vals) if vals else None


def component_sensitivity(
    ref: Bundle, name: str, recipe: Recipe, feeds: list[dict], ref_outputs: list[list[np.ndarray]], *, threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """One graph's groups: SQNR (dB, worst output) with only the group quantized and with only it kept in float.

    Rows are sorted most sensitive first (lowest SQNR with only that group quantized).
    """
    import onnx

    say = progress or (lambda msg: None)
    entry = ref.components[name]
    graph = onnx.load(str(ref.component_path(name)), load_external_data=False).graph
    counts = groups_of(graph, recipe, entry["file"])
    groups = list(counts)
    work = Path(tempfile.mkdtemp(prefix="sensitivity-"))
    rows = []
    try:
        for k, g in enumerate(groups):
            row = {"group": g, "nodes": counts[g]}
            for key, quantized in (("only_quantized_sqnr_db", True), ("only_float_sqnr_db", False)):
                if not quantized and len(groups) == 1:
                    row[key] = None  # every other group is none: the fp32 graph itself
                    continue
                r = only(recipe, g, groups, quantized=quantized)
                p = plan(ref, BundleRecipe("sensitivity", {name: r}))[name]
                dst = work / f"{k}-{int(quantized)}" / entry["file"]
                apply_recipe(p, ref.component_path(name), dst, external_data=bool(entry.get("external_data")), calibration=feeds)
                names, outs = _outputs(dst, feeds, threads)
                worst = _worst(component_sqnr(ref_outputs, outs, names, feeds))
                row[key] = None if worst is None else round(worst, 2)
                shutil.rmtree(dst.parent, ignore_errors=True)
            say(f"sensitivity {name} {g}: only quantized {row['only_quantized_sqnr_db']} dB, only float {row['only_float_sqnr_db']} dB")
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows.sort(key=lambda r: (r["only_quantized_sqnr_db"] is None, r["only_quantized_sqnr_db"] if r["only_quantized_sqnr_db"] is not None else 0.0))
    return {"precision": recipe.precision, "inputs": len(feeds), "groups": rows}


def bundle_sensitivity(
    ref: Bundle, other: Bundle, recorded: dict[str, list[dict]], ref_outputs: dict[str, list[list[np.ndarray]]], *,
    threads: int | None = None, progress: Callable[[str], None] | None = None,
) -> dict:
    """Per graph the candidate quantizes with a recipe it records: `component_sensitivity` on the reference's graph.

    Returns {} when the reference is itself quantized or the candidate records no recipe
    (nothing to replay against fp32).
    """
    q = other.manifest.get("quantization")
    if "quantization" in ref.manifest or not q or "recipe" not in q:
        return {}
    recipe = recipe_from_dict(q["recipe"], f"{other.path}: quantization.recipe")
    out = {}
    for name in recorded:
        r = recipe.for_component(name)
        if isinstance(r, KeepFloat) or not ref.has(name) or not recorded[name]:
            continue
        out[name] = component_sensitivity(ref, name, r, recorded[name], ref_outputs[name], threads=threads, progress=progress)
    return out


__all__ = ["bundle_sensitivity", "component_sensitivity", "group_name", "groups_of", "module_path", "only"]
