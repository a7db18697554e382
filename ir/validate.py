"""IR validation: every rule is a small function that yields problems; all are reported at once.

A new rule is one function added to ``RULES``. Problems name the group or synapse, the figure and the
limit, so a user can see what to change.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from . import fixedpoint as fp
from .errors import IRValidationError
from .graph import Graph
from .ops import INT64_MAX, INT64_MIN, OPS, Range, bits_range, fmt_range, imm_problems, is_int, range_bits

# Loihi 2 synaptic delay: programmable per synapse; the largest value is not published for the chip.
# Lava's DelayDense has no stated cap; we assume 62 steps (6-bit field). Confidence: low. Overridable.
SYNAPSE_DELAY_MAX = 62


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


def _rule_shapes(g: Graph, **_) -> Iterator[str]:
    for s in g.synapses.values():
        if s.src in g.groups and s.dst in g.groups:
            want = (g.groups[s.dst].size, g.groups[s.src].size)
            if tuple(s.shape) != want:
                yield f"synapse {s.name}: weight shape {tuple(s.shape)} does not match (dst {s.dst} size, src {s.src} size) = {want}"
        if s.indptr.shape != (s.shape[0] + 1,) or (s.indptr.size and (s.indptr[0] != 0 or s.indptr[-1] != s.values.size)):
            yield f"synapse {s.name}: CSR row pointer is inconsistent with {s.values.size} stored weights"
        elif np.any(np.diff(s.indptr) < 0):
            yield f"synapse {s.name}: CSR row pointer decreases"
        if s.indices.size != s.values.size:
            yield f"synapse {s.name}: {s.indices.size} indices but {s.values.size} weights"
        elif s.indices.size and (s.indices.min() < 0 or s.indices.max() >= s.shape[1]):
            yield f"synapse {s.name}: source index out of range [0, {s.shape[1]})"
        lim = 1 << (fp.WEIGHT_BITS_MAX - 1)
        if s.values.size and (int(s.values.min()) < -lim or int(s.values.max()) > lim - 1):
            yield f"synapse {s.name}: weight outside the {fp.WEIGHT_BITS_MAX}-bit range"
    for grp in g.groups.values():
        if grp.size < 1:
            yield f"group {grp.name}: size {grp.size} must be >= 1"
        for p, v in grp.params.items():
            if v.shape != (grp.size,):
                yield f"group {grp.name}: parameter {p!r} has shape {v.shape}, expected ({grp.size},)"


def _imm(ins) -> dict | None:
    """An instruction's immediates as a dict, or None if the instruction is malformed (so rules skip it)."""
    if not (isinstance(getattr(ins, "op", None), str) and isinstance(getattr(ins, "out", None), str)
            and isinstance(getattr(ins, "args", None), tuple) and all(isinstance(a, str) for a in ins.args)
            and isinstance(getattr(ins, "imm", None), tuple)
            and all(isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in ins.imm)):
        return None
    return dict(ins.imm)


def _rule_programs(g: Graph, **_) -> Iterator[str]:
    for grp in g.groups.values():
        known = set(grp.registers) | set(grp.ports) | set(grp.params)
        for k, ins in enumerate(grp.program):
            imm = _imm(ins)
            if imm is None:
                yield f"group {grp.name}: instruction {k} is malformed ({ins!r}): op, out and args must be strings, imm (name, value) pairs"
                continue
            where = f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out})"
            spec = OPS.get(ins.op)
            if spec is None:
                yield f"{where}: unknown op {ins.op!r}"
                known.add(ins.out)
                continue
            if len(ins.args) != spec.n_args:
                yield f"{where}: takes {spec.n_args} argument(s), got {len(ins.args)}"
            for key in spec.imm:
                if key not in imm:
                    yield f"{where}: missing immediate {key!r}"
            for p in imm_problems(spec, imm, grp.tables):
                yield f"{where}: {p}"
            for a in ins.args:
                if a not in known:
                    yield f"{where}: argument {a!r} is not a register, port, parameter or earlier result"
            if ins.out in grp.params:
                yield f"{where}: writes parameter {ins.out!r} (parameters are constants)"
            known.add(ins.out)
        if grp.output not in known:
            yield f"group {grp.name}: output {grp.output!r} is never computed"
        if grp.send not in ("every", "delta"):
            yield f"group {grp.name}: send mode {grp.send!r} must be 'every' or 'delta'"


