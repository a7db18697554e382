"""The executor protocol (mflc.executors): every registered executor that can run here gives the same
integers (logits and recurrent states) for the same tokens; a run continues the state, so stepping token
by token equals one whole run; the registry lists its names and an unknown name fails naming them."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc import executors as E
from mflc.compiler.model.lower import lower

from util import cli_run

SLOW = {"lava"}                     # one OS process per Lava process: checked once, on a short sequence


def _fast_names():
    return [n for n in E.names() if n not in SLOW and E.why_unavailable(n) is None]


def _equal(a, b) -> bool:
    return (a.outputs.keys() == b.outputs.keys() and a.states.keys() == b.states.keys()
            and all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
            and all(np.array_equal(a.states[k], b.states[k]) for k in a.states))


def test_registry_lists_the_executors():
    assert E.names()[:5] == ["int-model", "ir-reference", "engine", "fast", "lava"]
    for n in E.names():
        s = E.spec(n)
        assert s.name == n and s.needs in ("quantized", "graph") and s.description
        assert s.make.name == n
    assert E.canonical("reference") == "int-model"            # eval's historical name


def test_unknown_name_names_the_choices():
    with pytest.raises(E.UnknownExecutor) as e:
        E.create("gpu")
    assert "'gpu'" in str(e.value) and all(n in str(e.value) for n in E.names())


@pytest.mark.parametrize("cmd", [["verify", "--engine", "gpu"], ["verify", "--backend", "gpu"],
                                 ["generate", "--engine", "gpu"], ["eval", "--text", "README.md", "--engine", "gpu"]])
def test_cli_unknown_executor_exits_1_listing_the_names(cmd):
    r = cli_run(*cmd, ok=False)
    assert r.exit_code == 1 and "'gpu'" in r.output and "int-model" in r.output and "fast" in r.output, r.output


@pytest.fixture(scope="module")
def tiny_graph(tiny_qm):
    return lower(tiny_qm)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 255), min_size=1, max_size=5))
def test_every_executor_gives_the_same_integers(tiny_qm, tiny_graph, tokens):
    results = {n: E.create(n, qm=tiny_qm, graph=tiny_graph).run(tokens) for n in _fast_names()}
    want = results["int-model"]
    assert want.outputs["logits"].shape == (len(tokens), tiny_qm.cfg.vocab_size)
    assert sorted(want.states) == [f"L{i}.h" for i in range(tiny_qm.cfg.L)]
    for n, r in results.items():
        assert _equal(r, want), n


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 255), min_size=2, max_size=6), st.integers(1, 3))
def test_stepping_equals_one_whole_run(tiny_qm, tiny_graph, tokens, chunk):
    for n in _fast_names():
        ex = E.create(n, qm=tiny_qm, graph=tiny_graph)
        assert isinstance(ex, E.Executor) and ex.name == n
        whole = ex.run(tokens)
        ex.reset()                                   # reset: the same run again
        assert _equal(ex.run(tokens), whole), n
        ex.reset()
        steps = [ex.step(t) for t in tokens]
        assert np.array_equal(np.stack(steps), whole.outputs["logits"]), n
        ex.reset()
        assert _equal(E.run_in_chunks(ex, tokens, chunk=chunk), whole), n


def test_fast_falls_back_to_engine_with_a_note(tiny_qm):
    g = lower(tiny_qm)
    g.groups["embed"].send = "delta"
    assert "fast path cannot run" in E.why_unavailable("fast", g)
    with pytest.raises(E.ExecutorUnavailable, match="embed"):
        E.create("fast", graph=g)
    ex, note = E.create_with_fallback("fast", "engine", graph=g)
    assert ex.name == "engine" and "using engine instead" in note and "embed" in note
    ex, note = E.create_with_fallback("fast", "engine", graph=lower(tiny_qm))
    assert ex.name == "fast" and note is None


def test_engine_keeps_counters(tiny_qm):
    ex = E.create("engine", qm=tiny_qm, counters=True)
    r = ex.run([1, 2])
    assert r.counters.tokens == 2 and r.counters.totals()["synops"] > 0
    ex.run([3])
    assert ex.counters.tokens == 3
    ex.reset()
    assert ex.counters.tokens == 0


def test_verify_any_executor(tiny_qm, tiny_graph):
    for n in _fast_names():
        res = E.verify_executor(n, tiny_qm, tiny_graph, [3, 1, 4])
        assert res.ok and res.compared_values == 3 * (tiny_qm.cfg.vocab_size + tiny_qm.cfg.L * tiny_qm.cfg.d_attn), n
    g = lower(tiny_qm)
    s = next(s for n, s in sorted(g.synapses.items()) if n.startswith("L0.i_in->L0.mlgru"))
    s.values = s.values.copy()
    s.values[:8] = -s.values[:8]
    res = E.verify_executor("fast", tiny_qm, g, [1, 2, 3])
    assert not res.ok and res.divergence.token == 0 and res.divergence.what == "state L0.h"


def test_cli_executors_and_verify_engine(tmp_path, tiny_qm):
    names = [r["name"] for r in json.loads(cli_run("executors", "--json").stdout)]
    assert names == E.names()
    tiny_qm.save(tmp_path / "q")
    for engine in ("fast", "ir-reference"):
        js = json.loads(cli_run("verify", tmp_path / "q", "--engine", engine, "--tokens", "2", "--json").stdout)
        assert js["ok"] and js["engine"] == engine
    js = json.loads(cli_run("verify", tmp_path / "q", "--backend", "engine", "--tokens", "2", "--json").stdout)
    assert js["ok"] and js["engine"] == "engine" and js["counters"]["synops"] > 0
    r = cli_run("verify", tmp_path / "q", "--backend", "engine", "--engine", "fast", ok=False)
    assert r.exit_code == 1 and "disagree" in r.output
    js = json.loads(cli_run("generate", tmp_path / "q", "--engine", "engine", "--max-new-tokens", "2", "--json").stdout)
    assert js["engine"] == "engine" and len(js["tokens"]) == 2


@pytest.mark.lava
def test_lava_gives_the_same_integers():
    if E.why_unavailable("lava"):
        pytest.skip(E.why_unavailable("lava"))
    from mflc.compiler.model.config import ModelConfig
    from mflc.compiler.model.quantize import quantize

    from util import random_weights

    cfg = ModelConfig.from_dict(dict(vocab_size=12, hidden_size=4, num_hidden_layers=1, intermediate_size=6))
    qm = quantize(cfg, random_weights(cfg, 5), [np.random.default_rng(5).integers(0, 12, 32)])
    g = lower(qm)
    want = E.create("int-model", qm=qm).run([3, 7, 1])
    lava = E.create("lava", graph=g)
    assert _equal(lava.run([3, 7, 1]), want)
    lava.reset()
    first, rest = lava.run([3]), lava.run([7, 1])            # a run continues the state (replaying history)
    assert np.array_equal(np.concatenate([first.outputs["logits"], rest.outputs["logits"]]), want.outputs["logits"])
