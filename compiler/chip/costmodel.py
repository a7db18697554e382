"""Throughput, latency and energy of a placed IR on a Loihi 2 system: the cost model.

Inputs: a graph, a core map (``mflc.ir.coremap.CoreMap``: which core of which chip holds which neurons, from
the compiler's layout or from ``packed_core_map`` below) and an activity profile: the mean work per token that each core does at each
pipeline stage, a list of dicts {core, stage, synops, neuron_updates, msgs_on_core, msgs_on_chip,
msgs_between_chips, payload_bits}. The simulator measures it on real tokens
(``Counters.per_token_profile()``); ``assumed_profile`` derives it from the structure and assumed
non-zero message rates when nothing was simulated.

Time. Loihi 2 runs in barrier-synchronised algorithmic steps; a step ends when the slowest core has
done its work, the chip-to-chip links have carried theirs, and the barrier has completed:

    work(c, S)  = Σ_{s∈S} synops(c,s)·t_synop + updates(c,s)·t_neuron_update + msgs(c,s)·t_msg
    links(k, S) = Σ_{s∈S} Σ_{c on chip k} msgs_between_chips(c,s)·msg_wire_bits / offchip_bw
    T(S)        = max(max_c work(c, S), max_k links(k, S)) + T_barrier(chips)

where S is the set of pipeline stages active in that step (graph timing contract: the token injected at
step τ runs stage s at step τ + s). Generation (one token waits for the previous): S = {s} at step s,
so a token takes Σ_s T({s}) over the ``graph.depth`` stages. Prefill (a token enters every step): in
steady state every stage is active, T_prefill = T(all stages), throughput 1/T_prefill. The time to first
token of a P-token prompt is the exact pipeline schedule: steps 0 … P+depth−2, step t running stages
max(0, t−P+1) … min(depth−1, t); it is ≈ (P−1)·T_prefill + T_generation. Work within a core is added
(synaptic input, neuron updates and spike generation are sequential phases of a core's step); Timcheck
et al. (2026) bound the same quantities by their maximum instead (a lower bound). Barrier:
T_barrier = t_barrier_chip + t_barrier_chip_hop · diameter of the chip mesh (chips in a near-square grid).

Energy per token: Σ activity · energy per operation (synop, neuron update, message on a core, across a
chip, between chips) plus static power · chips · the time the system spends on that token (generation or
prefill). Every constant is a ``Constant`` with value, unit, source, confidence and a plausible range;
``load_cost_params`` overrides any of them from a JSON file. The defaults are public figures: Loihi 1
per-operation measurements (Davies et al. 2018) scaled by the speed-ups Intel states for Loihi 2 where
Intel states one, Loihi 1 energies as a clearly labelled fallback (no Loihi 2 per-operation energy is
public). Nothing here is fitted to the paper's result figures; docs/estimates.md compares them.

Not modelled: host input/output per token (the embedding row written and the logits read), barrier
energy (unpublished), message receipt cost on the destination core beyond its synaptic operations,
contention on the on-chip mesh, and neuron programs' length (every update costs the same).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from mflc.ir.coremap import CoreMap
from mflc.ir.errors import ConfigError
from mflc.ir.graph import Graph
from mflc.ir.modes import Send

from . import gpu_baseline as gb
from .constant import Constant

# ---- sources ----------------------------------------------------------------------------------------
DAVIES_2018 = ("M. Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro "
               "38(1), 2018, Table 2 (Loihi 1, 14 nm; pre-silicon SDF/SPICE at 0.75 V, consistent with early silicon)")
INTEL_BRIEF = ("Intel Labs, 'Taking neuromorphic computing to the next level with Loihi 2', technology brief (2021): "
               "Loihi 2 over Loihi 1 '2x' neuron updates, '5x' synaptic operations, '10x' spike generation, "
               "chip-wide time steps 'under 200 ns', 4x faster chip-to-chip signalling; 128 cores, <= 8192 neurons "
               "and 128 KB synaptic memory per core")
FRADY_2020 = ("E. P. Frady et al., 'Neuromorphic nearest-neighbor search using Intel's Pohoiki Springs', NICE 2020 "
              "(Loihi 1, measured): static power 3.34 W for 32 chips; barrier 14.3 us across a 4x64-chip column "
              "(diameter 66 chip hops) and 16.2 us across 12x64 chips (74 hops), i.e. 0.22 us per chip hop")
HALA_POINT = ("Intel, Hala Point announcement (Apr 2024): 1,152 Loihi 2 chips, 140,544 cores, 2,600 W maximum, "
              "380e12 8-bit synaptic ops/s, 240e12 neuron ops/s, 5 TB/s chip-to-chip bandwidth")
SANAFE_2025 = ("J. A. Boyle et al., 'SANA-FE', IEEE TCAD 44(8), 2025: Loihi 1 costs fitted on Nahuku boards, "
               "shipped as SANA-FE arch/loihi.yaml (spike out 30 ns / 69.3 pJ, dense synapse 3.8 ns / 35.5 pJ)")
TIMCHECK_2026 = ("J. Timcheck, A. Pierro, S. B. Shrestha, 'A compute and communication runtime model for Loihi 2', "
                 "arXiv:2601.10035 (2026): 8x4 router grid, four cores per router, dimension-order routing")
IBM_IO = ("IBM Research, 'A 1.4-pJ/b power-scalable 16x12-Gb/s source-synchronous I/O in 32 nm SOI CMOS': "
          "1.9 pJ/b over 20-inch PCB traces (a stand-in: Loihi 2's chip-to-chip link energy is not public)")

# Mean Manhattan distance between two uniformly random routers of Loihi 2's 8x4 router grid
# (TIMCHECK_2026): (8²-1)/(3·8) + (4²-1)/(3·4) = 2.625 + 1.25.
MEAN_ROUTER_HOPS = (8 * 8 - 1) / (3 * 8) + (4 * 4 - 1) / (3 * 4)
MEAN_HOP_ENERGY = 3.5e-12          # Davies 2018: 3.0 pJ E-W, 4.0 pJ N-S per tile hop


def _gpu_default():
    return gb.JETSON_ORIN_NANO_8GB


# Fraction of neurons of each role (``NeuronGroup.meta["role"]``) that send a non-zero message per token.
# Measured with ``RateMeter`` on random HGRN-Bit models (hidden 128, 2 layers, vocabulary 512,
# tests/util.py random_weights seeds 0 and 1, quantized with default QuantOptions on 64 random tokens,
# then run on 64 other random tokens each; mean of the two seeds). A trained model's rates should replace
# them (``RateMeter`` on real text, or a profile measured by the simulator). Roles not listed: 1.0.
RATE_SOURCE = ("measured with costmodel.RateMeter on random HGRN-Bit models (hidden 128, 2 layers, vocab 512, "
               "seeds 0 and 1, 64 random tokens each, default QuantOptions); not a trained model")
DEFAULT_RATES = {
    "input": 0.980, "norm.square": 0.922, "norm.rsqrt": 1.0, "norm.apply": 0.882, "mlgru": 0.973,
    "projection": 0.983, "residual": 0.983, "glu": 0.866, "logits": 0.997,
}


def _rate_constants() -> dict[str, Constant]:
    return {r: Constant(v, "1", RATE_SOURCE, "low", 0.0, 1.0) for r, v in DEFAULT_RATES.items()}


@dataclass(frozen=True)
class CostParams:
    """Every constant of the Loihi 2 cost model (plus the GPU baseline's and the activity rates)."""

    # ---- time ----
    t_synop: Constant = Constant(
        0.7e-9, "s", f"{DAVIES_2018}: 'time per synaptic spike op (max) 3.5 ns', / 5 ({INTEL_BRIEF})", "low",
        0.37e-9, 3.5e-9, "per synaptic operation on the receiving core; low end: Hala Point peak "
        "380e12 synops/s over 140,544 cores; high end: Loihi 1")
    t_neuron_update: Constant = Constant(
        4.2e-9, "s", f"{DAVIES_2018}: 'time per neuron update (active) 8.4 ns', / 2 ({INTEL_BRIEF})", "low",
        0.59e-9, 8.4e-9, "per neuron program execution; low end: Hala Point 240e12 neuron ops/s over 140,544 "
        "cores (if an 'op' is a whole update); high end: Loihi 1")
    t_msg: Constant = Constant(
        3.0e-9, "s", f"{SANAFE_2025}: spike-out 30 ns, / 10 ({INTEL_BRIEF})", "low", 2.1e-9, 30e-9,
        "per message sent (one per source neuron and destination core) on the sending core; low end: Davies "
        "2018 within-tile spike latency 2.1 ns; high end: Loihi 1 fitted")
    t_barrier_chip: Constant = Constant(
        200e-9, "s", f"{INTEL_BRIEF}: minimum chip-wide time step 'under 200 ns'", "medium", 113e-9, 465e-9,
        "barrier synchronisation of one chip per step; range: Davies 2018 Loihi 1, 113-465 ns for 1-32 tiles")
    t_barrier_chip_hop: Constant = Constant(
        55e-9, "s", f"{FRADY_2020}; / 4 ({INTEL_BRIEF})", "low", 55e-9, 220e-9,
        "added per chip hop of the chip mesh's diameter (chips assumed in a near-square 2-D grid)")
    offchip_bw: Constant = Constant(
        34.7e9, "bit/s", f"{HALA_POINT}: 5 TB/s x 8 / 1152 chips", "medium", 17e9, 70e9,
        "chip-to-chip bandwidth per chip (all its links), shared by the messages its cores send off-chip")
    msg_wire_bits: Constant = Constant(
        64.0, "bit", "assumption: Loihi 1 messages are 32 bits with addressing (Davies et al., Proc. IEEE 2021); "
        "a graded spike of up to 24 bits plus addressing is assumed to take 64", "low", 32.0, 64.0)
    # ---- energy ----
    e_synop: Constant = Constant(
        23.6e-12, "J", f"{DAVIES_2018}: 'energy per synaptic spike op (min) 23.6 pJ' (Loihi 1 fallback)", "low",
        6.8e-12, 35.5e-12, "low end: Hala Point 2,600 W / 380e12 synops/s (an upper bound for Loihi 2 at "
        "peak load); high end: SANA-FE fitted Loihi 1 dense synapse")
    e_neuron_update: Constant = Constant(
        81e-12, "J", f"{DAVIES_2018}: 'energy per neuron update (active) 81 pJ' (Loihi 1 fallback)", "low",
        52e-12, 81e-12, "low end: Loihi 1 inactive update")
    e_msg_core: Constant = Constant(
        1.7e-12, "J", f"{DAVIES_2018}: 'within-tile spike energy 1.7 pJ' (Loihi 1 fallback)", "low",
        1.7e-12, 69.3e-12, "message to a core of the same tile/core; high end: SANA-FE fitted spike out")
    e_msg_chip: Constant = Constant(
        1.7e-12 + MEAN_ROUTER_HOPS * MEAN_HOP_ENERGY, "J",
        f"{DAVIES_2018}: 1.7 pJ + 3.875 mean hops x 3.5 pJ per tile hop (3.0 E-W / 4.0 N-S); mean hops of an "
        f"8x4 router grid ({TIMCHECK_2026})", "low", 1.7e-12 + 3.0e-12, 1.7e-12 + 10 * 4.0e-12,
        "message to another core of the same chip; range: 1 hop to the grid's diameter of 10 hops")
    e_link_bit: Constant = Constant(
        1.9e-12, "J/bit", IBM_IO, "low", 0.3e-12, 1.9e-12,
        "a message between chips costs 2 x e_msg_chip (to the edge, from the edge) + msg_wire_bits x e_link_bit; "
        "low end: NVIDIA's 0.297 pJ/bit die-to-die link (5 nm, VLSI 2022), a shorter reach than board traces")
    p_static_chip: Constant = Constant(
        0.104, "W", f"{FRADY_2020}: 3.34 W / 32 chips (Loihi 1 leakage, fallback)", "low", 0.104, 2.26,
        "charged per chip for the time spent; high end: Hala Point 2,600 W maximum / 1152 chips (everything)")
    # ---- the comparison and the activity assumptions ----
    gpu: object = field(default_factory=_gpu_default)            # gpu_baseline.GpuParams
    rates: dict = field(default_factory=_rate_constants)          # role -> Constant (non-zero message rate)

    LOIHI = ("t_synop", "t_neuron_update", "t_msg", "t_barrier_chip", "t_barrier_chip_hop", "offchip_bw",
             "msg_wire_bits", "e_synop", "e_neuron_update", "e_msg_core", "e_msg_chip", "e_link_bit",
             "p_static_chip")

    def v(self, name: str) -> float:
        """A constant's value in SI units, by field name."""
        return float(getattr(self, name).value)

    @property
    def e_msg_between_chips(self) -> float:
        """Energy of one chip-to-chip message: on-chip routing at both ends plus the wire bits."""
        return 2 * self.v("e_msg_chip") + self.v("msg_wire_bits") * self.v("e_link_bit")

    def rate(self, role) -> float:
        """The assumed non-zero message rate of a group role (1 if none is given)."""
        c = self.rates.get(role)
        return 1.0 if c is None else float(c.value)

    def table(self) -> list[dict]:
        """Every constant as a row: name, value, unit, range, confidence, source."""
        rows = [dict(name=n, **getattr(self, n).as_dict()) for n in self.LOIHI]
        rows += [dict(name=f"gpu.{n}", **c.as_dict()) for n, c in self.gpu.constants().items()]
        rows += [dict(name=f"rates.{r}", **c.as_dict()) for r, c in sorted(self.rates.items())]
        return rows


BIGGER_IS_FASTER = ("offchip_bw",)


def bound_params(p: CostParams, optimistic: bool) -> CostParams:
    """Every Loihi constant at the end of its range that favours Loihi (``optimistic``) or disfavours it:
    the spread of the estimate that the constants' uncertainty alone allows."""
    kw = {}
    for n in CostParams.LOIHI:
        c = getattr(p, n)
        if c.low is None or c.high is None:
            continue
        want_low = optimistic != (n in BIGGER_IS_FASTER)
        kw[n] = replace(c, value=float(c.low if want_low else c.high))
    return replace(p, **kw)


def _parse_constant(key: str, old: Constant | None, raw, unit: str = "1") -> Constant:
    if isinstance(raw, bool):
        raise ConfigError(f"cost parameter {key!r}: expected a number or an object with 'value', got {raw!r}")
    if isinstance(raw, (int, float)):
        value, source, conf = raw, None, None
    elif isinstance(raw, dict):
        extra = set(raw) - {"value", "source", "confidence", "unit", "low", "high", "note"}
        if extra:
            raise ConfigError(f"cost parameter {key!r}: unknown field(s) {', '.join(sorted(extra))}")
        if "value" not in raw:
            raise ConfigError(f"cost parameter {key!r}: object needs a 'value'")
        value, source, conf = raw["value"], raw.get("source"), raw.get("confidence")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"cost parameter {key!r}: 'value' must be a number, got {value!r}")
        if old is not None and raw.get("unit") not in (None, old.unit):
            raise ConfigError(f"cost parameter {key!r}: unit {raw['unit']!r} differs from {old.unit!r} (use SI)")
    else:
        raise ConfigError(f"cost parameter {key!r}: expected a number or an object with 'value', got {raw!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"cost parameter {key!r}: value {value} must be finite and >= 0")
    if old is None:
        old = Constant(value, unit, "user", "user")
    c = old.with_value(value, source, conf)
    if isinstance(raw, dict):
        c = replace(c, low=raw.get("low", c.low), high=raw.get("high", c.high), note=raw.get("note", c.note))
    return c


def cost_params_from_dict(raw: dict, base: CostParams | None = None, source: str = "cost parameters") -> CostParams:
    """Apply overrides: {"t_synop": 1e-9, "e_synop": {"value": .., "source": ..}, "gpu": {..}, "rates": {..}}."""
    base = base or CostParams()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    try:
        return _cost_params_from_dict(raw, base, source)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def _cost_params_from_dict(raw: dict, base: CostParams, source: str) -> CostParams:
    kw = {}
    for key, val in raw.items():
        if key == "gpu":
            if not isinstance(val, dict):
                raise ConfigError(f"{source}: 'gpu' must be an object")
            gconst = base.gpu.constants()
            gkw = {}
            for gk, gv in val.items():
                if gk == "name":
                    gkw["name"] = str(gv)
                    continue
                if gk not in gconst:
                    raise ConfigError(f"{source}: unknown GPU parameter 'gpu.{gk}'; known: {', '.join(gconst)}")
                gkw[gk] = _parse_constant(f"gpu.{gk}", gconst[gk], gv)
            kw["gpu"] = replace(base.gpu, **gkw)
        elif key == "rates":
            if not isinstance(val, dict):
                raise ConfigError(f"{source}: 'rates' must be an object role -> fraction")
            rates = dict(base.rates)
            for role, rv in val.items():
                c = _parse_constant(f"rates.{role}", rates.get(role), rv)
                if c.value > 1:
                    raise ConfigError(f"{source}: rate 'rates.{role}' = {c.value} is above 1")
                rates[role] = c
            kw["rates"] = rates
        elif key in CostParams.LOIHI:
            kw[key] = _parse_constant(key, getattr(base, key), val)
        else:
            raise ConfigError(f"{source}: unknown cost parameter {key!r}; known: "
                              f"{', '.join(CostParams.LOIHI)}, gpu, rates")
    return replace(base, **kw)


def load_cost_params(path, base: CostParams | None = None) -> CostParams:
    """Read a JSON override file (see ``cost_params_from_dict``); an unknown key is a ConfigError naming it."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"cost parameter file {p} does not exist") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cost parameter file {p}: not UTF-8 text (byte {e.start}: {e.reason}); expected a JSON object") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"cost parameter file {p}: not valid JSON ({e})") from None
    return cost_params_from_dict(raw, base, source=f"cost parameter file {p}")


# ---- core maps ---------------------------------------------------------------------------------------
# The stand-in placement's limits are figures of the hardware profile (mflc.ir.hardware): neurons_per_core,
# synaptic_memory_bits / weight_bits synapses, cores_per_chip and estimate_routes_per_core (Loihi 1's
# 4,096 output routes, a cost assumption distinct from the layout's max_axons_out).


def _fanout_per_neuron(g: Graph, max_neurons: int, max_synapses: int) -> dict[str, int]:
    """Destination cores each neuron's message must reach, from an estimate of how many cores each
    destination group will take (its neurons and incoming synapses against a core's limits)."""
    syn_in = defaultdict(int)
    for s in g.synapses.values():
        syn_in[s.dst] += s.nnz
    est = {n: max(1, -(-grp.size // max_neurons), -(-syn_in[n] // max_synapses)) for n, grp in g.groups.items()}
    fan = {n: 0 for n in g.groups}
    for s in g.synapses.values():
        n_dst, n_src = s.shape
        one_each = s.nnz == n_dst == n_src and bool(np.all(s.row_counts() == 1))
        fan[s.src] += 1 if (one_each or n_dst == 1) else est[s.dst]
    return fan


def packed_core_map(g: Graph, max_neurons: int | None = None, max_synapses: int | None = None,
                    cores_per_chip: int | None = None, max_fanout: int | None = None, hw=None) -> CoreMap:
    """A stand-in placement for estimates (not the compiler's layout): groups in graph order, cut into row
    slices and packed first-fit onto cores, a core holding at most ``max_neurons`` neurons,
    ``max_synapses`` incoming synapses and ``max_fanout`` outgoing (neuron, destination core) routes
    (destination cores estimated from each destination group's size); cores fill chips in order. A limit
    not given is read from the hardware profile ``hw`` (default: loihi2): neurons_per_core,
    synaptic_memory_bits // weight_bits (128 KB of 8-bit weights), cores_per_chip, estimate_routes_per_core.

    Kept, though ``mflc estimate`` uses the real layout: ``estimate_doc_tables`` reproduces the stand-in
    tables of docs/estimates.md with it, and the real placement (place.layout_graph) gives other figures
    (370M: 2,714 stand-in cores against the layout's 2,805 at 8-bit weights), so it cannot replace it there."""
    from mflc.ir.hardware import DEFAULT

    hw = DEFAULT if hw is None else hw
    max_neurons = hw.neurons_per_core if max_neurons is None else max_neurons
    max_synapses = hw.synaptic_memory_bits // hw.weight_bits if max_synapses is None else max_synapses
    cores_per_chip = hw.cores_per_chip if cores_per_chip is None else cores_per_chip
    max_fanout = hw.estimate_routes_per_core if max_fanout is None else max_fanout
    rows: dict[str, np.ndarray] = {n: np.zeros(grp.size, np.int64) for n, grp in g.groups.items()}
    for s in g.synapses.values():
        rows[s.dst] += s.row_counts()
    fan = _fanout_per_neuron(g, max_neurons, max_synapses)
    slices: dict[str, list] = {n: [] for n in g.groups}
    core, n_used, s_used, f_used = 0, 0, 0, 0
    for name, grp in g.groups.items():
        cum = np.cumsum(rows[name])
        f = fan[name]
        if f > max_fanout:
            raise ConfigError(f"a neuron of group {name} reaches ~{f} cores, more than a core's {max_fanout} routes")
        start = 0
        while start < grp.size:
            base = cum[start - 1] if start else 0
            k_syn = int(np.searchsorted(cum[start:] - base, max_synapses - s_used, side="right"))
            k_fan = (max_fanout - f_used) // f if f else grp.size
            k = min(max_neurons - n_used, k_syn, k_fan, grp.size - start)
            if k <= 0:
                if n_used == 0 and s_used == 0 and f_used == 0:
                    raise ConfigError(f"neuron {start} of group {name} has {rows[name][start]} incoming synapses, "
                                      f"more than a core's {max_synapses}")
                core, n_used, s_used, f_used = core + 1, 0, 0, 0
                continue
            slices[name].append((start, start + k, core))
            n_used += k
            s_used += int(cum[start + k - 1] - base)
            f_used += k * f
            start += k
    return CoreMap(slices, np.arange(core + 1, dtype=np.int64) // cores_per_chip)


# ---- activity ----------------------------------------------------------------------------------------
FIELDS = ("synops", "neuron_updates", "msgs_on_core", "msgs_on_chip", "msgs_between_chips", "payload_bits")


class RateMeter:
    """A trace hook for the simulator (``Engine.run(..., trace=meter)``) that measures, per group role,
    the fraction of neurons whose message is non-zero: the ``rates`` of ``assumed_profile``."""

    def __init__(self, g: Graph):
        self.g = g
        self.nonzero: dict[str, int] = defaultdict(int)
        self.total: dict[str, int] = defaultdict(int)
        self._last: dict[str, np.ndarray] = {}

    def __call__(self, t, k, name, out) -> None:
        grp = self.g.groups[name]
        msg = np.asarray(out)
        if grp.send == Send.DELTA:
            prev = self._last.get(name)
            self._last[name] = msg.copy()
            msg = msg - (prev if prev is not None else 0)
        role = grp.meta.get("role", "?")
        self.nonzero[role] += int(np.count_nonzero(msg))
        self.total[role] += int(msg.size)

    def rates(self) -> dict[str, float]:
        """Measured fraction of non-zero messages per role, to feed back as assumed rates."""
        return {r: self.nonzero[r] / self.total[r] for r in self.total if self.total[r]}


def _slices(core_map, name):
    return sorted(core_map.slices[name])


def _reach(g: Graph, core_map, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(source neuron, destination core) pairs, one message each per token it is non-zero: the engine's
    rule. For virtual (skeleton) synapses every source reaches every core holding a non-empty slice.
    (The definition ``assumed_profile`` counts, by intervals, without listing the pairs.)"""
    n_src = g.groups[name].size
    pairs = []
    for s in g.outgoing(name):
        for lo, hi, core in _slices(core_map, s.dst):
            a, b = int(s.indptr[lo]), int(s.indptr[hi])
            if a == b:
                continue
            if s.virtual:
                cols = np.arange(n_src, dtype=np.int64)
            else:
                cols = np.flatnonzero(np.bincount(s.indices[a:b], minlength=n_src))
            pairs.append(cols * (1 << 24) + core)
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = np.unique(np.concatenate(pairs))
    return p >> 24, p & ((1 << 24) - 1)


def _reach_runs(n_src: int, out_syns, sorted_slices: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of ``_reach`` as disjoint runs of source neurons per destination core: arrays (lo, hi,
    core), sorted by core, the runs of one core merged, so that Σ (hi - lo) counts each pair once."""
    lo, hi, core = [], [], []
    for s in out_syns:
        for a_row, b_row, c in sorted_slices[s.dst]:
            a, b = int(s.indptr[a_row]), int(s.indptr[b_row])
            if a == b:
                continue
            if s.virtual:
                lo.append(np.array([0]))
                hi.append(np.array([n_src]))
            else:
                cols = np.flatnonzero(np.bincount(s.indices[a:b], minlength=n_src))
                brk = np.flatnonzero(np.diff(cols) != 1) + 1
                lo.append(cols[np.concatenate([[0], brk])])
                hi.append(cols[np.concatenate([brk - 1, [cols.size - 1]])] + 1)
            core.append(np.full(lo[-1].size, c, np.int64))
    if not lo:
        z = np.zeros(0, np.int64)
        return z, z, z
    lo, hi, core = (np.concatenate(x).astype(np.int64) for x in (lo, hi, core))
    big = n_src + 1                      # one core's runs above every earlier core's: a running max per core
    order = np.lexsort((lo, core))
    lo, hi, core = lo[order] + core[order] * big, hi[order] + core[order] * big, core[order]
    reach = np.maximum.accumulate(hi)
    start = np.concatenate([[True], lo[1:] > reach[:-1]])
    first = np.flatnonzero(start)
    last = np.concatenate([first[1:] - 1, [lo.size - 1]])
    c = core[first]
    return lo[first] - c * big, reach[last] - c * big, c


def _class_counts(src_slices, runs, chip: np.ndarray) -> dict[int, dict[int, int]]:
    """{field: {source core: pairs}} of the runs: field 2 the pairs whose source neuron sits on the
    destination core, 3 another core of its chip, 4 another chip (the classes ``assumed_profile`` counts)."""
    lo, hi, dst = runs
    out: dict[int, dict[int, int]] = {2: {}, 3: {}, 4: {}}
    if lo.size == 0:
        return out
    sa = np.array([x[0] for x in src_slices], np.int64)
    sb = np.array([x[1] for x in src_slices], np.int64)
    sc = np.array([x[2] for x in src_slices], np.int64)
    step = max(1, (1 << 22) // lo.size)
    for k in range(0, sa.size, step):
        a, b, c = sa[k:k + step, None], sb[k:k + step, None], sc[k:k + step, None]
        ov = np.maximum(0, np.minimum(b, hi[None]) - np.maximum(a, lo[None]))
        cls = np.where(c == dst[None], 2, np.where(chip[c] == chip[dst][None], 3, 4))
        for fi in (2, 3, 4):
            per = (ov * (cls == fi)).sum(axis=1)
            for core, n in zip(c[:, 0].tolist(), per.tolist()):
                if n:
                    out[fi][core] = out[fi].get(core, 0) + n
    return out


def _rate_of(rates):
    """The role -> rate function of ``assumed_profile``'s ``rates`` argument."""
    if rates is None:
        return lambda role: DEFAULT_RATES.get(role, 1.0)
    if isinstance(rates, CostParams):
        return rates.rate
    if isinstance(rates, (int, float)):
        return lambda role: float(rates)
    return lambda role: float(rates.get(role, DEFAULT_RATES.get(role, 1.0)))


def assumed_profile(g: Graph, core_map, rates=None) -> list[dict]:
    """Mean work per token of every (core, stage) from the structure and non-zero message rates.

    ``rates``: a ``CostParams`` (its ``rates``), a dict role -> fraction, a single fraction for every
    role, or None (``DEFAULT_RATES``). A group of role r sends rate(r)·size messages per destination core
    it reaches; each live message drives its synapses on the receiving cores (synops = nnz·rate of the
    source, counted at the source's stage like the simulator); every neuron updates once per token.
    The (source neuron, destination core) pairs of ``_reach`` are counted as runs of neurons
    (``_reach_runs``), in the same order of additions, so the figures are the same floats."""
    from .hardware import outgoing

    rate = _rate_of(rates)
    chip = np.asarray(core_map.chip_of_core)
    by_src = outgoing(g)
    sorted_slices = {n: sorted(v) for n, v in core_map.slices.items()}
    acc: dict[tuple[int, int], np.ndarray] = defaultdict(lambda: np.zeros(len(FIELDS)))
    for name, grp in g.groups.items():
        r = rate(grp.meta.get("role"))
        st = grp.stage
        for a, b, c in core_map.slices[name]:
            acc[(int(c), st)][1] += b - a
        for s in by_src.get(name, []):
            for lo, hi, core in sorted_slices[s.dst]:
                nnz = int(s.row_offsets()[hi] - s.row_offsets()[lo])
                if nnz:
                    acc[(int(core), st)][0] += nnz * r
        runs = _reach_runs(grp.size, by_src.get(name, []), sorted_slices)
        if runs[0].size == 0:
            continue
        core_map.core_of_neurons(name, grp.size)          # every source neuron placed (a ConfigError otherwise)
        counts = _class_counts(core_map.slices[name], runs, chip)
        for fi in (2, 3, 4):
            for c in sorted(counts[fi]):
                n = counts[fi][c]
                acc[(c, st)][fi] += n * r
                acc[(c, st)][5] += n * r * grp.out_bits
    return [dict(core=c, stage=st, **{f: float(v) for f, v in zip(FIELDS, row)})
            for (c, st), row in sorted(acc.items())]


def assumed_profile_direct(g: Graph, core_map, rates=None) -> list[dict]:
    """``assumed_profile`` by listing every (source neuron, destination core) pair (``_reach``): the
    definition the run-counting one is tested against."""
    rate = _rate_of(rates)
    chip = np.asarray(core_map.chip_of_core)
    acc: dict[tuple[int, int], np.ndarray] = defaultdict(lambda: np.zeros(len(FIELDS)))
    for name, grp in g.groups.items():
        r = rate(grp.meta.get("role"))
        st = grp.stage
        for a, b, c in core_map.slices[name]:
            acc[(int(c), st)][1] += b - a
        for s in g.outgoing(name):
            for lo, hi, core in _slices(core_map, s.dst):
                nnz = int(s.row_offsets()[hi] - s.row_offsets()[lo])
                if nnz:
                    acc[(int(core), st)][0] += nnz * r
        src, dst = _reach(g, core_map, name)
        if src.size == 0:
            continue
        sc = core_map.core_of_neurons(name, grp.size)[src]
        cls = np.where(sc == dst, 2, np.where(chip[sc] == chip[dst], 3, 4))
        for fi in (2, 3, 4):
            sel = cls == fi
            if np.any(sel):
                cores, counts = np.unique(sc[sel], return_counts=True)
                for c, n in zip(cores.tolist(), counts.tolist()):
                    acc[(c, st)][fi] += n * r
                    acc[(c, st)][5] += n * r * grp.out_bits
    return [dict(core=c, stage=st, **{f: float(v) for f, v in zip(FIELDS, row)})
            for (c, st), row in sorted(acc.items())]


# ---- time and energy ---------------------------------------------------------------------------------
def chip_grid_diameter(chips: int) -> int:
    """Hops across a near-square 2-D grid of ``chips`` chips (the barrier's reach)."""
    if chips <= 1:
        return 0
    a = math.ceil(math.sqrt(chips))
    b = math.ceil(chips / a)
    return (a - 1) + (b - 1)


def barrier_time(chips: int, p: CostParams) -> float:
    """Time of one chip-wide barrier: a fixed part plus a per-hop part over the chip grid's diameter."""
    return p.v("t_barrier_chip") + p.v("t_barrier_chip_hop") * chip_grid_diameter(chips)


def _matrices(profile, n_cores: int, depth: int, chip_of_core: np.ndarray, p: CostParams):
    """Per (core, stage) work seconds, split by kind, and per (chip, stage) off-chip link seconds: each
    row's products as ``_matrices_direct`` forms them, added with np.add.at (in row order, so repeated
    (core, stage) rows sum as the loop does)."""
    syn, upd, msg = (np.zeros((n_cores, depth)) for _ in range(3))
    n_chips = int(chip_of_core.max()) + 1 if chip_of_core.size else 1
    link = np.zeros((n_chips, depth))
    if not profile:
        return syn, upd, msg, link
    col = {f: np.fromiter((r[f] for r in profile), np.float64, len(profile)) for f in FIELDS}
    c = np.fromiter((int(r["core"]) for r in profile), np.int64, len(profile))
    st = np.fromiter((int(r["stage"]) for r in profile), np.int64, len(profile))
    bad = np.flatnonzero((c < 0) | (c >= n_cores) | (st < 0) | (st >= depth))
    if bad.size:
        k = int(bad[0])
        raise ConfigError(f"activity profile names core {c[k]} stage {st[k]}, outside {n_cores} cores x {depth} stages")
    np.add.at(syn, (c, st), col["synops"] * p.v("t_synop"))
    np.add.at(upd, (c, st), col["neuron_updates"] * p.v("t_neuron_update"))
    np.add.at(msg, (c, st), (col["msgs_on_core"] + col["msgs_on_chip"] + col["msgs_between_chips"]) * p.v("t_msg"))
    off = col["msgs_between_chips"] != 0
    np.add.at(link, (chip_of_core[c[off]], st[off]), col["msgs_between_chips"][off] * p.v("msg_wire_bits") / p.v("offchip_bw"))
    return syn, upd, msg, link


def _matrices_direct(profile, n_cores: int, depth: int, chip_of_core: np.ndarray, p: CostParams):
    """``_matrices`` row by row: the definition it is tested against."""
    syn = np.zeros((n_cores, depth))
    upd = np.zeros((n_cores, depth))
    msg = np.zeros((n_cores, depth))
    n_chips = int(chip_of_core.max()) + 1 if chip_of_core.size else 1
    link = np.zeros((n_chips, depth))
    for row in profile:
        c, s = int(row["core"]), int(row["stage"])
        if not (0 <= c < n_cores) or not (0 <= s < depth):
            raise ConfigError(f"activity profile names core {c} stage {s}, outside {n_cores} cores x {depth} stages")
        syn[c, s] += row["synops"] * p.v("t_synop")
        upd[c, s] += row["neuron_updates"] * p.v("t_neuron_update")
        msg[c, s] += (row["msgs_on_core"] + row["msgs_on_chip"] + row["msgs_between_chips"]) * p.v("t_msg")
        if row["msgs_between_chips"]:
            link[chip_of_core[c], s] += row["msgs_between_chips"] * p.v("msg_wire_bits") / p.v("offchip_bw")
    return syn, upd, msg, link


def _window_max(prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max over rows of Σ_{s=lo..hi} for each window (prefix has a leading zero column)."""
    if prefix.shape[0] == 0:
        return np.zeros(lo.size)
    return (prefix[:, hi + 1] - prefix[:, lo]).max(axis=0)


def _schedule(depth: int, prompt_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Stages lo..hi active at each step of a ``prompt_len``-token prompt through ``depth`` stages."""
    steps = np.arange(prompt_len + depth - 1)
    return np.maximum(0, steps - prompt_len + 1), np.minimum(depth - 1, steps)


class PipelineWindows:
    """The prefill schedule's window maxima of one (work, link) pair, for any prompt length, in time
    O(rows x depth) instead of O(rows x (prompt + depth)): a step's active stages are a prefix (lo = 0),
    a suffix (hi = depth - 1) or, for prompts shorter than the pipeline, a window of prompt_len stages,
    so the maxima over rows of each kind are computed once per kind (and prefixes and suffixes once for
    every prompt length). Every window's sum is the same subtraction of the same prefix sums as
    ``_window_max`` does, so the result is equal to the bit (``pipeline_time_direct``, tests)."""

    def __init__(self, work: np.ndarray, link: np.ndarray):
        self.depth = work.shape[1]
        self.prefix = [np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(m, axis=1)], axis=1) for m in (work, link)]
        self._pre = [self._rows_max(p, lambda q: q[:, 1:self.depth] - q[:, [0]]) for p in self.prefix]
        self._suf = [self._rows_max(p, lambda q: q[:, [self.depth]] - q[:, 0:self.depth]) for p in self.prefix]
        self._full = [self._rows_max(p, lambda q: q[:, [self.depth]] - q[:, [0]])[0] for p in self.prefix]

    def _rows_max(self, prefix: np.ndarray, windows) -> np.ndarray:
        out = windows(prefix)
        return out.max(axis=0) if prefix.shape[0] else np.zeros(out.shape[1])

    def _values(self, k: int, lo: np.ndarray, hi: np.ndarray, prompt_len: int) -> np.ndarray:
        """Max over rows of matrix k's window sum for each step (lo, hi), none of them the full window."""
        d = self.depth
        out = np.empty(lo.size)
        pre, suf = lo == 0, (lo > 0) & (hi == d - 1)
        out[pre] = self._pre[k][hi[pre]]
        out[suf] = self._suf[k][lo[suf]]
        mid = ~pre & ~suf
        if mid.any():                               # prompts shorter than the pipeline: windows of prompt_len stages
            p = self.prefix[k]
            first = int(lo[mid].min())
            span = p[:, first + prompt_len:d] - p[:, first:d - prompt_len]
            slide = span.max(axis=0) if p.shape[0] else np.zeros(span.shape[1])
            out[mid] = slide[lo[mid] - first]
        return out

    def time(self, prompt_len: int, t_barrier: float) -> float:
        """Seconds from injecting the first of ``prompt_len`` pipelined tokens to the last one's last stage."""
        lo, hi = _schedule(self.depth, prompt_len)
        full = (lo == 0) & (hi == self.depth - 1)
        part = ~full
        t_part = np.maximum(self._values(0, lo[part], hi[part], prompt_len),
                            self._values(1, lo[part], hi[part], prompt_len)).sum()
        n_full = int(full.sum())
        t_full = max(self._full[0], self._full[1]) if n_full else 0.0
        return float(t_part + n_full * t_full + lo.size * t_barrier)


def pipeline_time(work: np.ndarray, link: np.ndarray, prompt_len: int, t_barrier: float) -> float:
    """Seconds from injecting the first of ``prompt_len`` pipelined tokens to the last one's last stage."""
    return PipelineWindows(work, link).time(prompt_len, t_barrier)


def pipeline_time_direct(work: np.ndarray, link: np.ndarray, prompt_len: int, t_barrier: float) -> float:
    """``pipeline_time`` computed window by window over every step: the definition the fast one is tested against."""
    depth = work.shape[1]
    wp = np.concatenate([np.zeros((work.shape[0], 1)), np.cumsum(work, axis=1)], axis=1)
    lp = np.concatenate([np.zeros((link.shape[0], 1)), np.cumsum(link, axis=1)], axis=1)
    lo, hi = _schedule(depth, prompt_len)
    full = (lo == 0) & (hi == depth - 1)
    part = ~full
    t_part = np.maximum(_window_max(wp, lo[part], hi[part]), _window_max(lp, lo[part], hi[part])).sum()
    n_full = int(full.sum())
    t_full = max(_window_max(wp, np.array([0]), np.array([depth - 1]))[0],
                 _window_max(lp, np.array([0]), np.array([depth - 1]))[0]) if n_full else 0.0
    return float(t_part + n_full * t_full + lo.size * t_barrier)


def _chips_used(core_map) -> int:
    chips = np.asarray(core_map.chip_of_core)
    return int(np.unique(chips).size) if chips.size else 1


def _dynamic_energy(profile, p: CostParams) -> tuple[dict, dict]:
    """The profile's activity per token summed over cores and stages, and the dynamic energy of each kind."""
    tot = {f: float(sum(r[f] for r in profile)) for f in FIELDS}
    e_parts = dict(synops_J=tot["synops"] * p.v("e_synop"),
                   neuron_updates_J=tot["neuron_updates"] * p.v("e_neuron_update"),
                   msgs_on_core_J=tot["msgs_on_core"] * p.v("e_msg_core"),
                   msgs_on_chip_J=tot["msgs_on_chip"] * p.v("e_msg_chip"),
                   msgs_between_chips_J=tot["msgs_between_chips"] * p.e_msg_between_chips)
    return tot, e_parts


def cost_report(g: Graph, core_map, profile=None, params: CostParams | None = None, prompt_len: int = 500,
                gen_len: int = 100, chips: int | None = None, baselines=None, seq_lens=None,
                profile_source: str | None = None, baseline_note: str | None = None) -> dict:
    """Every figure of the estimate, keys suffixed with their unit.

    ``profile``: per (core, stage) activity per token (``Counters.per_token_profile()``); None derives it
    with ``assumed_profile`` and the params' rates. ``chips``: chips of the system (static power and
    barrier), at least the chips the core map uses (default: those). ``baselines``: GPU baseline models
    (``gpu_baseline.TransformerSpec``), default Qwen2.5-0.5B and Llama-3.2-1B on ``params.gpu``."""
    p = params or CostParams()
    if prompt_len < 1:
        raise ConfigError(f"prompt length {prompt_len} must be >= 1")
    if gen_len < 0:
        raise ConfigError(f"generation length {gen_len} must be >= 0")
    if profile is None:
        profile = assumed_profile(g, core_map, p)
        profile_source = profile_source or "assumed rates (assumed_profile)"
    depth = g.depth
    chip_of_core = np.asarray(core_map.chip_of_core, dtype=np.int64)
    n_cores = int(chip_of_core.size)
    used = _chips_used(core_map)
    n_chips = used if chips is None else int(chips)
    if n_chips < used:
        raise ConfigError(f"{n_chips} chip(s) given, but the layout uses {used}")
    syn, upd, msg, link = _matrices(profile, n_cores, depth, chip_of_core, p)
    work = syn + upd + msg
    tb = barrier_time(n_chips, p)

    # generation: one stage per step
    per_stage_core = work.max(axis=0) if n_cores else np.zeros(depth)
    per_stage_link = link.max(axis=0) if link.size else np.zeros(depth)
    per_stage = np.maximum(per_stage_core, per_stage_link)
    t_gen = float(per_stage.sum() + depth * tb)
    arg = work.argmax(axis=0) if n_cores else np.zeros(depth, int)
    cols = np.arange(depth)
    core_bound = per_stage_core >= per_stage_link
    gen_split = dict(
        synops_s=float(syn[arg, cols][core_bound].sum()), neuron_updates_s=float(upd[arg, cols][core_bound].sum()),
        messages_s=float(msg[arg, cols][core_bound].sum()), offchip_links_s=float(per_stage_link[~core_bound].sum()),
        barrier_s=float(depth * tb))
    # prefill: all stages in every step
    core_total = work.sum(axis=1)
    chip_total = link.sum(axis=1)
    t_pre_work = max(float(core_total.max()) if n_cores else 0.0, float(chip_total.max()) if chip_total.size else 0.0)
    t_pre = t_pre_work + tb
    slow = int(core_total.argmax()) if n_cores else 0
    windows = PipelineWindows(work, link)
    ttft = windows.time(prompt_len, tb)
    total_time = ttft + max(gen_len - 1, 0) * t_gen

    tot, e_parts = _dynamic_energy(profile, p)
    e_dyn = sum(e_parts.values())
    p_static = p.v("p_static_chip") * n_chips
    passes = prompt_len + max(gen_len - 1, 0)

    report = dict(
        model=dict(groups=len(g.groups), neurons=sum(x.size for x in g.groups.values()),
                   synapses=sum(s.nnz for s in g.synapses.values()), depth_steps=depth,
                   cores=n_cores, chips_used=used, chips=n_chips, skeleton=bool(g.meta.get("skeleton", False))),
        activity_per_token=dict(source=profile_source or "given profile", **tot),
        time=dict(barrier_s=tb, generation_token_s=t_gen, generation_split=gen_split,
                  generation_mean_step_s=t_gen / depth, prefill_step_s=t_pre,
                  prefill_bottleneck=dict(
                      core=slow, chip=int(chip_of_core[slow]) if n_cores else 0, synops_s=float(syn[slow].sum()),
                      neuron_updates_s=float(upd[slow].sum()), messages_s=float(msg[slow].sum()),
                      offchip_links_s=float(chip_total.max()) if chip_total.size else 0.0)),
        throughput=dict(prefill_tokens_per_s=1.0 / t_pre, generation_tokens_per_s=1.0 / t_gen,
                        prompt_effective_tokens_per_s=prompt_len / ttft),
        latency=dict(prompt_len=prompt_len, gen_len=gen_len, ttft_s=ttft, total_s=total_time),
        energy=dict(dynamic_per_token_J=e_dyn, dynamic_split=e_parts, static_power_W=p_static,
                    generation_per_token_J=e_dyn + p_static * t_gen,
                    prefill_per_token_J=e_dyn + p_static * t_pre,
                    total_J=passes * e_dyn + p_static * total_time),
        params=p.table(),
    )
    _add_gpu_comparison(report, p, baselines, seq_lens, windows, tb, prompt_len, gen_len)
    if baseline_note:
        report["gpu_baseline_note"] = baseline_note
    return report


def _add_gpu_comparison(report: dict, p: CostParams, baselines, seq_lens, windows: PipelineWindows, tb: float, prompt_len: int,
                        gen_len: int) -> None:
    """The GPU baselines, Loihi's advantage over each, and both against sequence length (into report)."""
    t_gen, ttft = report["time"]["generation_token_s"], report["latency"]["ttft_s"]
    e_dyn, p_static = report["energy"]["dynamic_per_token_J"], report["energy"]["static_power_W"]
    models = list(gb.BASELINE_MODELS.values()) if baselines is None else list(baselines)
    report["gpu_baselines"] = []
    for m in models:
        fig = gb.gpu_figures(m, p.gpu, prompt_len, gen_len)
        fig["loihi_advantage"] = dict(
            generation_throughput_x=fig["generation_time_per_token_s"] / t_gen,
            prefill_throughput_x=report["throughput"]["prefill_tokens_per_s"] / fig["prefill_tokens_per_s"],
            ttft_x=fig["ttft_s"] / ttft,
            generation_energy_x=fig["generation_energy_per_token_J"] / report["energy"]["generation_per_token_J"],
            prefill_energy_x=fig["prefill_energy_per_token_J"] / report["energy"]["prefill_per_token_J"])
        report["gpu_baselines"].append(fig)
    lens = gb.default_seq_lens() if seq_lens is None else [int(n) for n in seq_lens]
    ttfts = [windows.time(n, tb) for n in lens]
    report["scaling"] = dict(
        seq_len=lens,
        loihi=dict(generation_time_per_token_s=[t_gen] * len(lens),
                   generation_energy_per_token_J=[report["energy"]["generation_per_token_J"]] * len(lens),
                   prefill_time_per_token_s=[t / n for t, n in zip(ttfts, lens)],
                   prefill_energy_per_token_J=[e_dyn + p_static * t / n for t, n in zip(ttfts, lens)]),
        gpu={m.name: gb.gpu_scaling(m, p.gpu, lens) for m in models},
        gpu_name=p.gpu.label())


def _si(x: float, unit: str) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g} {unit}"
    for f, pre in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= f:
            return f"{x / f:.3g} {pre}{unit}"
    return f"{x:.3g} {unit}"


def _x(v: float) -> str:
    """A ratio with the precision a roofline comparison has: two significant figures."""
    return f"{v:,.0f}x" if v >= 100 else f"{v:.2g}x"


def format_report(r: dict) -> str:
    """The report as a plain-text table (what ``mflc estimate`` prints)."""
    m, t, th, lat, e = r["model"], r["time"], r["throughput"], r["latency"], r["energy"]
    a = r["activity_per_token"]
    lines = [
        f"Loihi 2 estimate: {m['cores']} cores on {m['chips_used']} chip(s) (system: {m['chips']}), "
        f"pipeline depth {m['depth_steps']} steps; activity: {a['source']}",
        f"  activity per token      {a['synops']:.4g} synops, {a['neuron_updates']:.4g} neuron updates, "
        f"{a['msgs_on_core'] + a['msgs_on_chip'] + a['msgs_between_chips']:.4g} messages at the activity rates, "
        f"on core included ({a['msgs_between_chips']:.4g} between chips)",
        f"  barrier per step        {_si(t['barrier_s'], 's')}",
        f"  generation              {_si(t['generation_token_s'], 's')}/token = "
        f"{th['generation_tokens_per_s']:.4g} tokens/s",
        f"  prefill (pipelined)     {_si(t['prefill_step_s'], 's')}/token = {th['prefill_tokens_per_s']:.4g} tokens/s",
        f"  time to first token     {_si(lat['ttft_s'], 's')} for a {lat['prompt_len']}-token prompt; "
        f"{_si(lat['total_s'], 's')} with {lat['gen_len']} generated",
        f"  energy per token        generation {_si(e['generation_per_token_J'], 'J')}, prefill "
        f"{_si(e['prefill_per_token_J'], 'J')} (dynamic {_si(e['dynamic_per_token_J'], 'J')}, "
        f"static {_si(e['static_power_W'], 'W')})",
    ]
    for b in r.get("gpu_baselines", []):
        adv = b["loihi_advantage"]
        lines.append(
            f"  vs {b['model']} on {b['gpu']}: generation {b['generation_tokens_per_s']:.3g} tokens/s "
            f"({_x(adv['generation_throughput_x'])}), {_si(b['generation_energy_per_token_J'], 'J')}/token "
            f"({_x(adv['generation_energy_x'])}); TTFT {_si(b['ttft_s'], 's')} ({_x(adv['ttft_x'])}); "
            f"prefill {b['prefill_tokens_per_s']:.3g} tokens/s ({_x(adv['prefill_throughput_x'])})")
    if r.get("gpu_baseline_note"):
        lines.append(f"  ({r['gpu_baseline_note']})")
    lines.append("  (ratios > 1 favour Loihi; every constant, its source and confidence: --json 'params')")
    return "\n".join(lines)


def plot_scaling(report: dict, path) -> None:
    """Time and energy per token against sequence length: the Loihi estimate beside the GPU baselines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = report["scaling"]
    n = sc["seq_len"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, kind, unit in ((axes[0], "time", "s"), (axes[1], "energy", "J")):
        key_g, key_p = f"generation_{kind}_per_token_{unit}", f"prefill_{kind}_per_token_{unit}"
        ax.plot(n, sc["loihi"][key_g], "-", color="C0", lw=2, label="Loihi 2 estimate, generation")
        ax.plot(n, sc["loihi"][key_p], "--", color="C0", lw=1.5, label="Loihi 2 estimate, prefill")
        for k, (name, gpu) in enumerate(sc["gpu"].items()):
            size = next((f" ({b['model_params'] / 1e9:.2g} B)" for b in report.get("gpu_baselines", [])
                         if b["model"] == name), "")
            ax.plot(n, gpu[key_g], "-", color=f"C{k + 1}", label=f"{name}{size} on {sc['gpu_name']}, generation")
            ax.plot(n, gpu[key_p], "--", color=f"C{k + 1}", lw=1, label=f"{name}, prefill")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(f"{kind} per token ({unit})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("time per token")
    axes[1].set_title("energy per token")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    m = report["model"]
    what = f"{report['model_name']}, " if report.get("model_name") else ""
    fig.suptitle(f"Loihi 2 estimate ({what}{m['cores']} cores, {m['chips']} chip(s)) vs a GPU roofline from "
                 "published figures", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the numbers of docs/estimates.md ------------------------------------------------------------------
PAPER_SOURCE = ("S. Abreu, S. B. Shrestha, R.-J. Zhu, J. Eshraghian, 'Neuromorphic principles for efficient large "
                "language models on Intel Loihi 2', arXiv:2503.18002 (2025), abstract and summary")
# The paper's headline ratios for its 370M MatMul-free model on Loihi 2 against transformer LLMs on a
# Jetson Orin Nano (preliminary results). Only the ratios are reproduced here (see docs/estimates.md).
PAPER_RATIOS = dict(throughput_x=3.0, energy_x=2.0, ttft_x_500=6.6)


def _fmt(x: float, unit: str) -> str:
    return _si(x, unit).replace("µ", "u")


def estimate_doc_tables(preset_name: str = "370M", prompt_len: int = 500, gen_len: int = 100) -> str:
    """Markdown tables of docs/estimates.md: ``python -m mflc.compiler.chip.costmodel`` prints them."""
    from ..model.config import preset
    from ..model.skeleton import skeleton_graph

    g = skeleton_graph(preset(preset_name))
    cmap = packed_core_map(g)
    base = CostParams()
    runs = {"default": base, "optimistic": bound_params(base, True), "pessimistic": bound_params(base, False)}
    reps = {k: cost_report(g, cmap, None, p, prompt_len, gen_len) for k, p in runs.items()}
    out = [f"Model {preset_name} (skeleton, density {g.meta.get('density')}), stand-in placement "
           f"`packed_core_map`: {cmap.n_cores} cores on {_chips_used(cmap)} chips; depth {g.depth} steps.", "",
           "| figure | default | optimistic | pessimistic |", "|---|---|---|---|"]
    rows = [("generation, tokens/s", lambda r: f"{r['throughput']['generation_tokens_per_s']:.3g}"),
            ("generation, time per token", lambda r: _fmt(r["time"]["generation_token_s"], "s")),
            ("prefill, tokens/s", lambda r: f"{r['throughput']['prefill_tokens_per_s']:.3g}"),
            (f"time to first token, {prompt_len}-token prompt", lambda r: _fmt(r["latency"]["ttft_s"], "s")),
            ("energy per token, generation", lambda r: _fmt(r["energy"]["generation_per_token_J"], "J")),
            ("energy per token, prefill", lambda r: _fmt(r["energy"]["prefill_per_token_J"], "J")),
            ("dynamic energy per token", lambda r: _fmt(r["energy"]["dynamic_per_token_J"], "J")),
            ("static power", lambda r: _fmt(r["energy"]["static_power_W"], "W")),
            ("barrier per step", lambda r: _fmt(r["time"]["barrier_s"], "s"))]
    for name, f in rows:
        out.append(f"| {name} | " + " | ".join(f(reps[k]) for k in runs) + " |")
    out += ["", "| baseline (roofline) | tokens/s gen. | mJ/token gen. | TTFT | ours/GPU throughput gen. | "
            "ours/GPU throughput prefill | GPU/ours energy gen. | GPU/ours energy prefill | GPU/ours TTFT |",
            "|---|---|---|---|---|---|---|---|---|"]
    for b in reps["default"]["gpu_baselines"]:
        a = b["loihi_advantage"]
        out.append(f"| {b['model']} on {b['gpu']} | {b['generation_tokens_per_s']:.3g} | "
                   f"{b['generation_energy_per_token_J'] * 1e3:.3g} | {_fmt(b['ttft_s'], 's')} | "
                   f"{a['generation_throughput_x']:.2g}x | {a['prefill_throughput_x']:.2g}x | "
                   f"{a['generation_energy_x']:.2g}x | {a['prefill_energy_x']:.2g}x | {a['ttft_x']:.2g}x |")
    return "\n".join(out)


if __name__ == "__main__":   # python -m mflc.compiler.chip.costmodel
    print(estimate_doc_tables())
