"""Lava back-end: export a compiled IR graph to a lava-nc process network and run it bit-exactly.

Mapping (docs/lava.md has the full story):

* a neuron group  -> one ``IRNeuronProcess`` whose fixed-point ``PyLoihiProcessModel`` runs the group's
  neuron program with ``mflc.simulator.program.run_program`` (the op library, the same code as every other
  executor) at the steps its tokens reach it, and sends zeros at every other step;
* a synapse group -> one of Lava's own connection processes, run with Lava's own bit-accurate
  ``fixed_pt`` models: ``Dense`` / ``Sparse`` for delay 0, ``DelayDense`` / ``DelaySparse`` for delay > 0,
  with graded spikes (``num_message_bits`` = the sender's message width);
* host input  -> ``lava.proc.io.source.RingBuffer`` holding the embedding rows at the injection steps,
  connected straight to the input group's port (same-step delivery, as the IR's host write);
* host output and recurrent states -> ``lava.proc.io.sink.RingBuffer`` processes fed by extra OutPorts of
  the output group (its value) and of the state-holding groups (the register after each step).

Synapse semantics. Lava's ``fixed_pt`` Dense/Sparse models are the reference. They clip weights to 8 bits,
then truncate them according to the sign mode: in ``SignMode.MIXED`` the lowest weight bit is dropped
(``(w >> 1) << 1``), so raw ternary {-1, 0, 1} would become {-2, 0, 0}. The export therefore encodes each
synapse group exactly: groups whose weights all have one sign use ``EXCITATORY`` / ``INHIBITORY`` (nothing
is truncated, weights as stored); mixed-sign groups are pre-scaled by 2**k (``mixed_shift`` k >= 1) with
``weight_exp - k``, which Lava's floor shift turns back into exactly the IR's ``shr_floor(W·s, -weight_exp)``.
By default each group runs at the weight width the chip stores it at (``mflc.ir.hardware.weight_width``:
``num_weight_bits`` n, ternary 2): Lava truncates 8 - n (+1 when mixed) low bits, so the weights are
pre-scaled by exactly that many (ternary: ±128 with ``weight_exp - 7``); a group whose accumulation could
not take that pre-scale in int32 gets the narrowest wider n that can. Lava accumulates in int32 and wraps silently (numpy); the export proves,
per synapse group, that the worst-case accumulation including the pre-scale fits int32, and refuses
otherwise. Under these conditions Lava's synapses and the IR's are the same integers.

Lava is imported lazily: ``lava_available()`` says whether it can be, and nothing here needs it except
building and running the network.
"""
from __future__ import annotations

import functools
import importlib.util
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.errors import MflcError
from mflc.ir.graph import Graph, NeuronGroup, SynapseGroup
from mflc.ir.hardware import DEFAULT, LAVA_LIMITS, weight_width
from mflc.ir.ops import fmt_int, fmt_range
from mflc.ir.range_analysis import RangeAnalysis, analyse
from mflc.ir.validate import validate

from .program import run_program
from .reference import RunResult, injection_steps

# What Lava's fixed-point models run is fixed by Lava, not by a hardware profile; the figures are written once,
# in mflc.ir.hardware.LAVA_LIMITS (the default profile's widths are these), and ``lava_problems`` refuses a
# profile that asks for more than Lava runs.
LAVA_ACC_BITS = LAVA_LIMITS["accumulator_bits"]   # Lava's fixed_pt Dense/Sparse: int32 weights · int32 spikes (wraps)
LAVA_MSG_BITS = LAVA_LIMITS["max_msg_bits"]       # graded-spike port precision declared by our neuron model
LAVA_WEIGHT_BITS = LAVA_LIMITS["weight_bits"]     # Lava clips weights to 8 bits (2**8 magnitude, sign mode dependent)
LAVA_DELAY_MAX = LAVA_LIMITS["max_synapse_delay"]  # DelayDense / DelaySparse fixed_pt refuse delays above this
SPARSE_MAX_DENSITY = 0.25   # below this density a synapse group becomes Lava Sparse (CSR), else Dense


