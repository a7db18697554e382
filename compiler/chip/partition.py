"""Partitioning: cut the IR into pieces that each fit one Loihi 2 core.

Two passes, each a function of (graph, hardware):

``split_fan_in`` rewrites the graph where one destination neuron's incoming synapses (its fan-in over all
its synapse groups) cannot fit a core's synaptic memory or input axons. The offending synapse group S
(src → dst.port) is replaced by K partial-sum groups ``S.name#part{k}`` — each a copy neuron receiving the
k-th block of S's source columns — and K identity synapses part_k → dst.port. The partial sums add exactly
in dst's accumulator because S has weight_exp 0 (a Lava Dense synapse shifts its sum once; with a zero
shift, Σ_k (Σ_{j∈block k} w·x) is the same integer as Σ_j w·x), and each partial sum travels as one
graded spike of at most 24 bits (K grows until every block's worst case fits, else a FitError). A
partial-sum group is one more pipeline step, so dst and every group at or after its old stage move one
stage later and every synapse delay is recomputed as stage(dst) − stage(src) − 1 (docs/layout.md).

``partition`` cuts every neuron group into contiguous neuron ranges, the largest that fit a core with the
same rows of all its incoming synapse groups (cumulative row costs + searchsorted, never a loop over
synapses), then packs the pieces of each layer first-fit decreasing so that small pieces share cores.
Groups are cut destinations first, so that the routing entries a source neuron needs (one per
destination core it reaches) are known when its group is cut. Pieces are what ``place`` puts on cores.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from mflc.ir.errors import FitError
from mflc.ir.graph import Graph, Instr, NeuronGroup, SynapseGroup
from mflc.ir.ops import bits_range, range_bits
from mflc.ir.range_analysis import accumulation, analyse, partial_peak

from .hardware import (KINDS, Costs, HardwareProfile, fanout_of, limits, outgoing, over_limits,
                       axon_list_units, row_bits, slice_bits, src_span, synapse_kind, weight_width, input_axons)


@dataclass
class Piece:
    """What one core holds: neuron slices (group, start, stop), the same rows of every synapse group into
    those neurons (synapse, row_start, row_stop), and its usage by kind."""

    neurons: list[tuple[str, int, int]]
    synapses: list[tuple[str, int, int]]
    usage: dict
    layer: object = None
    stage: int = 0
    meta: dict = field(default_factory=dict)


# ---- fan-in splitting ------------------------------------------------------------------------------------
@dataclass
class _Split:
    syn: SynapseGroup
    bounds: np.ndarray            # [K + 1] source column boundaries
    counts: np.ndarray            # [n_dst, K] non-zeros of each row in each block
    out_bits: list[int]           # worst-case partial-sum width of each block

    @property
    def k(self) -> int:
        """Number of column blocks (partial-sum parts) of the split."""
        return len(self.bounds) - 1

    def part(self, k: int) -> str:
        """Name of the k-th partial-sum group (the partition checker expects exactly this)."""
        return f"{self.syn.name}#part{k}"


def _src_size(graph: Graph, name: str, default: int) -> int:
    grp = graph.groups.get(name)
    return grp.size if grp is not None else default


def _row_fanin(syns: list[SynapseGroup], graph: Graph, hw: HardwareProfile) -> tuple[np.ndarray, np.ndarray]:
    """Per destination row: its synaptic memory (all its synapse groups), and the input axons a core holding
    it needs: a synapse group other than identity/broadcast counts its whole source span, as it does on any
    core holding more than a few of its rows (ternary rows share most columns), so that a fan-in whose
    sources exceed the core's axons is split rather than left one row per core."""
    n = syns[0].shape[0]
    bits = np.zeros(n, np.int64)
    ident: dict[str, bool] = {}
    other: dict[str, np.ndarray] = {}
    for s in syns:
        bits += row_bits(s, hw)
        kind = synapse_kind(s)
        if kind in ("identity", "broadcast"):
            ident[s.src] = True
        else:
            c0, c1 = src_span(s)
            other[s.src] = other.get(s.src, 0) + np.full(n, c1 - c0, np.int64)
    axons = np.zeros(n, np.int64)
    for src in set(ident) | set(other):
        sz = _src_size(graph, src, n)
        axons += np.minimum(sz, (1 if ident.get(src) else 0) + other.get(src, np.zeros(n, np.int64)))
    return bits, axons


