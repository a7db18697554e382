"""Neuron programs as generated code: one Numba function per distinct program, instead of the interpreter.

The interpreter (``nbprogram.run_program_flat``) runs a program instruction by instruction over all
neurons, dispatching on the opcode and going through memory for every temporary. Here a program becomes
Python source (as Brian2 turns a neuron model into a code object) whose loops over neurons evaluate the
instructions on values held in local variables: no dispatch, temporaries in registers, saturations and
roundings as selects (``nbprogram.clamp`` / ``shr_pos`` / ``shr_any``) so LLVM can vectorise them. Each
table lookup gets a loop of its own (``_segments``), which lets the rest vectorise.

What the source depends on is the program's *shape*: its opcodes, the slots they read and write, and the
sign of each immediate shift (a positive, zero or negative shift is different code). The immediates'
values (shifts, multipliers, widths, table offsets) are read from an int64 array at run time, so the
24 layers of a 370M model, which differ only in their calibrated constants, share one compiled function.
The integers are those of the interpreter: tests/test_progcode.py runs random programs inside the
validator's domains on both, with extreme values at every declared width.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from mflc.ir.ops import OPCODE

from mflc.ir.graph import NeuronGroup
from mflc.ir.ops import OPS

from . import jitcache, nbprogram
from .nbprogram import _RT, RUN_ERRORS, EncodedProgram, encode

N_IMM = 5                                     # int64 columns per instruction in the immediates array
_SHIFTED = {"rescale": 1, "mul_shr": 0, "square_shr": 0}   # ops with an immediate shift: its column in code[:, 5:]
_OP_NAME = {v: k for k, v in OPCODE.items()}
_ONE = 1 << 15                                # fp.GATE_FRAC: the gate ops' fixed fraction


def _shift_class(shift: int) -> str:
    return "pos" if shift > 0 else ("zero" if shift == 0 else "neg")


@dataclass(frozen=True)
class ProgramShape:
    """What a program's generated code depends on (and is cached by): slot count, and per instruction its
    op, output slot, argument slots and shift class."""

    n_slots: int
    instrs: tuple[tuple[str, int, tuple[int, ...], str], ...]
    ports: tuple[int, ...]                    # the slots loaded from the port array in the per-token variant
    output: int

    @property
    def key(self) -> str:
        """A short content hash: the generated module's name."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:20]


def shape_of(ep: EncodedProgram, ports: list[str], n_args: dict[str, int]) -> ProgramShape:
    """The shape of an encoded program (``nbprogram.encode``: its slot numbering and argument order)."""
    instrs = []
    for row in ep.code:
        name = _OP_NAME[int(row[0])]
        k = _SHIFTED.get(name)
        cls = _shift_class(int(row[5 + k])) if k is not None else ""
        instrs.append((name, int(row[1]), tuple(int(a) for a in row[2:2 + n_args[name]]), cls))
    return ProgramShape(ep.env.shape[0], tuple(instrs), tuple(ep.slot[p] for p in ports), ep.output)


