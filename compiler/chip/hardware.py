"""Loihi 2 resource model: per-core limits, how a core's contents are costed, chips and systems.

Every figure is a field of ``HardwareProfile`` whose metadata gives its unit, source and confidence
(``FIGURES`` collects them; docs/layout.md prints the same table). A user overrides any figure with a
JSON hardware profile (``load_profile``); the overridden figure then carries the file as its source.

How a core is costed (``Costs.core``, the single definition used by the partitioner, the placer and the
independent layout checker). On Loihi a neuron's incoming synapses live on the neuron's own core, so a
core holds neuron slices ``(group, start, stop)`` and, for each, the same rows of every synapse group
into that group. Only row counts (``indptr``), shapes and the weight width are used, never the stored
weights, so virtual skeleton graphs are costed like real ones.

- ``neurons``: neurons on the core (≤ ``neurons_per_core``).
- ``neuron_bits`` (neuron state memory): per neuron a configuration word, every register rounded up to
  whole state words, one state word per per-neuron parameter, one word for a delta sender's last sent
  value, and per input port a ring of dendritic accumulators, one per step of the largest synaptic delay
  into that port plus one (pipelined tokens arrive while older ones wait); plus, once per group on the
  core, its lookup tables (one state word per entry).
- ``synapse_bits`` (synaptic memory): each synapse group is stored dense (every source column of a row
  holds a ``weight_bits`` weight, zeros included) or sparse (each non-zero holds a weight and a
  ``sparse_index_bits`` index), whichever is smaller for the whole group; every stored row also costs
  ``row_overhead_bits`` (its list header).
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

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.errors import ConfigError
from mflc.ir.graph import Graph, SynapseGroup
from mflc.ir.schema import read_json

# ---- sources ------------------------------------------------------------------------------------------
INTEL_BRIEF = ("Intel Labs, 'Taking neuromorphic computing to the next level with Loihi 2', technology brief "
               "(2021): 128 neurocores per chip, up to 1 M neurons (8,192 per core) and 120 M synapses per chip")
LOCAL_SRAM = ("Loihi 2 launch coverage of the Intel brief (e.g. fbhtechinfo.com, 2021): '128 Kbyte of local SRAM "
              "for each core, flexibly partitioned'; equal to Loihi 1's 16,384 x 64-bit synapse memory "
              "(nengo-loihi block.py); 120 M synapses/chip over 120-128 cores is ~1 M one-bit weights per core")
FLEX_192 = ("assumption: the project's reading of the Intel brief gives up to 192 KB of flexibly allocated memory "
            "per core (not found in the stored copies); 192 KB - 128 KB of synaptic memory = 64 KB for neuron "
            "state, i.e. 64 bits for each of 8,192 neurons")
OPEN_NEURO = "open-neuromorphic.org Loihi 2 page and secondary summaries: '120-128 neuro-cores per chip'"
DAVIES_2018 = ("M. Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), "
               "2018 (Loihi 1: 4,096 input axons and 4,096 output axons per core); Loihi 2's figures are not public")
AXONS = ("assumption scaled from " + DAVIES_2018 + ": Loihi 1 had 4,096 input and 4,096 output axons for 1,024 "
         "neurons per core (4 per neuron); at Loihi 2's 8,192 neurons per core the same ratio gives 32,768 (4,096 "
         "would not give every neuron of a full core even one route)")
PAPER = ("Abreu, Shrestha, Zhu, Eshraghian, arXiv:2503.18002: weights quantized to 8 bits on chip; Lava Dense "
         "num_weight_bits <= 8 (lava proc/dense)")
LAVA_STATE = "Lava fixed-point neuron models (proc/lif, proc/graded): 24-bit state words; mflc.ir.fixedpoint.STATE_BITS_MAX"
LAVA_ACC = "Lava Dense fixed point accumulates in int32; mflc.ir.fixedpoint.ACC_BITS"
LAVA_MSG = "Lava proc/graded, proc/prodneuron: 24-bit graded-spike payload; mflc.ir.fixedpoint.MSG_BITS_MAX"
ASSUMED = "assumption (no public figure)"


def _fig(default, unit: str, source: str, confidence: str, note: str = ""):
    return field(default=default, metadata=dict(unit=unit, source=source, confidence=confidence, note=note))


@dataclass(frozen=True)
class HardwareProfile:
    """The figures of one Loihi 2 configuration. All sizes are integers; memory is counted in bits."""

    name: str = "loihi2"
    neurons_per_core: int = _fig(8192, "neurons", INTEL_BRIEF, "high", "1 M neurons per chip / 128 cores")
    cores_per_chip: int = _fig(128, "cores", INTEL_BRIEF, "high", "some reports say 120 usable: profile loihi2_120")
    synaptic_memory_bits: int = _fig(128 * 1024 * 8, "bits", LOCAL_SRAM, "medium",
                                     "128 KiB; the split between synaptic and neuron memory is flexible on chip")
    neuron_memory_bits: int = _fig(64 * 1024 * 8, "bits", FLEX_192, "low", "64 KiB of neuron state per core")
    program_memory_instr: int = _fig(1024, "microcode instructions", ASSUMED + ": neuron microcode store per core",
                                     "low")
    microcode_per_op: int = _fig(8, "microcode instructions per IR op", ASSUMED
                                 + ": an op-library instruction (rescale, lut, rms_apply, ...) expands to <= 8 "
                                 "microcode instructions", "low")
    max_axons_in: int = _fig(32768, "input axons", AXONS, "low", "Loihi 1: 4,096")
    max_axons_out: int = _fig(32768, "routing entries", AXONS, "low",
                              "(neuron, destination core) pairs; Loihi 1: 4,096")
    weight_bits: int = _fig(8, "bits per weight", PAPER, "medium",
                            "ternary weights need only 2 (Lava Dense num_weight_bits can be set lower)")
    sparse_index_bits: int = _fig(13, "bits per sparse synapse index", ASSUMED
                                  + ": a neuron index within a core (log2 8192)", "low")
    row_overhead_bits: int = _fig(32, "bits per stored row", ASSUMED + ": one list header word per (row, synapse group)",
                                  "low")
    state_word_bits: int = _fig(24, "bits", LAVA_STATE, "medium")
    accumulator_bits: int = _fig(32, "bits per dendritic accumulator slot", LAVA_ACC, "medium")
    neuron_overhead_bits: int = _fig(16, "bits per neuron", ASSUMED + ": per-neuron configuration (program pointer, "
                                     "flags)", "low")
    max_msg_bits: int = _fig(24, "bits", LAVA_MSG, "high", "widest graded spike: bounds a partial sum's width")
    sources: dict = field(default_factory=dict, compare=False)   # figure -> (source, confidence) of overrides

    def figure(self, key: str) -> dict:
        f = {x.name: x for x in fields(self)}[key]
        src, conf = self.sources.get(key, (f.metadata["source"], f.metadata["confidence"]))
        return dict(name=key, value=getattr(self, key), unit=f.metadata["unit"], source=src, confidence=conf,
                    note=f.metadata.get("note", ""))

    def figures(self) -> list[dict]:
        return [self.figure(k) for k in FIGURE_KEYS]

    def to_dict(self) -> dict:
        return dict(name=self.name, **{k: getattr(self, k) for k in FIGURE_KEYS},
                    sources={k: list(v) for k, v in self.sources.items()})

    @classmethod
    def from_dict(cls, d: dict, source: str = "layout") -> "HardwareProfile":
        return _profile_from_mapping(d, source, base=cls())


FIGURE_KEYS = tuple(f.name for f in fields(HardwareProfile) if "unit" in f.metadata)
FIGURES: dict[str, dict] = {k: HardwareProfile().figure(k) for k in FIGURE_KEYS}

PROFILES: dict[str, HardwareProfile] = {
    "loihi2": HardwareProfile(),
    "loihi2_120": HardwareProfile(name="loihi2_120", cores_per_chip=120,
                                  sources={"cores_per_chip": (OPEN_NEURO, "medium")}),
}


@dataclass(frozen=True)
class System:
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
    if name is None:
        return None
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in SYSTEMS:
        raise ConfigError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")
    return SYSTEMS[key]


def smallest_system(chips: int) -> System | None:
    fit = [s for s in SYSTEMS.values() if s.chips >= chips]
    return min(fit, key=lambda s: s.chips) if fit else None


# ---- profile files ----------------------------------------------------------------------------------------
_MIN = {"row_overhead_bits": 0, "neuron_overhead_bits": 0, "sparse_index_bits": 1}


def _profile_from_mapping(raw, source: str, base: HardwareProfile) -> HardwareProfile:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a hardware profile must be a JSON object of figures, got {type(raw).__name__}")
    kw: dict = {}
    sources = dict(base.sources)
    for key, val in raw.items():
        if key in ("base", "sources"):
            continue
        if key == "name":
            if not isinstance(val, str) or not val:
                raise ConfigError(f"{source}: 'name' must be a non-empty string, got {val!r}")
            kw["name"] = val
            continue
        if key not in FIGURE_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}; known figures: {', '.join(FIGURE_KEYS)} "
                              "(and 'name', 'base')")
        src, conf = f"hardware profile {source}", "user"
        if isinstance(val, dict):
            extra = set(val) - {"value", "source", "confidence"}
            if extra or "value" not in val:
                raise ConfigError(f"{source}: {key!r} as an object takes 'value' (required), 'source', 'confidence'; "
                                  f"got keys {sorted(val)}")
            src, conf = str(val.get("source", src)), str(val.get("confidence", conf))
            val = val["value"]
        lo = _MIN.get(key, 1)
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ConfigError(f"{source}: {key!r} must be an integer >= {lo}, got {val!r}")
        kw[key] = val
        sources[key] = (src, conf)
    if isinstance(raw.get("sources"), dict):        # as written by to_dict (layout files)
        for k, v in raw["sources"].items():
            if k in FIGURE_KEYS and isinstance(v, (list, tuple)) and len(v) == 2:
                sources[k] = (str(v[0]), str(v[1]))
    return replace(base, sources=sources, **kw)


def load_profile(path) -> HardwareProfile:
    """A hardware profile from a JSON file: {"figure": value or {"value", "source", "confidence"}, ...},
    optionally "name" and "base" (a built-in profile to start from, default loihi2)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: hardware profile file not found")
    raw = read_json(p, ConfigError)
    base_name = raw.get("base", "loihi2") if isinstance(raw, dict) else "loihi2"
    if base_name not in PROFILES:
        raise ConfigError(f"{p}: 'base' is {base_name!r}; choose one of {', '.join(PROFILES)}")
    hw = _profile_from_mapping(raw, str(p), PROFILES[base_name])
    if "name" not in raw:
        hw = replace(hw, name=f"{base_name} + {p.name}")
    return hw


