"""The instruction set of neuron programs: each op name bound to its one definition in ``fixedpoint``.

An ``OpSpec`` says how many arguments an op takes, which immediates it needs and their legal values, how
to compute it (for executors that interpret programs), how wide its result can be and which argument
intervals it accepts (its domain: the preconditions under which the definition in ``fixedpoint`` and the
Numba transcription in ``simulator/nbprogram`` are exact, never raise and never overflow int64). The
validator's range analysis (docs/ir.md) checks both.

Ranges are closed intervals of Python ints, computed exactly (no int64 arithmetic), so the analysis
itself can never overflow whatever the graph holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import fixedpoint as fp


Range = tuple[int, int]


def bits_range(bits: int) -> Range:
    """The closed interval a signed ``bits``-bit word holds."""
    return fp.smin(bits), fp.smax(bits)


def range_bits(r: Range) -> int:
    """Smallest signed width holding every value of the closed interval r."""
    lo, hi = r
    return 1 + max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length() if hi > 0 else 0)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
GATE_ONE = 1 << fp.GATE_FRAC
RSQRT_ARG_MAX = (1 << 46) - 1          # fp.rsqrt's domain is [1, 2^46)
MULT_MAX = (1 << (fp.STATE_BITS_MAX - 1)) - 1   # fp.rescale: 0 <= mult < 2^23 (the quantizer's own limit)


def is_int(v) -> bool:
    """A genuine integer immediate: int or numpy integer, not bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def fmt_int(v: int) -> str:
    """An integer, with powers of two (and one less than them) written 2^k from 2^16 up."""
    a = abs(v)
    if a >= 1 << 16:
        if a & (a - 1) == 0:
            return f"{'-' if v < 0 else ''}2^{a.bit_length() - 1}"
        if (a + 1) & a == 0:
            return f"{'-' if v < 0 else ''}(2^{a.bit_length()}-1)" if v < 0 else f"2^{a.bit_length()}-1"
    return str(v)


def fmt_range(r: Range) -> str:
    """An interval for messages, large bounds written as powers of two."""
    return f"[{fmt_int(r[0])}, {fmt_int(r[1])}]"


def shr_round_int(x: int, n: int) -> int:
    """fp.shr_round on one Python int, exactly (no int64)."""
    n = min(n, fp.SHIFT_MAX)
    if n <= 0:
        return x << (-n)
    mag = (abs(x) + (1 << (n - 1))) >> n
    return -mag if x < 0 else mag


def _mul(a: Range, b: Range) -> Range:
    c = [x * y for x in a for y in b]
    return min(c), max(c)


def _add(a: Range, b: Range) -> Range:
    return a[0] + b[0], a[1] + b[1]


def _shr(r: Range, n: int) -> Range:
    return shr_round_int(r[0], n), shr_round_int(r[1], n)    # shr_round is monotone non-decreasing


def _sat(r: Range, bits: int) -> Range:
    lo, hi = fp.smin(bits), fp.smax(bits)
    return max(lo, min(hi, r[0])), max(lo, min(hi, r[1]))


def _fits64(r: Range) -> bool:
    return INT64_MIN <= r[0] and r[1] <= INT64_MAX


def _in(r: Range, lo: int, hi: int) -> bool:
    return lo <= r[0] and r[1] <= hi


def _int64(what: str, r: Range) -> list[str]:
    """The problem (if any) of an intermediate that the executors form in int64."""
    return [] if _fits64(r) else [f"{what} may span {fmt_range(r)}, needs {range_bits(r)} bits, beyond int64"]


def _outside(what: str, r: Range, lo: int, hi: int, domain: str) -> list[str]:
    return [] if _in(r, lo, hi) else [f"{what} may span {fmt_range(r)}, outside {domain} {fmt_range((lo, hi))}"]


def _table_range(t: np.ndarray) -> Range:
    return (int(t.min()), int(t.max())) if t.size else (0, 0)


def _square_range(r: Range) -> Range:
    lo, hi = r
    top = max(lo * lo, hi * hi)
    return (0 if lo <= 0 <= hi else min(lo * lo, hi * hi)), top


def _mul_range(a: Range, b: Range) -> Range:
    return _mul(a, b)


def _forget_range(sig: Range, beta: Range) -> Range:
    """f = β + round((2^15 − β)·σ / 2^15). Inside the domain (σ, β in [0, 2^15]) f is non-decreasing in
    both arguments, so its extremes are at the corners, within [0, 2^15]. Outside it, interval arithmetic
    (sound, looser); the domain check reports the violation anyway."""
    if _in(sig, 0, GATE_ONE) and _in(beta, 0, GATE_ONE):
        f = lambda s, b: b + shr_round_int((GATE_ONE - b) * s, fp.GATE_FRAC)  # noqa: E731
        return f(sig[0], beta[0]), f(sig[1], beta[1])
    return _add(beta, _shr(_mul((GATE_ONE - beta[1], GATE_ONE - beta[0]), sig), fp.GATE_FRAC))


