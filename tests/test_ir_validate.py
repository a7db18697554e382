"""Every validator rule fires with a message naming the group/synapse, the figure and the limit."""
import numpy as np
import pytest

from mflc.ir.errors import IRValidationError
from mflc.ir.graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, SynapseGroup
from mflc.ir.validate import problems, validate

I = Instr.make


def small_graph() -> Graph:
    """in(4) --identity--> sq(4) --reduce--> sum(1): a legal three-stage graph."""
    g = Graph()
    g.add_group(NeuronGroup("in", 4, ["tok"], [I("copy", "y", "tok")], "y", 8, 0))
    g.add_group(NeuronGroup("sq", 4, ["x"], [I("square", "y", "x")], "y", 16, 1))
    g.add_group(NeuronGroup("sum", 1, ["x"], [I("rms_factor", "y", "x", eps=1)], "y", 24, 2,
                            registers={"acc": 24}))
    g.add_synapse(SynapseGroup.identity("in->sq", "in", "sq", "x", 4))
    g.add_synapse(SynapseGroup.ones("sq->sum", "sq", "sum", "x", 1, 4))
    g.host_tensors["emb"] = np.arange(-8, 8, dtype=np.int64).reshape(4, 4)
    g.inputs.append(GraphInput("tokens", "in", "tok", "emb"))
    g.outputs.append(GraphOutput("out", "sum"))
    g.state["acc"] = ("sum", "acc")
    return g


def test_small_graph_is_valid():
    assert problems(small_graph()) == []


def _one(g, *fragments):
    found = problems(g)
    assert any(all(f in p for f in fragments) for p in found), found
    with pytest.raises(IRValidationError):
        validate(g)


def test_dangling_port():
    g = small_graph()
    g.groups["sq"].ports.append("extra")
    _one(g, "group sq", "port 'extra'", "dangling")


def test_unknown_source_group():
    g = small_graph()
    g.synapses["in->sq"].src = "nope"
    _one(g, "synapse in->sq", "source group 'nope'")


def test_missing_destination_port():
    g = small_graph()
    g.synapses["in->sq"].port = "z"
    _one(g, "synapse in->sq", "port 'z' does not exist on group sq")


def test_shape_mismatch():
    g = small_graph()
    g.synapses["sq->sum"] = SynapseGroup.ones("sq->sum", "sq", "sum", "x", 1, 3, delay=0)
    _one(g, "synapse sq->sum", "weight shape (1, 3)", "(1, 4)")


def test_corrupt_csr():
    g = small_graph()
    g.synapses["in->sq"].indptr = np.array([0, 1, 2, 3, 9])
    _one(g, "synapse in->sq", "CSR")


def test_source_index_out_of_range():
    g = small_graph()
    g.synapses["in->sq"].indices = np.array([0, 1, 2, 7], dtype=np.int32)
    _one(g, "synapse in->sq", "source index out of range")


def test_weight_beyond_8_bits():
    g = small_graph()
    g.synapses["in->sq"].values = np.array([1, 1, 1, 200], dtype=np.int64)
    _one(g, "synapse in->sq", "8-bit")


def test_unknown_op():
    g = small_graph()
    g.groups["sq"].program = [I("cube", "y", "x")]
    _one(g, "group sq", "unknown op 'cube'")


def test_wrong_argument_count():
    g = small_graph()
    g.groups["sq"].program = [I("square", "y", "x", "x")]
    _one(g, "group sq", "takes 1 argument", "got 2")


def test_missing_immediate():
    g = small_graph()
    g.groups["sum"].program = [I("rms_factor", "y", "x")]
    _one(g, "group sum", "missing immediate 'eps'")


def test_unknown_table():
    g = small_graph()
    g.groups["sq"].program = [I("lut", "y", "x", table="silu", in_bits=8)]
    _one(g, "group sq", "table 'silu' does not exist")


def test_undefined_argument():
    g = small_graph()
    g.groups["sq"].program = [I("square", "y", "ghost")]
    _one(g, "group sq", "argument 'ghost'")


def test_output_never_computed():
    g = small_graph()
    g.groups["sq"].output = "w"
    _one(g, "group sq", "output 'w' is never computed")


def test_bad_send_mode():
    g = small_graph()
    g.groups["sq"].send = "sometimes"
    _one(g, "group sq", "send mode 'sometimes'")


def test_message_wider_than_graded_spike():
    g = small_graph()
    g.groups["sum"].out_bits = 32
    _one(g, "group sum", "32 bits", "limit of 24")


def test_register_wider_than_neuron_state():
    g = small_graph()
    g.groups["sum"].registers["acc"] = 30
    _one(g, "group sum", "register 'acc' is 30 bits", "24")


