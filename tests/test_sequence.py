"""The whole-sequence executor (simulator/sequence.py) equals Engine and the IR reference executor exactly:
outputs, states, step numbers, messages and every activity counter, on random IR graphs (delta senders,
weight shifts, registers, several synapses per port) and on lowered random models; and the executors and
verify paths built on it."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc import executors
from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.lower import lower
from mflc.ir.graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, SynapseGroup
from mflc.ir.validate import validate
from mflc.simulator.engine import Counters, Engine
from mflc.simulator.reference import ReferenceExecutor
from mflc.simulator.sequence import SequenceExecutor, SequenceUnsupported
from mflc.simulator.verify import verify

from test_engine import random_core_map
from util import quantized_models

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I = Instr.make


@st.composite
def random_graphs(draw):
    """A random DAG of small groups: stateless (rescale) and stateful (a saturating running sum in a
    register) programs, 'every' and 'delta' senders, 1..3 synapses into a port with random weights and
    (for 'every' senders) random weight shifts, stages and delays by the timing contract."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_groups = draw(st.integers(2, 6))
    g = Graph()
    stages = [0]
    for k in range(1, n_groups):
        stages.append(stages[-1] + draw(st.integers(1, 3)))
    for k in range(n_groups):
        size = draw(st.integers(1, 7))
        bits = draw(st.integers(3, 10))
        send = draw(st.sampled_from(["every", "delta"])) if k < n_groups - 1 else "every"
        if k > 0 and draw(st.booleans()):
            prog = [I("add_sat", "h", "h", "x", bits=bits + 2), I("rescale", "y", "h", mult=1, shift=2, bits=bits)]
            regs = {"h": bits + 2}
        else:
            prog = [I("rescale", "y", "x", mult=int(rng.integers(1, 4)), shift=int(rng.integers(0, 4)), bits=bits)]
            regs = {}
        g.add_group(NeuronGroup(f"g{k}", size, ["x"], prog, "y", bits, stages[k], registers=regs, send=send))
        if regs:
            g.state[f"g{k}.h"] = (f"g{k}", "h")
    names = list(g.groups)
    g.host_tensors["emb"] = rng.integers(-20, 21, (9, g.groups["g0"].size))
    g.inputs.append(GraphInput("tokens", "g0", "x", "emb"))
    for k in range(1, n_groups):
        dst = g.groups[names[k]]
        for j, src_name in enumerate(rng.choice(names[:k], size=min(k, int(rng.integers(1, 4))), replace=False)):
            src = g.groups[str(src_name)]
            w = rng.integers(-2, 3, (dst.size, src.size)) * (rng.random((dst.size, src.size)) < 0.7)
            exp = 0 if src.send == "delta" else int(rng.integers(-3, 2))
            g.add_synapse(SynapseGroup.from_dense(f"{src.name}->{dst.name}.{j}", src.name, dst.name, "x", w,
                                                  weight_exp=exp, delay=dst.stage - src.stage - 1))
    g.outputs.append(GraphOutput("out", names[-1]))
    tokens = draw(st.lists(st.integers(0, 8), min_size=1, max_size=12))
    return g, tokens


def _counters_equal(a: Counters, b: Counters) -> None:
    for f in Counters.FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.per_step == b.per_step
    assert {k: v.tolist() for k, v in a.by_core_stage.items()} == {k: v.tolist() for k, v in b.by_core_stage.items()}
    assert a.tokens == b.tokens


def _all_equal(g, cm, tokens, schedule):
    """Engine, the reference executor and the sequence executor on the same tokens: equal in everything."""
    c_eng, c_seq = Counters.zeros(cm.n_cores), Counters.zeros(cm.n_cores)
    eng = Engine(g, cm).run(tokens, schedule, c_eng)
    ref = ReferenceExecutor(g).run(tokens, schedule)
    seq = SequenceExecutor(g, cm).run(tokens, schedule, c_seq)
    for k in ref.outputs:
        assert np.array_equal(seq.outputs[k], ref.outputs[k]) and np.array_equal(seq.outputs[k], eng.outputs[k])
    for k in ref.states:
        assert np.array_equal(seq.states[k], ref.states[k]) and np.array_equal(seq.states[k], eng.states[k])
    assert seq.output_steps == ref.output_steps == eng.output_steps and seq.steps == ref.steps == eng.steps
    assert seq.messages == eng.messages
    _counters_equal(c_eng, c_seq)
    return seq


