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
    g.host_tensors["emb"][0, 0], g.host_tensors["emb"][3, 3] = -128, 127   # the whole 8-bit range
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
    g.groups["sq"].out_bits = 12
    _one(g, "group sq", "output 'y' may need 16 bits", "12-bit")


def test_lut_domain():
    g = small_graph()
    g.groups["sq"].tables["t"] = np.zeros(16, np.int64)
    g.groups["sq"].program = [I("lut", "y", "x", table="t", in_bits=4)]
    _one(g, "group sq", "lut", "4-bit domain")


def test_accumulator_overflow():
    g = small_graph()
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
    from mflc.ir.range_analysis import accumulation, partial_peak, shifted, synapse_range

    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, (rows, cols)) * (rng.random((rows, cols)) < 0.6)
    s = SynapseGroup.from_dense("a->b.x", "a", "b", "x", w, weight_exp=exp)
    per = rng.integers(-50, 50, s.nnz)
    want = np.zeros(rows, np.int64)
    np.add.at(want, np.repeat(np.arange(rows), s.row_counts()), per)
    assert np.array_equal(s.row_sums(per), want)

    hi = lo + span
    top = np.where(w > 0, w * hi, w * lo).sum(axis=1)          # each row's largest sum over inputs in [lo, hi]
    bot = np.where(w > 0, w * lo, w * hi).sum(axis=1)
    rec = synapse_range(s, (lo, hi), (lo, hi))
    assert rec.acc == accumulation(*s.pos_neg_sums(), (lo, hi)) == (int(bot.min()), int(top.max()))
    assert rec.port == shifted(rec.acc, exp) == (int(fp.shr_floor(int(bot.min()), -exp)),
                                                  int(fp.shr_floor(int(top.max()), -exp)))
    assert rec.peak == partial_peak(int(np.abs(w).sum(axis=1).max()), (lo, hi)) \
        == int(np.abs(w).sum(axis=1).max()) * max(-lo, hi)


def test_row_sums_with_empty_rows_everywhere():
    w = np.array([[0, 0], [1, -1], [0, 0], [0, 1], [0, 0]])
    s = SynapseGroup.from_dense("a->b.x", "a", "b", "x", w)
    assert s.row_sums(np.array([5, 7, 11], np.int64)).tolist() == [0, 12, 0, 11, 0]
    assert SynapseGroup.from_dense("e", "a", "b", "x", np.zeros((3, 2))).row_sums(np.zeros(0, np.int64)).tolist() == [0] * 3


def test_op_domain_is_checked_before_anything_runs():
    """square -> copy makes the sum of 'squares' possibly negative: outside rms_factor's domain [0, 2^46)."""
    g = small_graph()
    g.groups["sq"].program = [I("copy", "y", "x")]
    _one(g, "group sum", "instruction 0 (rms_factor -> y)", "sum of squares 'x' may span [-512, 508]",
         "outside rms_factor's domain")


def test_immediate_outside_its_domain():
    g = small_graph()
    g.groups["sum"].program = [I("rms_factor", "y", "x", eps=0)]
    _one(g, "group sum", "immediate 'eps' = 0 outside 1..")


def test_messages_are_bounded_by_what_the_sender_computes():
    """A receiver sees its sender's computed bound, not just its declared width: squares of 8-bit inputs
    lie in [0, 2^14], so four of them need an 18-bit accumulator (17 bits overflow at 4·2^14), where the
    declared 16-bit messages alone (down to -2^15) would demand 19."""
    g = small_graph()
    g.synapses["sq->sum"].acc_bits = 17
    _one(g, "synapse sq->sum", "worst-case accumulation 65536", "17-bit accumulator")
    g.synapses["sq->sum"].acc_bits = 18
    assert problems(g) == []


def test_delta_messages_need_one_bit_more():
    """A delta sender sends changes: 24-bit values may change by 2^24 - 1, beyond a 24-bit graded spike."""
    g = small_graph()
    g.groups["in"].send, g.groups["in"].out_bits = "delta", 24
    g.host_tensors["emb"][0, 0], g.host_tensors["emb"][3, 3] = -(1 << 23), (1 << 23) - 1
    _one(g, "group in", "delta messages", "may need 25 bits", "above the graded-spike limit of 24")
    g.host_tensors["emb"][0, 0], g.host_tensors["emb"][3, 3] = -(1 << 22), (1 << 22) - 1
    assert not [p for p in problems(g) if "delta messages" in p]
