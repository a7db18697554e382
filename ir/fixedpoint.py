"""The fixed-point op library: the one definition of every integer operation mflc runs.

The integer reference model, the IR's neuron programs, the reference executor and the Numba engine all
compute with these functions (the engine's kernels are tested equal to them). Every op takes and returns
int64 numpy arrays (or Python ints); products are formed exactly in int64 and the documented operand
widths guarantee that they never overflow it. Nothing here calls a float function at run time: the
``build_*`` helpers, which do use floats, run ahead of time in the compiler and produce integer tables.

Rounding: ``shr_round`` rounds half away from zero, which is integer arithmetic for Lava's statement of
Loihi 2 rounding ``loihi2round(v) = fix(v + (v > 0) - 0.5)``. ``shr_floor`` is the arithmetic shift that
Lava's Dense applies for a negative ``weight_exp`` (floor). Saturation clamps to the signed range of the
destination width; nothing wraps silently. See docs/fixed-point.md for widths and error bounds.
"""
from __future__ import annotations

import numpy as np

from .hardware import DEFAULT as _HW

# ---- widths of the hardware: the default profile's figures (written in mflc.ir.hardware only) ----------
MSG_BITS_MAX = _HW.max_msg_bits          # graded-spike payload
STATE_BITS_MAX = _HW.state_word_bits     # neuron state word
WEIGHT_BITS_MAX = _HW.weight_bits        # synaptic weight
ACC_BITS = _HW.accumulator_bits          # synaptic (dendritic) accumulator; the compiler proves no overflow

# ---- fixed formats of the op library -----------------------------------------------------------------
RSQRT_FRAC = 23       # rsqrt mantissa r ≈ 2^23/sqrt(u), u normalised to [2^14, 2^16): r in [2^15, 2^16 - 1]
RSQRT_U_BITS = 16     # width of the normalised argument u
RSQRT_TABLE_SHIFT = 10  # first guess indexed by u >> 10: 48 entries for u in [2^14, 2^16)
RSQRT_NEWTON_STEPS = 2
RSQRT_EXP_BIAS = 32   # packed exponent field: j + 32 in 6 bits
RSQRT_EXP_BITS = 6
SHIFT_MAX = 62        # right shifts are clamped here: every operand is < 2^61, so any larger shift rounds
                      # to 0 exactly as this does, and 1 << 63 would overflow int64
GATE_FRAC = 15        # forget gate f and (1 - f) are fractions with 15 fractional bits: 2^15 == 1.0


def smin(bits: int) -> int:
    """Smallest value of a signed ``bits``-bit word."""
    return -(1 << (bits - 1))


def smax(bits: int) -> int:
    """Largest value of a signed ``bits``-bit word."""
    return (1 << (bits - 1)) - 1


def _i64(x):
    return np.asarray(x, dtype=np.int64)


def saturate(x, bits: int):
    """Clamp to the signed ``bits``-bit range [-2^(bits-1), 2^(bits-1) - 1]. Exact, no rounding."""
    return np.clip(_i64(x), smin(bits), smax(bits))


def shr_round(x, n):
    """x · 2^-n rounded half away from zero (Loihi 2 rounding); n <= 0 is an exact left shift.

    ``n`` may be an array (one shift per element). Error against the real quotient: at most 1/2 LSB,
    and exactly 1/2 only on ties.
    """
    x = _i64(x)
    if np.ndim(n) == 0:
        n = min(int(n), SHIFT_MAX)
        if n <= 0:
            return x << (-n)
        mag = (np.abs(x) + (np.int64(1) << (n - 1))) >> n
        return np.where(x < 0, -mag, mag)
    n = np.minimum(_i64(n), SHIFT_MAX)
    pos = np.maximum(n, 0)
    half = np.where(n > 0, np.int64(1) << np.maximum(n - 1, 0), 0)
    mag = (np.abs(x) + half) >> pos
    right = np.where(x < 0, -mag, mag)
    return np.where(n <= 0, x << np.maximum(-n, 0), right)


