"""Issue 15, item 2: each synapse group is stored at the narrowest weight width holding its values (Lava's
``num_weight_bits``: ternary 2 bits) instead of 8; ``--hw weight_bits=8`` is the paper's 8-bit layout, kept
for comparison; every report gives the lower bound of cores and the layout's ratio to it."""
import json
from dataclasses import replace

import numpy as np
import pytest

from mflc.compiler.chip import hardware as CH
from mflc.compiler.chip.layout import check_layout, layout_from_dict, layout_to_dict
from mflc.compiler.chip.place import layout_graph
from mflc.compiler.chip.report import build_report, core_lower_bound
from mflc.compiler.model.config import preset
from mflc.compiler.model.lower import lower
from mflc.compiler.model.skeleton import skeleton_graph
from mflc.ir import hardware as H
from mflc.ir.errors import ConfigError
from mflc.ir.graph import SynapseGroup

from util import cli_run

DEFAULT = H.PROFILES["loihi2-ideal"]          # these tests write out ideal bit packing by hand
PAPER = H.resolve_profile("loihi2-ideal", ["weight_bits=8"])          # what --hw weight_bits=8 gives


def _group(w) -> SynapseGroup:
    return SynapseGroup.from_dense("A->B.x", "A", "B", "x", np.asarray(w), meta={"kind": "ternary"})


def test_ternary_group_costs_two_bits_a_weight():
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, size=(6, 50))
    w[0, :2] = [-1, 1]
    s = _group(w)
    assert CH.weight_width(s, DEFAULT) == 2
    ib, ov = DEFAULT.sparse_index_bits, DEFAULT.row_overhead_bits
    dense = 50 * 2 + ov                                  # dense: 50 columns x 2 bits; sparse: nnz x (2 + 13)
    assert CH.synapse_format(s, DEFAULT) == "dense"
    assert CH.row_bits(s, DEFAULT).tolist() == [dense] * 6
    assert CH.row_bits(s, PAPER).tolist() == [50 * 8 + ov] * 6
    sparse = _group(np.eye(6, 50, dtype=np.int64) - np.eye(6, 50, k=3, dtype=np.int64))
    assert CH.row_bits(sparse, DEFAULT).tolist() == [2 * (2 + ib) + ov] * 6


def test_widths_follow_the_values_and_the_sign_mode():
    assert CH.weight_width(_group([[5, -5, 0], [1, 2, -3]]), DEFAULT) == 4      # [-5, 5]: signed 4 bits
    assert CH.weight_width(_group([[5, -4, 0]]), DEFAULT) == 4
    assert CH.weight_width(_group([[3, -4, 0]]), DEFAULT) == 3
    assert CH.weight_width(_group([[1, 1, 0]]), DEFAULT) == 1                   # one sign: the magnitude
    assert CH.weight_width(_group([[0, -5, 0]]), DEFAULT) == 3
    assert CH.weight_width(_group([[100, -100, 0]]), DEFAULT) == 8
    assert CH.weight_width(_group([[5, -5, 0]]), replace(DEFAULT, weight_bits=3)) == 3   # at most weight_bits
    assert [H.narrowest_weight_bits(lo, hi) for lo, hi in ((-1, 1), (-5, 5), (0, 0), (-128, 127), (0, 255))] == \
        [2, 4, 1, 8, 8]


def test_weight_bits_given_alone_is_the_width_stored():
    assert DEFAULT.narrow_weights == 1 and DEFAULT.weight_bits == 8
    assert PAPER.weight_bits == 8 and PAPER.narrow_weights == 0
    assert "weight_bits" in PAPER.figure("narrow_weights")["source"]
    s = _group([[1, -1, 0]])
    assert CH.weight_width(s, PAPER) == 8 and CH.weight_width(s, replace(DEFAULT, narrow_weights=0)) == 8
    both = H.resolve_profile(None, ["weight_bits=4", "narrow_weights=1"])
    assert both.narrow_weights == 1 and CH.weight_width(_group([[100, -1]]), both) == 4
    assert CH.weight_width(s, both) == 2
    with pytest.raises(ConfigError, match="'narrow_weights' must be an integer from 0 to 1"):
        H.resolve_profile(None, ["narrow_weights=2"])
    # a layout file writes both figures: each keeps its own setting; an older one (no narrow_weights) was 8-bit
    assert H.HardwareProfile.from_dict(DEFAULT.to_dict()).narrow_weights == 1
    assert H.HardwareProfile.from_dict(PAPER.to_dict()).narrow_weights == 0
    old = {k: v for k, v in DEFAULT.to_dict().items() if k != "narrow_weights"}
    assert H.HardwareProfile.from_dict(old).narrow_weights == 0