def resolve_profile(spec, overrides: list[str] | None = None) -> HardwareProfile:
    """A built-in profile by name (loihi2, loihi2_120), a JSON file, or the default when None; then
    ``overrides``, "figure=value" strings (the CLI's --hw), for what-if questions without a file."""
    if spec is None:
        hw = PROFILES["loihi2"]
    elif isinstance(spec, HardwareProfile):
        hw = spec
    elif str(spec) in PROFILES:
        hw = PROFILES[str(spec)]
    else:
        hw = load_profile(spec)
    if not overrides:
        return hw
    raw: dict = {}
    for item in overrides:
        key, sep, val = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--hw {item!r}: expected FIGURE=VALUE, e.g. weight_bits=2")
        try:
            raw[key] = int(val)
        except ValueError:
            raise ConfigError(f"--hw {item!r}: VALUE must be an integer") from None
    out = _profile_from_mapping(raw, "--hw", hw)
    return replace(out, name=f"{hw.name} + " + ", ".join(f"{k}={v}" for k, v in raw.items()))


# ---- usage kinds --------------------------------------------------------------------------------------------
KINDS = ("neurons", "neuron_bits", "synapse_bits", "axons_in", "axons_out", "program_instr")
LIMIT_OF = {"neurons": "neurons_per_core", "neuron_bits": "neuron_memory_bits", "synapse_bits": "synaptic_memory_bits",
            "axons_in": "max_axons_in", "axons_out": "max_axons_out", "program_instr": "program_memory_instr"}
