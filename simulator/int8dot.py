"""Whole-sequence products on the CPU's integer dot-product instruction (AVX-512 VNNI ``vpdpbusd``).

Why not BLAS or a plain Numba loop. Float32 BLAS reached ~58 G multiply-adds/s here and a Numba int16
loop 25-40 (LLVM vectorises it with ``vpdpwssd``, two bytes per operand and a horizontal sum per output);
``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four into a 32-bit
lane, one instruction per cycle: a register tile of 8 weight rows x 3 tokens keeps 24 such sums going and
reaches most of that peak. No well-kept Python library exposes an exact u8 x s8 -> s32 product without
heavy dependencies (onnxruntime's MatMulInteger would, at the cost of a runtime and a session per shape),
so the tile is written here as LLVM IR through Numba's ``@intrinsic`` and compiled (and cached) with
everything else.

Exactness (docs/fixed-point.md, "Exact matrix products"). The instruction wants one unsigned operand, so
messages x of at most 8 signed bits are sent as x + 128 in [0, 255] and the product corrected:
Σ_j w_j x_j = Σ_j w_j (x_j + 128) − 128 Σ_j w_j. Every partial sum of the offset product is at most
``fp.offset_product_bound(n, w_max)`` = 255 · w_max · n in magnitude; ``fp.offset_product_exact`` admits a
block only where that fits int32, so no lane wraps (the instruction wraps, it does not saturate). Weights
are int8 (|w| <= 127). Rows and tokens are padded with zeros to whole tiles, columns to 64 bytes.

The integer model (compiler/model/int_model.py) keeps its own products (float32 BLAS, proven exact) on
purpose: verification compares the simulator against it, and two independent product implementations are
what make that comparison a check of this kernel too.

Where the CPU lacks the instructions (``available()`` checks the host's features and runs a self-test once),
or ``MFLC_INT8_DOT=0`` is set, callers keep their previous product (the int32 Numba kernel or BLAS).
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import numba as nb
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from mflc.ir import fixedpoint as fp

from .threads import ThreadGovernor

ROWS, TOKENS, LANE_BYTES = 8, 3, 64     # the register tile: 8 weight rows x 3 tokens, 64 bytes per step
PARALLEL_MIN_MACS = 1 << 26             # products at least this large (~0.4 ms on one thread) may run on all threads
CHUNK_TILES = 4                         # row tiles a thread takes at a time (32 rows: ~35 us at T = 192, n = 1024)

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_V16 = ir.VectorType(_I32, 16)
# LLVM 21 changed the byte operands of the VNNI intrinsics from <16 x i32> to <64 x i8>
_BYTES = ir.VectorType(_I8, 64) if llvm.llvm_version_info[0] >= 21 else _V16


def dpbusd(builder, acc, u8, s8):
    """IR: acc + the sums of four u8 x s8 products per 32-bit lane (``vpdpbusd zmm``, wrapping); the byte
    operands may be any 512-bit vectors (bitcast to the type this LLVM's intrinsic takes). The one place
    mflc emits the instruction (this module's tile and simulator/lut.py's lookups)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16, _BYTES, _BYTES]),
                                        "llvm.x86.avx512.vpdpbusd.512")
    u8, s8 = (v if v.type == _BYTES else builder.bitcast(v, _BYTES) for v in (u8, s8))
    return builder.call(fn, [acc, u8, s8])


def _load64(builder, base, offset):
    """64 bytes at base + offset (any alignment) as the instruction's operand type."""
    return builder.load(builder.bitcast(builder.gep(base, [offset]), _BYTES.as_pointer()), align=1)


@intrinsic
def _tile(typingctx, w_addr, w_stride, x_addr, x_stride, steps, o_addr, o_stride):
    """out[j, i] = Σ_k w[i, k] · x[j, k] for the tile's ROWS rows i and TOKENS tokens j (byte addresses,
    row strides in bytes, ``steps`` blocks of 64 columns; out int32 with a row stride in elements)."""
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        """The tile's loop: ROWS + TOKENS loads and ROWS x TOKENS dot-product instructions per step."""
        wa, ws, xa, xs, steps, oa, ostride = args
        wp, xp = builder.inttoptr(wa, _I8.as_pointer()), builder.inttoptr(xa, _I8.as_pointer())
        op = builder.inttoptr(oa, _I32.as_pointer())
        zero = ir.Constant(_V16, [0] * 16)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(TOKENS)] for _ in range(ROWS)]
        for row in acc:
            for a in row:
                builder.store(zero, a)
        with cgutils.for_range(builder, steps) as loop:
            off = builder.mul(loop.index, ir.Constant(_I64, LANE_BYTES))
            wv = [_load64(builder, wp, builder.add(off, builder.mul(ws, ir.Constant(_I64, i)))) for i in range(ROWS)]
            xv = [_load64(builder, xp, builder.add(off, builder.mul(xs, ir.Constant(_I64, j)))) for j in range(TOKENS)]
            for i in range(ROWS):
                for j in range(TOKENS):
                    builder.store(dpbusd(builder, builder.load(acc[i][j]), xv[j], wv[i]), acc[i][j])
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_V16]),
                                                "llvm.vector.reduce.add.v16i32")
        for i in range(ROWS):
            for j in range(TOKENS):
                at = builder.add(builder.mul(ostride, ir.Constant(_I64, j)), ir.Constant(_I64, i))
                builder.store(builder.call(reduce, [builder.load(acc[i][j])]), builder.gep(op, [at]))
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _tiles(w, x, out, rt0, rt1):
    """Row tiles rt0..rt1 of out [Tp, mp] = x [Tp, K] (offset bytes) · w [mp, K]ᵀ, every token tile."""
    mp, K = w.shape
    for rt in range(rt0, rt1):
        r = rt * ROWS
        for t in range(0, x.shape[0], TOKENS):
            _tile(w.ctypes.data + r * K, K, x.ctypes.data + t * K, K, K // LANE_BYTES,
                  out.ctypes.data + 4 * (t * mp + r), mp)


