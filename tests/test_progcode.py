"""Generated neuron programs (simulator/progcode) give exactly the interpreter's integers.

Programs are random: ops, wiring, immediates and widths drawn by hypothesis, every instruction kept only
when the op's own domain (mflc.ir.ops, the validator's range analysis) accepts its argument intervals,
so both executors are inside the region where the definitions are exact; inputs sit at the extremes of
every declared interval (and at random points inside).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mflc.ir import fixedpoint as fp
from mflc.ir.graph import Instr, NeuronGroup
from mflc.ir.ops import IMM_DOMAIN, OPS, imm_problems
from mflc.simulator import jitcache
from mflc.simulator.nbprogram import _RT, clamp, encode, shr_any, shr_pos, shr_round
from mflc.simulator.progcode import compile_program, source
from mflc.simulator.sequence import _run_tokens

I = Instr.make
GATE = (0, 1 << fp.GATE_FRAC)


def _interval(draw) -> tuple[int, int]:
    """A declared input interval: a signed width (2..24 bits), or a gate fraction, or a small unsigned one."""
    kind = draw(st.sampled_from(["signed", "signed", "gate", "unsigned"]))
    if kind == "gate":
        return GATE
    b = draw(st.integers(2, 24))
    return (0, (1 << (b - 1)) - 1) if kind == "unsigned" else (fp.smin(b), fp.smax(b))


def _imm(draw, key: str) -> int:
    lo, hi = IMM_DOMAIN[key]
    if key in ("shift", "gain_shift"):
        return draw(st.one_of(st.integers(-8, 40), st.sampled_from([0, 1, 61, 62, -1])))
    if key in ("bits", "in_bits"):
        return draw(st.integers(1, 24 if key == "bits" else 10))
    return draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi])))


def _instruction(draw, name: str, ranges: dict, tables: dict, k: int):
    """One instruction of op ``name`` over existing values, or None if its domain refuses the draw."""
    spec = OPS[name]
    args = [draw(st.sampled_from(sorted(ranges))) for _ in range(spec.n_args)]
    imm = {}
    for key in spec.imm:
        if key == "table":
            continue
        imm[key] = _imm(draw, key)
    if "table" in spec.imm:
        t = f"t{k}"
        tables[t] = np.asarray(draw(st.lists(st.integers(-(1 << 20), 1 << 20), min_size=1, max_size=1)) * (1 << imm["in_bits"]),
                               np.int64) + np.arange(1 << imm["in_bits"])
        imm["table"] = t
    rr = [ranges[a] for a in args]
    if imm_problems(spec, imm, tables) or spec.domain(rr, imm, tables):
        return None
    return I(name, f"x{k}", *args, **imm), spec.range(rr, imm, tables)


@st.composite
def programs(draw):
    """(group, initial slot values by name, port values): a random program inside its ops' domains."""
    n = draw(st.integers(1, 37))
    ranges, values = {}, {}
    ports = [f"p{i}" for i in range(draw(st.integers(1, 3)))]
    for p in ports:
        ranges[p] = _interval(draw)
    params = {}
    for i in range(draw(st.integers(0, 2))):
        lo, hi = _interval(draw)
        params[f"q{i}"] = np.random.default_rng(i).integers(lo, hi + 1, n)
        ranges[f"q{i}"] = (int(params[f"q{i}"].min()), int(params[f"q{i}"].max()))
    tables, program, regs = {}, [], {}
    if draw(st.booleans()):                  # a register, read and written back saturated: state across tokens
        regs["h"], ranges["h"] = 24, (fp.smin(24), fp.smax(24))
    for k in range(draw(st.integers(1, 12))):
        got = _instruction(draw, draw(st.sampled_from(sorted(OPS))), ranges, tables, k)
        if got is not None:
            program.append(got[0])
            ranges[got[0].out] = got[1]
    if not program:
        program, ranges["x0"] = [I("copy", "x0", ports[0])], ranges[ports[0]]
    if regs:
        back = I("add_sat", "h", program[-1].out, "h", bits=24)
        if OPS["add_sat"].domain([ranges[program[-1].out], ranges["h"]], {"bits": 24}, {}):
            back = I("add_sat", "h", "h", "h", bits=24)
        program.append(back)
    g = NeuronGroup("t", n, ports, program, program[-1].out, 64, 0, registers=regs, params=params, tables=tables)
    port_vals = {}
    for p in ports:
        lo, hi = ranges[p]
        pick = draw(st.lists(st.sampled_from([lo, hi, 0 if lo <= 0 <= hi else lo, min(hi, lo + 1), max(lo, hi - 1)]),
                             min_size=n, max_size=n))
        port_vals[p] = np.asarray(pick, np.int64)
        port_vals[p][::3] = np.random.default_rng(7).integers(lo, hi + 1, port_vals[p][::3].size)
    return g, port_vals


