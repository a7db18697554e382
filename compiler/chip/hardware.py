"""Loihi 2 resource model: per-core limits, how a core's contents are costed, chips and systems.

Every figure is a field of ``HardwareProfile``, defined in ``mflc.ir.hardware`` (the one place a hardware
figure is written; re-exported here with ``FIGURES``, ``PROFILES``, ``load_profile``, ``resolve_profile``).

How a core is costed (``Costs.core``, the single definition used by the partitioner, the placer and the
independent layout checker). On Loihi a neuron's incoming synapses live on the neuron's own core, so a
core holds neuron slices ``(group, start, stop)`` and, for each, the same rows of every synapse group
into that group. Only row counts (``indptr``), shapes and each group's weight width (from the range of
its values) are used, never the weights one by one, so virtual skeleton graphs are costed like real ones.

- ``neurons``: neurons on the core (≤ ``neurons_per_core``).
- ``neuron_bits`` (neuron state memory): per neuron a configuration word, every register rounded up to
  whole state words, one state word per per-neuron parameter, one word for a delta sender's last sent
  value, and per input port a ring of dendritic accumulators, one per step of the largest synaptic delay
  into that port plus one (pipelined tokens arrive while older ones wait); plus, once per group on the
  core, its lookup tables (one state word per entry).
- ``groups``: distinct neuron groups on the core (≤ ``neuron_groups_per_core``).
- ``synapse_bits`` (synaptic memory), by the profile's ``synmem_model``. **Calibrated** (1, profile
  ``loihi2-lava``): as Intel's compiler costs it, per input axon: each source column of a synapse group
  holds one list of the rows the core has (zeros included), ``axon_list_units`` SynMem units each
  (``mflc.compiler.chip.calibration`` fits the coefficients to the compiler's published tables), times
  ``synmem_unit_bits``. **Ideal** (0, profile ``loihi2-ideal``): each synapse group is stored dense (every source column of a row
  holds a weight, zeros included) or sparse (each non-zero holds a weight and a ``sparse_index_bits``
  index), whichever is smaller for the whole group; every stored row also costs ``row_overhead_bits`` (its
  list header). A weight takes ``weight_width`` bits: with ``narrow_weights`` (the default) the narrowest
  width holding the group's values in its Lava sign mode (mixed signs: signed, ternary 2 bits; one sign:
  the magnitude's bits), at most ``weight_bits``; with ``narrow_weights`` = 0, ``weight_bits``. A virtual
  (skeleton) group has no values: ``meta["weight_range"]`` if given, else [-1, 1] for ``kind`` "ternary"
  and [1, 1] for identity / reduce / broadcast (as the real groups), else ``weight_bits``.
- ``axons_in``: distinct input axons, one per source neuron whose messages reach the core. Identity
  synapses bring the source neurons of their rows; a broadcast (one source neuron) brings one; any other
  synapse group brings min(its source columns, its non-zeros on the core) (every column assumed used);
  synapse groups from the same source group share axons (capped at the source's size; identity row
  ranges are merged).
- ``axons_out`` (routing-table entries): Σ over the core's neurons of the number of destination cores
  each reaches (``fanout``); it depends on where the destinations are, so callers pass it.
- ``program_instr`` (microcode): Σ over the groups on the core of len(program) · ``microcode_per_op``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.errors import ConfigError
from mflc.ir.graph import Graph, SynapseGroup
from mflc.ir.hardware import (DEFAULT, FIGURE_KEYS, FIGURES, PROFILES, HardwareProfile, profile_named,  # noqa: F401
                              load_profile, narrowest_weight_bits, resolve_profile, weight_range, weight_width)


# ---- systems (boards of chips) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class System:
    """A known Loihi 2 system and its chip count, as ``--system`` names it."""

    name: str
    chips: int
    description: str
    source: str


SYSTEMS: dict[str, System] = {
    "oheo_gulch": System("oheo_gulch", 1, "Oheo Gulch, single-chip board", "Intel (2021)"),
    "kapoho_point": System("kapoho_point", 8, "Kapoho Point, 8-chip stackable board", "Intel (2022)"),
    "hala_point": System("hala_point", 1152, "Hala Point, 1,152 chips, 140,544 neurocores",
                         "Intel Hala Point announcement (2024)"),
}


def get_system(name: str | None) -> System | None:
    """The named system (case and separators ignored), None for none; an unknown name is a ConfigError."""
    if name is None:
        return None
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in SYSTEMS:
        raise ConfigError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")
    return SYSTEMS[key]


def smallest_system(chips: int) -> System | None:
    """The smallest known system with at least ``chips`` chips, for reports (None if none is that big)."""
    fit = [s for s in SYSTEMS.values() if s.chips >= chips]
    return min(fit, key=lambda s: s.chips) if fit else None


# ---- usage kinds --------------------------------------------------------------------------------------------
KINDS = ("neurons", "groups", "neuron_bits", "synapse_bits", "axons_in", "axons_out", "program_instr")
LIMIT_OF = {"neurons": "neurons_per_core", "groups": "neuron_groups_per_core", "neuron_bits": "neuron_memory_bits",
            "synapse_bits": "synaptic_memory_bits", "axons_in": "max_axons_in", "axons_out": "max_axons_out",
            "program_instr": "program_memory_instr"}
LABEL = {"neurons": "neurons", "groups": "neuron groups", "neuron_bits": "bits of neuron state memory",
         "synapse_bits": "bits of synaptic memory", "axons_in": "input axons", "axons_out": "output routing entries",
         "program_instr": "microcode instructions"}


def limits(hw: HardwareProfile) -> dict[str, int]:
    """The per-core limit of every resource kind under the profile."""
    return {k: int(getattr(hw, LIMIT_OF[k])) for k in KINDS}


def over_limits(usage: dict, hw: HardwareProfile, where: str) -> list[str]:
    """One message per kind whose use exceeds the core's limit: what, the figure needed and the limit."""
    lim = limits(hw)
    return [f"{where}: needs {int(usage[k]):,} {LABEL[k]}, more than a core's {lim[k]:,} ({LIMIT_OF[k]})"
            for k in KINDS if k in usage and usage[k] > lim[k]]


