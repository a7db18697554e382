"""Op-level conformance vectors: one op's inputs at a corner case the model can use but no chosen token
sequence reached, with the output ``ir/fixedpoint.py`` gives, so that a foreign implementation is still
tested there.

Inputs are taken inside the proven intervals of the instruction that reaches the corner in the model
(mflc.spec.usable: the IR's interval analysis, tightened by the norm bound for projections), so each
vector is a case the model's arithmetic may meet, not an arbitrary one. A corner with no such inputs found
by the bounded search below stays unreached and is reported as missing.
"""
from __future__ import annotations

import itertools

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.ops import OPS

def _run(op: str, args: list, imm: dict, tables: dict) -> np.ndarray:
    return np.asarray(OPS[op].fn([np.asarray(a, np.int64) for a in args], imm, tables), np.int64)


def _vector(item, op, imm, args, tables) -> dict:
    from mflc.spec.coverage import _fmt

    return dict(case=f"{item[0]}:{_fmt(item)}", op=op, imm=dict(imm),
                args=[np.asarray(a, np.int64).reshape(-1).tolist() for a in args],
                expected=_run(op, args, imm, tables).reshape(-1).tolist())


def table_vectors(missing: list, corners: dict) -> list[dict]:
    """One ``lut`` vector per table: every usable entry not reached, and the entry each index gives."""
    by_table: dict[str, list] = {}
    for item in missing:
        by_table.setdefault(item[1], []).append(item)
    out = []
    for key, items in sorted(by_table.items()):
        c = corners[items[0]]
        xs = sorted(v for _, _, v in items)
        vec = _vector(("lut", key, f"{len(xs)} entries"), "lut", c.imm, [xs], c.tables)
        vec["table"] = f"{key.split('.')[0]}.lut.{c.imm['table']}"     # the quant.safetensors tensor
        vec["covers"] = [f"lut:{key}:{v}" for v in xs]
        out.append(vec)
    return out


def saturation_vector(item, c, qm, proj=None) -> dict | None:
    """Arguments at corners of their proven intervals that saturate the op to the item's end."""
    end = item[2]
    if c.op == "rms_apply":
        return _rms_saturating(item, c, qm)
    args = list(c.args)
    if proj is not None and c.op == "rescale":
        args = [(-proj.acc, proj.acc)]
    target = fp.smin(c.imm["bits"]) if end == "min" else fp.smax(c.imm["bits"])
    for combo in itertools.product(*[sorted(set(a)) for a in args]):
        try:
            got = _run(c.op, [[v] for v in combo], c.imm, c.tables)
        except (ValueError, OverflowError):
            continue
        if int(got[0]) == target:
            return _vector(item, c.op, c.imm, [[v] for v in combo], c.tables)
    return None


def _is_tie(p: np.ndarray, n: int) -> np.ndarray:
    if n <= 0:
        return np.zeros(p.shape, bool)
    return (np.abs(p) & ((1 << n) - 1)) == (1 << (n - 1))


def tie_vector(item, c, qm, proj=None) -> dict | None:
    """Arguments inside their proven intervals whose product rounds by exactly one half (the factors
    from ``mflc.ir.corners.tie_factors``, mapped back to the op's arguments)."""
    from mflc.ir.corners import GATE_ONE, rounded_factors, tie_factors

    op, imm = c.op, c.imm
    if op == "rms_apply":
        return _rms_tie(item, c, qm)
    args = ((-proj.acc, proj.acc),) if proj is not None and op == "rescale" else c.args
    rf = rounded_factors(op, args, imm)
    f = None if rf is None else tie_factors(*rf)
    if f is None:
        return None
    a = {"rescale": lambda: [f[0]], "mul_shr": lambda: list(f), "square_shr": lambda: [f[0]],
         "forget_gate": lambda: [f[0], GATE_ONE - f[1]], "mlgru_candidate": lambda: [f[0], GATE_ONE - f[1]],
         "mlgru_update": lambda: [f[1], f[0], 0 if c.args[2][0] <= 0 <= c.args[2][1] else c.args[2][0]]}[op]()
    return _vector(item, op, imm, [[v] for v in a], c.tables)


def _rms_vector(item, c, found) -> dict | None:
    if found is None:
        return None
    x, t, g = found
    r, j = fp.rsqrt(np.int64(t))
    vec = _vector(item, "rms_apply", c.imm, [[x], [int(fp.pack_rsqrt(r, j))], [g]], c.tables)
    vec["sum_of_squares"] = t
    return vec


def _rms_saturating(item, c, qm) -> dict | None:
    from mflc.spec.norm_bound import rms_saturating
    from mflc.spec.usable import _norm

    norm = _norm(qm, item[1])
    return None if norm is None else _rms_vector(
        item, c, rms_saturating(qm, norm, c.args[0], c.imm["gain_shift"], c.imm["bits"], item[2]))


def rsqrt_vectors(qm, missing: list) -> list[tuple]:
    """rms_factor at a sum of squares whose rsqrt mantissa falls in each missed edge bucket of the table
    (u = t for t in [2^14, 2^16): u >> 10 is the bucket), per norm: [(item, vector)]."""
    from mflc.spec.usable import _norm

    out = []
    for item in missing:
        norm = _norm(qm, item[1])
        if norm is None:
            continue
        e = int(qm.s(f"E.{norm.reduction}"))
        t = max(item[2] << fp.RSQRT_TABLE_SHIFT, e + 1)
        if t >> fp.RSQRT_TABLE_SHIFT != item[2]:
            continue
        out.append((item, _vector(item, "rms_factor", {"eps": e}, [[t - e]], {})))
    return out


def _rms_tie(item, c, qm) -> dict | None:
    """x, the packed factor of a sum of squares t >= x² + E, and one of the norm's gains, whose product
    rounds by one half (mflc.spec.norm_bound.rms_tie)."""
    from mflc.spec.usable import _rms_tie as find

    return _rms_vector(item, c, find(qm, item[1], c))


def build(qm, total, usable, progress=None) -> list[dict]:
    """Op-level vectors for every usable case ``total`` (a Coverage) did not reach; records the cases they
    cover in ``total.op_level`` (their op-level items too: a site's end covers its op's end)."""
    from mflc.spec.coverage import rounding_steps, site_op
    from mflc.spec.usable import projection_sites

    proj = projection_sites(qm)
    use = usable.items
    missed = {cat: sorted(use[cat] - total.items) for cat in use}
    out = table_vectors(missed["table entries"], usable.corners)
    covered = {("lut", key, v) for key, v in ((c.split(":")[1], int(c.split(":")[2])) for vec in out
                                              for c in vec["covers"])}
    ops = dict(rounding_steps(qm))
    todo = [("sat", it) for it in missed["saturation ends per site"]] + [("tie", it) for it in missed["rounding ties per step"]]
    for k, (kind, item) in enumerate(todo):
        c = usable.corners.get(item)
        if c is not None:
            vec = (saturation_vector(item, c, qm, proj.get(item[1])) if kind == "sat"
                   else tie_vector(item, c, qm, proj.get(item[1])))
            if vec is not None:
                out.append(vec)
                covered.add(item)
                covered.add(("sat-op", site_op(item[1]), item[2]) if kind == "sat" else ("tie-op", ops[item[1]]))
        if progress:
            progress(k + 1, len(todo))
    rs = rsqrt_vectors(qm, missed["rsqrt table edges per norm"])
    out += [v for _, v in rs]
    covered |= {item for item, _ in rs}
    total.op_level |= covered - total.items
    return out
