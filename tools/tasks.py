"""Independent pieces of a long job (a file to evaluate, a sequence to verify, a setting to ablate, a grid
point of a sweep) run as tasks: in this process by default, or on a ``dask.distributed`` cluster (the
``mflc[dask]`` extra).

Every caller goes through :func:`map_tasks`, so results come back in the order of the inputs whatever ran
them, and a failing task is reported by its label. On Dask:

- ``Runner(workers=N)`` starts an embedded ``LocalCluster`` of N worker processes, one thread each
  (``workers="auto"``: one per CPU this process may use), for the length of the call;
  ``Runner(scheduler="tcp://HOST:PORT")`` uses an existing cluster (``dask scheduler`` / ``dask worker``).
- Tasks carry paths, never models: workers read the build or checkpoint from a filesystem they share with
  the client, and :func:`worker_cached` loads it once per worker process, keyed by the path and an
  identity of its content (a manifest hash, file sizes and mtimes), so a changed build is reloaded.
- A worker that dies (a crash, the nanny's memory limit) while running a task is replaced by Dask and the
  task rerun on another worker: the scheduler's ``allowed-failures`` (``Runner.retries`` for the embedded
  cluster). Exceptions a task raises are not retried: mflc's tasks are deterministic, a second run would
  raise the same. A rerun is detected from the scheduler's count of worker deaths each task was involved
  in (``TaskState.suspicious``: the task running on the worker, and any the scheduler had already queued
  there) and reported through ``on_retry``.
"""
from __future__ import annotations

import logging
import os
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from mflc.ir.errors import MflcError

log = logging.getLogger("mflc.tasks")

AUTO = "auto"                        # Runner(workers=AUTO): an embedded cluster sized to the machine
CONNECT_TIMEOUT_S = 20               # reaching an existing scheduler
WORKERS_TIMEOUT_S = 60               # an existing scheduler must have a worker within this time
WORKER_CACHE_ENTRIES = 4             # models kept per worker process (a changed build replaces its entry)
# The embedded cluster's worker processes: one thread each, so the Numba kernels run single-threaded
# (set in the worker only: Dask's pre-spawn variables also land in this process, where Numba refuses a
# thread count changed after its pool started); and without Dask's default MALLOC_TRIM_THRESHOLD_=65536,
# which fixes glibc's mmap threshold and makes every large numpy temporary a fresh mmap (measured: `mflc
# ablate` twice as slow, 2/3 of it system time).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1"}
PRE_SPAWN_UNSET = ("MALLOC_TRIM_THRESHOLD_",)


class TaskError(MflcError):
    """A task failed: names the task and what went wrong in it."""


class DaskUnavailable(MflcError):
    """Dask was asked for (--workers / --scheduler) but dask.distributed is not installed."""


@dataclass(frozen=True)
class Runner:
    """Where tasks run: ``workers`` None and ``scheduler`` None is this process (serial); ``workers`` N
    (or ``"auto"``) an embedded LocalCluster; ``scheduler`` an existing cluster's address. ``retries``:
    how many deaths of a task's worker the embedded cluster tolerates before failing the task."""

    workers: int | str | None = None
    scheduler: str | None = None
    retries: int = 2

    def __post_init__(self):
        if self.workers is not None and self.scheduler is not None:
            raise MflcError(f"--workers {self.workers} and --scheduler {self.scheduler}: give one (--workers "
                            "starts a cluster on this machine, --scheduler uses an existing one)")
        w = self.workers
        if w is not None and w != AUTO and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise MflcError(f"--workers {w!r}: must be a whole number >= 1 or '{AUTO}'")
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise MflcError("--scheduler: give an address such as tcp://HOST:8786")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise MflcError(f"retries {self.retries!r}: must be a whole number >= 0")

    @property
    def serial(self) -> bool:
        """True when the tasks run one after the other in this process."""
        return self.workers is None and self.scheduler is None

    def n_workers(self) -> int | None:
        """Workers of the embedded cluster (``auto``: the CPUs this process may run on); None for an
        existing cluster or the serial runner."""
        if self.workers == AUTO:
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return self.workers if isinstance(self.workers, int) else None

    def describe(self) -> str:
        """Where the tasks run, for reports."""
        if self.serial:
            return "serial (this process)"
        if self.scheduler:
            return f"Dask cluster at {self.scheduler}"
        return f"Dask LocalCluster, {self.n_workers()} worker process(es)"


