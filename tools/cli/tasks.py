"""The options every command whose work splits into tasks takes (``--workers N`` / ``--scheduler ADDR``),
declared once, and the CLI side of :mod:`mflc.tasks`: the runner they name, a progress bar of tasks done,
and the report of tasks rerun after their worker died."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import typer
from rich.markup import escape

from mflc.cli.app import err, progress_bar
from mflc.ir.errors import MflcError
from mflc.tasks import AUTO, Runner, map_tasks

WorkersOpt = typer.Option(None, "--workers", metavar="N|auto",
                          help="Run the independent pieces (files, sequences, settings) as tasks on a Dask "
                               "LocalCluster of N worker processes, one thread each (auto: one per CPU). "
                               "Needs the dask extra (pip install 'mflc\\[dask]'); default: serial, in this process")
SchedulerOpt = typer.Option(None, "--scheduler", metavar="tcp://HOST:PORT",
                            help="Run the tasks on an existing Dask cluster (`dask scheduler` + `dask worker`); "
                                 "its workers must read the model or build at the same path (shared filesystem)")


def runner_from(workers: Optional[str], scheduler: Optional[str]) -> Runner:
    """The Runner that --workers / --scheduler name (neither: serial)."""
    if workers is None:
        return Runner(scheduler=scheduler)
    w = workers.strip().lower()
    if w == AUTO:
        return Runner(workers=AUTO, scheduler=scheduler)
    try:
        n = int(w)
    except ValueError:
        raise MflcError(f"--workers {workers!r}: give a number of worker processes (>= 1) or '{AUTO}'") from None
    return Runner(workers=n, scheduler=scheduler)


def report_retry(label: str, deaths: int) -> None:
    """Tell the user that a task was rerun because its worker died (the result is still complete)."""
    err.print(f"[yellow]note:[/] {escape(label)}: the worker process holding it died ({deaths} time(s)); "
              "Dask ran it again on another worker, the result is complete", highlight=False, soft_wrap=True)


def run_tasks(fn: Callable[[Any], Any], items: Sequence[Any], labels: Sequence[str], runner: Runner,
              what: str) -> list:
    """map_tasks with a progress bar of ``what`` done (on stderr) and retries reported on stderr."""
    prog, adv = progress_bar(len(items), f"{what} ({runner.describe()})" if not runner.serial else what)
    with prog:
        return map_tasks(fn, items, runner=runner, labels=labels, progress=adv, on_retry=report_retry)
