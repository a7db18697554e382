"""The benchmarks' one timing rule (shared by sim, kernels and load): best of a few calls after a warm-up."""
from __future__ import annotations

import time


def best_seconds(fn, rounds: int = 5, clock=time.perf_counter) -> float:
    """The shortest of a few timed calls of fn, after one untimed call (compilation, caches); ``clock``:
    wall time by default, ``time.process_time`` for CPU time that other processes do not inflate."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best
