"""Ternary blocks by table lookup (T-MAC / bitnet.cpp TL style), exact: no table is quantised.

Layout (2 bits per weight). Columns go in pairs; a pair's two ternary weights are one 4-bit code
(bit 0: +1 at the even column, bit 1: -1 there, bits 2-3 the same for the odd column). Rows go in tiles
of 64, columns in super-groups of 16 (8 pairs): ``W[t, s]`` is 256 bytes, byte 64k + 4i + j holding row
64t + 16k + i's code of pair 8s + j in its low nibble and of pair 8s + 4 + j in its high nibble. Padding
rows and columns have code 0. A tile's four 16-row vectors are adjacent, so the kernel reads the weights
as one sequential stream (four interleaved streams ran at half the memory bandwidth).

Tables (once per token per message, shared by every block that reads it). For each pair q and code c,
the partial sum x_a w_a + x_b w_b lies in [-510, 510] for 8-bit x: its low byte and its high byte
(signed) go to two 64-byte tables per four pairs, pair j of the four in bytes 16j..16j+15. So
``tables[chunk, s]`` is four 64-byte vectors: low and high bytes for pairs 8s..8s+3, then for 8s+4..8s+7.
Wider messages are cut into 8-bit chunks (unsigned, the top one signed), a table set per chunk, and the
chunk sums are recombined as Σ 256^c S_c: exact for messages of up to ``MAX_BITS`` bits.

The vector kernel: per 64 weight bytes, the index vectors are ``byte & 15 | 16 j`` and ``byte >> 4 | 16 j``
(j = byte position mod 4 selects the pair's 16-entry sub-table), four ``vpermb`` lookups fetch the low and
high bytes of 128 partial sums, and ``vpdpbusd`` against a vector of ones adds each row's four bytes into
its int32 lane (low bytes as unsigned, high bytes as signed): no horizontal sums, no widening shuffles.
Where the CPU lacks AVX-512 VBMI and VNNI, a scalar kernel reads the same layout and tables.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from mflc.ir.errors import MflcError

from .int8dot import dpbusd

TILE_ROWS = 64           # four 512-bit accumulators of 16 int32 lanes, one lane per row
SPAN_TILES = 8           # tiles per parallel work item (512 rows)
SUPER_COLS = 16          # columns per 64-byte vector of codes: 8 pairs, 4 per nibble
BLOCK_BYTES = 4 * 64       # one tile's codes of one super-group (64 rows x 16 columns at 2 bits), and one
                         # chunk's tables of one super-group (4 x 64 bytes): the kernel's step in both
MAX_BITS = 32            # widest message: four 8-bit chunks
MAX_COLS = 1 << 23       # a chunk's row sum, |S| <= 255 cols, stays inside int32
# Software prefetch of the codes, PREFETCH bytes ahead into L2 (locality 2, prefetcht1): without it the
# kernel read memory at ~12 GB/s, half of what the int8 kernel streams on this machine; 16 KB ahead into
# L2 measured best (4 KB into L1: ~15 GB/s; 16 KB into L2: 19-22 GB/s, on 2816x1024 and 1024x2816 blocks).
PREFETCH, PREFETCH_LOCALITY = 16384, 2
_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_V64, _V16 = ir.VectorType(_I8, 64), ir.VectorType(_I32, 16)
VECTOR = all(llvm.get_host_cpu_features().get(f, False) for f in ("avx512bw", "avx512vbmi", "avx512vnni"))


def chunks_for(nbits: int) -> int:
    """8-bit chunks a message of ``nbits``-bit two's-complement integers takes; refuses other widths."""
    if not isinstance(nbits, (int, np.integer)) or not 1 <= nbits <= MAX_BITS:
        raise MflcError(f"lookup-table kernel: messages of {nbits} bits are not supported "
                        f"(1..{MAX_BITS} bits, summed exactly in 8-bit chunks)")
    return -(-int(nbits) // 8)


def tile_count(rows: int) -> int:
    """64-row tiles of a block of ``rows`` rows (the last one padded with zero codes)."""
    return -(-rows // TILE_ROWS)


def super_count(cols: int) -> int:
    """16-column super-groups of a message of ``cols`` values (the last one padded)."""
    return -(-cols // SUPER_COLS)


def table_array(cols: int, nbits: int) -> np.ndarray:
    """An empty table set for messages of ``cols`` values of ``nbits`` bits (``lut_tables`` fills it)."""
    return np.zeros((chunks_for(nbits), super_count(cols), 4, 64), np.uint8)


# ---- converters ------------------------------------------------------------------------------------------

def lut_from_masks(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The LUT layout of a block given as boolean [rows, cols] masks of its +1 and its -1 weights."""
    rows, cols = p.shape
    if cols > MAX_COLS:
        raise MflcError(f"lookup-table kernel: {cols} columns exceed {MAX_COLS} (int32 chunk sums)")
    both = p & m
    if both.any():
        r, c = np.argwhere(both)[0]
        raise MflcError(f"lookup-table block: weight ({r}, {c}) is marked both +1 and -1")
    R, C = TILE_ROWS * tile_count(rows), SUPER_COLS * super_count(cols)
    code = np.zeros((R, C), np.uint8)
    code[:rows, :cols] = p.astype(np.uint8) | (m.astype(np.uint8) << 1)
    pairs = code[:, 0::2] | (code[:, 1::2] << 2)                   # [R, C / 2]
    quads = pairs.reshape(R, C // SUPER_COLS, 2, 4)
    byte = quads[:, :, 0, :] | (quads[:, :, 1, :] << 4)             # [R, nsuper, 4]
    byte = byte.reshape(R // TILE_ROWS, TILE_ROWS, C // SUPER_COLS, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(byte).reshape(R // TILE_ROWS, C // SUPER_COLS, 4 * TILE_ROWS)


def lut_from_planes(plus: np.ndarray, minus: np.ndarray, cols: int) -> np.ndarray:
    """The LUT layout of a block in the bit-plane kernels' form (uint64 masks, ir/ternary.py)."""
    def unpack(words):
        """Boolean [rows, cols] of uint64 masks (bit j of word k is column 64k + j)."""
        return np.unpackbits(np.ascontiguousarray(words).view("<u8").view(np.uint8), axis=1,
                             bitorder="little")[:, :cols].astype(bool)

    return lut_from_masks(unpack(plus), unpack(minus))


def lut_from_dense(w: np.ndarray) -> np.ndarray:
    """The LUT layout of a dense int8 ternary block; any other weight is refused by position."""
    bad = (w != 0) & (w != 1) & (w != -1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise MflcError(f"lookup-table block: weight ({r}, {c}) = {w[r, c]} is not ternary")
    return lut_from_masks(w == 1, w == -1)


def lut_from_csr(shape: tuple[int, int], indptr, indices, values) -> np.ndarray:
    """The LUT layout of a CSR block whose values are all ±1."""
    w = np.zeros(shape, np.int8)
    w[np.repeat(np.arange(shape[0]), np.diff(indptr)), indices] = values
    return lut_from_dense(w)


# ---- per-token tables ------------------------------------------------------------------------------------

# the weight of each 4-bit code on the pair's even (A) and odd (B) column; codes with both bits of a column
# set are never stored (their entries are unused)
_CODE_A = [(c & 1) - ((c >> 1) & 1) for c in range(16)]
_CODE_B = [((c >> 2) & 1) - ((c >> 3) & 1) for c in range(16)]


@intrinsic
def _pair_entries(typingctx, a, b, addr):
    """Store the 16 partial sums a w_a + b w_b of a pair (one per code) as low bytes at addr and high bytes
    at addr + 64: one 16-lane int16 multiply-add instead of 16 scalar entries."""
    sig = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        i16, v16h = ir.IntType(16), ir.VectorType(ir.IntType(16), 16)
        v16b = ir.VectorType(_I8, 16)

        def splat(x):
            v = builder.insert_element(ir.Constant(v16h, None), builder.trunc(x, i16), ir.Constant(_I32, 0))
            return builder.shuffle_vector(v, ir.Constant(v16h, None), ir.Constant(ir.VectorType(_I32, 16), [0] * 16))

        v = builder.add(builder.mul(splat(args[0]), ir.Constant(v16h, _CODE_A)),
                        builder.mul(splat(args[1]), ir.Constant(v16h, _CODE_B)))
        lo = builder.trunc(v, v16b)
        hi = builder.trunc(builder.ashr(v, ir.Constant(v16h, [8] * 16)), v16b)
        builder.store(lo, builder.inttoptr(args[2], v16b.as_pointer()), align=1)
        builder.store(hi, builder.inttoptr(builder.add(args[2], ir.Constant(_I64, 64)), v16b.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, inline="always")
def _chunk(x, c, top):
    """Chunk c of x: bits 8c..8c+7, unsigned, except the top chunk, which keeps the sign."""
    v = x >> (8 * c)
    return v if top else v & 0xFF


@nb.njit(cache=True, nogil=True)
def lut_tables(msg, n, nbits, tables):
    """Fill ``tables`` for msg[:n] as nbits-bit integers (nbits a multiple of 8, tables from
    ``table_array``); returns the index of the first value nbits cannot hold, or -1."""
    lo, hi = -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1
    for j in range(n):
        if msg[j] < lo or msg[j] > hi:
            return j
    nch, nsuper = nbits // 8, tables.shape[1]
    addr = tables.ctypes.data
    for c in range(nch):
        top = c == nch - 1
        for q in range(8 * nsuper):                   # pair q: columns 2q, 2q + 1
            a = _chunk(msg[2 * q], c, top) if 2 * q < n else 0
            b = _chunk(msg[2 * q + 1], c, top) if 2 * q + 1 < n else 0
            # pair q sits in super-group q // 8, table pair (q // 4) % 2, sub-table q % 4
            base = ((c * nsuper + (q >> 3)) * 4 + 2 * ((q >> 2) & 1)) * 64 + 16 * (q & 3)
            _pair_entries(a, b, addr + base)
    return -1


# ---- the vector kernel -----------------------------------------------------------------------------------



def _emit_tile(builder, wp, tp, nsuper, outp):
    """IR: the int32 row sums of one 64-row tile (codes at wp) over nsuper super-groups of one table chunk
    (at tp), stored as 64 int32 at outp. Four accumulators per 16 rows (low/high bytes of the two nibbles)
    keep the vpdpbusd dependency chains short; the four tables of a super-group stay in registers."""
    mod = builder.module
    permb = cgutils.get_or_insert_function(mod, ir.FunctionType(_V64, [_V64, _V64]), "llvm.x86.avx512.permvar.qi.512")
    pref = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]), "llvm.prefetch")
    sub = ir.Constant(_V64, [16 * (p % 4) for p in range(64)])
    low, four = ir.Constant(_V64, [15] * 64), ir.Constant(_V64, [4] * 64)
    ones = ir.Constant(_V16, [0x01010101] * 16)
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(_V16, None)) for _ in range(4)] for _ in range(4)]

    def load(addr):
        return builder.load(builder.inttoptr(addr, _V64.as_pointer()), align=1)

    with cgutils.for_range(builder, nsuper) as loop:
        step = builder.mul(loop.index, ir.Constant(_I64, BLOCK_BYTES))      # codes and tables advance alike
        tb, wb = builder.add(tp, step), builder.add(wp, step)
        tab = [load(builder.add(tb, ir.Constant(_I64, 64 * k))) for k in range(4)]
        for k in range(4):
            builder.call(pref, [builder.inttoptr(builder.add(wb, ir.Constant(_I64, PREFETCH + 64 * k)), _I8.as_pointer()),
                                ir.Constant(_I32, 0), ir.Constant(_I32, PREFETCH_LOCALITY), ir.Constant(_I32, 1)])
        for k in range(4):
            w = load(builder.add(wb, ir.Constant(_I64, 64 * k)))
            idx = (builder.or_(builder.and_(w, low), sub), builder.or_(builder.lshr(w, four), sub))
            for h in range(2):
                lo = builder.bitcast(builder.call(permb, [tab[2 * h], idx[h]]), _V16)
                hi = builder.bitcast(builder.call(permb, [tab[2 * h + 1], idx[h]]), _V16)
                a_lo, a_hi = acc[k][2 * h], acc[k][2 * h + 1]
                builder.store(dpbusd(builder, builder.load(a_lo), lo, ones), a_lo)       # unsigned low bytes
                builder.store(dpbusd(builder, builder.load(a_hi), ones, hi), a_hi)       # signed high bytes
    eight = ir.Constant(_V16, [8] * 16)
    for k in range(4):
        lo = builder.add(builder.load(acc[k][0]), builder.load(acc[k][2]))
        hi = builder.add(builder.load(acc[k][1]), builder.load(acc[k][3]))
        ptr = builder.inttoptr(builder.add(outp, ir.Constant(_I64, 64 * k)), _V16.as_pointer())
        builder.store(builder.add(lo, builder.shl(hi, eight)), ptr, align=4)