class LavaExportError(MflcError):
    """The graph cannot be expressed exactly with Lava's processes (a width or delay limit)."""


def lava_problems(hw) -> list[str]:
    """Why Lava cannot run graphs made for the hardware profile ``hw`` ([] if it can): each figure of
    ``LAVA_LIMITS`` the profile sets above what Lava's fixed-point models run (a narrower one is fine)."""
    return [f"hardware figure {k} = {getattr(hw, k)} ({hw.figure(k)['source']}) is above the {v} that Lava's "
            f"fixed-point models run" for k, v in LAVA_LIMITS.items() if getattr(hw, k) > v]


def check_profile_for_lava(hw) -> None:
    """Raise LavaExportError when ``hw`` (a build's hardware profile, e.g. compiled with ``--hw``) asks for
    more than Lava runs."""
    found = lava_problems(hw)
    if found:
        raise LavaExportError(f"profile {hw.name!r} cannot be exported to Lava: " + "; ".join(found))


def import_lava() -> None:
    """Import Lava's core, working around its import-time ``multiprocessing.set_start_method('fork')``.

    That call raises "context has already been set" once anything in the process has fixed the start
    method (our Numba fast path does, through Numba's parallel layer), which would make Lava unimportable
    after any FastEngine run. Lava needs fork; when the method already is fork, the import is retried
    with that one redundant call made a no-op.
    """
    import multiprocessing as mp

    def _import():
        import lava.magma.core.process.process  # noqa: F401
        import lava.proc.dense.process  # noqa: F401

    try:
        _import()
    except RuntimeError as e:
        if "context has already been set" not in str(e):
            raise
        if mp.get_start_method() != "fork":
            raise MflcError(f"Lava needs the 'fork' multiprocessing start method, this process already uses "
                            f"{mp.get_start_method()!r}") from e
        original = mp.set_start_method
        mp.set_start_method = lambda method, force=False: None if method == "fork" else original(method, force)
        try:
            _import()
        finally:
            mp.set_start_method = original


@functools.lru_cache(maxsize=1)
def lava_available() -> bool:
    """True when lava-nc can be imported (the Python 3.10 venv with the ``lava`` extra)."""
    if importlib.util.find_spec("lava") is None:
        return False
    try:
        import_lava()
    except Exception:  # a broken install counts as missing; callers say what is needed
        return False
    return True


def _require_lava() -> None:
    if not lava_available():
        raise MflcError("the Lava back-end needs lava-nc (pip install -e '.[lava]' in a Python 3.10 venv)")


# ---- the plan: a pure description of the Lava network (no Lava objects; JSON-able) --------------------
@dataclass
class SynapseEncoding:
    """How one IR synapse group becomes one Lava connection process, exactly."""

    name: str
    lava_class: str            # Dense, Sparse, DelayDense, DelaySparse
    src: str
    dst: str
    port: str                  # Lava InPort of the destination process
    shape: tuple[int, int]
    nnz: int
    sign_mode: str             # EXCITATORY, INHIBITORY or MIXED (Lava SignMode name)
    weight_shift: int          # Lava weight = IR weight << weight_shift
    ir_weight_exp: int
    lava_weight_exp: int       # = ir_weight_exp - weight_shift
    num_weight_bits: int
    num_message_bits: int
    delay: int
    acc_bound: int             # worst |Σ w·s| in Lava's accumulator (after the pre-scale)
    acc_bits: int              # signed bits that bound needs (<= 32, after a positive Lava weight_exp)
    carried: tuple[int, int]   # the sender's messages, as the range analysis (ir/range_analysis.py) proves them
    acc_range: tuple[int, int]  # Σ w·m before any pre-scale or shift, as the analysis proves it
    peak: int                  # largest |partial sum| before the pre-scale, as the analysis proves it

    def lava_weights(self, s: SynapseGroup) -> np.ndarray:
        """The group's dense weights as Lava stores them (shifted up by weight_shift)."""
        return s.to_dense().astype(np.int32) << self.weight_shift


