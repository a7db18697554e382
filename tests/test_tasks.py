"""mflc.tasks without a cluster: the serial runner (the default), its errors, the per-worker cache, the
--workers/--scheduler options, and a clear error when Dask is asked for but not installed. The cluster
itself is tested in tests/test_tasks_dask.py."""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from mflc import tasks
from mflc.ir.errors import MflcError
from mflc.tasks import DaskUnavailable, Runner, TaskError, map_tasks, worker_cached

from util import cli_run


def _square(x):
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise MflcError("three is not allowed")
    if x == 4:
        raise KeyError("four")
    return x


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-10**6, 10**6), max_size=20))
def test_serial_map_is_the_list_comprehension_in_order(xs):
    done = []
    assert map_tasks(_square, xs, progress=done.append) == [x * x for x in xs]
    assert done == list(range(1, len(xs) + 1))


def test_serial_failure_names_the_task_and_the_error():
    with pytest.raises(TaskError, match=r"^file c\.py: three is not allowed$"):
        map_tasks(_fail_on_three, [1, 2, 3], labels=["a.py", "b.py", "file c.py"])
    with pytest.raises(TaskError, match=r"task 1: KeyError: 'four' \(raised at test_tasks\.py:\d+ in _fail_on_three\)"):
        map_tasks(_fail_on_three, [0, 4])


def test_labels_must_match_the_tasks():
    with pytest.raises(MflcError, match="2 labels for 3 tasks"):
        map_tasks(_square, [1, 2, 3], labels=["a", "b"])


@pytest.mark.parametrize("kw, msg", [
    (dict(workers=0), r"--workers 0: must be a whole number >= 1 or 'auto'"),
    (dict(workers=-2), r"--workers -2"),
    (dict(workers="many"), r"--workers 'many'"),
    (dict(workers=2, scheduler="tcp://h:8786"), r"--workers 2 and --scheduler tcp://h:8786: give one"),
    (dict(scheduler=" "), r"--scheduler: give an address"),
    (dict(workers=2, retries=-1), r"retries -1"),
])
def test_runner_refuses_bad_settings(kw, msg):
    with pytest.raises(MflcError, match=msg):
        Runner(**kw)


def test_runner_auto_is_sized_to_the_machine():
    r = Runner(workers="auto")
    assert not r.serial and r.n_workers() == len(os.sched_getaffinity(0))
    assert Runner().serial and Runner().n_workers() is None
    assert "2 worker" in Runner(workers=2).describe()


def test_worker_cache_reloads_on_a_new_identity_only():
    calls = []

    def make(v):
        return lambda: calls.append(v) or v

    key = ("test", object())
    assert worker_cached(key, "id1", make("a")) == "a"
    assert worker_cached(key, "id1", make("b")) == "a"          # loaded once
    assert worker_cached(key, "id2", make("c")) == "c"          # the content changed: loaded again
    assert calls == ["a", "c"]
    for k in range(tasks.WORKER_CACHE_ENTRIES + 1):             # bounded: old entries are dropped
        worker_cached(("test-fill", k), 0, lambda: k)
    assert key not in tasks._CACHE


def test_files_identity_changes_with_the_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    a = tasks.files_identity(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    b = tasks.files_identity(tmp_path)
    assert a != b and [n for n, *_ in b] == ["config.json", "model.safetensors"]
    assert tasks.files_identity(tmp_path / "absent") == ("missing",)


def test_model_source_refuses_a_checkpoint_changed_under_it(tmp_path):
    from mflc.cli.accuracy import ModelSource

    cli_run("init", "--preset", "tiny", "--out", tmp_path / "m")
    src = ModelSource.of(tmp_path / "m", None, None, (1, 2, 3))
    src.float_model()
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(cfg.read_text() + " ")                     # the files a worker would read are not the same
    with pytest.raises(MflcError, match=r"m: the checkpoint or calibration file on .* differs from the one the "
                                        "command started with"):
        src.float_model()


def test_dask_missing_is_a_named_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)     # import distributed -> ImportError
    with pytest.raises(DaskUnavailable, match=r"dask\.distributed is not installed .*pip install 'mflc\[dask\]'"):
        map_tasks(_square, [1, 2], runner=Runner(workers=2))
    r = cli_run("verify", "--workers", "2", ok=False)          # the default model is no build: that is said first
    assert r.exit_code == 1


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    import mflc

    out = tmp_path_factory.mktemp("tasks") / "b"
    mflc.compile(out=out)
    return out


