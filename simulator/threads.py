"""How many threads a token gets: sized to the CPUs this process may use, then chosen from measured time.

Why. A 370M token runs ~600 parallel regions (one per large synapse group), each ending in a barrier. On a
quiet machine two threads make a token ~1.3x faster than one. Beside other CPU-bound work the scheduler
deschedules one of the two threads for milliseconds at a time and every barrier waits for it: measured on
this 2-core machine beside two busy loops and a memory-streaming process, two threads ran 6-8 tok/s where
one thread ran 27-40 (tools/bench/sim.py, docs/benchmarks.md). No static choice is right in both cases, so
the engine measures: ``ThreadGovernor`` times each token, keeps a running mean per thread count, runs the
faster count, and re-tries the other one now and then (less often each time the choice is confirmed, by
at least 2x and by as much as the probe was slower), so a token's speed follows the CPU the process really
gets while probes cost a few per cent of the tokens.

The thread counts offered never exceed ``usable_cpus()``: the CPUs in this process's affinity mask and its
cgroup's CPU quota (a container limited to one CPU gets one thread, whatever the host has).
"""
from __future__ import annotations

import os
import time
from collections import Counter, deque
from pathlib import Path

import numba

EMA_WEIGHT = 0.5           # weight of the newest token time in a thread count's running mean
FIRST_PROBE = 8            # tokens before the other thread count is tried again after a switch
MAX_PROBE_INTERVAL = 100
HISTORY = 1000            # latest tokens whose thread counts are kept   # the longest run of tokens without trying the other count


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 ``cpu.max``: "quota period"; v1
    ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us``, -1 for none); None if unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def usable_cpus() -> int:
    """The threads worth running: Numba's limit, the affinity mask and the cgroup quota, whichever is least."""
    n = min(numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0)))
    quota = _cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return max(1, n)


class ThreadGovernor:
    """Chooses each token's (or call's) thread count (1 or ``usable_cpus()``) from the measured times of earlier tokens.

    Use: ``n = gov.begin()`` before a token (it sets Numba's thread count), ``gov.end()`` after. ``fixed``
    pins one count (``threads=N`` of the engines; 1 is also the choice where only one CPU is usable)."""

    def __init__(self, fixed: int | None = None, clock=time.perf_counter):
        top = usable_cpus()
        self.counts = [min(fixed, top)] if fixed else ([top, 1] if top > 1 else [1])
        self.mean: dict[int, float] = {}
        self.current, self.clock = self.counts[0], clock
        self.interval, self.until_probe = FIRST_PROBE, 1     # the other count is first tried on token 2
        self._running: int | None = None
        self._t0 = 0.0
        self._before = 1
        self._warm: set[int] = set()       # the counts that have run once (their first time is not a measure)
        self.runs: Counter[int] = Counter()    # tokens run with each count (for benchmarks)
        self.history: deque[int] = deque(maxlen=HISTORY)   # the counts of the latest tokens (for tests)

    def begin(self) -> int:
        """Set and return the thread count for the next token."""
        n = self.current
        if len(self.counts) > 1:
            other = self.counts[1] if n == self.counts[0] else self.counts[0]
            if self.until_probe <= 0:
                n = other
        self._before = numba.get_num_threads()
        numba.set_num_threads(n)
        self._running, self._t0 = n, self.clock()
        return n

    def end(self, work: float = 1.0) -> None:
        """Record the token's time (per unit of ``work``, for calls of different sizes) and, from the running
        means, choose the count for the tokens ahead."""
        n, dt = self._running, (self.clock() - self._t0) / work
        numba.set_num_threads(self._before)               # the caller's own count, for its other parallel code
        self._running = None
        self.history.append(n)
        self.runs[n] += 1
        if n not in self._warm:           # a count's first run pays for compilation and thread start-up
            self._warm.add(n)
            return
        m = self.mean.get(n)
        if len(self.counts) == 1:
            self.mean[n] = dt if m is None else (1 - EMA_WEIGHT) * m + EMA_WEIGHT * dt
            return
        if n != self.current:             # a probe: its time replaces the other count's (maybe stale) mean
            self.mean[n] = dt
            if dt < self.mean.get(self.current, float("inf")):
                self.current, self.interval = n, FIRST_PROBE
            else:       # confirmed: wait longer, the more so the dearer the probe was (bounded cost share)
                lost = dt / max(self.mean.get(self.current, dt), 1e-9)
                self.interval = min(int(self.interval * max(2.0, lost)), MAX_PROBE_INTERVAL)
            self.until_probe = self.interval
        else:
            self.mean[n] = dt if m is None else (1 - EMA_WEIGHT) * m + EMA_WEIGHT * dt
            other = [c for c in self.counts if c != n][0]
            # slower now than the other count was when last tried: try it on the next token
            self.until_probe = 0 if self.mean[n] > self.mean.get(other, float("inf")) else self.until_probe - 1
