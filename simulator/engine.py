"""The Numba engine: executes a placed IR step by step, core slice by core slice, and counts activity.

Timestep contract as in the reference executor (and the IR docs): a group runs at step τ + stage for the
token injected at τ; its messages pass through each outgoing synapse group, slice by slice on the cores
that hold the destination rows, and are delivered at t + 1 + delay. Synaptic accumulation runs in Numba
kernels (the bulk of the work); neuron programs run through the op library, the single definition of
every integer op, on each core's slice. Counters are kept per core.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mflc.ir.coremap import CoreMap
from mflc.ir.graph import Graph, SynapseGroup
from mflc.ir.modes import Send
from mflc.ir.validate import validate

from . import kernels as K
from .progcode import program_for
from .reference import RunResult, injection_steps

PARALLEL_MIN_SYNAPSES = 1 << 20   # below this a slice runs single-threaded (a thread wake-up can cost ms)
DENSE_MIN_DENSITY = 0.25          # at or above this a synapse group is stored as a dense int8 block


@dataclass
class _Syn:
    s: SynapseGroup
    mode: str                                       # "dense16"/"dense32" (message width), "ternary" (±1 lists), "csr"
    arrays: tuple
    row_slices: list[tuple[int, int, int]]          # (lo, hi, core)
    slice_nnz: list[int]
    col_counts: list[np.ndarray]                    # per slice: stored synapses per source neuron


@dataclass
class Counters:
    """Activity per core, summed over a run; per-step totals over all cores."""

    synops: np.ndarray
    neuron_updates: np.ndarray
    msgs_on_core: np.ndarray
    msgs_on_chip: np.ndarray
    msgs_between_chips: np.ndarray
    payload_bits: np.ndarray
    per_step: dict = field(default_factory=dict)    # name -> list per step
    # (core, stage) -> [synops, neuron_updates, msgs_on_core, msgs_on_chip, msgs_between_chips, payload_bits]:
    # the work each core does at each step offset of a token's pipeline (what the cost model needs)
    by_core_stage: dict = field(default_factory=dict)
    tokens: int = 0

    FIELDS = ("synops", "neuron_updates", "msgs_on_core", "msgs_on_chip", "msgs_between_chips", "payload_bits")

    def add(self, core: int, stage: int, field_index: int, value: int) -> None:
        """Add to one (core, stage) field of the per-token activity profile."""
        key = (int(core), int(stage))
        row = self.by_core_stage.get(key)
        if row is None:
            row = self.by_core_stage[key] = np.zeros(len(self.FIELDS), np.int64)
        row[field_index] += value

    def per_token_profile(self) -> list[dict]:
        """Mean activity per token for every (core, stage) that did any work."""
        n = max(self.tokens, 1)
        return [dict(core=c, stage=st, **{f: float(v) / n for f, v in zip(self.FIELDS, row)})
                for (c, st), row in sorted(self.by_core_stage.items())]

    @classmethod
    def zeros(cls, n_cores: int) -> "Counters":
        """Empty counters for n_cores cores."""
        z = lambda: np.zeros(n_cores, np.int64)  # noqa: E731
        return cls(z(), z(), z(), z(), z(), z(), {k: [] for k in ("synops", "neuron_updates", "messages")}, {})

    def totals(self) -> dict:
        """The counters summed over cores, for reports."""
        return dict(synops=int(self.synops.sum()), neuron_updates=int(self.neuron_updates.sum()),
                    msgs_on_core=int(self.msgs_on_core.sum()), msgs_on_chip=int(self.msgs_on_chip.sum()),
                    msgs_between_chips=int(self.msgs_between_chips.sum()), payload_bits=int(self.payload_bits.sum()))


def _prepare_synapse(s: SynapseGroup, slices, msg_bits: int) -> _Syn:
    """Pick the cheapest exact representation: a dense int8 block for dense-ish matrices (ternary
    projections are ~2/3 non-zero: one byte per weight reads less memory than CSR's index per synapse),
    ±1 index lists for sparse ternary, CSR otherwise. All give the same integers."""
    rows = np.repeat(np.arange(s.shape[0]), s.row_counts())
    row_slices = sorted(slices)
    col_counts = []
    for lo, hi, _ in row_slices:
        a, b = int(s.indptr[lo]), int(s.indptr[hi])
        col_counts.append(np.bincount(s.indices[a:b], minlength=s.shape[1]).astype(np.int64))
    slice_nnz = [int(s.indptr[b] - s.indptr[a]) for a, b, _ in row_slices]
    vals = s.values.astype(np.int64)
    density = s.nnz / max(1, s.shape[0] * s.shape[1])
    if density >= DENSE_MIN_DENSITY and s.shape[1] > 1:
        dense = np.zeros(s.shape, np.int8)
        dense[rows, s.indices] = s.values
        return _Syn(s, "dense16" if msg_bits <= 16 else "dense32", (dense,), row_slices, slice_nnz, col_counts)
    if bool(np.all((vals == 1) | (vals == -1))):
        arrays = []
        for sign in (1, -1):
            sel = vals == sign
            ptr = np.zeros(s.shape[0] + 1, np.int64)
            ptr[1:] = np.cumsum(s.row_sums(sel.astype(np.int64)))
            arrays += [ptr, s.indices[sel].astype(np.int32)]
        return _Syn(s, "ternary", tuple(arrays), row_slices, slice_nnz, col_counts)
    arrays = (s.indptr.astype(np.int64), s.indices.astype(np.int32), s.values.astype(np.int64))
    return _Syn(s, "csr", arrays, row_slices, slice_nnz, col_counts)


class Engine:
    """Event-driven executor of a placed IR: per group, per core slice, counting the activity the cost model prices."""

    def __init__(self, graph: Graph, core_map: CoreMap | None = None, check: bool = True, parallel: bool = True,
                 programs: str = "compiled"):
        if check:
            validate(graph)
        self.g = graph
        self.cm = core_map or CoreMap.one_core_per_group(graph)
        self.parallel, self.programs = parallel, programs
        self.syn_out: dict[str, list[_Syn]] = {n: [] for n in graph.groups}
        for s in graph.synapses.values():
            if s.virtual:
                raise ValueError(f"synapse {s.name} is virtual (a skeleton graph); it cannot be executed")
            src = graph.groups[s.src]      # a delta (the change of a b-bit value) needs b + 1 bits
            self.syn_out[s.src].append(_prepare_synapse(s, self.cm.slices[s.dst], src.out_bits + (src.send == Send.DELTA)))
        self.core_of = {n: self.cm.core_of_neurons(n, grp.size) for n, grp in graph.groups.items()}
        self._reach = {n: self._reach_pairs(n) for n in graph.groups}
        self.by_stage: dict[int, list[str]] = {}
        for n, grp in graph.groups.items():
            self.by_stage.setdefault(grp.stage, []).append(n)
        self.host = {i.group: i for i in graph.inputs}
        self.reset()

    def _reach_pairs(self, name: str):
        """(source neuron, destination core) pairs: where one message of each neuron must be delivered."""
        # Each pair is coded as neuron * n_cores + core, so one 1-D unique sorts them by (neuron, core).
        n_src, n_cores = self.g.groups[name].size, self.cm.n_cores
        keys = []
        seen = np.zeros(n_src, bool)
        for sy in self.syn_out[name]:
            s = sy.s
            for (lo, hi, core) in sy.row_slices:
                seen[:] = False
                seen[s.indices[s.indptr[lo]:s.indptr[hi]]] = True
                keys.append(np.flatnonzero(seen).astype(np.int64) * n_cores + core)
        if not keys:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        k = np.unique(np.concatenate(keys))
        return k // n_cores, k % n_cores

    def reset(self) -> None:
        """Back to the initial state: fresh programs, delta senders' last messages and accumulators zeroed."""
        g = self.g
        self.progs = {n: program_for(grp, self.programs) for n, grp in g.groups.items()}
        self.last_sent = {n: np.zeros(grp.size, np.int64) for n, grp in g.groups.items() if grp.send == Send.DELTA}
        self.delta_acc = {s.name: np.zeros(s.shape[0], np.int64) for s in g.synapses.values()
                          if g.groups[s.src].send == Send.DELTA}
        self.delta_in: dict[str, list[SynapseGroup]] = {}
        for s in g.synapses.values():
            if s.name in self.delta_acc:
                self.delta_in.setdefault(s.dst, []).append(s)

    # ---- one group firing ----
    def _deliver(self, sy: _Syn, msg: np.ndarray, counters: Counters | None, stage: int = 0) -> np.ndarray:
        s = sy.s
        dense = sy.mode.startswith("dense")
        if dense:
            out32 = np.zeros(s.shape[0], np.int32)
            m32 = msg.astype(np.int16 if sy.mode == "dense16" else np.int32)
        else:
            out = np.zeros(s.shape[0], np.int64)
        live = msg != 0 if counters is not None else None
        for (lo, hi, core), nnz, cc in zip(sy.row_slices, sy.slice_nnz, sy.col_counts):
            big = self.parallel and nnz >= PARALLEL_MIN_SYNAPSES
            if sy.mode == "dense16":
                (K.dense_rows16_parallel if big else K.dense_rows16)(sy.arrays[0], m32, out32, lo, hi)
            elif sy.mode == "dense32":
                (K.dense_rows32_parallel if big else K.dense_rows32)(sy.arrays[0], m32, out32, lo, hi)
            elif sy.mode == "ternary":
                (K.ternary_rows_parallel if big else K.ternary_rows)(*sy.arrays, msg, out, lo, hi)
            else:
                K.csr_rows(*sy.arrays, msg, out, lo, hi)
            if counters is not None:
                ops = int(cc[live].sum())          # one synaptic op per stored synapse with a live input
                counters.synops[core] += ops
                counters.add(core, stage, 0, ops)
        if dense:
            out = out32.astype(np.int64)
        if s.weight_exp != 0:
            K.shift_floor_inplace(out, s.weight_exp)
        return out

    def _count_messages(self, name: str, msg: np.ndarray, c: Counters) -> None:
        src, dst = self._reach[name]
        if src.size == 0:
            return
        stage = self.g.groups[name].stage
        live = msg[src] != 0
        sc, dc = self.core_of[name][src[live]], dst[live]
        chip = self.cm.chip_of_core
        same_core = sc == dc
        same_chip = (chip[sc] == chip[dc]) & ~same_core
        other = ~(same_core | same_chip)
        np.add.at(c.msgs_on_core, sc[same_core], 1)
        np.add.at(c.msgs_on_chip, sc[same_chip], 1)
        np.add.at(c.msgs_between_chips, sc[other], 1)
        np.add.at(c.payload_bits, sc, self.g.groups[name].out_bits)
        bits = self.g.groups[name].out_bits
        for fi, sel in ((2, same_core), (3, same_chip), (4, other)):
            if np.any(sel):
                cores, counts = np.unique(sc[sel], return_counts=True)
                for core, n in zip(cores, counts):
                    c.add(core, stage, fi, int(n))
                    c.add(core, stage, 5, int(n) * bits)

    def _ports(self, t: int, name: str, token: int, pending: dict) -> dict[str, np.ndarray]:
        """Group ``name``'s input ports at step t: what arrived (zeros if nothing did), delta sums, the token's row."""
        g = self.g
        grp = g.groups[name]
        ports = {p: pending.pop((t, name, p), None) for p in grp.ports}
        ports = {p: (v if v is not None else np.zeros(grp.size, np.int64)) for p, v in ports.items()}
        for s in self.delta_in.get(name, ()):
            ports[s.port] = ports[s.port] + self.delta_acc[s.name]
        if name in self.host:
            inp = self.host[name]
            table = g.host_tensors[inp.table]
            if not 0 <= token < table.shape[0]:
                raise ValueError(f"token {token} outside the input table {inp.table} [0, {table.shape[0]})")
            ports[inp.port] = ports[inp.port] + table[token].astype(np.int64)
        return ports

    def _send(self, t: int, name: str, msg: np.ndarray, counters, pending: dict, delta_pending: dict) -> None:
        """Deliver group ``name``'s message through its synapses, to arrive after each synapse's delay."""
        stage = self.g.groups[name].stage
        for sy in self.syn_out[name]:
            contrib = self._deliver(sy, msg, counters, stage)
            arrive = t + 1 + sy.s.delay
            if sy.s.name in self.delta_acc:
                key = (arrive, sy.s.name)
                delta_pending[key] = delta_pending.get(key, 0) + contrib
            else:
                key = (arrive, sy.s.dst, sy.s.port)
                prev = pending.get(key)
                pending[key] = contrib if prev is None else prev + contrib

    def run(self, tokens, schedule: str = "sequential", counters: Counters | None = None, trace=None) -> RunResult:
        """Run tokens from the current state; pass a ``Counters`` to accumulate activity into it."""
        g = self.g
        tokens = [int(t) for t in tokens]
        depth = g.depth
        inject = injection_steps(len(tokens), depth, schedule)
        last = (inject[-1] + depth) if tokens else 0
        pending: dict[tuple[int, str, str], np.ndarray] = {}
        delta_pending: dict[tuple[int, str], np.ndarray] = {}
        outs = {o.name: [None] * len(tokens) for o in g.outputs}
        out_groups = {o.group: o.name for o in g.outputs}
        states = {k: [None] * len(tokens) for k in g.state}
        state_of = {}
        for k, (grp, reg) in g.state.items():
            state_of.setdefault(grp, []).append((k, reg))
        out_steps = [0] * len(tokens)
        sent: dict[str, int] = {}
        for t in range(last):
            for key in [k for k in delta_pending if k[0] == t]:
                self.delta_acc[key[1]] += delta_pending.pop(key)
            step_syn = step_upd = step_msg = 0
            if counters is not None:
                syn0, msg0 = counters.synops.sum(), counters.msgs_on_core.sum() + counters.msgs_on_chip.sum() + counters.msgs_between_chips.sum()
            # tokens in flight at step t, each at the stage t - (its injection step)
            for k in [k for k, s0 in enumerate(inject) if s0 <= t < s0 + depth]:
                for name in self.by_stage.get(t - inject[k], ()):
                    grp = g.groups[name]
                    ports = self._ports(t, name, tokens[k], pending)
                    prog = self.progs[name]
                    for a, b, _core in self.cm.slices[name]:      # each core runs its own slice
                        prog.run(ports, a, b, name)
                    out = prog.env[prog.output].copy()
                    lim = 1 << (grp.out_bits - 1)
                    if out.size and (out.min() < -lim or out.max() >= lim):
                        raise OverflowError(f"group {name}: output outside its {grp.out_bits}-bit message width")
                    if trace is not None:
                        trace(t, k, name, out)
                    if counters is not None:
                        for a, b, core in self.cm.slices[name]:
                            counters.neuron_updates[core] += b - a
                            counters.add(core, grp.stage, 1, b - a)
                        step_upd += grp.size
                    if name in out_groups:
                        outs[out_groups[name]][k] = out.copy()
                        out_steps[k] = t
                    for sk, reg in state_of.get(name, ()):
                        states[sk][k] = prog.env[prog.slot[reg]].copy()
                    if grp.send == Send.DELTA:
                        msg = out - self.last_sent[name]
                        self.last_sent[name] = out.copy()
                    else:
                        msg = out
                    sent[name] = sent.get(name, 0) + int(np.count_nonzero(msg))
                    if counters is not None:
                        self._count_messages(name, msg, counters)
                    if np.any(msg):   # event-driven: nothing sent, nothing accumulated (zeros add nothing)
                        self._send(t, name, msg, counters, pending, delta_pending)
            if counters is not None:
                counters.per_step["synops"].append(int(counters.synops.sum() - syn0))
                counters.per_step["neuron_updates"].append(step_upd)
                counters.per_step["messages"].append(int(counters.msgs_on_core.sum() + counters.msgs_on_chip.sum()
                                                         + counters.msgs_between_chips.sum() - msg0))
        if counters is not None:
            counters.tokens += len(tokens)
        return RunResult({k: np.stack(v) if v else np.zeros((0,)) for k, v in outs.items()},
                         {k: np.stack(v) if v else np.zeros((0,)) for k, v in states.items()},
                         out_steps, last, sent)
