"""Ternary blocks at 2 bits (bit planes + popcount) give exactly the sums of the int8 kernel and of an
int64 matrix product: random shapes (odd widths, sizes not a multiple of 4, 5 or 64), all-zero and all-±1
blocks, every message width up to 32 bits including the extreme values; and the fast path with packed
weights equals the one with int8 weights and the integer model, token by token."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.lower import lower
from mflc.ir.graph import SynapseGroup
from mflc.ir.ternary import plane_words, planes_from_csr
from mflc.simulator import kernels as K
from mflc.simulator.fastpath import KIND_INT8, KIND_PLANES, PLANES_MIN_ROWS, FastEngine

from test_engine import random_core_map
from util import quantized_models
from mflc.ir.hardware import PROFILES as _PROFILES

IDEAL = _PROFILES["loihi2-ideal"]   # hand-computed figures assume ideal bit packing


@st.composite
def ternary_blocks(draw):
    """A (rows, cols) ternary matrix: random, all zero, all +1, all -1, or one non-zero."""
    rows, cols = draw(st.integers(1, 40)), draw(st.integers(1, 200))
    kind = draw(st.sampled_from(["random", "zero", "plus", "minus", "one"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        w = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    else:
        w = np.full((rows, cols), {"zero": 0, "plus": 1, "minus": -1, "one": 0}[kind], np.int8)
        if kind == "one":
            w[rng.integers(rows), rng.integers(cols)] = rng.choice([-1, 1])
    return w


def planes_of(x: np.ndarray, bits: int) -> np.ndarray:
    """The message's bit planes at the kernel's width (a multiple of 8 that holds ``bits``)."""
    width = 8 * -(-bits // 8)
    X = np.zeros((width, plane_words(x.size)), np.uint64)
    assert K.message_planes(x, x.size, width, X) == -1
    return X


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ternary_blocks(), st.integers(1, 32), st.integers(0, 2**32 - 1))
def test_bit_plane_sums_equal_the_integer_product(w, bits, seed):
    rng = np.random.default_rng(seed)
    rows, cols = w.shape
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = rng.integers(lo, hi + 1, cols, dtype=np.int64)
    x[rng.integers(cols)] = rng.choice([lo, hi])            # the extremes of the width occur
    s = SynapseGroup.from_dense("s", "a", "b", "in", w)
    plus, minus = planes_from_csr(s.shape, s.indptr, s.indices, s.values)
    want = w.astype(np.int64) @ x
    X, nch = planes_of(x, bits), -(-bits // 8)
    got = np.zeros(rows, np.int64)
    K.planes_rows(plus, minus, X, nch, got, 0, rows)
    assert np.array_equal(got, want)
    par = np.zeros(rows, np.int64)
    K.planes_rows_parallel(plus, minus, X, nch, par, 0, rows)
    assert np.array_equal(par, want)
    if bits <= 16:                                          # the int8 kernel's domain: the same sums
        acc = np.zeros(rows, np.int32)
        K.dense_rows16(w, x.astype(np.int16), acc, 0, rows)
        assert np.array_equal(acc.astype(np.int64), want)


@given(ternary_blocks())
def test_planes_hold_the_weights(w):
    s = SynapseGroup.from_dense("s", "a", "b", "in", w)
    plus, minus = planes_from_csr(s.shape, s.indptr, s.indices, s.values)
    assert plus.shape == minus.shape == (w.shape[0], plane_words(w.shape[1]))
    bits = lambda m: np.unpackbits(m.view(np.uint8), axis=1, bitorder="little")[:, :w.shape[1]].astype(np.int8)
    assert np.array_equal(bits(plus) - bits(minus), w)
    assert not np.any(bits(plus) & bits(minus))
    pad = lambda m: np.unpackbits(m.view(np.uint8), axis=1, bitorder="little")[:, w.shape[1]:]
    assert not pad(plus).any() and not pad(minus).any()     # bits past the last column stay zero


def test_a_message_too_wide_for_its_planes_is_named():
    X = np.zeros((8, 1), np.uint64)
    assert K.message_planes(np.array([5, 127, -128, 128]), 4, 8, X) == 3
    assert K.message_planes(np.array([-129]), 1, 8, X) == 0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_models(), st.integers(0, 2**16))
def test_packed_fast_path_equals_int8_and_the_integer_model(case, seed):
    cfg, _, qm, tokens = case
    g = lower(qm)
    cm = random_core_map(g, np.random.default_rng(seed))
    packed, int8 = FastEngine(g, cm, kernel="packed"), FastEngine(g, cm, kernel="int8")
    im, st_ = IntModel(qm), None
    st_ = im.init_state()
    for t in tokens:
        want, st_ = im.step(t, st_)
        assert np.array_equal(packed.step(t)["logits"], want)
        assert np.array_equal(int8.step(t)["logits"], want)
        for i in range(cfg.L):
            grp, reg = g.state[f"L{i}.h"]
            assert np.array_equal(packed.read(grp, reg), st_[i])


def test_packed_kernel_stores_ternary_blocks_as_planes(tiny_qm):
    g = lower(tiny_qm)
    packed, int8 = FastEngine(g, kernel="packed"), FastEngine(g, kernel="int8")
    int8_rows = packed.syn[packed.syn[:, 0] == KIND_INT8, 7]          # blocks too short to repay the planes
    assert (packed.syn[:, 0] == KIND_PLANES).any() and (int8_rows < PLANES_MIN_ROWS).all()
    assert (int8.syn[:, 0] == KIND_INT8).any() and not (int8.syn[:, 0] == KIND_PLANES).any()
    assert packed.weight_bytes() < int8.weight_bytes()


def test_unknown_kernel_is_refused(tiny_qm):
    with pytest.raises(ValueError, match="unknown fast-path kernel 'int4'"):
        FastEngine(lower(tiny_qm), kernel="int4")


def test_a_graph_whose_ranges_lie_is_caught_not_wrapped(tiny_qm):
    g = lower(tiny_qm)
    s = next(s for s in g.synapses.values() if FastEngine(g)._kind(s) == KIND_PLANES)
    grp = g.groups[s.src]
    wide = max(grp.ports, key=lambda p: p != "x")      # a port that receives wide sums (the rms factor)
    grp.output = wide                                    # now the group sends values its 8 bits cannot hold
    fe = FastEngine(g)
    with pytest.raises(ValueError, match=f"group {s.src}: a message does not fit the 8-bit planes"):
        for t in range(20):
            fe.step(t)


@given(ternary_blocks())
def test_figures_from_the_codes_equal_the_csr_figures(w):
    """nnz, row counts, value range and the validator's row bounds of a packed group, from its codes alone."""
    from mflc.ir.graph import PackedSynapseGroup
    from mflc.ir.ternary import pack_dense

    s = SynapseGroup.from_dense("s", "a", "b", "in", w)
    p = PackedSynapseGroup("s", "a", "b", "in", w.shape, pack_dense(w))
    got = (p.nnz, p.row_counts(), p.value_range(), p.pos_neg_sums(), p.row_offsets())
    assert not p.decoded
    want = (s.nnz, s.row_counts(), s.value_range(), s.pos_neg_sums(), s.indptr)
    assert np.array_equal(got[4], want[4])
    assert got[0] == want[0] and np.array_equal(got[1], want[1]) and got[2] == want[2]
    assert all(np.array_equal(a, b) for a, b in zip(got[3], want[3]))