def test_result_needs_more_than_24_bits():
    g = small_graph()
    g.groups["in"].out_bits = 16   # squares of 16-bit values need 32 bits
    g.host_tensors["emb"] = np.full((4, 4), 30000, dtype=np.int64)
    _one(g, "group sq", "square", "above 24")


def test_output_wider_than_declared_message():
    g = small_graph()
    g.host_tensors["emb"][0, 0] = -128      # the analysis bounds by values: squares of 8-bit values need 16 bits
    g.groups["sq"].out_bits = 12
    _one(g, "group sq", "output 'y' may need 16 bits", "12-bit")


def test_lut_domain():
    g = small_graph()
    g.host_tensors["emb"][0, 0] = 100       # input in [-8, 100]: outside a 4-bit table's [-8, 7]
    g.groups["sq"].tables["t"] = np.zeros(16, np.int64)
    g.groups["sq"].program = [I("lut", "y", "x", table="t", in_bits=4)]
    _one(g, "group sq", "lut", "4-bit domain")


def test_accumulator_overflow():
    g = small_graph()
    g.host_tensors["emb"][:, 0] = -128      # four squares of 2^14 overflow a 16-bit accumulator
    g.synapses["sq->sum"].acc_bits = 16
    _one(g, "synapse sq->sum", "overflows the 16-bit accumulator")


def test_delay_mismatch():
    g = small_graph()
    g.groups["sum"].stage = 5
    _one(g, "synapse sq->sum", "delay 0", "need 3")


def test_delay_limit():
    g = small_graph()
    g.groups["sum"].stage = 100
    g.synapses["sq->sum"].delay = 98
    _one(g, "synapse sq->sum", "exceeds the limit of 62")


def test_delta_needs_zero_weight_exp():
    g = small_graph()
    g.groups["sq"].send = "delta"
    g.synapses["sq->sum"].weight_exp = -2
    _one(g, "synapse sq->sum", "weight_exp 0")


def test_input_table_shape():
    g = small_graph()
    g.host_tensors["emb"] = np.zeros((4, 3), np.int64)
    _one(g, "input tokens", "shape (4, 3)")


def test_missing_state_register():
    g = small_graph()
    g.state["h"] = ("sum", "h")
    _one(g, "state h", "register 'h'")


def test_all_problems_reported_at_once():
    g = small_graph()
    g.groups["sq"].ports.append("extra")
    g.groups["sum"].out_bits = 40
    g.synapses["in->sq"].indices = np.array([0, 1, 2, 9], dtype=np.int32)
    with pytest.raises(IRValidationError) as e:
        validate(g)
    msg = str(e.value)
    assert "dangling" in msg and "40 bits" in msg and "source index" in msg
    assert len(e.value.problems) >= 3


# ---- the interval arithmetic itself, against brute force ---------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 12), cols=st.integers(1, 12),
       lo=st.integers(-300, 0), span=st.integers(0, 600), exp=st.integers(-3, 0))
def test_port_range_and_accumulator_peak_equal_brute_force(seed, rows, cols, lo, span, exp):
    """Row sums by prefix sums (SynapseGroup.row_sums) and the positive/negative split give exactly what
    enumerating every row's extreme inputs on the dense matrix gives."""
    from mflc.ir import fixedpoint as fp
    from mflc.ir.validate import _accumulator_range, _port_range

    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, (rows, cols)) * (rng.random((rows, cols)) < 0.6)
    s = SynapseGroup.from_dense("a->b.x", "a", "b", "x", w, weight_exp=exp)
    per = rng.integers(-50, 50, s.nnz)
    want = np.zeros(rows, np.int64)
    np.add.at(want, np.repeat(np.arange(rows), s.row_counts()), per)
    assert np.array_equal(s.row_sums(per), want)

    hi = lo + span
    g = Graph()
    g.add_group(NeuronGroup("a", cols, [], [I("copy", "y", "y")], "y", 12, 0))
    g.add_group(NeuronGroup("b", rows, ["x"], [I("copy", "y", "x")], "y", 24, 1))
    g.add_synapse(s)
    top = np.where(w > 0, w * hi, w * lo).sum(axis=1)          # each row's largest sum over inputs in [lo, hi]
    bot = np.where(w > 0, w * lo, w * hi).sum(axis=1)
    got = _port_range(g, "b", "x", {"a": (lo, hi)})
    assert got == (int(fp.shr_floor(int(bot.min()), -exp)), int(fp.shr_floor(int(top.max()), -exp)))
    assert _accumulator_range(g, s, {"a": (lo, hi)}) == int(np.abs(w).sum(axis=1).max()) * max(-lo, hi)