def _lut_range(r: Range, i: dict, t: dict) -> Range:
    """The table entries the input interval can index (all of them if it overruns the domain)."""
    tab = np.asarray(t[i["table"]]).reshape(-1)
    base = -fp.smin(i["in_bits"])
    a, b = r[0] + base, r[1] + base
    if 0 <= a <= b < tab.size:
        return _table_range(tab[a:b + 1])
    return _table_range(tab)


# ---- domains: fn(arg_ranges, imm, tables) -> the violated preconditions, one phrase each --------------
# Each phrase may name arguments as {0}, {1}, {2}; the validator substitutes their names. Domains are
# called only once every immediate is present and legal (IMM_DOMAIN), so they may rely on them.
def _no_domain(r, i, t) -> list[str]:
    return []


def _shifted(p: Range, shift: int) -> Range:
    """A product as the executors hold it before rounding: a negative shift is a left shift, in int64."""
    left = max(0, -shift)
    return p[0] << left, p[1] << left


def _rescale_domain(r, i, t):
    p = _mul(r[0], (i["mult"], i["mult"]))
    return _int64("product {0}·mult", p) or _int64(f"product {{0}}·mult shifted left by {-i['shift']}", _shifted(p, i["shift"]))


def _mul_shr_domain(r, i, t):
    p = _mul(r[0], r[1])
    return _int64("product {0}·{1}", p) or _int64(f"product {{0}}·{{1}} shifted left by {-i['shift']}", _shifted(p, i["shift"]))


def _square_shr_domain(r, i, t):
    p = _square_range(r[0])
    return _int64("square of {0}", p) or _int64(f"square of {{0}} shifted left by {-i['shift']}", _shifted(p, i["shift"]))


def _add_sat_domain(r, i, t):
    return _int64("sum {0}+{1}", _add(r[0], r[1]))


def _square_domain(r, i, t):
    return _int64("square of {0}", _square_range(r[0]))


def _lut_domain(r, i, t):
    tab = t[i["table"]]
    b = i["in_bits"]
    out = []
    if not (isinstance(tab, np.ndarray) and tab.ndim == 1 and tab.size == 1 << b):
        shape = getattr(tab, "shape", None)
        out.append(f"table {i['table']!r} has shape {shape}, the {b}-bit domain needs ({1 << b},)")
    return out + _outside("input {0}", r[0], fp.smin(b), fp.smax(b), f"the table's {b}-bit domain")


def _rms_factor_domain(r, i, t):
    hi = RSQRT_ARG_MAX - i["eps"]
    return _outside("sum of squares {0}", r[0], 0, hi, f"rms_factor's domain (eps = {i['eps']})")


def _rms_apply_domain(r, i, t):
    # the executors form x·gain, then ·r with r = packed >> 6, then shift by 23 + j + gain_shift where
    # j = (packed & 63) - 32 in [-32, 31]. A negative total shift (a left shift) needs a small j, which
    # only a small sum of squares gives, and then x (one of its terms) is small too: x·r·2^-(23+j) stays
    # near x/rms. That bound is relational (x against the sum its factor came from); intervals cannot
    # see it, so it is not checked here (docs/ir.md, "What the analysis does not prove").
    x, packed, gain = r
    rr = (packed[0] >> fp.RSQRT_EXP_BITS, packed[1] >> fp.RSQRT_EXP_BITS)
    xg = _mul(x, gain)
    return _int64("product {0}·{2}", xg) + _int64("product {0}·{2}·r", _mul(xg, rr))


def _forget_domain(r, i, t):
    return (_outside("sigmoid {0}", r[0], 0, GATE_ONE, "forget_gate's domain")
            + _outside("lower bound {1}", r[1], 0, GATE_ONE, "forget_gate's domain"))


def _candidate_domain(r, i, t):
    return (_outside("gate {1}", r[1], 0, GATE_ONE, "mlgru_candidate's domain")
            + _int64("product {0}·(2^15 - {1})", _mul(r[0], (GATE_ONE - r[1][1], GATE_ONE - r[1][0]))))


def _update_domain(r, i, t):
    fh = _mul(r[1], r[0])
    return (_outside("gate {1}", r[1], 0, GATE_ONE, "mlgru_update's domain") + _int64("product {1}·{0}", fh)
            + _int64("sum round({1}·{0} / 2^15) + {2}", _add(_shr(fh, fp.GATE_FRAC), r[2])))


