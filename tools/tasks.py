"""Independent pieces of a long job (a file to evaluate, a sequence to verify, a grid point of a sweep) run
as tasks: in this process by default, or on a Dask cluster (issue 16, item 3; the ``mflc[dask]`` extra).

Every caller goes through :func:`map_tasks`, so results come back in the order of the inputs whatever ran
them, and a failing task is reported by its label.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mflc.ir.errors import MflcError


class TaskError(MflcError):
    """A task failed: names the task and what went wrong in it."""


@dataclass(frozen=True)
class Runner:
    """Where tasks run: ``workers`` None and ``scheduler`` None is this process (serial)."""

    workers: int | None = None
    scheduler: str | None = None

    @property
    def serial(self) -> bool:
        """True when the tasks run one after the other in this process."""
        return self.workers is None and self.scheduler is None


def map_tasks(fn: Callable[[Any], Any], items: Sequence[Any], *, runner: Runner | None = None,
              labels: Sequence[str] | None = None, progress: Callable[[int], None] | None = None) -> list:
    """``[fn(x) for x in items]``, in order. ``fn`` must be a module-level function (picklable for Dask);
    ``labels`` name the tasks in errors; ``progress(k)`` is called with the number of tasks done."""
    runner = runner or Runner()
    labels = list(labels) if labels is not None else [f"task {k}" for k in range(len(items))]
    if not runner.serial:
        raise MflcError("running tasks on Dask is not available yet (issue 16)")
    results = []
    for k, (x, label) in enumerate(zip(items, labels)):
        try:
            results.append(fn(x))
        except MflcError as e:
            raise TaskError(f"{label}: {e}") from e
        if progress:
            progress(k + 1)
    return results
