"""The IR reference executor equals the integer reference model exactly, on random models and inputs."""
import numpy as np
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.lower import lower
from mflc.ir.serialize import graphs_equal, load_graph, save_graph
from mflc.simulator.reference import ReferenceExecutor

from util import quantized_models

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _int_trace(qm, tokens):
    im = IntModel(qm)
    st_ = im.init_state()
    logits, states = [], []
    for t in tokens:
        lg, st_ = im.step(t, st_)
        logits.append(lg)
        states.append(st_.copy())
    return np.stack(logits), np.stack(states)


@SETTINGS
@given(quantized_models(), st.sampled_from(["sequential", "pipelined"]))
def test_executor_equals_integer_model(case, schedule):
    cfg, _, qm, tokens = case
    g = lower(qm)
    res = ReferenceExecutor(g).run(tokens, schedule)
    want_logits, want_states = _int_trace(qm, tokens)
    assert np.array_equal(res.outputs["logits"], want_logits)
    for i in range(cfg.L):
        assert np.array_equal(res.states[f"L{i}.h"], want_states[:, i]), f"state of layer {i}"
    # the output of token k appears exactly `depth - 1` steps after its injection
    steps = res.output_steps
    if schedule == "pipelined":
        assert steps == [k + g.depth - 1 for k in range(len(tokens))]


@SETTINGS
@given(quantized_models())
def test_ir_save_load_round_trip(tmp_path_factory, case):
    _, _, qm, tokens = case
    g = lower(qm)
    d = tmp_path_factory.mktemp("ir")
    save_graph(g, d)
    g2 = load_graph(d)
    assert graphs_equal(g, g2)
    a = ReferenceExecutor(g).run(tokens)
    b = ReferenceExecutor(g2).run(tokens)
    assert np.array_equal(a.outputs["logits"], b.outputs["logits"])


@settings(max_examples=10, deadline=None)
@given(quantized_models())
def test_delta_sending_is_exact(case):
    """Sigma-delta messages (send only changes) reconstruct every value exactly at the receivers."""
    _, _, qm, tokens = case
    g = lower(qm)
    every = ReferenceExecutor(g).run(tokens)
    for grp in g.groups.values():
        grp.send = "delta"
    delta = ReferenceExecutor(g).run(tokens)
    assert np.array_equal(every.outputs["logits"], delta.outputs["logits"])
    for k in every.states:
        assert np.array_equal(every.states[k], delta.states[k])


def test_delta_sends_nothing_for_unchanged_values(tiny_qm):
    """A repeated token gives the embedding group the same value: delta sends it once, 'every' each time."""
    g = lower(tiny_qm)
    every = ReferenceExecutor(g).run([65, 65, 65])
    g.groups["embed"].send = "delta"
    delta = ReferenceExecutor(g).run([65, 65, 65])
    assert np.array_equal(every.outputs["logits"], delta.outputs["logits"])
    assert delta.messages["embed"] * 3 == every.messages["embed"]


def test_state_carries_across_runs(tiny_qm):
    """Running tokens in two calls equals running them in one: the executor keeps the recurrent state."""
    g = lower(tiny_qm)
    toks = [5, 17, 200, 3, 99]
    ex = ReferenceExecutor(g)
    whole = ex.run(toks).outputs["logits"]
    ex.reset()
    a = ex.run(toks[:2]).outputs["logits"]
    b = ex.run(toks[2:]).outputs["logits"]
    assert np.array_equal(whole, np.concatenate([a, b]))
