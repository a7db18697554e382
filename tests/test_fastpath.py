"""The whole-token Numba driver gives the same integers as the engine and the integer model."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.lower import lower
from mflc.simulator.fastpath import FastEngine

from test_engine import random_core_map
from util import quantized_models


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_models(), st.integers(0, 2**16))
def test_fast_path_equals_integer_model(case, seed):
    cfg, _, qm, tokens = case
    g = lower(qm)
    fe = FastEngine(g, random_core_map(g, np.random.default_rng(seed)))
    im = IntModel(qm)
    st_ = im.init_state()
    for t in tokens:
        want, st_ = im.step(t, st_)
        assert np.array_equal(fe.step(t)["logits"], want)
        for i in range(cfg.L):
            grp, reg = g.state[f"L{i}.h"]
            assert np.array_equal(fe.read(grp, reg), st_[i])


def test_reset_restarts_the_state(tiny_qm):
    fe = FastEngine(lower(tiny_qm))
    a = [fe.step(t)["logits"] for t in (1, 2, 3)]
    fe.reset()
    b = [fe.step(t)["logits"] for t in (1, 2, 3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_unsupported_graphs_are_refused(tiny_qm):
    g = lower(tiny_qm)
    g.groups["embed"].send = "delta"
    with pytest.raises(NotImplementedError, match="embed"):
        FastEngine(g)


def test_bad_token(tiny_qm):
    with pytest.raises(ValueError, match="outside the input table"):
        FastEngine(lower(tiny_qm)).step(999)