def _block_counts(s: SynapseGroup, bounds: np.ndarray) -> np.ndarray:
    """[n_dst, K] non-zeros per row and column block (virtual groups: row counts divided proportionally)."""
    n_dst = s.shape[0]
    k = len(bounds) - 1
    c0, c1 = src_span(s)
    if s.virtual:
        c = s.row_counts().astype(np.int64)
        w = c1 - c0
        cum = (c[:, None] * (bounds[None, :] - c0)) // max(w, 1)
        return np.diff(cum, axis=1)
    rows = np.repeat(np.arange(n_dst), s.row_counts())
    blk = np.searchsorted(bounds, s.indices, side="right") - 1
    return np.bincount(rows * k + blk, minlength=n_dst * k).reshape(n_dst, k)


def _block_bits(s: SynapseGroup, bounds: np.ndarray, counts: np.ndarray, src_bits: int) -> list[int]:
    """Worst-case width of each block's partial sum over the sender's declared ``src_bits`` messages, by the
    range analysis' own accumulation bound (mflc.ir.range_analysis), block by block."""
    carried = bits_range(src_bits)
    k = len(bounds) - 1
    if s.virtual:                                  # ternary: |w| <= 1
        return [range_bits((-t, t)) for t in (partial_peak(int(c), carried) for c in counts.max(axis=0))]
    n_dst = s.shape[0]
    rows = np.repeat(np.arange(n_dst), s.row_counts())
    blk = np.searchsorted(bounds, s.indices, side="right") - 1
    w = s.values.astype(np.int64)
    idx = rows * k + blk
    pos = np.zeros(n_dst * k, np.int64)
    neg = np.zeros(n_dst * k, np.int64)
    np.add.at(pos, idx, np.maximum(w, 0))
    np.add.at(neg, idx, np.minimum(w, 0))
    pos, neg = pos.reshape(n_dst, k), neg.reshape(n_dst, k)
    return [range_bits(accumulation(pos[:, j], neg[:, j], carried)) for j in range(k)]


