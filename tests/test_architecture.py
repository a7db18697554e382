"""The package rules of docs/architecture.md: ir/ depends on nothing else of ours; compiler/ never imports
simulator/; simulator/ never imports compiler/; inside compiler/, the model side (compiler/model/) never
imports the chip side (compiler/chip/), and the chip side reads of the model side only the configuration
and the skeleton (a model's graph from its configuration alone, for estimates)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_OF = {"ir": "mflc.ir", "compiler": "mflc.compiler", "simulator": "mflc.simulator", "tools": "mflc"}


def _module(path: Path) -> str:
    """The installed name of a source file: compiler/chip/place.py -> mflc.compiler.chip.place."""
    rel = path.relative_to(ROOT)
    parts = [PACKAGE_OF[rel.parts[0]]] + list(rel.parts[1:-1]) + ([] if rel.stem == "__init__" else [rel.stem])
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved to their absolute names."""
    tree = ast.parse(path.read_text())
    pkg = _module(path).split(".")
    if path.stem != "__init__":
        pkg = pkg[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[:len(pkg) - node.level + 1]) if node.level else ""
            mod = ".".join(x for x in (base, node.module or "") if x)
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}   # `from pkg import module`
    return found


@pytest.mark.parametrize("package, forbidden, allowed", [
    ("ir", ("mflc.compiler", "mflc.simulator", "mflc.cli"), ()),
    ("compiler", ("mflc.simulator", "mflc.cli"), ()),
    ("compiler/model", ("mflc.compiler.chip",), ()),
    ("compiler/chip", ("mflc.compiler.model",), ("mflc.compiler.model.config", "mflc.compiler.model.skeleton")),
    ("simulator", ("mflc.compiler", "mflc.cli"), ()),
])
def test_layering(package, forbidden, allowed):
    bad = []
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    for f in files:
        for mod in _imports(f):
            if mod.startswith(forbidden) and not mod.startswith(allowed):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, bad


def test_no_module_level_import_cycle_in_the_packages():
    """Module-level imports (function-level ones are lazy and allowed) form no cycle in ir/, compiler/, simulator/."""
    graph = {}
    files = [f for d in ("ir", "compiler", "simulator") for f in (ROOT / d).rglob("*.py")]
    names = {_module(f) for f in files}
    for f in files:
        tree = ast.parse(f.read_text())
        pkg = _module(f).split(".")[:None if f.stem == "__init__" else -1]
        deps = set()
        for node in tree.body:                 # top level only
            if isinstance(node, ast.ImportFrom):
                base = ".".join(pkg[:len(pkg) - node.level + 1]) if node.level else ""
                mod = ".".join(x for x in (base, node.module or "") if x)
                deps |= {m for m in [mod] + [f"{mod}.{a.name}" for a in node.names] if m in names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names}
        graph[_module(f)] = deps - {_module(f)}
    state: dict[str, int] = {}

    def visit(n, path):
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                raise AssertionError(" -> ".join(path + [n, m]))
            if m not in state:
                visit(m, path + [n])
        state[n] = 2
    for n in sorted(graph):
        if n not in state:
            visit(n, [])


def test_ir_uses_only_numpy_and_safetensors():
    allowed = ("numpy", "safetensors", "mflc.ir", "__future__", "dataclasses", "typing", "json", "pathlib",
               "collections", "math", "functools", "itertools", "struct", "enum")
    bad = [f"{f.name}: {m}" for f in (ROOT / "ir").glob("*.py") for m in _imports(f)
           if not m.startswith(allowed)]
    assert not bad, bad