def test_skeleton_groups_get_the_real_models_widths(tiny_qm):
    real = lower(tiny_qm)
    skel = skeleton_graph(preset("tiny"))
    assert set(real.synapses) == set(skel.synapses)
    for name, s in real.synapses.items():
        assert skel.synapses[name].virtual == (s.meta.get("kind") == "ternary")
        assert CH.weight_width(skel.synapses[name], DEFAULT) == CH.weight_width(s, DEFAULT), name
    assert {CH.weight_width(s, DEFAULT) for s in real.synapses.values() if s.meta.get("kind") == "ternary"} == {2}
    # the virtual identity synapses a fan-in split adds to a skeleton cost as the real ones (weight 1: 1 bit)
    stub = SynapseGroup.from_row_counts("p->B.x", "p", "B", "x", (4, 4), np.ones(4, np.int64), meta={"kind": "identity"})
    assert CH.weight_width(stub, DEFAULT) == 1 == CH.weight_width(SynapseGroup.identity("i", "p", "B", "x", 4), DEFAULT)
    unknown = SynapseGroup.from_row_counts("u", "p", "B", "x", (4, 4), np.ones(4, np.int64))
    assert CH.weight_width(unknown, DEFAULT) == 8                    # no values, no kind: the widest
    ranged = SynapseGroup.from_row_counts("r", "p", "B", "x", (4, 4), np.ones(4, np.int64),
                                          meta={"weight_range": [-5, 5]})
    assert CH.weight_width(ranged, DEFAULT) == 4


def test_paper_profile_reproduces_the_8_bit_synaptic_memory(tiny_qm):
    g = lower(tiny_qm)
    for hw in (PAPER, replace(DEFAULT, narrow_weights=0)):
        c = CH.Costs(g, hw)
        assert set(c.width.values()) == {8}
        for s in g.synapses.values():                       # the cost before narrow widths, written out
            n_dst, n_src = s.shape
            dense = n_dst * n_src * 8 <= s.nnz * (8 + hw.sparse_index_bits)
            want = (n_dst * (n_src * 8 + hw.row_overhead_bits) if dense
                    else s.nnz * (8 + hw.sparse_index_bits) + n_dst * hw.row_overhead_bits)
            assert CH.slice_bits(s, 0, n_dst, hw) == want


def test_layouts_at_both_widths_pass_the_checker_and_round_trip(tiny_qm):
    g = lower(tiny_qm)
    used = {}
    for hw in (DEFAULT, PAPER):
        placed, lay = layout_graph(g, hw)
        assert check_layout(lay, placed, hw) == []
        again = layout_from_dict(json.loads(json.dumps(layout_to_dict(lay))))
        assert again.hardware.narrow_weights == hw.narrow_weights
        assert check_layout(again, placed, again.hardware) == []
        rep = build_report(placed, lay, hw)
        lb = rep["lower_bound"]
        assert lb == dict(core_lower_bound(placed, hw), ratio=len(lay.cores) / lb["cores"])
        assert 1 <= lb["cores"] <= len(lay.cores) and lb["ratio"] >= 1
        used[hw.narrow_weights] = rep["utilization"]["synapse_bits"]["used"]
    assert used[1] < used[0]
    # an 8-bit layout checked as if narrow: every stored synaptic usage now differs
    placed, lay = layout_graph(g, PAPER)
    assert check_layout(lay, placed, DEFAULT)


def _estimate(preset_name: str, *hw: str) -> dict:
    args = ["estimate", "--preset", preset_name, "--json", "--profile", "loihi2-ideal", "--no-range"]
    for h in hw:
        args += ["--hw", h]
    return json.loads(cli_run(*args).stdout)


@pytest.mark.parametrize("name", ["tiny", "370M"])
def test_estimate_narrow_needs_no_more_cores_than_8_bit(name):
    narrow, paper = _estimate(name), _estimate(name, "weight_bits=8")
    assert narrow["cores"] <= paper["cores"]
    assert narrow["utilization"]["synapse_bits"]["used"] < paper["utilization"]["synapse_bits"]["used"]
    assert set(paper["weight_bits"]) == {"8"}
    assert narrow["weight_bits"]["2"] > 0 and set(narrow["weight_bits"]) <= {"1", "2"}
    for r in (narrow, paper):
        lb = r["lower_bound"]
        assert lb["cores"] <= r["cores"] and lb["ratio"] == pytest.approx(r["cores"] / lb["cores"])
        assert lb["kind"] in lb["by_kind"] and lb["cores"] == max(v["cores"] for v in lb["by_kind"].values())
    if name == "370M":                                       # docs/layout.md: 763 cores (6 chips) vs 2,805 (22)
        assert narrow["chips"] <= 8 < paper["chips"]
        assert narrow["lower_bound"]["kind"] == paper["lower_bound"]["kind"] == "synapse_bits"


def test_lava_runs_each_group_at_its_stored_width(tiny_qm):
    from mflc.simulator import lava_backend as LB

    g = lower(tiny_qm)
    limit = 2**31 - 1
    for s in g.synapses.values():
        e = LB.encode_synapse(g, s)
        want = CH.weight_width(s, DEFAULT)
        assert e.num_weight_bits >= want and e.weight_shift == 8 - e.num_weight_bits + (e.sign_mode == "MIXED")
        if e.num_weight_bits > want:                         # widened only where int32 could not take the scale
            narrower = e.acc_bound << 1
            assert narrower > limit, s.name
        w = e.lava_weights(s)
        assert np.all(w % (1 << e.weight_shift) == 0) and np.array_equal(w >> e.weight_shift, s.to_dense())
