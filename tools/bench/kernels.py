"""Synaptic kernel benchmark (run it directly: python -m mflc.bench.kernels; not a test).

Also the whole-sequence product (``sequence_products``): the byte dot-product kernel's G multiply-adds/s
(``kernel_gmac_s``) beside this machine's measured peak of the instruction (``int8_peak_gmac_s``), float32
BLAS and the int16 kernel it replaced, in the same run.

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
    from mflc.bench.timing import best_seconds

    return best_seconds(fn, rounds, clock=time.process_time)


def _best_wall(fn, rounds: int) -> float:
    from mflc.bench.timing import best_seconds

    return best_seconds(fn, rounds)


def sequence_products(rows: int, cols: int, tokens: int, rounds: int) -> dict:
    """Whole-sequence products (prefill, eval, verify) of a [tokens, cols] message block by a ternary
    [rows, cols] block: the byte dot-product kernel (simulator/int8dot.py) on one thread and on every usable
    one, against the instruction's peak measured the same way, float32 BLAS and the int16 Numba kernel it
    replaced; wall time, best of ``rounds``. The all-thread figure is the product as the sequence executor
    calls it: one thread or all, as the block shape's thread governor measured faster (on a quiet machine,
    all). Every product is first checked equal to the int64 one."""
    import numba

    from mflc.simulator import int8dot
    from mflc.simulator.sequence import _dense_tokens16, _dense_tokens16_parallel
    from mflc.simulator.threads import usable_cpus

    rng = np.random.default_rng(1)
    w = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    x = rng.integers(-128, 128, (tokens, cols))
    want = x @ w.astype(np.int64).T
    p = int8dot.PreparedWeights(w)
    wf, xf, x16, o16 = w.astype(np.float32), x.astype(np.float32), x.astype(np.int16), np.empty((tokens, rows), np.int32)
    _dense_tokens16_parallel(w, x16, o16)
    for got in (p.product(x, parallel=False), p.product(x, parallel=True), (xf @ wf.T).astype(np.int64), o16):
        if not np.array_equal(got, want):
            raise SystemExit("a whole-sequence product differs from the int64 product: a bug")
    threads = usable_cpus()
    numba.set_num_threads(threads)
    macs = rows * cols * tokens / 1e9
    res = dict(seq_rows=rows, seq_cols=cols, seq_tokens=tokens, threads=threads,
               kernel_1t_gmac_s=macs / _best_wall(lambda: p.product(x, parallel=False), rounds),
               kernel_gmac_s=macs / _best_wall(lambda: p.product(x), 3 * rounds),   # as the executor calls it
               int8_peak_1t_gmac_s=int8dot.peak_gmac_s(1, rounds),
               int8_peak_gmac_s=int8dot.peak_gmac_s(threads, rounds),
               blas_f32_gmac_s=macs / _best_wall(lambda: xf @ wf.T, rounds),
               int16_kernel_gmac_s=macs / _best_wall(lambda: _dense_tokens16_parallel(w, x16, o16), rounds),
               int16_kernel_1t_gmac_s=macs / _best_wall(lambda: _dense_tokens16(w, x16, o16), rounds))
    res.update(kernel_over_peak=res["kernel_gmac_s"] / res["int8_peak_gmac_s"],
               kernel_1t_over_peak=res["kernel_1t_gmac_s"] / res["int8_peak_1t_gmac_s"],
               kernel_over_blas=res["kernel_gmac_s"] / res["blas_f32_gmac_s"],
               kernel_over_int16=res["kernel_gmac_s"] / res["int16_kernel_gmac_s"])
    return res


def _print_sequence(r: dict) -> None:
    """The whole-sequence figures as lines."""
    print(f"whole-sequence products, {r['seq_tokens']} tokens x ternary {r['seq_rows']} x {r['seq_cols']} "
          f"(G multiply-adds/s, wall, best of the rounds):")
    print(f"  byte dot products (VNNI), 1 thread     {r['kernel_1t_gmac_s']:7.1f}   "
          f"{r['kernel_1t_over_peak']:.2f} of the 1-thread peak {r['int8_peak_1t_gmac_s']:.1f}")
    print(f"  byte dot products (VNNI), {r['threads']} threads    {r['kernel_gmac_s']:7.1f}   "
          f"{r['kernel_over_peak']:.2f} of the {r['threads']}-thread peak {r['int8_peak_gmac_s']:.1f}")
    print(f"  float32 BLAS                           {r['blas_f32_gmac_s']:7.1f}   kernel {r['kernel_over_blas']:.1f}x")
    print(f"  int16 Numba kernel (before), {r['threads']} threads {r['int16_kernel_gmac_s']:7.1f}   "
          f"kernel {r['kernel_over_int16']:.1f}x (1 thread: {r['int16_kernel_1t_gmac_s']:.1f})")


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
    ap.add_argument("--seq-tokens", type=int, default=192, help="tokens of the whole-sequence product (a prefill piece)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--generation", metavar="PRESET", help="also generation tokens/s of PRESET, LUT against bit planes")
    a = ap.parse_args(argv)
    for name in ("rows", "cols", "blocks", "rounds", "seq_tokens"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(a, name)}")
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
    from mflc.simulator import int8dot

    if int8dot.available():
        res.update(sequence_products(a.rows, a.cols, a.seq_tokens, a.rounds))
    else:
        res["kernel_gmac_s"] = res["int8_peak_gmac_s"] = None      # no VNNI here (or MFLC_INT8_DOT=0)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{a.blocks} blocks of {a.rows} x {a.cols} ({n / 1e6:.0f} M weights), 8-bit messages, best of {a.rounds}:")
        print(f"  int8 kernel       {res['int8_gweights_per_s']:6.1f} G weights/s  ({res['int8_bytes'] / 1e6:.0f} MB)")
        print(f"  bit-plane kernel  {res['planes_gweights_per_s']:6.1f} G weights/s  ({res['planes_bytes'] / 1e6:.0f} MB)"
              f"   {res['planes_over_int8']:.2f}x")
        print_lut(res)
        if res["kernel_gmac_s"] is not None:
            _print_sequence(res)
        else:
            print("whole-sequence byte dot products: not available on this CPU (no AVX-512 VNNI) or MFLC_INT8_DOT=0")
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
    if "lut_generation_tokens_per_s" in res:
        print(f"  generation: LUT {res['lut_generation_tokens_per_s']:.1f}, bit-plane "
              f"{res['planes_generation_tokens_per_s']:.1f} tok/s  {res['lut_over_planes_generation']:.2f}x"
              f"  (equal logits: {res['lut_equals_planes']})")


def generation_by_kernel(preset: str, rounds: int, tokens: int = 16) -> dict:
    """Generation of ``preset`` (random weights) with the fast path's 'packed' kernel (LUT blocks where the
    CPU has the vector kernel) and its 'planes' kernel, alternating, best tokens/s of ``rounds`` each."""
    from mflc.compiler.model.checkpoint import init_weights
    from mflc.compiler.model.config import preset as preset_config
    from mflc.compiler.model.lower import lower
    from mflc.compiler.model.quantize import quantize
    from mflc.simulator.fastpath import KIND_LUT, FastEngine

    cfg = preset_config(preset)          # random weights, as bench.sim's build (not imported: no import cycle)
    g = lower(quantize(cfg, init_weights(cfg, 0), [np.random.default_rng(0).integers(0, cfg.vocab_size, 32).tolist()]))
    toks = np.random.default_rng(2).integers(0, 256, tokens + 1)
    best, logits, nlut = {"packed": 0.0, "planes": 0.0}, {}, 0
    for _ in range(rounds):
        for kernel in best:
            fe = FastEngine(g, kernel=kernel)
            fe.step(int(toks[0]))
            t0 = time.perf_counter()
            out = [fe.step(int(t))["logits"] for t in toks[1:]]
            best[kernel] = max(best[kernel], tokens / (time.perf_counter() - t0))
            logits[kernel] = np.stack(out)
            nlut = int((fe.syn[:, 0] == KIND_LUT).sum()) if kernel == "packed" else nlut
            del fe
    return dict(lut_generation_tokens_per_s=best["packed"], planes_generation_tokens_per_s=best["planes"],
                lut_over_planes_generation=best["packed"] / best["planes"], lut_block_slices=nlut,
                lut_equals_planes=bool(np.array_equal(logits["packed"], logits["planes"])))


if __name__ == "__main__":
    main()