def test_a_loaded_quantized_model_keeps_its_ternary_matrices_packed_until_read(tiny_qm, tmp_path):
    from mflc.compiler.model.quantize import LazyTernary, QuantizedModel

    tiny_qm.save(tmp_path / "q")
    qm = QuantizedModel.load(tmp_path / "q")
    names = [k for k in qm.tensors if isinstance(qm.tensors.stored(k), LazyTernary)]
    assert names and all(k.startswith("W.") for k in names)
    assert np.array_equal(qm.t(names[0]), tiny_qm.t(names[0]))          # decoded on first read, then kept
    assert not isinstance(qm.tensors.stored(names[0]), LazyTernary)
    qm.save(tmp_path / "q2")                                            # written back without decoding
    for f in ("quant.json", "quant.safetensors"):
        assert (tmp_path / "q" / f).read_bytes() == (tmp_path / "q2" / f).read_bytes()


def test_a_bad_code_in_a_quantized_model_is_named_on_loading(tiny_qm, tmp_path):
    from safetensors.numpy import load_file, save_file

    from mflc.compiler.model.quantize import QuantizedModel
    from mflc.ir.errors import MflcError

    tiny_qm.save(tmp_path / "q")
    f = tmp_path / "q" / "quant.safetensors"
    arrays = load_file(f)
    arrays["W.head"] = arrays["W.head"].copy()
    arrays["W.head"][3] = 0b00100000                 # weight 14 = code 0b10
    save_file(arrays, f)
    with pytest.raises(MflcError, match="tensor 'W.head': code 0b10 at weight 14"):
        QuantizedModel.load(tmp_path / "q")


