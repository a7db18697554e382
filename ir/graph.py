"""The IR: neuron groups running neuron programs, connected by synapse groups. Pure data.

Timing contract. A token injected at step τ is processed by group g at step τ + g.stage. A message that g
sends at step t is multiplied by the synapse weights, shifted by ``weight_exp`` and accumulated into the
receiver's port; the receiver sees it at step t + 1 + delay. The validator requires
delay == stage(dst) − stage(src) − 1 for every synapse, so every input lands exactly when its receiver
runs and tokens can be pipelined one per step. A group runs its program once per token, in token order,
so persistent registers (the recurrent state) advance once per token.

Messages. Each neuron sends one integer payload (a graded spike of ``out_bits`` ≤ 24 bits) per token:
``send="every"`` sends the value, ``send="delta"`` sends only its change since the last token (sigma-delta
style; a zero change sends nothing) and the receiving port keeps a running sum, which reconstructs the
value exactly because the validator only allows delta senders on synapses with weight_exp == 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .hardware import DEFAULT as _HW


@dataclass(frozen=True)
class Instr:
    """One instruction of a neuron program: ``out = op(*args, **imm)``.

    ``args`` name registers, temporaries, input ports or per-neuron parameters; ``imm`` holds integer
    immediates (shifts, widths) and table names.
    """

    op: str
    out: str
    args: tuple[str, ...]
    imm: tuple[tuple[str, object], ...] = ()

    @property
    def imm_dict(self) -> dict:
        """The immediates as a dict (they are stored as sorted pairs so instructions stay hashable)."""
        return dict(self.imm)

    @staticmethod
    def make(op: str, out: str, *args: str, **imm) -> "Instr":
        """Build an instruction with keyword immediates, normalised to sorted pairs for equality."""
        return Instr(op, out, tuple(args), tuple(sorted(imm.items())))


@dataclass
class NeuronGroup:
    """A population of identical neurons: one integer program run per neuron per token, and what it sends."""

    name: str
    size: int
    ports: list[str]                              # dendritic inputs, each fed by one or more synapse groups
    program: list[Instr]
    output: str                                   # register or temporary whose value is sent
    out_bits: int                                 # graded-spike payload width
    stage: int                                    # pipeline step offset within a token
    registers: dict[str, int] = field(default_factory=dict)   # persistent per-neuron state -> bits
    params: dict[str, np.ndarray] = field(default_factory=dict)  # per-neuron integer constants [size]
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # shared integer lookup tables
    send: str = "every"                           # "every" or "delta"
    meta: dict = field(default_factory=dict)      # reporting only: layer, role


@dataclass
class SynapseGroup:
    """Weights from every neuron of ``src`` to port ``port`` of ``dst``, stored CSR by destination row.

    Arithmetic is Lava Dense's fixed-point contract: a = Σ w·msg exactly (int32 accumulator, overflow
    excluded by the validator), then a << weight_exp, or a >> −weight_exp (floor) when negative.
    """

    name: str
    src: str
    dst: str
    port: str
    shape: tuple[int, int]                        # (dst size, src size)
    indptr: np.ndarray                            # int64 [n_dst + 1]
    indices: np.ndarray | None                    # int32 [nnz] source neuron (None: virtual)
    values: np.ndarray | None                     # int8 [nnz] (None: virtual)
    weight_exp: int = 0
    delay: int = 0
    acc_bits: int = _HW.accumulator_bits          # the accumulator the validator bounds its sums by
    meta: dict = field(default_factory=dict)

    @property
    def nnz(self) -> int:
        """Number of stored weights (CSR entries), also for virtual synapses."""
        return int(self.indptr[-1]) if self.indptr.size else 0

    @property
    def virtual(self) -> bool:
        """A skeleton synapse group (for estimates): row counts are known, weights are not stored."""
        return self.values is None

    @property
    def density(self) -> float:
        """Fraction of the dense matrix that is stored: what sizing and cost estimates scale with."""
        n = self.shape[0] * self.shape[1]
        return self.nnz / n if n else 0.0

    def row_offsets(self) -> np.ndarray:
        """The CSR row pointer (int64 [rows + 1]): rows a..b hold row_offsets()[b] - row_offsets()[a] weights."""
        return self.indptr

    def row_counts(self) -> np.ndarray:
        """Weights per destination row, from the CSR pointers."""
        return np.diff(self.indptr)

    def row_sums(self, per_synapse: np.ndarray) -> np.ndarray:
        """Sum of a per-synapse integer quantity (accumulated in int64) over each destination row (CSR
        order), exactly what np.add.at would give, without its slow scatter: one reduceat over the
        non-empty rows, whose starts are exactly the segment boundaries (empty rows have none)."""
        out = np.zeros(self.shape[0], np.int64)
        nonempty = np.diff(self.indptr) > 0
        if nonempty.any():
            out[nonempty] = np.add.reduceat(per_synapse, self.indptr[:-1][nonempty], dtype=np.int64)
        return out

    def replaced(self, **changes) -> "SynapseGroup":
        """A copy with some fields changed (dataclasses.replace; a packed group keeps its codes)."""
        return replace(self, **changes)

    def value_range(self) -> tuple[int, int]:
        """(min, max) of the stored weights, (0, 0) when there are none."""
        if not self.values.size:
            return 0, 0
        return int(self.values.min()), int(self.values.max())

    def pos_neg_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per destination row, the sum of the positive and of the negative weights (int64)."""
        return self.row_sums(np.maximum(self.values, 0)), self.row_sums(np.minimum(self.values, 0))

    def to_dense(self) -> np.ndarray:
        """The weights as a dense int64 matrix, for tests and small-graph checks."""
        dense = np.zeros(self.shape, dtype=np.int64)
        rows = np.repeat(np.arange(self.shape[0]), self.row_counts())
        dense[rows, self.indices] = self.values
        return dense

    @classmethod
    def from_dense(cls, name, src, dst, port, w: np.ndarray, **kw) -> "SynapseGroup":
        """The CSR synapse group of a dense ternary matrix (its nonzeros only)."""
        w = np.asarray(w)
        rows, cols = np.nonzero(w)
        indptr = np.zeros(w.shape[0] + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(rows, minlength=w.shape[0]))
        return cls(name, src, dst, port, (int(w.shape[0]), int(w.shape[1])), indptr,
                   cols.astype(np.int32), w[rows, cols].astype(np.int8), **kw)

    @classmethod
    def from_row_counts(cls, name, src, dst, port, shape, row_counts: np.ndarray, **kw) -> "SynapseGroup":
        """A virtual synapse group: how many non-zero weights each destination row has, nothing more."""
        indptr = np.concatenate([[0], np.cumsum(np.asarray(row_counts, dtype=np.int64))])
        return cls(name, src, dst, port, (int(shape[0]), int(shape[1])), indptr, None, None, **kw)

    @classmethod
    def identity(cls, name, src, dst, port, n: int, **kw) -> "SynapseGroup":
        """A one-to-one synapse group of unit weights: forwards a group's output unchanged to a port."""
        return cls(name, src, dst, port, (n, n), np.arange(n + 1, dtype=np.int64),
                   np.arange(n, dtype=np.int32), np.ones(n, np.int8), **kw)

    @classmethod
    def ones(cls, name, src, dst, port, n_dst: int, n_src: int, **kw) -> "SynapseGroup":
        """All-to-all weight-1 synapses: a reduction (n_dst = 1) or a broadcast (n_src = 1)."""
        return cls(name, src, dst, port, (n_dst, n_src), np.arange(n_dst + 1, dtype=np.int64) * n_src,
                   np.tile(np.arange(n_src, dtype=np.int32), n_dst), np.ones(n_dst * n_src, np.int8), **kw)


