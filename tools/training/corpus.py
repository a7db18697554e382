"""The default model's corpus: Python standard-library source files and their fixed train/held-out split.

Kept free of torch and numpy so that ``tools/training/train.py`` (its own venv) and ``mflc eval --heldout`` (the
core package) read one definition of the split. A file is held out iff a hash of its relative path says
so, which does not depend on the interpreter version or on which other files exist.
"""
from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

# Directories whose files are not corpus: tests, IDLE, demos, third-party installs, caches.
EXCLUDED_DIRS = {"test", "tests", "idle_test", "idlelib", "turtledemo", "site-packages", "dist-packages",
                 "__pycache__"}
EXCLUDED_TOP = {"encodings", "pydoc_data"}  # generated data modules (codec tables, documentation text)
HELDOUT_MOD = 20


def split_of(rel: str) -> str:
    """'heldout' for about one file in 20, chosen by a hash of the relative path; else 'train'."""
    return "heldout" if int(hashlib.sha256(rel.encode()).hexdigest(), 16) % HELDOUT_MOD == 0 else "train"


def stdlib_dir() -> Path:
    """This interpreter's stdlib directory, the default corpus."""
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(stdlib: Path | None = None) -> list[tuple[str, Path]]:
    """(relative path, path) of every corpus file of the stdlib, sorted by relative path."""
    root = Path(stdlib or stdlib_dir())
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        parts = rel.split("/")
        if any(d in EXCLUDED_DIRS or d.startswith("config-") for d in parts[:-1]):
            continue
        if parts[0] in EXCLUDED_TOP:
            continue
        out.append((rel, p))
    return out


def heldout_files(stdlib: Path | None = None) -> list[tuple[str, Path]]:
    """The corpus files of the held-out split (never trained on)."""
    return [(rel, p) for rel, p in corpus_files(stdlib) if split_of(rel) == "heldout"]
