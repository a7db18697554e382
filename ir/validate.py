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
from .ops import OPS, Range, bits_range, fmt_range, imm_problems, range_bits

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


def _csr_ok(s) -> bool:
    """Structurally sound CSR (checked by _rule_shapes); other rules skip unsound synapses. Packed groups
    are sound by construction (their codes are checked when they are read)."""
    return isinstance(s, PackedSynapseGroup) or (s.indptr.shape == (s.shape[0] + 1,) and s.indices.size == s.values.size
            and (s.indptr.size == 0 or (s.indptr[0] == 0 and s.indptr[-1] == s.values.size))
            and bool(np.all(np.diff(s.indptr) >= 0)))


def _incoming(g: Graph) -> dict[tuple[str, str], list]:
    """(destination group, port) -> its synapse groups, built once per check instead of once per port."""
    by_port: dict[tuple[str, str], list] = {}
    for s in g.synapses.values():
        by_port.setdefault((s.dst, s.port), []).append(s)
    return by_port


def _pos_neg(s, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per destination row, the sum of the positive and of the negative weights. A row's worst cases over
    inputs in [lo, hi] are then hi·P + lo·N and lo·P + hi·N, exactly; one pass over the weights per check."""
    if cache is not None and s.name in cache:
        return cache[s.name]
    pn = s.pos_neg_sums()             # from the 2-bit codes for a packed group, without a CSR copy
    if cache is not None:
        cache[s.name] = pn
    return pn


def _port_range(g: Graph, grp_name: str, port: str, out_range: dict[str, Range],
                incoming: dict[tuple[str, str], list] | None = None, sums: dict | None = None) -> Range:
    """Worst-case interval of a port's accumulated value over all its incoming synapses (and host input)."""
    lo = hi = 0
    cands = (incoming if incoming is not None else _incoming(g)).get((grp_name, port), [])
    for s in cands:
        if s.src in out_range and _csr_ok(s):
            slo, shi = out_range[s.src]
            pos, neg = _pos_neg(s, sums)
            row_hi, row_lo = pos * shi + neg * slo, pos * slo + neg * shi
            shift = s.weight_exp
            lo += int(fp.shr_floor(int(row_lo.min()), -shift)) if row_lo.size else 0
            hi += int(fp.shr_floor(int(row_hi.max()), -shift)) if row_hi.size else 0
    for i in g.inputs:
        if i.group == grp_name and i.port == port and i.table in g.host_tensors:
            t = g.host_tensors[i.table]
            if t.size:
                lo, hi = lo + int(min(t.min(), 0)), hi + int(max(t.max(), 0))
    return lo, hi


def _accumulator_range(g: Graph, s, out_range: dict[str, Range], sums: dict | None = None) -> int:
    """Largest |partial sum| one synapse group can produce before its shift (for the accumulator check)."""
    slo, shi = out_range[s.src]
    peak = max(abs(slo), abs(shi))
    pos, neg = _pos_neg(s, sums)
    row_abs = pos - neg
    return int(row_abs.max()) * peak if row_abs.size else 0


def _rule_widths(g: Graph, msg_bits: int = LIMITS["msg_bits"], state_bits: int = LIMITS["state_bits"],
                 acc_bits: int = LIMITS["acc_bits"], **_) -> Iterator[str]:
    """Interval analysis: each group's messages span at most what its program can compute (within the
    declared width), found in stage order so every receiver sees its senders' bounds; a sender not yet
    analysed (a timing error, reported by _rule_timing) counts with its whole declared width."""
    out_range = {n: bits_range(grp.out_bits) for n, grp in g.groups.items()}
    incoming, sums = _incoming(g), {}
    for grp in sorted(g.groups.values(), key=lambda x: x.stage if isinstance(x.stage, int) else 0):
        if not 1 <= grp.out_bits <= msg_bits:
            yield f"group {grp.name}: message width {grp.out_bits} bits exceeds the graded-spike limit of {msg_bits}"
        for r, b in grp.registers.items():
            if not 1 <= b <= state_bits:
                yield f"group {grp.name}: register {r!r} is {b} bits, above the neuron-state limit of {state_bits}"
        for p, v in list(grp.params.items()) + list(grp.tables.items()):
            if v.size and (int(v.min()) < fp.smin(state_bits) or int(v.max()) > fp.smax(state_bits)):
                yield f"group {grp.name}: constant {p!r} needs more than {state_bits} bits"
        rng: dict[str, Range] = {r: bits_range(b) for r, b in grp.registers.items()}
        unsure: set[str] = set()
        for p in grp.ports:
            rng[p] = _port_range(g, grp.name, p, out_range, incoming, sums)
        for p, v in grp.params.items():
            rng[p] = (int(v.min()), int(v.max())) if v.size else (0, 0)
        for k, ins in enumerate(grp.program):
            spec = OPS.get(ins.op)
            imm = ins.imm_dict
            if (spec is None or len(ins.args) != spec.n_args or any(a not in rng for a in ins.args)
                    or any(key not in imm for key in spec.imm) or imm_problems(spec, imm, grp.tables)):
                rng[ins.out] = bits_range(msg_bits)   # reported by _rule_programs
                unsure.add(ins.out)
                continue
            arg_ranges = [rng[a] for a in ins.args]
            for why in spec.domain(arg_ranges, imm, grp.tables):   # preconditions of the op's definition
                yield f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out}): {why.format(*map(repr, ins.args))}"
            r = spec.range(arg_ranges, imm, grp.tables)
            w = range_bits(r)
            if w > state_bits:
                yield f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out}) result may need {w} bits, above {state_bits}"
            if ins.out in grp.registers and w > grp.registers[ins.out]:
                yield f"group {grp.name}: register {ins.out!r} is {grp.registers[ins.out]} bits but {ins.op} may write {w}"
            rng[ins.out] = r
        if grp.output in unsure:
            pass                                  # its program is broken; no bound to report
        elif grp.output in rng and range_bits(rng[grp.output]) > grp.out_bits:
            yield (f"group {grp.name}: output {grp.output!r} may need {range_bits(rng[grp.output])} bits, "
                   f"more than its {grp.out_bits}-bit messages")
        elif grp.output in rng and 1 <= grp.out_bits:
            lo, hi = out_range[grp.name]
            out_range[grp.name] = max(lo, rng[grp.output][0]), min(hi, rng[grp.output][1])
    for grp in g.groups.values():
        if grp.send == Send.DELTA and 1 <= grp.out_bits <= msg_bits:
            lo, hi = out_range[grp.name]
            if range_bits((lo - hi, hi - lo)) > msg_bits:
                yield (f"group {grp.name}: delta messages (changes of values in {fmt_range((lo, hi))}) may need "
                       f"{range_bits((lo - hi, hi - lo))} bits, above the graded-spike limit of {msg_bits}")
    # what a synapse carries: the sender's values, or for a delta sender their changes
    carried = {n: ((r[0] - r[1], r[1] - r[0]) if g.groups[n].send == Send.DELTA else r) for n, r in out_range.items()}
    for s in g.synapses.values():
        if s.dst in g.groups and s.src in g.groups and _csr_ok(s):
            peak = _accumulator_range(g, s, carried, sums)
            width = min(int(s.acc_bits), acc_bits)       # the synapse's declared accumulator, within the hardware's
            if peak > fp.smax(width):
                yield (f"synapse {s.name}: worst-case accumulation {peak} into {s.dst}.{s.port} overflows the "
                       f"{width}-bit accumulator" + ("" if width == s.acc_bits else " (accumulator_bits)"))


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
