"""The instruction set of neuron programs: each op name bound to its one definition in ``fixedpoint``.

An ``OpSpec`` says how many arguments an op takes, which immediates it needs, how to compute it (for
executors that interpret programs) and how wide its result can be (for the validator's width check).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import fixedpoint as fp


Range = tuple[int, int]


def bits_range(bits: int) -> Range:
    return fp.smin(bits), fp.smax(bits)


def range_bits(r: Range) -> int:
    """Smallest signed width holding every value of the closed interval r."""
    lo, hi = r
    b = 1
    while lo < fp.smin(b) or hi > fp.smax(b):
        b += 1
    return b


@dataclass(frozen=True)
class OpSpec:
    name: str
    n_args: int
    imm: tuple[str, ...]
    fn: Callable                          # fn(args: list[array], imm: dict, tables: dict) -> array
    range: Callable                       # range(arg_ranges: list[Range], imm, tables) -> Range of the result


def _table_range(t: np.ndarray) -> Range:
    return (int(t.min()), int(t.max())) if t.size else (0, 0)


def _square_range(r: Range) -> Range:
    lo, hi = r
    top = max(lo * lo, hi * hi)
    return (0 if lo <= 0 <= hi else min(lo * lo, hi * hi)), top


def _mul_range(a: Range, b: Range) -> Range:
    c = [x * y for x in a for y in b]
    return min(c), max(c)


def _forget_range(sig: Range, beta: Range) -> Range:
    one = 1 << fp.GATE_FRAC
    c = [int(fp.forget_gate(s, bt)) for s in sig for bt in beta]  # monotone in both within [0, one]
    lo, hi = min(c), max(c)
    if not (0 <= sig[0] and sig[1] <= one and 0 <= beta[0] and beta[1] <= one):
        lo, hi = min(lo, -(1 << 40)), max(hi, 1 << 40)  # outside the gate's domain: no guarantee
    return lo, hi


OPS: dict[str, OpSpec] = {}


def _op(name, n_args, imm, fn, rng):
    OPS[name] = OpSpec(name, n_args, tuple(imm), fn, rng)


_PACK_MAX = int(fp.pack_rsqrt(1 << 16, (1 << fp.RSQRT_EXP_BITS) - 1 - fp.RSQRT_EXP_BIAS))

_op("copy", 1, (), lambda a, i, t: np.asarray(a[0], dtype=np.int64), lambda r, i, t: r[0])
_op("rescale", 1, ("mult", "shift", "bits"), lambda a, i, t: fp.rescale(a[0], i["mult"], i["shift"], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]))
_op("mul_shr", 2, ("shift", "bits"), lambda a, i, t: fp.mul_shr(a[0], a[1], i["shift"], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]))
_op("add_sat", 2, ("bits",), lambda a, i, t: fp.add_sat(a[0], a[1], i["bits"]), lambda r, i, t: bits_range(i["bits"]))
_op("square", 1, (), lambda a, i, t: fp.square(a[0]), lambda r, i, t: _square_range(r[0]))
_op("square_shr", 1, ("shift",), lambda a, i, t: fp.square_shr(a[0], i["shift"]),
    lambda r, i, t: tuple(int(fp.shr_round(v, i["shift"])) for v in _square_range(r[0])))
_op("lut", 1, ("table", "in_bits"), lambda a, i, t: fp.lut(a[0], t[i["table"]], i["in_bits"]),
    lambda r, i, t: _table_range(t[i["table"]]))
_op("rms_factor", 1, ("eps",), lambda a, i, t: fp.rms_factor(a[0], i["eps"]), lambda r, i, t: (0, _PACK_MAX))
_op("rms_apply", 3, ("gain_shift", "bits"),
    lambda a, i, t: fp.rms_apply(a[0], a[1], a[2], i["gain_shift"], i["bits"]), lambda r, i, t: bits_range(i["bits"]))
_op("forget_gate", 2, (), lambda a, i, t: fp.forget_gate(a[0], a[1]), lambda r, i, t: _forget_range(r[0], r[1]))
_op("mlgru_candidate", 2, ("bits",), lambda a, i, t: fp.mlgru_candidate(a[0], a[1], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]))
_op("mlgru_update", 3, ("bits",), lambda a, i, t: fp.mlgru_update(a[0], a[1], a[2], i["bits"]),
    lambda r, i, t: bits_range(i["bits"]))
