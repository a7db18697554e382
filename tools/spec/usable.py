"""The corner cases the model can use: the part of ``coverage.universe`` that the IR's range analysis does
not rule out.

A table entry is usable when its index lies in the proven interval of the table's input at the ``lut``
instruction that reads it; a saturation end when the proven interval of the writing op's value before
saturation reaches it (``mflc.ir.corners``); a rounding tie when the proven interval of the product it
rounds holds a magnitude of at least half the shift's unit. Everything else is unreachable (proven): no
token sequence can reach it, so the coverage report does not count it as missed. "Usable" is an
over-approximation (intervals forget how values depend on each other), so a usable case may still be
out of every sequence's reach; those are the ones the op-level vectors cover.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mflc.ir import fixedpoint as fp
from mflc.ir.corners import saturation_ends, tie_factors, tie_possible

# the rounding steps that are not the writer of a site: (group kind, program variable) of the instruction
_STEP_VARS = {"res_x": ("res1", "a1"), "res_ao": ("res1", "a2"), "res_r": ("res2", "a1"), "res_mo": ("res2", "a2")}
_GATE_OPS = ("forget_gate", "mlgru_candidate", "mlgru_update")


_TABLE_SITE = {"sig_f": "f", "silu_i": "i", "silu_h": "hq", "silu_a": "a"}


@dataclass(frozen=True)
class Projected:
    """What the norm bound proves of a requantized projection's site (norm_bound): its value interval,
    which saturation ends its unsaturated value can reach, whether its rounding can tie."""

    acc: int                  # the largest |accumulator| of the site's rows
    value: tuple[int, int]
    ends: dict
    tie: bool


def projection_sites(qm) -> dict[str, Projected]:
    """site -> Projected for every requantization whose matrix reads a norm's output."""
    from mflc.compiler.model.structure import all_norms
    from mflc.ir.ops import shr_round_int
    from mflc.spec.coverage import _REQUANT, _src
    from mflc.spec.norm_bound import projection_bound

    inner = not qm.options.remove_inner_norm
    norms = {n.key: n for n in all_norms(qm.cfg, inner)}
    out = {}
    for i in range(qm.cfg.L):
        L = f"L{i}."
        for site, src, w in _REQUANT:
            norm = norms.get(_src(L, src, inner))
            if w is None or norm is None:
                continue
            rows = projection_bound(qm, norm, qm.t(f"W.{L}{w}"))
            m = qm.cfg.m
            rows = rows[:m] if site == "a" else rows[m:] if site == "b" else rows
            a, mult, sh, b = int(rows.max()), qm.s(f"M.{L}{site}"), qm.s(f"s.{L}{site}"), qm.bits(L + site)
            lo, hi = shr_round_int(-a * mult, sh), shr_round_int(a * mult, sh)
            out[L + site] = Projected(a, (max(lo, fp.smin(b)), min(hi, fp.smax(b))),
                                      {"min": lo <= fp.smin(b), "max": hi >= fp.smax(b)},
                                      tie_factors([(-a, a), (mult, mult)], sh) is not None)
    return out


@dataclass
class Corner:
    """One instruction of the IR at a corner case: where it is and what the analysis proved of it."""

    group: str
    op: str
    imm: dict
    args: tuple               # proven interval of each argument
    tables: dict = field(default_factory=dict, repr=False)


@dataclass
class Usable:
    """Per coverage category, the items the model can use and the instructions behind them."""

    items: dict[str, set]                  # category -> usable items (a subset of the universe's)
    corners: dict[tuple, Corner]           # item -> the instruction that reaches it (for op-level vectors)


def _tighten(a, b):
    return max(a[0], b[0]), min(a[1], b[1])


