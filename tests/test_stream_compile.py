"""The layer-by-layer compile writes the same build, byte for byte, as the whole-model
path (``mflc.compile(..., stream=False)``), on tiny, odd-shaped and deeper models, with every quantizer
option that changes what is made; where it cannot decide it falls back to that path and says why. Its
pieces (the streaming safetensors, IR and quantized-model writers, the layer-by-layer quantizer) are
checked against what they replace; its window validation is shown to catch a broken step."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import mflc
from mflc.compiler.model.checkpoint import open_checkpoint, save_checkpoint
from mflc.compiler.model.config import ModelConfig, preset
from mflc.compiler.model.quantize import QuantOptions, QuantStreamWriter, quantize
from mflc.compiler.model.stream import StreamingModel
from mflc.ir.errors import CheckpointError, IRValidationError, MflcError
from mflc.ir.streamfile import SafetensorsWriter

from util import model_configs, random_weights

DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32, np.uint32, np.float32,
          np.float64, np.int64, np.uint64]


def odd(d=24, m=40, V=37, L=3, **kw) -> ModelConfig:
    return ModelConfig.from_dict(dict(vocab_size=V, hidden_size=d, num_hidden_layers=L, intermediate_size=m, **kw))


def checkpoint(tmp_path: Path, cfg: ModelConfig, seed: int = 0, name: str = "model", **kw) -> Path:
    p = tmp_path / name
    save_checkpoint(p, cfg, random_weights(cfg, seed), **kw)
    return p


def build_files(d: Path) -> dict[str, bytes]:
    """Every file of a build, the manifest without its creation time."""
    out = {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}
    m = json.loads(out.pop("build.json"))
    m.pop("created")
    out["build.json"] = json.dumps(m, sort_keys=True).encode()
    return out


def both_ways(model: Path, tmp_path: Path, **kw):
    a = mflc.compile(model, tmp_path / "streamed", **kw)
    b = mflc.compile(model, tmp_path / "whole", stream=False, **kw)
    return a, b, build_files(tmp_path / "streamed"), build_files(tmp_path / "whole")


# ---- whole builds -----------------------------------------------------------------------------------------
CASES = {
    "tiny": (preset("tiny"), {}),
    "odd shapes, 3 layers": (odd(), {}),
    "5 layers, d 17": (odd(d=17, m=23, V=11, L=5), {}),
    "one layer, V 5": (odd(d=8, m=8, V=5, L=1), {}),
    "tied embeddings, expand 2": (odd(d=12, m=20, V=30, L=2, expand_ratio=2, use_lower_bound=False, tie_word_embeddings=True), {}),
    "mse scales": (odd(), dict(options=QuantOptions(scale_method="mse"))),
    "no inner norm, free scales": (odd(L=2), dict(options=QuantOptions(remove_inner_norm=True, pow2=False))),
    "12-bit sites, 8-bit weights": (odd(L=2), dict(options=QuantOptions(act_bits=12), hw={"weight_bits": 8})),
    "several calibration sequences": (odd(L=2), dict(calib_tokens=7)),
    "small cores, many chips": (odd(), dict(hw=["neurons_per_core=40", "cores_per_chip=3"])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_streamed_build_equals_whole_model_build(name, tmp_path):
    """Every file, byte for byte (the manifest but for its creation time), and the report's figures."""
    cfg, kw = CASES[name]
    a, b, fa, fb = both_ways(checkpoint(tmp_path, cfg), tmp_path, **kw)
    assert a.report["compile"]["mode"] == "layer by layer", a.report["compile"]
    assert b.report["compile"]["mode"] == "whole model"
    assert list(fa) == list(fb)
    for f in fa:
        assert fa[f] == fb[f], f"{name}: {f} differs"
    ra, rb = dict(a.report), dict(b.report)
    for r in (ra, rb):
        r.pop("compile"), r.pop("files"), r.pop("source")
    assert ra == rb


@pytest.mark.parametrize("name", ["odd shapes, 3 layers", "tied embeddings, expand 2", "mse scales"])
def test_small_blocks_change_nothing(name, tmp_path, monkeypatch):
    """Matrices ternarized, multiplied and read in blocks of a few rows (as the 2.7B's are in blocks of
    4 M weights): the same bytes."""
    from mflc.compiler.model import stream

    import mflc.stream_compile as sc

    monkeypatch.setattr(stream, "BLOCK_WEIGHTS", 50)
    monkeypatch.setattr(stream, "EMBED_ROWS", 3)
    monkeypatch.setattr(sc, "SPLIT_WEIGHTS", 40)          # the head validated in blocks of rows
    cfg, kw = CASES[name]
    a, _, fa, fb = both_ways(checkpoint(tmp_path, cfg), tmp_path, **kw)
    assert a.report["compile"]["mode"] == "layer by layer" and fa == fb