@settings(max_examples=150, deadline=None)
@given(programs(), st.data())
def test_compiled_program_equals_interpreter(prog, data):
    g, ports = prog
    lo = data.draw(st.integers(0, g.size - 1))
    hi = data.draw(st.integers(lo + 1, g.size))
    ep, cp = encode(g), compile_program(g)
    assert np.array_equal(ep.env, cp.env)
    errors = []
    for p in (ep, cp):
        try:
            p.run(ports, lo, hi, "t")
            errors.append(None)
        except ValueError as e:
            errors.append(str(e))
    assert errors[0] == errors[1]
    assert np.array_equal(ep.env, cp.env), source(cp.shape)


@settings(max_examples=60, deadline=None)
@given(programs(), st.integers(1, 5))
def test_compiled_token_loop_equals_interpreter(prog, T):
    g, ports = prog
    ep, cp = encode(g), compile_program(g)
    rng = np.random.default_rng(T)
    P = np.stack([np.stack([rng.permutation(ports[p]) for _ in range(T)]) for p in g.ports])
    reg_rows = np.asarray([ep.slot[r] for r in g.registers], np.int64)
    res = []
    for which in (ep, cp):
        outs = np.zeros((T, g.size), np.int64)
        regs = np.zeros((reg_rows.size, T, g.size), np.int64)
        if which is ep:
            err = _run_tokens(ep.flat_code(), ep.env.reshape(-1), ep.tables, _RT, g.size,
                              np.asarray([ep.slot[p] for p in g.ports], np.int64), P, ep.output, outs, reg_rows, regs)
        else:
            err = cp.module.run_tokens(cp.env.reshape(-1), g.size, cp.tables, cp.imm, _RT, P, outs, reg_rows, regs)
        res.append((err, outs, regs))
    assert res[0][0] == res[1][0]
    if res[0][0] < 0:
        assert np.array_equal(res[0][1], res[1][1]) and np.array_equal(res[0][2], res[1][2])
        assert np.array_equal(ep.env, cp.env)


def test_lut_out_of_domain_is_refused_as_by_the_interpreter():
    g = NeuronGroup("t", 3, ["a"], [I("lut", "y", "a", table="t", in_bits=4)], "y", 24, 0,
                    tables={"t": np.arange(16, dtype=np.int64)})
    cp = compile_program(g)
    cp.run({"a": np.array([-8, 7, 3])}, 0, 3, "t")
    assert cp.env[cp.slot["y"]].tolist() == [0, 15, 11]
    with pytest.raises(ValueError, match="outside its table"):
        cp.run({"a": np.array([0, 8, 0])}, 0, 3, "t")


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 62), (1 << 62) - 1), st.integers(-62, 70))
def test_branch_free_helpers_equal_the_scalar_definitions(x, n):
    assert shr_any(x, n) == shr_round(x, n)
    if n > 0:
        m = min(n, 62)
        assert shr_pos(x, m, 1 << (m - 1)) == shr_round(x, n)
    b = max(1, min(abs(n), 62))
    assert clamp(x, -(1 << (b - 1)), (1 << (b - 1)) - 1) == int(fp.saturate(np.int64(x), b))


def test_programs_of_one_shape_share_a_module_and_the_cache_dir_is_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv(jitcache.CACHE_ENV, str(tmp_path))
    assert jitcache.cache_dir().parent == tmp_path
    def group(name, size, mult, shift, bits):      # a shape no other test makes: its module is new here
        prog = [I("copy", f"c{k}", "p" if k == 0 else f"c{k - 1}") for k in range(6)]
        return NeuronGroup(name, size, ["p"], prog + [I("rescale", "y", "c5", mult=mult, shift=shift, bits=bits)],
                           "y", bits, 0)

    a, b, c = group("a", 4, 3, 2, 8), group("b", 9, 7000, 9, 12), group("c", 4, 3, -2, 8)
    ma, mb, mc = (compile_program(x).module for x in (a, b, c))
    assert ma is mb and ma is not mc                 # a left shift is other code; other constants are not
    assert list(tmp_path.rglob("*.ready"))


def test_executors_with_generated_programs_equal_the_interpreted_ones_slot_for_slot():
    """The fast path's generated token driver and the whole-sequence executor's generated programs leave
    every slot, output and state exactly as their interpreted versions do (tiny preset, random weights)."""
    from mflc.bench.sim import build
    from mflc.simulator.fastpath import FastEngine
    from mflc.simulator.sequence import SequenceExecutor

    _, _, _, g = build("tiny")
    toks = np.random.default_rng(3).integers(0, 256, 9).tolist()
    fa, fb = FastEngine(g, programs="interpreted"), FastEngine(g, programs="compiled")
    for t in toks:
        a, b = fa.step(t), fb.step(t)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.array_equal(fa.env, fb.env)
    sa, sb = SequenceExecutor(g, programs="interpreted"), SequenceExecutor(g, programs="compiled")
    ra, rb = sa.run(toks), sb.run(toks)
    assert all(np.array_equal(ra.outputs[k], rb.outputs[k]) for k in ra.outputs)
    assert all(np.array_equal(ra.states[k], rb.states[k]) for k in ra.states)
    assert all(np.array_equal(sa.group_env(n), sb.group_env(n)) for n in g.groups)
