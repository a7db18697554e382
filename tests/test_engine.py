"""The Numba engine equals the IR reference executor and the integer model exactly, however it is placed."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.lower import lower
from mflc.ir.coremap import CoreMap
from mflc.simulator.engine import Counters, Engine
from mflc.simulator.reference import ReferenceExecutor
from mflc.simulator.verify import verify

from util import quantized_models


def random_core_map(g, rng, max_pieces=4, max_chips=3) -> CoreMap:
    """Cut every group into random contiguous slices on random cores of random chips."""
    slices, chips, labels = {}, [], []
    for name, grp in g.groups.items():
        k = int(rng.integers(1, min(max_pieces, grp.size) + 1))
        cuts = np.sort(rng.choice(np.arange(1, grp.size), size=k - 1, replace=False)) if k > 1 else np.array([], int)
        bounds = [0, *cuts.tolist(), grp.size]
        slices[name] = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            chip = int(rng.integers(0, max_chips))
            slices[name].append((a, b, len(chips)))
            labels.append((chip, sum(1 for c in chips if c == chip)))
            chips.append(chip)
    return CoreMap(slices, np.asarray(chips), labels)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_models(), st.integers(0, 2**16), st.sampled_from(["sequential", "pipelined"]))
def test_engine_equals_reference_and_integer_model(case, seed, schedule):
    cfg, _, qm, tokens = case
    g = lower(qm)
    cm = random_core_map(g, np.random.default_rng(seed))
    c = Counters.zeros(cm.n_cores)
    got = Engine(g, cm).run(tokens, schedule, c)
    ref = ReferenceExecutor(g).run(tokens, schedule)
    want, _ = IntModel(qm).forward(tokens)
    assert np.array_equal(got.outputs["logits"], ref.outputs["logits"])
    assert np.array_equal(got.outputs["logits"], want)
    for k in ref.states:
        assert np.array_equal(got.states[k], ref.states[k])
    assert got.output_steps == ref.output_steps
    # every firing updates each of its neurons once
    assert c.neuron_updates.sum() == len(tokens) * sum(grp.size for grp in g.groups.values())


def test_counters_match_hand_count(tiny_qm):
    """Synaptic ops = Σ over non-zero messages of the synapses they drive; checked against a direct count."""
    g = lower(tiny_qm)
    cm = CoreMap.one_core_per_group(g)
    c = Counters.zeros(cm.n_cores)
    fired = {}
    Engine(g, cm).run([10, 20], counters=c, trace=lambda t, k, n, out: fired.__setitem__((k, n), out.copy()))
    expect = 0
    for (k, name), out in fired.items():
        nz = out != 0
        for s in g.synapses.values():
            if s.src == name:
                expect += int(np.sum(nz[s.indices]))
    assert int(c.synops.sum()) == expect
    assert c.msgs_between_chips.sum() == 0 and c.msgs_on_chip.sum() > 0
    assert len(c.per_step["synops"]) == 2 * g.depth and sum(c.per_step["synops"]) == expect


def test_verify_passes_and_locates_a_corrupted_weight(tiny_qm):
    g = lower(tiny_qm)
    im = IntModel(tiny_qm)
    toks = [1, 2, 3, 4]
    assert verify(im, g, toks).ok
    bad = lower(tiny_qm)
    s = bad.synapses["L0.i_in->L0.mlgru.pi"]
    s.values = s.values.copy()
    s.values[0] = -s.values[0]
    res = verify(im, bad, toks, reference_graph=g)
    assert not res.ok
    d = res.divergence
    # sequential schedule: token k enters at k·depth, so the group fires at k·depth + stage
    assert d.group == "L0.mlgru" and d.step == d.token * g.depth + g.groups["L0.mlgru"].stage
    assert d.expected != d.got and f"first divergence at token {d.token}" in d.describe()


def test_virtual_graph_cannot_run():
    from mflc.compiler.model.config import preset
    from mflc.compiler.model.skeleton import skeleton_graph

    with pytest.raises(ValueError, match="virtual"):
        Engine(skeleton_graph(preset("tiny")), check=False)


def test_per_core_stage_profile_adds_up(tiny_qm):
    g = lower(tiny_qm)
    cm = random_core_map(g, np.random.default_rng(7))
    c = Counters.zeros(cm.n_cores)
    Engine(g, cm).run([1, 2, 3], counters=c)
    prof = c.per_token_profile()
    assert c.tokens == 3
    for i, f in enumerate(Counters.FIELDS):
        total = sum(r[f] for r in prof) * 3
        assert total == pytest.approx(float(getattr(c, f).sum())), f
    stages = {grp.stage for grp in g.groups.values()}
    assert {r["stage"] for r in prof} <= stages


def test_wide_messages_use_the_int32_kernels_exactly(tiny_model):
    """Projection inputs wider than 16 bits take the dense32 path; results stay exact."""
    from mflc.compiler.model.quantize import QuantOptions, quantize

    cfg, w = tiny_model
    qm = quantize(cfg, w, [list(range(0, 256, 3))],
                  QuantOptions(site_bits={"i_in": 20, "f_in": 20, "g_in": 18, "gate_in": 17}))
    g = lower(qm)
    eng = Engine(g)
    modes = {sy.s.name: sy.mode for syns in eng.syn_out.values() for sy in syns}
    assert modes["L0.i_in->L0.mlgru.pi"] == "dense32" and modes["L0.o_in->L0.res1.ao"] == "dense16"
    toks = [7, 70, 200, 1]
    want, _ = IntModel(qm).forward(toks)
    assert np.array_equal(eng.run(toks).outputs["logits"], want)


def test_delta_of_a_16_bit_sender_needs_17_bits():
    """A delta sender's message is the change of its output: for 16-bit values it spans 17 bits
    (-32768 -> 32767 sends 65535). The engine must not pack it into its 16-bit message kernel."""
    from mflc.ir.graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, SynapseGroup
    from mflc.simulator.engine import Engine
    from mflc.simulator.reference import ReferenceExecutor

    I = Instr.make
    g = Graph()
    g.add_group(NeuronGroup("in", 2, ["tok"], [I("copy", "y", "tok")], "y", 16, 0, send="delta"))
    g.add_group(NeuronGroup("out", 2, ["x"], [I("copy", "y", "x")], "y", 24, 1))
    g.add_synapse(SynapseGroup.from_dense("in->out", "in", "out", "x", np.array([[1, 1], [0, 1]], np.int8)))
    g.host_tensors["emb"] = np.array([[-32768, 32767], [32767, -32768]], np.int64)
    g.inputs.append(GraphInput("tokens", "in", "tok", "emb"))
    g.outputs.append(GraphOutput("out", "out"))
    toks = [0, 1, 0, 1]
    want = ReferenceExecutor(g).run(toks).outputs["out"]
    assert want[1].tolist() == [-1, -32768]
    for schedule in ("sequential", "pipelined"):
        got = Engine(g).run(toks, schedule).outputs["out"]
        assert np.array_equal(got, want), (schedule, got.tolist(), want.tolist())