def encode_synapse(g: Graph, s: SynapseGroup, mixed_shift: int | None = None,
                   sparse_max_density: float = SPARSE_MAX_DENSITY, hw=None,
                   ranges: RangeAnalysis | None = None) -> SynapseEncoding:
    """Pick the Lava process and the exact weight encoding of one synapse group (see the module doc).

    ``mixed_shift`` None (default): ``num_weight_bits`` = the group's stored width (``weight_width`` for the
    profile ``hw``, default the default profile: its narrowest width, ternary 2), weights pre-scaled by
    2**(8 - num_weight_bits + mixed) so that Lava's truncation keeps them; when the int32 accumulator
    cannot take that pre-scale the width is widened until it can (at most 8). ``mixed_shift`` k: the 8-bit
    encoding of earlier builds, num_weight_bits = 8 + 1 - k for mixed-sign groups, 8 (no pre-scale) else.
    The accumulation is bounded by the graph's range analysis (``ranges``, ``mflc.ir.range_analysis.analyse(g)``
    when not given): the partial sums the validator proves, never a bound of this module's own."""
    if s.virtual:
        raise LavaExportError(f"synapse {s.name} is virtual (a skeleton graph): no weights to export")
    if mixed_shift is not None and mixed_shift < 1:
        raise ValueError("mixed_shift must be >= 1: Lava drops the lowest weight bit in mixed sign mode")
    lo, hi = s.value_range()
    mode = "EXCITATORY" if lo >= 0 else "INHIBITORY" if hi <= 0 else "MIXED"
    mixed = int(mode == "MIXED")
    if mixed_shift is not None:
        widths = [LAVA_WEIGHT_BITS + 1 - mixed_shift if mixed else LAVA_WEIGHT_BITS]
    else:
        first = min(weight_width(s, hw or DEFAULT), LAVA_WEIGHT_BITS)
        widths = list(range(first, LAVA_WEIGHT_BITS + 1))
    rec = (ranges or analyse(g)).synapses.get(s.name)
    if rec is None:
        raise LavaExportError(f"synapse {s.name}: the range analysis cannot bound it (validate the graph)")
    for nwb in widths:       # the narrowest width whose pre-scale the accumulator takes (the last is checked below)
        shift = LAVA_WEIGHT_BITS - nwb + mixed
        if _lava_peak(rec.peak, shift, s.weight_exp) <= LAVA_ACC_MAX:
            break
    # Lava clips to [-2^8, 2^8 - 1] (mixed), [0, 2^8 - 1] (excitatory) or [-(2^8 - 1), 0] (inhibitory)
    top = (1 << LAVA_WEIGHT_BITS) - 1
    bottom = -(1 << LAVA_WEIGHT_BITS) if mode == "MIXED" else -top
    if (hi << shift) > top or (lo << shift) < bottom:
        raise LavaExportError(f"synapse {s.name}: weights in [{lo}, {hi}] scaled by 2^{shift} leave Lava's "
                              f"8-bit {mode.lower()} weight range")
    worst = _lava_peak(rec.peak, shift, s.weight_exp)
    if worst > LAVA_ACC_MAX:
        raise LavaExportError(_overflow_message(g, s, rec, shift, nwb, mixed, mixed_shift))
    if s.delay > LAVA_DELAY_MAX:
        raise LavaExportError(f"synapse {s.name}: delay {s.delay} above Lava's DelayDense limit of {LAVA_DELAY_MAX}")
    sparse = s.density < sparse_max_density
    cls = ("Delay" if s.delay > 0 else "") + ("Sparse" if sparse else "Dense")
    port = ("d_" if g.groups[s.src].send == "delta" else "a_") + s.port
    return SynapseEncoding(s.name, cls, s.src, s.dst, port, tuple(s.shape), s.nnz, mode, shift, s.weight_exp,
                           s.weight_exp - shift, nwb, g.groups[s.src].out_bits, s.delay, rec.peak << shift,
                           max(worst, 1).bit_length() + 1, tuple(rec.carried), tuple(rec.acc), rec.peak)


LAVA_ACC_MAX = fp.smax(LAVA_ACC_BITS)


