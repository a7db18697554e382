"""Generated Numba modules cached on disk by their content, so kernels compile once per machine.

Numba's own cache (``cache=True``) keys a function by its source file, so code generated at run time
(simulator/progcode: one function per neuron program; the fast path's token driver, per set of programs)
is written to a file named by the hash of its text and of the modules it inlines, in the user cache
directory, and imported from there: Numba then caches the machine code beside it, and the next process
that generates the same text loads it instead of compiling. ``$MFLC_CACHE_DIR`` overrides the directory.
A module is marked ready once it has compiled and loaded; until then its loading says on stderr that it
is compiling (the first run on a machine, or after mflc's kernels change).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from pathlib import Path

import numba

CACHE_ENV = "MFLC_CACHE_DIR"
_said: set[str] = set()                  # what this process already announced


def cache_dir() -> Path:
    """Where generated modules and their compiled code live: $MFLC_CACHE_DIR, else the user cache directory
    ($XDG_CACHE_HOME or ~/.cache, then mflc/), one subdirectory per Numba and Python version."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mflc"
    return base / f"numba-{numba.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"


def _fingerprint(deps) -> str:
    """Hash of the source files of ``deps`` (modules whose functions the generated code inlines): Numba
    does not see changes in a cached function's callees, so they are part of the module's name."""
    h = hashlib.sha256()
    for mod in deps:
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()


def _write_once(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically unless it is already there (its name is its content's hash;
    rewriting it would change its time stamp and void Numba's cache of it)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def announce(what: str) -> None:
    """Say once per process, on stderr, that ``what`` is being compiled (and where it will be kept)."""
    if what not in _said:
        _said.add(what)
        print(f"mflc: compiling {what} for this machine (once; kept in {cache_dir()}) ...", file=sys.stderr, flush=True)


def load(prefix: str, text: str, deps=(), what: str = "neuron programs"):
    """Import the generated module ``text`` from the cache directory (writing it there the first time) and
    return it. Its functions with explicit signatures compile (or load from Numba's cache) on import."""
    key = hashlib.sha256((text + _fingerprint(deps)).encode()).hexdigest()[:24]
    name = f"mflc_gen_{prefix}_{key}"
    if name in sys.modules:
        return sys.modules[name]
    d = cache_dir()
    path = d / f"{name}.py"
    _write_once(path, text)
    ready = d / f"{name}.ready"
    if not ready.exists():
        announce(what)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    mod.READY_FILE = ready
    if hasattr(mod, "EAGER"):              # compiled on import: ready now
        mark_ready(mod)
    return mod


def mark_ready(mod) -> None:
    """Record that ``mod``'s functions are compiled and in Numba's cache (later runs stay quiet)."""
    if not mod.READY_FILE.exists():
        mod.READY_FILE.touch()