def shr_floor(x, n: int):
    """x · 2^-n rounded toward -inf (arithmetic shift, Lava Dense's ``weight_exp < 0``); n <= 0 shifts left."""
    x = _i64(x)
    return x << (-n) if n <= 0 else x >> n


def mul_shr(a, b, n: int, out_bits: int):
    """saturate(shr_round(a · b, n), out_bits): the one multiply of the library.

    Used for every rescale (b a per-site multiplier M, n its shift), for gating products (Lava's
    ProdNeuron computes (a1 · a2) >> exp) and for the MLGRU update. Operands up to 24 bits each, so the
    exact product fits 48 bits.
    """
    return saturate(shr_round(_i64(a) * _i64(b), n), out_bits)


def rescale(x, mult: int, shift: int, out_bits: int):
    """Move a value between two quantization scales: saturate(round(x · mult / 2^shift)).

    With power-of-two scales ``mult`` is 1 (or a power of two) and this is a rounded shift. Domain:
    x ≤ 24 bits and 0 ≤ mult < 2^23 (the quantizer refuses larger multipliers), so x · mult is exact.
    """
    return mul_shr(x, mult, shift, out_bits)


def add_sat(a, b, out_bits: int):
    """Saturating addition (the residual add)."""
    return saturate(_i64(a) + _i64(b), out_bits)


def square(x):
    """x², exact. For an 8-bit x it is at most 2^14 and travels as a 24-bit graded spike."""
    x = _i64(x)
    return x * x


def square_shr(x, shift: int):
    """round(x² / 2^shift), half away from zero (``shr_round``): RMSNorm's square for wide inputs, whose
    exact squares would not fit a graded spike or whose sum would overflow the 32-bit dendrite
    accumulator (``mflc.ir.range_analysis.norm_square_shift`` picks the shift). ``shift`` is even so that the norm can undo it
    exactly as a shift of shift/2 after the square root."""
    return shr_round(square(x), shift)


def square_bits(in_bits: int, shift: int) -> int:
    """Signed width of square_shr over a signed ``in_bits`` input: (-2^(b-1))² rounded by 2^shift, plus sign."""
    return largest_square(in_bits, shift).bit_length() + 1


def largest_square(in_bits: int, shift: int) -> int:
    """The largest value of square_shr over a signed ``in_bits`` input: (-2^(b-1))² rounded by 2^shift."""
    top = 1 << (2 * in_bits - 2)
    return (top + ((1 << shift) >> 1)) >> shift


def lut(x, table: np.ndarray, in_bits: int):
    """Table lookup of a signed ``in_bits`` input: table[x + 2^(in_bits-1)].

    The input must already be in range (callers saturate first); an out-of-range input is a bug and raises.
    """
    x = _i64(x)
    lo, hi = smin(in_bits), smax(in_bits)
    if np.any(x < lo) or np.any(x > hi):
        raise ValueError(f"lut input outside the {in_bits}-bit range [{lo}, {hi}]")
    return _i64(table)[x - lo]


# ---- reciprocal square root (RMSNorm's normalisation factor) ----------------------------------------
def _rsqrt_table() -> np.ndarray:
    """First guesses 2^23/sqrt(midpoint of each u >> 10 bucket), built once at import as integers."""
    idx = np.arange(1 << (RSQRT_U_BITS - RSQRT_TABLE_SHIFT - 2), 1 << (RSQRT_U_BITS - RSQRT_TABLE_SHIFT))
    mid = (idx.astype(np.float64) + 0.5) * (1 << RSQRT_TABLE_SHIFT)
    return np.round((1 << RSQRT_FRAC) / np.sqrt(mid)).astype(np.int64)


RSQRT_TABLE = _rsqrt_table()  # 48 integers; the float above is build time, not run time
_RSQRT_TABLE_BASE = 1 << (RSQRT_U_BITS - RSQRT_TABLE_SHIFT - 2)