def _lava_peak(peak: int, shift: int, weight_exp: int) -> int:
    """Largest |value| Lava's int32 accumulator holds for a group whose partial sums the analysis bounds by
    ``peak``: pre-scaled by 2^shift, then, for a positive Lava ``weight_exp``, shifted left in int32 too."""
    return (peak << shift) << max(weight_exp - shift, 0)


def _overflow_message(g: Graph, s: SynapseGroup, rec, shift: int, nwb: int, mixed: int, mixed_shift) -> str:
    """Why Lava's int32 cannot hold what the chip's accumulator can, and which option makes it fit."""
    least = mixed                                 # the least pre-scale Lava's sign mode allows (MIXED: 1)
    head = (f"synapse {s.name} ({s.src} -> {s.dst}.{s.port}): the range analysis proves its sums in "
            f"{fmt_range(rec.acc)}, partial sums up to ±{rec.peak} (messages of {s.src} in {fmt_range(rec.carried)}); "
            f"with its weights pre-scaled by 2^{shift} (num_weight_bits {nwb}) Lava's accumulator would reach "
            f"±{_lava_peak(rec.peak, shift, s.weight_exp)}, above its int32 limit {fmt_int(LAVA_ACC_MAX)} (it wraps "
            f"silently)")
    if mixed_shift is not None and _lava_peak(rec.peak, least, s.weight_exp) <= LAVA_ACC_MAX:
        return head + f"; leave out --mixed-shift {mixed_shift}: the export then picks a pre-scale that fits"
    bits = LAVA_ACC_BITS - max(least, s.weight_exp)
    return (head + f"; no pre-scale Lava allows fits (the least is 2^{least}"
            + (f", and Lava shifts by weight_exp {s.weight_exp} inside int32" if s.weight_exp > least else "")
            + f"): compile with --hw accumulator_bits={bits}, so that the validator keeps the chip's sums within "
              f"what Lava holds (it names the group to quantize narrower if they are not)")


def _neuron_ports(g: Graph, name: str) -> dict[str, list[str]]:
    """The Lava ports of one neuron process: a_<p> (values), d_<p> (deltas, running sum), outputs."""
    grp = g.groups[name]
    ins_a, ins_d = set(), set()
    for s in g.synapses.values():
        if s.dst == name:
            (ins_d if g.groups[s.src].send == "delta" else ins_a).add(s.port)
    for i in g.inputs:
        if i.group == name:
            ins_a.add(i.port)
    outs = ["s_out"]
    if any(o.group == name for o in g.outputs):
        outs.append("v_out")
    outs += [f"st_{reg}" for st, (sg, reg) in sorted(g.state.items()) if sg == name]
    return dict(a=[p for p in grp.ports if p in ins_a], d=[p for p in grp.ports if p in ins_d],
                out=list(dict.fromkeys(outs)))


