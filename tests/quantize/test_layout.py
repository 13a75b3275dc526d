"""The house rules of quantize/, export/ and models/ (issue 16), read from the source with `ast`.

Imports are counted wherever they are, inside functions too: quantize/ and export/ do not
import each other, models/ imports nothing else of kinema's, and no modules import each
other in a cycle. quantize/ does not branch on a family's name (what a family needs lives
in its bundle's manifest). No module over 400 lines, no function over 80.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("quantize", "export", "models")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("kinema", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("kinema", *parts))
            out[name] = p
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """kinema modules `path` imports (a `from a import b` of a submodule b counts as a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kinema"))
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; write the kinema path"
            if node.module and node.module.startswith("kinema"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return found


@pytest.mark.parametrize("pkg,forbidden", [("quantize", ("kinema.export",)), ("export", ("kinema.quantize",)), ("models", ("kinema.runtime", "kinema.export", "kinema.quantize"))])
def test_import_rules(pkg, forbidden):
    bad = [f"{p.relative_to(ROOT)} imports {m}" for name, p in MODULES.items() if name.startswith(f"kinema.{pkg}") for m in _imports(p) if m.startswith(forbidden)]
    assert not bad, bad


def test_no_import_cycles():
    graph = {name: {m for m in _imports(p) if m in MODULES and m != name} for name, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m):] + [m])}")
            if m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_quantize_does_not_branch_on_a_family():
    # a family compared with a name, looked up in a table, or tested for membership; two
    # bundles' families compared with each other (compare's one-family check) are no branch
    pattern = re.compile(r"family\s*(==|!=)\s*[\"']|[\"']\s*(==|!=)\s*[\w.]*family\b|family\s+(not\s+)?in\b|\[\s*[\w.]*family\s*\]|\.get\(\s*[\w.]*family\b")
    bad = []
    for name, p in MODULES.items():
        if name.startswith("kinema.quantize"):
            code = [ln.split("#", 1)[0] for ln in p.read_text(encoding="utf-8").splitlines()]
            bad += [f"{p.relative_to(ROOT)}:{i}: {ln.strip()}" for i, ln in enumerate(code, 1) if pattern.search(ln)]
    assert not bad, bad


def test_module_and_function_sizes():
    bad = []
    for p in MODULES.values():
        text = p.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            bad.append(f"{p.relative_to(ROOT)}: {len(text.splitlines())} lines > {MAX_MODULE_LINES}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines > {MAX_FUNCTION_LINES}")
    assert not bad, bad
