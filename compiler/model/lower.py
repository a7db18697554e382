"""Lowering: quantized HGRN-Bit → IR graph of neuron groups and synapse groups.

Every group is something Loihi 2 can hold: a neuron program of op-library instructions over per-neuron
registers, one graded-spike output per neuron. What needs many neurons' values (RMSNorm's mean square)
is done the chip's way: a square group sends x², synapses of weight 1 reduce them into one neuron that
computes the packed 1/rms, and synapses of weight 1 broadcast it back to an apply group that also
receives x (delayed). Elementwise chains are fused into one program (see docs/lowering.md): the whole
MLGRU update up to SiLU(h); the RMSNorm-swish output gate; requantization + residual add; the GLU.

Each ``_lower_*`` function adds one part of the network and returns the name of the group whose messages
carry its result, so each can be built and tested alone.
"""
from __future__ import annotations

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, PackedSynapseGroup, SynapseGroup
from mflc.ir.ops import bits_range
from mflc.ir.range_analysis import partial_peak
from mflc.ir.roles import ROLE_LOGITS, ROLE_RECURRENT
from mflc.ir.validate import validate

from .csr import synapses_from_dense
from .quantize import LazyTernary, QuantizedModel
from .structure import next_x

I = Instr.make


class VirtualTernary:
    """Stands in for a ternary matrix when only its shape and density are known (estimates from a preset)."""

    def __init__(self, shape, density: float):
        self.shape = (int(shape[0]), int(shape[1]))
        self.density = float(density)

    def __getitem__(self, rows: slice) -> "VirtualTernary":
        n = len(range(*rows.indices(self.shape[0])))
        return VirtualTernary((n, self.shape[1]), self.density)

    def row_counts(self) -> np.ndarray:
        """The nonzeros each row of the stand-in matrix is assumed to hold (density times columns)."""
        return np.full(self.shape[0], int(round(self.density * self.shape[1])), dtype=np.int64)