def map_tasks(fn: Callable[[Any], Any], items: Sequence[Any], *, runner: Runner | None = None,
              labels: Sequence[str] | None = None, progress: Callable[[int], None] | None = None,
              on_retry: Callable[[str, int], None] | None = None) -> list:
    """``[fn(x) for x in items]``, in order. ``fn`` must be a module-level function (picklable for Dask);
    ``labels`` name the tasks in errors; ``progress(k)`` is called with the number of tasks done;
    ``on_retry(label, deaths)`` for each task rerun after its worker died (default: a logged warning)."""
    runner = runner or Runner()
    items = list(items)
    labels = list(labels) if labels is not None else [f"task {k}" for k in range(len(items))]
    if len(labels) != len(items):
        raise MflcError(f"map_tasks: {len(labels)} labels for {len(items)} tasks")
    if runner.serial:
        return _map_serial(fn, items, labels, progress)
    return _map_dask(fn, items, labels, runner, progress, on_retry or _log_retry)


def _log_retry(label: str, deaths: int) -> None:
    log.warning("%s: rerun after the worker holding it died (%d time(s))", label, deaths)


def task_error(label: str, e: BaseException, tb=None) -> TaskError:
    """The TaskError of a failed task: its label and the error; for an error that is not mflc's (a bug,
    a missing module on a worker), also the type and the line that raised it."""
    if isinstance(e, MflcError):
        return TaskError(f"{label}: {e}")
    frames = traceback.extract_tb(tb if tb is not None else e.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return TaskError(f"{label}: {type(e).__name__}: {e}{where}")


def _map_serial(fn, items, labels, progress) -> list:
    results = []
    for k, (x, label) in enumerate(zip(items, labels)):
        try:
            results.append(fn(x))
        except Exception as e:
            raise task_error(label, e) from e
        if progress:
            progress(k + 1)
    return results


def _import_distributed():
    """dask.distributed, or a DaskUnavailable saying how to install it."""
    try:
        import distributed
    except ImportError as e:
        raise DaskUnavailable(f"--workers/--scheduler run tasks on Dask, but dask.distributed is not installed "
                              f"({e}); install the extra: pip install 'mflc[dask]' (or leave both options out "
                              "to run serially)") from e
    return distributed


class _Cluster:
    """A Client on the runner's cluster: an embedded LocalCluster (closed on exit) or an existing scheduler."""

    def __init__(self, runner: Runner):
        self.runner, self.cluster, self.client, self.config = runner, None, None, None

    def __enter__(self):
        distributed = _import_distributed()
        r = self.runner
        if r.scheduler:
            try:
                self.client = distributed.Client(r.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
            except (OSError, TimeoutError, ValueError) as e:
                raise MflcError(f"--scheduler {r.scheduler}: cannot reach the Dask scheduler "
                                f"({type(e).__name__}: {e}); start one with `dask scheduler`") from e
            try:
                self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
            except (TimeoutError, OSError) as e:
                self.client.close()
                raise MflcError(f"--scheduler {r.scheduler}: no worker joined within {WORKERS_TIMEOUT_S} s; "
                                f"start some with `dask worker {r.scheduler} --nthreads 1`") from e
            return self.client
        import dask

        # for every worker process the nannies start (the first ones and replacements after a death);
        # Dask also writes its pre-spawn variables into this process's environment: restored on exit
        self.environ = dict(os.environ)
        self.config = dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": None for k in PRE_SPAWN_UNSET})
        self.config.__enter__()
        self.cluster = distributed.LocalCluster(
            n_workers=r.n_workers(), threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.CRITICAL, env=WORKER_ENV, scheduler_kwargs=dict(allowed_failures=r.retries, dashboard=False))
        self.client = distributed.Client(self.cluster)
        return self.client

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.config is not None:
            self.config.__exit__(None, None, None)
            os.environ.clear()
            os.environ.update(self.environ)
        return False


def _map_dask(fn, items, labels, runner, progress, on_retry) -> list:
    distributed = _import_distributed()
    import uuid

    run = uuid.uuid4().hex[:8]
    keys = [f"{getattr(fn, '__name__', 'task')}-{run}-{k}" for k in range(len(items))]
    with _Cluster(runner) as client:
        futures = [client.submit(fn, x, key=key, pure=False) for x, key in zip(items, keys)]
        index = {f.key: k for k, f in enumerate(futures)}
        results: list = [None] * len(items)
        done = 0
        for f in distributed.as_completed(futures):
            k = index[f.key]
            if f.status != "finished":
                error = _dask_error(labels[k], f, distributed)     # before cancelling: that drops the error
                client.cancel(futures)
                raise error
            results[k] = f.result()
            done += 1
            if progress:
                progress(done)
        for k, deaths in _worker_deaths(client, keys).items():
            on_retry(labels[k], deaths)
        client.cancel(futures)
    return results


def _dask_error(label: str, f, distributed) -> TaskError:
    """The TaskError of a future that did not finish: the task's exception, or its workers' deaths."""
    try:
        e = f.exception()
    except Exception as got:                      # cancelled, or the scheduler went away
        e = got
    if isinstance(e, distributed.KilledWorker):
        return TaskError(f"{label}: its worker process died each time it ran the task (Dask KilledWorker: "
                         f"{e}); a crash or the memory limit of the worker, not an error of the task's input")
    tb = None
    try:
        tb = f.traceback()
    except Exception:
        pass
    err = task_error(label, e, tb)
    err.__cause__ = e
    return err


def _scheduler_suspicious(dask_scheduler=None, keys=()):
    """On the scheduler: how many worker deaths each of ``keys`` was involved in (TaskState.suspicious)."""
    return {k: dask_scheduler.tasks[k].suspicious for k in keys if k in dask_scheduler.tasks}


def _worker_deaths(client, keys: list[str]) -> dict[int, int]:
    """Task index -> number of times its worker died under it, for the tasks that were rerun."""
    try:
        counts = client.run_on_scheduler(_scheduler_suspicious, keys=keys)
    except Exception as e:                       # a scheduler that refuses run_on_scheduler: say so, once
        log.warning("could not ask the scheduler which tasks were rerun (%s: %s)", type(e).__name__, e)
        return {}
    return {k: counts[key] for k, key in enumerate(keys) if counts.get(key, 0) > 0}


# ---- per-worker cache ------------------------------------------------------------------------------------
_CACHE: OrderedDict = OrderedDict()


def worker_cached(key: Hashable, identity: Hashable, make: Callable[[], Any]):
    """``make()``, once per process for ``key`` while ``identity`` (what the content on disk is) stays the
    same: a worker loads a build or checkpoint for its first task and reuses it for the next; a new
    identity (the build was recompiled at the same path) loads it again. At most WORKER_CACHE_ENTRIES kept."""
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == identity:
        _CACHE.move_to_end(key)
        return hit[1]
    _CACHE.pop(key, None)
    value = make()
    _CACHE[key] = (identity, value)
    while len(_CACHE) > WORKER_CACHE_ENTRIES:
        _CACHE.popitem(last=False)
    return value


def files_identity(root: Path) -> tuple:
    """(name, size, mtime in ns) of every regular file directly in ``root``, sorted: what a checkpoint
    directory holds, cheap enough to recompute for every task (``("missing",)`` when it is no directory:
    the reader of the files names that error)."""
    root = Path(root)
    if not root.is_dir():
        return ("missing",)
    stats = [(p.name, p.stat()) for p in root.iterdir() if p.is_file()]
    return tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))
