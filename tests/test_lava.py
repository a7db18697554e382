"""Lava back-end: compiled models run through lava-nc (Loihi2SimCfg, fixed_pt) equal our simulator and the
integer model exactly; Lava Dense's own fixed-point semantics on hand examples (the ternary pitfall).

Lava is slow (one OS process per Lava process, ~0.1 s per step for the tiny preset), so: few tokens, small
models, but real ones, in the default run. Without lava-nc the whole module is skipped with the reason.
"""
import json

import numpy as np
import pytest

pytest.importorskip("lava", reason="lava-nc not installed (needs the Python 3.10 venv)")

from typer.testing import CliRunner  # noqa: E402

from mflc.compiler.model.config import ModelConfig  # noqa: E402
from mflc.compiler.model.int_model import IntModel  # noqa: E402
from mflc.compiler.model.lower import lower  # noqa: E402
from mflc.compiler.model.quantize import QuantOptions, quantize  # noqa: E402
from mflc.ir.graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, SynapseGroup  # noqa: E402
from mflc.simulator import lava_backend as LB  # noqa: E402
from mflc.simulator.engine import Engine  # noqa: E402
from mflc.simulator.reference import ReferenceExecutor  # noqa: E402

from util import random_weights  # noqa: E402

pytestmark = pytest.mark.lava
I = Instr.make