def _sat_cols(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _shift_cols(shift: int) -> tuple[int, int]:
    """(n, 2^(n-1)) for a right shift clamped to fp.SHIFT_MAX as the interpreter does; (-shift, 0) for a
    left shift; (0, 0) for none."""
    if shift > 0:
        n = min(shift, 62)
        return n, 1 << (n - 1)
    return -shift, 0


def immediates(ep: EncodedProgram) -> np.ndarray:
    """The run-time immediates of an encoded program, [n_instr, N_IMM] int64, precomputed for the
    generated code: saturation bounds instead of widths, clamped shifts with their rounding halves."""
    out = np.zeros((len(ep.code), N_IMM), np.int64)
    for p, row in enumerate(ep.code):
        name, i = _OP_NAME[int(row[0])], [int(v) for v in row[5:9]]
        if name == "rescale":              # mult, shift, bits
            vals = (i[0], *_shift_cols(i[1]), *_sat_cols(i[2]))
        elif name == "mul_shr":            # shift, bits
            vals = (*_shift_cols(i[0]), *_sat_cols(i[1]))
        elif name == "square_shr":
            vals = _shift_cols(i[0])
        elif name in ("add_sat", "mlgru_candidate", "mlgru_update"):
            vals = _sat_cols(i[0])
        elif name == "lut":                # table offset, half of the 2^in_bits domain
            vals = (i[0], 1 << (i[1] - 1))
        elif name == "rms_factor":
            vals = (i[0],)
        elif name == "rms_apply":          # gain_shift, bits
            vals = (i[0], *_sat_cols(i[1]))
        else:
            vals = ()
        out[p, :len(vals)] = vals
    return out


def _shr(expr: str, cls: str, p: int, c: int) -> str:
    """shr_round of ``expr`` by the shift in immediate columns c (n) and c + 1 (half), by its class."""
    if cls == "pos":
        return f"shr_pos({expr}, imm[{p}, {c}], imm[{p}, {c + 1}])"
    return expr if cls == "zero" else f"(({expr}) << imm[{p}, {c}])"


def _expr(name: str, a: tuple[int, ...], cls: str, p: int) -> str:
    """The right-hand side of one instruction over local variables v<slot> (immediates as imm[p + i0, c])."""
    v = [f"v{s}" for s in a]
    if name == "copy":
        return v[0]
    if name == "rescale":
        return f"clamp({_shr(f'{v[0]} * imm[{p}, 0]', cls, p, 1)}, imm[{p}, 3], imm[{p}, 4])"
    if name == "mul_shr":
        return f"clamp({_shr(f'{v[0]} * {v[1]}', cls, p, 0)}, imm[{p}, 2], imm[{p}, 3])"
    if name == "add_sat":
        return f"clamp({v[0]} + {v[1]}, imm[{p}, 0], imm[{p}, 1])"
    if name == "square":
        return f"{v[0]} * {v[0]}"
    if name == "square_shr":
        return _shr(f"{v[0]} * {v[0]}", cls, p, 0)
    if name == "lut":
        return f"tables[t0 + imm[{p}, 0] + clamp({v[0]}, -imm[{p}, 1], imm[{p}, 1] - 1) + imm[{p}, 1]]"
    if name == "rms_factor":
        return f"rsqrt_packed({v[0]} + imm[{p}, 0], rt)"
    if name == "rms_apply":        # x, packed factor, gain
        return (f"clamp(shr_any({v[0]} * {v[2]} * ({v[1]} >> 6), 23 + ({v[1]} & 63) - 32 + imm[{p}, 0]), "
                f"imm[{p}, 1], imm[{p}, 2])")
    if name == "forget_gate":      # sigmoid, lower bound
        return f"{v[1]} + shr_pos(({_ONE} - {v[1]}) * {v[0]}, 15, {_ONE >> 1})"
    if name == "mlgru_candidate":  # silu input, gate
        return f"clamp(shr_pos({v[0]} * ({_ONE} - {v[1]}), 15, {_ONE >> 1}), imm[{p}, 0], imm[{p}, 1])"
    if name == "mlgru_update":     # encoded as (gate, h, c)
        return f"clamp(shr_pos({v[1]} * {v[0]}, 15, {_ONE >> 1}) + {v[2]}, imm[{p}, 0], imm[{p}, 1])"
    raise ValueError(f"op {name!r} has no code generator in simulator/progcode")


def _body(shape: ProgramShape, load, indent: str, which: range) -> tuple[list[str], list[int]]:
    """The per-neuron statements of instructions ``which``: loads on first use, one assignment per
    instruction; and the slots written."""
    lines, live, written = [], set(), []

    def use(s: int) -> None:
        if s not in live:
            lines.append(f"{indent}v{s} = {load(s)}")
            live.add(s)

    for p in which:
        name, out, args, cls = shape.instrs[p]
        for s in args:
            use(s)
        rhs = _expr(name, args, cls, p)
        if name == "lut":
            lines.append(f"{indent}bad |= (v{args[0]} < -imm[{p}, 1]) | (v{args[0]} >= imm[{p}, 1])")
        lines.append(f"{indent}v{out} = {rhs}")
        live.add(out)
        if out not in written:
            written.append(out)
    return [re.sub(r"imm\[(\d+), (\d+)\]", r"m\1_\2", ln) for ln in lines], written


def _segments(shape: ProgramShape) -> list[range]:
    """The instructions as loops: each table lookup alone, the runs between them together. Why: LLVM cannot
    bound an indirect read of the tables, so it cannot prove it does not alias the slot rows the loop
    stores, and leaves a loop with a lookup scalar; split out, everything else vectorises (a 370M MLGRU
    group went from one scalar loop to four loops, three of them vectorised)."""
    segs, start = [], 0
    for p, (name, *_) in enumerate(shape.instrs):
        if name == "lut":
            if p > start:
                segs.append(range(start, p))
            segs.append(range(p, p + 1))
            start = p + 1
    if start < len(shape.instrs) or not segs:
        segs.append(range(start, len(shape.instrs)))
    return segs


def _loops(shape: ProgramShape, indent: str, var: str, bound: str) -> tuple[list[str], list[str]]:
    """One loop per segment over ``var`` in range(bound), each loading its inputs from and storing what it
    writes to the slot rows r<slot>; and the statements of all loops (for the immediates they use)."""
    out, every = [], []
    for seg in _segments(shape):
        lines, written = _body(shape, lambda s: f"r{s}[{var}]", indent + "    ", seg)
        stores = [f"{indent}    r{s}[{var}] = v{s}" for s in written]
        out += [f"{indent}for {var} in range({bound}):", *lines, *stores]
        every += lines + stores
    return out, every


def _hoisted(lines: list[str]) -> list[str]:
    """The immediates the statements use, read once before the loop (LLVM cannot hoist them itself: it
    cannot prove the slot matrix and the immediates do not overlap)."""
    used = sorted(set(re.findall(r"m(\d+)_(\d+)", "\n".join(lines))), key=lambda pc: (int(pc[0]), int(pc[1])))
    return [f"    m{p}_{c} = imm[i0 + {p}, {c}]" for p, c in used]


HEADER = ("import numba as nb\nimport numpy as np\n"
          "from mflc.simulator.nbprogram import clamp, rsqrt_packed, shr_any, shr_pos\n\n"
          "EAGER = True    # explicit signatures: compiled, or loaded from Numba's cache, on import\n\n\n")
_SIG_RUN = "int64(int64[::1], int64, int64, int64[::1], int64, int64[:, ::1], int64, int64[::1], int64, int64)"
_SIG_TOKENS = ("int64(int64[::1], int64, int64[::1], int64[:, ::1], int64[::1], int64[:, :, ::1], int64[:, ::1], "
               "int64[::1], int64[:, :, ::1])")


def source(shape: ProgramShape) -> str:
    """The module text of a program's two functions.

    ``run(env, base, size, tables, t0, imm, i0, rt, lo, hi)``: the program on neurons lo..hi of a flat slot
    matrix at ``base`` (slot s of neuron i at base + s·size + i), immediates from row i0 of ``imm``; returns
    0, or 1 if a lut input was outside its table (the interpreter's codes).
    ``run_tokens(env, size, tables, imm, rt, ports, outs, reg_rows, regs)``: the program once per token
    (registers carried in ``env``), port values read from ``ports[p, t, i]``, outputs and the named
    registers written out per token; returns -1, or t·4 + the error code of the first failing token.
    """
    loops, every = _loops(shape, "    ", "i", "hi - lo")
    # rows as views starting at lo and loops from 0: LLVM sees in-bounds, non-negative indexes (no
    # wrap-around selects) and vectorises, checking at run time that the rows do not overlap
    views = [f"    r{s} = env[base + {s} * size + lo:base + {s} * size + hi]" for s in _rows(every)]
    t_loops, t_every = _loops(shape, "        ", "i", "size")
    t_ports = [f"            r{s}[i] = p{k}[i]" for k, s in enumerate(shape.ports)]
    t_views = [f"    r{s} = env[{s} * size:{s + 1} * size]"
               for s in sorted(set(_rows(t_every + t_ports)) | {shape.output})]
    return HEADER + "\n".join([
        f"@nb.njit('{_SIG_RUN}', cache=True, nogil=True, error_model='numpy')",
        "def run(env, base, size, tables, t0, imm, i0, rt, lo, hi):",
        *_hoisted(every), *views,
        "    bad = False",
        *loops,
        "    return 1 if bad else 0",
        "", "",
        f"@nb.njit('{_SIG_TOKENS}', cache=True, nogil=True, error_model='numpy')",
        "def run_tokens(env, size, tables, imm, rt, ports, outs, reg_rows, regs):",
        "    i0 = 0",
        "    t0 = 0",
        *_hoisted(t_every), *t_views,
        "    for t in range(ports.shape[1]):",
        *[f"        p{k} = ports[{k}, t]" for k in range(len(shape.ports))],
        "        out = outs[t]",
        "        bad = False",
        *(["        for i in range(size):", *t_ports] if t_ports else []),   # every port lands in env
        *t_loops,
        "        for i in range(size):",
        f"            out[i] = r{shape.output}[i]",
        "        for r in range(reg_rows.size):",
        "            regs[r, t] = env[reg_rows[r] * size:(reg_rows[r] + 1) * size]",
        "        if bad:",
        "            return t * 4 + 1",
        "    return -1",
        ""])


def _rows(lines: list[str]) -> list[int]:
    """The slots the statements address as row views r<slot>."""
    return sorted({int(s) for s in re.findall(r"\br(\d+)\[", "\n".join(lines))})


def module_for(shape: ProgramShape):
    """The compiled module of a program shape (generated, cached on disk by its content)."""
    return jitcache.load("prog", source(shape), deps=(nbprogram,))


class CompiledProgram(EncodedProgram):
    """An encoded program (same slots, same slot matrix) run by its generated function, not the interpreter."""

    shape: ProgramShape
    imm: np.ndarray
    module: object

    def run(self, ports: dict[str, np.ndarray], lo: int, hi: int, group: str) -> None:
        """Load the ports and run the program on neurons lo..hi, raising on a domain error."""
        for name, v in ports.items():
            self.env[self.slot[name], lo:hi] = v[lo:hi]
        env = self.env.reshape(-1)
        if self.module.run(env, 0, self.env.shape[1], self.tables, 0, self.imm, 0, _RT, lo, hi):
            raise ValueError(f"group {group}: " + RUN_ERRORS[1])


def compile_program(grp: NeuronGroup) -> CompiledProgram:
    """``encode(grp)`` with its generated function attached (compiled once per shape and machine)."""
    ep = encode(grp)
    cp = CompiledProgram(ep.code, ep.env, ep.tables, ep.slot, ep.output)
    cp.shape = shape_of(ep, grp.ports, {k: v.n_args for k, v in OPS.items()})
    cp.imm = immediates(ep)
    cp.module = module_for(cp.shape)
    return cp


PROGRAMS = ("compiled", "interpreted")       # how executors run neuron programs; interpreted: the reference


def program_for(grp: NeuronGroup, programs: str = "compiled") -> EncodedProgram:
    """A group's program for an executor: generated code, or the interpreter (the reference)."""
    if programs not in PROGRAMS:
        raise ValueError(f"unknown programs mode {programs!r}; choose one of {', '.join(PROGRAMS)}")
    return compile_program(grp) if programs == "compiled" else encode(grp)