def _state_invariant(ins, args, written: dict, group: str):
    """A bound H with |h| <= H for every token, for the state update h' = round(f·h/2^15) + c with
    c = round(s·(2^15 - f)/2^15), from the all-zero state: with |s| <= S and f <= 2^15 - δ (δ >= 1),
    |h| <= H gives |h'| <= H - δ(H - S)/2^15 + 1 <= H once H >= S + 2^15/δ, so H = S + ceil(2^15/δ)
    holds by induction. None when the update is not of that form or f may reach 2^15."""
    from mflc.ir.corners import GATE_ONE

    if ins.op != "mlgru_update" or ins.args[0] != ins.out:
        return None
    cand = written.get((group, ins.args[2]))
    fmax = args[1][1]
    if cand is None or cand.op != "mlgru_candidate" or cand.args[1] != args[1] or fmax >= GATE_ONE or args[1][0] < 0:
        return None
    s = max(abs(cand.args[0][0]), abs(cand.args[0][1]))
    h = s + -(-GATE_ONE // (GATE_ONE - fmax))
    return -h, h


def _local(graph, ra, fixed: dict) -> dict[tuple[str, str], Corner]:
    """(group, variable) -> the instruction that last writes it, with argument intervals tightened inside
    each group: a saturating op's result is its pre-saturation interval clamped (the analysis takes the
    whole width), and ``fixed`` ((group, variable) -> interval, from the norm bound) narrows a result."""
    from mflc.ir.corners import unsaturated
    from mflc.ir.ops import OPS

    out = {}
    for name, grp in graph.groups.items():
        rng: dict = {}
        for ins, st in zip(grp.program, ra.groups[name].steps):
            if st.args is None:
                continue
            imm = dict(ins.imm_dict)
            args = tuple(_tighten(rng[a], r) if a in rng else r for a, r in zip(ins.args, st.args))
            inv = _state_invariant(ins, args, out, name) if ins.out in grp.registers else None
            if inv is not None:
                args = (_tighten(args[0], inv),) + args[1:]
            res = _tighten(OPS[ins.op].range(list(args), imm, grp.tables), st.result)
            if inv is not None:
                res = _tighten(res, inv)
            un = unsaturated(ins.op, args, imm) if "bits" in imm else None
            if un is not None:
                res = _tighten(res, (max(un[0], fp.smin(imm["bits"])), min(un[1], fp.smax(imm["bits"]))))
            if (name, ins.out) in fixed:
                res = _tighten(res, fixed[(name, ins.out)])
            rng[ins.out] = res
            out[(name, ins.out)] = Corner(name, ins.op, imm, args, grp.tables)
    return out


def analyse_usable(qm, graph, universe: dict) -> Usable:
    """The usable part of ``universe`` (coverage.universe) for the build's unsplit IR ``graph``."""
    from mflc.ir.range_analysis import analyse
    from mflc.spec.coverage import rounding_steps, saturating_sites, site_op
    from mflc.spec.trace import ir_sites

    ra = analyse(graph)
    sites = ir_sites(graph, qm.cfg.L)
    proj = projection_sites(qm)
    writers = _local(graph, ra, {sites[s]: p.value for s, p in proj.items() if s in sites})
    usable = {cat: set(items) for cat, items in universe.items()}     # what no proof excludes stays usable
    corners: dict[tuple, Corner] = {}
    tables = _table_entries(writers, proj, corners)
    usable["table entries"] = universe["table entries"] & tables
    sat = set()
    for s in saturating_sites(qm):
        c = writers.get(sites.get(s, ("", "")))
        if c is None or "bits" not in c.imm:
            sat |= {("sat", s, "min"), ("sat", s, "max")}
            continue
        ends = (_rms_ends(qm, s, c) if c.op == "rms_apply" else saturation_ends(c.op, c.args, c.imm))
        for end, ok in ends.items():
            if ok and (s not in proj or proj[s].ends[end]):
                sat.add(("sat", s, end))
                corners.setdefault(("sat-op", site_op(s), end), c)
                corners[("sat", s, end)] = c
    usable["saturation ends per site"] = universe["saturation ends per site"] & sat
    usable["saturation ends per op"] = {("sat-op", site_op(s), e) for _, s, e in sat} & universe["saturation ends per op"]
    ties = set()
    ops = dict(rounding_steps(qm))
    for step, op in ops.items():
        c = _step_instruction(qm, step, op, writers, sites)
        if step in proj and not proj[step].tie:
            continue
        if c is not None and c.op == "rms_apply":
            possible = _rms_tie(qm, step, c) is not None
        else:
            possible = c is None or tie_possible(c.op, c.args, c.imm)
        if possible:
            ties.add(("tie", step))
            if c is not None:
                corners[("tie", step)] = c
                corners.setdefault(("tie-op", op), c)
    usable["rounding ties per step"] = universe["rounding ties per step"] & ties
    usable["rounding ties per op"] = {("tie-op", ops[s]) for _, s in ties} & universe["rounding ties per op"]
    return Usable(usable, corners)


def _norm(qm, key: str):
    from mflc.compiler.model.structure import all_norms

    return next((n for n in all_norms(qm.cfg, not qm.options.remove_inner_norm) if n.key == key), None)


def _table_entries(writers: dict, proj: dict, corners: dict) -> set:
    """Every table entry whose index lies in the proven interval of its lut instruction's input."""
    out = set()
    for c in writers.values():
        if c.op != "lut":
            continue
        layer = c.group.split(".")[0]
        key, site = f"{layer}.{c.imm['table']}", f"{layer}.{_TABLE_SITE[c.imm['table']]}"
        lo, hi = c.args[0]
        if site in proj:
            lo, hi = max(lo, proj[site].value[0]), min(hi, proj[site].value[1])
        b = c.imm["in_bits"]
        for v in range(max(lo, fp.smin(b)), min(hi, fp.smax(b)) + 1):
            out.add(("lut", key, v))
            corners[("lut", key, v)] = c
    return out


def _rms_ends(qm, site: str, c: Corner) -> dict:
    from mflc.spec.norm_bound import rms_ends

    norm = _norm(qm, site)
    return {"min": True, "max": True} if norm is None else rms_ends(qm, norm, c.imm["gain_shift"], c.imm["bits"])


def _rms_tie(qm, key: str, c: Corner):
    """A tie of a norm's rms_apply (norm_bound.rms_tie) for its proven input interval, or None."""
    from mflc.compiler.model.structure import all_norms
    from mflc.spec.norm_bound import rms_tie

    norm = next((n for n in all_norms(qm.cfg, not qm.options.remove_inner_norm) if n.key == key), None)
    return None if norm is None else rms_tie(qm, norm, c.args[0], c.imm["gain_shift"])


def _step_instruction(qm, step: str, op: str, writers: dict, sites: dict) -> Corner | None:
    """The IR instruction of a rounding step (coverage.rounding_steps), or None when it has no single one
    (a norm's squares are shifted inside the reduction's sender) or rounds another product than the
    integer model's (a rescale whose multiplier or shift the lowering changed)."""
    c = _ir_step(step, op, writers, sites)
    if c is not None and op == "rescale":
        if (c.imm["mult"], c.imm["shift"]) != (qm.s(f"M.{step}"), qm.s(f"s.{step}")):
            return None
    return c


def _ir_step(step: str, op: str, writers: dict, sites: dict) -> Corner | None:
    layer, _, key = step.partition(".")
    if key in _STEP_VARS:
        kind, var = _STEP_VARS[key]
        return writers.get((f"{layer}.{kind}", var))
    if op in _GATE_OPS:
        for (g, _), c in writers.items():
            if g == f"{layer}.mlgru" and c.op == op:
                return c
        return None
    if step in sites:
        c = writers.get(sites[step])
        return c if c is not None and c.op == op else None
    return None