def plan_lava(g: Graph, tokens=(), schedule: str = "sequential", mixed_shift: int | None = None,
              sparse_max_density: float = SPARSE_MAX_DENSITY, hw=None) -> dict:
    """The Lava process network for ``g`` as plain data: processes, ports, connections, weight encodings.

    Needs no Lava; ``export_lava`` instantiates exactly this plan, and ``mflc export-lava`` writes it as JSON.
    ``hw``: the hardware profile ``g`` was built for (a build's), refused if Lava cannot run it.
    """
    if hw is not None:
        check_profile_for_lava(hw)
    validate(g)
    ranges = analyse(g)
    tokens = [int(t) for t in tokens]
    depth = g.depth
    inject = injection_steps(len(tokens), depth, schedule)
    steps = (inject[-1] + depth) if tokens else depth
    syn = {n: encode_synapse(g, s, mixed_shift, sparse_max_density, hw, ranges) for n, s in g.synapses.items()}
    procs, conns = [], []
    for name, grp in g.groups.items():
        p = _neuron_ports(g, name)
        procs.append(dict(name=name, lava_class="IRNeuronProcess", model="PyIRNeuronModelFixed (fixed_pt)",
                          size=grp.size, stage=grp.stage, send=grp.send, out_bits=grp.out_bits,
                          in_ports=[f"a_{q}" for q in p["a"]] + [f"d_{q}" for q in p["d"]],
                          out_ports=p["out"], vars=[f"r_{r}" for r in grp.registers],
                          program=[f"{i.out} = {i.op}({', '.join(i.args)}{''.join(f', {k}={v}' for k, v in i.imm)})"
                                   for i in grp.program],
                          fires_at=[t0 + grp.stage for t0 in inject]))
    for n, e in syn.items():
        d = asdict(e)
        d["lava_model"] = f"Py{e.lava_class}ModelBitAcc (fixed_pt)"
        procs.append(dict(d, name=f"syn:{n}", kind="synapse"))
        conns.append(dict(src=f"{e.src}.s_out", dst=f"syn:{n}.s_in"))
        conns.append(dict(src=f"syn:{n}.a_out", dst=f"{e.dst}.{e.port}"))
    for i in g.inputs:
        grp = g.groups[i.group]
        procs.append(dict(name=f"in:{i.name}", lava_class="lava.proc.io.source.RingBuffer", model="PySendModelFixed",
                          shape=[grp.size, steps], table=i.table,
                          writes_at=[t0 + grp.stage for t0 in inject]))
        conns.append(dict(src=f"in:{i.name}.s_out", dst=f"{i.group}.a_{i.port}"))
    for o in g.outputs:
        procs.append(dict(name=f"out:{o.name}", lava_class="lava.proc.io.sink.RingBuffer", model="PyReceiveModelFixed",
                          shape=[g.groups[o.group].size, steps]))
        conns.append(dict(src=f"{o.group}.v_out", dst=f"out:{o.name}.a_in"))
    for sname, (sg, reg) in sorted(g.state.items()):
        procs.append(dict(name=f"state:{sname}", lava_class="lava.proc.io.sink.RingBuffer",
                          model="PyReceiveModelFixed", shape=[g.groups[sg].size, steps]))
        conns.append(dict(src=f"{sg}.st_{reg}", dst=f"state:{sname}.a_in"))
    _check_connected(g)
    counts: dict[str, int] = {}
    for p in procs:
        counts[p["lava_class"]] = counts.get(p["lava_class"], 0) + 1
    return dict(format="mflc-lava-network/1", lava_version="0.10.0", run_config="Loihi2SimCfg(select_tag='fixed_pt')",
                schedule=schedule, tokens=tokens, injection_steps=inject, depth=depth, steps=steps,
                mixed_shift=mixed_shift, process_counts=counts, processes=procs, connections=conns,
                timing=("a message sent at step t by a neuron process reaches the destination's port at "
                        "t + 1 + delay (Dense/Sparse: one-step buffer; DelayDense/DelaySparse: delay more)"))


def _check_connected(g: Graph) -> None:
    """Lava runs the processes reachable from the one it is started on: refuse disconnected graphs."""
    parent = {n: n for n in g.groups}

    def find(a):
        """Union-find root, with path halving."""
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for s in g.synapses.values():
        parent[find(s.src)] = find(s.dst)
    roots = {find(n) for n in g.groups}
    if len(roots) > 1:
        raise LavaExportError(f"the graph has {len(roots)} disconnected parts; Lava would run only one of them")


