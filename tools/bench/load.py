"""Generation beside competing work the benchmark starts itself (part of python -m mflc.bench.sim).

Two CPU-bound processes (a busy Python loop each) and one memory-streaming process (a 256 MB copy, again
and again) run while the fast path generates; on this 2-core machine that is five runnable threads for two
cores plus a share of the memory bandwidth. The engine's thread governor (simulator/threads.py) is
measured against the same engine pinned to all usable CPUs, the behaviour before it: the pinned figure is
what collapses when a parallel region's barrier waits on a descheduled thread.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time

_CPU = "while True:\n    pass\n"
_MEMORY = ("import numpy as np\na = np.ones(32 << 20)\nb = np.empty_like(a)\n"
           "while True:\n    np.copyto(b, a)\n")


@contextlib.contextmanager
def competing_work(cpu: int = 2, memory: int = 1):
    """``cpu`` busy loops and ``memory`` streaming copies in their own processes, killed on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for src in [_CPU] * cpu + [_MEMORY] * memory]
    try:
        time.sleep(0.5)                        # the copy's arrays allocated, every process on a CPU
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _tokens_per_s(fe, toks, settle: int) -> tuple[float, float, float]:
    """Tokens/s over toks[settle:] after ``settle`` untimed tokens (the governor's first probes), the CPUs
    this process got meanwhile (its CPU time over wall time), and the share of timed tokens on one thread."""
    for t in toks[:settle]:
        fe.step(t)
    one = fe.threads.runs[1]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in toks[settle:]:
        fe.step(t)
    wall = time.perf_counter() - t0
    n = len(toks) - settle
    return n / wall, (time.process_time() - c0) / wall, (fe.threads.runs[1] - one) / n


def bench_under_load(g, toks, res: dict, settle: int = 16) -> None:
    """generation_under_load_tokens_per_s (the governed engine beside competing work), the same engine
    quiet in the same run, and the engine pinned to all usable CPUs under the same load."""
    from mflc.simulator.fastpath import FastEngine
    from mflc.simulator.threads import usable_cpus

    fe = FastEngine(g)
    fe.step(toks[0])
    quiet, quiet_cpus, _ = _tokens_per_s(fe, toks[1:], settle)
    pinned = FastEngine(g, threads=usable_cpus())
    pinned.step(toks[0])
    with competing_work():
        loaded, loaded_cpus, one_share = _tokens_per_s(fe, toks[1:], settle)
        loaded_pinned, _, _ = _tokens_per_s(pinned, toks[1:], settle)
    # tokens per CPU-second under load over the same quiet: 1.0 is "in proportion to the CPU it gets"
    per_cpu = (loaded / loaded_cpus) / (quiet / quiet_cpus)
    res.update(generation_quiet_tokens_per_s=quiet, generation_under_load_tokens_per_s=loaded,
               generation_under_load_pinned_tokens_per_s=loaded_pinned,
               under_load_over_quiet=loaded / quiet, under_load_over_pinned=loaded / loaded_pinned,
               quiet_cpus_used=quiet_cpus, under_load_cpus_used=loaded_cpus, under_load_per_cpu_over_quiet=per_cpu,
               under_load_one_thread_share=one_share, usable_cpus=usable_cpus())
