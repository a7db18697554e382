"""Checkpoint layout, init, safetensors round trips and one clear error per kind of bad input."""
from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from mflc.compiler.model.checkpoint import (INDEX_FILE, SINGLE_FILE, init_weights, load_checkpoint,
                                      save_checkpoint, tensor_shapes, validate_weights)
from mflc.compiler.model.config import ModelConfig, preset
from mflc.ir.errors import CheckpointError, ConfigError


# ---- helpers ---------------------------------------------------------------------------------

def tiny_weights(seed: int = 0) -> tuple[ModelConfig, dict]:
    cfg = preset("tiny")
    return cfg, init_weights(cfg, seed)


def saved_tiny(tmp_path: Path, **kw) -> tuple[Path, ModelConfig, dict]:
    cfg, w = tiny_weights()
    d = tmp_path / "ckpt"
    save_checkpoint(d, cfg, w, **kw)
    return d, cfg, w


def write_raw_safetensors(path: Path, tensors: dict[str, tuple[str, tuple, bytes]]) -> None:
    """A safetensors file built by hand: name -> (dtype string, shape, raw little-endian bytes)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def to_bf16_bytes(a: np.ndarray) -> bytes:
    """Truncate float32 to bfloat16 (top 16 bits)."""
    return (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()


def load_error(path: Path, exc=CheckpointError) -> str:
    with pytest.raises(exc) as info:
        load_checkpoint(path)
    return str(info.value)


def rewrite_single_file(d: Path, weights: dict) -> None:
    """Replace model.safetensors with ``weights`` as written by the reference safetensors library."""
    save_file(weights, str(d / SINGLE_FILE))


# ---- layout and init -------------------------------------------------------------------------

def test_tensor_shapes_tiny():
    cfg = preset("tiny")
    s = tensor_shapes(cfg)
    d, m, V = 32, 64, 256
    assert next(iter(s)) == "model.embeddings.weight"
    assert s["model.embeddings.weight"] == (V, d)
    assert s["model.lower_bounds"] == (2, d)
    assert s["model.layers.1.attn.i_proj.weight"] == (d, d)
    assert s["model.layers.1.attn.o_proj.norm.weight"] == (d,)
    assert s["model.layers.0.mlp.gate_proj.weight"] == (2 * m, d)
    assert s["model.layers.0.mlp.down_proj.weight"] == (d, m)
    assert s["model.layers.0.mlp.down_proj.norm.weight"] == (m,)
    assert s["lm_head.weight"] == (V, d) and s["lm_head.norm.weight"] == (d,)
    assert len(s) == 1 + 1 + 2 * 15 + 1 + 2
    assert sum(int(np.prod(x)) for x in s.values()) == cfg.n_params()


def test_tensor_shapes_expand_and_flags():
    cfg = ModelConfig.from_dict(dict(vocab_size=10, hidden_size=4, num_hidden_layers=1, expand_ratio=2,
                                     intermediate_size=3, use_lower_bound=False, tie_word_embeddings=True))
    s = tensor_shapes(cfg)
    assert s["model.layers.0.attn.f_proj.weight"] == (8, 4)
    assert s["model.layers.0.attn.g_norm.weight"] == (8,)
    assert s["model.layers.0.attn.o_proj.weight"] == (4, 8)
    assert s["model.layers.0.attn.o_proj.norm.weight"] == (8,)
    assert "model.lower_bounds" not in s and "lm_head.weight" not in s
    assert "lm_head.norm.weight" in s


def test_init_weights_follows_original_init():
    cfg, w = tiny_weights(3)
    assert list(w) == list(tensor_shapes(cfg))
    assert all(a.dtype == np.float32 and a.shape == tensor_shapes(cfg)[k] for k, a in w.items())
    assert all(np.all(a == 1) for k, a in w.items() if k.endswith("norm.weight"))
    assert np.all(w["model.lower_bounds"] == 0)
    bound = 2 ** -2.5 * np.sqrt(6 / 64)
    assert np.abs(w["model.layers.0.attn.o_proj.weight"]).max() <= bound
    big = init_weights(ModelConfig.from_dict(dict(vocab_size=4000, hidden_size=64, num_hidden_layers=2)), 0)
    assert big["model.embeddings.weight"].std() == pytest.approx(0.02, rel=0.02)
    assert big["model.layers.0.mlp.down_proj.weight"].std() == pytest.approx(0.02 / 2, rel=0.05)


def test_init_weights_is_seeded():
    _, a = tiny_weights(1)
    _, b = tiny_weights(1)
    _, c = tiny_weights(2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["model.embeddings.weight"], c["model.embeddings.weight"])


def test_init_weights_zeroes_pad_row():
    cfg = ModelConfig.from_dict(dict(vocab_size=8, hidden_size=4, num_hidden_layers=1, pad_token_id=5))
    assert np.all(init_weights(cfg, 0)["model.embeddings.weight"][5] == 0)


# ---- round trips -----------------------------------------------------------------------------

def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert b[k].dtype == np.float32 and np.array_equal(a[k], b[k]), k


def test_round_trip_single_file(tmp_path):
    d, cfg, w = saved_tiny(tmp_path)
    assert (d / "config.json").is_file() and (d / SINGLE_FILE).is_file() and not (d / INDEX_FILE).exists()
    cfg2, w2 = load_checkpoint(d)
    assert cfg2 == cfg
    assert_same(w, w2)


def test_written_file_is_readable_by_safetensors_library(tmp_path):
    d, _, w = saved_tiny(tmp_path)
    assert_same(w, load_file(str(d / SINGLE_FILE)))


def test_round_trip_sharded(tmp_path):
    d, cfg, w = saved_tiny(tmp_path, max_shard_bytes=40_000)
    shards = sorted(d.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and not (d / SINGLE_FILE).exists()
    assert shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((d / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in w.values())
    assert set(index["weight_map"]) == set(w)
    assert all(f.stat().st_size < 40_000 + 4_000 for f in shards[1:])
    cfg2, w2 = load_checkpoint(d)
    assert cfg2 == cfg
    assert_same(w, w2)


def test_large_limit_writes_single_file(tmp_path):
    d, _, _ = saved_tiny(tmp_path, max_shard_bytes=10**9)
    assert (d / SINGLE_FILE).is_file() and not (d / INDEX_FILE).exists()


def test_resave_replaces_old_shards(tmp_path):
    d, cfg, w = saved_tiny(tmp_path, max_shard_bytes=40_000)
    w2 = init_weights(cfg, 9)
    save_checkpoint(d, cfg, w2)
    assert not list(d.glob("model-*-of-*.safetensors")) and not (d / INDEX_FILE).exists()
    assert_same(w2, load_checkpoint(d)[1])


def test_round_trip_tied_embeddings(tmp_path):
    cfg = ModelConfig.from_dict(dict(preset("tiny").to_dict(), tie_word_embeddings=True))
    w = init_weights(cfg, 0)
    assert "lm_head.weight" not in w and "lm_head.norm.weight" in w
    save_checkpoint(tmp_path / "t", cfg, w)
    cfg2, w2 = load_checkpoint(tmp_path / "t")
    assert cfg2.tie_word_embeddings
    assert_same(w, w2)


def test_loads_bf16_tensors(tmp_path):
    d, _, w = saved_tiny(tmp_path)
    bf16 = {k: (a.view(np.uint32) & 0xFFFF0000).view(np.float32) for k, a in w.items()}
    write_raw_safetensors(d / SINGLE_FILE, {k: ("BF16", a.shape, to_bf16_bytes(a)) for k, a in w.items()})
    assert_same(bf16, load_checkpoint(d)[1])


def test_bf16_decoding_of_known_values(tmp_path):
    d, cfg, w = saved_tiny(tmp_path)
    vals = np.array([1.0, -2.5, 0.15625, 3.0e38], np.float32)
    w["model.norm.weight"] = np.resize(vals, w["model.norm.weight"].shape).astype(np.float32)
    write_raw_safetensors(d / SINGLE_FILE, {k: ("BF16", a.shape, to_bf16_bytes(a)) for k, a in w.items()})
    got = load_checkpoint(d)[1]["model.norm.weight"][:4]
    assert got[:3].tolist() == [1.0, -2.5, 0.15625]
    assert got[3] == pytest.approx(3.0e38, rel=1e-2)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_loads_f16_and_f64_tensors(tmp_path, dtype):
    d, _, w = saved_tiny(tmp_path)
    cast = {k: a.astype(dtype) for k, a in w.items()}
    rewrite_single_file(d, cast)
    assert_same({k: a.astype(np.float32) for k, a in cast.items()}, load_checkpoint(d)[1])


@st.composite
def small_configs(draw):
    lower = draw(st.booleans())
    return ModelConfig.from_dict(dict(
        vocab_size=draw(st.integers(2, 300)),
        hidden_size=draw(st.integers(1, 40)),
        num_hidden_layers=draw(st.integers(1, 3)),
        expand_ratio=1 if lower else draw(st.integers(1, 2)),
        intermediate_size=draw(st.integers(1, 70)),
        use_lower_bound=lower,
        tie_word_embeddings=draw(st.booleans()),
    ))


@settings(max_examples=25, deadline=None)
@given(cfg=small_configs(), seed=st.integers(0, 2**32 - 1),
       shard=st.one_of(st.none(), st.integers(1, 20_000)))
def test_round_trip_property(cfg, seed, shard):
    w = init_weights(cfg, seed)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, cfg, w, max_shard_bytes=shard)
        cfg2, w2 = load_checkpoint(tmp)
    assert cfg2 == cfg
    assert_same(w, w2)


# ---- missing files ---------------------------------------------------------------------------

def test_directory_missing(tmp_path):
    msg = load_error(tmp_path / "nope")
    assert "nope" in msg and "not found" in msg


def test_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in load_error(f)


def test_config_json_missing(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    (d / "config.json").unlink()
    assert "config.json" in load_error(d)


def test_model_safetensors_missing(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    (d / SINGLE_FILE).unlink()
    (d / "pytorch_model.bin").write_bytes(b"")
    msg = load_error(d)
    assert SINGLE_FILE in msg and "pytorch_model.bin" in msg


def test_index_names_missing_shard(tmp_path):
    d, _, _ = saved_tiny(tmp_path, max_shard_bytes=40_000)
    shard = sorted(d.glob("model-*-of-*.safetensors"))[1]
    shard.unlink()
    msg = load_error(d)
    assert INDEX_FILE in msg and shard.name in msg and "missing" in msg


def test_shard_holding_unlisted_tensor(tmp_path):
    d, _, _ = saved_tiny(tmp_path, max_shard_bytes=40_000)
    index = json.loads((d / INDEX_FILE).read_text())
    del index["weight_map"]["model.norm.weight"]
    (d / INDEX_FILE).write_text(json.dumps(index))
    msg = load_error(d)
    assert "model.norm.weight" in msg and "does not list it" in msg


# ---- damaged files ---------------------------------------------------------------------------

def test_truncated_in_header(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    f = d / SINGLE_FILE
    f.write_bytes(f.read_bytes()[:100])
    msg = load_error(d)
    assert str(f) in msg and "truncated inside its header" in msg


def test_truncated_shorter_than_length_field(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    (d / SINGLE_FILE).write_bytes(b"\x01\x02")
    assert "truncated" in load_error(d)


def test_truncated_in_data(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    f = d / SINGLE_FILE
    f.write_bytes(f.read_bytes()[:-10])
    msg = load_error(d)
    assert str(f) in msg and "truncated" in msg and "lm_head.norm.weight" in msg


def test_truncated_shard_names_the_shard(tmp_path):
    d, _, _ = saved_tiny(tmp_path, max_shard_bytes=40_000)
    f = sorted(d.glob("model-*-of-*.safetensors"))[0]
    f.write_bytes(f.read_bytes()[:-1])
    msg = load_error(d)
    assert f.name in msg and "truncated" in msg


def test_header_not_json(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    (d / SINGLE_FILE).write_bytes(struct.pack("<Q", 4) + b"{{{{")
    assert "not valid JSON" in load_error(d)


# ---- wrong tensors ---------------------------------------------------------------------------

def test_missing_tensor(tmp_path):
    d, _, w = saved_tiny(tmp_path)
    del w["model.layers.1.attn.g_norm.weight"]
    rewrite_single_file(d, w)
    msg = load_error(d)
    assert "'model.layers.1.attn.g_norm.weight' is missing" in msg and SINGLE_FILE in msg


def test_unexpected_tensor(tmp_path):
    d, _, w = saved_tiny(tmp_path)
    w["model.layers.0.attn.bogus.weight"] = np.zeros(3, np.float32)
    rewrite_single_file(d, w)
    assert "unexpected tensor 'model.layers.0.attn.bogus.weight'" in load_error(d)


def test_misshaped_tensor(tmp_path):
    d, _, w = saved_tiny(tmp_path)
    w["model.layers.0.mlp.down_proj.weight"] = np.zeros((32, 63), np.float32)
    rewrite_single_file(d, w)
    msg = load_error(d)
    assert "'model.layers.0.mlp.down_proj.weight'" in msg
    assert "(32, 63)" in msg and "expected (32, 64)" in msg and "'intermediate_size' = 64" in msg


@pytest.mark.parametrize("dtype, name", [(np.int32, "I32"), (np.int8, "I8")])
def test_integer_tensor_is_rejected(tmp_path, dtype, name):
    d, _, w = saved_tiny(tmp_path)
    w["model.norm.weight"] = np.ones(32, dtype)
    rewrite_single_file(d, w)
    msg = load_error(d)
    assert "'model.norm.weight'" in msg and name in msg and SINGLE_FILE in msg


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_values(tmp_path, bad, word):
    d, _, w = saved_tiny(tmp_path)
    w["model.layers.1.mlp.gate_proj.weight"][[0, 3, 7], 1] = bad
    rewrite_single_file(d, w)
    msg = load_error(d)
    assert "'model.layers.1.mlp.gate_proj.weight'" in msg and "3 non-finite" in msg and word in msg


def test_config_contradicts_tensors(tmp_path):
    d, cfg, _ = saved_tiny(tmp_path)
    (d / "config.json").write_text(json.dumps(dict(cfg.to_dict(), hidden_size=64)))
    msg = load_error(d)
    assert "'hidden_size' = 64" in msg and "'model.embeddings.weight'" in msg
    assert "(256, 32)" in msg and "(256, 64)" in msg


def test_config_has_more_layers_than_tensors(tmp_path):
    d, cfg, _ = saved_tiny(tmp_path)
    (d / "config.json").write_text(json.dumps(dict(cfg.to_dict(), num_hidden_layers=3)))
    msg = load_error(d)
    assert "'model.lower_bounds' has shape (2, 32), expected (3, 32)" in msg and "'num_hidden_layers' = 3" in msg
    (d / "config.json").write_text(json.dumps(dict(cfg.to_dict(), num_hidden_layers=3, use_lower_bound=False)))
    msg = load_error(d)
    assert "'model.layers.2.attn_norm.weight' is missing" in msg and "'num_hidden_layers' = 3" in msg


def test_config_untied_but_lm_head_absent(tmp_path):
    d, _, w = saved_tiny(tmp_path)
    del w["lm_head.weight"]
    rewrite_single_file(d, w)
    msg = load_error(d)
    assert "'lm_head.weight' is missing" in msg and "tie_word_embeddings" in msg


# ---- config problems -------------------------------------------------------------------------

def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_invalid_config_field(tmp_path):
    d, cfg, _ = saved_tiny(tmp_path)
    (d / "config.json").write_text(json.dumps(dict(cfg.to_dict(), hidden_size="big")))
    msg = load_error(d, ConfigError)
    assert "'hidden_size'" in msg and "config.json" in msg


def test_config_not_json(tmp_path):
    d, _, _ = saved_tiny(tmp_path)
    (d / "config.json").write_text("{")
    assert "not valid JSON" in load_error(d, ConfigError)


# ---- saving checks like loading --------------------------------------------------------------

def test_save_validates_before_writing(tmp_path):
    cfg, w = tiny_weights()
    w["model.norm.weight"] = np.zeros(31, np.float32)
    with pytest.raises(CheckpointError, match=r"'model.norm.weight' has shape \(31,\), expected \(32,\)"):
        save_checkpoint(tmp_path / "out", cfg, w)
    assert not (tmp_path / "out").exists()


def test_validate_weights_counts_further_problems():
    cfg, w = tiny_weights()
    del w["model.norm.weight"], w["lm_head.norm.weight"]
    with pytest.raises(CheckpointError, match=r"^here: tensor 'model.norm.weight' is missing \(and 1 more problem"):
        validate_weights(cfg, w, "here")


def test_large_f32_tensors_are_mapped_copy_on_write(tmp_path):
    """Large F32 tensors come back memory-mapped (file cache, not process memory) and editing one never
    touches the checkpoint on disk."""
    import mmap

    from mflc.compiler.model import checkpoint as C

    cfg = ModelConfig.from_dict(dict(vocab_size=1100, hidden_size=256, num_hidden_layers=1, intermediate_size=64))
    w = C.init_weights(cfg, 0)
    assert w["model.embeddings.weight"].nbytes >= C.MMAP_MIN_BYTES > w["model.norm.weight"].nbytes
    C.save_checkpoint(tmp_path / "m", cfg, w)
    _, got = C.load_checkpoint(tmp_path / "m")

    def mapped(a):
        while a is not None and not isinstance(a, mmap.mmap):
            a = getattr(a, "base", None)
        return a is not None

    emb = got["model.embeddings.weight"]
    assert mapped(emb) and not mapped(got["model.norm.weight"])
    assert np.array_equal(emb, w["model.embeddings.weight"])
    emb[0, 0] = 123.0                                           # private page; the file keeps its value
    _, again = C.load_checkpoint(tmp_path / "m")
    assert again["model.embeddings.weight"][0, 0] == w["model.embeddings.weight"][0, 0]
