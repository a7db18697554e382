"""The static range analysis of an IR graph: the one place where an interval of a message, a port or a
synapse group's accumulation is computed.

Every proof that a value fits a width takes its intervals from here, so two proofs of the same property
cannot disagree: the validator (``ir/validate.py``) checks registers, messages and accumulators against
``analyse``; the Lava back-end proves its int32 accumulator from the same per-synapse records; the
partitioner and its checker bound partial sums and split outputs with ``accumulation`` and ``analyse``; the
quantizer picks RMSNorm's square shift with ``norm_square_shift``, which asks the square op's range and
``partial_peak`` what the validator will later ask.

Ranges are closed intervals of Python ints (``mflc.ir.ops.Range``), never wrapped: the analysis cannot
overflow whatever the graph holds. docs/ir.md describes what is proven.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import fixedpoint as fp
from .graph import Graph, PackedSynapseGroup
from .hardware import DEFAULT as _HW
from .hardware import weight_range
from .modes import Send
from .ops import OPS, Range, bits_range, imm_problems, range_bits

_INT64_SAFE = 1 << 62


# ---- the primitives: one synapse group's accumulation ------------------------------------------------------
def accumulation(pos: np.ndarray, neg: np.ndarray, carried: Range) -> Range:
    """Interval of Σ_j w_ij·m_j over every row i and every message m_j in ``carried``, exactly: a row's
    extremes are hi·P + lo·N and lo·P + hi·N (P, N: the sums of its positive and negative weights).
    (0, 0) for a group without rows."""
    if not len(pos):
        return 0, 0
    lo, hi = int(carried[0]), int(carried[1])
    if max(abs(lo), abs(hi)) * max(int(pos.max()), -int(neg.min()), 1) >= _INT64_SAFE // 2:
        pos, neg = pos.astype(object), neg.astype(object)     # exact Python ints beyond int64
    return int((pos * lo + neg * hi).min()), int((pos * hi + neg * lo).max())


def partial_peak(row_abs_max: int, carried: Range) -> int:
    """Largest |partial sum| a row whose |weights| add up to at most ``row_abs_max`` can reach in any order
    of accumulation, for messages in ``carried``: what a hardware accumulator must hold at every moment."""
    return int(row_abs_max) * max(abs(int(carried[0])), abs(int(carried[1])))


def shifted(r: Range, weight_exp: int) -> Range:
    """An accumulation interval after the synapse's shift (``fp.shr_floor``, monotone): what reaches the port."""
    return int(fp.shr_floor(r[0], -weight_exp)), int(fp.shr_floor(r[1], -weight_exp))


def changes(r: Range) -> Range:
    """What a delta sender's messages span when its values span ``r``: any difference of two values."""
    return r[0] - r[1], r[1] - r[0]


def norm_square_shift(in_bits: int, n: int, msg_bits: int = fp.MSG_BITS_MAX, acc_bits: int = fp.ACC_BITS) -> int:
    """The smallest even shift k such that the squares of a signed ``in_bits`` value, rounded to x²/2^k,
    travel in a graded spike and the sum of n of them cannot overflow the accumulator: the bound the
    validator proves for the lowering's square group and its weight-1 reduction (the square op's range,
    then ``partial_peak``). 0 for 8-bit inputs up to n = 2^17 - 1."""
    x = bits_range(in_bits)
    k = 0
    while True:
        sq = OPS["square_shr"].range([x], {"shift": k}, {}) if k else OPS["square"].range([x], {}, {})
        if range_bits(sq) <= msg_bits and partial_peak(n, sq) <= fp.smax(acc_bits):
            return k
        k += 2


# ---- the analysis of a whole graph ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SynapseRange:
    """What one synapse group is proven to carry and accumulate."""

    carried: Range          # the sender's messages: its values, or their changes for a delta sender
    acc: Range              # Σ w·m before the weight_exp shift, over every row and every carried message
    peak: int               # largest |partial sum| in any order of accumulation: max_row Σ|w| · max|m|
    port: Range             # the sum of the sender's values after the shift: what the group adds to its port


@dataclass(frozen=True)
class Step:
    """One instruction of a neuron program: its arguments' intervals and its result's (``args`` None: the
    instruction is malformed, its result counts as a whole message; the validator says why)."""

    args: tuple | None
    result: Range


@dataclass
class GroupRanges:
    """What one neuron group is proven to compute."""

    ports: dict[str, Range]
    steps: list[Step]
    output: Range | None     # the program's output (None: computed by a malformed instruction, or never)
    message: Range           # what its messages span: the declared width, narrowed to a sound output


@dataclass
class RangeAnalysis:
    """Per-group, per-port and per-synapse intervals of a graph (``analyse``)."""

    groups: dict[str, GroupRanges] = field(default_factory=dict)
    synapses: dict[str, SynapseRange] = field(default_factory=dict)

    def port(self, group: str, port: str) -> Range:
        """The interval of a port's accumulated value (all its synapse groups and host input)."""
        return self.groups[group].ports[port]

    def message(self, group: str) -> Range:
        """The interval of a group's message values."""
        return self.groups[group].message


