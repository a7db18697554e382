"""compiler.partition_check: the placed graph of a real layout is exactly a partition of the lowered graph
(tiny model, random models under random tight limits, skeleton graphs, through files), and every kind of
damage to it is named."""
import copy
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mflc.compiler.model.config import ModelConfig, preset

from mflc.compiler.chip.hardware import HardwareProfile
from mflc.compiler.model.lower import lower
from mflc.compiler.chip.partition_check import check_partition
from mflc.compiler.chip.place import layout_graph
from mflc.compiler.model.quantize import QuantOptions, quantize
from mflc.compiler.model.skeleton import skeleton_graph
from mflc.ir.errors import FitError
from mflc.ir.graph import Instr, NeuronGroup, SynapseGroup
from mflc.ir.serialize import load_graph, save_graph

from util import model_configs, random_weights
from mflc.ir.hardware import PROFILES as _PROFILES

IDEAL = _PROFILES["loihi2-ideal"]   # hand-computed figures assume ideal bit packing

# tight enough that the tiny model's 64-wide fan-ins (down projections) are split into partial sums
TIGHT = replace(IDEAL, synaptic_memory_bits=1500, max_axons_in=64, neurons_per_core=64, cores_per_chip=16)
SMALL = ModelConfig.from_dict(dict(vocab_size=48, hidden_size=16, num_hidden_layers=2, intermediate_size=24))


@pytest.fixture(scope="module")
def split(tiny_qm):
    g = lower(tiny_qm)
    g2, _ = layout_graph(g, TIGHT)
    assert g2.meta["fan_in_splits"], "TIGHT was meant to force fan-in splits"
    return g, g2


@pytest.fixture(scope="module")
def many_splits():
    """SMALL at 8-bit sites under limits that split the norm reductions too (K up to 3)."""
    rng = np.random.default_rng(3)
    qm = quantize(SMALL, random_weights(SMALL, 3), [rng.integers(0, SMALL.vocab_size, 24)],
                  QuantOptions(min_site_bits={}))
    g = lower(qm)
    hw = replace(IDEAL, synaptic_memory_bits=400, max_axons_in=8, neurons_per_core=8, cores_per_chip=4)
    g2, _ = layout_graph(g, hw)
    assert len(g2.meta["fan_in_splits"]) > 4
    return g, g2


def parts_of(g2, k_min=2):
    """(synapse, [part names]) of the first split with at least k_min parts."""
    for e in g2.meta["fan_in_splits"]:
        if e["parts"] >= k_min:
            return e["synapse"], [f"{e['synapse']}#part{k}" for k in range(e["parts"])]
    raise AssertionError("no split with enough parts")


def piece(g2, part):
    (s,) = [s for s in g2.synapses.values() if s.dst == part]
    return s


def damaged(split, edit):
    g, g2 = split
    bad = copy.deepcopy(g2)                       # g2 shares arrays with g: never edit it in place
    edit(bad)
    probs = check_partition(g, bad)
    assert probs, "the damage went unnoticed"
    return "\n".join(probs)


# ---- real layouts are partitions ------------------------------------------------------------------------------
def test_tiny_model_split_layout_is_a_partition(split):
    g, g2 = split
    assert check_partition(g, g2) == []


def test_many_splits_layout_is_a_partition(many_splits):
    g, g2 = many_splits
    assert check_partition(g, g2) == []


def test_unsplit_graph_is_its_own_partition(split):
    g, _ = split
    assert check_partition(g, g) == []
    g2, _ = layout_graph(g, IDEAL)   # fits without splits: layout_graph returns the graph itself
    assert check_partition(g, g2) == []


def test_partition_through_build_files(split, tmp_path):
    g, g2 = split
    save_graph(g, tmp_path / "ir")
    save_graph(g2, tmp_path / "placed_ir")
    assert check_partition(load_graph(tmp_path / "ir"), load_graph(tmp_path / "placed_ir")) == []


def test_skeleton_split_is_a_partition():
    """Virtual synapses (row counts only) split by proportional row counts."""
    g = skeleton_graph(preset("tiny"))
    g2, _ = layout_graph(g, TIGHT)
    assert g2.meta["fan_in_splits"]
    assert check_partition(g, g2) == []
    syn, parts = parts_of(g2)
    bad = copy.deepcopy(g2)
    p = piece(bad, parts[0])
    p.indptr = p.indptr.copy()
    p.indptr[1:] += 1                             # one more weight in row 0
    assert "row 0 of the placed pieces holds" in "\n".join(check_partition(g, bad))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=model_configs(), seed=st.integers(0, 2**16), syn=st.integers(300, 3000), axons=st.integers(6, 40),
       neurons=st.integers(2, 64), cpc=st.integers(1, 16))
def test_random_models_under_random_limits_are_partitions(cfg, seed, syn, axons, neurons, cpc):
    rng = np.random.default_rng(seed)
    qm = quantize(cfg, random_weights(cfg, seed), [rng.integers(0, cfg.vocab_size, 16)],
                  QuantOptions(min_site_bits={}))
    g = lower(qm)
    hw = replace(IDEAL, synaptic_memory_bits=syn, max_axons_in=axons, neurons_per_core=neurons,
                 cores_per_chip=cpc)
    try:
        g2, _ = layout_graph(g, hw)
    except FitError:
        assume(False)
    assert check_partition(g, g2) == []


