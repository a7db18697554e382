"""Placement: assign the partitioner's pieces to cores and chips so that heavy traffic stays on one chip.

Pieces are ordered by pipeline stage (then graph order), so that consecutive stages — the groups that
talk most — sit on neighbouring cores. Chips take contiguous runs of that order; the number of chips is
the least that holds every core, and the chip boundaries are moved within the slack this leaves (a chip
may hold fewer than ``cores_per_chip`` cores) to where the fewest messages cross them (dynamic
programming over the boundaries, each weighted by the messages between cores on its two sides).

Traffic per token: a source neuron sends one message to every core that holds any of its destination
rows, once per destination core however many synapse groups lead there. Identity synapses reach the core
of the matching row, a reduction the core of its one row, a broadcast every core of its destination; a
ternary (or any other) synapse group is assumed to reach every destination core from every source neuron
of its column span. Every neuron is counted as sending every token (an upper bound for delta senders and
zero messages).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from mflc.ir.errors import FitError
from mflc.ir.graph import Graph

from .hardware import (Costs, HardwareProfile, System, fanout_from_cores, get_system, outgoing, over_limits,
                       smallest_system, src_span, synapse_kind)
from .layout import Core, Layout, NeuronSlice, SynapseSlice
from .partition import Piece


def _merge(intervals):
    out = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def core_traffic(graph: Graph, core_slices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Messages per token between cores: arrays (source core, destination core, count), each pair once."""
    slices_of: dict[str, list] = defaultdict(list)
    for c, sl in enumerate(core_slices):
        for name, a, b in sl:
            slices_of[name].append((a, b, c))
    arr = {n: (np.array([x[0] for x in v], np.int64), np.array([x[1] for x in v], np.int64),
               np.array([x[2] for x in v], np.int64)) for n, v in ((k, sorted(v)) for k, v in slices_of.items())}
    cores_of = {n: np.unique(v[2]) for n, v in arr.items()}
    by_src = outgoing(graph)
    src_c, dst_c, cnt = [], [], []
    for g in graph.groups:
        if g not in arr:
            continue
        starts, stops, cores = arr[g]
        reach: dict[int, list] = defaultdict(list)
        for s in by_src.get(g, []):
            if s.dst not in arr:
                continue
            if synapse_kind(s) == "identity":
                for a, b, c in slices_of[s.dst]:
                    reach[c].append((a, b))
            else:
                span = src_span(s)
                for c in cores_of[s.dst]:
                    reach[int(c)].append(span)
        for c, ivs in reach.items():
            for lo, hi in _merge(ivs):
                ov = np.minimum(hi, stops) - np.maximum(lo, starts)
                nz = ov > 0
                if nz.any():
                    src_c.append(cores[nz])
                    dst_c.append(np.full(int(nz.sum()), c, np.int64))
                    cnt.append(ov[nz])
    if not src_c:
        z = np.zeros(0, np.int64)
        return z, z, z
    s, d, n = np.concatenate(src_c), np.concatenate(dst_c), np.concatenate(cnt)
    m = int(max(s.max(), d.max())) + 1
    key, inv = np.unique(s * m + d, return_inverse=True)
    tot = np.bincount(inv, weights=n).astype(np.int64)
    return key // m, key % m, tot


def _boundaries(n: int, cpc: int, chips: int, cut: np.ndarray) -> list[int]:
    """Chip boundaries 0 = b_0 < b_1 < ... < b_chips = n, each run <= cpc cores, minimising Σ cut[b_j]."""
    if chips <= 1:
        return [0, n]
    INF = np.iinfo(np.int64).max // 4
    best = np.full(n + 1, INF, np.int64)
    best[0] = 0
    back = []
    for j in range(1, chips + 1):
        nxt = np.full(n + 1, INF, np.int64)
        arg = np.zeros(n + 1, np.int64)
        lo, hi = max(j, n - (chips - j) * cpc), min(n, j * cpc)
        for p in range(lo, hi + 1):
            q0 = max(0, p - cpc)
            win = best[q0:p]
            k = int(np.argmin(win))
            if win[k] < INF:
                nxt[p] = win[k] + (cut[p] if j < chips else 0)
                arg[p] = q0 + k
        back.append(arg)
        best = nxt
    out = [n]
    for j in range(chips - 1, -1, -1):
        out.append(int(back[j][out[-1]]))
    return out[::-1]


