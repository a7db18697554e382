"""The package rules of docs/architecture.md: ir/ depends on nothing else of ours; compiler/ never imports
simulator/; simulator/ never imports compiler/; inside compiler/, the model side (compiler/model/) never
imports the chip side (compiler/chip/), and the chip side reads of the model side only the configuration
and the skeleton (a model's graph from its configuration alone, for estimates).

Inside tools/ (the installed ``mflc`` package): the pipeline API at its top (api, build, executors, tasks,
sweep, stream_compile) never imports the command line (mflc.cli), the benchmarks (mflc.bench) or training
(mflc.training); the command line never imports the benchmarks; training imports nothing of mflc but its
own corpus module (train.py runs in a venv with torch and without mflc's dependencies); nothing imports
the benchmarks but the benchmarks."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_OF = {"ir": "mflc.ir", "compiler": "mflc.compiler", "simulator": "mflc.simulator", "tools": "mflc"}
API_MODULES = ("api", "build", "executors", "tasks", "sweep", "stream_compile")


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
    ("tools/cli", ("mflc.bench", "mflc.training.train"), ()),
    ("tools/training", ("mflc",), ("mflc.training.corpus",)),
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


def test_pipeline_api_stays_below_the_command_line():
    """The API a user imports (mflc.compile, mflc.Build, executors, tasks) never needs the CLI, benchmarks or training."""
    bad = []
    for f in [ROOT / "tools" / f"{name}.py" for name in API_MODULES + ("__init__",)] + sorted((ROOT / "tools" / "spec").glob("*.py")):
        name = f.relative_to(ROOT / "tools").with_suffix("").as_posix()
        for mod in _imports(f):
            if mod.startswith(("mflc.cli", "mflc.bench", "mflc.training")):
                bad.append(f"tools/{name}.py imports {mod}")
    assert not bad, bad


def test_nothing_outside_the_benchmarks_imports_them():
    bad = [f"{f.relative_to(ROOT)} imports {m}" for d in ("ir", "compiler", "simulator", "tools")
           for f in (ROOT / d).rglob("*.py") if "bench" not in f.relative_to(ROOT).parts
           for m in _imports(f) if m.startswith("mflc.bench")]
    assert not bad, bad


def test_tools_top_level_reads_as_the_architecture():
    """tools/ holds the pipeline API's modules, the three sub-packages and the data; nothing else at its top."""
    top = {p.name for p in (ROOT / "tools").iterdir() if p.name != "__pycache__"}
    expected = {f"{m}.py" for m in API_MODULES} | {"__init__.py", "cli", "bench", "training", "spec", "data", "setup.sh"}
    assert top == expected, top ^ expected


def test_no_module_level_import_cycle_in_the_packages():
    """Module-level imports (function-level ones are lazy and allowed) form no cycle in any package."""
    graph = {}
    files = [f for d in ("ir", "compiler", "simulator", "tools") for f in (ROOT / d).rglob("*.py")]
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
