"""What the model can use (mflc.spec.usable) and the op-level vectors for what no sequence reached: the
proofs are sound (nothing they exclude is ever reached, the norm bound holds on any input, a tie exists
exactly when tie_factors finds one), the report's denominators come from them, and every op-level vector
is an op's input at its corner with fixedpoint's output."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mflc.ir import fixedpoint as fp
from mflc.ir.corners import odd_multiple, tie_factors
from mflc.ir.ops import OPS

from util import cli_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mflc.build import Build
    from mflc.spec.conformance import empty_coverage

    d = tmp_path_factory.mktemp("usable")
    cli_run("init", "--preset", "tiny", "--out", d / "m", "--seed", "3")
    cli_run("compile", d / "m", "--out", d / "b")
    b = Build.load(d / "b")
    total, usable = empty_coverage(b.quantized, b.graph)
    return b.quantized, b.graph, total, usable


def _trace(qm, tokens):
    from mflc.compiler.model.int_model import IntModel

    got = {}
    IntModel(qm).forward_sequence(tokens, trace=lambda n, v: got.__setitem__(n, np.array(v, np.int64)))
    return got


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_nothing_proven_unreachable_is_reached(tiny, data):
    """Random, repeated and long sequences reach only usable cases (an unsound proof would show here)."""
    from mflc.spec.coverage import measure

    qm, _, _, usable = tiny
    v = qm.cfg.vocab_size
    tokens = data.draw(st.one_of(st.lists(st.integers(0, v - 1), min_size=1, max_size=24),
                                 st.integers(0, v - 1).map(lambda t: [t] * 96)))
    cov = measure(qm, _trace(qm, tokens))
    for cat, items in cov.universe.items():
        assert not (cov.items & items) - usable.items[cat], cat


def test_denominators_come_from_the_analysis(tiny, monkeypatch):
    """The usable counts are what the proofs give: a (deliberately wrong) zero norm bound collapses each
    projection's table inputs to the single entry 0 and rules out their saturation."""
    from mflc.spec import norm_bound, usable as usable_mod
    from mflc.spec.coverage import Coverage

    qm, graph, total, usable = tiny
    rep = Coverage(set(), total.universe, usable.items).report()
    for cat, v in rep.items():
        assert v["usable"] == len(usable.items[cat]) and v["total"] == len(total.universe[cat])
    assert rep["table entries"]["unreachable_proven"] > 0 or rep["rounding ties per step"]["unreachable_proven"] > 0
    monkeypatch.setattr(norm_bound, "projection_bound", lambda qm, norm, w: np.zeros(w.shape[0], np.int64))
    narrow = usable_mod.analyse_usable(qm, graph, total.universe)
    sig = {v for _, k, v in narrow.items["table entries"] if k == "L0.sig_f"}
    assert sig == {0}
    assert ("sat", "L0.f", "max") not in narrow.items["saturation ends per site"]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_norm_bound_holds(tiny, data):
    """|W·y| never exceeds projection_bound for y the norm of any input x (rms_factor, then rms_apply)."""
    from mflc.compiler.model.structure import all_norms
    from mflc.spec.norm_bound import projection_bound

    qm = tiny[0]
    norm = next(n for n in all_norms(qm.cfg) if n.key == "L0.i_in")
    b_in = qm.bits(norm.src)
    g = qm.t(f"G.{norm.key}").astype(np.int64)
    x = np.array(data.draw(st.lists(st.integers(fp.smin(b_in), fp.smax(b_in)), min_size=g.size, max_size=g.size)))
    if data.draw(st.booleans()):                     # concentrated inputs: one or two large elements
        x = np.where(np.arange(g.size) < data.draw(st.integers(1, 2)), x, 0)
    packed = fp.rms_factor(np.sum(x * x), qm.s(f"E.{norm.reduction}"))
    y = fp.rms_apply(x, packed, g, qm.s(f"gexp.{norm.key}"), qm.bits(norm.key))
    w = qm.t("W.L0.i").astype(np.int64)
    assert np.all(np.abs(w @ y) <= projection_bound(qm, norm, w))


