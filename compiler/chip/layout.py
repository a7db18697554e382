"""The layout: which core of which chip holds which neurons and synapse rows, its file, and the checker.

A layout refers to the (fan-in split) graph by name and range only — neuron slices (group, start, stop)
and synapse slices (synapse, row_start, row_stop) — and never copies weights. ``layout.json`` holds the
format name and version, the hardware profile used, every core with its slices and its memory use by
kind, the per-token traffic and the totals.

``check_layout`` is the independent fit checker: it recomputes every core's use from the graph with
``hardware.Costs`` (trusting no stored number), checks it against the profile's limits, and checks that
every neuron of every group and every row of every synapse group is placed exactly once, each synapse row
on the core of its destination neuron.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mflc.ir.errors import MflcError
from mflc.ir.graph import Graph
from mflc.ir.schema import read_json

from .hardware import KINDS, Costs, HardwareProfile, fanout_from_cores, get_system, over_limits

FORMAT = "mflc-layout"
VERSION = 1
WRITTEN_KEYS = ("hardware", "system", "graph", "traffic", "meta", "totals", "cores")


@dataclass(frozen=True)
class NeuronSlice:
    """Neurons start..stop of a group held by one core."""

    group: str
    start: int
    stop: int


@dataclass(frozen=True)
class SynapseSlice:
    """Destination rows row_start..row_stop of a synapse group stored on one core."""

    synapse: str
    row_start: int
    row_stop: int


@dataclass
class Core:
    """One core of the layout: where it is, which neurons and synapse rows it holds, what they use."""

    chip: int
    core: int                                   # index on its chip
    neurons: list[NeuronSlice]
    synapses: list[SynapseSlice]
    usage: dict = field(default_factory=dict)   # kind -> use (see hardware.KINDS; plus "synapses")

    def neuron_tuples(self) -> list[tuple[str, int, int]]:
        """The core's neuron slices as (group, start, stop) tuples."""
        return [(n.group, n.start, n.stop) for n in self.neurons]

    def synapse_tuples(self) -> list[tuple[str, int, int]]:
        """The core's synapse slices as (synapse, row_start, row_stop) tuples."""
        return [(s.synapse, s.row_start, s.row_stop) for s in self.synapses]


@dataclass
class Layout:
    """The placement of a graph on chips and cores, with its hardware profile and traffic: what layout.json holds."""

    cores: list[Core]
    hardware: HardwareProfile
    system: str | None = None
    traffic: dict = field(default_factory=dict)
    graph: dict = field(default_factory=dict)   # totals of the placed graph (groups, neurons, synapses, depth)
    meta: dict = field(default_factory=dict)

    @property
    def n_chips(self) -> int:
        """Number of chips the layout spans."""
        return 1 + max((c.chip for c in self.cores), default=-1)

    def totals(self) -> dict:
        """Cores, chips and every resource summed over the cores."""
        used = {k: int(sum(c.usage.get(k, 0) for c in self.cores)) for k in KINDS + ("synapses",)}
        return dict(cores=len(self.cores), chips=self.n_chips, **used)


# ---- file ----------------------------------------------------------------------------------------------------
def layout_to_dict(layout: Layout) -> dict:
    """The layout as layout.json holds it (format, version, profile, cores, totals)."""
    return dict(format=FORMAT, version=VERSION, hardware=layout.hardware.to_dict(), system=layout.system,
                graph=layout.graph, traffic=layout.traffic, meta=layout.meta, totals=layout.totals(),
                cores=[dict(chip=c.chip, core=c.core, neurons=[list(t) for t in c.neuron_tuples()],
                            synapses=[list(t) for t in c.synapse_tuples()],
                            usage={k: int(v) for k, v in c.usage.items()}) for c in layout.cores])


