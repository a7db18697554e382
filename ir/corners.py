"""Which corner cases of one instruction its proven argument intervals leave reachable: the saturation
ends of a saturating op and an exact rounding tie of a rounding op.

The range analysis (``range_analysis.analyse``) gives every instruction's argument intervals; an op's
result interval there is already saturated, which says nothing about whether saturation happens. These
functions take the same intervals one step earlier: the interval of the value *before* saturation, and the
interval of the product *before* rounding. A corner outside them cannot happen on any input, which is a
proof; a corner inside them may or may not happen (intervals forget how arguments depend on each other).
``None`` means the op's pre-saturation value has no interval bound here (rms_apply: its shift depends on
the factor's exponent), so nothing is excluded.
"""
from __future__ import annotations

from . import fixedpoint as fp
from .ops import Range, shr_round_int

GATE_ONE = 1 << fp.GATE_FRAC


def _mul(a: Range, b: Range) -> Range:
    c = [x * y for x in a for y in b]
    return min(c), max(c)


def _shr(r: Range, n: int) -> Range:
    return shr_round_int(r[0], n), shr_round_int(r[1], n)        # monotone non-decreasing


def _one_minus(f: Range) -> Range:
    return GATE_ONE - f[1], GATE_ONE - f[0]


def rounded_factors(op: str, args: tuple, imm: dict) -> tuple[list[Range], int] | None:
    """(intervals of the factors whose product the op rounds, the shift it rounds by), or None (no
    rounding, or a shift that is not an immediate). A square has one factor, used twice."""
    if op == "rescale":
        return [args[0], (imm["mult"], imm["mult"])], imm["shift"]
    if op == "mul_shr":
        return [args[0], args[1]], imm["shift"]
    if op == "square_shr":
        return [args[0]], imm["shift"]
    if op == "forget_gate":
        return [args[0], _one_minus(args[1])], fp.GATE_FRAC
    if op == "mlgru_candidate":
        return [args[0], _one_minus(args[1])], fp.GATE_FRAC
    if op == "mlgru_update":
        return [args[1], args[0]], fp.GATE_FRAC
    return None


def rounded_product(op: str, args: tuple, imm: dict) -> tuple[Range, int] | None:
    """(interval of the product the op rounds, the shift it rounds by), or None."""
    rf = rounded_factors(op, args, imm)
    if rf is None:
        return None
    f, n = rf
    if len(f) == 1:
        lo, hi = f[0]
        sq = [lo * lo, hi * hi]
        return (0 if lo <= 0 <= hi else min(sq), max(sq)), n
    return _mul(f[0], f[1]), n


def odd_multiple(r: Range, p: int) -> int | None:
    """The value of least magnitude in ``r`` that is an odd multiple of 2^p (None: there is none)."""
    lo, hi = -((-r[0]) >> p), r[1] >> p          # ceil(lo / 2^p), floor(hi / 2^p)
    odd = [k for k in (lo, lo + 1, hi - 1, hi, -1, 1) if lo <= k <= hi and k % 2]
    return min(odd, key=abs) << p if odd else None


def tie_factors(factors: list[Range], n: int) -> tuple[int, ...] | None:
    """Factors inside their intervals whose product is an exact tie of a right shift by n (|p| mod 2^n =
    2^(n-1)), or None when no such factors exist: exactly, since a tie needs the product's 2-adic valuation
    to be n - 1, so one factor an odd multiple of 2^q and the other of 2^(n-1-q) (a square: n - 1 even)."""
    if n <= 0:
        return None
    if len(factors) == 1:
        x = odd_multiple(factors[0], (n - 1) // 2) if (n - 1) % 2 == 0 else None
        return None if x is None else (x,)
    for q in range(n):
        a, b = odd_multiple(factors[0], q), odd_multiple(factors[1], n - 1 - q)
        if a is not None and b is not None:
            return a, b
    return None


def unsaturated(op: str, args: tuple, imm: dict) -> Range | None:
    """Interval of a saturating op's value before its saturation to ``imm['bits']`` (None: not bounded)."""
    if op == "add_sat":
        return args[0][0] + args[1][0], args[0][1] + args[1][1]
    if op == "mlgru_update":
        p, n = rounded_product(op, args, imm)
        q = _shr(p, n)
        return q[0] + args[2][0], q[1] + args[2][1]
    if op in ("rescale", "mul_shr", "mlgru_candidate"):
        p, n = rounded_product(op, args, imm)
        return _shr(p, n)
    return None


def saturation_ends(op: str, args: tuple, imm: dict) -> dict[str, bool]:
    """{'min': reachable?, 'max': reachable?} for a saturating instruction: an end is unreachable when the
    pre-saturation interval lies strictly inside it."""
    bits = imm["bits"]
    r = unsaturated(op, args, imm)
    if r is None:
        return {"min": True, "max": True}
    return {"min": r[0] <= fp.smin(bits), "max": r[1] >= fp.smax(bits)}


def tie_possible(op: str, args: tuple, imm: dict) -> bool:
    """Whether an exact tie of the op's rounding can occur for arguments in their intervals (exact for
    independent factors: ``tie_factors``). True when the op's rounding is not known here (rms_apply)."""
    rf = rounded_factors(op, args, imm)
    if rf is None:
        return op == "rms_apply"
    return tie_factors(*rf) is not None