# ---- Lava classes (built on first use, so that importing this module never needs Lava) -----------------
@functools.lru_cache(maxsize=1)
def _lava_classes():
    _require_lava()
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.process.ports.ports import InPort, OutPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    class IRNeuronProcess(AbstractProcess):
        """One IR neuron group: InPorts ``a_<port>`` (summed values) and ``d_<port>`` (deltas, kept as a
        running sum), OutPort ``s_out`` (the graded-spike message), ``v_out`` (the value, for host outputs),
        ``st_<reg>`` (a register after each step, for state read-out), Vars ``r_<reg>``."""

        def __init__(self, *, group: NeuronGroup, fire_steps: dict, ports: dict, name: str | None = None):
            super().__init__(group=group, fire_steps=dict(fire_steps), ports=ports, name=name)
            n = (group.size,)
            for p in ports["a"]:
                setattr(self, f"a_{p}", InPort(shape=n))
            for p in ports["d"]:
                setattr(self, f"d_{p}", InPort(shape=n))
            for p in ports["out"]:
                setattr(self, p, OutPort(shape=n))
            for r in group.registers:
                setattr(self, f"r_{r}", Var(shape=n, init=0))

    @implements(proc=IRNeuronProcess, protocol=LoihiProtocol)
    @requires(CPU)
    @tag("fixed_pt")
    class PyIRNeuronModelFixed(PyLoihiProcessModel):
        """Runs the neuron program when a token reaches the group; sends zeros (adds nothing) otherwise.

        A per-group subclass (``model_for``) declares the LavaPyType of each of the group's ports and Vars.
        """

        def __init__(self, proc_params):
            super().__init__(proc_params)
            self.grp: NeuronGroup = proc_params["group"]
            self.fire: dict = proc_params["fire_steps"]
            self.ports: dict = proc_params["ports"]
            n = self.grp.size
            self.zero = np.zeros(n, np.int64)
            self.sigma = {p: np.zeros(n, np.int64) for p in self.ports["d"]}
            self.last_sent = np.zeros(n, np.int64)
            self.out = np.zeros(n, np.int64)

        def run_spk(self):
            """One Lava time step: receive ports, fire the group's program on its steps, send."""
            t = self.time_step - 1                       # Lava counts steps from 1, the IR from 0
            vals = {p: getattr(self, f"a_{p}").recv().astype(np.int64) for p in self.ports["a"]}
            for p in self.ports["d"]:
                self.sigma[p] += getattr(self, f"d_{p}").recv().astype(np.int64)
            grp = self.grp
            fired = t in self.fire
            if fired:
                ports = {p: vals.get(p, self.zero) + self.sigma.get(p, 0) for p in grp.ports}
                regs = {r: getattr(self, f"r_{r}").astype(np.int64) for r in grp.registers}
                out = run_program(grp, ports, regs)
                for r, v in regs.items():
                    getattr(self, f"r_{r}")[:] = v
                if grp.send == "delta":
                    msg = out - self.last_sent
                    self.last_sent = out.copy()
                else:
                    msg = out
                self.out = out
            for p in self.ports["out"]:
                if p == "s_out":
                    getattr(self, p).send(msg if fired else self.zero)
                elif p == "v_out":
                    getattr(self, p).send(self.out if fired else self.zero)
                else:                                     # st_<reg>: the register now
                    getattr(self, p).send(getattr(self, f"r_{p[3:]}"))

    return dict(IRNeuronProcess=IRNeuronProcess, PyIRNeuronModelFixed=PyIRNeuronModelFixed,
                model_for=functools.partial(_model_for, PyIRNeuronModelFixed))


def _model_for(base: type, ports: dict, registers) -> type:
    """A ProcessModel class (a subclass of ``base``) with the ports and registers of one neuron group."""
    from lava.magma.core.model.py.ports import PyInPort, PyOutPort
    from lava.magma.core.model.py.type import LavaPyType

    attrs = {f"a_{p}": LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=LAVA_ACC_BITS) for p in ports["a"]}
    attrs.update({f"d_{p}": LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=LAVA_ACC_BITS) for p in ports["d"]})
    attrs.update({p: LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=LAVA_MSG_BITS) for p in ports["out"]})
    attrs.update({f"r_{r}": LavaPyType(np.ndarray, np.int64, precision=b) for r, b in registers.items()})
    return type("PyIRNeuronModelFixed_", (base,), attrs)


def __getattr__(name):
    """``lava_backend.IRNeuronProcess`` / ``PyIRNeuronModelFixed``: the Lava classes, built on first access."""
    if name in ("IRNeuronProcess", "PyIRNeuronModelFixed"):
        return _lava_classes()[name]
    raise AttributeError(name)