@settings(max_examples=8, deadline=None)
@given(cfg=model_configs(max_layers=3, max_hidden=20, max_vocab=40), seed=st.integers(0, 1000))
def test_streamed_build_equals_whole_property(cfg, seed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prop")
    a, _, fa, fb = both_ways(checkpoint(tmp, cfg, seed), tmp)
    assert fa == fb


def test_sharded_checkpoint_and_default_model(tmp_path):
    """Shards are read tensor by tensor too; the embedded default model (its calibration text, its tokenizer)."""
    a, _, fa, fb = both_ways(checkpoint(tmp_path, odd(), max_shard_bytes=20_000), tmp_path)
    assert a.report["compile"]["mode"] == "layer by layer" and fa == fb
    (tmp_path / "default").mkdir()
    a, _, fa, fb = both_ways(None, tmp_path / "default")
    assert a.report["compile"]["mode"] == "layer by layer" and fa == fb
    assert "the model's own" in json.loads(fa["quant/quant.json"])["meta"]["calibration"]


def test_streamed_build_verifies(tmp_path):
    """A streamed build passes every check of `mflc verify` and the bit-exact simulation."""
    b = mflc.compile(checkpoint(tmp_path, odd()), tmp_path / "b")
    assert mflc.Build.load(tmp_path / "b").verify(tokens=3).ok
    assert b.structure[0].synapses and all(s.indices is None for s in b.structure[0].synapses.values())


# ---- falling back ---------------------------------------------------------------------------------------------
def test_fan_in_split_falls_back_to_the_whole_model(tmp_path):
    """Limits that split fan-ins: the whole-model path decides, the report says why, the bytes are its."""
    hw = ["synaptic_memory_bits=600", "max_axons_in=10", "neurons_per_core=8", "cores_per_chip=4"]
    cfg = ModelConfig.from_dict(dict(vocab_size=48, hidden_size=16, num_hidden_layers=2, intermediate_size=24))
    a, _, fa, fb = both_ways(checkpoint(tmp_path, cfg), tmp_path, hw=hw, options=QuantOptions(min_site_bits={}))
    assert a.report["compile"]["mode"] == "whole model" and "fan-in" in a.report["compile"]["reason"]
    assert json.loads(fa["placed_ir/graph.json"])["meta"]["fan_in_splits"]
    assert fa == fb


def test_invalid_ir_gives_the_whole_model_paths_error(tmp_path):
    """A profile the IR breaks: the window check falls back, and the exact validator names the problems."""
    model = checkpoint(tmp_path, odd(L=2))
    errs = []
    for stream in (True, False):
        with pytest.raises(IRValidationError) as e:
            mflc.compile(model, tmp_path / f"b{stream}", hw=["max_msg_bits=10"], stream=stream)
        errs.append(str(e.value))
    assert errs[0] == errs[1] and "10" in errs[0]
    assert not any(p.name.startswith(".b") for p in tmp_path.iterdir())     # no temporary directory left


def test_head_validated_in_row_blocks_finds_what_the_whole_does(monkeypatch):
    """The head checked a few rows at a time: clean when the whole is clean, and a weight too wide in one
    block, or an output narrower than a block's sums, is found (named by the block)."""
    from dataclasses import replace

    import mflc.stream_compile as sc
    from mflc.compiler.chip.hardware import resolve_profile
    from mflc.ir.validate import problems

    monkeypatch.setattr(sc, "SPLIT_WEIGHTS", 30)
    cfg = odd(L=1)
    sm = StreamingModel(cfg, random_weights(cfg, 0), [np.arange(20) % cfg.vocab_size])
    limits = resolve_profile(None, ["weight_bits=2"]).ir_limits()
    steps = list(sm.steps())
    head, g = steps[-1], sm.graph
    assert sc._row_block_sink(g, "head", [g.synapses[n] for n in head.synapses]) is not None
    assert sc.window_problems(g, head, limits) == [] and problems(g, **limits) == []
    name = next(n for n in head.synapses if g.synapses[n].dst == "head")
    s = g.synapses[name]
    v = s.values.copy()
    v[s.indptr[30]] = 2                                      # row 30: one weight outside 2 bits
    g.synapses[name] = replace(s, values=v)
    assert any("#rows" in p and "weight outside" in p for p in sc.window_problems(g, head, limits))
    g.synapses[name] = s
    g.groups["head"].out_bits = 3                            # every block's sums exceed 3 bits
    assert any(p.startswith("group head#rows") and "more than its 3-bit" in p for p in sc.window_problems(g, head, limits))


def test_window_check_catches_a_broken_step(tmp_path):
    """The window validation is not a formality: a step with a wrong delay, or a weight wider than the
    profile allows, is found and named."""
    from dataclasses import replace

    from mflc.compiler.chip.hardware import resolve_profile
    from mflc.stream_compile import window_problems

    cfg = odd(L=2)
    sm = StreamingModel(cfg, random_weights(cfg, 0), [np.arange(20) % cfg.vocab_size])
    limits = resolve_profile(None, ["weight_bits=2"]).ir_limits()      # ternary weights fit, ±2 does not
    for step in sm.steps():
        assert window_problems(sm.graph, step, limits) == []
        if step.name == "layer 1":
            name = next(n for n in step.synapses if sm.graph.synapses[n].meta.get("kind") == "ternary")
            s = sm.graph.synapses[name]
            sm.graph.synapses[name] = replace(s, delay=s.delay + 1, values=(s.values * 2).astype(np.int8))
            found = window_problems(sm.graph, step, limits)
            assert any(p.startswith(f"synapse {name}: delay") for p in found), found
            assert any(name in p and "weight" in p for p in found), found
            sm.graph.synapses[name] = s


# ---- the pieces -------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 9))
def test_safetensors_writer_equals_the_library(seed, n, tmp_path_factory):
    rng = np.random.default_rng(seed)
    arrays = {}
    for k in range(n):
        shape = tuple(int(x) for x in rng.integers(0, 5, rng.integers(1, 3)))
        name = rng.choice(["syn/L1.a->b.x", "group/L10.g/param/gain", "host/embedding", "W.L2.i", "é"]) + str(k)
        arrays[name] = np.asarray(rng.normal(0, 50, shape)).astype(DTYPES[rng.integers(len(DTYPES))])
    d = tmp_path_factory.mktemp("st")
    save_file(arrays, str(d / "lib.safetensors"))
    w = SafetensorsWriter(d / "ours.safetensors")
    for k in rng.permutation(list(arrays)) if arrays else []:
        w.add(str(k), arrays[str(k)])
    w.close()
    assert (d / "ours.safetensors").read_bytes() == (d / "lib.safetensors").read_bytes()
    assert sorted(p.name for p in d.iterdir()) == ["lib.safetensors", "ours.safetensors"]   # spill removed


def test_safetensors_writer_refuses_duplicates_and_aborts(tmp_path):
    w = SafetensorsWriter(tmp_path / "x.safetensors")
    w.add("a", np.zeros(3, np.int8))
    with pytest.raises(MflcError, match="'a' added twice"):
        w.add("a", np.zeros(3, np.int8))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_streaming_model_equals_quantize_and_lower():
    """Sites, scalars, float facts and every tensor of the layer-by-layer quantizer are quantize's."""
    from mflc.compiler.model.lower import lower
    from mflc.ir.serialize import graph_difference

    cfg = odd(L=4)
    w = random_weights(cfg, 5)
    seqs = [np.arange(30) % cfg.vocab_size, (np.arange(11) * 7) % cfg.vocab_size]
    qm = quantize(cfg, w, seqs)
    sm = StreamingModel(cfg, w, seqs)
    tensors = {k: v for step in sm.steps() for k, v in step.tensors.items()}
    assert (sm.sites, sm.scalars, sm.meta) == (qm.sites, qm.scalars, qm.meta)
    assert set(tensors) == set(qm.tensors)
    for k, (v, dtype) in tensors.items():
        assert dtype == str(qm.tensors[k].dtype) and np.array_equal(v, qm.tensors[k]), k
    assert graph_difference(lower(qm), sm.graph) is None


def test_quant_stream_writer_equals_save(tmp_path):
    cfg = odd()
    qm = quantize(cfg, random_weights(cfg, 2), [np.arange(25) % cfg.vocab_size])
    qm.save(tmp_path / "a")
    w = QuantStreamWriter(tmp_path / "b")
    for k, v in reversed(list(qm.tensors.items())):
        w.add(k, v, str(v.dtype))
    w.close(qm.cfg, qm.options, qm.sites, qm.scalars, qm.meta)
    for f in ("quant.json", "quant.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_open_checkpoint_reads_on_use_and_names_bad_tensors(tmp_path):
    """Shapes are checked on opening (nothing read); a non-finite value when its tensor is read."""
    cfg = odd(L=2)
    w = random_weights(cfg, 0)
    w["model.layers.1.mlp.down_proj.weight"][3, 4] = np.nan
    save_checkpoint_unchecked(tmp_path / "m", cfg, w)
    _, lazy = open_checkpoint(tmp_path / "m")
    assert np.array_equal(lazy["model.layers.0.attn.i_proj.weight"], w["model.layers.0.attn.i_proj.weight"])
    with pytest.raises(CheckpointError, match=r"down_proj.weight' has 1 non-finite value"):
        lazy["model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(CheckpointError, match="non-finite"):
        mflc.compile(tmp_path / "m", tmp_path / "b")
    assert not (tmp_path / "b").exists()
    w2 = random_weights(cfg, 0)
    w2["model.norm.weight"] = w2["model.norm.weight"][:5]
    save_checkpoint_unchecked(tmp_path / "m2", cfg, w2)
    with pytest.raises(CheckpointError, match=r"model.norm.weight' has shape \(5,\)"):
        open_checkpoint(tmp_path / "m2")


def save_checkpoint_unchecked(p: Path, cfg: ModelConfig, w: dict) -> None:
    """A checkpoint as a careless exporter writes it (save_checkpoint refuses bad tensors)."""
    from mflc.compiler.model.checkpoint import _write_safetensors

    p.mkdir(parents=True)
    cfg.save(p / "config.json")
    _write_safetensors(p / "model.safetensors", list(w), w)


def test_light_synapse_fails_loudly_when_its_weights_are_read():
    from mflc.compiler.model.lower import lower
    from mflc.stream_compile import light_synapse

    cfg = preset("tiny")
    g = lower(quantize(cfg, random_weights(cfg, 0), [np.arange(20)]))
    s = next(s for s in g.synapses.values() if s.meta.get("kind") == "ternary")
    t = light_synapse(s)
    assert np.array_equal(t.indptr, s.indptr) and t.nnz == s.nnz and not t.virtual
    assert (int(t.values.min()), int(t.values.max())) == (int(s.values.min()), int(s.values.max()))
    with pytest.raises((TypeError, ValueError)):
        t.to_dense()
    from mflc.ir.serialize import synapse_arrays
    with pytest.raises((TypeError, ValueError, AttributeError)):
        synapse_arrays(t, "ternary2")


def test_cli_compile_says_how(tmp_path):
    """`mflc compile` reports layer by layer; --whole-model takes the old path; the two builds are equal."""
    from typer.testing import CliRunner

    from mflc.cli import app

    model = checkpoint(tmp_path, odd(L=2))
    r = CliRunner().invoke(app, ["compile", str(model), "--out", str(tmp_path / "a"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layout"]["compile"]["mode"] == "layer by layer"
    r = CliRunner().invoke(app, ["compile", str(model), "--out", str(tmp_path / "b"), "--whole-model"])
    assert r.exit_code == 0, r.output and "quantizing" in r.output
    assert build_files(tmp_path / "a") == build_files(tmp_path / "b")
    assert struct.unpack("<Q", (tmp_path / "a/ir/graph.safetensors").read_bytes()[:8])[0] > 0


@pytest.mark.parametrize("case", ["missing tensor", "misshaped tensor", "too few chips", "no calibration file",
                                  "calibration tokens 0"])
def test_bad_input_gives_the_same_error_both_ways(case, tmp_path):
    """Bad checkpoints and options: the same error class and message from both paths, no build, no temporary."""
    cfg = preset("tiny")
    w = random_weights(cfg, 0)
    kw = {}
    if case == "missing tensor":
        del w["model.layers.1.attn.f_proj.weight"]
    elif case == "misshaped tensor":
        w["model.layers.0.mlp.gate_proj.weight"] = w["model.layers.0.mlp.gate_proj.weight"][:5]
    elif case == "too few chips":
        kw = dict(system="oheo_gulch", hw=["cores_per_chip=1"])
    elif case == "no calibration file":
        kw = dict(calib=tmp_path / "nope.txt")
    else:
        kw = dict(calib_tokens=0)
    save_checkpoint_unchecked(tmp_path / "m", cfg, w)
    errs = []
    for stream in (True, False):
        with pytest.raises(MflcError) as e:
            mflc.compile(tmp_path / "m", tmp_path / f"b{stream}", stream=stream, **kw)
        errs.append((type(e.value), str(e.value)))
        assert not (tmp_path / f"b{stream}").exists()
    assert errs[0] == errs[1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