class _Builder:
    def __init__(self, qm: QuantizedModel, widen_host: bool = True, keep_dense: bool = False):
        self.qm, self.widen_host = qm, widen_host
        self.dense_of: dict | None = {} if keep_dense else None    # synapse name -> the dense matrix it came from
        self.g = Graph(meta=dict(source="mflc.compiler.model.lower", config=qm.cfg.to_dict(),
                                 logit_scale=qm.meta["logit_scale"], inner_norm=not qm.options.remove_inner_norm))

    def stage(self, name: str) -> int:
        """A built group's pipeline stage."""
        return self.g.groups[name].stage

    def group(self, name, size, ports, program, output, out_bits, stage, **kw) -> str:
        """Add a neuron group and return its name, so builders can chain."""
        self.g.add_group(NeuronGroup(name=name, size=int(size), ports=list(ports), program=list(program),
                                     output=output, out_bits=int(out_bits), stage=int(stage), **kw))
        return name

    def _delay(self, src, dst):
        return self.stage(dst) - self.stage(src) - 1

    def identity(self, src, dst, port):
        """Forward src's output unchanged to dst.port, with the delay the stages require."""
        n = self.g.groups[src].size
        self.g.add_synapse(SynapseGroup.identity(f"{src}->{dst}.{port}", src, dst, port, n, delay=self._delay(src, dst),
                                                 meta=dict(kind="identity")))

    def ones(self, src, dst, port, kind):
        """All-ones synapses from src to dst.port: a sum over src (a reduction)."""
        self.g.add_synapse(SynapseGroup.ones(f"{src}->{dst}.{port}", src, dst, port, self.g.groups[dst].size,
                                             self.g.groups[src].size, delay=self._delay(src, dst), meta=dict(kind=kind)))

    def weights(self, name: str):
        """A projection's matrix: its 2-bit codes when the quantized model still holds them (a loaded model:
        the synapse groups then share those bytes, no int8 or CSR copy), else the int8 matrix."""
        w = self.qm.packed(name) if self.dense_of is None else None
        return w if w is not None else self.qm.t(name)

    def dense(self, src, dst, port, w, layer):
        """A ternary weight matrix from src to dst.port (virtual rows for a skeleton)."""
        if isinstance(w, LazyTernary):
            self.g.add_synapse(PackedSynapseGroup(f"{src}->{dst}.{port}", src, dst, port, w.shape, w.codes,
                                                  where=w.where, stats=w.stats, delay=self._delay(src, dst),
                                                  meta=dict(kind="ternary", layer=layer)))
            return
        if isinstance(w, VirtualTernary):
            self.g.add_synapse(SynapseGroup.from_row_counts(
                f"{src}->{dst}.{port}", src, dst, port, w.shape, w.row_counts(), delay=self._delay(src, dst),
                meta=dict(kind="ternary", layer=layer)))
            return
        self.g.add_synapse(synapses_from_dense(f"{src}->{dst}.{port}", src, dst, port, w,
                                               delay=self._delay(src, dst), meta=dict(kind="ternary", layer=layer)))
        if self.dense_of is not None:
            self.dense_of[f"{src}->{dst}.{port}"] = w

    # ---- RMSNorm: square -> reduce -> broadcast + apply --------------------------------------------------
    def norm_reduction(self, src: str, red_key: str, tag: str, layer) -> str:
        """Square and sum groups for the mean square of ``src``'s messages; returns the sum group."""
        s0, n, b = self.stage(src), self.g.groups[src].size, self.g.groups[src].out_bits
        k = self.qm.scalars.get(f"sq.{red_key}", 0)
        ins = I("square_shr", "y", "x", shift=k) if k else I("square", "y", "x")
        sq = self.group(f"{tag}.sq", n, ["x"], [ins], "y", fp.square_bits(b, k), s0 + 1,
                        meta=dict(layer=layer, role="norm.square"))
        self.identity(src, sq, "x")
        sm = self.group(f"{tag}.sum", 1, ["x"], [I("rms_factor", "y", "x", eps=self.qm.s(f"E.{red_key}"))], "y",
                        fp.MSG_BITS_MAX, s0 + 2, meta=dict(layer=layer, role="norm.rsqrt"))
        self.ones(sq, sm, "x", "reduce")
        return sm

    def norm_apply(self, name, src, sm, apply_key, out_site, layer, extra_ports=(), extra=(), output="y",
                   out_bits=None, stage=None) -> str:
        """The group applying an RMS factor and gain to src's messages, at out_site's width."""
        qm = self.qm
        prog = [I("rms_apply", "y", "x", "r", "gain", gain_shift=qm.s(f"gexp.{apply_key}"), bits=qm.bits(out_site))]
        prog += list(extra)
        self.group(name, self.g.groups[src].size, ["x", "r", *extra_ports], prog, output,
                   out_bits or qm.bits(out_site), stage if stage is not None else self.stage(sm) + 1,
                   params=dict(gain=qm.t(f"G.{apply_key}").astype(np.int64)), meta=dict(layer=layer, role="norm.apply"))
        self.identity(src, name, "x")
        self.ones(sm, name, "r", "broadcast")
        return name

    def norm(self, name, src, red_key, apply_key, out_site, layer) -> str:
        """A whole RMSNorm of src: reduction then application; returns the applied group."""
        sm = self.norm_reduction(src, red_key, name, layer)
        return self.norm_apply(name, src, sm, apply_key, out_site, layer)

    def rescale(self, out, arg, key, bits):
        """A rescale instruction with the multiplier and shift quantize stored under key."""
        return I("rescale", out, arg, mult=self.qm.s(f"M.{key}"), shift=self.qm.s(f"s.{key}"), bits=bits)


def _lower_embedding(b: _Builder) -> str:
    qm = b.qm
    emb = qm.t("emb.Q")
    b.g.host_tensors["embedding"] = emb.astype(np.int64) if b.widen_host else emb   # stored narrowest either way
    name = b.group("embed", qm.cfg.d, ["tok"], [I("copy", "y", "tok")], "y", qm.bits("L0.x"), 0,
                   meta=dict(layer="embed", role="input"))
    b.g.inputs.append(GraphInput("tokens", name, "tok", "embedding"))
    return name


