"""Neuron programs compiled for Numba: an interpreter over an encoded instruction array.

The scalar ops below are the Numba transcription of ``mflc.ir.fixedpoint`` (the single definition of every
integer op); tests/test_nbprogram.py checks each one equal to it, exhaustively over 8-bit inputs and by
hypothesis over wide ones, and the engine's property tests check whole programs equal to the reference
executor, which runs the definitions themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.graph import NeuronGroup
from mflc.ir.ops import OPCODE

OPCODES = OPCODE                        # the op table's numbering (mflc.ir.ops), re-exported for callers
# Numba reads these globals as compile-time constants, one per branch of run_program_flat
_COPY, _RESCALE, _MUL_SHR, _ADD_SAT = OPCODE["copy"], OPCODE["rescale"], OPCODE["mul_shr"], OPCODE["add_sat"]
_SQUARE, _SQUARE_SHR, _LUT, _RMS_FACTOR = OPCODE["square"], OPCODE["square_shr"], OPCODE["lut"], OPCODE["rms_factor"]
_RMS_APPLY, _FORGET_GATE = OPCODE["rms_apply"], OPCODE["forget_gate"]
_MLGRU_CANDIDATE, _MLGRU_UPDATE = OPCODE["mlgru_candidate"], OPCODE["mlgru_update"]
HANDLED = frozenset({"copy", "rescale", "mul_shr", "add_sat", "square", "square_shr", "lut", "rms_factor",
                     "rms_apply", "forget_gate", "mlgru_candidate", "mlgru_update"})   # ops transcribed below
# immediates in instruction columns 5..8, by op
_IMM = {"rescale": ("mult", "shift", "bits"), "mul_shr": ("shift", "bits"), "add_sat": ("bits",),
        "lut": ("table", "in_bits"), "rms_factor": ("eps",), "rms_apply": ("gain_shift", "bits"),
        "mlgru_candidate": ("bits",), "mlgru_update": ("bits",), "square_shr": ("shift",)}

_RT = fp.RSQRT_TABLE.astype(np.int64)
_RT_BASE = int(fp._RSQRT_TABLE_BASE)


@nb.njit(cache=True, inline="always")
def sat(x, bits):
    """fp.saturate on one int64: clamp to the signed ``bits``-bit range."""
    lo = -(np.int64(1) << (bits - 1))
    hi = (np.int64(1) << (bits - 1)) - 1
    return lo if x < lo else (hi if x > hi else x)


@nb.njit(cache=True, inline="always")
def shr_round(x, n):
    """fp.shr_round on one int64: shift right rounding half away from zero (left if n < 0)."""
    if n > 62:                 # fp.SHIFT_MAX: same clamp as the definition
        n = 62
    if n <= 0:
        return x << (-n)
    mag = (abs(x) + (np.int64(1) << (n - 1))) >> n
    return -mag if x < 0 else mag


# Branch-free forms of sat and shr_round for the generated programs (simulator/progcode): selects rather
# than branches, so LLVM can vectorise a neuron loop; equal to the scalar forms above on their domain
# (tests/test_progcode.py).
@nb.njit(cache=True, inline="always")
def clamp(x, lo, hi):
    """sat with the bounds precomputed: lo = -2^(bits-1), hi = 2^(bits-1) - 1."""
    return min(max(x, lo), hi)


@nb.njit(cache=True, inline="always")
def shr_pos(x, n, half):
    """shr_round for a shift 1 <= n <= 62 known positive, half = 2^(n-1) precomputed."""
    mag = (abs(x) + half) >> n
    return -mag if x < 0 else mag


@nb.njit(cache=True, inline="always")
def shr_any(x, n):
    """shr_round for a shift whose sign is only known per neuron (rms_apply's): both results, one kept."""
    n = min(n, 62)
    k = max(n, 1)
    mag = (abs(x) + (np.int64(1) << (k - 1))) >> k
    right = -mag if x < 0 else mag
    left = x << min(max(-n, 0), 63)
    return right if n > 0 else left


@nb.njit(cache=True)
def rsqrt_packed(t, table):
    """fp.rms_factor on one int64: table seed plus two Newton steps, packed with its exponent."""
    k = 0
    v = t
    while v > 0:
        v >>= 1
        k += 1
    j = (k - 16 + 1) >> 1
    u = t >> (2 * j) if j >= 0 else t << (-2 * j)
    r = table[(u >> 10) - _RT_BASE]
    for _ in range(2):
        y = (u * ((r * r) >> 16)) >> (2 * 23 - 16 - 23)
        r = (r * ((np.int64(3) << 23) - y)) >> 24
    return (r << 6) | (j + 32)


@nb.njit(cache=True)
def run_program_flat(code, c0, c1, env, tables, t0, rt, lo, hi):
    """Run instructions c0..c1 of ``code`` on neurons lo..hi, in place on the flat ``env``.

    Columns of code: opcode, out, a0, a1, a2, imm0..imm3; out and a* are the flat offsets of the rows
    (row base + neuron index addresses a value). Table immediates are offsets from ``t0`` into
    ``tables``. Returns 0, 1 if a table input was outside its domain, or 2 for an opcode without a branch
    (an op added to ``mflc.ir.ops`` but not transcribed here); the caller raises.
    """
    # instruction-outer, neuron-inner: the opcode branch is taken once per instruction and each inner
    # loop is one op over contiguous rows, which LLVM can vectorise
    for p in range(c0, c1):
        op = code[p, 0]
        o, x, y, z = code[p, 1], code[p, 2], code[p, 3], code[p, 4]
        i0, i1, i2, i3 = code[p, 5], code[p, 6], code[p, 7], code[p, 8]
        if op == _COPY:
            for i in range(lo, hi):
                env[o + i] = env[x + i]
        elif op == _RESCALE:
            for i in range(lo, hi):
                env[o + i] = sat(shr_round(env[x + i] * i0, i1), i2)
        elif op == _MUL_SHR:
            for i in range(lo, hi):
                env[o + i] = sat(shr_round(env[x + i] * env[y + i], i0), i1)
        elif op == _ADD_SAT:
            for i in range(lo, hi):
                env[o + i] = sat(env[x + i] + env[y + i], i0)
        elif op == _SQUARE:
            for i in range(lo, hi):
                env[o + i] = env[x + i] * env[x + i]
        elif op == _LUT:
            half = np.int64(1) << (i1 - 1)
            for i in range(lo, hi):
                a = env[x + i]
                if a < -half or a >= half:
                    return 1
                env[o + i] = tables[t0 + i0 + a + half]
        elif op == _RMS_FACTOR:
            for i in range(lo, hi):
                env[o + i] = rsqrt_packed(env[x + i] + i0, rt)
        elif op == _RMS_APPLY:
            for i in range(lo, hi):
                packed = env[y + i]
                env[o + i] = sat(shr_round(env[x + i] * env[z + i] * (packed >> 6), 23 + (packed & 63) - 32 + i0), i1)
        elif op == _FORGET_GATE:
            for i in range(lo, hi):
                beta = env[y + i]
                env[o + i] = beta + shr_round(((np.int64(1) << 15) - beta) * env[x + i], 15)
        elif op == _MLGRU_CANDIDATE:
            for i in range(lo, hi):
                env[o + i] = sat(shr_round(env[x + i] * ((np.int64(1) << 15) - env[y + i]), 15), i0)
        elif op == _MLGRU_UPDATE:
            for i in range(lo, hi):
                env[o + i] = sat(shr_round(env[y + i] * env[x + i], 15) + env[z + i], i0)
        elif op == _SQUARE_SHR:
            for i in range(lo, hi):
                env[o + i] = shr_round(env[x + i] * env[x + i], i0)
        else:
            return 2
    return 0


# run_program_flat's nonzero returns, as the callers report them
RUN_ERRORS = {1: "a lut input is outside its table's domain",
              2: "an opcode has no branch in nbprogram.run_program_flat (op not transcribed)"}


@dataclass
class EncodedProgram:
    """A group's program encoded for ``run_program_flat`` plus its persistent slot matrix."""

    code: np.ndarray                # slots as row numbers (flat offsets are made per use)
    env: np.ndarray                 # [n_slots, size]: registers, params, ports, temporaries
    tables: np.ndarray
    slot: dict                      # name -> row
    output: int
    _flat: np.ndarray | None = None

    def flat_code(self, base: int = 0) -> np.ndarray:
        """The code with every slot turned into the flat offset base + slot · size."""
        c = self.code.copy()
        c[:, 1:5] = base + c[:, 1:5] * self.env.shape[1]
        return c

    def run(self, ports: dict[str, np.ndarray], lo: int, hi: int, group: str) -> None:
        """Load the ports and run the program on neurons lo..hi, raising on a domain error."""
        for name, v in ports.items():
            self.env[self.slot[name], lo:hi] = v[lo:hi]
        if self._flat is None:
            self._flat = self.flat_code()
        err = run_program_flat(self._flat, 0, len(self._flat), self.env.reshape(-1), self.tables, 0, _RT, lo, hi)
        if err:
            raise ValueError(f"group {group}: " + RUN_ERRORS[err])


def encode(grp: NeuronGroup) -> EncodedProgram:
    """Encode a group's program as opcode rows over slot numbers, with its tables and initial slot matrix."""
    slot: dict[str, int] = {}
    for name in [*grp.registers, *grp.params, *grp.ports]:
        slot.setdefault(name, len(slot))
    for ins in grp.program:
        slot.setdefault(ins.out, len(slot))
    tables, offsets, off = [], {}, 0
    for name, t in grp.tables.items():
        offsets[name] = off
        tables.append(np.asarray(t, np.int64))
        off += t.size
    code = np.zeros((len(grp.program), 9), np.int64)
    # the op library uses ``arg`` order (x, packed, gain) for rms_apply; (sig, beta) for forget_gate;
    # (silu_i, f) for mlgru_candidate; (h, f, c) for mlgru_update: a0 is the first argument throughout.
    for p, ins in enumerate(grp.program):
        args = list(ins.args)
        if ins.op == "mlgru_update":          # kernel expects a0 = f, a1 = h, a2 = c
            args = [args[1], args[0], args[2]]
        if ins.op not in HANDLED:
            raise ValueError(f"op {ins.op!r} has no Numba transcription in simulator/nbprogram")
        code[p, 0] = OPCODE[ins.op]
        code[p, 1] = slot[ins.out]
        for k, a in enumerate(args):
            code[p, 2 + k] = slot[a]
        imm = ins.imm_dict
        for k, key in enumerate(_IMM.get(ins.op, ())):
            code[p, 5 + k] = offsets[imm[key]] if key == "table" else int(imm[key])
    env = np.zeros((max(len(slot), 1), grp.size), np.int64)
    for name, v in grp.params.items():
        env[slot[name]] = v
    return EncodedProgram(code, env, np.concatenate(tables) if tables else np.zeros(1, np.int64), slot,
                          slot[grp.output])