@intrinsic
def _fetch_add(typingctx, counter, value):
    """counter[0] += value atomically; returns the value before (LLVM ``atomicrmw add``)."""
    sig = types.int64(counter, types.int64)

    def codegen(context, builder, signature, args):
        """The atomic add on the array's first element."""
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, args[1], "monotonic")

    return sig, codegen


@nb.njit(cache=True, nogil=True, parallel=True)
def _tiles_parallel(w, x, out, chunk, workers):
    """_tiles over all row tiles on ``workers`` threads that take ``chunk`` row tiles at a time from a shared
    counter until none are left. Why not a static split: a thread the OS deschedules then holds one chunk,
    not half of the work, and the others finish the rest (the machine may be running other work)."""
    n_tiles = w.shape[0] // ROWS
    counter = np.zeros(1, np.int64)
    for _ in nb.prange(workers):
        while True:
            lo = _fetch_add(counter, chunk)
            if lo >= n_tiles:
                break
            _tiles(w, x, out, lo, min(lo + chunk, n_tiles))


@nb.njit(cache=True, nogil=True)
def _offset_bytes(msgs, xu):
    """xu[t, j] = msgs[t, j] + 128 as a byte; returns how many messages do not fit 8 signed bits (their
    bytes are then meaningless and the caller raises)."""
    bad = 0
    for t in range(msgs.shape[0]):
        for j in range(msgs.shape[1]):
            v = msgs[t, j] + 128
            bad += (v < 0) | (v > 255)
            xu[t, j] = np.uint8(v & 255)
    return bad


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