def fill(usage: dict, hw: HardwareProfile) -> float:
    """The core's fill: the largest fraction of any limit in use."""
    lim = limits(hw)
    return max((usage.get(k, 0) / lim[k] for k in KINDS), default=0.0)


# ---- synapse groups -----------------------------------------------------------------------------------------
def synapse_kind(s: SynapseGroup) -> str:
    """identity (row i <- source i), broadcast (one source), reduce (one row) or dense (any other)."""
    k = s.meta.get("kind")
    n_dst, n_src = s.shape
    if k == "identity" and n_dst == n_src:
        return "identity"
    if n_src == 1:
        return "broadcast"
    if n_dst == 1:
        return "reduce"
    return "dense"


def src_span(s: SynapseGroup) -> tuple[int, int]:
    """Source columns the synapse group can use: all, or the column block of a fan-in split
    (``meta["columns"]``, set by ``partition.split_fan_in``)."""
    c = s.meta.get("columns")
    return (int(c[0]), int(c[1])) if c else (0, int(s.shape[1]))


def synapse_format(s: SynapseGroup, hw: HardwareProfile, width: int | None = None) -> str:
    """dense or sparse, whichever stores the whole group in fewer bits (ideal packing); the calibrated model
    stores every group as per-axon lists, zeros included: "axon lists"."""
    if hw.synmem_model:
        return "axon lists"
    wb = weight_width(s, hw) if width is None else width
    n_dst = s.shape[0]
    c0, c1 = src_span(s)
    dense = n_dst * (c1 - c0) * wb
    sparse = s.nnz * (wb + hw.sparse_index_bits)
    return "dense" if dense <= sparse else "sparse"


