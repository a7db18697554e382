"""The byte dot-product kernel (simulator/int8dot.py) against int64 products: equal integers on random
shapes (sizes that are not whole tiles), random and extreme values at every admitted width, serial and
parallel; and the refusals (wide messages, a bound beyond int32, wrong arrays)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mflc.ir import fixedpoint as fp
from mflc.simulator import int8dot

pytestmark = pytest.mark.skipif(not int8dot._host_has_vnni(), reason="this CPU has no AVX-512 VNNI")


def _messages(rng, kind: str, shape):
    """8-bit messages: random, all at one extreme, or alternating extremes."""
    if kind == "random":
        return rng.integers(-128, 128, shape)
    if kind == "alternating":
        return np.where(np.indices(shape).sum(axis=0) % 2 == 0, -128, 127)
    return np.full(shape, -128 if kind == "min" else 127)


@given(m=st.integers(1, 40), n=st.integers(1, 300), T=st.integers(1, 11), w_max=st.sampled_from([1, 2, 127]),
       kind=st.sampled_from(["random", "min", "max", "alternating"]), parallel=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_equals_int64_product(m, n, T, w_max, kind, parallel, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-w_max, w_max + 1, (m, n)).astype(np.int8)
    if kind != "random":
        w[:] = np.where(rng.random((m, n)) < 0.5, -w_max, w_max)       # every product at its largest
    x = _messages(rng, kind, (T, n))
    got = int8dot.PreparedWeights(w).product(x, parallel=parallel)
    assert got.dtype == np.int32 and got.shape == (T, m)
    assert np.array_equal(got, x.astype(np.int64) @ w.astype(np.int64).T)


def test_largest_admitted_sum_is_exact():
    """|w| = 127 over the most columns the bound admits, every message at -128: the result is the
    extreme the int32 proof allows, and still exact."""
    n = fp.smax(32) // (127 * 255)
    assert fp.offset_product_exact(n, 127, 8) and not fp.offset_product_exact(n + 1, 127, 8)
    w = np.full((9, n), 127, np.int8)
    w[1] = -127
    x = np.full((4, n), -128)
    x[1] = 127
    got = int8dot.PreparedWeights(w).product(x)
    assert np.array_equal(got, x @ w.astype(np.int64).T)
    assert int(np.abs(got.astype(np.int64)).max()) == 128 * 127 * n


def test_refusals():
    with pytest.raises(ValueError, match="int32 bound"):
        int8dot.PreparedWeights(np.full((2, fp.smax(32) // (127 * 255) + 1), 127, np.int8))
    with pytest.raises(ValueError, match="int8 array"):
        int8dot.PreparedWeights(np.zeros((2, 3), np.int16))
    p = int8dot.PreparedWeights(np.ones((2, 3), np.int8))
    with pytest.raises(ValueError, match=r"outside 8 signed bits \(\[0, 128\]\)"):
        p.product(np.array([[0, 128, 1]]))
    with pytest.raises(ValueError, match="shape"):
        p.product(np.zeros((2, 4), np.int64))


def test_zero_tokens():
    p = int8dot.PreparedWeights(np.ones((5, 70), np.int8))
    assert p.product(np.zeros((0, 70), np.int64)).shape == (0, 5)


def test_switch_off(monkeypatch):
    monkeypatch.setenv("MFLC_INT8_DOT", "0")
    assert not int8dot.available()
    monkeypatch.setenv("MFLC_INT8_DOT", "1")
    assert int8dot.available()


def test_peak_is_measured():
    assert int8dot.peak_gmac_s(threads=1, rounds=1, n=20_000) > 1.0


def test_first_use_on_a_machine_says_it_is_compiling(tmp_path):
    """A fresh Numba cache: the first process says it compiles the kernel (on stderr), the next loads it silently."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = "from mflc.simulator import int8dot; print(int8dot.available())"
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "True"]
    assert "compiling the byte dot-product kernel" in runs[0].stderr
    assert "compiling" not in runs[1].stderr
