"""Ternary weights at 2 bits (ir/ternary.py) and the IR file format that stores them: exact round trips on
random shapes (odd widths, sizes not a multiple of 4, all-zero and all-±1 blocks), and every malformed
packed block named."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mflc.ir import ternary
from mflc.ir.errors import MflcError
from mflc.ir.graph import Graph, NeuronGroup, SynapseGroup, Instr
from mflc.ir.serialize import graphs_equal, load_graph, save_graph, synapse_encoding


@st.composite
def ternary_blocks(draw):
    rows, cols = draw(st.integers(0, 9)), draw(st.integers(0, 13))
    kind = draw(st.sampled_from(["random", "zeros", "plus", "minus", "sparse"]))
    if kind == "zeros":
        w = np.zeros((rows, cols), np.int8)
    elif kind in ("plus", "minus"):
        w = np.full((rows, cols), 1 if kind == "plus" else -1, np.int8)
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        p = [0.9, 0.05, 0.05] if kind == "sparse" else [1 / 3] * 3
        w = np.random.default_rng(seed).choice(np.array([0, 1, -1], np.int8), size=(rows, cols), p=p)
    return w


@settings(max_examples=60, deadline=None)
@given(ternary_blocks(), st.sampled_from([1, 3, 1 << 22]))
def test_pack_unpack_round_trip_is_exact(w, chunk):
    s = SynapseGroup.from_dense("s", "a", "b", "x", w)
    old = ternary.CHUNK_ELEMENTS
    ternary.CHUNK_ELEMENTS = chunk                  # row chunks of every size, down to one weight
    try:
        packed = ternary.pack_csr(s.shape, s.indptr, s.indices, s.values)
        assert packed.dtype == np.uint8 and packed.size == (w.size + 3) // 4
        indptr, indices, values = ternary.unpack_to_csr(packed, s.shape)
    finally:
        ternary.CHUNK_ELEMENTS = old
    assert np.array_equal(indptr, s.indptr) and np.array_equal(indices, s.indices)
    assert np.array_equal(values, s.values) and indices.dtype == np.int32 and values.dtype == np.int8


def test_codes_are_two_bit_twos_complement():
    w = np.array([[0, 1, -1, 0, 1]], np.int8)
    s = SynapseGroup.from_dense("s", "a", "b", "x", w)
    packed = ternary.pack_csr(s.shape, s.indptr, s.indices, s.values)
    assert packed.tolist() == [0b00_11_01_00, 0b01]


@pytest.mark.parametrize("data, why", [
    (np.array([0b10, 0], np.uint8), "code 0b10 at weight 0"),
    (np.array([0b01_00_00_00, 0b1000], np.uint8), "padding bits"),
    (np.array([0, 0, 0], np.uint8), "3 byte(s)"),
    (np.array([0, 0], np.int16), "expected 2 uint8"),
])
def test_malformed_packed_blocks_are_named(data, why):
    with pytest.raises(MflcError, match=why.replace("(", r"\(").replace(")", r"\)")):
        ternary.unpack_to_csr(data, (1, 5), "w.safetensors: array 'syn/s/ternary2'")


def _graph(w: np.ndarray) -> Graph:
    I = Instr.make
    g = Graph()
    g.add_group(NeuronGroup("a", w.shape[1], ["x"], [I("copy", "y", "x")], "y", 8, 0))
    g.add_group(NeuronGroup("b", w.shape[0], ["x"], [I("copy", "y", "x")], "y", 16, 1))
    g.add_synapse(SynapseGroup.from_dense("a->b", "a", "b", "x", w))
    return g


@settings(max_examples=30, deadline=None)
@given(ternary_blocks())
def test_ir_file_round_trip_keeps_every_integer(tmp_path_factory, w):
    d = tmp_path_factory.mktemp("ir")
    g = _graph(w)
    save_graph(g, d)
    assert graphs_equal(g, load_graph(d))


def test_dense_ternary_blocks_are_stored_at_two_bits_and_others_as_csr(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.choice(np.array([0, 1, -1], np.int8), size=(64, 48))
    assert synapse_encoding(SynapseGroup.from_dense("s", "a", "b", "x", dense)) == "ternary2"
    wide = dense.copy()
    wide[0, 0] = 5                                  # not ternary
    assert synapse_encoding(SynapseGroup.from_dense("s", "a", "b", "x", wide)) == "csr"
    sparse = np.zeros((64, 48), np.int8)
    sparse[3, 4] = 1                                # one synapse: CSR is smaller
    assert synapse_encoding(SynapseGroup.from_dense("s", "a", "b", "x", sparse)) == "csr"
    save_graph(_graph(dense), tmp_path / "g")
    from safetensors.numpy import load_file
    arrays = load_file(str(tmp_path / "g" / "graph.safetensors"))
    assert arrays["syn/a->b/ternary2"].nbytes == 64 * 48 // 4 and "syn/a->b/values" not in arrays


def test_version_1_ir_asks_for_a_recompile(tmp_path):
    import json

    save_graph(_graph(np.ones((2, 2), np.int8)), tmp_path / "g")
    head = json.loads((tmp_path / "g" / "graph.json").read_text())
    head["version"] = 1
    (tmp_path / "g" / "graph.json").write_text(json.dumps(head))
    with pytest.raises(MflcError, match="older mflc.*recompile"):
        load_graph(tmp_path / "g")


def test_a_graph_saved_against_a_base_stores_only_what_differs(tmp_path):
    """A build's placed IR refers to its unsplit IR for every synapse group and host table it did not
    change; opened without that base it says so, and the shared arrays are read-only."""
    import json

    rng = np.random.default_rng(1)
    base = _graph(rng.choice(np.array([0, 1, -1], np.int8), size=(8, 6)))
    base.host_tensors["emb"] = rng.integers(-128, 128, (5, 6))
    save_graph(base, tmp_path / "base")
    save_graph(base, tmp_path / "g", base=base)
    head = json.loads((tmp_path / "g" / "graph.json").read_text())
    assert [s["encoding"] for s in head["synapses"]] == ["base"] and head["host_tensors_in_base"] == ["emb"]
    with pytest.raises(MflcError, match="reference to the unsplit IR, but no base graph"):
        load_graph(tmp_path / "g")
    b = load_graph(tmp_path / "base")
    g = load_graph(tmp_path / "g", base=b)
    assert graphs_equal(g, base)
    with pytest.raises(ValueError):
        g.synapses["a->b"].codes[0] = 0             # editing one graph must not edit the other unseen
    g.synapses["a->b"].values[:] = 0                # an edit of the decoded weights stays in g
    assert not np.array_equal(g.synapses["a->b"].to_dense(), b.synapses["a->b"].to_dense())
    assert not g.synapses["a->b"].pos_neg_sums()[0].any() and b.synapses["a->b"].pos_neg_sums()[0].any()
    other = _graph(rng.choice(np.array([0, 1, -1], np.int8), size=(8, 6)))
    with pytest.raises(MflcError, match="no such synapse group|base graph has no"):
        load_graph(tmp_path / "g", base=_graph(np.ones((3, 2), np.int8)))
    save_graph(other, tmp_path / "o", base=base)    # different weights: stored, not referenced
    assert json.loads((tmp_path / "o" / "graph.json").read_text())["synapses"][0]["encoding"] == "ternary2"