def _plan_split(s: SynapseGroup, graph: Graph, hw: HardwareProfile, lim: dict) -> tuple[_Split | None, list[str]]:
    where = f"synapse {s.name} ({s.src} -> {s.dst}.{s.port})"
    if s.weight_exp != 0:
        return None, [f"{where}: fan-in must be split but weight_exp is {s.weight_exp}; partial sums are exact only "
                      "with weight_exp 0 (each partial would be shifted on its own)"]
    c0, c1 = src_span(s)
    width = c1 - c0
    src_bits = graph.groups[s.src].out_bits
    # a partial-sum neuron: configuration + one accumulator ring on port x (the synapse's delay + 1 slots)
    part_neuron = hw.neuron_overhead_bits + (max(0, s.delay) + 1) * hw.accumulator_bits
    if part_neuron > lim["neuron_bits"]:
        return None, [f"{where}: a partial-sum neuron needs {part_neuron:,} bits of neuron state memory, more than "
                      f"a core's {lim['neuron_bits']:,} (neuron_memory_bits)"]
    rb = row_bits(s, hw)
    k = max(2, -(-int(rb.max()) // max(1, lim["synapse_bits"])), -(-width // max(1, lim["axons_in"])))
    k = min(k, width)
    tried: dict[int, tuple] = {}
    lo = 1                                         # largest K known not to fit
    while True:
        res = tried[k] = _try_k(s, k, c0, c1, src_bits, hw, lim)
        if res[0] is not None:
            break
        if k >= width:
            return None, res[1](where)
        lo = k
        k = min(width, max(k + 1, int(np.ceil(k * res[2]))))
    hi = k                                         # the smallest K that fits lies in (lo, hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        res = _try_k(s, mid, c0, c1, src_bits, hw, lim)
        if res[0] is not None:
            hi, tried[mid] = mid, res
        else:
            lo = mid
    return tried[hi][0], []


def _try_k(s: SynapseGroup, k: int, c0: int, c1: int, src_bits: int, hw: HardwareProfile, lim: dict):
    """(plan, None, 1) when K equal column blocks each fit a core and a message; else (None, messages(where),
    the factor by which the worst figure exceeds its limit)."""
    bounds = np.round(np.linspace(c0, c1, k + 1)).astype(np.int64)
    counts = _block_counts(s, bounds)
    widths = np.diff(bounds)
    nnz = counts.sum(axis=0)
    wb, ib, ov = weight_width(s, hw), hw.sparse_index_bits, hw.row_overhead_bits
    if hw.synmem_model:            # one row of a part alone on a core: one one-synapse list per column
        part_rows = widths[None, :] * (axon_list_units(1, wb, hw) * hw.synmem_unit_bits)
    else:
        dense = s.shape[0] * widths * wb <= nnz * (wb + ib)
        part_rows = np.where(dense[None, :], widths[None, :] * wb + ov, counts * (wb + ib) + ov)
    part_axons = widths[None, :]
    bits = _block_bits(s, bounds, counts, src_bits)
    r_syn = part_rows.max() / lim["synapse_bits"]
    r_ax = part_axons.max() / lim["axons_in"]
    r_bits = 2.0 ** (max(bits) - hw.max_msg_bits)
    if r_syn <= 1 and r_ax <= 1 and r_bits <= 1:
        return _Split(s, bounds, counts, bits), None, 1.0

    def messages(where: str) -> list[str]:
        """Why the fan-in of this synapse cannot be split to fit a core, phrased for ``where``."""
        out = []
        if r_bits > 1:
            out.append(f"{where}: a partial sum over one source column needs {max(bits)} bits, more than the "
                       f"{hw.max_msg_bits}-bit message limit (max_msg_bits); the fan-in cannot be split exactly")
        if r_syn > 1 or r_ax > 1:
            out.append(f"{where}: one source column of one row needs {int(part_rows.max()):,} bits of synaptic "
                       f"memory / {int(part_axons.max())} input axons, more than a core's "
                       f"{lim['synapse_bits']:,} / {lim['axons_in']:,}")
        return out
    return None, messages, max(r_syn, r_ax, r_bits)


def _fits(bits: np.ndarray, axons: np.ndarray, lim: dict) -> bool:
    return int(bits.max()) <= lim["synapse_bits"] and int(axons.max()) <= lim["axons_in"]


def _narrow_parts_reason(plans: dict, cands: list, graph: Graph, hw: HardwareProfile) -> str:
    """Why splitting did not help, when the cause is the message width: parts of a single source column
    because any two columns' partial sum would not fit a graded spike (wide inputs such as squares)."""
    for s in cands:
        p = plans.get(s.name)
        if p is None or p.k < 2 or int(np.diff(p.bounds).max()) > 1:
            continue
        c0, c1 = src_span(s)
        pair = np.array([c0, c0 + 2, c1])             # the first block holds two columns
        need = _block_bits(s, pair, _block_counts(s, pair), graph.groups[s.src].out_bits)[0]
        return (f"; {s.name} can only be split into single source columns, because a partial sum of two of its "
                f"{graph.groups[s.src].out_bits}-bit inputs needs {need} bits, more than the {hw.max_msg_bits}-bit "
                "message limit (max_msg_bits): narrower inputs or a larger max_axons_in are needed")
    return ""


def fan_ins_fit(graph: Graph, hw: HardwareProfile) -> bool:
    """Whether no destination's fan-in needs splitting: ``split_fan_in``'s own test, group by group (from
    row counts, spans and weight widths only, so it also answers for a graph without its weights)."""
    costs, lim = Costs(graph, hw), limits(hw)
    return all(not costs.incoming[n] or _fits(*_row_fanin(costs.incoming[n], graph, hw), lim) for n in graph.groups)


def split_fan_in(graph: Graph, hw: HardwareProfile) -> Graph:
    """The graph with every fan-in too large for one core split into exact partial sums (see the module
    docstring); the input graph itself when nothing needs splitting. Raises FitError listing every group
    that cannot be made to fit (one neuron's state, a partial sum wider than a message, ...)."""
    costs = Costs(graph, hw)
    lim = limits(hw)
    violations: list[str] = []
    plans: dict[str, _Split] = {}
    for name, grp in graph.groups.items():
        one = costs.neuron_usage(name, 1)
        if one > lim["neuron_bits"]:
            violations.append(f"group {name}: one neuron needs {one:,} bits of neuron state memory (with its tables), "
                              f"more than a core's {lim['neuron_bits']:,} (neuron_memory_bits); no split can help")
        if costs.program[name] > lim["program_instr"]:
            violations.append(f"group {name}: its program needs {costs.program[name]:,} microcode instructions, more "
                              f"than a core's {lim['program_instr']:,} (program_memory_instr)")
        inc = costs.incoming[name]
        if not inc:
            continue
        bits, axons = _row_fanin(inc, graph, hw)
        if _fits(bits, axons, lim):
            continue
        first = (int(bits.max()), int(axons.max()))
        current = list(inc)
        cands = sorted((s for s in inc if synapse_kind(s) not in ("identity", "broadcast") and src_span(s)[1] - src_span(s)[0] > 1),
                       key=lambda s: -int(row_bits(s, hw).max()))
        failed = False
        for s in cands:
            plan, v = _plan_split(s, graph, hw, lim)
            if v:
                violations.extend(v)
                failed = True
                break
            plans[s.name] = plan
            n = grp.size
            stubs = [SynapseGroup.from_row_counts(f"{plan.part(k)}->{name}.{s.port}", plan.part(k), name, s.port,
                                                  (n, n), np.ones(n, np.int64), meta=dict(kind="identity"))
                     for k in range(plan.k)]
            current = [c for c in current if c.name != s.name] + stubs
            bits, axons = _row_fanin(current, graph, hw)
            if _fits(bits, axons, lim):
                break
        if not failed and not _fits(bits, axons, lim):
            why = _narrow_parts_reason(plans, cands, graph, hw)
            violations.append(
                f"group {name}: one neuron's fan-in needs {first[0]:,} bits of synaptic memory and {first[1]:,} input "
                f"axons ({int(bits.max()):,} / {int(axons.max()):,} after splitting every splittable synapse group), "
                f"more than a core's {lim['synapse_bits']:,} (synaptic_memory_bits) / {lim['axons_in']:,} (max_axons_in)"
                + why)
    if violations:
        raise FitError(violations)
    if not plans:
        return graph
    return _rewrite(graph, plans, hw)


def _rewrite(graph: Graph, plans: dict[str, _Split], hw: HardwareProfile) -> Graph:
    z = sorted({graph.groups[p.syn.dst].stage for p in plans.values()})

    def ns(stage: int) -> int:
        """A stage's new number once a partial-sum stage is inserted before each split destination."""
        return stage + bisect_right(z, stage)

    by_dst: dict[str, list[_Split]] = defaultdict(list)
    for p in plans.values():
        by_dst[p.syn.dst].append(p)
    new = Graph(inputs=list(graph.inputs), outputs=list(graph.outputs), host_tensors=dict(graph.host_tensors),
                state=dict(graph.state), meta=dict(graph.meta))
    for name, grp in graph.groups.items():
        for p in by_dst.get(name, []):
            for k in range(p.k):
                new.add_group(NeuronGroup(
                    name=p.part(k), size=grp.size, ports=["x"], program=[Instr.make("copy", "y", "x")], output="y",
                    out_bits=int(p.out_bits[k]), stage=ns(grp.stage) - 1,
                    meta=dict(layer=grp.meta.get("layer"), role="partial_sum", split_of=p.syn.name,
                              columns=[int(p.bounds[k]), int(p.bounds[k + 1])])))
        new.add_group(replace(grp, stage=ns(grp.stage)))

    def delay(src: str, dst: str) -> int:
        """The synapse delay that keeps an edge arriving at its destination's (new) stage."""
        return new.groups[dst].stage - new.groups[src].stage - 1

    for s in graph.synapses.values():
        p = plans.get(s.name)
        if p is None:
            new.add_synapse(s.replaced(delay=delay(s.src, s.dst)))   # a packed group keeps its codes
            continue
        n_dst = s.shape[0]
        if not s.virtual:
            rows = np.repeat(np.arange(n_dst), s.row_counts())
            blk = np.searchsorted(p.bounds, s.indices, side="right") - 1
        for k in range(p.k):
            part = p.part(k)
            meta = dict(s.meta, split_of=s.name, columns=[int(p.bounds[k]), int(p.bounds[k + 1])])
            name = f"{s.src}->{part}.x"
            if s.virtual:
                new.add_synapse(SynapseGroup.from_row_counts(name, s.src, part, "x", s.shape, p.counts[:, k],
                                                             weight_exp=s.weight_exp, delay=delay(s.src, part),
                                                             acc_bits=s.acc_bits, meta=meta))
            else:
                m = blk == k
                indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[m], minlength=n_dst))]).astype(np.int64)
                new.add_synapse(SynapseGroup(name, s.src, part, "x", s.shape, indptr, s.indices[m].astype(np.int32),
                                             s.values[m].astype(np.int8), weight_exp=s.weight_exp,
                                             delay=delay(s.src, part), acc_bits=s.acc_bits, meta=meta))
        for k in range(p.k):
            part = p.part(k)
            n = new.groups[part].size
            nm = f"{part}->{s.dst}.{s.port}"
            meta = dict(kind="identity", partial_sum_of=s.name)
            if s.virtual:
                new.add_synapse(SynapseGroup.from_row_counts(nm, part, s.dst, s.port, (n, n), np.ones(n, np.int64),
                                                             delay=delay(part, s.dst), meta=meta))
            else:
                new.add_synapse(SynapseGroup.identity(nm, part, s.dst, s.port, n, delay=delay(part, s.dst), meta=meta))
    new.meta["fan_in_splits"] = [dict(synapse=p.syn.name, dst=p.syn.dst, parts=p.k, out_bits=list(map(int, p.out_bits)))
                                 for p in plans.values()]
    if not any(s.virtual for s in new.synapses.values()):
        _widen_outputs(new, sorted(by_dst), hw)
    return new


