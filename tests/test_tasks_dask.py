"""mflc.tasks on a real dask.distributed cluster: a LocalCluster of two worker processes, started once for
the module and reached by its address (the --scheduler path); one test starts the embedded cluster of
--workers itself. Results must equal the serial run's exactly and in order; a failing task is named; a
worker killed under a task is replaced and the task rerun and reported. Skipped without the dask extra."""
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'mflc[dask]'); "
                                                        "the serial runner is tested in test_tasks.py")
import cloudpickle  # noqa: E402  (comes with distributed)

from mflc import tasks  # noqa: E402
from mflc.ir.errors import MflcError  # noqa: E402
from mflc.tasks import Runner, TaskError, map_tasks  # noqa: E402

from util import cli_run  # noqa: E402

# the helpers below travel to the workers by value: tests/ is not importable there
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEXT = b"def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n"


@pytest.fixture(scope="module")
def cluster():
    import dask

    environ = dict(os.environ)
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": None for k in tasks.PRE_SPAWN_UNSET}):
        c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                     silence_logs=logging.CRITICAL, env=tasks.WORKER_ENV)
    with distributed.Client(c) as client:
        client.wait_for_workers(2, timeout=120)
    yield Runner(scheduler=c.scheduler_address)
    c.close()
    os.environ.clear()                  # Dask wrote its workers' variables (OMP_NUM_THREADS=1, ...) into ours
    os.environ.update(environ)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    import mflc

    out = tmp_path_factory.mktemp("dask") / "b"
    mflc.compile(out=out)
    return out


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    paths = []
    for k in range(3):
        p = d / f"t{k}.py"
        p.write_bytes(TEXT[k * 7:] + TEXT[:k * 7])
        paths.append(p)
    return paths


def _times_ten(x):
    return 10 * x


def _sleep_then_echo(arg):
    """Finish after a given delay, so tasks complete out of their input order."""
    import time

    x, delay = arg
    time.sleep(delay)
    return x


def _raise_on_two(x):
    if x == 2:
        raise MflcError("the second input is bad")
    if x == 3:
        raise ZeroDivisionError("division by zero")
    return x


def _die_first_time(arg):
    """Kill the worker process the first time task 1 runs (a marker file says it did): a crash, not an error."""
    marker, x = arg
    if x == 1 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(9)
    return x * 10, os.getpid()


def _always_die(x):
    os._exit(9)


def test_results_equal_serial_in_order_with_progress(cluster):
    xs = list(range(23))
    done = []
    assert map_tasks(_times_ten, xs, runner=cluster, progress=done.append) == [10 * x for x in xs]
    assert sorted(done) == done and done[-1] == len(xs)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(), st.sampled_from([0.0, 0.01, 0.05])), min_size=1, max_size=12))
def test_results_come_back_in_input_order_whatever_finishes_first(cluster, items):
    assert map_tasks(_sleep_then_echo, items, runner=cluster) == [x for x, _ in items]


def test_a_failing_task_is_named(cluster):
    with pytest.raises(TaskError, match=r"^setting 'two': the second input is bad$"):
        map_tasks(_raise_on_two, [0, 1, 2], runner=cluster, labels=["zero", "one", "setting 'two'"])
    with pytest.raises(TaskError, match=r"^task 1: ZeroDivisionError: division by zero \(raised at "
                                        r"test_tasks_dask\.py:\d+ in _raise_on_two\)$"):
        map_tasks(_raise_on_two, [0, 3], runner=cluster)


def test_a_killed_worker_is_replaced_and_its_task_rerun_and_reported(cluster, tmp_path):
    marker = str(tmp_path / "died")
    retried = []
    out = map_tasks(_die_first_time, [(marker, k) for k in range(4)], runner=cluster,
                    labels=[f"sequence {k}" for k in range(4)], on_retry=lambda label, n: retried.append((label, n)))
    assert [r for r, _ in out] == [0, 10, 20, 30]
    assert os.path.exists(marker) and int(Path(marker).read_text()) != out[1][1]   # rerun in another process
    # the task that ran when the worker died is reported; so is any task the scheduler had already sent to
    # that worker (Dask counts every task a dead worker held), never one that finished elsewhere untouched
    assert ("sequence 1", 1) in retried and all(n == 1 for _, n in retried) and len(retried) <= 3
    with distributed.Client(cluster.scheduler) as client:                         # the cluster healed
        client.wait_for_workers(2, timeout=120)