def test_cli_dask_missing_exits_1_naming_the_extra(small_build, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    r = cli_run("verify", small_build, "--tokens", "2", "--sequences", "2", "--workers", "2", ok=False)
    assert r.exit_code == 1 and "mflc[dask]" in r.output


@pytest.mark.parametrize("args, msg", [
    (["--workers", "0"], "--workers 0: must be a whole number >= 1"),
    (["--workers", "two"], "--workers 'two': give a number of worker processes"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "give one"),
    (["--sequences", "0"], "--sequences must be >= 1, got 0"),
    (["--sequences", "100001"], "above the limit MAX_VERIFY_SEQUENCES"),
])
def test_cli_bad_task_options(small_build, args, msg):
    r = cli_run("verify", small_build, "--tokens", "2", *args, ok=False)
    assert r.exit_code == 1 and msg in " ".join(r.output.split()), r.output


def test_cli_sequences_need_a_build_and_no_text(small_build, tmp_path):
    r = cli_run("verify", "--sequences", "2", ok=False)        # the default model directory
    assert r.exit_code == 1 and "not a build" in r.output
    (tmp_path / "t.txt").write_text("def f(): pass\n")
    r = cli_run("verify", small_build, "--sequences", "2", "--text", tmp_path / "t.txt", ok=False)
    assert r.exit_code == 1 and "a text is one sequence" in r.output


def test_verify_sequences_serial_report_and_the_seeds(small_build):
    r = cli_run("verify", small_build, "--tokens", "3", "--sequences", "3", "--seed", "5", "--json")
    d = json.loads(r.stdout)
    assert d["ok"] and [s["seed"] for s in d["sequences"]] == [5, 6, 7] and d["failed_sequences"] == []
    assert [c["name"] for c in d["checks"]][0] == "integrity"
    # sequence k is what `verify --seed SEED+k` runs alone
    alone = json.loads(cli_run("verify", small_build, "--tokens", "3", "--seed", "6", "--json").stdout)
    assert alone["compared_values"] == d["sequences"][1]["compared_values"] and alone["ok"]


def test_verify_sequences_names_the_sequence_that_diverged(small_build, monkeypatch):
    """A divergence in one sequence (an executor made to disagree on seed 1's tokens) fails verify, naming
    that sequence and its seed, while the others pass."""
    import numpy as np

    from mflc import executors
    from mflc.simulator.verify import Divergence, VerifyResult

    real = executors.verify_executor
    bad_tokens = np.random.default_rng(1).integers(0, 256, 4).tolist()

    def flaky(name, qm, graph, toks, *a, **k):
        res = real(name, qm, graph, toks, *a, **k)
        if list(toks) == bad_tokens:
            return VerifyResult(False, res.tokens, res.compared_values,
                                Divergence(token=1, step=None, core=None, group="logits", neuron=0,
                                           expected=1, got=2, what="logits"), {})
        return res
    monkeypatch.setattr(executors, "verify_executor", flaky)
    r = cli_run("verify", small_build, "--tokens", "4", "--sequences", "3", ok=False)
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "sequence 1 (seed 1" in text and "diverged" in text and "sequence 0 (seed 0" not in text
    d = json.loads(cli_run("verify", small_build, "--tokens", "4", "--sequences", "3", "--json", ok=False).stdout)
    assert d["failed_sequences"] == [1] and not d["ok"]


def test_the_serial_path_never_imports_dask(small_build):
    code = ("import sys; from typer.testing import CliRunner; from mflc.cli import app; "
            f"r = CliRunner().invoke(app, ['verify', {str(small_build)!r}, '--tokens', '2', '--sequences', '2']); "
            "assert r.exit_code == 0, r.output; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