def axon_list_units(n: int, width: int, hw: HardwareProfile) -> int:
    """SynMem units of one input axon's list reaching ``n`` neurons of one core with ``width``-bit weights,
    as the calibrated model fits Intel's compiler: ceil(axon + n * (synapse + weight_bit * width)), the
    coefficients in thousandths of a unit (0 for an empty list)."""
    if n <= 0:
        return 0
    milli = hw.synmem_axon_milli + n * (hw.synmem_synapse_milli + hw.synmem_weight_bit_milli * width)
    return -(-int(milli) // 1000)


def slice_units(s: SynapseGroup, a: int, b: int, hw: HardwareProfile, width: int | None = None) -> int:
    """SynMem units of rows a..b of a synapse group on one core in the calibrated model: an identity group
    gives each row its own one-synapse axon list; any other gives each source column of its span a list of
    the b - a rows (zeros are stored: the published layers at 73 % zeros cost the same per axon as dense ones)."""
    wb = weight_width(s, hw) if width is None else width
    n = max(0, b - a)
    if n == 0:
        return 0
    if synapse_kind(s) == "identity":
        return n * axon_list_units(1, wb, hw)
    c0, c1 = src_span(s)
    return (c1 - c0) * axon_list_units(n, wb, hw)


def row_bits(s: SynapseGroup, hw: HardwareProfile, width: int | None = None) -> np.ndarray:
    """Synaptic memory of each destination row [n_dst] (int64): alone on a core in the calibrated model
    (a row's axon lists then hold one synapse each), its share of the group in ideal packing."""
    wb = weight_width(s, hw) if width is None else width
    n_dst = s.shape[0]
    if hw.synmem_model:
        return np.full(n_dst, slice_units(s, 0, 1, hw, wb) * hw.synmem_unit_bits, dtype=np.int64)
    c0, c1 = src_span(s)
    if synapse_format(s, hw, wb) == "dense":
        return np.full(n_dst, (c1 - c0) * wb + hw.row_overhead_bits, dtype=np.int64)
    return s.row_counts().astype(np.int64) * (wb + hw.sparse_index_bits) + hw.row_overhead_bits


def slice_bits(s: SynapseGroup, a: int, b: int, hw: HardwareProfile, width: int | None = None) -> int:
    """Synaptic memory of rows a..b of a synapse group on one core (the profile's synaptic-memory model)."""
    wb = weight_width(s, hw) if width is None else width
    if hw.synmem_model:
        return slice_units(s, a, b, hw, wb) * hw.synmem_unit_bits
    c0, c1 = src_span(s)
    if synapse_format(s, hw, wb) == "dense":
        return (b - a) * ((c1 - c0) * wb + hw.row_overhead_bits)
    return int(s.row_offsets()[b] - s.row_offsets()[a]) * (wb + hw.sparse_index_bits) + (b - a) * hw.row_overhead_bits


def synmem_units(bits: int | float, hw: HardwareProfile) -> float:
    """Synaptic memory in the compiler's SynMem units (bits / synmem_unit_bits), for reports."""
    return bits / hw.synmem_unit_bits


def slice_axons(s: SynapseGroup, a: int, b: int) -> tuple[str, int, int]:
    """('interval', lo, hi) for identity rows [a, b) and a broadcast's one source; ('count', n, 0) otherwise."""
    if b <= a:
        return ("count", 0, 0)
    kind = synapse_kind(s)
    if kind == "identity":
        return ("interval", a, b)
    if kind == "broadcast":
        return ("interval", 0, 1)
    c0, c1 = src_span(s)
    return ("count", int(min(c1 - c0, s.row_offsets()[b] - s.row_offsets()[a])), 0)


def input_axons(g: Graph, slices) -> int:
    """Input axons a core needs for the synapse slices ``(synapse group, row start, row stop)`` it holds:
    per source group, the union of the source neurons they read, at most the group's size."""
    per_src: dict[str, tuple[list, int]] = {}
    for s, a, b in slices:
        kind, x, y = slice_axons(s, a, b)
        iv, cnt = per_src.get(s.src, ([], 0))
        if kind == "interval":
            iv.append((x, y))
        else:
            cnt += x
        per_src[s.src] = (iv, cnt)
    return sum(min(g.groups[src].size, _union_length(iv) + cnt) for src, (iv, cnt) in per_src.items())


def _union_length(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for lo, hi in sorted(intervals):
        if end is None or lo > end:
            total += hi - lo
            end = hi
        elif hi > end:
            total += hi - end
            end = hi
    return total


class Costs:
    """Per-graph constants of the cost model, computed once: per-neuron state, tables, programs, port delays."""

    def __init__(self, graph: Graph, hw: HardwareProfile):
        self.g, self.hw = graph, hw
        w = hw.state_word_bits
        delay: dict[tuple[str, str], int] = {}
        self.incoming: dict[str, list[SynapseGroup]] = {n: [] for n in graph.groups}
        for s in graph.synapses.values():
            key = (s.dst, s.port)
            delay[key] = max(delay.get(key, 0), int(s.delay))
            if s.dst in self.incoming:
                self.incoming[s.dst].append(s)
        self.width: dict[str, int] = {n: weight_width(s, hw) for n, s in graph.synapses.items()}
        self.per_neuron: dict[str, int] = {}
        self.table_bits: dict[str, int] = {}
        self.program: dict[str, int] = {}
        for n, grp in graph.groups.items():
            bits = hw.neuron_overhead_bits
            bits += sum(-(-int(b) // w) * w for b in grp.registers.values())
            bits += len(grp.params) * w
            bits += w if grp.send == "delta" else 0
            bits += sum((max(0, delay.get((n, p), 0)) + 1) * hw.accumulator_bits for p in grp.ports)
            self.per_neuron[n] = int(bits)
            self.table_bits[n] = int(sum(int(np.asarray(t).size) for t in grp.tables.values()) * w)
            self.program[n] = len(grp.program) * hw.microcode_per_op

    def neuron_usage(self, group: str, n: int) -> int:
        """Neuron memory n neurons of a group take on one core (tables once, plus per-neuron state)."""
        return self.table_bits[group] + n * self.per_neuron[group] if n else 0

    def core(self, neuron_slices, synapse_slices, fanout: dict | None = None) -> dict:
        """Usage by kind of a core holding ``neuron_slices`` [(group, start, stop)] and ``synapse_slices``
        [(synapse, row_start, row_stop)]. ``fanout[group]`` is the number of destination cores each neuron
        reaches: an int (same for all) or an array over the group's neurons; absent groups count 0."""
        g, hw = self.g, self.hw
        u = dict.fromkeys(KINDS, 0)
        u["synapses"] = 0
        seen_groups = set()
        for name, a, b in neuron_slices:
            n = b - a
            u["neurons"] += n
            u["neuron_bits"] += n * self.per_neuron[name]
            if name not in seen_groups:
                seen_groups.add(name)
                u["groups"] += 1
                u["neuron_bits"] += self.table_bits[name]
                u["program_instr"] += self.program[name]
            if fanout is not None and name in fanout:
                f = fanout[name]
                u["axons_out"] += int(f) * n if np.isscalar(f) else int(np.sum(f[a:b]))
        for sname, a, b in synapse_slices:
            s = g.synapses[sname]
            u["synapse_bits"] += slice_bits(s, a, b, hw, self.width.get(sname))
            u["synapses"] += int(s.row_offsets()[b] - s.row_offsets()[a])
        u["axons_in"] += input_axons(g, ((g.synapses[n], a, b) for n, a, b in synapse_slices))
        return {k: int(v) for k, v in u.items()}


def core_cost(neuron_slices, synapse_slices, graph: Graph, hw: HardwareProfile, fanout: dict | None = None,
              costs: Costs | None = None) -> dict:
    """Usage by kind of one core (see the module docstring); pass ``costs`` to reuse per-graph constants."""
    return (costs or Costs(graph, hw)).core(neuron_slices, synapse_slices, fanout)


def outgoing(graph: Graph) -> dict[str, list[SynapseGroup]]:
    """Every group's outgoing synapse groups, indexed once for the placer and checkers."""
    by_src: dict[str, list[SynapseGroup]] = {n: [] for n in graph.groups}
    for s in graph.synapses.values():
        by_src.setdefault(s.src, []).append(s)
    return by_src


def fanout_of(graph: Graph, name: str, core_of: dict[str, np.ndarray], by_src: dict) -> np.ndarray:
    """Destination cores each neuron of ``name`` reaches, given ``core_of[group]`` (core id per neuron, -1 =
    not placed). An identity synapse reaches the core of the matching row; any other synapse group reaches,
    from each source neuron in its column span, every core holding a row of its destination (every column
    assumed used); a core reached through several synapse groups counts once."""
    n = graph.groups[name].size
    spans: list[tuple[int, int, set]] = []
    single: list[np.ndarray] = []
    for s in by_src.get(name, []):
        dst = core_of.get(s.dst)
        if dst is None:
            continue
        if synapse_kind(s) == "identity":
            single.append(dst)
        else:
            c0, c1 = src_span(s)
            spans.append((c0, c1, set(int(c) for c in np.unique(dst[dst >= 0]))))
    cnt = np.zeros(n, np.int64)
    cuts = sorted({0, n} | {c for c0, c1, _ in spans for c in (c0, c1) if 0 <= c <= n})
    m_all = np.stack(single) if single else None
    for p, q in zip(cuts[:-1], cuts[1:]):
        full: set = set()
        for c0, c1, cs in spans:
            if c0 <= p and q <= c1:
                full |= cs
        cnt[p:q] = len(full)
        if m_all is not None:
            m = m_all[:, p:q]
            fa = np.array(sorted(full), np.int64)
            m = np.where(np.isin(m, fa) | (m < 0), -1, m)
            ms = np.sort(m, axis=0)
            distinct = (ms >= 0) & np.concatenate([np.ones((1, ms.shape[1]), bool), ms[1:] != ms[:-1]], axis=0)
            cnt[p:q] += distinct.sum(axis=0)
    return cnt


def core_of_from_slices(graph: Graph, core_slices) -> dict[str, np.ndarray]:
    """Each neuron's core from per-core neuron slices (-1 where none holds it)."""
    core_of = {n: np.full(grp.size, -1, np.int64) for n, grp in graph.groups.items()}
    for c, slices in enumerate(core_slices):
        for name, a, b in slices:
            if name in core_of:
                core_of[name][a:b] = c
    return core_of


def fanout_from_cores(graph: Graph, core_slices) -> dict[str, np.ndarray]:
    """``fanout_of`` for every group, from a placement: ``core_slices[c]`` lists core c's neuron slices."""
    core_of = core_of_from_slices(graph, core_slices)
    by_src = outgoing(graph)
    return {n: fanout_of(graph, n, core_of, by_src) for n in graph.groups}


def bits_for_range(lo: int, hi: int) -> int:
    """Smallest signed width holding [lo, hi] (as mflc.ir.ops.range_bits)."""
    b = 1
    while lo < fp.smin(b) or hi > fp.smax(b):
        b += 1
    return b


def kib(bits: int | float) -> float:
    """Bits as KiB, for reports."""
    return bits / 8192.0


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b."""
    return -(-int(a) // int(b))


__all__ = ["HardwareProfile", "FIGURES", "PROFILES", "SYSTEMS", "System", "load_profile", "resolve_profile",
           "core_cost", "Costs", "limits", "over_limits", "fanout_from_cores", "get_system", "smallest_system",
           "weight_width", "weight_range", "narrowest_weight_bits"]
