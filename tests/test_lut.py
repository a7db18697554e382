"""The lookup-table kernel for ternary blocks (simulator/lut.py) gives exactly the int64 product: random
shapes (odd rows and columns, not multiples of the 2-column pair, the 16-column super-group, the 64-row
tile or 64), random densities, every message width from 1 to 32 bits with extreme messages, any row range
lo..hi; the three converters agree; wrong widths and non-ternary weights are refused."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc.ir.errors import MflcError
from mflc.ir.graph import SynapseGroup
from mflc.ir.ternary import planes_from_csr
from mflc.simulator import lut as L

from test_engine import random_core_map
from util import quantized_models

KERNELS = [L.lut_rows_scalar] + ([L._rows_vector, L._rows_vector_parallel] if L.VECTOR else [])


def sums(W, x, bits, lo, hi, kernel):
    """The kernel's row sums of rows lo..hi (the others stay 0) against x as a bits-bit message."""
    T = L.table_array(x.size, bits)
    assert L.lut_tables(x, x.size, 8 * T.shape[0], T) == -1
    out = np.zeros(W.shape[0] * L.TILE_ROWS, np.int64)
    kernel(W, T, T.shape[0], out, lo, hi)
    return out


def want(w, x, lo, hi):
    full = w.astype(np.int64) @ x
    full[:lo] = 0
    full[hi:] = 0
    return full


@st.composite
def blocks(draw):
    """A ternary (rows, cols) block with a random share of zeros (0 to 100 %)."""
    rows, cols = draw(st.integers(1, 150)), draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = rng.choice(np.array([-1, 1], np.int8), (rows, cols))
    w[rng.random(w.shape) < draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))] = 0
    return w


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(), st.integers(1, 32), st.integers(0, 2**32 - 1), st.data())
def test_lut_sums_equal_the_integer_product(w, bits, seed, data):
    rng = np.random.default_rng(seed)
    rows, cols = w.shape
    lo_x, hi_x = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = rng.integers(lo_x, hi_x + 1, cols, dtype=np.int64)
    x[rng.integers(cols)] = rng.choice([lo_x, hi_x])
    lo = data.draw(st.integers(0, rows - 1))
    hi = data.draw(st.integers(lo, rows))
    W = L.lut_from_dense(w)
    for kernel in KERNELS:
        got = sums(W, x, bits, lo, hi, kernel)
        assert np.array_equal(got[:rows], want(w, x, lo, hi)), kernel.__name__
        assert not got[rows:].any()


@pytest.mark.parametrize("bits", [1, 2, 7, 8, 12, 16, 24, 31, 32])
@pytest.mark.parametrize("pattern", ["min", "max", "alternating"])
@pytest.mark.parametrize("block", ["plus", "minus", "random"])
def test_extreme_messages_at_every_width(bits, pattern, block):
    rows, cols = 131, 259                 # odd, and past a 64-row tile and a 16-column super-group
    lo_x, hi_x = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = {"min": np.full(cols, lo_x), "max": np.full(cols, hi_x),
         "alternating": np.where(np.arange(cols) % 2, lo_x, hi_x)}[pattern].astype(np.int64)
    rng = np.random.default_rng(bits)
    w = {"plus": np.ones((rows, cols), np.int8), "minus": -np.ones((rows, cols), np.int8),
         "random": rng.integers(-1, 2, (rows, cols)).astype(np.int8)}[block]
    W = L.lut_from_dense(w)
    for kernel in KERNELS:
        assert np.array_equal(sums(W, x, bits, 0, rows, kernel)[:rows], want(w, x, 0, rows)), kernel.__name__


@given(blocks())
def test_converters_agree(w):
    s = SynapseGroup.from_dense("s", "a", "b", "in", w)
    plus, minus = planes_from_csr(s.shape, s.indptr, s.indices, s.values)
    W = L.lut_from_dense(w)
    assert W.shape == (L.tile_count(w.shape[0]), L.super_count(w.shape[1]), 4 * L.TILE_ROWS)
    assert W.nbytes * 4 == L.TILE_ROWS * L.tile_count(w.shape[0]) * L.SUPER_COLS * L.super_count(w.shape[1])
    assert np.array_equal(L.lut_from_planes(plus, minus, w.shape[1]), W)
    assert np.array_equal(L.lut_from_csr(s.shape, s.indptr, s.indices, s.values), W)


