"""Which corners of the integer arithmetic a trace exercises: lookup-table entries, saturation ends,
exact rounding ties and rsqrt first-guess buckets.

A conformance vector set is only as good as the cases it reaches. The integer model's trace holds every
site's values, and the quantized model holds every parameter, so each op's operands can be rebuilt from
the trace alone and its corner cases counted without instrumenting the model: an R step's accumulator is
W·(its input site), a norm's product x·G·r comes from its input site and the reduction, a gate's
products from the sites and tables it reads. Each case found is a hashable item; ``Coverage`` counts them
against what exists (every table entry, both ends of every saturating site, one tie per rounding step).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mflc.ir import fixedpoint as fp

GATE_ONE = 1 << fp.GATE_FRAC
TABLES = (("sig_f", "f"), ("silu_i", "i"), ("silu_h", "hq"), ("silu_a", "a"))
# requantization steps: (site, the site whose values feed the product, weight) per layer; None: no matrix
_REQUANT = (("i", "i_in", "i"), ("f", "f_in", "f"), ("g", "g_in", "g"), ("hq", "h", None),
            ("attn_out", "o_in", "o"), ("a", "gate_in", "gate"), ("b", "gate_in", "gate"), ("mlp_out", "down_in", "down"))
_OUTER = {"i_in": "attn_norm", "f_in": "attn_norm", "g_in": "attn_norm", "o_in": "o", "gate_in": "mlp_norm", "down_in": "z"}
_ALIGN = (("res_x", "x"), ("res_ao", "attn_out"), ("res_r", "r"), ("res_mo", "mlp_out"))
RSQRT_BUCKETS = (16, 64)          # u >> 10 for u in [2^14, 2^16): the table's first and last entries are the edges


def _ties(prod: np.ndarray, n) -> bool:
    """Whether any product is an exact tie of a right shift by n: its shifted-out bits are exactly 1/2."""
    n = np.broadcast_to(np.asarray(n, np.int64), np.shape(prod))
    ok = n > 0
    if not ok.any():
        return False
    half = np.where(ok, np.int64(1) << np.maximum(n - 1, 0), 0)
    mask = np.where(ok, (np.int64(1) << np.maximum(n, 0)) - 1, 0)
    return bool(np.any(ok & ((np.abs(prod) & mask) == half)))


@dataclass
class Coverage:
    """The corner cases one or more traces reached, against every case that exists."""

    items: set = field(default_factory=set)
    universe: dict = field(default_factory=dict)         # category -> set of every item of that category

    def add(self, other: "Coverage") -> int:
        """Merge another run's items; returns how many were new."""
        new = other.items - self.items
        self.items |= new
        return len(new)

    def report(self) -> dict:
        """Per category: reached, total, and the items not reached (a sample)."""
        out = {}
        for cat, allof in self.universe.items():
            got = allof & self.items
            out[cat] = dict(reached=len(got), total=len(allof),
                            missing=sorted(map(_fmt, allof - got))[:12])
        return out


def _fmt(item) -> str:
    return ":".join(str(x) for x in item[1:])


HEADLINE = ("table entries", "saturation ends per op", "rounding ties per op", "rsqrt table entries")


# the op that writes each site kind, for the per-op saturation counts
_SITE_OP = {**{k: "rescale" for k in ("i", "f", "g", "hq", "attn_out", "a", "b", "mlp_out")},
            **{k: "rms_apply" for k in ("attn_norm", "i_in", "f_in", "g_in", "gn", "o_in", "mlp_norm", "gate_in",
                                        "down_in", "final.norm", "head.in")},
            "o": "mul_shr", "z": "mul_shr", "r": "add_sat", "x": "add_sat", "final.x": "add_sat", "h": "mlgru_update"}
ROUNDING_OPS = ("rescale", "rms_apply", "mul_shr", "forget_gate", "mlgru_candidate", "mlgru_update", "square_shr")


def site_op(site: str) -> str:
    """The saturating op that writes a site."""
    from mflc.compiler.model.structure import site_kind

    return _SITE_OP[site_kind(site)]


