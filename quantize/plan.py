"""A recipe against a bundle's graphs: which nodes each component's recipe keeps in float, all checks, no writing.

An entry of a recipe is a node name, or a module scope of the exported PyTorch module,
matched against each node's recorded module path and the names of its weight
initializers (recipes.py). An entry that selects nothing is an error.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from kinema.runtime.bundle.load import Bundle
from kinema.runtime.errors import InputError

from kinema.quantize.recipes import GROUP_REF, BundleRecipe, Mixed, Recipe, float_nodes

SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # module path the torch.onnx dynamo exporter records per node


@dataclass(frozen=True)
class ComponentPlan:
    """One component's recipe and the node names it keeps in float, resolved against its graph."""

    recipe: Recipe
    float_nodes: tuple[str, ...]
    weight_only_nodes: tuple[str, ...] = ()  # Mixed: the nodes its weight-only groups select
    dynamic_nodes: tuple[str, ...] = ()  # Mixed: the nodes its dynamic int8 groups select


def scopes(node) -> list[str]:
    """The module scopes the exporter recorded for a node, outermost first (empty when none were)."""
    for p in node.metadata_props:
        if p.key == SCOPES_KEY:
            try:
                value = ast.literal_eval(p.value)  # "['', 'dit', 'dit.blocks.0', 'dit.blocks.0.ada', ...]"
            except (ValueError, SyntaxError):
                return []
            return [s for s in value if isinstance(s, str) and s] if isinstance(value, list) else []
    return []


def resolve_nodes(graph, entries: tuple[str, ...], graph_file: str) -> tuple[str, ...]:
    """Node names selected by a recipe's entries; raises InputError for an entry that selects nothing.

    An entry selects a node by its name, or by a run of whole dotted components of the
    node's module scopes or weight names: "ada" selects dit.blocks.3.ada.1, not dit.adapter.
    """
    inits = {i.name for i in graph.initializer}
    keys = {}
    for node in graph.node:
        if node.name:  # ORT's quantizers exclude by name; the exporter names every node
            keys[node.name] = [f".{s}." for s in scopes(node) + [i for i in node.input if i in inits]]
    selected: dict[str, None] = {}
    for entry in entries:
        hits = [name for name, ks in keys.items() if name == entry or any(f".{entry}." in k for k in ks)]
        if not hits and entry.startswith(GROUP_REF):
            raise InputError(f"recipe entry {entry!r} in {graph_file} is a float group that was never bound to a bundle's groups (quantize_bundle binds them; or call recipes.bind_float_groups)")
        if not hits:
            raise InputError(f"recipe names node {entry!r} which is not in {graph_file} (give a node name or a module scope such as 'ada')")
        selected.update(dict.fromkeys(hits))
    return tuple(selected)


def plan(src: Bundle, recipe: BundleRecipe) -> dict[str, ComponentPlan]:
    """Each component's recipe with its float nodes resolved; all checks, no writing."""
    import onnx

    missing = [c for c in recipe.components if not src.has(c)]
    if missing:
        raise InputError(f"recipe {recipe.name!r} names component(s) {', '.join(missing)} that bundle {src.path} does not have")
    plans = {}
    for name, entry in src.components.items():
        r = recipe.for_component(name)
        keep: tuple[str, ...] = ()
        groups: dict[str, tuple[str, ...]] = {}
        if float_nodes(r) or isinstance(r, Mixed):
            graph = onnx.load(str(src.component_path(name)), load_external_data=False).graph
            keep = resolve_nodes(graph, float_nodes(r), entry["file"])
            if isinstance(r, Mixed):
                groups = {
                    "weight_only_nodes": resolve_nodes(graph, r.weight_only_groups, entry["file"]),
                    "dynamic_nodes": resolve_nodes(graph, r.dynamic_groups, entry["file"]),
                }
        plans[name] = ComponentPlan(r, keep, **groups)
    return plans


__all__ = ["SCOPES_KEY", "ComponentPlan", "plan", "resolve_nodes", "scopes"]
