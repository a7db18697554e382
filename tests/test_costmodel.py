"""The cost model: hand-computable layouts give the hand-computed times and energies;
estimates grow with activity and chips; constants carry sources and can be overridden."""
import json
import math

import numpy as np
import pytest

from mflc.compiler.chip import costmodel as cm
from mflc.compiler.chip import gpu_baseline as gb
from mflc.compiler.model.config import preset
from mflc.compiler.model.lower import lower
from mflc.compiler.model.skeleton import skeleton_graph
from mflc.ir.coremap import CoreMap
from mflc.ir.errors import ConfigError
from mflc.ir.graph import Graph, NeuronGroup, SynapseGroup

NS, PJ = 1e-9, 1e-12

# Round numbers so that every figure below can be checked by hand.
HAND = dict(t_synop=1 * NS, t_neuron_update=10 * NS, t_msg=2 * NS, t_barrier_chip=100 * NS,
            t_barrier_chip_hop=50 * NS, offchip_bw=64e9, msg_wire_bits=64, e_synop=1 * PJ,
            e_neuron_update=10 * PJ, e_msg_core=0.5 * PJ, e_msg_chip=5 * PJ, e_link_bit=0.1 * PJ,
            p_static_chip=1.0, rates={"ra": 0.5, "rb": 1.0})


def two_core_graph() -> Graph:
    """A (4 neurons, stage 0, role ra) --dense 2x4 all-ones--> B (2 neurons, stage 1, role rb)."""
    g = Graph()
    g.add_group(NeuronGroup("A", 4, [], [], "y", 8, 0, meta={"role": "ra"}))
    g.add_group(NeuronGroup("B", 2, ["x"], [], "y", 8, 1, meta={"role": "rb"}))
    g.add_synapse(SynapseGroup.from_dense("AB", "A", "B", "x", np.ones((2, 4), np.int8)))
    return g


def two_core_map(chip_of_b: int) -> CoreMap:
    return CoreMap({"A": [(0, 4, 0)], "B": [(0, 2, 1)]}, np.array([0, chip_of_b]))


def hand_params(**extra) -> cm.CostParams:
    return cm.cost_params_from_dict({**HAND, **extra})


def test_assumed_profile_by_hand():
    """A sends when non-zero, rate 0.5: 4 x 0.5 = 2 messages per token from core 0, each to core 1
    (payload 2 x 8 bits); they drive 8 synapses x 0.5 = 4 synops on core 1, at A's stage 0; every neuron
    updates once: 4 on core 0 at stage 0, 2 on core 1 at stage 1."""
    prof = {(r["core"], r["stage"]): r for r in cm.assumed_profile(two_core_graph(), two_core_map(0), hand_params())}
    assert set(prof) == {(0, 0), (1, 0), (1, 1)}
    assert prof[(0, 0)]["neuron_updates"] == 4 and prof[(0, 0)]["msgs_on_chip"] == 2
    assert prof[(0, 0)]["payload_bits"] == 16 and prof[(0, 0)]["msgs_between_chips"] == 0
    assert prof[(1, 0)]["synops"] == 4 and prof[(1, 0)]["neuron_updates"] == 0
    assert prof[(1, 1)]["neuron_updates"] == 2 and prof[(1, 1)]["synops"] == 0
    other = {(r["core"], r["stage"]): r for r in cm.assumed_profile(two_core_graph(), two_core_map(1), hand_params())}
    assert other[(0, 0)]["msgs_between_chips"] == 2 and other[(0, 0)]["msgs_on_chip"] == 0