def universe(qm) -> dict:
    """Every corner case of the model's ops. Headline categories: every entry of every lookup table, both
    ends of every saturating op and one exact tie of every rounding op (anywhere in the model), every
    entry of the rsqrt table; then the same per site and per step, for finding what a run missed."""
    from mflc.compiler.model.structure import all_norms

    cfg, inner = qm.cfg, not qm.options.remove_inner_norm
    sat_sites = saturating_sites(qm)
    steps = rounding_steps(qm)
    u: dict = {
        "table entries": {("lut", f"L{i}.{t}", v) for i in range(cfg.L) for t, s in TABLES
                          for v in range(fp.smin(qm.bits(f"L{i}.{s}")), fp.smax(qm.bits(f"L{i}.{s}")) + 1)},
        "saturation ends per op": {("sat-op", site_op(s), e) for s in sat_sites for e in ("min", "max")},
        "rounding ties per op": {("tie-op", op) for op in dict.fromkeys(op for _, op in steps)},
        "rsqrt table entries": {("rsqrt", b) for b in range(*RSQRT_BUCKETS)},
        "saturation ends per site": {("sat", s, e) for s in sat_sites for e in ("min", "max")},
        "rounding ties per step": {("tie", s) for s, _ in steps},
        "rsqrt table edges per norm": {("rsqrt-norm", n.key, b) for n in all_norms(cfg, inner)
                                       for b in (RSQRT_BUCKETS[0], RSQRT_BUCKETS[1] - 1)},
    }
    return u


def saturating_sites(qm) -> list[str]:
    """Every site written by a saturating step (R, N, add_sat, the gate products, the state update)."""
    from mflc.compiler.model.structure import LAYER_SITES

    inner = not qm.options.remove_inner_norm
    out = [f"L{i}.{k}" for i in range(qm.cfg.L) for k in LAYER_SITES if k != "x" and (inner or not k.endswith("_in"))]
    return out + ["final.x", "final.norm"] + (["head.in"] if inner else [])


def rounding_steps(qm) -> list[tuple[str, str]]:
    """(step, op) of every step that rounds with a positive shift (only those can tie): a step is named by
    the site it writes, or by its key (residual alignments, the gate ops, a norm's shifted squares)."""
    from mflc.compiler.model.structure import all_norms

    cfg, inner = qm.cfg, not qm.options.remove_inner_norm
    out = []
    for i in range(cfg.L):
        L = f"L{i}."
        out += [(L + s, "rescale") for s, _, _ in _REQUANT if qm.s(f"s.{L}{s}") > 0]
        out += [(L + k, "rescale") for k, _ in _ALIGN if qm.s(f"s.{L}{k}") > 0]
        out += [(L + "o", "mul_shr"), (L + "z", "mul_shr"), (L + "forget_gate", "forget_gate"),
                (L + "mlgru_candidate", "mlgru_candidate"), (L + "mlgru_update", "mlgru_update")]
    for n in all_norms(cfg, inner):
        out.append((n.key, "rms_apply"))
        if qm.scalars.get(f"sq.{n.reduction}", 0) > 0:
            out.append((f"sq.{n.reduction}", "square_shr"))
    return list(dict.fromkeys(out))


def measure(qm, values: dict[str, np.ndarray]) -> Coverage:
    """The corner cases one sequence's trace (site -> [T, width], from the all-zero state) reaches."""
    cfg, inner = qm.cfg, not qm.options.remove_inner_norm
    items: set = set()
    for i in range(cfg.L):
        L = f"L{i}."
        for table, site in TABLES:
            items |= {("lut", f"{L}{table}", int(v)) for v in np.unique(values[L + site])}
        _layer_ties(qm, values, L, inner, items)
    for s in saturating_sites(qm):
        if s in values:
            b = qm.bits(s)
            v = values[s]
            if (v == fp.smin(b)).any():
                items.add(("sat", s, "min"))
            if (v == fp.smax(b)).any():
                items.add(("sat", s, "max"))
    _norm_cases(qm, values, inner, items)
    ops = dict(rounding_steps(qm))
    items |= {("sat-op", site_op(it[1]), it[2]) for it in items if it[0] == "sat"}
    items |= {("tie-op", ops[it[1]]) for it in items if it[0] == "tie" and it[1] in ops}
    return Coverage(items, universe(qm))


