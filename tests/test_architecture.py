"""The package rules of docs/architecture.md: ir/ depends on nothing else of ours; compiler/ never
imports simulator/; simulator/ never imports compiler/."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "mflc":
                found |= {f"mflc.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("ir", ("mflc.compiler", "mflc.simulator", "mflc.cli")),
    ("compiler", ("mflc.simulator", "mflc.cli")),
    ("simulator", ("mflc.compiler", "mflc.cli")),
])
def test_layering(package, forbidden):
    bad = []
    for f in sorted((ROOT / package).glob("*.py")):
        for mod in _imports(f):
            if mod.startswith(forbidden):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, bad


def test_ir_uses_only_numpy_and_safetensors():
    allowed = ("numpy", "safetensors", "mflc.ir", "__future__", "dataclasses", "typing", "json", "pathlib",
               "collections", "math", "functools", "itertools", "struct")
    bad = [f"{f.name}: {m}" for f in (ROOT / "ir").glob("*.py") for m in _imports(f)
           if not m.startswith(allowed)]
    assert not bad, bad