@SETTINGS
@given(random_graphs(), st.integers(0, 2**16), st.sampled_from(["sequential", "pipelined"]))
def test_random_graphs(case, seed, schedule):
    g, tokens = case
    validate(g)
    _all_equal(g, random_core_map(g, np.random.default_rng(seed)), tokens, schedule)


@SETTINGS
@given(quantized_models(), st.integers(0, 2**16), st.sampled_from(["sequential", "pipelined"]), st.booleans())
def test_lowered_models(case, seed, schedule, delta):
    _, _, qm, tokens = case
    g = lower(qm)
    if delta:                          # sigma-delta messages everywhere the validator allows them
        for grp in g.groups.values():
            if all(s.weight_exp == 0 for s in g.outgoing(grp.name)):
                grp.send = "delta"
    seq = _all_equal(g, random_core_map(g, np.random.default_rng(seed)), tokens, schedule)
    assert np.array_equal(seq.outputs["logits"], IntModel(qm).forward(tokens)[0])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs(), st.integers(1, 11))
def test_runs_continue_from_the_state(case, cut):
    """Two runs equal one: registers, delta senders' last messages and running sums carry over."""
    g, tokens = case
    tokens = tokens + [3]
    cut = min(cut, len(tokens) - 1)
    whole = SequenceExecutor(g).run(tokens)
    ex = SequenceExecutor(g)
    a, b = ex.run(tokens[:cut]), ex.run(tokens[cut:])
    for k in whole.outputs:
        assert np.array_equal(whole.outputs[k], np.concatenate([a.outputs[k], b.outputs[k]]))
    ex.reset()
    assert np.array_equal(ex.run(tokens).outputs["out"], whole.outputs["out"])


def test_broken_delay_contract_and_virtual_graphs_are_refused():
    g = Graph()
    g.add_group(NeuronGroup("a", 2, ["x"], [I("copy", "y", "x")], "y", 8, 0))
    g.add_group(NeuronGroup("b", 2, ["x"], [I("copy", "y", "x")], "y", 8, 3))
    g.add_synapse(SynapseGroup.identity("a->b", "a", "b", "x", 2, delay=0))   # the contract wants 2
    with pytest.raises(SequenceUnsupported, match="a->b: delay 0.*need 2"):
        SequenceExecutor(g, check=False)
    from mflc.compiler.model.config import preset
    from mflc.compiler.model.skeleton import skeleton_graph

    sk = skeleton_graph(preset("tiny"))
    with pytest.raises(SequenceUnsupported, match="virtual"):
        SequenceExecutor(sk, check=False)
    with pytest.raises(executors.ExecutorUnavailable, match="virtual"):
        executors.create("sequence", graph=sk)


def test_bad_token_is_refused(tiny_qm):
    ex = SequenceExecutor(lower(tiny_qm))
    with pytest.raises(ValueError, match="token 256 outside the input table"):
        ex.run([1, 256])


def test_registered_executor_keeps_engine_counters(tiny_qm):
    g = lower(tiny_qm)
    toks = [5, 17, 200, 3, 99, 99]
    seq = executors.create("sequence", graph=g, counters=True)
    eng = executors.create("engine", graph=g, counters=True)
    a, b = seq.run(toks[:2]), eng.run(toks[:2])
    a, b = seq.run(toks[2:]), eng.run(toks[2:])
    assert np.array_equal(a.outputs["logits"], b.outputs["logits"])
    _counters_equal(a.counters, b.counters)
    assert "sequence" in executors.names()


def test_fast_prefill_leaves_the_stepped_state(tiny_qm):
    """A prompt through the whole-sequence path leaves the fast engine's every slot (registers,
    temporaries, consumed ports) as stepping it would, so generation continues identically."""
    g = lower(tiny_qm)
    stepped = executors.create("fast", graph=g, prefill=False)
    pre = executors.create("fast", graph=g)
    assert pre.prefill                    # the tiny model is far below PREFILL_AUTO_MAX_SYNAPSES
    prompt = [72, 101, 108, 108, 111, 32]
    a, b = stepped.run(prompt), pre.run(prompt)
    assert np.array_equal(a.outputs["logits"], b.outputs["logits"])
    assert a.output_steps == b.output_steps and a.steps == b.steps
    assert np.array_equal(stepped.fe.env, pre.fe.env)
    for t in (3, 250, 0):
        assert np.array_equal(stepped.step(t), pre.step(t))
    # a second prefill starts from the generated state
    a, b = stepped.run([9, 8, 7]), pre.run([9, 8, 7])
    assert np.array_equal(a.outputs["logits"], b.outputs["logits"]) and np.array_equal(stepped.fe.env, pre.fe.env)
    for k in a.states:
        assert np.array_equal(a.states[k], b.states[k])