def test_two_cores_one_chip_by_hand():
    """Work per (core, stage): core 0 stage 0: 4 updates x 10 ns + 2 messages x 2 ns = 44 ns;
    core 1 stage 0: 4 synops x 1 ns = 4 ns; core 1 stage 1: 2 updates x 10 ns = 20 ns. Barrier (1 chip)
    100 ns, depth 2.
    Generation: max(44, 4) + 20 + 2 x 100 = 264 ns per token.
    Prefill: every stage in every step: max(core 0: 44, core 1: 24) + 100 = 144 ns per token.
    TTFT of a 3-token prompt: steps 0..3 run stages {0}, {0,1}, {0,1}, {1}: 44 + 44 + 44 + 20 + 4 x 100
    = 552 ns (= 2 x 144 + 264); with 4 tokens generated, 3 more passes: 552 + 3 x 264 = 1344 ns.
    Energy: 4 synops x 1 pJ + 6 updates x 10 pJ + 2 messages across the chip x 5 pJ = 74 pJ per token;
    static 1 W x 1 chip: generation 74 pJ + 264 nJ, prefill 74 pJ + 144 nJ; total for 3 + 3 passes:
    6 x 74 pJ + 1344 nJ."""
    r = cm.cost_report(two_core_graph(), two_core_map(0), None, hand_params(), prompt_len=3, gen_len=4)
    t, e = r["time"], r["energy"]
    assert t["barrier_s"] == pytest.approx(100 * NS)
    assert t["generation_token_s"] == pytest.approx(264 * NS)
    assert t["prefill_step_s"] == pytest.approx(144 * NS)
    assert r["latency"]["ttft_s"] == pytest.approx(552 * NS)
    assert r["latency"]["total_s"] == pytest.approx(1344 * NS)
    assert r["throughput"]["generation_tokens_per_s"] == pytest.approx(1 / (264 * NS))
    assert r["throughput"]["prefill_tokens_per_s"] == pytest.approx(1 / (144 * NS))
    assert e["dynamic_per_token_J"] == pytest.approx(74 * PJ)
    assert e["generation_per_token_J"] == pytest.approx(74 * PJ + 264e-9)
    assert e["prefill_per_token_J"] == pytest.approx(74 * PJ + 144e-9)
    assert e["total_J"] == pytest.approx(6 * 74 * PJ + 1344e-9)
    assert t["generation_split"]["synops_s"] == pytest.approx(0)           # core 0 is the slowest at stage 0
    assert t["generation_split"]["neuron_updates_s"] == pytest.approx(60 * NS)
    assert t["generation_split"]["messages_s"] == pytest.approx(4 * NS)
    assert r["model"]["cores"] == 2 and r["model"]["chips"] == 1 and r["model"]["depth_steps"] == 2


def test_two_cores_two_chips_by_hand():
    """B on a second chip: same work, but the barrier spans 2 chips (a 2x1 grid, 1 hop): 100 + 50 =
    150 ns; the 2 messages cross the link: 2 x 64 bits / 64 Gbit/s = 2 ns < 44 ns, so cores still bound.
    Generation 64 + 2 x 150 = 364 ns; prefill 44 + 150 = 194 ns.
    A message between chips costs 2 x 5 pJ + 64 bits x 0.1 pJ = 16.4 pJ: dynamic 4 + 60 + 2 x 16.4 =
    96.8 pJ; static 2 chips x 1 W: generation 96.8 pJ + 2 W x 364 ns."""
    r = cm.cost_report(two_core_graph(), two_core_map(1), None, hand_params(), prompt_len=1, gen_len=1)
    assert r["time"]["barrier_s"] == pytest.approx(150 * NS)
    assert r["time"]["generation_token_s"] == pytest.approx(364 * NS)
    assert r["time"]["prefill_step_s"] == pytest.approx(194 * NS)
    assert r["latency"]["ttft_s"] == pytest.approx(364 * NS)      # a 1-token prompt is one generation pass
    assert r["energy"]["dynamic_per_token_J"] == pytest.approx(96.8 * PJ)
    assert r["energy"]["generation_per_token_J"] == pytest.approx(96.8 * PJ + 2 * 364e-9)