def test_a_worker_dying_every_time_fails_the_task_by_name():
    """The embedded cluster (--workers) with no death allowed: the task's error says its worker died."""
    with pytest.raises(TaskError, match=r"^the crashing one: its worker process died each time it ran the task"):
        map_tasks(_always_die, [1], runner=Runner(workers=1, retries=0), labels=["the crashing one"])


def test_an_unreachable_scheduler_is_named(monkeypatch):
    monkeypatch.setattr(tasks, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(MflcError, match=r"--scheduler tcp://127\.0\.0\.1:9: cannot reach the Dask scheduler"):
        map_tasks(_times_ten, [1], runner=Runner(scheduler="tcp://127.0.0.1:9"))


def test_eval_equals_serial(cluster, texts):
    args = ["eval", *[a for p in texts for a in ("--text", p)], "--max-tokens", "40", "--json"]
    serial = json.loads(cli_run(*args).stdout)
    dask = json.loads(cli_run(*args, "--scheduler", cluster.scheduler).stdout)
    assert dask == serial and [f["file"] for f in dask["files"]] == [str(p) for p in texts]


def test_ablate_equals_serial(cluster, texts):
    from dataclasses import replace

    from mflc.cli.accuracy import ModelSource, ablation_configs, ablation_rows, evaluation_texts
    from mflc.api import DEFAULT_MODEL

    seqs = evaluation_texts(DEFAULT_MODEL, 256, texts[:2], False, None, 32, None)
    src = replace(ModelSource.of(DEFAULT_MODEL, None, None, ()), calib_text=tuple(seqs[0][1]))
    configs = ablation_configs(12, ["r", "o"])[:2] + ablation_configs(12, ["r", "o"])[-2:]
    serial = ablation_rows(src, seqs, configs)
    dask = ablation_rows(src, seqs, configs, cluster)
    assert dask == serial and [r["config"] for r in dask[0]] == [c for c, _ in configs]


def _strip_seconds(d):
    d.pop("seconds")
    for part in d["checks"] + d["sequences"]:
        part.pop("seconds")
    return d


def test_verify_sequences_equal_serial(cluster, small_build):
    args = ["verify", small_build, "--tokens", "3", "--sequences", "4", "--seed", "2", "--json"]
    serial = _strip_seconds(json.loads(cli_run(*args).stdout))
    dask = _strip_seconds(json.loads(cli_run(*args, "--scheduler", cluster.scheduler).stdout))
    assert dask == serial and dask["ok"] and [s["seed"] for s in dask["sequences"]] == [2, 3, 4, 5]


def test_verify_embedded_cluster_equals_serial(small_build):
    """--workers 2: the embedded LocalCluster, started and closed by the command."""
    args = ["verify", small_build, "--tokens", "2", "--sequences", "2", "--json"]
    serial = _strip_seconds(json.loads(cli_run(*args).stdout))
    assert _strip_seconds(json.loads(cli_run(*args, "--workers", "2").stdout)) == serial


def test_a_worker_refuses_a_build_that_is_not_the_clients(cluster, small_build):
    """The task carries the manifest's hash: a worker that reads other bytes at the path (no shared
    filesystem, or a recompile meanwhile) fails that task, named."""
    from mflc.cli.sim import VerifySequence, verify_sequence

    task = VerifySequence(str(small_build), "0" * 64, "engine", 0, 0, 2)
    with pytest.raises(TaskError, match=r"^sequence 0 \(seed 0\): .*b: the build on .* is not the one verify "
                                        r"started with \(build\.json differs\)"):
        map_tasks(verify_sequence, [task], runner=cluster, labels=["sequence 0 (seed 0)"])


def _cached_build_identities(dask_worker=None):
    return sorted(str(ident) for key, (ident, _) in tasks._CACHE.items() if key[0] == "build")


def test_a_recompiled_build_is_reloaded_on_the_workers(cluster, tmp_path):
    """Same path, new build: the workers' cache is keyed by the manifest's hash, so they load the new one."""
    import mflc
    from mflc.build import MANIFEST, file_sha256

    out = tmp_path / "b"
    args = ["verify", out, "--tokens", "2", "--sequences", "2", "--json", "--scheduler", cluster.scheduler]
    mflc.compile(out=out)
    first = file_sha256(out / MANIFEST)
    assert json.loads(cli_run(*args).stdout)["ok"]
    mflc.compile(out=out, hw={"weight_bits": 8})
    second = file_sha256(out / MANIFEST)
    assert first != second and json.loads(cli_run(*args).stdout)["ok"]
    with distributed.Client(cluster.scheduler) as client:
        held = {i for ids in client.run(_cached_build_identities).values() for i in ids}
    assert second in held and first not in held