_CSR_FIELDS = ("indptr", "indices", "values")


class PackedSynapseGroup(SynapseGroup):
    """A ternary synapse group held as its 2-bit codes (ir/ternary.py; a loaded IR's memory-mapped file
    bytes): what the engine's bit-plane kernels and the validator need (per-row counts of +1 and -1, bit
    planes) is computed from the codes, and the CSR arrays are decoded only if something asks for them.
    ``stats`` (the per-row counts) may be shared with another group of the same codes."""

    def __init__(self, name, src, dst, port, shape, codes: np.ndarray | None = None, *,
                 where: str = "packed ternary block", stats: dict | None = None, indptr=None, indices=None,
                 values=None, **kw):
        super().__init__(name, src, dst, port, (int(shape[0]), int(shape[1])), indptr, indices, values, **kw)
        if codes is None:                 # dataclasses.replace passes the (decoded) CSR arrays: keep them
            if indptr is None:
                raise ValueError(f"synapse group {name}: a packed group needs its codes or its CSR arrays")
            self.codes, self.where, self.stats = None, where, {}
            return
        for a in _CSR_FIELDS:
            del self.__dict__[a]
        self.codes, self.where = codes, where
        self.stats = stats if stats is not None else {}

    def replaced(self, **changes) -> SynapseGroup:
        """A copy with some fields changed (as dataclasses.replace), still over the same codes while the CSR
        arrays were never made and the weights are not among the changes."""
        if self.decoded or set(changes) & set(_CSR_FIELDS + ("shape",)):
            return super().replaced(**changes)
        kw = {f: getattr(self, f) for f in ("weight_exp", "delay", "acc_bits", "meta")}
        kw.update(changes)
        names = {k: kw.pop(k) for k in ("name", "src", "dst", "port") if k in kw}
        return PackedSynapseGroup(names.get("name", self.name), names.get("src", self.src), names.get("dst", self.dst),
                                  names.get("port", self.port), self.shape, self.codes, where=self.where,
                                  stats=self.stats, **kw)

    def __getattr__(self, name):
        if name in _CSR_FIELDS and "codes" in self.__dict__:
            from .ternary import unpack_to_csr

            ip, ind, val = unpack_to_csr(self.__dict__["codes"], self.shape, self.__dict__["where"])
            self.__dict__.update(indptr=ip, indices=ind, values=val)
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def decoded(self) -> bool:
        """Whether the CSR arrays have been made (by something that needed them)."""
        return "indptr" in self.__dict__

    @staticmethod
    def same_codes(a, b) -> bool:
        """Whether a and b are both still-packed groups of one shape and equal 2-bit codes (so equal weights),
        decided without a CSR copy; False says nothing (compare them as CSR)."""
        return (isinstance(a, PackedSynapseGroup) and isinstance(b, PackedSynapseGroup)
                and not (a.decoded or b.decoded) and tuple(a.shape) == tuple(b.shape)
                and (a.codes is b.codes or bool(np.array_equal(a.codes, b.codes))))

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(+1 weights, -1 weights) per destination row, from the codes once."""
        if "n_plus" not in self.stats:
            from .ternary import planes_from_codes

            _, _, self.stats["n_plus"], self.stats["n_minus"] = planes_from_codes(self.codes, self.shape, self.where,
                                                                                  planes=False)
        return self.stats["n_plus"], self.stats["n_minus"]

    def bit_planes(self):
        """(plus, minus, n_plus, n_minus): the bit planes the engine's kernels read, made afresh (not kept)."""
        from .ternary import planes_from_codes

        out = planes_from_codes(self.codes, self.shape, self.where)
        self.stats["n_plus"], self.stats["n_minus"] = out[2], out[3]
        return out

    # Once decoded, the CSR arrays are the weights (they may have been edited): every figure comes from them.
    @property
    def nnz(self) -> int:
        """Number of non-zero weights."""
        if self.decoded:
            return super().nnz
        p, m = self.counts()
        return int(p.sum() + m.sum())

    @property
    def virtual(self) -> bool:
        """Never: the weights are stored."""
        return False

    def row_counts(self) -> np.ndarray:
        """Non-zero weights per destination row."""
        if self.decoded:
            return super().row_counts()
        p, m = self.counts()
        return p + m

    def row_offsets(self) -> np.ndarray:
        """The row pointer the CSR form would have, from the codes' per-row counts (kept once made)."""
        if self.decoded:
            return super().row_offsets()
        if "offsets" not in self.stats:
            self.stats["offsets"] = np.concatenate([[0], np.cumsum(self.row_counts(), dtype=np.int64)])
        return self.stats["offsets"]

    def value_range(self) -> tuple[int, int]:
        """(min, max) of the non-zero weights, (0, 0) when there are none."""
        if self.decoded:
            return super().value_range()
        p, m = (int(c.sum()) for c in self.counts())
        if not p + m:
            return 0, 0
        return (-1 if m else 1), (1 if p else -1)

    def pos_neg_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the sum of the positive and of the negative weights (the validator's interval bounds)."""
        if self.decoded:
            return super().pos_neg_sums()
        p, m = self.counts()
        return p, -m


@dataclass
class GraphInput:
    """Host input: per token, the host writes ``table[token]`` into ``port`` of ``group``."""

    name: str
    group: str
    port: str
    table: str                                    # name of a host-side tensor in Graph.host_tensors


@dataclass
class GraphOutput:
    """Host output: per token, the host reads the value ``group`` computes (its ``output``)."""

    name: str
    group: str


@dataclass
class Graph:
    """The whole compiled network: neuron and synapse groups, host inputs and outputs, named states."""

    groups: dict[str, NeuronGroup] = field(default_factory=dict)
    synapses: dict[str, SynapseGroup] = field(default_factory=dict)
    inputs: list[GraphInput] = field(default_factory=list)
    outputs: list[GraphOutput] = field(default_factory=list)
    host_tensors: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (group, register), e.g. "L0.h"
    meta: dict = field(default_factory=dict)

    def add_group(self, g: NeuronGroup) -> NeuronGroup:
        """Add a neuron group; a repeated name is refused so groups cannot silently replace each other."""
        if g.name in self.groups:
            raise ValueError(f"duplicate neuron group {g.name!r}")
        self.groups[g.name] = g
        return g

    def add_synapse(self, s: SynapseGroup) -> SynapseGroup:
        """Add a synapse group; a repeated name is refused so synapses cannot silently replace each other."""
        if s.name in self.synapses:
            raise ValueError(f"duplicate synapse group {s.name!r}")
        self.synapses[s.name] = s
        return s

    @property
    def depth(self) -> int:
        """Steps from a token's injection to its last group's run (inclusive): the pipeline latency."""
        return 1 + max((g.stage for g in self.groups.values()), default=0)

    def incoming(self, group: str) -> list[SynapseGroup]:
        """The synapse groups feeding ``group`` (any port)."""
        return [s for s in self.synapses.values() if s.dst == group]

    def outgoing(self, group: str) -> list[SynapseGroup]:
        """The synapse groups ``group`` sends on."""
        return [s for s in self.synapses.values() if s.src == group]

    def totals(self) -> dict:
        """Summary counts of the graph (groups, neurons, synapses, depth), for reports and logs."""
        return dict(groups=len(self.groups), neurons=sum(g.size for g in self.groups.values()),
                    synapse_groups=len(self.synapses), synapses=sum(s.nnz for s in self.synapses.values()),
                    depth=self.depth)