def _bit_length(t: np.ndarray) -> np.ndarray:
    """Number of significant bits of positive int64 values (count-leading-zeros on the chip), exactly."""
    t = t.copy()
    n = np.zeros_like(t)
    for s in (32, 16, 8, 4, 2, 1):
        big = t >= (np.int64(1) << s)
        n = n + np.where(big, s, 0)
        t = np.where(big, t >> s, t)
    return n + (t > 0)


def rsqrt(t):
    """Pseudo-float 1/sqrt(t) for integers 1 <= t < 2^46: returns (r, j) with 1/sqrt(t) ≈ r · 2^-(23 + j).

    Normalise t = u · 4^j with u in [2^14, 2^16) (u = t >> 2j, floor, or t << -2j), take a first guess
    from a 48-entry table indexed by u >> 10, and refine it with two Newton steps
    r ← r · (3 − u·r²·2^-46) / 2 in integers. Relative error ≤ 2^-13 (tests check the bound exhaustively
    over u and by hypothesis over t). This is the pattern of Lava-VA's InvSqrt (clz, table, Newton).
    """
    t = _i64(t)
    if np.any(t < 1) or np.any(t >= (np.int64(1) << 46)):
        raise ValueError("rsqrt argument outside [1, 2^46)")
    k = _bit_length(t)
    j = (k - RSQRT_U_BITS + 1) >> 1            # ceil((k - 16) / 2)
    u = np.where(j >= 0, t >> np.maximum(2 * j, 0), t << np.maximum(-2 * j, 0))
    r = RSQRT_TABLE[(u >> RSQRT_TABLE_SHIFT) - _RSQRT_TABLE_BASE]
    for _ in range(RSQRT_NEWTON_STEPS):
        y = (u * ((r * r) >> 16)) >> (2 * RSQRT_FRAC - 16 - RSQRT_FRAC)  # ≈ u·r²·2^-23, near 2^23
        r = (r * ((3 << RSQRT_FRAC) - y)) >> (RSQRT_FRAC + 1)
    return r, j


def pack_rsqrt(r, j):
    """One 23-bit graded-spike payload carrying (r, j): r · 64 + (j + 32)."""
    return (_i64(r) << RSQRT_EXP_BITS) | (_i64(j) + RSQRT_EXP_BIAS)


def unpack_rsqrt(p):
    """Split rms_factor's packed word into its mantissa and its (unbiased) exponent."""
    p = _i64(p)
    return p >> RSQRT_EXP_BITS, (p & ((1 << RSQRT_EXP_BITS) - 1)) - RSQRT_EXP_BIAS


def rms_factor(sum_sq, eps_int: int):
    """The reduction neuron's program: packed rsqrt(Σx² + E) for RMSNorm, E >= 1 the integer eps."""
    r, j = rsqrt(_i64(sum_sq) + eps_int)
    return pack_rsqrt(r, j)


def rms_apply(x, packed, gain, gain_shift: int, out_bits: int):
    """RMSNorm's per-element step: saturate(round(x · gain · r · 2^-(23 + j + gain_shift))).

    ``gain`` is the integer norm weight with √d and the output scale folded in (built ahead by the
    compiler); ``packed`` is the broadcast normalisation factor from ``rms_factor``. The product
    x·gain·r is exact (x ≤ 24, gain ≤ 16, r ≤ 17 bits: < 2^57).
    """
    r, j = unpack_rsqrt(packed)
    prod = _i64(x) * _i64(gain) * r
    return saturate(shr_round(prod, RSQRT_FRAC + j + gain_shift), out_bits)


# ---- MLGRU --------------------------------------------------------------------------------------------
def forget_gate(sig, beta):
    """f = β + (1 − β)·σ with σ and β fractions of 2^15: β + round((2^15 − β)·σ / 2^15). Range [0, 2^15]."""
    one = 1 << GATE_FRAC
    return _i64(beta) + shr_round((one - _i64(beta)) * _i64(sig), GATE_FRAC)


