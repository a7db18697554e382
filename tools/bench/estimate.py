"""Time `mflc estimate` from a configuration: the fast cost model against the direct definitions
it replaced (every prefill step's window, every (neuron, core) pair listed), in the same run, with the
figures compared for equality.

    .venv/bin/python -m mflc.bench.estimate --preset 370M --preset 2.7B
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager


@contextmanager
def direct_cost_model():
    """The cost model as before the fast estimate: the definitions the fast functions are tested against."""
    from mflc.compiler.chip import costmodel as cm

    saved = cm.assumed_profile, cm.PipelineWindows.time, cm.PipelineWindows.__init__

    def init(self, work, link):
        """Keep the matrices for the direct computation."""
        saved[2](self, work, link)
        self._raw = (work, link)

    cm.assumed_profile = cm.assumed_profile_direct
    matrices, cm._matrices = cm._matrices, cm._matrices_direct
    cm.PipelineWindows.__init__ = init
    cm.PipelineWindows.time = lambda self, n, tb: cm.pipeline_time_direct(*self._raw, n, tb)
    try:
        yield
    finally:
        cm.assumed_profile, cm.PipelineWindows.time, cm.PipelineWindows.__init__ = saved
        cm._matrices = matrices


def timed(name: str) -> tuple[float, dict]:
    """Seconds of one estimate of preset ``name`` and its report."""
    from mflc.api import estimate
    from mflc.compiler.model.config import preset

    t0 = time.perf_counter()
    rep, _, _ = estimate(preset(name))
    return time.perf_counter() - t0, rep


def main(argv=None) -> None:
    """Print, per preset, the seconds of both paths, their ratio and whether every figure is equal."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", default=None, help="370M, 1.3B, 2.7B (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for name in args.preset or ["370M", "1.3B", "2.7B"]:
        fast, rf = timed(name)
        with direct_cost_model():
            direct, rd = timed(name)
        rows.append(dict(preset=name, fast_s=round(fast, 2), direct_s=round(direct, 2),
                         speedup=round(direct / fast, 2), equal=json.dumps(rf, sort_keys=True) == json.dumps(rd, sort_keys=True),
                         cores=rf["cores"], chips=rf["chips"]))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        print(f"{r['preset']:>5}: fast {r['fast_s']:6.2f} s, direct {r['direct_s']:6.2f} s, x{r['speedup']:.2f}, "
              f"figures equal: {r['equal']} ({r['cores']:,} cores, {r['chips']} chips)")


if __name__ == "__main__":
    main()