def _widen_outputs(g: Graph, dsts: list[str], hw: HardwareProfile) -> None:
    """A split port's bound is the sum of the partial sums' (power-of-two) bounds, up to one bit wider than the
    original. Where that widens what a group outputs, a group that only feeds the host gets wider messages
    (the values are unchanged: messages are never clipped to out_bits); any other is a violation."""
    bad = []
    sends = {s.src for s in g.synapses.values()}
    found = analyse(g)                       # widening a group that feeds only the host changes no other bound
    for name in dsts:
        out = found.groups[name].output
        need = None if out is None else range_bits(out)
        grp = g.groups[name]
        if need is None or need <= grp.out_bits:
            continue
        if name not in sends and need <= hw.max_msg_bits:
            grp.out_bits = need
        else:
            bad.append(f"group {name}: splitting its fan-in widens its output bound to {need} bits, more than its "
                       f"{grp.out_bits}-bit messages")
    if bad:
        raise FitError(bad)


# ---- cutting and packing --------------------------------------------------------------------------------------
def _cut(name: str, graph: Graph, costs: Costs, fan: np.ndarray, lim: dict, hw: HardwareProfile):
    """Contiguous neuron ranges of one group that each fit a core alone, by the profile's partition rule."""
    if hw.partition_rule:
        return _cut_by_ratio(name, graph, costs, fan, hw)
    return _cut_largest(name, graph, costs, fan, lim, hw)