def test_int_model_executor_runs_whole_sequences(tiny_qm):
    ex = executors.create("int-model", qm=tiny_qm)
    toks = [1, 2, 3, 250, 7]
    a = ex.run(toks[:3])
    b = ex.run(toks[3:])
    want, _ = IntModel(tiny_qm).forward(toks)
    assert np.array_equal(np.concatenate([a.outputs["logits"], b.outputs["logits"]]), want)
    one = ex.run([4])
    assert one.outputs["logits"].shape == (1, tiny_qm.cfg.vocab_size)


def test_verify_default_stepwise_and_located_divergence(tiny_qm):
    g = lower(tiny_qm)
    im = IntModel(tiny_qm)
    toks = [1, 2, 3, 4, 5]
    fast, slow = verify(im, g, toks), verify(im, g, toks, stepwise=True)
    assert fast.ok and slow.ok and fast.compared_values == slow.compared_values
    assert fast.counters == slow.counters
    bad = lower(tiny_qm)
    s = bad.synapses["L0.i_in->L0.mlgru.pi"]
    s.values = s.values.copy()
    s.values[0] = -s.values[0]
    res = verify(im, bad, toks, reference_graph=g)
    assert not res.ok
    d = res.divergence
    assert d.group == "L0.mlgru" and d.step == d.token * g.depth + g.groups["L0.mlgru"].stage and d.core is not None
    assert executors.verify_executor("sequence", tiny_qm, g, toks).ok
    assert executors.verify_executor("fast", tiny_qm, g, toks).ok
    assert executors.verify_executor("engine", tiny_qm, g, toks, stepwise=True).counters == fast.counters


def test_loaded_packed_graph_runs_without_decoding_csr(tiny_qm, tmp_path):
    """A loaded IR holds ternary blocks as 2-bit codes: the executor reads them straight into dense
    blocks (counters included) and equals Engine on the in-memory graph, never making CSR arrays."""
    from mflc.ir.graph import PackedSynapseGroup
    from mflc.ir.serialize import load_graph, save_graph

    g = lower(tiny_qm)
    save_graph(g, tmp_path)
    loaded = load_graph(tmp_path)
    packed = [s for s in loaded.synapses.values() if isinstance(s, PackedSynapseGroup)]
    assert packed
    toks = [65, 66, 67, 10, 0]
    cm = random_core_map(g, np.random.default_rng(1))
    c_eng = Counters.zeros(cm.n_cores)
    want = Engine(g, cm).run(toks, counters=c_eng)
    for hold in (0, 1 << 30):             # decoded from the codes at each run, or held as float blocks
        c_seq = Counters.zeros(cm.n_cores)
        ex = SequenceExecutor(loaded, cm, check=False, hold_bytes=hold)
        assert ex.held == bool(hold)
        got = ex.run(toks, counters=c_seq)
        assert not any(s.decoded for s in packed)
        assert np.array_equal(got.outputs["logits"], want.outputs["logits"])
        _counters_equal(c_eng, c_seq)
        # the in-memory (CSR) graph, not held: int8 blocks converted per run
        assert np.array_equal(SequenceExecutor(g, cm, hold_bytes=hold).run(toks).outputs["logits"], want.outputs["logits"])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_models(), st.integers(1, 4))
def test_equal_chunks_reuse_nothing_stale(case, chunk):
    """Runs of equal length (eval's chunks) reuse the stateless groups' token-wide slot matrices: the
    results, earlier runs' outputs included, stay those of one run."""
    _, _, qm, tokens = case
    g = lower(qm)
    tokens = (tokens * 4)[:13]
    want = Engine(g).run(tokens).outputs["logits"]
    ex = executors.create("sequence", graph=g)
    parts = [ex.run(tokens[a:a + chunk]) for a in range(0, len(tokens), chunk)]
    assert np.array_equal(np.concatenate([p.outputs["logits"] for p in parts]), want)
    fast = executors.create("fast", graph=g)
    assert np.array_equal(executors.run_in_chunks(fast, tokens, chunk=chunk + 1).outputs["logits"], want)