def test_link_bound_step_by_hand():
    """With a 64 Mbit/s chip link, stage 0 waits for its 2 x 64 bits: 2 us > 44 ns of core work.
    Generation 2000 + 20 + 2 x 150 = 2320 ns; prefill max(44, 2000) + 150 = 2150 ns."""
    r = cm.cost_report(two_core_graph(), two_core_map(1), None, hand_params(offchip_bw=64e6), 1, 1)
    assert r["time"]["generation_token_s"] == pytest.approx(2320 * NS)
    assert r["time"]["prefill_step_s"] == pytest.approx(2150 * NS)
    assert r["time"]["generation_split"]["offchip_links_s"] == pytest.approx(2000 * NS)


def test_given_profile_is_used_and_checked():
    g, m = two_core_graph(), two_core_map(0)
    prof = [dict(core=1, stage=1, synops=1000.0, neuron_updates=0.0, msgs_on_core=0.0, msgs_on_chip=0.0,
                 msgs_between_chips=0.0, payload_bits=0.0)]
    r = cm.cost_report(g, m, prof, hand_params(), 1, 1, profile_source="simulated")
    # only stage 1 has work: 1000 synops x 1 ns; stage 0 empty: 0 + 2 barriers
    assert r["time"]["generation_token_s"] == pytest.approx(1000 * NS + 200 * NS)
    assert r["activity_per_token"]["source"] == "simulated"
    with pytest.raises(ConfigError, match="core 5"):
        cm.cost_report(g, m, [dict(prof[0], core=5)], hand_params(), 1, 1)


def test_ttft_tends_to_prefill_rate_for_long_prompts():
    g, m = two_core_graph(), two_core_map(0)
    r = cm.cost_report(g, m, None, hand_params(), prompt_len=100_000, gen_len=1)
    assert r["latency"]["ttft_s"] / 100_000 == pytest.approx(r["time"]["prefill_step_s"], rel=1e-3)
    # the exact schedule equals the (P-1) x prefill + generation formula here (each core works at one stage
    # or is idle at the other)
    assert r["latency"]["ttft_s"] == pytest.approx(99_999 * 144 * NS + 264 * NS)


@pytest.fixture(scope="module")
def tiny_placed(tiny_qm):
    g = lower(tiny_qm)
    return g, cm.packed_core_map(g, max_neurons=64, max_synapses=2048, cores_per_chip=4, max_fanout=512)


def _scaled(profile, field, k):
    return [dict(r, **{field: r[field] * k}) for r in profile]


def test_more_activity_costs_more_time_and_energy(tiny_placed):
    g, m = tiny_placed
    prof = cm.assumed_profile(g, m)
    base = cm.cost_report(g, m, prof, prompt_len=50, gen_len=10)
    for field in ("synops", "neuron_updates", "msgs_on_chip", "msgs_between_chips"):
        more = cm.cost_report(g, m, _scaled(prof, field, 3.0), prompt_len=50, gen_len=10)
        assert more["time"]["generation_token_s"] > base["time"]["generation_token_s"], field
        assert more["time"]["prefill_step_s"] >= base["time"]["prefill_step_s"], field
        assert more["latency"]["ttft_s"] > base["latency"]["ttft_s"], field
        assert more["energy"]["dynamic_per_token_J"] > base["energy"]["dynamic_per_token_J"], field
        assert more["energy"]["generation_per_token_J"] > base["energy"]["generation_per_token_J"], field
    busier = cm.cost_report(g, m, cm.assumed_profile(g, m, 1.0), prompt_len=50, gen_len=10)
    quieter = cm.cost_report(g, m, cm.assumed_profile(g, m, 0.25), prompt_len=50, gen_len=10)
    dyn = [x["energy"]["dynamic_per_token_J"] for x in (quieter, base, busier)]
    assert dyn[0] < dyn[1] < dyn[2]
    assert quieter["time"]["generation_token_s"] < busier["time"]["generation_token_s"]