@given(st.integers(-300, 300), st.integers(0, 200), st.integers(-300, 300), st.integers(0, 200), st.integers(1, 9))
def test_tie_factors_is_exact(a0, da, b0, db, n):
    """A tie exists for factors in the two intervals exactly when tie_factors finds one, and it is one."""
    A, B = (a0, a0 + da), (b0, b0 + db)
    a = np.arange(A[0], A[1] + 1)[:, None]
    b = np.arange(B[0], B[1] + 1)[None, :]
    exists = bool(np.any((np.abs(a * b) & ((1 << n) - 1)) == (1 << (n - 1))))
    got = tie_factors([A, B], n)
    assert (got is not None) == exists
    if got is not None:
        assert A[0] <= got[0] <= A[1] and B[0] <= got[1] <= B[1]
        assert (abs(got[0] * got[1]) & ((1 << n) - 1)) == 1 << (n - 1)


@given(st.integers(-500, 500), st.integers(0, 300), st.integers(0, 8))
def test_odd_multiple(lo, d, p):
    want = [k for k in range(lo, lo + d + 1) if k % (1 << p) == 0 and (k >> p) % 2]
    got = odd_multiple((lo, lo + d), p)
    assert (got is None) == (not want)
    if want:
        assert got in want and abs(got) == min(map(abs, want))


def test_op_vectors_are_corners_with_fixedpoint_outputs(tiny):
    """Every op-level vector's expected output is fixedpoint's for its inputs, a saturation vector hits its
    end, a tie vector's product ties; together with the sequences they cover every usable case."""
    from mflc.spec import op_vectors
    from mflc.spec.coverage import Coverage

    qm, graph, total, usable = tiny
    cov = Coverage(set(), total.universe, usable.items)
    vecs = op_vectors.build(qm, cov, usable)
    assert vecs
    for v in vecs:
        tables = {v["imm"]["table"]: qm.t(v["table"])} if v["op"] == "lut" else {}
        got = OPS[v["op"]].fn([np.asarray(a, np.int64) for a in v["args"]], v["imm"], tables)
        assert np.array_equal(np.asarray(got).reshape(-1), np.asarray(v["expected"])), v["case"]
        kind, *rest = v["case"].split(":")
        if kind == "sat":
            assert v["expected"] == [fp.smax(v["imm"]["bits"]) if rest[1] == "max" else fp.smin(v["imm"]["bits"])]
        if kind == "tie" and v["op"] == "rescale":
            p = v["args"][0][0] * v["imm"]["mult"]
            assert abs(p) % (1 << v["imm"]["shift"]) == 1 << (v["imm"]["shift"] - 1)
        if kind == "tie" and v["op"] == "rms_apply":
            r, j = fp.unpack_rsqrt(v["args"][1][0])
            n = fp.RSQRT_FRAC + int(j) + v["imm"]["gain_shift"]
            p = v["args"][0][0] * v["args"][2][0] * int(r)
            assert abs(p) % (1 << n) == 1 << (n - 1)
            assert v["args"][0][0] ** 2 <= v["sum_of_squares"] - qm.s(f"E.{qm_reduction(qm, rest[0])}")
    rep = cov.report()
    for cat in ("table entries", "saturation ends per op", "rounding ties per op"):
        assert rep[cat]["op_level"] + rep[cat]["reached"] + len(rep[cat]["missing"]) <= rep[cat]["usable"]
    assert rep["table entries"]["op_level"] == rep["table entries"]["usable"]     # nothing reached: all op-level


def qm_reduction(qm, key):
    from mflc.compiler.model.structure import all_norms

    return next(n.reduction for n in all_norms(qm.cfg) if n.key == key)