def _csr_ok(s) -> bool:
    """Structurally sound CSR (checked by _rule_shapes); other rules skip unsound synapses."""
    return (not s.virtual and s.indptr.shape == (s.shape[0] + 1,) and s.indices.size == s.values.size
            and (s.indptr.size == 0 or (s.indptr[0] == 0 and s.indptr[-1] == s.values.size))
            and bool(np.all(np.diff(s.indptr) >= 0)) and np.asarray(s.values).dtype.kind in "iu")


def _exp_ok(s) -> bool:
    return is_int(s.weight_exp) and abs(int(s.weight_exp)) <= fp.SHIFT_MAX


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
    v = s.values.astype(np.int64)     # integer weights; row_sums accumulates them in int64
    pn = s.row_sums(np.maximum(v, 0)), s.row_sums(np.minimum(v, 0))
    if cache is not None:
        cache[s.name] = pn
    return pn


def _shr_floor_int(x: int, n: int) -> int:
    """fp.shr_floor on one Python int, exactly."""
    return x << (-n) if n <= 0 else x >> n


def _row_extremes(pos: np.ndarray, neg: np.ndarray, slo: int, shi: int) -> Range:
    """(min over rows of the smallest sum, max over rows of the largest) for inputs in [slo, shi], exactly:
    in int64 when no product can overflow it, else in Python ints."""
    peak = max(abs(slo), abs(shi))
    if int(max(pos.max(), -neg.min())) * peak >= 1 << 61:
        pos, neg = pos.astype(object), neg.astype(object)
    row_hi, row_lo = pos * shi + neg * slo, pos * slo + neg * shi
    return int(row_lo.min()), int(row_hi.max())


def _port_range(g: Graph, grp_name: str, port: str, out_range: dict[str, Range],
                incoming: dict[tuple[str, str], list] | None = None, sums: dict | None = None) -> Range:
    """Worst-case interval of a port's accumulated value over all its incoming synapses (and host input)."""
    lo = hi = 0
    cands = (incoming if incoming is not None else _incoming(g)).get((grp_name, port), [])
    for s in cands:
        if s.src in out_range and _csr_ok(s) and _exp_ok(s) and s.shape[0]:
            pos, neg = _pos_neg(s, sums)
            row_lo, row_hi = _row_extremes(pos, neg, *out_range[s.src])
            lo += _shr_floor_int(row_lo, -int(s.weight_exp))
            hi += _shr_floor_int(row_hi, -int(s.weight_exp))
    for i in g.inputs:
        if i.group == grp_name and i.port == port and i.table in g.host_tensors:
            t = np.asarray(g.host_tensors[i.table])
            if t.size and t.dtype.kind in "iu":
                lo, hi = lo + int(min(t.min(), 0)), hi + int(max(t.max(), 0))
    return lo, hi


def _accumulator_range(g: Graph, s, out_range: dict[str, Range], sums: dict | None = None) -> int:
    """Largest |partial sum| one synapse group can produce before its shift (for the accumulator check)."""
    slo, shi = out_range[s.src]
    peak = max(abs(slo), abs(shi))
    pos, neg = _pos_neg(s, sums)
    row_abs = pos - neg
    return int(row_abs.max()) * peak if row_abs.size else 0