def save_layout(layout: Layout, path) -> None:
    """Write layout.json (compact: large models have many cores)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(layout_to_dict(layout), indent=None, separators=(",", ":"), default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o).__name__)


def _int(v, where: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise MflcError(f"{where} must be an integer >= {lo}, got {v!r}")
    return v


def _slice(v, where: str):
    if not (isinstance(v, list) and len(v) == 3 and isinstance(v[0], str)):
        raise MflcError(f"{where} must be [name, start, stop], got {v!r}")
    a, b = _int(v[1], f"{where}[1]"), _int(v[2], f"{where}[2]")
    if b <= a:
        raise MflcError(f"{where}: empty or reversed range [{a}, {b})")
    return v[0], a, b


def layout_from_dict(d, source: str = "layout") -> Layout:
    """A layout read back from its JSON, every key checked, errors naming ``source``."""
    if not isinstance(d, dict):
        raise MflcError(f"{source}: a layout must be a JSON object")
    if d.get("format") != FORMAT:
        raise MflcError(f"{source}: field 'format' is {d.get('format')!r}, expected {FORMAT!r}")
    if d.get("version") != VERSION:
        raise MflcError(f"{source}: layout version {d.get('version')!r} not supported (this mflc reads {VERSION})")
    for key in WRITTEN_KEYS:                 # every key save_layout writes: none may pass for a default
        if key not in d:
            raise MflcError(f"{source}: field {key!r} is missing")
    try:
        hw = HardwareProfile.from_dict(d["hardware"], f"{source}: field 'hardware'")
    except MflcError as e:
        raise MflcError(str(e)) from None
    if not isinstance(d["cores"], list):
        raise MflcError(f"{source}: field 'cores' must be a list")
    cores = []
    for i, c in enumerate(d["cores"]):
        w = f"{source}: cores[{i}]"
        if not isinstance(c, dict):
            raise MflcError(f"{w} must be an object")
        for key in ("chip", "core", "neurons", "synapses", "usage"):
            if key not in c:
                raise MflcError(f"{w}: field {key!r} is missing")
        if not isinstance(c["neurons"], list) or not isinstance(c["synapses"], list):
            raise MflcError(f"{w}: 'neurons' and 'synapses' must be lists")
        usage = c["usage"]
        if not isinstance(usage, dict):
            raise MflcError(f"{w}.usage must be an object")
        cores.append(Core(_int(c["chip"], f"{w}.chip"), _int(c["core"], f"{w}.core"),
                          [NeuronSlice(*_slice(v, f"{w}.neurons[{j}]")) for j, v in enumerate(c["neurons"])],
                          [SynapseSlice(*_slice(v, f"{w}.synapses[{j}]")) for j, v in enumerate(c["synapses"])],
                          {str(k): _int(v, f"{w}.usage.{k}") for k, v in usage.items()}))
    system = d.get("system")
    if system is not None and not isinstance(system, str):
        raise MflcError(f"{source}: field 'system' must be a string or null")
    for key in ("traffic", "graph", "meta"):
        if not isinstance(d[key], dict):
            raise MflcError(f"{source}: field {key!r} must be an object")
    lay = Layout(cores, hw, system, d["traffic"], d["graph"], d["meta"])
    stored = d["totals"]
    if not isinstance(stored, dict):
        raise MflcError(f"{source}: field 'totals' must be an object")
    now = lay.totals()
    diff = sorted(k for k in set(now) | set(stored) if stored.get(k) != now.get(k))
    if diff:
        raise MflcError(f"{source}: field 'totals' disagrees with the cores for {', '.join(diff)} "
                        f"(stored {[stored.get(k) for k in diff]}, cores sum to {[now.get(k) for k in diff]})")
    return lay


def load_layout(path) -> Layout:
    """Read and check a layout.json file."""
    p = Path(path)
    if not p.is_file():
        raise MflcError(f"{p}: layout file not found (make one with `mflc compile MODEL --out DIR`)")
    return layout_from_dict(read_json(p, MflcError), str(p))


# ---- the independent checker ------------------------------------------------------------------------------------
def _coverage(what: str, size: int, slices: list[tuple[int, int, int]], label) -> list[str]:
    out = []
    pos = 0
    for a, b, c in sorted(slices):
        if a > pos:
            out.append(f"{what}: [{pos}, {a}) not placed")
        elif a < pos:
            out.append(f"{what}: [{a}, {min(b, pos)}) placed more than once (again on {label(c)})")
        pos = max(pos, b)
    if pos < size:
        out.append(f"{what}: [{pos}, {size}) not placed")
    if pos > size:
        out.append(f"{what}: placed up to {pos}, beyond its size {size}")
    return out


def check_layout(layout: Layout, graph: Graph, hw: HardwareProfile | None = None) -> list[str]:
    """Every problem of ``layout`` for ``graph`` on ``hw`` (default: the layout's own profile)."""
    hw = hw or layout.hardware
    problems: list[str] = []

    def label(ci: int) -> str:
        """A core named as problem messages name it."""
        c = layout.cores[ci]
        return f"core (chip {c.chip}, core {c.core})"

    seen: dict[tuple[int, int], int] = {}
    for ci, c in enumerate(layout.cores):
        if c.core >= hw.cores_per_chip:
            problems.append(f"{label(ci)}: core index {c.core} beyond the chip's {hw.cores_per_chip} cores")
        if (c.chip, c.core) in seen:
            problems.append(f"{label(ci)}: used twice (cores[{seen[(c.chip, c.core)]}] and cores[{ci}])")
        seen[(c.chip, c.core)] = ci
    nsl: dict[str, list] = {n: [] for n in graph.groups}
    ssl: dict[str, list] = {n: [] for n in graph.synapses}
    for ci, c in enumerate(layout.cores):
        for ns in c.neurons:
            if ns.group not in graph.groups:
                problems.append(f"{label(ci)}: neuron group {ns.group!r} does not exist in the graph")
            else:
                nsl[ns.group].append((ns.start, ns.stop, ci))
        for ss in c.synapses:
            if ss.synapse not in graph.synapses:
                problems.append(f"{label(ci)}: synapse group {ss.synapse!r} does not exist in the graph")
            else:
                ssl[ss.synapse].append((ss.row_start, ss.row_stop, ci))
    core_of = {}
    for name, grp in graph.groups.items():
        problems += _coverage(f"group {name} neurons", grp.size, nsl[name], label)
        arr = np.full(grp.size, -1, np.int64)
        for a, b, ci in nsl[name]:
            arr[a:min(b, grp.size)] = ci
        core_of[name] = arr
    for name, s in graph.synapses.items():
        problems += _coverage(f"synapse {name} rows", s.shape[0], ssl[name], label)
        home = core_of.get(s.dst)
        if home is None:
            continue
        for a, b, ci in ssl[name]:
            if np.any(home[a:min(b, s.shape[0])] != ci):
                problems.append(f"synapse {name} rows [{a}, {b}) are on {label(ci)}, but their destination neurons "
                                f"of {s.dst} are not all there")
    if problems:                       # usage is meaningless for a broken assignment
        return problems
    costs = Costs(graph, hw)
    fan = fanout_from_cores(graph, [c.neuron_tuples() for c in layout.cores])
    for ci, c in enumerate(layout.cores):
        u = costs.core(c.neuron_tuples(), c.synapse_tuples(), fan)
        problems += over_limits(u, hw, label(ci))
        if not c.usage:                # an in-memory layout that stores none
            continue
        stale = sorted(k for k in set(u) | set(c.usage) if c.usage.get(k) != u.get(k))
        if stale:
            show = lambda v: "none" if v is None else f"{v:,}"  # noqa: E731
            problems.append(f"{label(ci)}: stored usage differs from the recomputed one for "
                            + ", ".join(f"{k} ({show(c.usage.get(k))} stored, {show(u.get(k))} recomputed)" for k in stale))
    if layout.system:
        try:
            sysobj = get_system(layout.system)
        except MflcError as e:
            problems.append(str(e))
        else:
            if layout.n_chips > sysobj.chips:
                problems.append(f"the layout uses {layout.n_chips} chips, more than {sysobj.name}'s {sysobj.chips}")
    return problems