def test_cli_verify_with_the_sequence_executor():
    import json

    from util import cli_run

    r = cli_run("verify", "--engine", "sequence", "--tokens", "5", "--json")
    d = json.loads(r.stdout)
    assert d["ok"] and d["tokens"] == 5 and d["counters"]["synops"] > 0 and d["engine"] == "sequence"


def test_every_product_path_is_exercised(tiny_model):
    """A model with a wide site takes the int32 kernel (<= 16-bit messages), float32 and float64 BLAS
    (wider messages, e.g. squares into a norm's sum) and gathers; all equal to Engine."""
    from mflc.compiler.model.quantize import QuantOptions, quantize

    cfg, w = tiny_model
    qm = quantize(cfg, w, [list(range(0, 256, 3))], QuantOptions(site_bits={"o": 16, "i_in": 20}))
    g = lower(qm)
    ex = SequenceExecutor(g)
    kinds = {str(b.dtype) if b.dense else ("gather" if b.gather else "csr") for bl in ex.out_syn.values() for b in bl}
    assert {"int32", "float32", "float64", "gather"} <= kinds, kinds
    toks = [7, 70, 200, 1, 1, 9]
    assert np.array_equal(ex.run(toks).outputs["logits"], Engine(g).run(toks).outputs["logits"])


def test_long_prefill_runs_in_pieces(tiny_qm):
    """A prompt longer than PREFILL_PIECE runs in pieces: the same logits, states, steps and slots."""
    g = lower(tiny_qm)
    toks = np.random.default_rng(3).integers(0, 256, executors.PREFILL_PIECE + 37).tolist()
    stepped, pre = executors.create("fast", graph=g, prefill=False), executors.create("fast", graph=g, prefill=True)
    a, b = stepped.run(toks), pre.run(toks)
    assert np.array_equal(a.outputs["logits"], b.outputs["logits"]) and np.array_equal(stepped.fe.env, pre.fe.env)
    assert a.output_steps == b.output_steps and a.steps == b.steps
    for k in a.states:
        assert np.array_equal(a.states[k], b.states[k])


def test_an_output_wider_than_its_declared_width_is_refused():
    """A graph whose ranges are wrong (a group declared 4 bits wide copies 8-bit inputs) fails loudly,
    naming the group and its width, whether the wide value is in the first token or a later one."""
    g = Graph()
    g.add_group(NeuronGroup("a", 3, ["x"], [I("copy", "y", "x")], "y", 4, 0))
    g.inputs.append(GraphInput("tok", "a", "x", "tab"))
    g.host_tensors["tab"] = np.array([[1, 2, 3], [1, 100, -3]], np.int64)
    g.outputs.append(GraphOutput("out", "a"))
    ex = SequenceExecutor(g, check=False)
    assert np.array_equal(ex.run([0, 0]).outputs["out"], [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(OverflowError, match="group a: output outside its 4-bit message width"):
        ex.run([0, 1])


def test_groups_beyond_the_slot_cache_share_matrices_and_give_the_same_integers(tiny_qm, monkeypatch):
    """With no room to keep token-wide slot matrices (as for a 370M piece), stateless groups of one shape
    share one matrix: every output, state and slot still equals the cached run's, over runs of two lengths."""
    import mflc.simulator.sequence as S

    g = lower(tiny_qm)
    toks = np.random.default_rng(4).integers(0, 256, 11).tolist()
    want = SequenceExecutor(g)
    monkeypatch.setattr(S, "WIDE_CACHE_BYTES", 0)
    got = SequenceExecutor(g)
    for part in (toks[:7], toks[7:]):
        a, b = want.run(part), got.run(part)
        assert all(np.array_equal(a.outputs[k], b.outputs[k]) for k in a.outputs)
        assert all(np.array_equal(a.states[k], b.states[k]) for k in a.states)
    assert got._arena and not got._wide
    assert all(np.array_equal(want.group_env(n), got.group_env(n)) for n in g.groups)