def _int_array(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind in "iu"


def _stage_key(name: str, g: Graph):
    st = g.groups[name].stage
    return int(st) if is_int(st) else 0


def _rule_widths(g: Graph, _sink: dict | None = None, **_) -> Iterator[str]:
    """Range analysis: intervals from the host tables and message widths through synapses (row sums) and
    every neuron program, in stage order. Every result, register and message must fit its width and every
    op's arguments must lie in its domain (ir/ops.py); docs/ir.md describes the analysis."""
    def declared(grp) -> Range:
        ok = is_int(grp.out_bits) and 1 <= grp.out_bits <= fp.MSG_BITS_MAX
        return bits_range(int(grp.out_bits) if ok else fp.MSG_BITS_MAX)

    # a group's message range: its declared width until the group is analysed (in stage order), then the
    # proven range of its output (which lies within that width, or a problem is reported)
    out_range = {n: declared(grp) for n, grp in g.groups.items()}
    made_by: dict[str, str] = {}          # group -> which instruction computes its output (for messages)
    # Values downstream of a reported problem (an unknown op, bad immediates, an argument outside its
    # domain, a result too wide) are unknown: nothing derived from them is checked, so one fault gives one
    # problem, not a cascade. The graph is already rejected, so this costs no soundness.
    unknown_out: set[str] = set()
    incoming, sums = _incoming(g), {}
    state_range = bits_range(fp.STATE_BITS_MAX)
    for name in sorted(g.groups, key=lambda n: _stage_key(n, g)):
        grp = g.groups[name]
        if not (is_int(grp.out_bits) and 1 <= grp.out_bits <= fp.MSG_BITS_MAX):
            yield f"group {grp.name}: message width {grp.out_bits} bits exceeds the graded-spike limit of {fp.MSG_BITS_MAX}"
        rng: dict[str, Range] = {}
        unknown: set[str] = set()
        origin: dict[str, str] = {}       # value name -> where it comes from (for domain messages)
        for r, b in grp.registers.items():
            if not (is_int(b) and 1 <= b <= fp.STATE_BITS_MAX):
                yield f"group {grp.name}: register {r!r} is {b} bits, above the neuron-state limit of {fp.STATE_BITS_MAX}"
                rng[r] = state_range
            else:
                rng[r] = bits_range(int(b))
            origin[r] = f"register {r!r} ({grp.registers[r]} bits)"
        for p, v in list(grp.params.items()) + list(grp.tables.items()):
            if not _int_array(v):
                yield f"group {grp.name}: constant {p!r} is {type(v).__name__} {getattr(v, 'dtype', '')}, must be an integer array"
            elif v.size and (int(v.min()) < fp.smin(fp.STATE_BITS_MAX) or int(v.max()) > fp.smax(fp.STATE_BITS_MAX)):
                yield f"group {grp.name}: constant {p!r} needs more than {fp.STATE_BITS_MAX} bits"
        for p in grp.ports:
            lo, hi = _port_range(g, grp.name, p, out_range, incoming, sums)
            rng[p] = min(lo, 0), max(hi, 0)       # a port that receives nothing reads 0
            feeders = sorted({s.src for s in incoming.get((grp.name, p), []) if s.src in g.groups})
            if any(f in unknown_out for f in feeders):
                unknown.add(p)
            origin[p] = "port " + repr(p) + (" (sums " + "; ".join(f"{f}'s output{made_by.get(f, '')}" for f in feeders) + ")"
                                             if feeders else "")
            if not (INT64_MIN <= rng[p][0] and rng[p][1] <= INT64_MAX):
                yield f"group {grp.name}: port {p!r} may accumulate {fmt_range(rng[p])}, beyond int64"
        for p, v in grp.params.items():
            rng[p] = (int(v.min()), int(v.max())) if _int_array(v) and v.size else (0, 0)
            origin[p] = f"parameter {p!r}"
        for k, ins in enumerate(grp.program):
            imm = _imm(ins)
            if imm is None:
                continue
            spec = OPS.get(ins.op)
            where = f"group {grp.name}: instruction {k} ({ins.op} -> {ins.out})"
            rng[ins.out], origin[ins.out] = state_range, f"{ins.out!r} (instruction {k}, {ins.op})"
            unknown.add(ins.out)          # until proven below
            if (spec is None or len(ins.args) != spec.n_args or any(a not in rng or a in unknown for a in ins.args)
                    or any(key not in imm for key in spec.imm) or imm_problems(spec, imm, grp.tables)):
                continue                  # reported by _rule_programs or upstream
            args = [rng[a] for a in ins.args]
            bad = spec.domain(args, imm, grp.tables)
            for phrase in bad:
                used = [i for i in range(len(ins.args)) if "{%d}" % i in phrase]
                text = phrase.format(*(repr(a) for a in ins.args))
                src = "; ".join(origin[ins.args[i]] for i in used if ins.args[i] in origin)
                yield f"{where}: {text}" + (f" [{src}]" if src else "")
            if bad:
                continue                  # outside the domain the result is unknown; already a problem
            r = spec.range(args, imm, grp.tables)
            w = range_bits(r)
            if w > fp.STATE_BITS_MAX:
                yield f"{where}: result may span {fmt_range(r)}, needs {w} bits, above {fp.STATE_BITS_MAX}"
                continue
            if ins.out in grp.registers and is_int(grp.registers[ins.out]) and w > grp.registers[ins.out]:
                yield (f"group {grp.name}: register {ins.out!r} is {grp.registers[ins.out]} bits but {ins.op} "
                       f"(instruction {k}) may write {fmt_range(r)}, {w} bits")
            rng[ins.out] = r
            unknown.discard(ins.out)
            if ins.out == grp.output:
                made_by[name] = f" (instruction {k}, {ins.op} -> {ins.out})"
        if grp.output in unknown or grp.output not in rng:
            unknown_out.add(name)
        else:
            r, dec = rng[grp.output], declared(grp)
            if range_bits(r) > range_bits(dec):
                yield (f"group {grp.name}: output {grp.output!r} may need {range_bits(r)} bits ({fmt_range(r)}), "
                       f"more than its {range_bits(dec)}-bit messages")
            else:
                out_range[name] = r
    if _sink is not None:
        _sink.update(out_range)
    for s in g.synapses.values():
        if not (is_int(s.acc_bits) and 1 <= s.acc_bits <= fp.ACC_BITS):
            yield f"synapse {s.name}: accumulator of {s.acc_bits} bits, the hardware's (and the engine's) is at most {fp.ACC_BITS}"
            continue
        if not _exp_ok(s):
            yield f"synapse {s.name}: weight_exp {s.weight_exp!r} must be an integer in [-{fp.SHIFT_MAX}, {fp.SHIFT_MAX}]"
            continue
        if s.dst in g.groups and s.src in g.groups and _csr_ok(s):
            lo, hi = out_range[s.src]
            if g.groups[s.src].send == "delta":      # a delta message is the change of a value in [lo, hi]
                lo, hi = lo - hi, hi - lo
            peak = _accumulator_range(g, s, {s.src: (lo, hi)}, sums)
            if peak > fp.smax(s.acc_bits):
                yield (f"synapse {s.name}: worst-case accumulation {peak} into {s.dst}.{s.port} overflows the "
                       f"{s.acc_bits}-bit accumulator")


def output_ranges(g: Graph) -> dict[str, Range]:
    """The range analysis' proven interval of every group's output (its declared width where it proves
    nothing narrower, e.g. downstream of a problem)."""
    sink: dict[str, Range] = {}
    for _ in _rule_widths(g, _sink=sink):
        pass
    return sink


def _rule_timing(g: Graph, max_delay: int = SYNAPSE_DELAY_MAX, **_) -> Iterator[str]:
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
            yield f"synapse {s.name}: delay {s.delay} exceeds the limit of {max_delay} steps"
        if g.groups[s.src].send == "delta" and s.weight_exp != 0:
            yield f"synapse {s.name}: delta sender {s.src} needs weight_exp 0 for exact reconstruction, has {s.weight_exp}"


RULES = [_rule_references, _rule_shapes, _rule_programs, _rule_widths, _rule_timing]


def problems(g: Graph, **limits) -> list[str]:
    out: list[str] = []
    for rule in RULES:
        out.extend(rule(g, **limits))
    return out


def validate(g: Graph, **limits) -> None:
    found = problems(g, **limits)
    if found:
        raise IRValidationError(found)
