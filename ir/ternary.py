"""Ternary weights at 2 bits: the representation of record for a synapse block whose weights are all in
{-1, 0, +1}. A weight is its own 2-bit two's complement code (0 -> 0b00, +1 -> 0b01, -1 -> 0b11; 0b10
would be -2 and is refused), four per byte, element k of the row-major block in bits 2(k mod 4) and up.
Unused bits of the last byte are zero. The ternary models carry 1.58 bits of information per weight;
two bits keep decoding a shift and a mask, which the engine's kernels can also read directly.

Encoding and decoding work in row chunks, so a 1.3B model's largest block never needs a dense int8 copy.
"""
from __future__ import annotations

import numpy as np

from .errors import MflcError

CHUNK_ELEMENTS = 1 << 22          # rows are converted this many weights at a time (memory bound, not speed)
_SHIFTS = np.array([0, 2, 4, 6], np.uint8)
# byte -> its four weights (one table gather decodes four), and whether it holds the refused code 0b10
_CODES = (np.arange(256, dtype=np.uint8)[:, None] >> _SHIFTS) & 3
_WEIGHTS = (_CODES.astype(np.int8) - ((_CODES & 2) << 1).astype(np.int8))
_HAS_BAD = np.any(_CODES == 2, axis=1)


def _decode(packed: np.ndarray, e0: int, e1: int, where: str) -> np.ndarray:
    """Weights e0..e1 (int8) of a packed block; a 0b10 code is named by its weight index."""
    b0, b1 = e0 // 4, (e1 + 3) // 4
    chunk = packed[b0:b1]
    if _HAS_BAD[chunk].any():
        k = 4 * b0 + int(np.flatnonzero((_CODES[chunk] == 2).reshape(-1))[0])
        raise MflcError(f"{where}: code 0b10 at weight {k} is not a ternary weight")
    return _WEIGHTS[chunk].reshape(-1)[e0 - 4 * b0:e1 - 4 * b0]


def packed_bytes(rows: int, cols: int) -> int:
    """Bytes that rows x cols ternary weights take at 2 bits each."""
    return (rows * cols + 3) // 4


def csr_bytes(rows: int, nnz: int) -> int:
    """Bytes of the CSR form on disk: int64 row pointer, int32 index and int8 value per synapse."""
    return 8 * (rows + 1) + 5 * nnz


def is_ternary(values: np.ndarray) -> bool:
    """Whether every stored value is +1 or -1 (the 2-bit encoding's precondition)."""
    return bool(np.all((values == 1) | (values == -1))) if values.size else True


def _rows_per_chunk(cols: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, cols))