def place(pieces: list[Piece], graph: Graph, hw: HardwareProfile, system: str | System | None = None) -> Layout:
    """A ``Layout`` of ``pieces`` (from ``partition``) on chips of ``hw``; FitError listing every violation when
    it does not fit ``system`` (None: as many chips as needed)."""
    sysobj = get_system(system) if isinstance(system, str) else system
    pos = {n: i for i, n in enumerate(graph.groups)}
    order = sorted(pieces, key=lambda p: (p.stage, pos[p.neurons[0][0]], p.neurons[0][1]))
    n = len(order)
    cpc = hw.cores_per_chip
    chips = -(-n // cpc) if n else 0
    violations = []
    if sysobj is not None and chips > sysobj.chips:
        best = smallest_system(chips)
        violations.append(f"the model needs {chips:,} chips ({n:,} cores at {cpc} per chip), more than "
                          f"{sysobj.name}'s {sysobj.chips:,}"
                          + (f"; the smallest system that fits is {best.name} ({best.chips:,} chips)" if best else
                             "; no listed system is that large"))
    core_slices = [p.neurons for p in order]
    costs = Costs(graph, hw)
    fan = fanout_from_cores(graph, core_slices)
    usages = []
    for i, p in enumerate(order):
        u = costs.core(p.neurons, p.synapses, fan)
        violations += over_limits(u, hw, f"core #{i} ({', '.join(x[0] for x in p.neurons)})")
        usages.append(u)
    if violations:
        raise FitError(violations)
    sc, dc, cnt = core_traffic(graph, core_slices)
    # weight of a boundary before core p: messages between a core < p and a core >= p
    diff = np.zeros(n + 2, np.int64)
    lo, hi = np.minimum(sc, dc), np.maximum(sc, dc)
    np.add.at(diff, lo + 1, cnt)
    np.add.at(diff, hi + 1, -cnt)
    cut = np.cumsum(diff)[: n + 1]
    bounds = _boundaries(n, cpc, chips, cut)
    chip_of = np.zeros(n, np.int64)
    for j in range(len(bounds) - 1):
        chip_of[bounds[j]:bounds[j + 1]] = j
    cores = []
    for i, p in enumerate(order):
        k = i - bounds[int(chip_of[i])]
        cores.append(Core(int(chip_of[i]), k, [NeuronSlice(*t) for t in p.neurons],
                          [SynapseSlice(*t) for t in p.synapses], usages[i]))
    traffic = traffic_summary(sc, dc, cnt, chip_of)
    return Layout(cores, hw, sysobj.name if sysobj else None, traffic, graph.totals(),
                  dict(placement="stage order, chip boundaries at least traffic",
                       fan_in_splits=len(graph.meta.get("fan_in_splits", []))))


def traffic_summary(sc, dc, cnt, chip_of: np.ndarray) -> dict:
    """Messages per token on a core, between cores and between chips, and the busiest senders, from edge counts."""
    if cnt.size == 0:
        return dict(messages_on_core=0, messages_between_cores=0, messages_between_chips=0, busiest_chip_out=0,
                    busiest_core_out=0)
    cs, cd = chip_of[sc], chip_of[dc]
    same_core = sc == dc
    on_chip = (cs == cd) & ~same_core
    off = cs != cd
    n_chips = int(chip_of.max()) + 1 if chip_of.size else 0
    chip_out = np.bincount(cs[off], weights=cnt[off], minlength=n_chips) if off.any() else np.zeros(1)
    core_out = np.bincount(sc[~same_core], weights=cnt[~same_core]) if (~same_core).any() else np.zeros(1)
    return dict(messages_on_core=int(cnt[same_core].sum()), messages_between_cores=int(cnt[on_chip].sum()),
                messages_between_chips=int(cnt[off].sum()), busiest_chip_out=int(chip_out.max()),
                busiest_core_out=int(core_out.max()),
                note="per token; every neuron sends every token; one message per (source neuron, destination core)")


def layout_traffic(layout: Layout, graph: Graph) -> dict:
    """Traffic of an existing layout (e.g. loaded from a file), computed from the graph."""
    sc, dc, cnt = core_traffic(graph, [c.neuron_tuples() for c in layout.cores])
    return traffic_summary(sc, dc, cnt, np.array([c.chip for c in layout.cores], np.int64))


def layout_graph(graph: Graph, hw: HardwareProfile, system: str | System | None = None) -> tuple[Graph, Layout]:
    """The whole layout pass: split fan-ins, partition, place. Returns (the split graph, its layout); a
    FitError lists every violation found (groups that fit no core and too few chips, together)."""
    from .partition import _partition, split_fan_in

    sysobj = get_system(system) if isinstance(system, str) else system
    try:
        g2 = split_fan_in(graph, hw)
    except FitError as e:                 # still say whether the rest would fit the system
        pieces, _ = _partition(graph, hw)
        chips = -(-len(pieces) // hw.cores_per_chip)
        extra = []
        if sysobj is not None and chips > sysobj.chips:
            extra.append(f"even without the groups above, the model needs at least {chips:,} chips ({len(pieces):,} "
                         f"cores), more than {sysobj.name}'s {sysobj.chips:,}")
        raise FitError(e.violations + extra) from None
    pieces, violations = _partition(g2, hw)
    if violations:
        chips = -(-len(pieces) // hw.cores_per_chip)
        if sysobj is not None and chips > sysobj.chips:
            violations.append(f"even without the groups above, the model needs {chips:,} chips ({len(pieces):,} cores), "
                              f"more than {sysobj.name}'s {sysobj.chips:,}")
        raise FitError(violations)
    return g2, place(pieces, g2, hw, sysobj)