def test_row_sums_with_empty_rows_everywhere():
    w = np.array([[0, 0], [1, -1], [0, 0], [0, 1], [0, 0]])
    s = SynapseGroup.from_dense("a->b.x", "a", "b", "x", w)
    assert s.row_sums(np.array([5, 7, 11], np.int64)).tolist() == [0, 12, 0, 11, 0]
    assert SynapseGroup.from_dense("e", "a", "b", "x", np.zeros((3, 2))).row_sums(np.zeros(0, np.int64)).tolist() == [0] * 3


# ---- the range analysis on real builds: proofs of domains, mutations, soundness ------------------------------
import copy  # noqa: E402

from hypothesis import HealthCheck  # noqa: E402

from mflc.compiler.lower import lower  # noqa: E402
from mflc.ir.ops import OPS  # noqa: E402
from mflc.ir.validate import output_ranges  # noqa: E402

from util import quantized_models  # noqa: E402


def _norm_square_group(g) -> str:
    return next(n for n, grp in g.groups.items()
                if [i.op for i in grp.program] == ["square"] and n.endswith(".sq") and "norm" in n)


def test_square_replaced_by_copy_in_a_norm_is_a_problem(tiny_qm):
    """square -> copy in an RMSNorm square group: the sum of the copies can be negative, outside
    rms_factor's domain; the problem names the reduction and the mutated group and instruction."""
    g = lower(tiny_qm)
    name = _norm_square_group(g)
    grp = g.groups[name]
    ins = grp.program[0]
    grp.program[0] = Instr("copy", ins.out, ins.args, ins.imm)
    found = problems(g)
    hit = [p for p in found if f"{name}'s output (instruction 0, copy -> {ins.out})" in p]
    assert hit, found
    assert "rms_factor" in hit[0] and "outside rms_factor's domain" in hit[0] and "may span [-" in hit[0]
    with pytest.raises(IRValidationError):
        validate(g)


def test_copy_of_a_wide_port_needs_more_than_a_state_word():
    """Ranges are the values', not only the widths': 24-bit inputs square to 48 bits; four squares shifted
    to 22 bits sum to 2^24, which a copy cannot hold in a 24-bit state word."""
    g = small_graph()
    g.groups["in"].out_bits = 24
    g.host_tensors["emb"][0, 0] = -(1 << 23)
    g.groups["sq"].out_bits = 24
    _one(g, "group sq: instruction 0 (square -> y): result may span [0, 2^46], needs 48 bits, above 24")
    g.groups["sq"].program = [I("square_shr", "y", "x", shift=24)]
    g.groups["sum"].program = [I("copy", "s", "x"), I("rms_factor", "y", "x", eps=1)]
    _one(g, "group sum: instruction 0 (copy -> s): result may span [0, 2^24], needs 26 bits, above 24")


@pytest.mark.parametrize("op,args,imm,fragment", [
    ("rescale", ("x",), dict(mult=1, shift=0, bits=True), "immediate 'bits' is True (bool), must be an integer"),
    ("rescale", ("x",), dict(mult=1, shift=0.5, bits=8), "immediate 'shift' is 0.5 (float), must be an integer"),
    ("rescale", ("x",), dict(mult=1, shift=-3, bits=8), "immediate 'shift' = -3 outside 0..62"),
    ("rescale", ("x",), dict(mult=1 << 40, shift=0, bits=8), "immediate 'mult' = 2^40 outside 0..2^23-1"),
    ("add_sat", ("x", "x"), dict(bits=0), "immediate 'bits' = 0 outside 1..24"),
    ("add_sat", ("x", "x"), dict(bits=64), "immediate 'bits' = 64 outside 1..24"),
    ("rms_factor", ("x",), dict(eps=0), "immediate 'eps' = 0 outside 1.."),
    ("lut", ("x",), dict(table=3, in_bits=8), "immediate 'table' is 3 (int), must be a table name"),
    ("lut", ("x",), dict(table="t", in_bits=8), "table 't' has shape (16,), the 8-bit domain needs (256,)"),
    ("rms_factor", ("x",), dict(eps=1), "sum of squares 'x' may span [-8, 7], outside rms_factor's domain"),
    ("forget_gate", ("x", "x"), {}, "sigmoid 'x' may span [-8, 7], outside forget_gate's domain [0, 32768]"),
    ("mlgru_candidate", ("x", "x"), dict(bits=8), "gate 'x' may span [-8, 7], outside mlgru_candidate's domain"),
    ("square_shr", ("x",), dict(shift=2), None),
])
def test_immediates_and_domains(op, args, imm, fragment):
    g = small_graph()
    g.groups["sq"].tables["t"] = np.zeros(16, np.int64)
    g.groups["sq"].out_bits = 24
    g.groups["sq"].program = [I(op, "y", *args, **imm)]
    if fragment is None:
        assert problems(g) == []
    else:
        _one(g, "group sq: instruction 0", f"({op} -> y)", fragment)