# ---- the Lava network ---------------------------------------------------------------------------------
@dataclass
class LavaNetwork:
    """A built Lava process network for one token sequence, and how to read its outputs and states."""

    graph: Graph
    tokens: list[int]
    schedule: str
    inject: list[int]
    steps: int
    plan: dict
    neurons: dict = field(default_factory=dict)       # group -> IRNeuronProcess
    synapses: dict = field(default_factory=dict)      # synapse group -> Dense/Sparse/DelayDense/DelaySparse
    sources: dict = field(default_factory=dict)       # input name -> source RingBuffer
    output_sinks: dict = field(default_factory=dict)  # output name -> (sink RingBuffer, group)
    state_sinks: dict = field(default_factory=dict)   # state name -> (sink RingBuffer, group, register)
    model_map: dict = field(default_factory=dict)     # process instance -> its ProcessModel class
    timings: dict = field(default_factory=dict)
    final_registers: dict = field(default_factory=dict)  # "group.reg" -> the register Var after the run

    @property
    def n_processes(self) -> int:
        """Number of Lava processes the network has."""
        return len(self.neurons) + len(self.synapses) + len(self.sources) + len(self.output_sinks) + len(self.state_sinks)

    def run_config(self):
        """The Lava run configuration: CPU fixed-point models, with this network's neuron models."""
        from lava.magma.core.run_configs import Loihi2SimCfg

        return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=dict(self.model_map))

    def run(self) -> RunResult:
        """Run all steps with Loihi2SimCfg(select_tag="fixed_pt"); read outputs and states from the sinks."""
        from lava.magma.core.run_conditions import RunSteps

        g = self.graph
        anchor = next(iter(self.neurons.values()))
        t0 = time.perf_counter()
        try:
            anchor.run(condition=RunSteps(num_steps=self.steps), run_cfg=self.run_config())
            t1 = time.perf_counter()
            out_data = {n: np.asarray(sink.data.get()).astype(np.int64) for n, (sink, _) in self.output_sinks.items()}
            st_data = {n: np.asarray(sink.data.get()).astype(np.int64) for n, (sink, _, _) in self.state_sinks.items()}
            final = {f"{grp}.{reg}": np.asarray(getattr(self.neurons[grp], f"r_{reg}").get()).astype(np.int64)
                     for n, (_, grp, reg) in self.state_sinks.items()}
        finally:
            anchor.stop()
        self.timings.update(run_seconds=t1 - t0, total_seconds=time.perf_counter() - t0)
        self.final_registers = final
        outs, out_steps = {}, []
        for n, (_, grp) in self.output_sinks.items():
            at = [t0_ + g.groups[grp].stage for t0_ in self.inject]
            outs[n] = out_data[n][:, at].T.copy() if at else np.zeros((0,))
            out_steps = at
        states = {}
        for n, (_, grp, _) in self.state_sinks.items():
            at = [t0_ + g.groups[grp].stage for t0_ in self.inject]
            states[n] = st_data[n][:, at].T.copy() if at else np.zeros((0,))
        return RunResult(outs, states, out_steps, self.steps)