def test_graph_difference_compares_packed_groups_by_their_codes(tiny_qm, tmp_path):
    from mflc.ir.graph import PackedSynapseGroup
    from mflc.ir.serialize import graph_difference, load_graph, save_graph

    g = lower(tiny_qm)
    save_graph(g, tmp_path / "ir")
    h = load_graph(tmp_path / "ir")
    assert graph_difference(g, h) is None and graph_difference(h, g) is None
    name = next(n for n, s in h.synapses.items() if isinstance(s, PackedSynapseGroup))
    s = g.synapses[name]
    s.values = s.values.copy()
    s.values[0] = -s.values[0]                           # one weight flipped in the in-memory graph
    assert graph_difference(g, h) == f"synapse {name}: weights differ (2-bit codes)"
    assert not h.synapses[name].decoded


@given(st.integers(1, 300), st.sampled_from([8, 16, 24, 32]), st.integers(0, 2**32 - 1))
def test_message_planes_are_the_twos_complement_bits(n, width, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(1 << (width - 1)), 1 << (width - 1), n, dtype=np.int64)
    X = np.full((width, plane_words(n)), 0xFFFF, np.uint64)          # stale contents are overwritten
    assert K.message_planes(x, n, width, X) == -1
    u = x & ((1 << width) - 1)
    for b in range(width):
        bits = np.zeros(64 * plane_words(n), np.uint8)
        bits[:n] = (u >> b) & 1
        assert np.array_equal(X[b], np.packbits(bits, bitorder="little").view("<u8")), b


def test_a_packed_group_is_written_in_the_encoding_its_csr_form_would_get(tmp_path):
    """The file's encoding depends on the weights, not on how they are held in memory: a sparse packed
    group is written as CSR, exactly the bytes of the CSR group."""
    from mflc.ir.graph import Graph, NeuronGroup, PackedSynapseGroup
    from mflc.ir.serialize import load_graph, save_graph
    from mflc.ir.ternary import pack_dense

    w = np.zeros((40, 64), np.int8)
    w[3, 5], w[7, 60] = 1, -1                             # 2 of 2,560 weights: CSR is smaller
    for name, syn in (("csr", SynapseGroup.from_dense("a->b", "a", "b", "x", w)),
                      ("packed", PackedSynapseGroup("a->b", "a", "b", "x", w.shape, pack_dense(w)))):
        g = Graph()
        for n, size in (("a", 64), ("b", 40)):
            g.add_group(NeuronGroup(n, size, ["x"], [], "x", 8, 0 if n == "a" else 1))
        g.add_synapse(syn)
        save_graph(g, tmp_path / name)
    for f in ("graph.json", "graph.safetensors"):
        assert (tmp_path / "csr" / f).read_bytes() == (tmp_path / "packed" / f).read_bytes()
    assert np.array_equal(load_graph(tmp_path / "packed").synapses["a->b"].to_dense(), w)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=quantized_models())
