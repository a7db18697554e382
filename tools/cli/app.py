"""What every ``mflc`` command shares: the Typer app the commands register on, the consoles, the
error guard (a named error and exit 1, never a traceback), output-path checks, JSON output, tables and
progress. The command modules import this; ``mflc.cli`` imports them (so no module imports its importer)."""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mflc.api import DEFAULT_MODEL, resolve_model  # noqa: F401 (the commands import them from here)
from mflc.ir.errors import MflcError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="mflc: compile MatMul-free LMs to Loihi 2 layouts and verify them bit for bit.")
out = Console()
err = Console(stderr=True)


def guarded(fn):
    """Turn user-caused errors into one clear message and exit status 1 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        """The command, with user errors printed in one line and exit status 1."""
        try:
            return fn(*a, **k)
        except MflcError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def _file_ancestor(path: Path) -> Optional[Path]:
    """The nearest existing ancestor of ``path`` that is not a directory, if any (nothing can be made under it)."""
    for p in path.absolute().parents:
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_out_dir(path: Path, option: str = "--out", holds: str = "a directory") -> None:
    """Refuse, before any work, an output directory that cannot be one: an existing non-directory, or a
    path under a regular file."""
    if path.exists() and not path.is_dir():
        raise MflcError(f"{option} {path}: exists and is not a directory (this command writes {holds}); "
                        "give a new or existing directory")
    anc = _file_ancestor(path)
    if anc is not None:
        raise MflcError(f"{option} {path}: {anc} is a file, not a directory")


def check_out_file(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output file path that is a directory or lies under a regular file
    (an existing regular file is overwritten)."""
    if path.is_dir():
        raise MflcError(f"{option} {path}: is a directory; give a file name, e.g. {path / 'lava.json'}")
    anc = _file_ancestor(path)
    if anc is not None:
        raise MflcError(f"{option} {path}: {anc} is a file, not a directory")


def emit_json(obj) -> None:
    """Print a --json result on stdout, sorted and with numpy values made plain."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def kv_table(title: str, rows: list[tuple[str, object]]) -> Table:
    """A two-column table of named figures for the CLI's human output."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return t


def progress_bar(total: int, label: str):
    """A rich progress bar on stderr; returns (context manager, advance-to callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)
    task = prog.add_task(label, total=total)
    return prog, (lambda n: prog.update(task, completed=n))


class Stages:
    """Progress through the named steps of a command that has no natural count (compile: load, quantize,
    lower, lay out): a spinner on stderr naming the step and its place, ``[2/5] quantizing``, gone when
    done, so a terminal shows where a 370M compile is while --json output stays clean. ``timings`` keeps
    each step's seconds for reports."""

    def __init__(self, names: list[str]):
        self.names, self.timings = list(names), {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        import time

        k = self.names.index(name) + 1
        t0 = time.perf_counter()
        with err.status(f"[{k}/{len(self.names)}] {name}"):
            yield
        self.timings[name] = time.perf_counter() - t0