LABEL = {"neurons": "neurons", "neuron_bits": "bits of neuron state memory", "synapse_bits": "bits of synaptic memory",
         "axons_in": "input axons", "axons_out": "output routing entries", "program_instr": "microcode instructions"}


def limits(hw: HardwareProfile) -> dict[str, int]:
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


def synapse_format(s: SynapseGroup, hw: HardwareProfile) -> str:
    n_dst = s.shape[0]
    c0, c1 = src_span(s)
    dense = n_dst * (c1 - c0) * hw.weight_bits
    sparse = s.nnz * (hw.weight_bits + hw.sparse_index_bits)
    return "dense" if dense <= sparse else "sparse"


def row_bits(s: SynapseGroup, hw: HardwareProfile) -> np.ndarray:
    """Synaptic memory of each destination row [n_dst] (int64)."""
    n_dst = s.shape[0]
    c0, c1 = src_span(s)
    if synapse_format(s, hw) == "dense":
        return np.full(n_dst, (c1 - c0) * hw.weight_bits + hw.row_overhead_bits, dtype=np.int64)
    return s.row_counts().astype(np.int64) * (hw.weight_bits + hw.sparse_index_bits) + hw.row_overhead_bits


def slice_bits(s: SynapseGroup, a: int, b: int, hw: HardwareProfile) -> int:
    c0, c1 = src_span(s)
    if synapse_format(s, hw) == "dense":
        return (b - a) * ((c1 - c0) * hw.weight_bits + hw.row_overhead_bits)
    return int(s.indptr[b] - s.indptr[a]) * (hw.weight_bits + hw.sparse_index_bits) + (b - a) * hw.row_overhead_bits


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
    return ("count", int(min(c1 - c0, s.indptr[b] - s.indptr[a])), 0)


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
                u["neuron_bits"] += self.table_bits[name]
                u["program_instr"] += self.program[name]
            if fanout is not None and name in fanout:
                f = fanout[name]
                u["axons_out"] += int(f) * n if np.isscalar(f) else int(np.sum(f[a:b]))
        per_src: dict[str, tuple[list, int]] = {}
        for sname, a, b in synapse_slices:
            s = g.synapses[sname]
            u["synapse_bits"] += slice_bits(s, a, b, hw)
            u["synapses"] += int(s.indptr[b] - s.indptr[a])
            kind, x, y = slice_axons(s, a, b)
            iv, cnt = per_src.get(s.src, ([], 0))
            if kind == "interval":
                iv.append((x, y))
            else:
                cnt += x
            per_src[s.src] = (iv, cnt)
        for src, (iv, cnt) in per_src.items():
            u["axons_in"] += min(g.groups[src].size, _union_length(iv) + cnt)
        return {k: int(v) for k, v in u.items()}


def core_cost(neuron_slices, synapse_slices, graph: Graph, hw: HardwareProfile, fanout: dict | None = None,
              costs: Costs | None = None) -> dict:
    """Usage by kind of one core (see the module docstring); pass ``costs`` to reuse per-graph constants."""
    return (costs or Costs(graph, hw)).core(neuron_slices, synapse_slices, fanout)


def outgoing(graph: Graph) -> dict[str, list[SynapseGroup]]:
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
    return bits / 8192.0


def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


__all__ = ["HardwareProfile", "FIGURES", "PROFILES", "SYSTEMS", "System", "load_profile", "resolve_profile",
           "core_cost", "Costs", "limits", "over_limits", "fanout_from_cores", "get_system", "smallest_system"]