def test_products_beyond_int64_are_problems():
    g = small_graph()
    g.groups["sq"].params["big"] = np.full(4, (1 << 23) - 1, np.int64)
    g.groups["sq"].out_bits = 24
    g.groups["sq"].program = [I("square", "s", "big"), I("mul_shr", "y", "s", "big", shift=62, bits=8)]
    _one(g, "group sq: instruction 0 (square -> s): result may span", "needs 47 bits, above 24")
    g.groups["sq"].program = [I("mul_shr", "p", "big", "big", shift=62, bits=24),
                              I("rescale", "q", "big", mult=(1 << 23) - 1, shift=62, bits=8), I("square", "y", "x")]
    assert problems(g) == []      # 2^46: fits int64
    g.groups["sq"].program = [I("rms_apply", "z", "big", "big", "big", gain_shift=-40, bits=8), I("square", "y", "x")]
    _one(g, "group sq: instruction 0 (rms_apply -> z)", "beyond int64")


def test_malformed_instructions_are_problems_not_crashes():
    g = small_graph()
    g.groups["sq"].program = [Instr("square", "y", ("x",), ((1, 2),)), Instr(["x"], "y", ("x",))]
    found = problems(g)
    assert any("instruction 0 is malformed" in p for p in found) and any("instruction 1 is malformed" in p for p in found)
    g = small_graph()
    g.groups["sq"].out_bits = None
    g.groups["sum"].registers["acc"] = 2.5
    g.synapses["in->sq"].weight_exp = 1000
    g.synapses["sq->sum"].acc_bits = 64
    found = problems(g)
    for f in ("message width None", "register 'acc' is 2.5 bits", "weight_exp 1000", "accumulator of 64 bits"):
        assert any(f in p for p in found), (f, found)


VALIDATE_SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@VALIDATE_SETTINGS
@given(quantized_models())
def test_correct_builds_validate_and_their_ranges_hold(case):
    """Lowered random models have no problems, and every group output a run produces lies in the interval
    the analysis proved for it."""
    from mflc.simulator.reference import ReferenceExecutor

    _, _, qm, tokens = case
    g = lower(qm, check=False)
    assert problems(g) == []
    bounds = output_ranges(g)
    seen = {}

    def trace(t, k, name, out):
        lo, hi = seen.get(name, (0, 0))
        seen[name] = min(lo, int(out.min())), max(hi, int(out.max()))

    ReferenceExecutor(g).run(tokens, "sequential", trace=trace)
    for name, (lo, hi) in seen.items():
        blo, bhi = bounds[name]
        assert blo <= min(lo, 0) and max(hi, 0) <= bhi or (blo <= lo and hi <= bhi), (name, (lo, hi), bounds[name])


_EXTREMES = [0, 1, -1, 7, 8, 23, 24, 25, 46, 62, 63, 64, 1 << 23, 1 << 31, 1 << 46, (1 << 63) - 1, -(1 << 63),
             1 << 70, True, False, 2.5, "y", None]
_SAME_ARITY = {n: sorted(o for o, s in OPS.items() if s.n_args == n) for n in (1, 2, 3)}


@pytest.fixture(scope="module")
def tiny_graph(tiny_qm):
    return lower(tiny_qm)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_builds_are_rejected_or_run(tiny_graph, data):
    """One random instruction mutation (an opcode swapped for another of the same arity, or an immediate set
    to an extreme or ill-typed value): the validator never raises, and either reports a problem or both
    executors run it without OverflowError/ValueError and agree bit for bit."""
    from mflc.simulator.engine import Engine
    from mflc.simulator.reference import ReferenceExecutor

    g = copy.deepcopy(tiny_graph)
    name = data.draw(st.sampled_from(sorted(n for n, grp in g.groups.items() if grp.program)))
    grp = g.groups[name]
    k = data.draw(st.integers(0, len(grp.program) - 1))
    ins = grp.program[k]
    imm = dict(ins.imm)
    if imm and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(imm)))
        imm[key] = data.draw(st.sampled_from(_EXTREMES))
        new = Instr(ins.op, ins.out, ins.args, tuple(sorted(imm.items())))
    else:
        op = data.draw(st.sampled_from(_SAME_ARITY[len(ins.args)]))
        new = Instr(op, ins.out, ins.args, ins.imm)
    grp.program[k] = new
    found = problems(g)
    if found:
        return
    tokens = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=4))
    ref = ReferenceExecutor(g).run(tokens, "sequential")
    eng = Engine(g).run(tokens, "sequential")
    assert np.array_equal(ref.outputs["logits"], eng.outputs["logits"])
