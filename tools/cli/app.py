"""What every ``mflc`` command shares: the Typer app the commands register on, the consoles, the
error guard (a named error and exit 1, never a traceback; with ``--json`` also a JSON document of the
error on stdout), output-path checks, JSON output, tables and progress. The command modules import this;
``mflc.cli`` imports them (so no module imports its importer)."""
from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from mflc.api import DEFAULT_MODEL, resolve_model  # noqa: F401 (the commands import them from here)
from mflc.ir.errors import MflcError

try:                                # typer >= 0.2x carries its own copy of click
    from typer._click import Context
    from typer._click.core import ParameterSource
    from typer._click.exceptions import UsageError
    from typer._click.globals import get_current_context
except ImportError:                 # older typer runs on click itself
    from click import Context
    from click.core import ParameterSource
    from click.exceptions import UsageError
    from click.globals import get_current_context

JSON_FLAG = "--json"
PROGRESS_EVERY_S = 10.0     # a progress line at most this often when stderr is not a terminal


class MflcGroup(TyperGroup):
    """The command group: a usage error (unknown option, bad value) of a command given ``--json`` also
    prints the JSON error document on stdout, as the command's own errors do (``guarded``)."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        """Remember the raw arguments, to know whether --json was asked for when parsing fails."""
        ctx.meta["mflc.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Context):
        """Run the command; a usage error is printed as usual (exit 2), and as JSON too under --json."""
        try:
            return super().invoke(ctx)
        except UsageError as e:
            args = ctx.meta.get("mflc.args", [])
            if JSON_FLAG in args:
                emit_json(error_document(e.format_message(), e.exit_code, e.ctx.info_name if e.ctx else None))
            raise


app = typer.Typer(cls=MflcGroup, add_completion=False, no_args_is_help=True,
                  help="mflc: compile MatMul-free LMs to Loihi 2 layouts and verify them bit for bit.")
out = Console()
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from mflc import __version__
        from mflc.build import VERSION

        out.print(f"mflc {__version__} (build format version {VERSION}; Python {sys.version.split()[0]})",
                  highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print mflc's version and exit")):
    """mflc: compile MatMul-free LMs to Loihi 2 layouts and verify them bit for bit."""


def error_document(message: str, exit_status: int, command: Optional[str]) -> dict:
    """What ``--json`` prints on stdout when a command fails: the error and the exit status, so a script
    reading stdout always gets a document."""
    return dict(ok=False, error=message, exit_status=exit_status, command=command)


def _fail(e: BaseException, json_out: bool) -> None:
    """Print a user error (stderr; and as JSON on stdout under --json) and exit with status 1."""
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    if json_out:
        ctx = get_current_context(silent=True)
        emit_json(error_document(str(e), 1, ctx.info_name if ctx else None))
    raise typer.Exit(1)


def guarded(fn):
    """Turn user-caused errors into one clear message and exit status 1 instead of a traceback; under
    ``--json`` (a command's ``json_out``) the error is also printed on stdout as a JSON document."""

    @functools.wraps(fn)
    def wrapper(*a, **k):
        """The command, with user errors printed in one line and exit status 1."""
        try:
            return fn(*a, **k)
        except (MflcError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                PermissionError) as e:
            _fail(e, bool(k.get("json_out")))

    return wrapper


def given_options(ctx: Context, names: list[str]) -> list[str]:
    """The options among the parameters ``names`` that the user gave on the command line (not their
    defaults), each as written, e.g. ``--act-bits 4``: what a command that cannot apply them names."""
    params = {p.name: p for p in ctx.command.params}
    given = []
    for n in names:
        if ctx.get_parameter_source(n) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        p, v = params[n], ctx.params.get(n)
        flag = p.opts[0] if p.opts else n
        if isinstance(v, bool):
            given.append(flag)
        elif isinstance(v, (list, tuple)):
            given += [f"{flag} {x}" for x in v]
        else:
            given.append(f"{flag} {v}")
    return given


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


def progress_bar(total: int | None, label: str):
    """Progress on stderr; returns (context manager, advance-to callback). A terminal gets a rich bar
    (gone when done); anything else (a log file, a pipe, a CI job) plain lines: the start, at most one
    every PROGRESS_EVERY_S seconds, and the end with its time, so a long run is never silent."""
    if not err.is_terminal:
        lines = _ProgressLines(total, label)
        return lines, lines.update
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True)
    task = prog.add_task(label, total=total)
    return prog, (lambda n: prog.update(task, completed=n))


class _ProgressLines:
    """A progress bar as plain lines on stderr, for a stderr that is not a terminal (``total`` None: a
    count without an end, as rich's Progress takes)."""

    def __init__(self, total: int | None, label: str):
        self.total, self.label, self.done = total, label, 0
        self.t0 = self.last = 0.0

    def _line(self, n: int, tail: str = "") -> None:
        count = f"{n}/{self.total}" if self.total is not None else f"{n} done"
        err.print(f"{self.label}: {count}{tail}", highlight=False, markup=False, soft_wrap=True)

    def __enter__(self):
        self.t0 = self.last = time.perf_counter()
        self._line(0)
        return self

    def update(self, n: int) -> None:
        """Record n done; print a line if the last one is PROGRESS_EVERY_S old."""
        self.done = n
        now = time.perf_counter()
        if now - self.last >= PROGRESS_EVERY_S and (self.total is None or n < self.total):
            self.last = now
            left = (now - self.t0) / n * (self.total - n) if n and self.total is not None else None
            self._line(n, f", {now - self.t0:.0f} s" + (f", about {left:.0f} s left" if left else ""))

    def __exit__(self, kind, *_):
        if kind is None:
            self._line(self.done, f" in {time.perf_counter() - self.t0:.1f} s")
        return False


class Stages:
    """Progress through the named steps of a command that has no natural count (compile: load, quantize,
    lower, lay out): a spinner on stderr naming the step and its place, ``[2/5] quantizing``, gone when
    done (a line per step when stderr is not a terminal), so one sees where a 370M compile is while
    --json output stays clean. ``timings`` keeps each step's seconds for reports."""

    def __init__(self, names: list[str]):
        self.names, self.timings = list(names), {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        k = self.names.index(name) + 1
        t0 = time.perf_counter()
        what = f"[{k}/{len(self.names)}] {name}"
        if err.is_terminal:
            with err.status(what):
                yield
        else:
            err.print(what, highlight=False, markup=False, soft_wrap=True)
            yield
        self.timings[name] = time.perf_counter() - t0