def sound_csr(s) -> bool:
    """Structurally sound CSR (the validator's shape rule says what is wrong otherwise); the analysis skips
    unsound synapses. Packed groups are sound by construction (their codes are checked when read)."""
    if isinstance(s, PackedSynapseGroup):
        return True
    if s.virtual:
        return s.indptr.shape == (s.shape[0] + 1,)
    return (s.indptr.shape == (s.shape[0] + 1,) and s.indices.size == s.values.size
            and (s.indptr.size == 0 or (s.indptr[0] == 0 and s.indptr[-1] == s.values.size))
            and bool(np.all(np.diff(s.indptr) >= 0)))


def _pos_neg(s) -> tuple[np.ndarray, np.ndarray]:
    """Per destination row, the sums of the positive and of the negative weights. A virtual group (a
    skeleton's) has only row counts: each of its weights counts as its whole weight range on either side."""
    if not s.virtual:
        return s.pos_neg_sums()                 # from the 2-bit codes for a packed group, without a CSR copy
    wr = weight_range(s)
    wlo, whi = wr if wr is not None else bits_range(_HW.weight_bits)
    c = s.row_counts().astype(np.int64)
    top = max(abs(wlo), abs(whi))              # signs unknown per synapse: a row may hold any mix
    return c * top, -c * top


def synapse_range(s, values: Range, carried: Range) -> SynapseRange:
    """One synapse group's record, for sender values in ``values`` and messages in ``carried``."""
    pos, neg = _pos_neg(s)
    row_abs = int((pos - neg).max()) if len(pos) else 0
    return SynapseRange(tuple(carried), accumulation(pos, neg, carried), partial_peak(row_abs, carried),
                        shifted(accumulation(pos, neg, values), s.weight_exp))


def _group(grp, port_of, msg_bits: int) -> GroupRanges:
    """Interval analysis of one group's program, given its ports' intervals (``port_of(port)``)."""
    rng: dict[str, Range] = {r: bits_range(b) for r, b in grp.registers.items()}
    ports = {p: port_of(p) for p in grp.ports}
    rng.update(ports)
    for p, v in grp.params.items():
        rng[p] = (int(v.min()), int(v.max())) if v.size else (0, 0)
    steps, unsure = [], set()
    for ins in grp.program:
        spec = OPS.get(ins.op)
        imm = ins.imm_dict
        if (spec is None or len(ins.args) != spec.n_args or any(a not in rng for a in ins.args)
                or any(key not in imm for key in spec.imm) or imm_problems(spec, imm, grp.tables)):
            rng[ins.out] = bits_range(msg_bits)
            unsure.add(ins.out)
            steps.append(Step(None, rng[ins.out]))
            continue
        unsure.discard(ins.out)
        args = tuple(rng[a] for a in ins.args)
        rng[ins.out] = spec.range(list(args), imm, grp.tables)
        steps.append(Step(args, rng[ins.out]))
    output = rng.get(grp.output) if grp.output not in unsure else None
    message = bits_range(grp.out_bits) if grp.out_bits >= 1 else (0, 0)
    if output is not None and grp.out_bits >= 1 and range_bits(output) <= grp.out_bits:
        message = max(message[0], output[0]), min(message[1], output[1])
    return GroupRanges(ports, steps, output, message)


def analyse(g: Graph, msg_bits: int = _HW.max_msg_bits) -> RangeAnalysis:
    """The range analysis of ``g``: groups in stage order, so that every receiver sees its senders' proven
    messages (a sender not yet analysed, a timing error, counts with its whole declared width); a port sums
    its synapse groups' shifted accumulations and its host input. ``msg_bits``: the interval a malformed
    instruction's result counts as. Synapses with unknown or unsound ends are left out (the validator
    names them)."""
    out = RangeAnalysis()
    message = {n: (bits_range(x.out_bits) if x.out_bits >= 1 else (0, 0)) for n, x in g.groups.items()}
    incoming: dict[tuple[str, str], list] = {}
    for s in g.synapses.values():
        incoming.setdefault((s.dst, s.port), []).append(s)
    hosts: dict[tuple[str, str], list] = {}
    for i in g.inputs:
        if i.table in g.host_tensors:
            hosts.setdefault((i.group, i.port), []).append(g.host_tensors[i.table])

    def port_of(grp_name: str, port: str) -> Range:
        lo = hi = 0
        for s in incoming.get((grp_name, port), []):
            if s.src in g.groups and sound_csr(s):
                vals = message[s.src]
                carried = changes(vals) if g.groups[s.src].send == Send.DELTA else vals
                rec = out.synapses[s.name] = synapse_range(s, vals, carried)
                lo, hi = lo + rec.port[0], hi + rec.port[1]
        for t in hosts.get((grp_name, port), []):
            if t.size:
                lo, hi = lo + int(min(t.min(), 0)), hi + int(max(t.max(), 0))
        return lo, hi

    for grp in sorted(g.groups.values(), key=lambda x: x.stage if isinstance(x.stage, int) else 0):
        rec = out.groups[grp.name] = _group(grp, lambda p, n=grp.name: port_of(n, p), msg_bits)
        message[grp.name] = rec.message
    for s in g.synapses.values():          # into a port that does not exist (the validator says so): still bounded
        if s.name not in out.synapses and s.src in g.groups and s.dst in g.groups and sound_csr(s):
            vals = message[s.src]
            out.synapses[s.name] = synapse_range(s, vals, changes(vals) if g.groups[s.src].send == Send.DELTA else vals)
    return out