class PreparedWeights:
    """An int8 block [m, n] laid out for the tile (rows padded to 8, columns to 64 bytes, zeros) with its
    correction 128 · Σ_j w_ij per row; ``product`` then gives W · x_t for every token, exactly."""

    def __init__(self, w: np.ndarray):
        w = np.asarray(w)
        if w.ndim != 2 or w.dtype != np.int8:
            raise ValueError(f"int8dot: weights must be a 2-D int8 array, not {w.dtype} of shape {w.shape}")
        self.m, self.n = w.shape
        shape = (_round_up(max(self.m, 1), ROWS), _round_up(max(self.n, 1), LANE_BYTES))
        if w.shape == shape and w.flags.c_contiguous:
            self.w = w                       # already whole tiles (1024, 2816, 32000 rows): no copy
        else:
            self.w = np.zeros(shape, np.int8)
            self.w[:self.m, :self.n] = w
        self.w_max = int(np.abs(w.astype(np.int16)).max()) if w.size else 0
        if not fp.offset_product_exact(self.n, self.w_max, 8):
            raise ValueError(f"int8dot: {self.n} terms of |w| <= {self.w_max} exceed the int32 bound "
                             f"{fp.offset_product_bound(self.n, self.w_max):,} > {fp.smax(32):,}")
        self.correction = 128 * w.astype(np.int64).sum(axis=1)

    @property
    def nbytes(self) -> int:
        return self.w.nbytes + self.correction.nbytes

    def product(self, msgs: np.ndarray, parallel: bool | None = None) -> np.ndarray:
        """W · m_t for every token as int32 [T, m]; msgs [T, n] integers of at most 8 signed bits (checked)."""
        msgs = np.asarray(msgs)
        T = msgs.shape[0]
        if msgs.ndim != 2 or msgs.shape[1] != self.n:
            raise ValueError(f"int8dot: messages of shape {msgs.shape} for a block of {self.n} columns")
        xu = np.empty((_round_up(max(T, 1), TOKENS), self.w.shape[1]), np.uint8)
        if _offset_bytes(msgs if msgs.dtype == np.int64 else msgs.astype(np.int64), xu[:T, :self.n]):
            raise ValueError(f"int8dot: messages outside 8 signed bits ([{msgs.min()}, {msgs.max()}])")
        xu[T:, :] = 0
        if self.n < self.w.shape[1]:
            xu[:, self.n:] = 0               # padded columns meet zero weights; keep them 0 anyway
        out = np.empty((xu.shape[0], self.w.shape[0]), np.int32)
        macs = self.w.size * xu.shape[0]
        gov = None
        if parallel is None and macs >= PARALLEL_MIN_MACS:
            gov = _GOVERNORS.get(self.w.shape) or _GOVERNORS.setdefault(self.w.shape, ThreadGovernor())
            parallel = gov.begin() > 1
        if parallel:
            _tiles_parallel(self.w, xu, out, CHUNK_TILES, nb.get_num_threads())
        else:
            _tiles(self.w, xu, out, 0, self.w.shape[0] // ROWS)
        if gov is not None:
            gov.end(work=macs / 1e9)
        res = out[:T, :self.m]
        res -= self.correction.astype(np.int32)
        return res


# One thread governor per block shape (simulator/threads.py): whether a product of that shape runs on one
# thread or all is chosen from measured times, per multiply-add, as the machine's load changes.
_GOVERNORS: dict[tuple[int, int], ThreadGovernor] = {}


def _host_has_vnni() -> bool:
    feats = llvm.get_host_cpu_features()
    return bool(feats.get("avx512vnni", False) and feats.get("avx512bw", False))


_AVAILABLE: bool | None = None


def available() -> bool:
    """Whether the kernel may run here: the CPU has AVX-512 VNNI and BW, ``MFLC_INT8_DOT`` is not "0", and
    a self-test (odd sizes, extreme values) gives the int64 product. Decided once per process."""
    global _AVAILABLE
    if os.environ.get("MFLC_INT8_DOT", "1") == "0":
        return False
    if _AVAILABLE is None:
        try:
            if _host_has_vnni() and not _compiled_here():
                print("mflc: compiling the byte dot-product kernel for this machine (once) ...", file=sys.stderr,
                      flush=True)
            _AVAILABLE = _host_has_vnni() and _self_test()
        except Exception as e:           # an LLVM that cannot emit the tile: the callers' own products run
            warnings.warn(f"mflc: byte dot-product kernel unavailable ({type(e).__name__}: {e}); using BLAS")
            _AVAILABLE = False
    return _AVAILABLE


def _compiled_here() -> bool:
    """Whether Numba's cache already holds the tile's driver (else the first use compiles it, ~2 s)."""
    try:
        return os.path.exists(_tiles._cache._cache_file._index_path)
    except AttributeError:                # another Numba's cache layout: say nothing
        return True


def _self_test() -> bool:
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (19, 131)).astype(np.int8)
    x = rng.integers(-128, 128, (7, 131))
    x[0], x[1] = -128, 127
    want = x @ w.astype(np.int64).T
    p = PreparedWeights(w)
    return bool(np.array_equal(p.product(x, parallel=False), want) and np.array_equal(p.product(x, parallel=True), want))


# ---- the instruction's peak on this machine (a register-only loop, for the benchmark's denominator) ---------
_PEAK_ACC = 24


@intrinsic
def _spin(typingctx, n, seed):
    """n rounds of _PEAK_ACC independent dot-product instructions on registers; returns their lane sum."""
    sig = types.int64(types.intp, types.int64)

    def codegen(context, builder, signature, args):
        """Operands built from ``seed`` so nothing folds; accumulators independent so nothing waits."""
        n, seed = args
        v8 = ir.VectorType(_I64, 8)
        a = builder.bitcast(builder.insert_element(ir.Constant(v8, [0] * 8), seed, ir.Constant(_I32, 0)), _BYTES)
        b = builder.bitcast(builder.insert_element(ir.Constant(v8, [0] * 8), builder.add(seed, ir.Constant(_I64, 3)),
                                                   ir.Constant(_I32, 1)), _BYTES)
        acc = [cgutils.alloca_once_value(builder, ir.Constant(_V16, [k] * 16)) for k in range(_PEAK_ACC)]
        with cgutils.for_range(builder, n):
            for a_k in acc:
                builder.store(dpbusd(builder, builder.load(a_k), a, b), a_k)
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_V16]),
                                                "llvm.vector.reduce.add.v16i32")
        total = ir.Constant(_I64, 0)
        for a_k in acc:
            total = builder.add(total, builder.sext(builder.call(reduce, [builder.load(a_k)]), _I64))
        return total

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _peak_one(n, seed):
    return _spin(n, seed)


@nb.njit(cache=True, nogil=True, parallel=True)
def _peak_all(n, seed, threads):
    s = np.zeros(threads, np.int64)
    for k in nb.prange(threads):
        s[k] = _spin(n, seed + k)
    return s.sum()


def peak_gmac_s(threads: int = 1, rounds: int = 3, n: int = 4_000_000) -> float:
    """The instruction's measured peak, G multiply-adds/s, on ``threads`` threads (best of ``rounds``)."""
    run = (lambda: _peak_one(n, 1)) if threads == 1 else (lambda: _peak_all(n, 1, threads))
    run()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n * _PEAK_ACC * 64 * threads / best / 1e9
