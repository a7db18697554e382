"""The thread governor: which thread count a token gets, from token times a fake clock reports.

The generation fast path must follow the CPU it really gets (two threads on a quiet machine, one beside
competing work, where every barrier of a two-thread token waits on a descheduled thread); these tests
drive ``ThreadGovernor`` with scripted token times and check its choices, and that the fast path
gives the same integers whatever count each token ran with.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

from mflc.simulator import threads as T


class Clock:
    """A clock whose next token takes ``cost(threads)`` seconds."""

    def __init__(self, cost):
        self.now, self.cost, self.n = 0.0, cost, 1

    def __call__(self):
        return self.now

    def token(self, gov):
        """One token through the governor: begin, advance the clock by the token's cost, end."""
        self.n = gov.begin()
        self.now += self.cost(self.n)
        gov.end()


@pytest.fixture
def two_cpus(monkeypatch):
    """A governor that may use two threads, whatever this machine has."""
    monkeypatch.setattr(T, "usable_cpus", lambda: 2)
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba limited to one thread here")


def test_keeps_two_threads_when_they_are_faster(two_cpus):
    clock = Clock(lambda n: 0.008 if n == 2 else 0.012)
    gov = T.ThreadGovernor(clock=clock)
    for _ in range(200):
        clock.token(gov)
    assert gov.current == 2
    probes = gov.runs[1]
    assert 1 <= probes <= 8, probes            # tried now and then, less often as the choice holds
    assert gov.runs[1] + gov.runs[2] == 200 and list(gov.history).count(1) == probes


def test_switches_to_one_thread_under_load_and_back(two_cpus):
    load = {"on": False}
    clock = Clock(lambda n: (0.07 if n == 2 else 0.03) if load["on"] else (0.008 if n == 2 else 0.012))
    gov = T.ThreadGovernor(clock=clock)
    for _ in range(50):
        clock.token(gov)
    assert gov.current == 2
    load["on"] = True
    for _ in range(T.MAX_PROBE_INTERVAL + 10):
        clock.token(gov)
    assert gov.current == 1
    tail = list(gov.history)[-100:]
    assert tail.count(2) <= 3                  # under load nearly every token runs on one thread
    load["on"] = False
    for _ in range(T.MAX_PROBE_INTERVAL + 10):
        clock.token(gov)
    assert gov.current == 2


def test_a_fixed_count_never_probes(two_cpus):
    clock = Clock(lambda n: 0.01)
    gov = T.ThreadGovernor(fixed=1, clock=clock)
    for _ in range(50):
        clock.token(gov)
    assert set(gov.history) == {1}


def test_restores_the_callers_thread_count(two_cpus):
    before = numba.get_num_threads()
    gov = T.ThreadGovernor()
    for _ in range(3):
        gov.begin()
        gov.end()
    assert numba.get_num_threads() == before


def test_usable_cpus_follows_the_affinity_mask_and_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: {0})
    assert T.usable_cpus() == 1
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(T, "_cgroup_cpus", lambda: 1.5)          # a container given 1.5 CPUs of quota
    assert T.usable_cpus() == 1
    monkeypatch.setattr(T, "_cgroup_cpus", lambda: None)
    assert T.usable_cpus() == min(numba.config.NUMBA_NUM_THREADS, 64)


def test_cgroup_quota_parsing(tmp_path):
    assert T._cgroup_cpus(tmp_path) is None                            # no file: no limit known
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert T._cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert T._cgroup_cpus(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert T._cgroup_cpus(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert T._cgroup_cpus(v1) == 0.5


def test_fast_path_same_integers_whatever_the_thread_counts(two_cpus, tiny_qm):
    """Tokens alternate between one and two threads (a governor forced to probe every token): the logits
    equal those of a run pinned to one thread. (The tiny model's blocks are below the parallel threshold;
    the parallel kernels' own equality is tests/test_packed_kernels.py's.)"""
    from mflc.compiler.model.lower import lower
    from mflc.simulator.fastpath import FastEngine

    g = lower(tiny_qm)
    toks = np.random.default_rng(3).integers(0, 256, 12).tolist()
    pinned = FastEngine(g, threads=1)
    want = [pinned.step(t)["logits"] for t in toks]
    fe = FastEngine(g)
    fe.threads.interval = fe.threads.until_probe = 0                 # probe on every other token
    got = []
    for t in toks:
        got.append(fe.step(t)["logits"])
        fe.threads.until_probe = 0
    assert set(fe.threads.history) == {1, 2}
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_bad_thread_count_is_refused(tiny_qm):
    from mflc.compiler.model.lower import lower
    from mflc.simulator.fastpath import FastEngine

    with pytest.raises(ValueError, match="threads must be at least 1"):
        FastEngine(lower(tiny_qm), threads=0)