def _src(L: str, name: str, inner: bool) -> str:
    return L + (name if inner or name not in _OUTER else _OUTER[name])


def _layer_ties(qm, v: dict, L: str, inner: bool, items: set) -> None:
    m = qm.cfg.m
    for site, src, w in _REQUANT:
        s = qm.s(f"s.{L}{site}")
        if s <= 0:
            continue
        x = v[_src(L, src, inner)]
        acc = x if w is None else fp.exact_matmul(x, qm.t(f"W.{L}{w}"), qm.bits(_src(L, src, inner)), 1)
        acc = acc[:, :m] if site == "a" else acc[:, m:] if site == "b" else acc
        if _ties(acc * qm.s(f"M.{L}{site}"), s):
            items.add(("tie", L + site))
    for key, site in _ALIGN:
        if qm.s(f"s.{L}{key}") > 0 and _ties(v[L + site] * qm.s(f"M.{L}{key}"), qm.s(f"s.{L}{key}")):
            items.add(("tie", L + key))
    sh = fp.lut(v[L + "hq"], qm.t(L + "lut.silu_h"), qm.bits(L + "hq"))
    if _ties(v[L + "gn"] * sh, qm.s(L + "n.o")):
        items.add(("tie", L + "o"))
    sa = fp.lut(v[L + "a"], qm.t(L + "lut.silu_a"), qm.bits(L + "a"))
    if _ties(sa * v[L + "b"], qm.s(L + "n.z")):
        items.add(("tie", L + "z"))
    sig = fp.lut(v[L + "f"], qm.t(L + "lut.sig_f"), qm.bits(L + "f"))
    beta = qm.t(L + "B").astype(np.int64)
    if _ties((GATE_ONE - beta) * sig, fp.GATE_FRAC):
        items.add(("tie", L + "forget_gate"))
    f = fp.forget_gate(sig, beta)
    si = fp.lut(v[L + "i"], qm.t(L + "lut.silu_i"), qm.bits(L + "i"))
    if _ties(si * (GATE_ONE - f), fp.GATE_FRAC):
        items.add(("tie", L + "mlgru_candidate"))
    h_prev = np.vstack([np.zeros((1, v[L + "h"].shape[1]), np.int64), v[L + "h"][:-1]])
    if _ties(f * h_prev, fp.GATE_FRAC):
        items.add(("tie", L + "mlgru_update"))


def _norm_cases(qm, v: dict, inner: bool, items: set) -> None:
    """Ties of each norm's final rounding and the rsqrt buckets its sums reach."""
    from mflc.compiler.model.structure import all_norms

    for n in all_norms(qm.cfg, inner):
        x = v[n.src]
        k = qm.scalars.get(f"sq.{n.reduction}", 0)
        t = np.sum(fp.square_shr(x, k), axis=-1) + qm.s(f"E.{n.reduction}")
        r, j = fp.rsqrt(t)
        bits = fp._bit_length(t)
        jj = (bits - fp.RSQRT_U_BITS + 1) >> 1
        u = np.where(jj >= 0, t >> np.maximum(2 * jj, 0), t << np.maximum(-2 * jj, 0))
        for b in np.unique(u >> fp.RSQRT_TABLE_SHIFT):
            items.add(("rsqrt", int(b)))
            if int(b) in (RSQRT_BUCKETS[0], RSQRT_BUCKETS[1] - 1):
                items.add(("rsqrt-norm", n.key, int(b)))
        prod = x * qm.t(f"G.{n.key}").astype(np.int64) * r[:, None]
        if _ties(prod, (fp.RSQRT_FRAC + j + qm.s(f"gexp.{n.key}"))[:, None]):
            items.add(("tie", n.key))
        if k > 0 and _ties(x * x, k):
            items.add(("tie", f"sq.{n.reduction}"))