def mlgru_candidate(silu_i, f, state_bits: int):
    """c = SiLU(i) · (1 − f), at the state's scale: saturate(round(silu_i · (2^15 − f) / 2^15))."""
    return mul_shr(silu_i, (1 << GATE_FRAC) - _i64(f), GATE_FRAC, state_bits)


def mlgru_update(h, f, c, state_bits: int):
    """h' = f ⊙ h + c: saturate(round(f · h / 2^15) + c). f ≤ 2^15 so |f·h| < 2^39."""
    return saturate(shr_round(_i64(f) * _i64(h), GATE_FRAC) + _i64(c), state_bits)


# ---- build-time helpers (floats allowed: they run in the compiler, ahead of time) ----------------------
def build_lut(fn, in_bits: int, in_scale: float, out_scale: float, out_bits: int) -> np.ndarray:
    """Integer table of round(fn(q · in_scale) / out_scale), saturated, for every signed in_bits q."""
    q = np.arange(smin(in_bits), smax(in_bits) + 1, dtype=np.float64)
    vals = np.round(fn(q * in_scale) / out_scale)
    return np.clip(vals, smin(out_bits), smax(out_bits)).astype(np.int64)


def quantize_multiplier(real: float, mult_bits: int = 16) -> tuple[int, int]:
    """(M, s) with M · 2^-s ≈ real and 2^(mult_bits-2) <= M < 2^(mult_bits-1) (or M = 0 for real = 0)."""
    if real == 0.0:
        return 0, 0
    if real < 0:
        raise ValueError("multipliers are non-negative; signs live in the weights")
    s = mult_bits - 2 - int(np.floor(np.log2(real)))
    m = int(round(real * 2.0 ** s))
    if m >= 1 << (mult_bits - 1):
        m, s = int(round(real * 2.0 ** (s - 1))), s - 1
    return m, s


def pow2_rescale(frac_from: int, frac_to: int) -> tuple[int, int]:
    """(M, s) moving a value from 2^-frac_from to 2^-frac_to units: a pure shift."""
    d = frac_from - frac_to
    return (1, d) if d >= 0 else (1 << (-d), 0)


# ---- exact integer matrix products through floating-point BLAS -------------------------------------------
FLOAT32_EXACT_BITS = 24   # every integer of magnitude <= 2^24 is a float32, and so is every sum that stays there
FLOAT64_EXACT_BITS = 53   # the same for float64's 53-bit significand


def product_bound(n_terms: int, w_max: int, x_bits: int) -> int:
    """The largest magnitude any partial sum of Σ_j w_j x_j can reach: n_terms · max|w| · max|x|, with
    max|x| = 2^(x_bits-1) for a signed ``x_bits``-bit operand. It bounds every partial sum whatever the
    order of summation, so it is the quantity the mantissa must hold for a float product to be exact."""
    if n_terms < 0 or w_max < 0 or x_bits < 1:
        raise ValueError(f"product_bound: n_terms={n_terms}, w_max={w_max}, x_bits={x_bits} out of domain")
    return int(n_terms) * int(w_max) * (1 << (int(x_bits) - 1))


