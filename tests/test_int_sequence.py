"""IntModel.forward_sequence (whole sequence, one matrix product per projection) equals IntModel.step
token by token on every logit and every state; fp.exact_matmul's dtype choice is exact at its bounds."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.quantize import QuantOptions, quantize
from mflc.ir import fixedpoint as fp

from util import model_configs, random_weights


@st.composite
def models_and_tokens(draw, remove_inner_norm: bool):
    """A random small model (odd widths included), quantized with random widths, and 1..40 tokens."""
    cfg = draw(model_configs(max_layers=2, max_hidden=23))
    seed = draw(st.integers(0, 2**16))
    w = random_weights(cfg, seed, draw(st.sampled_from([1e-3, 1.0, 30.0])), draw(st.sampled_from([1e-2, 1.0, 50.0])))
    wide = draw(st.dictionaries(st.sampled_from(["o", "x", "r", "z", "g", "i_in", "gate_in"]), st.integers(8, 20), max_size=3))
    opts = QuantOptions(act_bits=draw(st.integers(3, 11)), state_bits=draw(st.integers(12, 24)), site_bits=wide,
                        pow2=draw(st.booleans()), remove_inner_norm=remove_inner_norm)
    qm = quantize(cfg, w, [np.random.default_rng(seed).integers(0, cfg.vocab_size, 24)], opts)
    tokens = draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=1, max_size=40))
    return qm, tokens


def _stepped(im: IntModel, tokens, state=None):
    st_ = im.init_state() if state is None else state
    logits, states = [], []
    for t in tokens:
        lg, st_ = im.step(t, st_)
        logits.append(lg)
        states.append(st_.copy())
    return np.stack(logits), np.stack(states)


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("remove_inner_norm", [False, True])
@SETTINGS
@given(data=st.data())
def test_sequence_equals_step(remove_inner_norm, data):
    qm, tokens = data.draw(models_and_tokens(remove_inner_norm))
    im = IntModel(qm)
    want_logits, want_states = _stepped(im, tokens)
    logits, states = im.forward_sequence(tokens)
    assert logits.dtype == np.int64 and states.dtype == np.int64
    assert np.array_equal(logits, want_logits)
    assert np.array_equal(states, want_states)


@SETTINGS
@given(models_and_tokens(False), st.integers(1, 39))
def test_sequence_continues_from_a_state_and_the_fallback_is_exact(case, cut):
    """Two runs chained through the state equal one; the int64 fallback gives the same integers."""
    qm, tokens = case
    im = IntModel(qm)
    want_logits, want_states = _stepped(im, tokens)
    cut = min(cut, len(tokens))
    a_l, a_s = im.forward_sequence(tokens[:cut])
    b_l, b_s = im.forward_sequence(tokens[cut:], a_s[-1])
    assert np.array_equal(np.concatenate([a_l, b_l]), want_logits)
    assert np.array_equal(np.concatenate([a_s, b_s]), want_states)
    im.force_dtype = np.int64
    logits, states = im.forward_sequence(tokens)
    assert np.array_equal(logits, want_logits) and np.array_equal(states, want_states)


def test_fallback_path_is_taken_when_the_bound_exceeds_float64(tiny_qm, monkeypatch):
    """With a (pretended) 60-bit activation width no float is exact: every projection must go through the
    int64 product, and the logits stay exact."""
    im = IntModel(tiny_qm)
    toks = [3, 200, 17, 17, 0, 255]
    want, _ = _stepped(im, toks)
    used = []
    real = fp.exact_matmul

    def spy(x, w, x_bits, w_max, dtype=None):
        dt = fp.exact_product_dtype(x.shape[-1], w_max, 60)
        used.append(dt)
        return real(x, w, 60, w_max, dtype)

    monkeypatch.setattr(fp, "exact_matmul", spy)
    logits, _ = im.forward_sequence(toks)
    assert used and all(dt == np.int64 for dt in used)
    assert np.array_equal(logits, want)


def test_empty_sequence_and_bad_token(tiny_qm):
    im = IntModel(tiny_qm)
    logits, states = im.forward_sequence([])
    assert logits.shape == (0, tiny_qm.cfg.vocab_size) and states.shape[0] == 0
    with pytest.raises(ValueError, match="outside the vocabulary"):
        im.forward_sequence([1, tiny_qm.cfg.vocab_size])


# ---- the bound and the dtype choice ---------------------------------------------------------------------
def test_dtype_choice_at_the_boundaries():
    # 2^24 exactly fits float32; one more needs float64; 2^53 fits float64; beyond is int64
    assert fp.exact_product_dtype(1 << 16, 1, 9) == np.float32            # 2^16 · 1 · 2^8 = 2^24
    assert fp.exact_product_dtype((1 << 16) + 1, 1, 9) == np.float64
    assert fp.exact_product_dtype(1 << 20, 1, 34) == np.float64           # 2^20 · 2^33 = 2^53
    assert fp.exact_product_dtype((1 << 20) + 1, 1, 34) == np.int64
    assert fp.exact_product_dtype(1000, 127, 24) == np.float64
    assert fp.product_bound(0, 1, 8) == 0 and fp.exact_product_dtype(0, 1, 8) == np.float32
    with pytest.raises(ValueError):
        fp.product_bound(3, 1, 0)
    # the integer kernel (int16 x int8 in int32 lanes) when asked for and exact
    assert fp.exact_product_dtype(1 << 16, 127, 9, int32_kernel=True) == np.int32       # 2^16·127·2^8 < 2^31
    assert fp.exact_product_dtype(1 << 17, 127, 9, int32_kernel=True) == np.float64     # past int32
    assert fp.exact_product_dtype(10, 1, 17, int32_kernel=True) == np.float32           # 17-bit: no int16
    assert fp.exact_product_dtype(10, 128, 8, int32_kernel=True) == np.float32          # 128: no int8
    x = np.full((2, 1 << 15), -(1 << 15), np.int64)
    w = np.full((1, 1 << 15), 1, np.int8)
    assert fp.exact_matmul(x, w, 16, 1, dtype=np.int32)[0, 0] == -(1 << 30)
    with pytest.raises(ValueError, match="int32 is not exact"):
        fp.exact_matmul(np.ones((1, 1 << 17), np.int64), np.ones((1, 1 << 17), np.int8), 16, 1, dtype=np.int32)


def test_float32_would_be_wrong_past_its_bound():
    """The bound is not decorative: 2^24 + 1 is not a float32, so a float32 product of (2^23, 2^23, 1)
    with ones loses the 1; exact_matmul picks float64 there and refuses a forced float32."""
    x = np.array([[1 << 23, 1 << 23, 1]], np.int64)
    w = np.ones((1, 3), np.int8)
    assert int((x.astype(np.float32) @ w.astype(np.float32).T)[0, 0]) != (1 << 24) + 1
    assert fp.exact_product_dtype(3, 1, 25) == np.float64
    assert fp.exact_matmul(x, w, 25, 1)[0, 0] == (1 << 24) + 1
    with pytest.raises(ValueError, match="not exact"):
        fp.exact_matmul(x, w, 25, 1, dtype=np.float32)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 60), st.integers(1, 7), st.integers(2, 40), st.integers(0, 2**32 - 1),
       st.sampled_from([None, np.int64]))
def test_exact_matmul_equals_python_integers(t, n, w_bits, x_bits, seed, dtype):
    """Random operands at the extremes of their declared widths: exact_matmul equals int64 (and Python
    int) arithmetic in whichever dtype it chose."""
    rng = np.random.default_rng(seed)
    wmax = (1 << (w_bits - 1))
    lo, hi = fp.smin(x_bits), fp.smax(x_bits)
    x = rng.choice(np.array([lo, hi, 0, 1, -1, lo + 1], np.int64), size=(t, n))
    x = np.where(rng.random((t, n)) < 0.3, rng.integers(lo, hi + 1, (t, n)), x)
    w = rng.integers(-wmax, wmax + 1, (3, n))
    got = fp.exact_matmul(x, w, x_bits, wmax, dtype)
    want = np.array([[sum(int(a) * int(b) for a, b in zip(row, wr)) for wr in w] for row in x], dtype=object)
    assert got.dtype == np.int64
    assert [[int(v) for v in r] for r in got] == want.tolist()