# ---- damage is named --------------------------------------------------------------------------------------------
def test_weight_flipped_in_a_piece(split):
    syn, parts = parts_of(split[1])
    p = piece(split[1], parts[1])
    i = int(np.flatnonzero(p.values != 0)[0])
    row = int(np.searchsorted(p.indptr, i, side="right")) - 1
    col, w = int(p.indices[i]), int(p.values[i])

    def edit(g):
        s = piece(g, parts[1])
        s.values[i] = -s.values[i]
    msg = damaged(split, edit)
    assert (f"synapse {syn}: row {row} of the placed pieces sums to different weights than the unsplit IR "
            f"(column {col}: {-w} in the pieces vs {w} unsplit)") in msg


def test_piece_column_block_shifted(split):
    """The part's stated block moved one column on: a gap before it, an overlap after, and its weights outside."""
    syn, parts = parts_of(split[1])

    def edit(g):
        for obj in (g.groups[parts[0]], piece(g, parts[0])):
            c = obj.meta["columns"]
            obj.meta["columns"] = [c[0] + 1, c[1] + 1]
    msg = damaged(split, edit)
    assert f"synapse {syn}: the pieces' column blocks span [1," in msg
    assert f"synapse {syn}: piece 0's column block ends at" in msg and "(overlap)" in msg
    assert f"(piece 0 of {syn}):" in msg and "weights outside its column block [1," in msg


def test_piece_weights_shifted_one_column(split):
    syn, parts = parts_of(split[1])

    def edit(g):
        s = piece(g, parts[0])
        s.indices = s.indices + 1
    msg = damaged(split, edit)
    assert "weights outside its column block" in msg
    assert f"synapse {syn}: row" in msg and "sums to different weights than the unsplit IR" in msg


def test_piece_dropped(split):
    syn, parts = parts_of(split[1])

    def drop(g, part):
        del g.groups[part]
        for n in [n for n, s in g.synapses.items() if part in (s.src, s.dst)]:
            del g.synapses[n]

    msg = damaged(split, lambda g: drop(g, parts[-1]))
    assert f"synapse {syn}: the pieces' column blocks span" in msg
    assert f"synapse {syn}: row" in msg and "sums to different weights" in msg
    assert f"graph meta fan_in_splits entry of {syn}" in msg
    msg = damaged(split, lambda g: drop(g, parts[0]))
    assert f"synapse {syn}: partial-sum groups {parts[0]} are missing" in msg


def test_group_param_changed(split):
    name = next(n for n, x in split[0].groups.items() if "gain" in x.params)

    def edit(g):
        g.groups[name].params["gain"][3] += 1
    assert f"group {name}: param gain differs (first at entry 3:" in damaged(split, edit)


def test_program_instruction_changed(split):
    name = next(n for n, x in split[0].groups.items() if len(x.program) > 1)
    old = split[0].groups[name].program[1]

    def edit(g):
        g.groups[name].program[1] = Instr(old.op, old.out + "_x", old.args, old.imm)
    assert f"group {name}: program instruction 1 differs" in damaged(split, edit)


def test_extra_group_added(split):
    def edit(g):
        g.add_group(NeuronGroup("spare", 4, [], [Instr.make("copy", "y", "y")], "y", 8, 0))
    assert "group spare: in the placed graph but not in the unsplit IR" in damaged(split, edit)


def test_host_tensor_changed(split):
    def edit(g):
        g.host_tensors["embedding"] = g.host_tensors["embedding"].copy()
        g.host_tensors["embedding"][2, 5] += 1
    assert "host tensor embedding differs" in damaged(split, edit)


def test_state_entry_renamed(split):
    def edit(g):
        g.state["L0.hidden"] = g.state.pop("L0.h")
    msg = damaged(split, edit)
    assert "state L0.h: " in msg and "missing from the placed graph" in msg
    assert "state L0.hidden: " in msg and "not in the unsplit IR" in msg


def test_stage_delay_and_out_bits_damage(split):
    syn, parts = parts_of(split[1])
    dst = split[1].synapses[f"{parts[0]}->{split[0].synapses[syn].dst}.{split[0].synapses[syn].port}"].dst

    def stage(g):
        g.groups[dst].stage += 1
    msg = damaged(split, stage)
    assert f"group {dst}: stage" in msg and f"synapse {parts[0]}->{dst}" in msg and "delay" in msg

    def bits(g):
        g.groups[parts[1]].out_bits += 1
    assert f"group {parts[1]}: out_bits" in damaged(split, bits)

    def ident(g):
        s = next(s for s in g.synapses.values() if s.src == parts[0])
        s.values = s.values.copy()
        s.values[0] = 2
    assert "an identity synapse holds weight 1" in damaged(split, ident)


def test_kept_synapse_and_extra_synapse_damage(split):
    name = next(n for n, s in split[1].synapses.items() if n in split[0].synapses and s.nnz > 10)

    def edit(g):
        s = g.synapses[name]
        s.values[7] = 3 if s.values[7] != 3 else 2
        g.add_synapse(SynapseGroup.identity("extra", s.src, s.src, "x", 1))
    msg = damaged(split, edit)
    assert f"synapse {name}: values differ from the unsplit IR (first at row" in msg
    assert "synapse extra (" in msg and "in the placed graph but not in the unsplit IR" in msg


def test_malformed_inputs_never_raise(split):
    g, g2 = split
    syn, parts = parts_of(g2)
    assert check_partition(g, None) and check_partition(None, g2)
    bad = copy.deepcopy(g2)
    piece(bad, parts[0]).indptr = None
    bad.synapses[next(iter(bad.synapses))].src = "nowhere"
    del bad.groups["head"]
    msg = "\n".join(check_partition(g, bad))
    assert "group head: missing from the placed graph" in msg and "nowhere" in msg and parts[0] in msg
    worse = copy.deepcopy(g2)
    worse.groups["embed"].params = None
    worse.synapses[syn + "x"] = object()
    assert check_partition(g, worse)
