"""Numba kernels for synaptic accumulation: the part of a step that touches every weight.

Ternary synapse groups are stored as two index lists per destination row (columns of +1 and of −1), so a
row's sum is additions and subtractions of incoming messages, as on the chip; general int8 groups keep
CSR values. Each kernel accumulates a contiguous range of destination rows (one core's slice) and counts
the synaptic operations it performed (one per stored synapse whose source sent a non-zero message).
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic


@nb.njit(cache=True, nogil=True)
def ternary_rows(pos_ptr, pos_idx, neg_ptr, neg_idx, msg, out, lo, hi):
    """Accumulate a ternary group's rows lo..hi (adds for +1, subtracts for -1); returns the synaptic ops."""
    ops = 0
    for r in range(lo, hi):
        acc = 0
        for k in range(pos_ptr[r], pos_ptr[r + 1]):
            v = msg[pos_idx[k]]
            acc += v
            ops += v != 0
        for k in range(neg_ptr[r], neg_ptr[r + 1]):
            v = msg[neg_idx[k]]
            acc -= v
            ops += v != 0
        out[r] += acc
    return ops


@nb.njit(cache=True, nogil=True, parallel=True)
def ternary_rows_parallel(pos_ptr, pos_idx, neg_ptr, neg_idx, msg, out, lo, hi):
    """ternary_rows over rows in parallel, for large slices; same sums and op count."""
    n = hi - lo
    ops = np.zeros(n, np.int64)
    for j in nb.prange(n):
        r = lo + j
        acc = 0
        c = 0
        for k in range(pos_ptr[r], pos_ptr[r + 1]):
            v = msg[pos_idx[k]]
            acc += v
            c += v != 0
        for k in range(neg_ptr[r], neg_ptr[r + 1]):
            v = msg[neg_idx[k]]
            acc -= v
            c += v != 0
        out[r] += acc
        ops[j] = c
    return ops.sum()


@nb.njit(cache=True, nogil=True)
def csr_rows(indptr, indices, values, msg, out, lo, hi):
    """Accumulate an int8 CSR group's rows lo..hi; returns the synaptic ops."""
    ops = 0
    for r in range(lo, hi):
        acc = 0
        for k in range(indptr[r], indptr[r + 1]):
            v = msg[indices[k]]
            acc += values[k] * v
            ops += v != 0
        out[r] += acc
    return ops


@nb.njit(cache=True, nogil=True)
def shift_floor_inplace(a, weight_exp):
    """Lava Dense's shift after accumulation: a << exp, or floor(a / 2^-exp) for exp < 0."""
    if weight_exp >= 0:
        for i in range(a.size):
            a[i] = a[i] << weight_exp
    else:
        s = -weight_exp
        for i in range(a.size):
            a[i] = a[i] >> s
    return a


# Dense blocks. The explicit int32 casts keep every product and sum in 32-bit lanes so that LLVM
# vectorises the inner loop (without them Numba widens to int64 and runs ~3x slower). They cannot wrap:
# the validator proves every accumulation fits the 32-bit accumulator. Messages of <= 16 bits (known per
# synapse group from its source's width) use the int16 kernels, which vectorise best.
@nb.njit(cache=True, nogil=True, fastmath=True)
def dense_rows16(w, msg, out, lo, hi):
    """Accumulate dense int8 rows lo..hi against <= 16-bit messages in int32 lanes (vectorised)."""
    n = w.shape[1]
    for r in range(lo, hi):
        acc = np.int32(0)
        for c in range(n):
            acc = np.int32(acc + np.int32(np.int16(w[r, c]) * msg[c]))
        out[r] += acc


@nb.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def dense_rows16_parallel(w, msg, out, lo, hi):
    """dense_rows16 over rows in parallel."""
    n = w.shape[1]
    for r in nb.prange(lo, hi):
        acc = np.int32(0)
        for c in range(n):
            acc = np.int32(acc + np.int32(np.int16(w[r, c]) * msg[c]))
        out[r] += acc


@nb.njit(cache=True, nogil=True, fastmath=True)
def dense_rows32(w, msg, out, lo, hi):
    """Accumulate dense int8 rows lo..hi against wider messages in int32 lanes."""
    n = w.shape[1]
    for r in range(lo, hi):
        acc = np.int32(0)
        for c in range(n):
            acc = np.int32(acc + np.int32(np.int32(w[r, c]) * msg[c]))
        out[r] += acc


