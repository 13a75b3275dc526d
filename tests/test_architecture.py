"""The house rules, read from the code's own imports with `ast` (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("runtime", "export", "quantize", "models")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# Known violations still to mend, outside runtime/ (issue 16). The list may only shrink: a
# new violation fails, and so does an entry that no longer is one (remove it).
STILL_TO_MEND = {
    "imports": set(),
    "modules": set(),
    "functions": set(),
    "family": set(),
}


def _ratchet(kind: str, found: set[str]) -> None:
    known = STILL_TO_MEND[kind]
    assert not found - known, f"new {kind} violations: {sorted(found - known)}"
    assert not known - found, f"mended, remove from STILL_TO_MEND[{kind!r}]: {sorted(known - found)}"


def _modules() -> dict[str, Path]:
    out = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["kinema", *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The kinema modules `name` imports (a package import counts as its __init__)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                up = base[: len(base) - (node.level - 1)]
                mod = ".".join(up + ([mod] if mod else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t.startswith("kinema.") and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _folder(name: str) -> str:
    return name.split(".")[1]


def test_no_import_cycle_between_modules():
    # A package's __init__ re-exporting its own modules is not a cycle: edges to a parent package are left out.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle.extend(stack[stack.index(t):] + [t] if t in stack else [m, t])
                return True
            if t not in state and visit(t, stack + [t]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)


def test_each_folder_imports_only_what_the_design_allows():
    allowed = {"runtime": {"runtime"}, "quantize": {"quantize", "runtime", "models"}, "export": {"export", "runtime", "models"}, "models": {"models"}}
    bad = []
    for m, targets in GRAPH.items():
        own = _folder(m)
        for t in targets:
            if t == "kinema":
                continue
            if own == "runtime" and m.startswith("kinema.runtime.cli"):
                continue  # the commands may reach export/, quantize/ and models/ (lazily)
            if _folder(t) not in allowed[own]:
                bad.append(f"{m} imports {t}")
    _ratchet("imports", set(bad))


def test_runtime_layers_point_down():
    """bundle < sampling < engine < media < (settings, request, run) < pipeline < (serve, batch) < cli; video and safety beside."""
    rank = {"errors": 0, "bundle": 1, "video": 1, "safety": 2, "sampling": 2, "engine": 3, "media": 4,
            "settings": 5, "request": 5, "run": 6, "pipeline": 7, "serve": 8, "batch": 8, "cli": 9}
    bad = []
    for m, targets in GRAPH.items():
        if _folder(m) != "runtime" or m == "kinema.runtime":
            continue
        layer = m.split(".")[2]
        for t in targets:
            if _folder(t) == "runtime" and t != "kinema.runtime":
                other = t.split(".")[2]
                if other != layer and rank[other] > rank[layer]:
                    bad.append(f"{m} ({layer}) imports {t} ({other})")
    assert not bad, bad


def test_no_module_or_function_over_the_size_limits():
    long_modules, long_functions = [], []
    for m, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(str(path.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.name}")
    _ratchet("modules", set(long_modules))
    _ratchet("functions", set(long_functions))


def test_no_family_branch_in_runtime_or_quantize():
    """`family == "tiny"` and the like; comparing two bundles' families is not a branch."""
    bad = []
    for m, path in MODULES.items():
        if _folder(m) not in ("runtime", "quantize"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                names = [n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None) for n in sides]
                literal = any(isinstance(n, ast.Constant) and isinstance(n.value, str) for n in sides)
                if "family" in names and literal:  # a family named in code: a per-family branch
                    bad.append(str(path.relative_to(ROOT)))
    _ratchet("family", set(bad))


def _names_a_family(node: ast.AST) -> bool:
    return (node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")).endswith("family")


def test_quantize_picks_nothing_by_a_family():
    """Nor a family looked up in a table (`t[family]`, `t.get(family)`) or tested for membership, in quantize/.

    What a family needs lives in its bundle's manifest (the tools section). The CLI may
    pick a family's exporter from a table; quantize/ may not.
    """
    bad = []
    for m, path in MODULES.items():
        if _folder(m) != "quantize":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            looked_up = (isinstance(node, ast.Subscript) and _names_a_family(node.slice)) or (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and node.args and _names_a_family(node.args[0]))
            member = isinstance(node, ast.Compare) and _names_a_family(node.left) and any(isinstance(o, (ast.In, ast.NotIn)) for o in node.ops)
            if looked_up or member:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_only_runtime_imports_relatively():
    """quantize/, export/ and models/ write the full kinema path (runtime/'s packages import their own modules relatively)."""
    bad = []
    for m, path in MODULES.items():
        if _folder(m) == "runtime":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_the_checks_see_the_known_edges():
    """The import reader itself: it finds edges that exist (so an empty result means something)."""
    assert "kinema.runtime.run" in GRAPH["kinema.runtime.pipeline"]
    assert "kinema.runtime.media.rules" in GRAPH["kinema.runtime.run"]
