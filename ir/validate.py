"""IR validation: every rule is a small function that yields problems; all are reported at once.

A new rule is one function added to ``RULES``. Problems name the group or synapse, the figure and the
limit, so a user can see what to change.

The hardware limits are keyword arguments, ``problems(g, **hw.ir_limits())`` for a ``HardwareProfile`` hw
(``mflc.ir.hardware``): ``msg_bits`` (max_msg_bits), ``state_bits`` (state_word_bits), ``acc_bits``
(accumulator_bits), ``weight_bits`` and ``max_delay`` (max_synapse_delay); each defaults to the default
profile's figure.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from . import fixedpoint as fp
from .errors import IRValidationError
from .graph import Graph, PackedSynapseGroup
from .hardware import DEFAULT as _HW
from .modes import Send
from .ops import OPS, fmt_range, imm_problems, range_bits
from .range_analysis import analyse, changes

SYNAPSE_DELAY_MAX = _HW.max_synapse_delay     # the default profile's figure (its source: mflc.ir.hardware)
LIMITS = _HW.ir_limits()                       # every limit's default


def _rule_references(g: Graph, **_) -> Iterator[str]:
    for s in g.synapses.values():
        if s.src not in g.groups:
            yield f"synapse {s.name}: source group {s.src!r} does not exist"
        if s.dst not in g.groups:
            yield f"synapse {s.name}: destination group {s.dst!r} does not exist"
        elif s.port not in g.groups[s.dst].ports:
            yield f"synapse {s.name}: port {s.port!r} does not exist on group {s.dst} (ports: {', '.join(g.groups[s.dst].ports)})"
    fed = {(s.dst, s.port) for s in g.synapses.values()} | {(i.group, i.port) for i in g.inputs}
    for grp in g.groups.values():
        for p in grp.ports:
            if (grp.name, p) not in fed:
                yield f"group {grp.name}: port {p!r} is dangling (no synapse or host input feeds it)"
    for i in g.inputs:
        if i.group not in g.groups:
            yield f"input {i.name}: group {i.group!r} does not exist"
        elif i.port not in g.groups[i.group].ports:
            yield f"input {i.name}: port {i.port!r} does not exist on group {i.group}"
        if i.table not in g.host_tensors:
            yield f"input {i.name}: host table {i.table!r} does not exist"
        elif i.group in g.groups and g.host_tensors[i.table].shape[1:] != (g.groups[i.group].size,):
            yield (f"input {i.name}: host table {i.table} has shape {g.host_tensors[i.table].shape}, "
                   f"expected [*, {g.groups[i.group].size}] for group {i.group}")
    for o in g.outputs:
        if o.group not in g.groups:
            yield f"output {o.name}: group {o.group!r} does not exist"
    for name, (grp, reg) in g.state.items():
        if grp not in g.groups or reg not in g.groups[grp].registers:
            yield f"state {name}: register {reg!r} of group {grp!r} does not exist"


def _rule_shapes(g: Graph, weight_bits: int = LIMITS["weight_bits"], **_) -> Iterator[str]:
    for s in g.synapses.values():
        if s.src in g.groups and s.dst in g.groups:
            want = (g.groups[s.dst].size, g.groups[s.src].size)
            if tuple(s.shape) != want:
                yield f"synapse {s.name}: weight shape {tuple(s.shape)} does not match (dst {s.dst} size, src {s.src} size) = {want}"
        if isinstance(s, PackedSynapseGroup):
            if weight_bits < 2:               # ternary weights need 2 bits; the codes are checked on loading
                yield f"synapse {s.name}: ternary weights outside the {weight_bits}-bit range (weight_bits)"
            continue
        if s.indptr.shape != (s.shape[0] + 1,) or (s.indptr.size and (s.indptr[0] != 0 or s.indptr[-1] != s.values.size)):
            yield f"synapse {s.name}: CSR row pointer is inconsistent with {s.values.size} stored weights"
        elif np.any(np.diff(s.indptr) < 0):
            yield f"synapse {s.name}: CSR row pointer decreases"
        if s.indices.size != s.values.size:
            yield f"synapse {s.name}: {s.indices.size} indices but {s.values.size} weights"
        elif s.indices.size and (s.indices.min() < 0 or s.indices.max() >= s.shape[1]):
            yield f"synapse {s.name}: source index out of range [0, {s.shape[1]})"
        lim = 1 << (weight_bits - 1)
        if s.values.size and (int(s.values.min()) < -lim or int(s.values.max()) > lim - 1):
            yield f"synapse {s.name}: weight outside the {weight_bits}-bit range (weight_bits)"
    for grp in g.groups.values():
        if grp.size < 1:
            yield f"group {grp.name}: size {grp.size} must be >= 1"
        for p, v in grp.params.items():
            if v.shape != (grp.size,):
                yield f"group {grp.name}: parameter {p!r} has shape {v.shape}, expected ({grp.size},)"


def _rule_programs(g: Graph, **_) -> Iterator[str]:
    for grp in g.groups.values():
        known = set(grp.registers) | set(grp.ports) | set(grp.params)
        for k, ins in enumerate(grp.program):
            where = f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out})"
            spec = OPS.get(ins.op)
            if spec is None:
                yield f"{where}: unknown op {ins.op!r}"
                known.add(ins.out)
                continue
            if len(ins.args) != spec.n_args:
                yield f"{where}: takes {spec.n_args} argument(s), got {len(ins.args)}"
            imm = ins.imm_dict
            for key in spec.imm:
                if key not in imm:
                    yield f"{where}: missing immediate {key!r}"
            for why in imm_problems(spec, imm, grp.tables):
                yield f"{where}: {why}"
            for a in ins.args:
                if a not in known:
                    yield f"{where}: argument {a!r} is not a register, port, parameter or earlier result"
            known.add(ins.out)
        if grp.output not in known:
            yield f"group {grp.name}: output {grp.output!r} is never computed"
        if grp.send not in Send.values():
            yield f"group {grp.name}: send mode {grp.send!r} must be 'every' or 'delta'"


def _rule_widths(g: Graph, msg_bits: int = LIMITS["msg_bits"], state_bits: int = LIMITS["state_bits"],
                 acc_bits: int = LIMITS["acc_bits"], **_) -> Iterator[str]:
    """Every interval of the range analysis (``mflc.ir.range_analysis.analyse``: what each program, port and
    synapse group can actually compute) against the width that must hold it."""
    found = analyse(g, msg_bits)
    for grp in sorted(g.groups.values(), key=lambda x: x.stage if isinstance(x.stage, int) else 0):
        if not 1 <= grp.out_bits <= msg_bits:
            yield f"group {grp.name}: message width {grp.out_bits} bits exceeds the graded-spike limit of {msg_bits}"
        for r, b in grp.registers.items():
            if not 1 <= b <= state_bits:
                yield f"group {grp.name}: register {r!r} is {b} bits, above the neuron-state limit of {state_bits}"
        for p, v in list(grp.params.items()) + list(grp.tables.items()):
            if v.size and (int(v.min()) < fp.smin(state_bits) or int(v.max()) > fp.smax(state_bits)):
                yield f"group {grp.name}: constant {p!r} needs more than {state_bits} bits"
        yield from _program_widths(grp, found.groups[grp.name], state_bits)
    for grp in g.groups.values():
        if grp.send == Send.DELTA and 1 <= grp.out_bits <= msg_bits:
            d = changes(found.message(grp.name))
            if range_bits(d) > msg_bits:
                yield (f"group {grp.name}: delta messages (changes of values in {fmt_range(found.message(grp.name))}) "
                       f"may need {range_bits(d)} bits, above the graded-spike limit of {msg_bits}")
    for s in g.synapses.values():
        if s.name in found.synapses:
            peak = found.synapses[s.name].peak
            width = min(int(s.acc_bits), acc_bits)       # the synapse's declared accumulator, within the hardware's
            if peak > fp.smax(width):
                yield (f"synapse {s.name}: worst-case accumulation {peak} into {s.dst}.{s.port} overflows the "
                       f"{width}-bit accumulator" + ("" if width == s.acc_bits else " (accumulator_bits)"))


def _program_widths(grp, rec, state_bits: int) -> Iterator[str]:
    """One group's instructions: each op's domain, each result against the state width and its register,
    the output against the message width."""
    for k, (ins, step) in enumerate(zip(grp.program, rec.steps)):
        if step.args is None:
            continue                              # malformed: reported by _rule_programs
        for why in OPS[ins.op].domain(list(step.args), ins.imm_dict, grp.tables):   # the op's preconditions
            yield f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out}): {why.format(*map(repr, ins.args))}"
        w = range_bits(step.result)
        if w > state_bits:
            yield f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out}) result may need {w} bits, above {state_bits}"
        if ins.out in grp.registers and w > grp.registers[ins.out]:
            yield f"group {grp.name}: register {ins.out!r} is {grp.registers[ins.out]} bits but {ins.op} may write {w}"
    if rec.output is not None and range_bits(rec.output) > grp.out_bits:
        yield (f"group {grp.name}: output {grp.output!r} may need {range_bits(rec.output)} bits, "
               f"more than its {grp.out_bits}-bit messages")


def _rule_timing(g: Graph, max_delay: int = LIMITS["max_delay"], **_) -> Iterator[str]:
    for s in g.synapses.values():
        if s.src not in g.groups or s.dst not in g.groups:
            continue
        want = g.groups[s.dst].stage - g.groups[s.src].stage - 1
        if s.delay != want:
            yield (f"synapse {s.name}: delay {s.delay} but stages {s.src}={g.groups[s.src].stage} -> "
                   f"{s.dst}={g.groups[s.dst].stage} need {want}")
        if s.delay < 0:
            yield f"synapse {s.name}: negative delay {s.delay} (destination runs before its source)"
        if s.delay > max_delay:
            yield f"synapse {s.name}: delay {s.delay} exceeds the limit of {max_delay} steps (max_synapse_delay)"
        if g.groups[s.src].send == Send.DELTA and s.weight_exp != 0:
            yield f"synapse {s.name}: delta sender {s.src} needs weight_exp 0 for exact reconstruction, has {s.weight_exp}"


RULES = [_rule_references, _rule_shapes, _rule_programs, _rule_widths, _rule_timing]


def problems(g: Graph, **limits) -> list[str]:
    """Every problem of ``g``; ``limits``: the hardware figures to check against (module docstring)."""
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise TypeError(f"unknown validator limit(s) {sorted(unknown)}; known: {', '.join(LIMITS)}")
    out: list[str] = []
    for rule in RULES:
        out.extend(rule(g, **limits))
    return out


def validate(g: Graph, **limits) -> None:
    """Raise IRValidationError listing every problem of the graph, or return if it is sound."""
    found = problems(g, **limits)
    if found:
        raise IRValidationError(found)