def test_more_chips_cost_more_time_and_energy(tiny_placed):
    g, m = tiny_placed
    used = int(np.unique(m.chip_of_core).size)
    reps = [cm.cost_report(g, m, None, prompt_len=20, gen_len=5, chips=n)
            for n in (used, used + 1, 4 * used, 64 * used)]
    for a, b in zip(reps, reps[1:]):
        assert b["time"]["barrier_s"] >= a["time"]["barrier_s"]
        assert b["time"]["generation_token_s"] >= a["time"]["generation_token_s"]
        assert b["energy"]["generation_per_token_J"] > a["energy"]["generation_per_token_J"]
        assert b["energy"]["prefill_per_token_J"] > a["energy"]["prefill_per_token_J"]
    assert reps[-1]["time"]["generation_token_s"] > reps[0]["time"]["generation_token_s"]
    with pytest.raises(ConfigError, match="uses"):
        cm.cost_report(g, m, None, chips=used - 1)
    assert [cm.chip_grid_diameter(n) for n in (1, 2, 4, 8, 9, 16, 1152)] == [0, 1, 2, 4, 4, 6, 66]


def test_spreading_a_layout_over_more_chips_costs_more(tiny_placed):
    """The same cores split over more chips: more messages cross chips, the barrier spans more chips."""
    g, m = tiny_placed
    few = cm.packed_core_map(g, max_neurons=64, max_synapses=2048, cores_per_chip=64, max_fanout=512)
    many = cm.packed_core_map(g, max_neurons=64, max_synapses=2048, cores_per_chip=2, max_fanout=512)
    a, b = cm.cost_report(g, few, None, prompt_len=20), cm.cost_report(g, many, None, prompt_len=20)
    assert b["model"]["chips"] > a["model"]["chips"]
    assert b["activity_per_token"]["msgs_between_chips"] > a["activity_per_token"]["msgs_between_chips"]
    assert b["time"]["generation_token_s"] > a["time"]["generation_token_s"]
    assert b["energy"]["generation_per_token_J"] > a["energy"]["generation_per_token_J"]


def test_assumed_profile_matches_simulated_activity(tiny_qm):
    """The assumption made without simulation, with rates measured by the RateMeter on the same run,
    predicts the simulator's counters closely (neuron updates exactly)."""
    from mflc.simulator.engine import Counters, Engine

    g = lower(tiny_qm)
    m = cm.packed_core_map(g, max_neurons=64, max_synapses=2048, cores_per_chip=4, max_fanout=512)
    c, meter = Counters.zeros(m.n_cores), cm.RateMeter(g)
    Engine(g, m).run(list(np.random.default_rng(1).integers(0, 256, 16)), counters=c, trace=meter)
    measured = c.per_token_profile()
    assumed = cm.assumed_profile(g, m, meter.rates())
    for f in cm.FIELDS:
        got, want = sum(r[f] for r in assumed), sum(r[f] for r in measured)
        assert got == pytest.approx(want, rel=0.1 if f != "neuron_updates" else 1e-12), f
    r_meas = cm.cost_report(g, m, measured, profile_source="simulated")
    r_ass = cm.cost_report(g, m, assumed)
    assert r_ass["time"]["generation_token_s"] == pytest.approx(r_meas["time"]["generation_token_s"], rel=0.1)
    assert r_ass["energy"]["dynamic_per_token_J"] == pytest.approx(r_meas["energy"]["dynamic_per_token_J"], rel=0.1)


def test_packed_core_map_respects_limits(tiny_placed):
    g, m = tiny_placed
    per_core_n, per_core_s = np.zeros(m.n_cores), np.zeros(m.n_cores)
    rows = {n: np.zeros(grp.size) for n, grp in g.groups.items()}
    for s in g.synapses.values():
        rows[s.dst] += s.row_counts()
    for name, grp in g.groups.items():
        assert m.core_of_neurons(name, grp.size).min() >= 0
        for a, b, c in m.slices[name]:
            per_core_n[c] += b - a
            per_core_s[c] += rows[name][a:b].sum()
    assert per_core_n.max() <= 64 and per_core_s.max() <= 2048
    assert np.all(np.diff(m.chip_of_core) >= 0) and np.bincount(m.chip_of_core).max() <= 4