def _lower_token_mixer(b: _Builder, i: int, x: str) -> str:
    """attn_norm → (inner norms) → i/f/g projections → MLGRU → RMSNorm-swish gate → o_proj → residual."""
    qm, inner = b.qm, not b.qm.options.remove_inner_norm
    L, layer = f"L{i}.", i
    u = b.norm(L + "attn_norm", x, L + "x", L + "attn_norm", L + "attn_norm", layer)
    if inner:
        sm = b.norm_reduction(u, L + "u", L + "u", layer)
        v = {p: b.norm_apply(L + f"{p}_in", u, sm, L + f"{p}_in", L + f"{p}_in", layer) for p in ("i", "f", "g")}
    else:
        v = {p: u for p in ("i", "f", "g")}
    st = max(b.stage(v[p]) for p in v) + 1
    hb = qm.bits(L + "h")
    mlgru = b.group(L + "mlgru", qm.cfg.d_attn, ["pi", "pf"], [
        b.rescale("iq", "pi", L + "i", qm.bits(L + "i")),
        b.rescale("fq", "pf", L + "f", qm.bits(L + "f")),
        I("lut", "sig", "fq", table="sig_f", in_bits=qm.bits(L + "f")),
        I("forget_gate", "f", "sig", "beta"),
        I("lut", "si", "iq", table="silu_i", in_bits=qm.bits(L + "i")),
        I("mlgru_candidate", "c", "si", "f", bits=hb),
        I("mlgru_update", "h", "h", "f", "c", bits=hb),
        b.rescale("hq", "h", L + "hq", qm.bits(L + "hq")),
        I("lut", "sh", "hq", table="silu_h", in_bits=qm.bits(L + "hq")),
    ], "sh", qm.options.lut_out_bits, st, registers={"h": hb}, params={"beta": qm.t(L + "B").astype(np.int64)},
        tables={"sig_f": qm.t(L + "lut.sig_f"), "silu_i": qm.t(L + "lut.silu_i"), "silu_h": qm.t(L + "lut.silu_h")},
        meta=dict(layer=layer, role=ROLE_RECURRENT))
    b.g.state[L + "h"] = (mlgru, "h")
    b.dense(v["i"], mlgru, "pi", b.weights(f"W.{L}i"), layer)
    b.dense(v["f"], mlgru, "pf", b.weights(f"W.{L}f"), layer)
    g = b.group(L + "g", qm.cfg.d_attn, ["x"], [b.rescale("gq", "x", L + "g", qm.bits(L + "g"))], "gq",
                qm.bits(L + "g"), st, meta=dict(layer=layer, role="projection"))
    b.dense(v["g"], g, "x", b.weights(f"W.{L}g"), layer)
    sm = b.norm_reduction(g, L + "g", L + "gn", layer)
    o = b.norm_apply(L + "gate", g, sm, L + "gn", L + "gn", layer, extra_ports=["sh"],
                     extra=[I("mul_shr", "o", "y", "sh", shift=qm.s(L + "n.o"), bits=qm.bits(L + "o"))],
                     output="o", out_bits=qm.bits(L + "o"))
    b.identity(mlgru, o, "sh")
    vo = b.norm(L + "o_in", o, L + "o", L + "o_in", L + "o_in", layer) if inner else o
    r = b.group(L + "res1", qm.cfg.d, ["ao", "x"], [
        b.rescale("aoq", "ao", L + "attn_out", qm.bits(L + "attn_out")),
        b.rescale("a1", "x", L + "res_x", fp.MSG_BITS_MAX),
        b.rescale("a2", "aoq", L + "res_ao", fp.MSG_BITS_MAX),
        I("add_sat", "r", "a1", "a2", bits=qm.bits(L + "r")),
    ], "r", qm.bits(L + "r"), b.stage(vo) + 1, meta=dict(layer=layer, role="residual"))
    b.dense(vo, r, "ao", b.weights(f"W.{L}o"), layer)
    b.identity(x, r, "x")
    return r


def _lower_channel_mixer(b: _Builder, i: int, r: str) -> str:
    """mlp_norm → (inner norm) → gate_proj → GLU → (inner norm) → down_proj → residual."""
    qm, inner = b.qm, not b.qm.options.remove_inner_norm
    L, layer, m = f"L{i}.", i, qm.cfg.m
    nxt = next_x(qm.cfg, i)
    vm = b.norm(L + "mlp_norm", r, L + "r", L + "mlp_norm", L + "mlp_norm", layer)
    vg = b.norm(L + "gate_in", vm, L + "v", L + "gate_in", L + "gate_in", layer) if inner else vm
    glu = b.group(L + "glu", m, ["pa", "pb"], [
        b.rescale("a", "pa", L + "a", qm.bits(L + "a")),
        b.rescale("b", "pb", L + "b", qm.bits(L + "b")),
        I("lut", "sa", "a", table="silu_a", in_bits=qm.bits(L + "a")),
        I("mul_shr", "z", "sa", "b", shift=qm.s(L + "n.z"), bits=qm.bits(L + "z")),
    ], "z", qm.bits(L + "z"), b.stage(vg) + 1, tables={"silu_a": qm.t(L + "lut.silu_a")}, meta=dict(layer=layer, role="glu"))
    w = b.weights(f"W.{L}gate")
    halves = (w.rows(0, m), w.rows(m, 2 * m)) if isinstance(w, LazyTernary) else (None, None)
    if halves[0] is None or halves[1] is None:       # not on a byte boundary: the int8 matrix
        w = qm.t(f"W.{L}gate")
        halves = (w[:m], w[m:])
    b.dense(vg, glu, "pa", halves[0], layer)
    b.dense(vg, glu, "pb", halves[1], layer)
    vd = b.norm(L + "down_in", glu, L + "z", L + "down_in", L + "down_in", layer) if inner else glu
    x = b.group(L + "res2", qm.cfg.d, ["mo", "r"], [
        b.rescale("moq", "mo", L + "mlp_out", qm.bits(L + "mlp_out")),
        b.rescale("a1", "r", L + "res_r", fp.MSG_BITS_MAX),
        b.rescale("a2", "moq", L + "res_mo", fp.MSG_BITS_MAX),
        I("add_sat", "x", "a1", "a2", bits=qm.bits(nxt)),
    ], "x", qm.bits(nxt), b.stage(vd) + 1, meta=dict(layer=layer, role="residual"))
    b.dense(vd, x, "mo", b.weights(f"W.{L}down"), layer)
    b.identity(r, x, "r")
    return x


