"""Synaptic kernel benchmark (run it directly: python -m mflc.bench.kernels; not a test).

The generation fast path's two ways to sum a ternary block against an 8-bit message, on blocks of a
370M projection's shape, enough of them that the weights stream from memory as in a real token: the
int8 kernel (one byte per weight, kernels.dense_rows16) and the bit-plane kernel (2 bits per weight,
kernels.planes_rows). One thread unless NUMBA_NUM_THREADS says otherwise; best of several rounds, CPU
time. Both kernels' sums are checked equal to an int64 product first.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _best_cpu(fn, rounds: int) -> float:
    """The shortest CPU time of a few calls (the simulator benchmark's timing, on the process clock)."""
    from mflc.bench.sim import best_seconds

    return best_seconds(fn, rounds, clock=time.process_time)


def main(argv=None) -> dict:
    """Time both kernels on ``--blocks`` random blocks of ``--rows`` x ``--cols``; print or --json."""
    from mflc.ir.graph import SynapseGroup
    from mflc.ir.ternary import plane_words, planes_from_csr
    from mflc.simulator import kernels as K

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2816)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=40, help="enough blocks that the weights exceed the caches")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, a.cols).astype(np.int64)
    X = np.zeros((8, plane_words(a.cols)), np.uint64)
    K.message_planes(x, a.cols, 8, X)
    w8, planes = [], []
    for _ in range(a.blocks):
        w = rng.integers(-1, 2, (a.rows, a.cols)).astype(np.int8)
        w[rng.random(w.shape) < 0.3] = 0
        s = SynapseGroup.from_dense("s", "a", "b", "x", w)
        w8.append(w)
        planes.append(planes_from_csr(s.shape, s.indptr, s.indices, s.values))
    want = w8[0].astype(np.int64) @ x
    o32, o64 = np.zeros(a.rows, np.int32), np.zeros(a.rows, np.int64)
    K.dense_rows16(w8[0], x.astype(np.int16), o32, 0, a.rows)
    K.planes_rows(*planes[0], X, 1, o64, 0, a.rows)
    if not (np.array_equal(o32, want) and np.array_equal(o64, want)):
        raise SystemExit("the kernels disagree with the int64 product: a bug")
    x16 = x.astype(np.int16)
    t8 = _best_cpu(lambda: [K.dense_rows16(w, x16, o32, 0, a.rows) for w in w8], a.rounds)
    tp = _best_cpu(lambda: [K.planes_rows(p, m, X, 1, o64, 0, a.rows) for p, m in planes], a.rounds)
    n = a.rows * a.cols * a.blocks
    res = dict(weights=n, int8_gweights_per_s=n / t8 / 1e9, planes_gweights_per_s=n / tp / 1e9,
               int8_bytes=sum(w.nbytes for w in w8), planes_bytes=sum(p.nbytes + m.nbytes for p, m in planes),
               planes_over_int8=t8 / tp)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{a.blocks} blocks of {a.rows} x {a.cols} ({n / 1e6:.0f} M weights), 8-bit messages, best of {a.rounds}:")
        print(f"  int8 kernel       {res['int8_gweights_per_s']:6.1f} G weights/s  ({res['int8_bytes'] / 1e6:.0f} MB)")
        print(f"  bit-plane kernel  {res['planes_gweights_per_s']:6.1f} G weights/s  ({res['planes_bytes'] / 1e6:.0f} MB)"
              f"   {res['planes_over_int8']:.2f}x")
    return res


if __name__ == "__main__":
    main()