# Legal values of every immediate, by name (inclusive bounds); "table" must name one of the group's tables.
IMM_DOMAIN: dict[str, tuple[int, int]] = {
    "bits": (1, fp.STATE_BITS_MAX),       # a saturation width: a neuron state word at most
    "shift": (-fp.SHIFT_MAX, fp.SHIFT_MAX),   # shr_round: negative is a left shift (the domains bound it)
    "gain_shift": (-fp.SHIFT_MAX, fp.SHIFT_MAX),   # negative: a left shift (tiny weights); the domain bounds it
    "mult": (0, MULT_MAX),                # fp.rescale's stated domain
    "eps": (1, RSQRT_ARG_MAX),            # rms_factor: E >= 1 keeps rsqrt's argument >= 1
    "in_bits": (1, fp.STATE_BITS_MAX),    # a table of 2^in_bits entries, indexed by a state word
}


def imm_problems(spec: "OpSpec", imm: dict, tables: dict) -> list[str]:
    """Problems of an instruction's immediates that ``spec`` needs (missing ones are left to the caller)."""
    out = []
    for key in spec.imm:
        if key not in imm:
            continue
        v = imm[key]
        if key == "table":
            if not isinstance(v, str):
                out.append(f"immediate 'table' is {v!r} ({type(v).__name__}), must be a table name")
            elif v not in tables:
                out.append(f"table {v!r} does not exist")
        elif not is_int(v):
            out.append(f"immediate {key!r} is {v!r} ({type(v).__name__}), must be an integer")
        else:
            lo, hi = IMM_DOMAIN[key]
            if not lo <= int(v) <= hi:
                out.append(f"immediate {key!r} = {fmt_int(int(v))} outside {lo}..{fmt_int(hi)}")
    return out


@dataclass(frozen=True)
class OpSpec:
    """One op of the instruction set: arity, immediates, its definition, result range and domain."""

    name: str
    n_args: int
    imm: tuple[str, ...]
    fn: Callable                          # fn(args: list[array], imm: dict, tables: dict) -> array
    range: Callable                       # range(arg_ranges: list[Range], imm, tables) -> Range of the result
    domain: Callable = _no_domain         # domain(arg_ranges, imm, tables) -> violated preconditions (phrases)


OPS: dict[str, OpSpec] = {}


def _op(name, n_args, imm, fn, rng, domain=_no_domain):
    OPS[name] = OpSpec(name, n_args, tuple(imm), fn, rng, domain)


_PACK_MAX = int(fp.pack_rsqrt(1 << 16, (1 << fp.RSQRT_EXP_BITS) - 1 - fp.RSQRT_EXP_BIAS))

_op("copy", 1, (), lambda a, i, t: np.asarray(a[0], dtype=np.int64), lambda r, i, t: r[0])
_op("rescale", 1, ("mult", "shift", "bits"), lambda a, i, t: fp.rescale(a[0], i["mult"], i["shift"], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]), _rescale_domain)
_op("mul_shr", 2, ("shift", "bits"), lambda a, i, t: fp.mul_shr(a[0], a[1], i["shift"], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]), _mul_shr_domain)
_op("add_sat", 2, ("bits",), lambda a, i, t: fp.add_sat(a[0], a[1], i["bits"]), lambda r, i, t: bits_range(i["bits"]),
    _add_sat_domain)
_op("square", 1, (), lambda a, i, t: fp.square(a[0]), lambda r, i, t: _square_range(r[0]), _square_domain)
_op("square_shr", 1, ("shift",), lambda a, i, t: fp.square_shr(a[0], i["shift"]),
    lambda r, i, t: _shr(_square_range(r[0]), i["shift"]), _square_shr_domain)
_op("lut", 1, ("table", "in_bits"), lambda a, i, t: fp.lut(a[0], t[i["table"]], i["in_bits"]),
    lambda r, i, t: _lut_range(r[0], i, t), _lut_domain)
_op("rms_factor", 1, ("eps",), lambda a, i, t: fp.rms_factor(a[0], i["eps"]), lambda r, i, t: (0, _PACK_MAX),
    _rms_factor_domain)
_op("rms_apply", 3, ("gain_shift", "bits"),
    lambda a, i, t: fp.rms_apply(a[0], a[1], a[2], i["gain_shift"], i["bits"]), lambda r, i, t: bits_range(i["bits"]),
    _rms_apply_domain)
_op("forget_gate", 2, (), lambda a, i, t: fp.forget_gate(a[0], a[1]), lambda r, i, t: _forget_range(r[0], r[1]),
    _forget_domain)
_op("mlgru_candidate", 2, ("bits",), lambda a, i, t: fp.mlgru_candidate(a[0], a[1], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]), _candidate_domain)
_op("mlgru_update", 3, ("bits",), lambda a, i, t: fp.mlgru_update(a[0], a[1], a[2], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]), _update_domain)

# Each op's number in encoded programs (simulator/nbprogram): defined once, here, in OPS order. Append new
# ops at the end of OPS so existing numbers stay put (Numba's on-disk cache freezes them at compile time).
OPCODE: dict[str, int] = {name: k for k, name in enumerate(OPS)}