# ---- constants and overrides ----------------------------------------------------------------------------
def test_every_constant_has_provenance():
    rows = cm.CostParams().table()
    names = {r["name"] for r in rows}
    assert set(cm.CostParams.LOIHI) <= names and "gpu.mem_bw" in names and "rates.mlgru" in names
    for r in rows:
        assert r["source"] and r["unit"] and r["confidence"] in ("high", "medium", "low"), r["name"]
        assert r["value"] >= 0
        if r["low"] is not None:
            assert r["low"] <= r["value"] <= r["high"], r["name"]
    json.dumps(rows)


def test_override_file(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"t_synop": 2e-9, "e_synop": {"value": 6.8e-12, "source": "Hala Point bound"},
                             "gpu": {"mem_bw": 102e9, "name": "Super"}, "rates": {"mlgru": 0.5, "newrole": 0.1}}))
    p = cm.load_cost_params(f)
    assert p.v("t_synop") == 2e-9 and "user override" in p.t_synop.source and p.t_synop.confidence == "user"
    assert p.v("e_synop") == 6.8e-12 and p.e_synop.source == "Hala Point bound"
    assert p.gpu.value("mem_bw") == 102e9 and p.gpu.name == "Super"
    assert p.rate("mlgru") == 0.5 and p.rate("newrole") == 0.1 and p.rate("unlisted") == 1.0
    assert p.v("t_msg") == cm.CostParams().v("t_msg")        # untouched constants keep their defaults


@pytest.mark.parametrize("raw, match", [
    ({"t_synapse": 1e-9}, "t_synapse"),
    ({"gpu": {"bandwidth": 1}}, "gpu.bandwidth"),
    ({"t_synop": "fast"}, "t_synop"),
    ({"t_synop": True}, "t_synop"),
    ({"t_synop": -1.0}, "t_synop"),
    ({"t_synop": {"val": 1.0}}, "t_synop"),
    ({"t_synop": {"value": 1.0, "unit": "ns"}}, "unit"),
    ({"rates": {"mlgru": 1.5}}, "rates.mlgru"),
    ([1, 2], "JSON object"),
])
def test_override_errors_name_the_key(tmp_path, raw, match):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=match):
        cm.load_cost_params(f)