@intrinsic
def _tile_sums(typingctx, wp, tp, nsuper, outp):
    """``_tile_sums(wp, tp, nsuper, outp)``: one tile's chunk sums (addresses and counts as int64)."""
    sig = types.void(types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        _emit_tile(builder, *args)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _tiles_vector(W, tables, nch, out, lo, hi, t0, t1, sums):
    """out[r] += row r's sum for the rows lo..hi of tiles t0..t1 (sums: int32 [nch, 64] scratch)."""
    nsuper = W.shape[1]
    wbase, tbase, obase = W.ctypes.data, tables.ctypes.data, sums.ctypes.data
    for t in range(t0, t1):
        for c in range(nch):
            _tile_sums(wbase + t * nsuper * BLOCK_BYTES, tbase + c * nsuper * BLOCK_BYTES, nsuper,
                       obase + c * 4 * TILE_ROWS)
        for i in range(max(lo - TILE_ROWS * t, 0), min(hi - TILE_ROWS * t, TILE_ROWS)):
            total = np.int64(0)
            for c in range(nch):
                total += np.int64(sums[c, i]) << (8 * c)
            out[TILE_ROWS * t + i] += total


@nb.njit(cache=True, nogil=True)
def _rows_vector(W, tables, nch, out, lo, hi):
    sums = np.empty((nch, TILE_ROWS), np.int32)
    _tiles_vector(W, tables, nch, out, lo, hi, lo // TILE_ROWS, (hi + TILE_ROWS - 1) // TILE_ROWS, sums)


@nb.njit(cache=True, nogil=True, parallel=True)
def _rows_vector_parallel(W, tables, nch, out, lo, hi):
    """_rows_vector over spans of SPAN_TILES tiles in parallel (one scratch buffer per span, not per tile)."""
    t0, t1 = lo // TILE_ROWS, (hi + TILE_ROWS - 1) // TILE_ROWS
    for q in nb.prange((t1 - t0 + SPAN_TILES - 1) // SPAN_TILES):
        sums = np.empty((nch, TILE_ROWS), np.int32)
        a = t0 + SPAN_TILES * q
        _tiles_vector(W, tables, nch, out, lo, hi, a, min(t1, a + SPAN_TILES), sums)


# ---- the scalar kernel (same layout and tables; any CPU) -------------------------------------------------

@nb.njit(cache=True, nogil=True, inline="always")
def _entry(tables, c, s, v, k):
    """Partial sum k of table pair v (0: the low nibbles' pairs, 1: the high ones') of chunk c, super-group s."""
    return np.int32(tables[c, s, 2 * v, k]) + (np.int32(np.int8(tables[c, s, 2 * v + 1, k])) << 8)


@nb.njit(cache=True, nogil=True)
def lut_rows_scalar(W, tables, nch, out, lo, hi):
    """The portable kernel: one table read per pair, scalar."""
    for r in range(lo, hi):
        t, b0 = r // TILE_ROWS, 4 * (r % TILE_ROWS)
        total = np.int64(0)
        for c in range(nch):
            acc = np.int32(0)
            for s in range(W.shape[1]):
                for j in range(4):
                    b = W[t, s, b0 + j]
                    acc += _entry(tables, c, s, 0, 16 * j + (b & 15))
                    acc += _entry(tables, c, s, 1, 16 * j + (b >> 4))
            total += np.int64(acc) << (8 * c)
        out[r] += total


lut_rows = _rows_vector if VECTOR else lut_rows_scalar
lut_rows_parallel = _rows_vector_parallel if VECTOR else lut_rows_scalar
