"""Per-layer sensitivity: which groups of a graph cost the accuracy of a quantized bundle.

For every graph a candidate bundle quantizes, its own recipe is applied to the reference's
fp32 graph twice per group: with only that group quantized (every other group kept in
float), and with only that group kept in float (every other group quantized). Both graphs
run the inputs recorded while the reference sampled (every step, both guidance branches);
the SQNR of their outputs against the fp32 outputs is the group's figure.

Every other node the recipe would quantize is kept in float by name, those outside any
group included. A group is a repeated module of the exported PyTorch model (`dit.blocks.3`,
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
    if root.startswith("_"):  # an exporter hook's scope, not a module of the model
        return None
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
    if isinstance(recipe, Float16):
        return True  # every op is converted to fp16 unless blocked
    if isinstance(recipe, WeightOnly):
        ops = ("MatMul", "Gemm") if recipe.gemm_as_matmul else ("MatMul",)
    elif isinstance(recipe, Mixed):
        ops = ("MatMul", "Gemm")
    else:
        ops = recipe.op_types
    return node.op_type in ops and len(node.input) > 1 and node.input[1] in inits


def target_nodes(graph, recipe: Recipe, graph_file: str) -> list[tuple[str, str | None]]:
    """(node name, group or None) of every node the recipe quantizes in this graph, in graph order."""
    inits = {i.name for i in graph.initializer}
    keep = set(resolve_nodes(graph, float_nodes(recipe), graph_file)) if float_nodes(recipe) else set()
    chosen = set(resolve_nodes(graph, recipe.weight_only_groups + recipe.dynamic_groups, graph_file)) if isinstance(recipe, Mixed) else None
    out = []
    for node in graph.node:
        if not node.name or node.name in keep or not _targets(recipe, node, inits) or (chosen is not None and node.name not in chosen):
            continue
        path = module_path(node)
        out.append((node.name, None if path is None else group_name(path)))
    return out


def groups_of(graph, recipe: Recipe, graph_file: str) -> dict[str, list[str]]:
    """{group: its node names} of the nodes the recipe quantizes in this graph, groups in graph order."""
    out: dict[str, list[str]] = {}
    for name, g in target_nodes(graph, recipe, graph_file):
        if g is not None:
            out.setdefault(g, []).append(name)
    return out


def only(recipe: Recipe, members: list[str], targets: list[str], *, quantized: bool) -> Recipe:
    """The recipe with only the nodes `members` quantized (quantized=True), or only they kept in float.

    Every other node the recipe would quantize (`targets`, those in no group included) is
    named in its float list, so "only quantized" is exactly the group's own error.
    """
    mine = set(members)
    extra = tuple(n for n in targets if n not in mine) if quantized else tuple(members)
    name = "node_block_list" if isinstance(recipe, Float16) else "nodes_to_exclude"
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
    targets = target_nodes(graph, recipe, entry["file"])
    groups = groups_of(graph, recipe, entry["file"])
    names_all = [n for n, _ in targets]
    work = Path(tempfile.mkdtemp(prefix="sensitivity-"))
    rows = []
    try:
        for k, (g, members) in enumerate(groups.items()):
            row = {"group": g, "nodes": len(members)}
            for key, quantized in (("only_quantized_sqnr_db", True), ("only_float_sqnr_db", False)):
                if not quantized and len(members) == len(names_all):
                    row[key] = None  # nothing else is quantized: the fp32 graph itself
                    continue
                r = only(recipe, members, names_all, quantized=quantized)
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


__all__ = ["bundle_sensitivity", "component_sensitivity", "group_name", "groups_of", "module_path", "only", "target_nodes"]