def test_override_file_missing_or_broken(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        cm.load_cost_params(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cm.load_cost_params(tmp_path / "bad.json")


def test_bound_params_bracket_the_default(tiny_placed):
    g, m = tiny_placed
    p = cm.CostParams()
    lo, hi = cm.bound_params(p, True), cm.bound_params(p, False)
    r = {k: cm.cost_report(g, m, None, q, 20, 5) for k, q in (("lo", lo), ("mid", p), ("hi", hi))}
    for key in ("generation_token_s", "prefill_step_s"):
        assert r["lo"]["time"][key] <= r["mid"]["time"][key] <= r["hi"]["time"][key]
    assert r["lo"]["energy"]["generation_per_token_J"] <= r["mid"]["energy"]["generation_per_token_J"] \
        <= r["hi"]["energy"]["generation_per_token_J"]


# ---- the GPU baseline ------------------------------------------------------------------------------------
def test_gpu_baseline_models_match_their_published_sizes():
    assert gb.QWEN2_5_0_5B.n_params == pytest.approx(0.494e9, rel=0.01)
    assert gb.LLAMA3_2_1B.n_params == pytest.approx(1.236e9, rel=0.01)
    # KV cache: 2 (K, V) x layers x KV heads x head dim x 2 bytes
    assert gb.kv_bytes(gb.QWEN2_5_0_5B, gb.JETSON_ORIN_NANO_8GB, 1) == 2 * 24 * 2 * 64 * 2
    assert gb.kv_bytes(gb.LLAMA3_2_1B, gb.JETSON_ORIN_NANO_8GB, 1) == 2 * 16 * 8 * 64 * 2


def test_gpu_generation_is_bandwidth_bound_and_grows_with_context():
    m, gpu = gb.QWEN2_5_0_5B, gb.JETSON_ORIN_NANO_8GB
    t0 = gb.generation_time(m, gpu, 0)
    assert t0 == pytest.approx(m.n_params * 2 / 68e9)          # weights once per token at 68 GB/s
    ts = [gb.generation_time(m, gpu, n) for n in (0, 100, 1000, 10_000, 100_000)]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert ts[3] - ts[0] == pytest.approx(10_000 * 12288 / 68e9)
    # prefill of P tokens: 2 x matmul params x P FLOPs (+ attention, + logits once) at 10 TFLOP/s
    pre = gb.prefill_time(m, gpu, 500)
    assert pre >= 2 * m.matmul_params() * 500 / 10e12
    fig = gb.gpu_figures(m, gpu, 500, 10)
    assert fig["ttft_s"] == pytest.approx(pre)
    assert fig["generation_energy_per_token_J"] == pytest.approx(15.0 * fig["generation_time_per_token_s"])


def test_report_compares_with_gpu_and_scales_flat(tiny_placed):
    g, m = tiny_placed
    r = cm.cost_report(g, m, None, prompt_len=100, gen_len=10, seq_lens=[1, 10, 100, 1000])
    json.dumps(r)
    assert [b["model"] for b in r["gpu_baselines"]] == ["Qwen2.5-0.5B", "Llama-3.2-1B"]
    b = r["gpu_baselines"][0]
    assert b["loihi_advantage"]["generation_throughput_x"] == pytest.approx(
        b["generation_time_per_token_s"] / r["time"]["generation_token_s"])
    sc = r["scaling"]
    assert len(set(sc["loihi"]["generation_time_per_token_s"])) == 1           # recurrent state: flat
    gpu = sc["gpu"]["Qwen2.5-0.5B"]["generation_time_per_token_s"]
    assert all(y > x for x, y in zip(gpu, gpu[1:]))                           # KV cache: growing
    pre = sc["loihi"]["prefill_time_per_token_s"]
    assert all(y <= x for x, y in zip(pre, pre[1:]))                          # pipelining amortises depth
    text = cm.format_report(r)
    assert "tokens/s" in text and "Qwen2.5-0.5B" in text


def test_plot_scaling_writes_a_png(tiny_placed, tmp_path):
    pytest.importorskip("matplotlib")
    g, m = tiny_placed
    r = cm.cost_report(g, m, None, prompt_len=10, gen_len=2, seq_lens=[1, 16, 256, 4096])
    out = tmp_path / "scaling.png"
    cm.plot_scaling(r, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_skeleton_370m_estimate_is_finite_and_sane():
    """The documented estimate runs from a configuration alone (docs/estimates.md)."""
    g = skeleton_graph(preset("370M"))
    m = cm.packed_core_map(g)
    r = cm.cost_report(g, m, None, prompt_len=500, gen_len=10)
    assert r["model"]["depth_steps"] == 608
    assert r["activity_per_token"]["neuron_updates"] == sum(x.size for x in g.groups.values())
    # every ternary synapse is driven by a mostly non-zero message
    assert 0.8 * r["model"]["synapses"] < r["activity_per_token"]["synops"] <= r["model"]["synapses"]
    for v in (r["time"]["generation_token_s"], r["time"]["prefill_step_s"], r["energy"]["generation_per_token_J"]):
        assert math.isfinite(v) and v > 0
    assert r["time"]["prefill_step_s"] < r["time"]["generation_token_s"]