def exact_product_dtype(n_terms: int, w_max: int, x_bits: int, int32_kernel: bool = False) -> np.dtype:
    """The cheapest dtype whose matrix product of integer operands is exact: float32 while every partial
    sum is provably <= 2^24 (``product_bound``), float64 while <= 2^53, else int64 (numpy's integer
    product, exact because the IR's accumulators are proven to fit 32 bits and int64 holds any sum below
    2^63). The bound comes from the declared widths (``x_bits`` of the messages, ``w_max`` of the weight
    format), never from the values of one run, so the choice holds for every input. Every product of two
    such operands is itself an integer of at most the bound, hence exactly representable, and adding
    integers whose running sums stay within 2^p in a p-bit significand never rounds: BLAS's blocking and
    summation order cannot change the result. The integer model and the sequence executor both choose
    through this one function (docs/fixed-point.md, "Exact matrix products").

    ``int32_kernel``: the caller has an integer kernel (int16 messages times int8 weights, summed in int32
    lanes, as the engine's dense kernels): int32 is chosen first whenever the operands fit those types
    (x_bits <= 16, w_max <= 127) and the bound fits int32, which makes every int32 partial sum exact."""
    b = product_bound(n_terms, w_max, x_bits)
    if int32_kernel and x_bits <= 16 and w_max <= smax(8) and b <= smax(32):
        return np.dtype(np.int32)
    if b <= 1 << FLOAT32_EXACT_BITS:
        return np.dtype(np.float32)
    if b <= 1 << FLOAT64_EXACT_BITS:
        return np.dtype(np.float64)
    return np.dtype(np.int64)


U8_OFFSET = 128     # added to 8-bit signed messages so that they are the unsigned operand of a u8 x s8 product


def offset_product_bound(n_terms: int, w_max: int) -> int:
    """The largest magnitude any partial sum of Σ_j w_j (x_j + 128) reaches for 8-bit x: n · w_max · 255."""
    if n_terms < 0 or w_max < 0:
        raise ValueError(f"offset_product_bound: n_terms={n_terms}, w_max={w_max} out of domain")
    return int(n_terms) * int(w_max) * (2 * U8_OFFSET - 1)


def offset_product_exact(n_terms: int, w_max: int, x_bits: int) -> bool:
    """Whether the offset product Σ_j w_j (x_j + 128) − 128 Σ_j w_j is exact in int32 lanes that wrap: the
    messages fit 8 signed bits (so x + 128 is a byte), the weights int8, and every partial sum, the
    correction and the result stay within int32 (the offset bound covers all three)."""
    return x_bits <= 8 and w_max <= smax(8) and offset_product_bound(n_terms, w_max) <= smax(32)


def offset_matmul(x, w) -> np.ndarray:
    """x @ w.T through the offset form, in int64 (the definition the u8 x s8 kernel is tested against)."""
    x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
    return (x + U8_OFFSET) @ w.T - U8_OFFSET * w.sum(axis=1)


def exact_matmul(x, w, x_bits: int, w_max: int, dtype=None) -> np.ndarray:
    """x @ w.T exactly, as int64: x [T, n] integers of at most ``x_bits`` signed bits, w [m, n] integers
    of magnitude <= ``w_max``. Computed in ``exact_product_dtype``'s dtype (or ``dtype`` to force one, e.g.
    int64 to test the fallback). Refuses a forced float dtype the bound does not allow."""
    x, w = np.asarray(x), np.asarray(w)
    safe = exact_product_dtype(x.shape[-1], w_max, x_bits)
    dt = safe if dtype is None else np.dtype(dtype)
    if dt.kind == "f" and (dt.itemsize < safe.itemsize or safe.kind == "i"):
        raise ValueError(f"exact_matmul: {dt} is not exact for {x.shape[-1]} terms of |w| <= {w_max} and "
                         f"{x_bits}-bit inputs (bound {product_bound(x.shape[-1], w_max, x_bits)}); use {safe}")
    if dt == np.int32 and not (x_bits <= 16 and w_max <= smax(8) and product_bound(x.shape[-1], w_max, x_bits) <= smax(32)):
        raise ValueError(f"exact_matmul: int32 is not exact for {x.shape[-1]} terms of |w| <= {w_max} and "
                         f"{x_bits}-bit inputs; use {safe}")
    if dt.kind == "i":
        return (x.astype(dt) @ w.astype(dt).T).astype(np.int64)
    return (x.astype(dt) @ w.astype(dt).T).astype(np.int64)