@nb.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def dense_rows32_parallel(w, msg, out, lo, hi):
    """dense_rows32 over rows in parallel."""
    n = w.shape[1]
    for r in nb.prange(lo, hi):
        acc = np.int32(0)
        for c in range(n):
            acc = np.int32(acc + np.int32(np.int32(w[r, c]) * msg[c]))
        out[r] += acc


# ---- ternary blocks at 2 bits: bit planes and popcount --------------------------------------------------
# A ternary row is two bit masks (ir/ternary.py: columns of +1, columns of -1); a message of B-bit two's
# complement integers is B bit planes. Then Σ_j w_j x_j = Σ_b c_b (popcount(plus & X_b) - popcount(minus & X_b))
# with c_b = 2^b, except c_{B-1} = -2^(B-1) (the sign bit's weight): exact for every x that fits B bits,
# with no decoding of the weights and 2 bits read per weight. The row-inner loop over words vectorises to
# AVX-512 VPOPCNTQ where the machine has it.

@intrinsic
def popcount64(typingctx, x):
    """The number of set bits of a uint64 (LLVM's ctpop)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        """Emit llvm.ctpop.i64."""
        return builder.ctpop(args[0])

    return sig, codegen


_LSB = np.uint64(0x0101010101010101)       # the low bit of each of 8 bytes
_GATHER = np.uint64(0x0102040810204080)    # times _LSB-masked bytes: byte i's bit lands at bit 56 + i


@nb.njit(cache=True, nogil=True)
def message_planes(msg, n, nbits, planes):
    """Write the nbits two's-complement bit planes of msg[:n] into planes[:nbits, :words] (nbits a multiple
    of 8, the kernels' unit); returns the index of the first value that nbits cannot hold, or -1.

    Eight values at a time: their bytes packed in a uint64, one plane's eight bits gathered by a multiply
    (the partial products never overlap, so nothing carries into the top byte)."""
    nw = (n + 63) // 64
    lo, hi = -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1
    for j in range(n):
        if msg[j] < lo or msg[j] > hi:
            return j
    for k in range(nw):
        for b in range(nbits):
            planes[b, k] = 0
        for g in range(8):                        # eight groups of eight values make a 64-bit word
            j0 = 64 * k + 8 * g
            if j0 >= n:
                break
            for byte in range(nbits // 8):
                v = np.uint64(0)
                for i in range(min(8, n - j0)):
                    v |= np.uint64((msg[j0 + i] >> (8 * byte)) & 0xFF) << np.uint64(8 * i)
                for b in range(8):
                    bits = (((v >> np.uint64(b)) & _LSB) * _GATHER) >> np.uint64(56)
                    planes[8 * byte + b, k] |= bits << np.uint64(8 * g)
    return -1


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _chunk8(plus, minus, planes, p0, r):
    """(Σ_b 2^b s_b over planes p0..p0+7, s of plane p0+7), s_b = popcount(plus & X_b) - popcount(minus & X_b).
    Eight explicit sums: each weight word is loaded once for eight planes (twice the speed of a plane loop)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.int32(0)
    for k in range(plus.shape[1]):
        p, m = plus[r, k], minus[r, k]
        s0 += np.int32(popcount64(p & planes[p0, k])) - np.int32(popcount64(m & planes[p0, k]))
        s1 += np.int32(popcount64(p & planes[p0 + 1, k])) - np.int32(popcount64(m & planes[p0 + 1, k]))
        s2 += np.int32(popcount64(p & planes[p0 + 2, k])) - np.int32(popcount64(m & planes[p0 + 2, k]))
        s3 += np.int32(popcount64(p & planes[p0 + 3, k])) - np.int32(popcount64(m & planes[p0 + 3, k]))
        s4 += np.int32(popcount64(p & planes[p0 + 4, k])) - np.int32(popcount64(m & planes[p0 + 4, k]))
        s5 += np.int32(popcount64(p & planes[p0 + 5, k])) - np.int32(popcount64(m & planes[p0 + 5, k]))
        s6 += np.int32(popcount64(p & planes[p0 + 6, k])) - np.int32(popcount64(m & planes[p0 + 6, k]))
        s7 += np.int32(popcount64(p & planes[p0 + 7, k])) - np.int32(popcount64(m & planes[p0 + 7, k]))
    u = (np.int64(s0) + (np.int64(s1) << 1) + (np.int64(s2) << 2) + (np.int64(s3) << 3) + (np.int64(s4) << 4)
         + (np.int64(s5) << 5) + (np.int64(s6) << 6) + (np.int64(s7) << 7))
    return u, np.int64(s7)


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _planes_row(plus, minus, planes, nchunks, r):
    """Row r's exact sum: the planes read as unsigned, minus 2^B times the sign plane's sum (B = 8 nchunks)."""
    total = np.int64(0)
    top = np.int64(0)
    for c in range(nchunks):
        u, top = _chunk8(plus, minus, planes, 8 * c, r)
        total += u << (8 * c)
    return total - (top << (8 * nchunks))


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _pc(x):
    return np.int32(popcount64(x))


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _pair8(plus, minus, planes, r):
    """Rows r and r + 1 against 8-bit planes: each plane word is loaded once for both rows (~12 % faster
    than two single rows)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.int32(0)
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = np.int32(0)
    for k in range(plus.shape[1]):
        p, m, q, n = plus[r, k], minus[r, k], plus[r + 1, k], minus[r + 1, k]
        x = planes[0, k]
        a0 += _pc(p & x) - _pc(m & x)
        b0 += _pc(q & x) - _pc(n & x)
        x = planes[1, k]
        a1 += _pc(p & x) - _pc(m & x)
        b1 += _pc(q & x) - _pc(n & x)
        x = planes[2, k]
        a2 += _pc(p & x) - _pc(m & x)
        b2 += _pc(q & x) - _pc(n & x)
        x = planes[3, k]
        a3 += _pc(p & x) - _pc(m & x)
        b3 += _pc(q & x) - _pc(n & x)
        x = planes[4, k]
        a4 += _pc(p & x) - _pc(m & x)
        b4 += _pc(q & x) - _pc(n & x)
        x = planes[5, k]
        a5 += _pc(p & x) - _pc(m & x)
        b5 += _pc(q & x) - _pc(n & x)
        x = planes[6, k]
        a6 += _pc(p & x) - _pc(m & x)
        b6 += _pc(q & x) - _pc(n & x)
        x = planes[7, k]
        a7 += _pc(p & x) - _pc(m & x)
        b7 += _pc(q & x) - _pc(n & x)
    wa = (np.int64(a0) + (np.int64(a1) << 1) + (np.int64(a2) << 2) + (np.int64(a3) << 3) + (np.int64(a4) << 4)
          + (np.int64(a5) << 5) + (np.int64(a6) << 6) - (np.int64(a7) << 7))
    wb = (np.int64(b0) + (np.int64(b1) << 1) + (np.int64(b2) << 2) + (np.int64(b3) << 3) + (np.int64(b4) << 4)
          + (np.int64(b5) << 5) + (np.int64(b6) << 6) - (np.int64(b7) << 7))
    return wa, wb


@nb.njit(cache=True, nogil=True, fastmath=True)
def planes_rows(plus, minus, planes, nchunks, out, lo, hi):
    """Accumulate a bit-plane ternary block's rows lo..hi against a message of 8·nchunks-bit planes."""
    r = lo
    if nchunks == 1:
        while r + 1 < hi:
            wa, wb = _pair8(plus, minus, planes, r)
            out[r] += wa
            out[r + 1] += wb
            r += 2
    for q in range(r, hi):
        out[q] += _planes_row(plus, minus, planes, nchunks, q)


@nb.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def planes_rows_parallel(plus, minus, planes, nchunks, out, lo, hi):
    """planes_rows over pairs of rows in parallel."""
    if nchunks == 1:
        npairs = (hi - lo) // 2
        for j in nb.prange(npairs):
            r = lo + 2 * j
            wa, wb = _pair8(plus, minus, planes, r)
            out[r] += wa
            out[r + 1] += wb
        for q in range(lo + 2 * npairs, hi):
            out[q] += _planes_row(plus, minus, planes, nchunks, q)
    else:
        for r in nb.prange(lo, hi):
            out[r] += _planes_row(plus, minus, planes, nchunks, r)


@nb.njit(cache=True, parallel=True)
def _wake(a):
    for i in nb.prange(a.size):
        a[i] = i


def launch_threads() -> None:
    """Start Numba's threading layer by running a tiny parallel kernel: a cached function that calls
    parallel kernels crashes when loaded from Numba's cache before the layer is up."""
    _wake(np.zeros(2, np.int64))