def _one_neuron_violation(name: str, s: int, costs: Costs, fan: np.ndarray, hw: HardwareProfile) -> list[str]:
    inc = costs.incoming[name]
    u = costs.core([(name, s, s + 1)], [(x.name, s, s + 1) for x in inc], {name: fan})
    return over_limits(u, hw, f"group {name} (one neuron, #{s})") or [f"group {name} (one neuron, #{s}): does not fit a core"]


def _cut_by_ratio(name: str, graph: Graph, costs: Costs, fan: np.ndarray, hw: HardwareProfile):
    """Intel's compiler's rule as its printed violations show it (61,440 units of a 12,000-unit core became
    2 x 6 = 12 cores): the group is cut into k = ceil(usage / limit) equal ranges (the largest ratio over
    every kind), and while the largest range does not fit, k is multiplied by that range's ratio and the
    group cut again into k equal ranges. A single neuron that does not fit is a violation."""
    inc = costs.incoming[name]
    lim = limits(hw)
    n = graph.groups[name].size

    def ratio(a: int, b: int) -> float:
        u = costs.core([(name, a, b)], [(x.name, a, b) for x in inc], {name: fan})
        return max(u[kd] / lim[kd] for kd in KINDS)

    k = 1
    while True:
        cuts = np.round(np.linspace(0, n, k + 1)).astype(np.int64)
        ranges = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
        worst = max(ranges, key=lambda r: (ratio(*r), r[1] - r[0]))
        r = ratio(*worst)
        if r <= 1:
            return ranges, []
        if worst[1] - worst[0] == 1 or k >= n:
            return [], _one_neuron_violation(name, worst[0], costs, fan, hw)
        k = min(n, k * max(2, int(np.ceil(r))))