# ---- Lava's own Dense, fixed_pt, on hand examples ------------------------------------------------------
def _lava_dense(w, weight_exp, msg, **kw):
    """One graded-spike vector through Lava's Dense (fixed_pt): what arrives one step later."""
    assert LB.lava_available()              # imports Lava safely (see lava_backend.import_lava)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    data = np.zeros((len(msg), 2), np.int32)
    data[:, 0] = msg
    src = Source(data=data)
    dense = Dense(weights=np.asarray(w), weight_exp=weight_exp, num_message_bits=24, **kw)
    sink = Sink(shape=(len(w),), buffer=2)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(sink.a_in)
    try:
        src.run(condition=RunSteps(num_steps=2), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        got = np.asarray(sink.data.get()).astype(np.int64)
    finally:
        src.stop()
    assert not got[:, 0].any()             # Dense's one-step buffer: nothing arrives in the sending step
    return got[:, 1]


def test_lava_dense_semantics_and_the_ternary_pitfall():
    w = np.array([[1, -1, 0], [1, 1, 1], [-1, -1, 1]])
    s = np.array([5, 3, -7])
    exact = w @ s                                           # [2, 1, -9]
    # raw ternary in mixed sign mode: Lava drops the lowest weight bit, {-1, 0, 1} -> {-2, 0, 0}
    raw = _lava_dense(w, 0, s)
    assert np.array_equal(raw, ((w >> 1) << 1) @ s) and not np.array_equal(raw, exact)
    # our encoding (mixed_shift 1): 2w with weight_exp - 1; loihi2.md's ±128 with -7 is exact too
    assert np.array_equal(_lava_dense(2 * w, -1, s), exact)
    assert np.array_equal(_lava_dense(128 * w, -7, s), exact)
    # one-signed weights are not truncated (EXCITATORY: raw 0/1 weights, e.g. identity and reductions)
    assert np.array_equal(_lava_dense(np.abs(w), 0, s), np.abs(w) @ s)
    # a negative weight_exp is a floor shift (toward -inf), as the IR's shr_floor: -15 >> 1 = -8
    assert np.array_equal(_lava_dense(2 * np.array([[3]]), -2, np.array([-5])), [-8])
    # the accumulator is int32 and wraps silently: the export must (and does) prove it cannot happen
    big = np.full((1, 3), 255)
    m = np.full(3, (1 << 23) - 1)
    wrapped = _lava_dense(big, 0, m)
    assert int((big @ m)[0]) > 2**31 and int(wrapped[0]) == int(np.int64(big @ m).astype(np.int32)[0])


def test_encoding_of_each_synapse_kind(tiny_qm):
    g = lower(tiny_qm)
    plan = LB.plan_lava(g, [1, 2], "pipelined")
    syn = {p["name"][4:]: p for p in plan["processes"] if p.get("kind") == "synapse"}
    assert len(syn) == len(g.synapses)
    for name, p in syn.items():
        s = g.synapses[name]
        if s.meta.get("kind") == "ternary":       # stored at 2 bits: the ±128 encoding (2 - 8 - 1 = -7)
            assert (p["sign_mode"], p["num_weight_bits"], p["weight_shift"], p["lava_weight_exp"]) == \
                ("MIXED", 2, 7, s.weight_exp - 7)
            assert p["lava_class"] == ("DelayDense" if s.delay else "Dense")
        else:                                     # weight 1: 1 bit, widened only if int32 cannot take 2^7
            assert p["sign_mode"] == "EXCITATORY" and p["weight_shift"] == 8 - p["num_weight_bits"]
            assert p["num_weight_bits"] == 1 or p["acc_bound"] << 1 > 2**31 - 1
        assert p["acc_bits"] <= 32 and p["delay"] == s.delay
        assert p["lava_class"].startswith("Delay") == (s.delay > 0)
    assert plan["steps"] == 2 + g.depth - 1
    json.dumps(plan, default=int)                          # the description is JSON
    # the ±128 encoding of loihi2.md (2-bit ternary) costs 6 more accumulator bits than the 8-bit ±2 one
    p1 = {p["name"]: p for p in LB.plan_lava(g, [1], mixed_shift=1)["processes"] if p.get("kind") == "synapse"}
    tern = [n for n, p in syn.items() if p["sign_mode"] == "MIXED"]
    assert all(p1[f"syn:{n}"]["acc_bits"] == syn[n]["acc_bits"] - 6 for n in tern)
    assert all(p1[f"syn:{n}"]["num_weight_bits"] == 8 for n in syn)


def test_export_refuses_what_lava_cannot_do_exactly():
    g = _hand_graph()
    s = g.synapses["B->C.p"]
    s.acc_bits = 40                                          # the IR would allow it; Lava's int32 would wrap
    s.values = np.full_like(s.values, 127)
    s.weight_exp = 5
    with pytest.raises(LB.LavaExportError, match="B->C.p .* above its int32 limit 2\\^31-1"):
        LB.encode_synapse(g, s)
    with pytest.raises(ValueError, match="lowest weight bit"):
        LB.encode_synapse(g, g.synapses["A->B.x"], mixed_shift=0)


# ---- a hand graph: delta sender, negative and positive weight_exp, inhibitory weights, delays ---------
def _hand_graph() -> Graph:
    rng = np.random.default_rng(5)
    g = Graph()
    g.add_group(NeuronGroup("H", 4, ["tok"], [I("copy", "y", "tok")], "y", 8, 0))
    g.add_group(NeuronGroup("A", 4, ["x"], [I("copy", "y", "x")], "y", 8, 1, send="delta"))
    g.add_group(NeuronGroup("B", 3, ["x"], [I("add_sat", "acc", "acc", "x", bits=20)], "acc", 20, 3,
                            registers={"acc": 24}))
    g.add_group(NeuronGroup("C", 2, ["p", "q"], [I("add_sat", "y", "p", "q", bits=24)], "y", 24, 4))
    g.add_synapse(SynapseGroup.identity("H->A.x", "H", "A", "x", 4))
    g.add_synapse(SynapseGroup.from_dense("A->B.x", "A", "B", "x", np.array([[1, -1, 0, 1], [0, 1, 1, -1], [-1, 0, 0, 1]]),
                                          delay=1))
    g.add_synapse(SynapseGroup.from_dense("B->C.p", "B", "C", "p", np.array([[-5, 7, 0], [3, 0, -2]]), weight_exp=-2))
    g.add_synapse(SynapseGroup.from_dense("H->C.q", "H", "C", "q", -np.array([[0, 2, 0, 0], [0, 0, 4, 1]]),
                                          weight_exp=1, delay=3))
    g.host_tensors["emb"] = rng.integers(-100, 101, (10, 4))
    g.inputs.append(GraphInput("tokens", "H", "tok", "emb"))
    g.outputs.append(GraphOutput("logits", "C"))
    g.state["B.acc"] = ("B", "acc")
    return g


@pytest.mark.parametrize("schedule,density", [("sequential", 0.5), ("pipelined", 1.01)])
def test_hand_graph_equals_reference(schedule, density):
    g = _hand_graph()
    toks = [3, 3, 7, 0, 9, 3]
    want = ReferenceExecutor(g).run(toks, schedule)
    net = LB.export_lava(g, toks, schedule, sparse_max_density=density)
    kinds = {type(p).__name__ for p in net.synapses.values()}
    assert kinds == ({"Sparse", "DelaySparse", "Dense", "DelayDense"} if density < 1 else {"Sparse", "DelaySparse"})
    got = net.run()
    assert np.array_equal(got.outputs["logits"], want.outputs["logits"])
    assert np.array_equal(got.states["B.acc"], want.states["B.acc"])
    assert got.output_steps == want.output_steps and got.steps == want.steps
    assert np.array_equal(net.final_registers["B.acc"], want.states["B.acc"][-1])
    assert np.any(want.outputs["logits"] != 0) and np.abs(want.outputs["logits"]).max() > 100


# ---- compiled models: Lava == engine == integer model ------------------------------------------------
def _expected(qm, toks):
    im = IntModel(qm)
    st = im.init_state()
    logits, states = [], []
    for t in toks:
        lg, st = im.step(t, st)
        logits.append(lg)
        states.append(st.copy())
    return np.stack(logits), np.stack(states)


def _cross_check(qm, toks, schedule, **kw):
    g = lower(qm)
    want_logits, want_states = _expected(qm, toks)
    eng = Engine(g).run(toks, schedule)
    net = LB.export_lava(g, toks, schedule, **kw)
    got = net.run()
    assert np.array_equal(eng.outputs["logits"], want_logits)
    assert np.array_equal(got.outputs["logits"], want_logits)
    assert got.output_steps == eng.output_steps
    for i in range(qm.cfg.L):
        assert np.array_equal(eng.states[f"L{i}.h"], want_states[:, i])
        assert np.array_equal(got.states[f"L{i}.h"], want_states[:, i])
        grp, reg = g.state[f"L{i}.h"]
        assert np.array_equal(net.final_registers[f"{grp}.{reg}"], want_states[-1, i])
    assert np.any(want_states != 0) and np.unique(want_logits).size > 10
    return net


def test_tiny_preset_through_lava(tiny_qm):
    net = _cross_check(tiny_qm, [17, 200, 17, 3], "pipelined")
    assert net.n_processes == len(net.graph.groups) + len(net.graph.synapses) + 1 + 1 + 2


SMALL = [
    dict(cfg=dict(vocab_size=24, hidden_size=6, num_hidden_layers=1, expand_ratio=2, intermediate_size=10,
                  use_lower_bound=False, tie_word_embeddings=True), seed=11, opts=dict(act_bits=6, state_bits=16),
         schedule="sequential", toks=[5, 23, 5], kw=dict(sparse_max_density=0.0, mixed_shift=1)),
    dict(cfg=dict(vocab_size=40, hidden_size=9, num_hidden_layers=2, expand_ratio=1, intermediate_size=7,
                  use_lower_bound=True, tie_word_embeddings=False), seed=12,
         opts=dict(act_bits=9, state_bits=20, pow2=False, remove_inner_norm=True),
         schedule="pipelined", toks=[1, 39, 8, 8, 0], kw=dict(sparse_max_density=1.01)),
]


@pytest.mark.parametrize("case", SMALL, ids=["1-layer-dense-8bit-sequential", "2-layer-sparse-pipelined"])
def test_random_small_models_through_lava(case):
    _cross_check(_small_qm(case), case["toks"], case["schedule"], **case["kw"])


# ---- the command line --------------------------------------------------------------------------------
def test_shifted_squares_through_lava():
    """12-bit z (the default) over m = 600 squares with square_shr at k = 2 (docs/fixed-point.md): Lava runs
    that op and the k/2 folded into the norm exactly as the engine and the integer model do."""
    case = dict(cfg=dict(vocab_size=20, hidden_size=6, num_hidden_layers=1, intermediate_size=600), seed=13,
                opts=dict())
    qm = _small_qm(case)
    assert qm.bits("L0.z") == 12 and qm.scalars.get("sq.L0.z") == 2
    net = _cross_check(qm, [4, 19, 4], "pipelined")
    assert any(ins.op == "square_shr" for grp in net.graph.groups.values() for ins in grp.program)


def _small_qm(case):
    cfg = ModelConfig.from_dict(case["cfg"])
    w = random_weights(cfg, case["seed"])
    return quantize(cfg, w, [np.random.default_rng(case["seed"]).integers(0, cfg.vocab_size, 48)],
                    QuantOptions(**case["opts"]))


def test_cli_export_lava_and_verify_backend_lava(tmp_path, monkeypatch):
    from mflc.cli import app

    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, (r.output, r.exception)
        return r

    run("init", "--preset", "tiny", "--out", tmp_path / "m", "--seed", "2")
    run("compile", tmp_path / "m", "--out", tmp_path / "b")
    r = run("export-lava", tmp_path / "b", "--out", tmp_path / "net.json", "--tokens", "2")
    assert "DelaySparse" in r.output and "MIXED" in r.output
    js = json.loads((tmp_path / "net.json").read_text())
    assert js["instantiated"]["processes"] == len(js["processes"]) and js["steps"] == 2 * js["depth"]
    names = {p["name"] for p in js["processes"]}
    assert all(c["src"].rsplit(".", 1)[0] in names and c["dst"].rsplit(".", 1)[0] in names for c in js["connections"])
    monkeypatch.setattr(LB, "lava_available", lambda: False)
    assert "description only" in run("export-lava", tmp_path / "b").output
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--backend", "lava"])
    assert r.exit_code == 1 and "needs lava-nc" in r.output
    monkeypatch.undo()
    # verify --backend lava on a small quantized model directory (the tiny build takes ~15 s under Lava)
    _small_qm(SMALL[1]).save(tmp_path / "q")
    js = json.loads(run("verify", tmp_path / "q", "--backend", "lava", "--tokens", "3", "--json").stdout)
    assert js["ok"] is True and js["engine"] == "lava" and js["compared_values"] > 0
    assert js["counters"]["schedule"] == "pipelined"
    assert "bit-exact" in run("verify", tmp_path / "q", "--backend", "lava", "--tokens", "2", "--seed", "4").output


def test_lava_imports_after_the_start_method_is_fixed():
    """Lava calls mp.set_start_method('fork') at import; our Numba fast path fixes the method first."""
    import subprocess
    import sys

    code = ("import multiprocessing as mp; mp.get_start_method(); "
            "from mflc.simulator.lava_backend import lava_available; assert lava_available(); "
            "import lava.proc.io.sink")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---- the shipped default model under Lava (issue 24) -----------------------------------------------------
@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    import mflc

    return mflc.compile(out=tmp_path_factory.mktemp("default") / "b")


def test_default_model_square_sum_encoding_is_exact_at_its_proven_peak(default_build):
    """The pre-scale chosen for the square sums (num_weight_bits 8, no pre-scale, instead of the stored 1-bit
    width's 2^7) changes no integer: through Lava's own Dense, the analysis' worst case (every square at
    2^22) and random squares give exactly the IR's sums, where the stored width's encoding wraps."""
    g = default_build.graph
    s = g.synapses["L0.down_in.sq->L0.down_in.sum.x"]
    e = LB.encode_synapse(g, s)
    w = e.lava_weights(s)
    kw = dict(num_weight_bits=e.num_weight_bits, sign_mode=_sign_mode(e.sign_mode))
    top = np.full(s.shape[1], e.carried[1])
    rng = np.random.default_rng(24)
    some = rng.integers(e.carried[0], e.carried[1] + 1, s.shape[1])
    for msg in (top, some):
        exact = s.to_dense() @ msg
        assert np.array_equal(_lava_dense(w, e.lava_weight_exp, msg, **kw), exact)
    stored = _lava_dense(s.to_dense() << 7, -7, top, num_weight_bits=1, sign_mode=_sign_mode("EXCITATORY"))
    assert not np.array_equal(stored, s.to_dense() @ top)                 # 2^7 pre-scale: int32 wraps


def _sign_mode(name: str):
    from lava.utils.weightutils import SignMode

    return SignMode[name]


@pytest.mark.slow
def test_verify_lava_on_the_default_model(default_build):
    """`mflc verify BUILD --engine lava --tokens 4` on the shipped model: bit-exact (~50 s on 2 cores)."""
    from util import cli_run

    js = json.loads(cli_run("verify", default_build.path, "--engine", "lava", "--tokens", "4", "--json").stdout)
    assert js["ok"] is True and js["engine"] == "lava" and js["compared_values"] == 4 * (256 + 4 * 128)
