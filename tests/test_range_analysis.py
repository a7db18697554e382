"""One range analysis (ir/range_analysis.py) behind every proof that a value fits: the Lava back-end's int32
proof and the IR validator's accumulator check report the same interval for every synapse group, on the
shipped default model, on lowered random models and on random graphs; where Lava truly cannot hold what
the chip can, the export names the synapse, the proven range, the limit and the option that fits."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mflc
from mflc.compiler.model.lower import lower
from mflc.ir.graph import Graph, Instr, NeuronGroup, SynapseGroup
from mflc.ir.ops import fmt_range
from mflc.ir.range_analysis import analyse
from mflc.ir.validate import problems
from mflc.simulator import lava_backend as LB

from test_sequence import random_graphs
from util import quantized_models

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I = Instr.make
_WORST = re.compile(r"^synapse (.+): worst-case accumulation (\d+) into ")


def _validator_peaks(g: Graph) -> dict[str, int]:
    """The worst case the validator reports for each synapse group, read from its own messages: every
    accumulator set one bit too narrow for the analysis' peak, so that each one must complain."""
    keep = {n: s.acc_bits for n, s in g.synapses.items()}
    found = analyse(g)
    try:
        for n, s in g.synapses.items():
            s.acc_bits = max(1, found.synapses[n].peak.bit_length())      # smax of that width < peak
        said = {m.group(1): int(m.group(2)) for p in problems(g) for m in [_WORST.match(p)] if m}
        for n, s in g.synapses.items():
            s.acc_bits = found.synapses[n].peak.bit_length() + 1              # exactly wide enough
        assert not [p for p in problems(g) if "worst-case accumulation" in p]
    finally:
        for n, s in g.synapses.items():
            s.acc_bits = keep[n]
    return said


def _lava_and_validator_agree(g: Graph, encodings: dict) -> None:
    found = analyse(g)
    said = _validator_peaks(g)
    assert set(encodings) == set(g.synapses) == set(found.synapses)
    for n, e in encodings.items():
        rec = found.synapses[n]
        assert (tuple(e["carried"]), tuple(e["acc_range"]), e["peak"]) == (rec.carried, rec.acc, rec.peak), n
        assert e["acc_bound"] == rec.peak << e["weight_shift"], n
        if rec.peak:                                  # a zero peak fits any accumulator: nothing to report
            assert said[n] == rec.peak, n
        lo, hi = rec.acc
        assert -rec.peak <= lo <= hi <= rec.peak


def _encodings(g: Graph) -> dict:
    """Each synapse group encoded on its own (the back-end analyses the graph itself)."""
    from dataclasses import asdict
    return {n: asdict(LB.encode_synapse(g, s)) for n, s in g.synapses.items()}


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    return mflc.compile(out=tmp_path_factory.mktemp("default") / "b")


def test_default_model_lava_and_validator_report_the_same_intervals(default_build):
    for g in (default_build.graph, default_build.placed):
        plan = LB.plan_lava(g, [1])
        enc = {p["name"][4:]: p for p in plan["processes"] if p.get("kind") == "synapse"}
        _lava_and_validator_agree(g, enc)


def test_default_model_square_sums_fit_lava_at_the_proven_range(default_build):
    """The square sums that the declared 24-bit width made overflow (issue 24): the analysis proves squares
    of 12-bit inputs in [0, 2^22], and 384 of them fit int32 without a pre-scale."""
    g = default_build.graph
    s = g.synapses["L0.down_in.sq->L0.down_in.sum.x"]
    e = LB.encode_synapse(g, s)
    assert e.carried == (0, 1 << 22) and e.peak == 384 << 22 and e.acc_range == (0, 384 << 22)
    assert (e.sign_mode, e.num_weight_bits, e.weight_shift, e.lava_weight_exp) == ("EXCITATORY", 8, 0, 0)
    assert e.acc_bound == 384 << 22 <= 2**31 - 1 < e.acc_bound << 1      # the stored width's 2^7 would wrap


@SETTINGS
@given(random_graphs())
def test_random_graphs_lava_and_validator_report_the_same_intervals(case):
    g, _ = case
    _lava_and_validator_agree(g, _encodings(g))


@SETTINGS
@given(quantized_models())
def test_lowered_random_models_lava_and_validator_report_the_same_intervals(case):
    _, _, qm, _ = case
    g = lower(qm)
    _lava_and_validator_agree(g, _encodings(g))


# ---- where Lava truly cannot hold what the chip can -------------------------------------------------------
def _wide_mixed(bits: int = 24) -> Graph:
    """One mixed-sign synapse group of 255 weights from ``bits``-bit messages: at 24 bits its partial sums
    (255 · 2^23 = 2^31 - 2^23) fit the chip's 32-bit accumulator, but Lava's least MIXED pre-scale (2^1)
    would double them."""
    g = Graph()
    g.add_group(NeuronGroup("A", 255, [], [I("copy", "y", "h")], "y", bits, 0, registers={"h": bits}))
    g.add_group(NeuronGroup("B", 1, ["x"], [I("copy", "y", "x")], "y", 24, 1))
    w = np.ones((1, 255), np.int64)
    w[0, 0] = -1
    g.add_synapse(SynapseGroup.from_dense("A->B.x", "A", "B", "x", w))
    return g


def test_lava_refusal_names_the_synapse_the_proven_range_the_limit_and_the_option():
    g = _wide_mixed()
    rec = analyse(g).synapses["A->B.x"]
    assert rec.peak == 255 << 23 and rec.peak <= 2**31 - 1 < rec.peak << 1
    assert rec.acc == (-(255 << 23) + 1, (255 << 23) - 254)
    assert not [p for p in problems(g) if "accumulat" in p]              # the chip's 32 bits hold it
    with pytest.raises(LB.LavaExportError) as e:
        LB.encode_synapse(g, g.synapses["A->B.x"])
    msg = str(e.value)
    for part in ("synapse A->B.x (A -> B.x)", fmt_range(rec.acc), f"±{rec.peak}", f"±{rec.peak << 1}",
                 "2^31-1", "--hw accumulator_bits=31"):
        assert part in msg, (part, msg)
    # the option it names makes it fit: the validator then refuses sums beyond Lava's reach
    assert any("overflows the 31-bit accumulator" in p for p in problems(g, acc_bits=31))


def test_lava_refusal_of_a_needless_mixed_shift_says_to_leave_it_out():
    g = _wide_mixed(23)                                                  # 255 · 2^22 · 2^1 fits, · 2^3 not
    with pytest.raises(LB.LavaExportError, match="leave out --mixed-shift 3"):
        LB.encode_synapse(g, g.synapses["A->B.x"], mixed_shift=3)
    assert LB.encode_synapse(g, g.synapses["A->B.x"]).num_weight_bits == 8