def pack_csr(shape: tuple[int, int], indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The 2-bit packed row-major block of a CSR matrix whose values are all ±1."""
    rows, cols = shape
    flat = np.zeros(rows * cols + (-(rows * cols)) % 4, np.uint8)
    step = _rows_per_chunk(cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        a, b = int(indptr[r0]), int(indptr[r1])
        row_of = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(indptr[r0:r1 + 1]))
        pos = row_of * cols + indices[a:b].astype(np.int64)
        flat[pos] = (values[a:b].astype(np.int8) & 3).astype(np.uint8)
    q = flat.reshape(-1, 4)
    return (q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)).astype(np.uint8)


def unpack_to_csr(packed: np.ndarray, shape: tuple[int, int], where: str = "packed ternary block"):
    """(indptr int64, indices int32, values int8) of a 2-bit packed block; an MflcError naming ``where``
    and the element for a wrong length, a 0b10 code or a non-zero padding bit."""
    check_codes(packed, shape, where)
    rows, cols = shape
    indptr = np.zeros(rows + 1, np.int64)
    idx_parts, val_parts = [], []
    step = _rows_per_chunk(cols)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        flat = _decode(packed, r0 * cols, r1 * cols, where)
        pos = np.flatnonzero(flat)                     # row-major, so already in CSR order
        indptr[r0 + 1:r1 + 1] = indptr[r0] + np.cumsum(np.count_nonzero(flat.reshape(r1 - r0, cols), axis=1))
        idx_parts.append((pos % cols).astype(np.int32))
        val_parts.append(flat[pos])
    indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32)
    values = np.concatenate(val_parts) if val_parts else np.zeros(0, np.int8)
    return indptr, indices, values


def pack_dense(w: np.ndarray) -> np.ndarray:
    """The 2-bit packed form of a dense int8 matrix of -1/0/+1 (a quantized model's projection)."""
    flat = np.ascontiguousarray(w, dtype=np.int8).reshape(-1)
    out = np.zeros(packed_bytes(flat.size, 1), np.uint8)
    step = CHUNK_ELEMENTS - CHUNK_ELEMENTS % 4
    for e0 in range(0, flat.size, step):
        c = (flat[e0:e0 + step] & 3).astype(np.uint8)
        c = np.concatenate([c, np.zeros((-c.size) % 4, np.uint8)]).reshape(-1, 4)
        out[e0 // 4:e0 // 4 + c.shape[0]] = c[:, 0] | (c[:, 1] << 2) | (c[:, 2] << 4) | (c[:, 3] << 6)
    return out


def unpack_dense(packed: np.ndarray, shape: tuple[int, ...], where: str = "packed ternary block") -> np.ndarray:
    """The dense int8 matrix of a 2-bit packed block; the same errors as ``unpack_to_csr``."""
    check_codes(packed, shape, where)
    n = int(np.prod(shape)) if len(shape) else 1
    out = np.empty(n, np.int8)
    step = CHUNK_ELEMENTS - CHUNK_ELEMENTS % 4
    for e0 in range(0, n, step):
        e1 = min(n, e0 + step)
        out[e0:e1] = _decode(packed, e0, e1, where)
    return out.reshape(shape)


# ---- bit planes: the layout the generation kernels read -------------------------------------------------
# A ternary row is two bit masks, one of its +1 columns and one of its -1 columns, in 64-bit words (bit j of
# word k is column 64k + j; bits past the last column are zero). Still 2 bits per weight, but a row's sum
# against a message's two's-complement bit planes is AND and popcount, with no decode (simulator/kernels.py).

def plane_words(cols: int) -> int:
    """64-bit words per row of one bit plane."""
    return (cols + 63) // 64


def _planes_by_chunk(shape: tuple[int, int], chunk, planes: bool = True):
    """(plus, minus, n_plus, n_minus) from ``chunk(r0, r1)``, the int8 rows r0..r1 of the matrix: masks
    and per-row counts a chunk at a time; ``planes=False`` counts only (plus and minus are None)."""
    rows, cols = shape
    nw = plane_words(cols)
    plus = np.zeros((rows, nw), np.uint64) if planes else None
    minus = np.zeros((rows, nw), np.uint64) if planes else None
    n_plus, n_minus = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
    step = _rows_per_chunk(64 * nw)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        w = np.zeros((r1 - r0, 64 * nw), np.int8)
        w[:, :cols] = chunk(r0, r1)
        p, m = w == 1, w == -1
        n_plus[r0:r1], n_minus[r0:r1] = p.sum(axis=1), m.sum(axis=1)
        if planes:
            plus[r0:r1] = np.packbits(p, axis=1, bitorder="little").view("<u8")
            minus[r0:r1] = np.packbits(m, axis=1, bitorder="little").view("<u8")
    return plus, minus, n_plus, n_minus


def planes_from_csr(shape: tuple[int, int], indptr: np.ndarray, indices: np.ndarray, values: np.ndarray):
    """(plus, minus) uint64 [rows, plane_words(cols)] masks of a CSR matrix whose values are all ±1."""
    def chunk(r0, r1):
        """The dense int8 rows r0..r1."""
        a, b = int(indptr[r0]), int(indptr[r1])
        w = np.zeros((r1 - r0, shape[1]), np.int8)
        w[np.repeat(np.arange(r1 - r0), np.diff(indptr[r0:r1 + 1])), indices[a:b]] = values[a:b]
        return w

    return _planes_by_chunk(shape, chunk)[:2]


def check_codes(codes: np.ndarray, shape: tuple[int, ...], where: str, scan: bool = False) -> None:
    """Refuse a packed block whose length is wrong or whose padding bits are set; ``scan``: also one that
    holds the code 0b10 anywhere (a table lookup per byte, ~1 ms per MB; decoding checks it anyway)."""
    n = int(np.prod(shape)) if len(shape) else 1
    if codes.dtype != np.uint8 or codes.ndim != 1 or codes.size != packed_bytes(n, 1):
        raise MflcError(f"{where}: {codes.size} byte(s) of {codes.dtype}, expected {packed_bytes(n, 1)} "
                        f"uint8 for {n} weights ({'x'.join(map(str, shape))} at 2 bits per weight)")
    if n % 4 and int(codes[-1]) >> (2 * (n % 4)):
        raise MflcError(f"{where}: padding bits after the last weight are not zero")
    if scan:
        for b0 in range(0, codes.size, CHUNK_ELEMENTS):
            bad = _HAS_BAD[codes[b0:b0 + CHUNK_ELEMENTS]]
            if bad.any():
                b = b0 + int(np.flatnonzero(bad)[0])
                k = 4 * b + int(np.flatnonzero(_CODES[codes[b]] == 2)[0])
                raise MflcError(f"{where}: code 0b10 at weight {k} is not a ternary weight")


def planes_from_codes(codes: np.ndarray, shape: tuple[int, int], where: str = "packed ternary block",
                      planes: bool = True):
    """(plus, minus, n_plus, n_minus) of a 2-bit packed block: its bit planes (as ``planes_from_csr``) and
    the number of +1 and of -1 weights per row, in one pass over row chunks, without a CSR copy;
    ``planes=False``: the counts only. The same errors as ``unpack_to_csr``."""
    check_codes(codes, shape, where)
    cols = shape[1]
    return _planes_by_chunk(shape, lambda r0, r1: _decode(codes, r0 * cols, r1 * cols, where).reshape(r1 - r0, cols),
                            planes)
