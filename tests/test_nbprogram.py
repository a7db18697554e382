"""The Numba transcription of the op library equals the definitions in mflc.ir.fixedpoint, exactly."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mflc.ir import fixedpoint as fp
from mflc.ir.graph import Instr, NeuronGroup
from mflc.simulator.nbprogram import _RT, encode, rsqrt_packed, sat, shr_round

I = Instr.make
I8 = np.arange(-128, 128, dtype=np.int64)


def run_one(op, args: list[np.ndarray], tables=None, **imm):
    """Run a one-instruction program through the Numba interpreter."""
    names = [f"a{k}" for k in range(len(args))]
    g = NeuronGroup("t", len(args[0]), names, [I(op, "y", *names, **imm)], "y", 24, 0, tables=tables or {})
    p = encode(g)
    p.run({n: np.asarray(a, np.int64) for n, a in zip(names, args)}, 0, g.size, "t")
    return p.env[p.slot["y"]]


def test_shr_round_and_saturate_exhaustive_8bit():
    for n in range(-3, 10):
        assert np.array_equal(np.array([shr_round(int(x), n) for x in I8]), fp.shr_round(I8, n))
    for b in (2, 8, 16, 24):
        xs = np.arange(-(1 << b), 1 << b, max(1, (1 << b) // 512))
        assert np.array_equal(np.array([sat(int(x), b) for x in xs]), fp.saturate(xs, b))


def test_rsqrt_exhaustive_small_and_sampled_large():
    t = np.arange(1, 1 << 17, dtype=np.int64)
    assert np.array_equal(np.array([rsqrt_packed(int(x), _RT) for x in t]), fp.rms_factor(t, 0))
    big = np.random.default_rng(0).integers(1 << 17, (1 << 46) - 1, 20000)
    assert np.array_equal(np.array([rsqrt_packed(int(x), _RT) for x in big]), fp.rms_factor(big, 0))


def test_elementwise_ops_exhaustive_over_8bit_pairs():
    a, b = np.meshgrid(I8, I8)
    a, b = a.ravel(), b.ravel()
    assert np.array_equal(run_one("mul_shr", [a, b], shift=5, bits=8), fp.mul_shr(a, b, 5, 8))
    assert np.array_equal(run_one("add_sat", [a, b], bits=8), fp.add_sat(a, b, 8))
    assert np.array_equal(run_one("square", [a]), fp.square(a))
    for k in (0, 2, 4, 8):
        assert np.array_equal(run_one("square_shr", [a], shift=k), fp.square_shr(a, k))
    assert np.array_equal(run_one("rescale", [a], mult=23457, shift=17, bits=8), fp.rescale(a, 23457, 17, 8))
    table = np.random.default_rng(1).integers(-(1 << 20), 1 << 20, 256)
    assert np.array_equal(run_one("lut", [a], tables={"t": table}, table="t", in_bits=8), fp.lut(a, table, 8))


def test_gate_ops_exhaustive_grid():
    sig, beta = np.meshgrid(np.arange(0, 32769, 129), np.arange(0, 32769, 257))
    sig, beta = sig.ravel(), beta.ravel()
    f = fp.forget_gate(sig, beta)
    assert np.array_equal(run_one("forget_gate", [sig, beta]), f)
    si = np.resize(np.arange(-(1 << 23), 1 << 23, 4099), f.size)
    assert np.array_equal(run_one("mlgru_candidate", [si, f], bits=24), fp.mlgru_candidate(si, f, 24))
    h = np.resize(np.arange(-(1 << 23), 1 << 23, 7919), f.size)
    assert np.array_equal(run_one("mlgru_update", [h, f, si], bits=24), fp.mlgru_update(h, f, si, 24))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 23), (1 << 23) - 1), min_size=1, max_size=16),
       st.integers(0, (1 << 16) - 1), st.integers(-4, 40), st.integers(2, 24))
def test_wide_rescale_and_products(xs, mult, shift, bits):
    x = np.array(xs, np.int64)
    assert np.array_equal(run_one("rescale", [x], mult=mult, shift=shift, bits=bits), fp.rescale(x, mult, shift, bits))
    y = x[::-1].copy()
    assert np.array_equal(run_one("mul_shr", [x, y], shift=max(shift, 0), bits=bits), fp.mul_shr(x, y, max(shift, 0), bits))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 11), (1 << 11) - 1), min_size=1, max_size=16),
       st.integers(1, (1 << 40)), st.integers(-(1 << 15), (1 << 15) - 1), st.integers(-20, 20), st.integers(2, 24))
def test_wide_rms_apply(xs, t, gain, gshift, bits):
    x = np.array(xs, np.int64)
    packed = np.full(x.size, int(fp.rms_factor(t, 0)))
    g = np.full(x.size, gain)
    if 23 + int(fp.unpack_rsqrt(packed[0])[1]) + gshift < -20:
        return
    assert np.array_equal(run_one("rms_apply", [x, packed, g], gain_shift=gshift, bits=bits),
                          fp.rms_apply(x, packed, g, gshift, bits))


def test_lut_domain_error():
    with pytest.raises(ValueError, match="outside its table"):
        run_one("lut", [np.array([300])], tables={"t": np.zeros(256, np.int64)}, table="t", in_bits=8)


@pytest.mark.parametrize("n", [61, 62, 63, 64, 65, 100])
def test_huge_right_shifts_round_to_zero_in_both(n):
    """Regression: 1 << 63 overflowed int64 for n == 64 (shr_round(5, 64) was -1)."""
    xs = np.array([5, -5, (1 << 57) - 1, -(1 << 57)], np.int64)
    assert np.array_equal(fp.shr_round(xs, n), np.zeros(4, np.int64))
    assert [shr_round(int(x), n) for x in xs] == [0, 0, 0, 0]
    assert np.array_equal(fp.shr_round(xs, np.full(4, n)), np.zeros(4, np.int64))


# one call per op, with arguments and immediates inside its domain: the op table (mflc.ir.ops.OPS) is the
# list to cover, so an op added there without a case here (or without a Numba branch) fails below
def _op_cases(rng, n=4096):
    sig = rng.integers(0, (1 << fp.GATE_FRAC) + 1, n)
    f = fp.forget_gate(sig, rng.integers(0, (1 << fp.GATE_FRAC) + 1, n))
    w = lambda b: rng.integers(-(1 << (b - 1)), 1 << (b - 1), n)  # noqa: E731
    table = rng.integers(-(1 << 20), 1 << 20, 1 << 10)
    packed = fp.rms_factor(rng.integers(1, 1 << 30, n), 1)
    return {
        "copy": ([w(24)], {}, {}),
        "rescale": ([w(24)], dict(mult=int(rng.integers(0, 1 << 22)), shift=30, bits=16), {}),
        "mul_shr": ([w(16), w(16)], dict(shift=7, bits=20), {}),
        "add_sat": ([w(24), w(24)], dict(bits=24), {}),
        "square": ([w(24)], {}, {}),
        "square_shr": ([w(24)], dict(shift=9), {}),
        "lut": ([w(10)], dict(table="t", in_bits=10), {"t": table}),
        "rms_factor": ([rng.integers(0, 1 << 40, n)], dict(eps=3), {}),
        "rms_apply": ([w(12), packed, w(16)], dict(gain_shift=4, bits=24), {}),
        "forget_gate": ([sig, rng.integers(0, (1 << fp.GATE_FRAC) + 1, n)], {}, {}),
        "mlgru_candidate": ([w(24), f], dict(bits=24), {}),
        "mlgru_update": ([w(24), f, w(24)], dict(bits=24), {}),
    }


def test_every_op_has_an_opcode_and_a_numba_branch_equal_to_its_definition():
    from mflc.ir.ops import OPCODE, OPS
    from mflc.simulator.nbprogram import HANDLED, OPCODES
    assert set(OPCODE) == set(OPS) == set(HANDLED) and OPCODES is OPCODE
    assert sorted(OPCODE.values()) == list(range(len(OPS)))
    cases = _op_cases(np.random.default_rng(14))
    assert set(cases) == set(OPS), "every op in OPS needs a case here"
    for name, spec in OPS.items():
        args, imm, tables = cases[name]
        assert len(args) == spec.n_args and set(imm) == set(spec.imm), name
        want = np.asarray(spec.fn([np.asarray(a, np.int64) for a in args], imm, tables), np.int64)
        assert np.array_equal(run_one(name, args, tables=tables, **imm), want), name


def test_an_op_without_a_numba_branch_is_refused():
    g = NeuronGroup("t", 2, ["a0"], [I("copy", "y", "a0")], "y", 24, 0)
    p = encode(g)
    p.code[0, 0] = 99                          # an opcode the interpreter has no branch for
    with pytest.raises(ValueError, match="no branch"):
        p.run({"a0": np.zeros(2, np.int64)}, 0, 2, "t")
