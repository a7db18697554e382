"""Opening what a command is given: a build (through ``Build``, every check it needs) or a model
directory, and rendering a build's checks. Shared by the simulation, Lava and layout commands."""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from mflc.cli.app import err, out
from mflc.ir.errors import MflcError


def is_build_dir(path: Path) -> bool:
    """A build (or what is left of one): its manifest or any of its parts. Such a path is always opened
    through ``Build``, so a half-written or edited build is named as such, never run as a model."""
    from mflc.build import MANIFEST, PARTS

    return path.is_dir() and any((path / p).exists() for p in (MANIFEST,) + PARTS)


def build_source(path: Path) -> str | None:
    """The model directory a build was compiled from, as its build.json records it (None if unreadable)."""
    import json

    from mflc.build import MANIFEST

    try:
        src = json.loads((path / MANIFEST).read_text()).get("source", {})
        return str(src["path"]) if isinstance(src, dict) and src.get("path") else None
    except (OSError, ValueError, KeyError):
        return None


def require_checkpoint(path: Path, command: str, quantized_ok: bool = False) -> None:
    """Refuse a build given where a model directory is needed, saying that it is a build, what it was
    compiled from and what to run instead (a build is verified, run or estimated, not re-read as a model)."""
    if not is_build_dir(path):
        return
    src = build_source(path)
    where = (f"the float checkpoint it was compiled from, {src} (build.json's source"
             + ("" if Path(src).exists() else "; not found from here") + ")") if src else "its float checkpoint"
    fix = (f"; or its quantized model, `mflc {command} {path / 'quant'}`" if quantized_ok else "")
    raise MflcError(f"{path} is a build (from `mflc compile`), not a model directory: `mflc {command}` needs "
                    f"{where}{fix}. A build itself is run by `mflc verify`, `mflc generate` and `mflc estimate`")


def load_for_simulation(path: Path):
    """(quantized model, engine graph, core map, reference graph) from a build dir or a model dir; for a
    build (hashes checked), the reference graph is a function that lowers it afresh, run only if needed."""
    from mflc.build import Build
    from mflc.compiler.model.loading import load_quantized
    from mflc.compiler.model.lower import lower

    if not path.exists():
        raise MflcError(f"{path}: no such model or build directory")
    if is_build_dir(path):
        qm, placed, cm = Build.load(path).runnable()
        return qm, placed, cm, lambda: lower(qm)
    qm = load_quantized(path)
    g = lower(qm)
    return qm, g, None, g


def render_checks(checks, title: str) -> None:
    """Print a build's verification checks as a table."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in ("check", "result", "seconds", "detail"):
        t.add_column(c, justify="right" if c == "seconds" else "left")
    for c in checks:
        t.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", f"{c.seconds:.2f}", escape(c.detail))
    out.print(t)
    for c in checks:
        if not c.ok:
            for p in c.problems[:20]:
                err.print(f"[red]{c.name}:[/] {escape(p)}", soft_wrap=True, highlight=False)
            if len(c.problems) > 20:
                err.print(f"[red]{c.name}:[/] ... and {len(c.problems) - 20} more", highlight=False)
