"""A relational bound the interval analysis cannot see: what a projection of a normalised vector can reach.

An RMSNorm's output has a bounded Euclidean length whatever its input, although each element alone can be
as large as the site allows. With t = Σ round(x²/2^k) + E and rsqrt(t) = (r, j), the real factor
φ = r·2^-(23+j) satisfies t·φ² ≤ P² for every t, where P² = max over the normalised mantissas u in
[2^14, 2^16) of (u + 1)·r(u)²·2^-46 (rsqrt floors t to u·4^j, so t < (u + 1)·4^j; computed
exhaustively over the 49,152 mantissas). Hence ‖x·φ‖² ≤ P² (k = 0; for k > 0 each rounded square may be
1/2 short, giving P²·2^k·(1 + n/(2E))). Each output is y = round(x·φ·g), g = G·2^-gexp, saturated
(which only shrinks it), so |y| ≤ |x·φ|·|g| + 1/2, and a ternary row w of the next projection gives,
by Cauchy-Schwarz over its support S, |w·y| ≤ P·sqrt(Σ_S g²) + |S|/2; also |w·y| ≤ |S|·max|y| (the box).
That bounds every accumulator that reads a norm's output, ~sqrt(|S|) times tighter than intervals.
"""
from __future__ import annotations

from functools import lru_cache
from math import isqrt

import numpy as np

from mflc.ir import fixedpoint as fp


@lru_cache(maxsize=1)
def factor_bound_sq() -> tuple[int, int]:
    """P² as an exact fraction (numerator, 2^46): the largest t·φ² over every rsqrt argument t."""
    u = np.arange(1 << (fp.RSQRT_U_BITS - 2), 1 << fp.RSQRT_U_BITS, dtype=np.int64)
    r, j = fp.rsqrt(u)
    assert not np.any(j), "a normalised mantissa must need no shift"
    num = max(int(x) for x in (u + 1) * r * r)          # < 2^17 · 2^34: exact in int64
    return num, 1 << 46