def test_lowering_a_loaded_model_shares_its_2_bit_codes(tmp_path_factory, case):
    """Lowering a quantized model read from disk makes its projections packed groups over the file's
    bytes (no int8 or CSR copy): the same graph as lowering the model in memory, the same engine integers."""
    from mflc.compiler.model.quantize import QuantizedModel
    from mflc.ir.graph import PackedSynapseGroup
    from mflc.ir.serialize import graph_difference

    cfg, _, qm, tokens = case
    d = tmp_path_factory.mktemp("q")
    qm.save(d)
    loaded = QuantizedModel.load(d)
    g_mem, g_file = lower(qm), lower(loaded)
    assert graph_difference(g_file, g_mem) is None and graph_difference(g_mem, g_file) is None
    packed = [s for s in g_file.synapses.values() if isinstance(s, PackedSynapseGroup)]
    assert packed and not any(s.decoded for s in packed)
    a, b = FastEngine(g_mem), FastEngine(g_file)
    for t in tokens[:4]:
        assert np.array_equal(a.step(t)["logits"], b.step(t)["logits"])


def test_fan_in_splits_of_a_loaded_model_equal_the_in_memory_ones(tmp_path):
    """Splitting and placing the packed groups of a loaded model under tight limits gives the graph and
    layout of the in-memory model; unsplit groups keep their codes; dataclasses.replace works on them."""
    from dataclasses import replace

    from mflc.compiler.chip.layout import check_layout
    from mflc.compiler.chip.place import layout_graph
    from mflc.compiler.model.config import ModelConfig
    from mflc.compiler.model.quantize import QuantizedModel, QuantOptions, quantize
    from mflc.ir.graph import PackedSynapseGroup
    from mflc.ir.hardware import HardwareProfile
    from mflc.ir.serialize import graph_difference
    from mflc.simulator.reference import ReferenceExecutor
    from util import random_weights

    cfg = ModelConfig.from_dict(dict(vocab_size=48, hidden_size=16, num_hidden_layers=2, intermediate_size=24))
    rng = np.random.default_rng(3)
    qm = quantize(cfg, random_weights(cfg, 3), [rng.integers(0, cfg.vocab_size, 24)], QuantOptions(min_site_bits={}))
    qm.save(tmp_path / "q")
    hw = replace(IDEAL, synaptic_memory_bits=600, max_axons_in=12, neurons_per_core=20, cores_per_chip=8)
    (g_mem, lay_mem), (g_file, lay_file) = (layout_graph(lower(q), hw) for q in (qm, QuantizedModel.load(tmp_path / "q")))
    assert g_file.meta["fan_in_splits"] and graph_difference(g_file, g_mem) is None
    assert lay_file.totals() == lay_mem.totals() and check_layout(lay_file, g_file, hw) == []
    s = next(s for s in lower(QuantizedModel.load(tmp_path / "q")).synapses.values()
             if isinstance(s, PackedSynapseGroup))
    kept = s.replaced(delay=s.delay + 1)                 # what split_fan_in does to a group it leaves whole
    assert isinstance(kept, PackedSynapseGroup) and kept.codes is s.codes and not (kept.decoded or s.decoded)
    r = replace(s, delay=s.delay + 1)                    # dataclasses.replace: a decoded copy, same weights
    assert r.delay == kept.delay == s.delay + 1 and np.array_equal(r.to_dense(), kept.to_dense())
    toks = rng.integers(0, cfg.vocab_size, 4).tolist()
    assert np.array_equal(ReferenceExecutor(g_file).run(toks).outputs["logits"],
                          ReferenceExecutor(g_mem).run(toks).outputs["logits"])