def _synapse_end(inc: list, s: int, e: int, R: np.ndarray | None, budget: int, hw: HardwareProfile, costs: Costs) -> int:
    """The largest end <= e such that rows s..end of every incoming group fit ``budget`` bits of synaptic
    memory: cumulative row costs (ideal packing, additive) or a bisection on slice costs (calibrated model,
    whose per-axon lists make a slice's cost not a sum of its rows)."""
    if R is not None:
        return min(e, int(np.searchsorted(R, R[s] + budget, side="right")) - 1)

    def bits(end: int) -> int:
        return sum(slice_bits(x, s, end, hw, costs.width.get(x.name)) for x in inc)
    if bits(e) <= budget:
        return e
    lo, hi = s, e
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bits(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def _cut_largest(name: str, graph: Graph, costs: Costs, fan: np.ndarray, lim: dict, hw: HardwareProfile):
    """Largest-first contiguous neuron ranges of one group that each fit a core alone."""
    grp = graph.groups[name]
    n = grp.size
    inc = costs.incoming[name]
    R = None
    if not hw.synmem_model:
        rb = np.zeros(n, np.int64)
        for s in inc:
            rb += row_bits(s, hw)
        R = np.concatenate([[0], np.cumsum(rb)])
    F = np.concatenate([[0], np.cumsum(fan)])
    per, tb = costs.per_neuron[name], costs.table_bits[name]
    kmax = lim["neurons"]
    if per:
        kmax = min(kmax, (lim["neuron_bits"] - tb) // per)
    if costs.program[name] > lim["program_instr"] or lim["groups"] < 1:
        kmax = 0
    ranges, bad = [], []
    s = 0
    while s < n:
        e = min(n, s + max(kmax, 0))
        e = _synapse_end(inc, s, e, R, lim["synapse_bits"], hw, costs)
        e = min(e, int(np.searchsorted(F, F[s] + lim["axons_out"], side="right")) - 1)
        if e > s and input_axons(graph, ((x, s, e) for x in inc)) > lim["axons_in"]:
            lo, hi = s, e                              # axons(s, lo) fits, axons(s, hi) does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if input_axons(graph, ((x, s, mid) for x in inc)) <= lim["axons_in"]:
                    lo = mid
                else:
                    hi = mid
            e = lo
        if e <= s:
            return ranges, bad + _one_neuron_violation(name, s, costs, fan, hw)
        ranges.append((s, e))
        s = e
    return ranges, bad


def _partition(graph: Graph, hw: HardwareProfile):
    costs = Costs(graph, hw)
    lim = limits(hw)
    by_src = outgoing(graph)
    order = sorted(graph.groups, key=lambda n: -graph.groups[n].stage)   # destinations before their sources
    core_of: dict[str, np.ndarray] = {}
    cuts: dict[str, list] = {}
    fan: dict[str, np.ndarray] = {}
    violations: list[str] = []
    nxt = 0
    for name in order:
        fan[name] = fanout_of(graph, name, core_of, by_src)
        ranges, bad = _cut(name, graph, costs, fan[name], lim, hw)
        violations += bad
        cuts[name] = ranges
        arr = np.full(graph.groups[name].size, -1, np.int64)
        for a, b in ranges:
            arr[a:b] = nxt
            nxt += 1
        core_of[name] = arr
    pos = {n: i for i, n in enumerate(graph.groups)}
    lim_vec = np.array([lim[k] for k in KINDS], np.float64)
    units = []
    for name in graph.groups:
        grp = graph.groups[name]
        for a, b in cuts[name]:
            u = costs.core([(name, a, b)], [(s.name, a, b) for s in costs.incoming[name]], fan)
            units.append((name, a, b, np.array([u[k] for k in KINDS], np.float64), str(grp.meta.get("layer", "-"))))
    by_layer: dict[str, list] = defaultdict(list)
    for u in units:
        by_layer[u[4]].append(u)
    pieces: list[Piece] = []
    for layer, us in by_layer.items():
        us = sorted(us, key=lambda u: (-float(np.max(u[3] / lim_vec)), pos[u[0]], u[1]))
        load = np.zeros((len(us), len(KINDS)))
        members: list[list] = []
        holds: dict[str, list[int]] = defaultdict(list)     # group -> the cores holding a piece of it
        for u in us:
            m = len(members)
            if m:
                ok = np.all(load[:m] + u[3] <= lim_vec, axis=1)
                if hw.partition_rule and holds[u[0]]:   # the compiler's split is final: a group's pieces stay apart
                    ok[holds[u[0]]] = False
                if ok.any():
                    j = int(np.argmax(ok))
                    load[j] += u[3]
                    members[j].append(u)
                    holds[u[0]].append(j)
                    continue
            load[m] = u[3]
            members.append([u])
            holds[u[0]].append(m)
        for mem in members:
            mem.sort(key=lambda u: (pos[u[0]], u[1]))
            nsl = [(u[0], u[1], u[2]) for u in mem]
            ssl = [(s.name, a, b) for (nm, a, b) in nsl for s in costs.incoming[nm]]
            usage = costs.core(nsl, ssl, fan)
            over = over_limits(usage, hw, f"packed core of {', '.join(n for n, _, _ in nsl)}")
            if over:                                   # cannot happen: the packing check is conservative
                raise AssertionError("; ".join(over))
            first = graph.groups[nsl[0][0]]
            pieces.append(Piece(nsl, ssl, usage, first.meta.get("layer"),
                                min(graph.groups[n].stage for n, _, _ in nsl)))
    pieces.sort(key=lambda p: (p.stage, pos[p.neurons[0][0]], p.neurons[0][1]))
    return pieces, violations


def partition(graph: Graph, hw: HardwareProfile) -> list[Piece]:
    """One ``Piece`` per core (see the module docstring). Raises FitError listing every neuron that cannot
    fit any core (run ``split_fan_in`` first for fan-ins larger than a core)."""
    pieces, violations = _partition(graph, hw)
    if violations:
        raise FitError(violations)
    return pieces