@pytest.mark.parametrize("bits", [0, -8, 33, 64])
def test_an_unsupported_width_is_refused(bits):
    with pytest.raises(MflcError, match=f"messages of {bits} bits are not supported"):
        L.table_array(10, bits)


def test_a_message_wider_than_its_width_is_reported():
    x = np.array([0, 127, 128, -3], np.int64)
    T = L.table_array(4, 8)
    assert L.lut_tables(x, 4, 8, T) == 2          # the index of the first value 8 bits cannot hold
    assert L.lut_tables(np.array([-129]), 1, 8, T) == 0


def test_non_ternary_and_contradictory_weights_are_refused():
    w = np.zeros((3, 5), np.int8)
    w[1, 2] = 2
    with pytest.raises(MflcError, match=r"weight \(1, 2\) = 2 is not ternary"):
        L.lut_from_dense(w)
    p = np.zeros((3, 5), bool)
    p[2, 4] = True
    with pytest.raises(MflcError, match=r"weight \(2, 4\) is marked both \+1 and -1"):
        L.lut_from_masks(p, p)


@pytest.mark.skipif(not L.VECTOR, reason="the CPU lacks AVX-512 VBMI/VNNI: the scalar kernel runs")
def test_the_vector_kernel_is_the_default_here():
    assert L.lut_rows is L._rows_vector


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_models(), st.integers(0, 2**16))
def test_fast_path_with_lookup_tables_equals_the_engine(case, seed):
    """The fast path with every ternary block as a LUT block ('lut'), and with the default choice, gives the
    engine's outputs token by token, on random models, widths and core maps."""
    from mflc.compiler.model.lower import lower
    from mflc.simulator.engine import Engine
    from mflc.simulator.fastpath import KIND_PLANES, FastEngine

    _, _, qm, tokens = case
    g = lower(qm)
    cm = random_core_map(g, np.random.default_rng(seed))
    want = Engine(g, cm).run(tokens).outputs["logits"]
    lut, default = FastEngine(g, cm, kernel="lut"), FastEngine(g, cm)
    assert not (lut.syn[:, 0] == KIND_PLANES).any()          # every 2-bit block is a LUT block
    for k, t in enumerate(tokens):
        assert np.array_equal(lut.step(t)["logits"], want[k])
        assert np.array_equal(default.step(t)["logits"], want[k])


def test_packed_takes_lut_blocks_of_a_full_tile_only(tiny_qm):
    from mflc.compiler.model.lower import lower
    from mflc.simulator.fastpath import KIND_LUT, KIND_PLANES, LUT_MIN_ROWS, FastEngine

    g = lower(tiny_qm)
    fe = FastEngine(g)
    rows = fe.syn[:, 7]
    if L.VECTOR:
        assert (rows[fe.syn[:, 0] == KIND_LUT] >= LUT_MIN_ROWS).all()
        assert (rows[fe.syn[:, 0] == KIND_PLANES] < LUT_MIN_ROWS).all()
    else:
        assert not (fe.syn[:, 0] == KIND_LUT).any()
    planes, lut = FastEngine(g, kernel="planes"), FastEngine(g, kernel="lut")
    assert not (planes.syn[:, 0] == KIND_LUT).any()
    assert (lut.syn[:, 0] == KIND_LUT).any() and not (lut.syn[:, 0] == KIND_PLANES).any()
    for t in (3, 1, 4, 1, 5):
        assert np.array_equal(lut.step(t)["logits"], planes.step(t)["logits"])
    assert (fe.syn[:, 0] == KIND_LUT).sum() + (fe.syn[:, 0] == KIND_PLANES).sum() == (planes.syn[:, 0] == KIND_PLANES).sum()
    assert abs(fe.weight_bytes() - planes.weight_bytes()) < 0.2 * planes.weight_bytes()   # both 2 bits per weight


def test_the_bench_prints_both_kernels():
    from mflc.bench import kernels

    res = kernels.main(["--rows", "70", "--cols", "45", "--blocks", "2", "--rounds", "1", "--json"])
    assert set(res["lut_shapes"]) == {"70x45", "45x70", "45x45"}
    assert res["lut_gweights_per_s"] > 0 and res["lut_over_planes"] > 0
