"""Synaptic kernel benchmark (run it directly: python -m mflc.bench.kernels; not a test).

The generation fast path's ways to sum a ternary block against an 8-bit message, on blocks of a
370M projection's shape, enough of them that the weights stream from memory as in a real token: the
int8 kernel (one byte per weight, kernels.dense_rows16) and the bit-plane kernel (2 bits per weight,
kernels.planes_rows); then the lookup-table kernel (2 bits per weight, simulator/lut.py) beside the
bit-plane kernel on the block shape, its transpose and a square (the 370M's 2816 x 1024, 1024 x 2816 and
1024 x 1024); ``--generation 370M`` adds generation tokens/s with either form of the blocks. One
thread unless NUMBA_NUM_THREADS says otherwise; best of several rounds, CPU time. Every kernel's sums are
checked equal to an int64 product first.
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
    ap.add_argument("--generation", metavar="PRESET", help="also generation tokens/s of PRESET, LUT against bit planes")
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
    res.update(lut_figures(a, x, planes, w8[0]))
    if a.generation:
        res.update(generation_by_kernel(a.generation, a.rounds))
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{a.blocks} blocks of {a.rows} x {a.cols} ({n / 1e6:.0f} M weights), 8-bit messages, best of {a.rounds}:")
        print(f"  int8 kernel       {res['int8_gweights_per_s']:6.1f} G weights/s  ({res['int8_bytes'] / 1e6:.0f} MB)")
        print(f"  bit-plane kernel  {res['planes_gweights_per_s']:6.1f} G weights/s  ({res['planes_bytes'] / 1e6:.0f} MB)"
              f"   {res['planes_over_int8']:.2f}x")
        print_lut(res)
        if a.generation:
            print(f"  generation ({a.generation}): LUT {res['lut_generation_tokens_per_s']:.1f}, bit-plane "
                  f"{res['planes_generation_tokens_per_s']:.1f} tok/s  {res['lut_over_planes_generation']:.2f}x"
                  f"  (equal logits: {res['lut_equals_planes']})")
    return res


def _random_planes(rows: int, cols: int, blocks: int, rng):
    """(int8 block 0, [(plus, minus)] of ``blocks`` random ternary blocks, 30 % zeros as in main)."""
    from mflc.ir.ternary import planes_from_csr
    from mflc.ir.graph import SynapseGroup

    out, first = [], None
    for _ in range(blocks):
        w = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
        w[rng.random(w.shape) < 0.3] = 0
        s = SynapseGroup.from_dense("s", "a", "b", "x", w)
        first = w if first is None else first
        out.append(planes_from_csr(s.shape, s.indptr, s.indices, s.values))
    return first, out


def _lut_shape(planes: list, w0, x, rounds: int) -> dict:
    """The bit-plane and the lookup-table kernel on the same blocks, and each one's per-message
    preparation (bit planes of the message; the LUT's tables), timed apart."""
    from mflc.ir.ternary import plane_words
    from mflc.simulator import kernels as K, lut as L

    rows, cols = w0.shape
    X = np.zeros((8, plane_words(cols)), np.uint64)
    T = L.table_array(cols, 8)
    blocks = [L.lut_from_planes(p, m, cols) for p, m in planes]
    o_p, o_l = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
    K.message_planes(x, cols, 8, X)
    L.lut_tables(x, cols, 8, T)
    K.planes_rows(*planes[0], X, 1, o_p, 0, rows)
    L.lut_rows(blocks[0], T, 1, o_l, 0, rows)
    if not (np.array_equal(o_p, w0.astype(np.int64) @ x) and np.array_equal(o_l, o_p)):
        raise SystemExit(f"the LUT or bit-plane kernel disagrees with the int64 product on {rows} x {cols}: a bug")
    tp = _best_cpu(lambda: [K.planes_rows(p, m, X, 1, o_p, 0, rows) for p, m in planes], rounds)
    tl = _best_cpu(lambda: [L.lut_rows(b, T, 1, o_l, 0, rows) for b in blocks], rounds)
    reps = 200
    tx = _best_cpu(lambda: [K.message_planes(x, cols, 8, X) for _ in range(reps)], rounds) / reps
    tt = _best_cpu(lambda: [L.lut_tables(x, cols, 8, T) for _ in range(reps)], rounds) / reps
    n, nb = rows * cols * len(planes), len(planes)
    return dict(planes_gweights_per_s=n / tp / 1e9, lut_gweights_per_s=n / tl / 1e9, lut_over_planes=tp / tl,
                message_planes_us=tx * 1e6, lut_tables_us=tt * 1e6,
                lut_over_planes_with_preparation=(tp + nb * tx) / (tl + nb * tt),
                lut_bytes=sum(b.nbytes for b in blocks), vector=L.VECTOR)


def lut_figures(a, x, planes: list, w0) -> dict:
    """The LUT comparison on main's blocks (--rows x --cols, w0 the first) and as many of the transposed and
    the --cols-square shape:
    top-level keys for the first shape, ``lut_shapes`` for every shape."""
    rng = np.random.default_rng(1)
    shapes = {f"{a.rows}x{a.cols}": _lut_shape(planes, w0, x, a.rounds)}
    for rows, cols in ((a.cols, a.rows), (a.cols, a.cols)):      # the transpose, the square (370M: i, f, g, o)
        if f"{rows}x{cols}" not in shapes:
            xt = rng.integers(-128, 128, cols).astype(np.int64)
            wt, pt = _random_planes(rows, cols, max(1, a.blocks * a.rows * a.cols // (rows * cols)), rng)  # as many bytes
            shapes[f"{rows}x{cols}"] = _lut_shape(pt, wt, xt, a.rounds)
            del pt
    first = shapes[f"{a.rows}x{a.cols}"]
    return dict(lut_gweights_per_s=first["lut_gweights_per_s"], lut_over_planes=first["lut_over_planes"],
                lut_shapes=shapes)


def print_lut(res: dict) -> None:
    """The LUT comparison as lines under main's table."""
    for shape, f in res["lut_shapes"].items():
        kind = "vpermb + vpdpbusd" if f["vector"] else "scalar: no AVX-512 VBMI/VNNI here"
        print(f"  {shape}: bit-plane {f['planes_gweights_per_s']:5.1f}, lookup-table ({kind}) "
              f"{f['lut_gweights_per_s']:5.1f} G weights/s  LUT/bit-plane {f['lut_over_planes']:.2f}x")
        print(f"    per message: bit planes {f['message_planes_us']:.1f} us, LUT tables {f['lut_tables_us']:.1f} us;"
              f" with one per block LUT/bit-plane {f['lut_over_planes_with_preparation']:.2f}x")


def generation_by_kernel(preset: str, rounds: int, tokens: int = 16) -> dict:
    """Generation of ``preset`` (random weights) with the fast path's 'packed' kernel (LUT blocks where the
    CPU has the vector kernel) and its 'planes' kernel, alternating, best tokens/s of ``rounds`` each."""
    from mflc.bench.sim import build, time_tokens
    from mflc.simulator.fastpath import KIND_LUT, FastEngine

    g = build(preset)[3]
    toks = np.random.default_rng(2).integers(0, 256, tokens + 1)
    best, logits, nlut = {"packed": 0.0, "planes": 0.0}, {}, 0
    for _ in range(rounds):
        for kernel in best:
            fe = FastEngine(g, kernel=kernel)
            fe.step(int(toks[0]))
            out = []
            best[kernel] = max(best[kernel], time_tokens(lambda k: out.append(fe.step(int(toks[k + 1]))["logits"]), tokens))
            logits[kernel] = np.stack(out)
            nlut = int((fe.syn[:, 0] == KIND_LUT).sum()) if kernel == "packed" else nlut
            del fe
    return dict(lut_generation_tokens_per_s=best["packed"], planes_generation_tokens_per_s=best["planes"],
                lut_over_planes_generation=best["packed"] / best["planes"], lut_block_slices=nlut,
                lut_equals_planes=bool(np.array_equal(logits["packed"], logits["planes"])))


if __name__ == "__main__":
    main()