def _max_row_abs_sum(w: np.ndarray, block: int = 1 << 22) -> int:
    """max over rows of Σ |w| (exact integers), a block of rows at a time: an int64 copy of the whole
    head matrix would be 8 bytes a weight (655 MB for the 2.7B's)."""
    step = max(1, block // max(1, w.shape[1]))
    return max(int(np.max(np.sum(np.abs(w[r:r + step].astype(np.int64)), axis=1))) for r in range(0, w.shape[0], step))


def _lower_head(b: _Builder, x: str) -> str:
    qm, inner = b.qm, not b.qm.options.remove_inner_norm
    xn = b.norm("final.norm", x, "final.x", "final.norm", "final.norm", "head")
    vh = b.norm("head.in", xn, "final.norm", "head.in", "head.in", "head") if inner else xn
    w = b.weights("W.head")
    fan = (w.row_counts().max() if isinstance(w, VirtualTernary) else
           w.row_nonzeros().max() if isinstance(w, LazyTernary) else _max_row_abs_sum(w))
    acc_bits = partial_peak(int(fan), bits_range(b.g.groups[vh].out_bits)).bit_length() + 1   # the validator's bound
    head = b.group("head", qm.cfg.vocab_size, ["x"], [I("copy", "logits", "x")], "logits", acc_bits,
                   b.stage(vh) + 1, meta=dict(layer="head", role=ROLE_LOGITS))
    b.dense(vh, head, "x", w, "head")
    b.g.outputs.append(GraphOutput("logits", head))
    return head


class IncrementalLowering:
    """The lowering in its steps, for a model whose parameters are made layer by layer
    (compiler/model/stream.py): ``embedding()``, ``layer(i)`` for i = 0 .. L-1 in order, ``head()``; each
    adds its groups and synapse groups to ``graph`` and returns their names. ``lower`` is these steps."""

    def __init__(self, qm: QuantizedModel, widen_host: bool = True, keep_dense: bool = False):
        self.b = _Builder(qm, widen_host, keep_dense)
        self.x: str | None = None

    @property
    def graph(self) -> Graph:
        """The graph built so far."""
        return self.b.g

    def _added(self, fn) -> tuple[list[str], list[str]]:
        g0, s0 = len(self.b.g.groups), len(self.b.g.synapses)
        fn()
        return list(self.b.g.groups)[g0:], list(self.b.g.synapses)[s0:]

    def embedding(self) -> tuple[list[str], list[str]]:
        """The input group and its host table."""
        return self._added(lambda: setattr(self, "x", _lower_embedding(self.b)))

    def layer(self, i: int) -> tuple[list[str], list[str]]:
        """Layer i: token mixer, then channel mixer."""
        def step():
            """Both mixers of layer i, from the previous layer's output."""
            r = _lower_token_mixer(self.b, i, self.x)
            self.x = _lower_channel_mixer(self.b, i, r)
        return self._added(step)

    def head(self) -> tuple[list[str], list[str]]:
        """Final norm, head input norm and the logits group."""
        return self._added(lambda: _lower_head(self.b, self.x))


def lower(qm: QuantizedModel, check: bool = True) -> Graph:
    """The whole model as an IR graph; validated unless ``check`` is False."""
    steps = IncrementalLowering(qm)
    steps.embedding()
    for i in range(qm.cfg.L):
        steps.layer(i)
    steps.head()
    if check:
        validate(steps.graph)
    return steps.graph
