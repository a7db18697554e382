"""Numba kernels for synaptic accumulation: the part of a step that touches every weight.

Ternary synapse groups are stored as two index lists per destination row (columns of +1 and of −1), so a
row's sum is additions and subtractions of incoming messages, as on the chip; general int8 groups keep
CSR values. Each kernel accumulates a contiguous range of destination rows (one core's slice) and counts
the synaptic operations it performed (one per stored synapse whose source sent a non-zero message).
"""
from __future__ import annotations

import numba as nb
import numpy as np


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