def projection_bound(qm, norm, w: np.ndarray) -> np.ndarray:
    """Per row of the ternary matrix w [out, in] reading ``norm``'s output (a structure.NormUse): the
    largest |accumulator| any input can give (an integer bound, sound)."""
    n = w.shape[1]
    k = qm.scalars.get(f"sq.{norm.reduction}", 0)
    num, den = factor_bound_sq()
    if k > 0:                                           # P²·2^k·(1 + n/(2E)), exact rational
        e = max(int(qm.s(f"E.{norm.reduction}")), 1)
        num, den = num * (1 << k) * (2 * e + n), den * 2 * e
    g = np.abs(qm.t(f"G.{norm.key}").astype(object)).reshape(-1)
    gexp = int(qm.s(f"gexp.{norm.key}"))
    ybox = fp.smax(qm.bits(norm.key)) + 1               # |y| ≤ 2^(b-1)
    nz = np.asarray(w) != 0
    out = np.zeros(nz.shape[0], dtype=object)
    for i, row in enumerate(nz):
        s = int(row.sum())
        g2 = int(sum(int(v) * int(v) for v in g[row]))  # Σ G² over the support, at scale 2^(2·gexp)
        # P·sqrt(Σ g²) = sqrt(num·Σ G² / (den·4^gexp)), rounded up exactly
        top, bot = (num * g2, den * 4 ** gexp) if gexp >= 0 else (num * g2 * 4 ** -gexp, den)
        cs = isqrt(-(-top // bot)) + 1 + (s + 1) // 2
        out[i] = min(cs, s * ybox)
    return out.astype(np.int64)


def _valuation(v: np.ndarray) -> np.ndarray:
    """2-adic valuation of nonzero int64 values (their count of trailing zero bits)."""
    v = np.abs(v.astype(np.int64))
    return np.log2(v & -v).astype(np.int64)


def _sums(e: int, tmax: int) -> np.ndarray:
    """The sums of squares t in (e, tmax] that stand for all the others: rsqrt's r and j depend only on the
    normalised mantissa u and the exponent j (t in [u·4^j, (u + 1)·4^j)), so every t below 2^16 and, above,
    the largest t of each (u, j) (the one allowing the largest element x, x² <= t - E)."""
    tmax = min(tmax, (1 << 46) - 1)                     # rsqrt's domain (the validator proves the sum below)
    small = np.arange(e + 1, min(tmax, (1 << fp.RSQRT_U_BITS) - 1) + 1, dtype=np.int64)
    out, j = [small], 1
    u = np.arange(1 << (fp.RSQRT_U_BITS - 2), 1 << fp.RSQRT_U_BITS, dtype=np.int64)
    while (u[0] << 2 * j) <= tmax:
        lo = u << 2 * j
        out.append(np.minimum(((u + 1) << 2 * j) - 1, tmax)[lo <= tmax])
        j += 1
    t = np.concatenate(out)
    return t[t > e]


def rms_tie(qm, norm, x_range: tuple[int, int], gain_shift: int) -> tuple[int, int, int] | None:
    """(x, t, gain) with x in ``x_range``, x² ≤ t - E (x one element of a vector whose squares sum to
    t - E), gain one of the norm's weights, such that rms_apply rounds x·gain·r by exactly one half, r
    the factor of t; None when no such triple exists (a proof: the search is exhaustive over t). A tie
    means the product's 2-adic valuation is n - 1 with n = 23 + j + gain_shift, so x = 2^a and a gain
    of valuation n - 1 - v(r) - a suffice. Only for unshifted squares (k = 0); None otherwise."""
    if qm.scalars.get(f"sq.{norm.reduction}", 0) > 0:
        return None
    e = int(qm.s(f"E.{norm.reduction}"))
    gains = qm.t(f"G.{norm.key}").astype(np.int64).reshape(-1)
    gains = np.unique(gains[gains != 0])
    by_val = {int(v): int(g) for v, g in zip(_valuation(gains), gains)}
    xmax = max(int(x_range[1]), -int(x_range[0]))       # 2^a or -2^a lies in the range iff 2^a <= this
    if xmax == 0 or not by_val:
        return None
    t = _sums(e, qm.t(f"G.{norm.key}").size * xmax * xmax + e)
    r, j = fp.rsqrt(t)
    need = fp.RSQRT_FRAC + j + gain_shift - 1 - _valuation(r)
    amax = np.floor(np.log2(np.sqrt((t - e).astype(np.float64)) + 1e-9)).astype(np.int64)
    amax = np.minimum(amax, int(np.floor(np.log2(xmax))))
    for vg, g in sorted(by_val.items()):
        a = need - vg
        hit = np.nonzero((a >= 0) & (a <= amax))[0]
        if hit.size:
            k = int(hit[0])
            x = 1 << int(a[k])
            return (x if x <= x_range[1] else -x), int(t[k]), g
    return None


def rms_ends(qm, norm, gain_shift: int, bits: int) -> dict[str, bool]:
    """Which saturation ends of a norm's output the bound allows: |y| <= P·max|G|·2^-gain_shift + 1/2
    (every element of x·φ is at most P in magnitude)."""
    num, den = factor_bound_sq()
    gmax = int(np.abs(qm.t(f"G.{norm.key}").astype(np.int64)).max())
    # |y| >= m is possible only if (m - 1/2)^2 <= P^2·gmax^2·4^-gain_shift  (m >= 1)
    scale = 4 ** gain_shift if gain_shift >= 0 else 1
    top = num * gmax * gmax * (4 ** -gain_shift if gain_shift < 0 else 1)

    def can(m: int) -> bool:
        return (2 * m - 1) ** 2 * den * scale <= 4 * top

    return {"min": can(-fp.smin(bits)), "max": can(fp.smax(bits))}


def rms_saturating(qm, norm, x_range, gain_shift: int, bits: int, end: str) -> tuple[int, int, int] | None:
    """(x, t, gain) with t = x² + E (x the vector's only nonzero element, the largest x·φ) whose rms_apply
    saturates to ``end``, or None if no x in the range does."""
    e = int(qm.s(f"E.{norm.reduction}"))
    gains = qm.t(f"G.{norm.key}").astype(np.int64).reshape(-1)
    x = np.arange(max(int(x_range[0]), -(1 << 20)), min(int(x_range[1]), 1 << 20) + 1, dtype=np.int64)
    x = x[x != 0]
    r, j = fp.rsqrt(x * x + e)
    packed = fp.pack_rsqrt(r, j)
    want = fp.smin(bits) if end == "min" else fp.smax(bits)
    for g in (int(gains.max()), int(gains.min())):
        y = fp.rms_apply(x, packed, g, gain_shift, bits)
        hit = np.nonzero(y == want)[0]
        if hit.size:
            k = int(hit[0])
            return int(x[k]), int(x[k] * x[k] + e), g
    return None