def export_lava(graph: Graph, tokens, schedule: str = "sequential", mixed_shift: int | None = None,
                sparse_max_density: float = SPARSE_MAX_DENSITY, hw=None) -> LavaNetwork:
    """Build the Lava process network that runs ``tokens`` through ``graph`` (see the module doc)."""
    _require_lava()
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.sparse.process import DelaySparse, Sparse
    from lava.utils.weightutils import SignMode
    from scipy.sparse import csr_matrix

    tokens = [int(t) for t in tokens]
    if not tokens:
        raise MflcError("export_lava needs at least one token (the input RingBuffer holds the token sequence)")
    g = graph
    plan = plan_lava(g, tokens, schedule, mixed_shift, sparse_max_density, hw)
    L = _lava_classes()
    net = LavaNetwork(g, tokens, schedule, plan["injection_steps"], plan["steps"], plan)
    for name, grp in g.groups.items():
        ports = _neuron_ports(g, name)
        fire = {t0 + grp.stage: k for k, t0 in enumerate(net.inject)}
        proc = L["IRNeuronProcess"](group=grp, fire_steps=fire, ports=ports, name=name)
        net.neurons[name] = proc
        net.model_map[proc] = L["model_for"](ports, grp.registers)
    encodings = {p["name"][4:]: p for p in plan["processes"] if p.get("kind") == "synapse"}
    for name, s in g.synapses.items():
        e = SynapseEncoding(**{f: encodings[name][f] for f in SynapseEncoding.__dataclass_fields__})
        w = e.lava_weights(s)
        kw = dict(weight_exp=e.lava_weight_exp, num_weight_bits=e.num_weight_bits, sign_mode=SignMode[e.sign_mode],
                  num_message_bits=e.num_message_bits, name=f"syn:{name}")
        if e.lava_class == "Dense":
            proc = Dense(weights=w, **kw)
        elif e.lava_class == "DelayDense":
            proc = DelayDense(weights=w, delays=np.full(w.shape, e.delay, dtype=int), **kw)
        elif e.lava_class == "Sparse":
            proc = Sparse(weights=csr_matrix(w), **kw)
        else:
            wc = csr_matrix(w)
            dl = csr_matrix((np.full(wc.nnz, e.delay, dtype=int), wc.indices.copy(), wc.indptr.copy()), shape=w.shape)
            proc = DelaySparse(weights=wc, delays=dl, **kw)
        net.synapses[name] = proc
        net.neurons[s.src].s_out.connect(proc.s_in)
        proc.a_out.connect(getattr(net.neurons[s.dst], e.port))
    for i in g.inputs:
        grp = g.groups[i.group]
        table = g.host_tensors[i.table]
        data = np.zeros((grp.size, net.steps), np.int64)
        for k, t0 in enumerate(net.inject):
            if not 0 <= tokens[k] < table.shape[0]:
                raise MflcError(f"token {tokens[k]} outside the input table {i.table} [0, {table.shape[0]})")
            data[:, t0 + grp.stage] += table[tokens[k]]
        src = Source(data=data.astype(np.int32))
        src.s_out.connect(getattr(net.neurons[i.group], f"a_{i.port}"))
        net.sources[i.name] = src
    for o in g.outputs:
        sink = Sink(shape=(g.groups[o.group].size,), buffer=net.steps)
        net.neurons[o.group].v_out.connect(sink.a_in)
        net.output_sinks[o.name] = (sink, o.group)
    for sname, (sg, reg) in sorted(g.state.items()):
        sink = Sink(shape=(g.groups[sg].size,), buffer=net.steps)
        getattr(net.neurons[sg], f"st_{reg}").connect(sink.a_in)
        net.state_sinks[sname] = (sink, sg, reg)
    return net


def run_lava(graph: Graph, tokens, schedule: str = "sequential", **kw) -> RunResult:
    """Export ``graph`` for ``tokens`` and run it under Lava's CPU simulation (fixed_pt models).

    The result also carries ``.lava``: build and run seconds, the process count and the final register Vars.
    """
    t0 = time.perf_counter()
    net = export_lava(graph, tokens, schedule, **kw)
    t1 = time.perf_counter()
    res = net.run()
    res.messages = {}
    res.lava = dict(build_seconds=t1 - t0, processes=net.n_processes, **net.timings,
                    final_registers=net.final_registers)
    return res


def verify_lava(int_model, graph: Graph, tokens, progress=None, schedule: str = "pipelined", **kw):
    """Lava against the integer reference model, exactly: every logit and every recurrent state.

    Tokens are pipelined (one injected per step) by default: the same integers as the sequential schedule
    (each group still runs its tokens in order, one per step) in n + depth - 1 Lava steps instead of
    n · depth. Returns a ``simulator.verify.VerifyResult``; a divergence names the token and the first
    differing value (Lava records only outputs and states, so no step is located).
    """
    from .verify import VerifyResult, compare_run, expected_run

    tokens = [int(t) for t in tokens]
    want_logits, want_states = expected_run(int_model, tokens, progress)
    res = run_lava(graph, tokens, schedule, **kw)
    compared, div = compare_run(graph, want_logits, want_states, res.outputs, res.states)
    info = {k: v for k, v in res.lava.items() if k != "final_registers"}
    return VerifyResult(div is None, len(tokens), compared, div, dict(lava_steps=res.steps, schedule=schedule, **info))
