"""HGRN-Bit checkpoints in the Hugging Face layout: tensor names, random init, safetensors save/load.

A checkpoint directory holds ``config.json`` plus either ``model.safetensors`` or HF-style shards
listed in ``model.safetensors.index.json``. The safetensors reader and writer are our own (the format
is an 8-byte little-endian header length, a JSON header and raw little-endian data) so that every
defect -- truncation, odd dtype, bad offsets, a config that contradicts the tensors -- becomes one
``CheckpointError`` naming the file and tensor, and so that BF16 loads without torch.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path

import numpy as np

from mflc.ir.errors import CheckpointError
from mflc.ir.schema import read_json
from mflc.ir.tensorfile import MMAP_MIN_BYTES, map_array

from . import structure as S
from .config import ModelConfig
from .structure import tensor_shapes  # noqa: F401  (re-exported: the checkpoint's layout)

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")

# safetensors dtype -> little-endian numpy dtype of its raw bytes (BF16 is read as uint16 and widened).
_FLOAT_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}

# ---- layout ----------------------------------------------------------------------------------
# The tensors and their symbolic shapes are declared in .structure; a misshaped tensor is blamed on the
# config field behind the offending dimension.


def _explain_dim(cfg: ModelConfig, sym: str) -> str:
    """Which config field(s) a symbolic dimension comes from, with their values."""
    if sym == "V":
        return f"config field 'vocab_size' = {cfg.vocab_size}"
    if sym == "d":
        return f"config field 'hidden_size' = {cfg.d}"
    if sym == "e":
        return (f"config fields 'hidden_size' * 'expand_ratio' = {cfg.d} * {cfg.expand_ratio}"
                f" = {cfg.d_attn}")
    if sym == "L":
        return f"config field 'num_hidden_layers' = {cfg.L}"
    if cfg.intermediate_size is not None:
        m_text = f"config field 'intermediate_size' = {cfg.m}"
    else:
        m_text = (f"config field 'intermediate_size' = null, so {cfg.m} from 'hidden_size' = {cfg.d}"
                  f" and 'hidden_ratio' = {cfg.hidden_ratio}")
    return m_text if sym == "m" else f"2 * {m_text}"


# ---- random init -----------------------------------------------------------------------------

def init_weights(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Float32 weights drawn the way the released training code initialises a fresh model.

    Followed ridgerchu/matmulfreellm (mmfreelm/models/hgrn_bit/modeling_hgrn_bit.py, _init_weights,
    and mmfreelm/layers/hgrn_bit.py, HGRNBitAttention._initialize_weights):
    * embeddings, mlp.gate_proj and lm_head: Normal(0, initializer_range); the pad_token_id row of the
      embeddings (if the config names one) is zero;
    * mlp.down_proj: Normal(0, initializer_range / sqrt(2 * num_hidden_layers)), the GPT-2 residual
      rescale the original applies to "down_proj.weight" / "o_proj.weight";
    * attn.i/f/g/o_proj: xavier_uniform with gain 2**-2.5, done by the attention layer itself, which
      marks its modules initialised so that HF's post_init (normal + rescale) skips them -- hence no
      residual rescale of o_proj;
    * every norm weight 1 (RMSNorm's own init), lower_bounds 0 (the original's torch.zeros).
    Tensors are drawn one by one from one generator in ``tensor_shapes`` order, so a seed fixes all.
    """
    rng = np.random.default_rng(seed)
    std = cfg.initializer_range
    out: dict[str, np.ndarray] = {}
    size = S.dim_sizes(cfg)
    for spec in S.released_tensors(cfg):
        name, shape = spec.name, tuple(size[s] for s in spec.dims)
        if spec.role in ("norm", "projection.norm"):
            out[name] = np.ones(shape, np.float32)
        elif spec.role == "lower_bounds":
            out[name] = np.zeros(shape, np.float32)
        elif spec.role == "projection" and spec.part in _XAVIER:
            fan_out, fan_in = shape
            bound = 2 ** -2.5 * math.sqrt(6.0 / (fan_in + fan_out))
            out[name] = _scaled(rng.random(shape, dtype=np.float32), 2 * bound, -bound)
        elif spec.role == "projection" and spec.part == "down":
            out[name] = _scaled(rng.standard_normal(shape, dtype=np.float32), std / math.sqrt(2 * cfg.L))
        else:
            out[name] = _scaled(rng.standard_normal(shape, dtype=np.float32), std)
    pad = cfg.extra.get("pad_token_id")
    if isinstance(pad, int) and not isinstance(pad, bool) and 0 <= pad < cfg.vocab_size:
        out[S.EMBEDDINGS][pad] = 0.0
    return out


_XAVIER = ("i", "f", "g", "o")  # the token mixer's projections, initialised by the attention layer itself


def _scaled(a: np.ndarray, scale: float, shift: float = 0.0) -> np.ndarray:
    """a * scale + shift in place, staying float32 (no float64 temporaries for the large tensors)."""
    a *= np.float32(scale)
    if shift:
        a += np.float32(shift)
    return a


# ---- validation ------------------------------------------------------------------------------

def validate_weights(cfg: ModelConfig, weights: dict[str, np.ndarray], source: str) -> None:
    """Raise one CheckpointError for the first problem (and count the rest): missing, extra,
    non-float, misshaped or non-finite tensors. ``source`` names where the weights came from."""
    problems = _weight_problems(cfg, weights)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise CheckpointError(f"{source}: {problems[0]}{more}")


def _weight_problems(cfg: ModelConfig, weights: dict[str, np.ndarray], values: bool = True) -> list[str]:
    layout = [(t.name, t.dims) for t in S.released_tensors(cfg)]
    size = S.dim_sizes(cfg)
    problems = []
    for name, dims in layout:
        if name not in weights:
            problems.append(f"tensor {name!r} is missing{_missing_hint(cfg, name, weights)}")
            continue
        problem = _tensor_problem(cfg, name, dims, size, weights[name], values)
        if problem:
            problems.append(problem)
    expected = {name for name, _ in layout}
    for name in weights:
        if name not in expected:
            problems.append(f"unexpected tensor {name!r}{_extra_hint(cfg, name)}")
    return problems


def _tensor_problem(cfg, name, dims, size, arr, values: bool = True) -> str | None:
    if not isinstance(arr, np.ndarray):
        return f"tensor {name!r} is a {type(arr).__name__}, expected a numpy array"
    if arr.dtype.kind != "f":
        return f"tensor {name!r} has dtype {arr.dtype}, expected a float dtype (float16/32/64)"
    want = tuple(size[s] for s in dims)
    if arr.shape != want:
        return f"tensor {name!r} has shape {arr.shape}, expected {want}: {_shape_reason(cfg, dims, want, arr.shape)}"
    if not values:
        return None
    n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        return (f"tensor {name!r} has {n_bad} non-finite value(s) of {arr.size} "
                f"({n_nan} NaN, {n_bad - n_nan} inf)")
    return None


def _shape_reason(cfg, dims, want, got) -> str:
    if len(got) != len(want):
        return (f"{len(got)} dimension(s) instead of {len(want)}; the expected sizes are "
                + ", ".join(_explain_dim(cfg, s) for s in dims))
    wrong = [f"dimension {k} is {g} but {_explain_dim(cfg, s)}"
             for k, (s, w, g) in enumerate(zip(dims, want, got)) if w != g]
    return "; ".join(wrong)


def _missing_hint(cfg: ModelConfig, name: str, weights) -> str:
    if name == S.LOWER_BOUNDS:
        return " (config field 'use_lower_bound' is true)"
    if name == S.HEAD_WEIGHT:
        return " (config field 'tie_word_embeddings' is false, so lm_head has its own matrix)"
    i = S.layer_of(name)
    if i is not None and not any(k.startswith(S.layer_prefix(i)) for k in weights):
        return f" (config field 'num_hidden_layers' = {cfg.L}, but the tensors have no layer {i})"
    return ""


def _extra_hint(cfg: ModelConfig, name: str) -> str:
    if name == S.LOWER_BOUNDS:
        return " (config field 'use_lower_bound' is false)"
    if name == S.HEAD_WEIGHT:
        return " (config field 'tie_word_embeddings' is true, so lm_head reuses model.embeddings.weight)"
    i = S.layer_of(name)
    if i is not None and i >= cfg.L:
        return f" (config field 'num_hidden_layers' = {cfg.L}, so layers are 0..{cfg.L - 1})"
    return ""


# ---- safetensors files -----------------------------------------------------------------------

def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one safetensors file as float32; truncation and bad headers name the file."""
    with open(path, "rb") as f:
        return {name: _read_tensor(f, *entry) for name, entry in _file_entries(path).items()}


def _file_entries(path: Path) -> dict[str, tuple]:
    """name -> (data start, numpy dtype, shape, begin, end) of every tensor of one safetensors file,
    every header entry checked against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < 8:
            raise CheckpointError(f"{path}: truncated: {size} byte(s), too short for the 8-byte header length")
        (hlen,) = struct.unpack("<Q", f.read(8))
        if hlen > size - 8:
            raise CheckpointError(f"{path}: truncated inside its header: the header should be {hlen} bytes "
                                  f"but only {size - 8} follow the length field")
        header = _parse_header(path, f.read(hlen))
        data_start = 8 + hlen
        data_len = size - data_start
        return {name: (data_start, *_check_entry(path, name, info, data_len))
                for name, info in header.items() if name != "__metadata__"}


def _parse_header(path: Path, raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file: its header is not a JSON object")
    return header


def _check_entry(path: Path, name: str, info, data_len: int) -> tuple[str, tuple[int, ...], int, int]:
    """(numpy dtype, shape, begin, end) of one header entry, or a CheckpointError saying what is wrong."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise CheckpointError(f"{where}: header entry needs 'dtype', 'shape' and 'data_offsets', got {info!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _FLOAT_DTYPES:
        raise CheckpointError(f"{where} has dtype {dtype}; expected a float dtype ({', '.join(_FLOAT_DTYPES)})")
    if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets {offsets!r} is not a pair [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    np_dtype = _FLOAT_DTYPES[dtype]
    need = math.prod(shape) * np.dtype(np_dtype).itemsize
    if end - begin != need:
        raise CheckpointError(f"{where}: data_offsets span {end - begin} bytes but shape {tuple(shape)} of "
                              f"{dtype} needs {need}")
    if end > data_len:
        raise CheckpointError(f"{path}: truncated: tensor {name!r} needs bytes {begin}..{end} of the data "
                              f"section but the file holds only {data_len}")
    return np_dtype, tuple(shape), begin, end


def _read_tensor(f, data_start: int, np_dtype: str, shape: tuple[int, ...], begin: int, end: int,
                 mmap: bool = True) -> np.ndarray:
    # Large F32 tensors are memory-mapped (copy-on-write) rather than read: their pages stay in the OS's
    # file cache, which it can drop and re-read, so a 2.7B checkpoint's 11 GB of floats do not count
    # against memory while the compiler holds its int8 working copies (docs/benchmarks.md). Other dtypes
    # are converted to float32, which needs a copy anyway.
    if mmap and np_dtype == "<f4" and end - begin >= MMAP_MIN_BYTES:
        return map_array(f.name, "<f4", data_start + begin, shape)
    f.seek(data_start + begin)
    raw = np.fromfile(f, dtype=np_dtype, count=math.prod(shape))
    if np_dtype == "<u2":  # BF16: the top half of a float32's bits
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return raw.astype(np.float32, copy=False).reshape(shape)


def _write_safetensors(path: Path, names: list[str], weights: dict[str, np.ndarray]) -> None:
    """Write ``names`` as F32, tensor by tensor, via a temporary file so a crash leaves no half file."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        nbytes = weights[name].size * 4
        header[name] = {"dtype": "F32", "shape": list(weights[name].shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as the reference writer does
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            np.ascontiguousarray(weights[name], dtype="<f4").tofile(f)
    os.replace(tmp, path)


# ---- checkpoint directories -------------------------------------------------------------------

def save_checkpoint(path, cfg: ModelConfig, weights: dict[str, np.ndarray], max_shard_bytes: int | None = None) -> None:
    """Write config.json and the tensors (as F32): one model.safetensors, or HF-style shards of at most
    ``max_shard_bytes`` each (a single larger tensor gets a shard of its own) plus the index."""
    p = Path(path)
    cfg.validate(f"config for {p}")
    validate_weights(cfg, weights, f"weights to save to {p}")
    if max_shard_bytes is not None and max_shard_bytes < 1:
        raise CheckpointError(f"{p}: max_shard_bytes must be >= 1, got {max_shard_bytes}")
    if p.exists() and not p.is_dir():
        raise CheckpointError(f"{p}: exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    _remove_old_tensor_files(p)
    cfg.save(p / CONFIG_FILE)
    names = list(tensor_shapes(cfg))
    nbytes = {n: weights[n].size * 4 for n in names}
    total = sum(nbytes.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        _write_safetensors(p / SINGLE_FILE, names, weights)
        return
    shards = _plan_shards(names, nbytes, max_shard_bytes)
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(p / fname, shard, weights)
        weight_map.update({n: fname for n in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (p / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _remove_old_tensor_files(p: Path) -> None:
    """Drop tensor files of an earlier save, so a sharded save never sits beside a stale single file."""
    for f in p.iterdir():
        if f.name in (SINGLE_FILE, INDEX_FILE) or _SHARD_NAME.fullmatch(f.name):
            f.unlink()


def _plan_shards(names: list[str], nbytes: dict[str, int], limit: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for n in names:
        if shards[-1] and used + nbytes[n] > limit:
            shards.append([])
            used = 0
        shards[-1].append(n)
        used += nbytes[n]
    return shards


def load_checkpoint(path) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Config and float32 tensors of a checkpoint directory, checked against each other."""
    p = Path(path)
    cfg, _ = _checkpoint_files(p)
    if (p / SINGLE_FILE).is_file():
        source, weights = p / SINGLE_FILE, _read_safetensors(p / SINGLE_FILE)
    else:
        source, weights = p / INDEX_FILE, _read_sharded(p)
    validate_weights(cfg, weights, f"{source} (with {CONFIG_FILE})")
    return cfg, weights


def _checkpoint_files(p: Path) -> tuple[ModelConfig, Path]:
    """The config of checkpoint directory ``p`` and its tensor file (single or index), or the error."""
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint directory not found")
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a directory; expected a checkpoint directory with {CONFIG_FILE} and {SINGLE_FILE}")
    if not (p / CONFIG_FILE).is_file():
        raise CheckpointError(f"{p}: no {CONFIG_FILE} in the checkpoint directory")
    cfg = ModelConfig.load(p / CONFIG_FILE)
    for name in (SINGLE_FILE, INDEX_FILE):
        if (p / name).is_file():
            return cfg, p / name
    raise CheckpointError(f"{p}: no {SINGLE_FILE} (nor a sharded {INDEX_FILE}) in the checkpoint directory"
                          + _other_format_hint(p))


def _other_format_hint(p: Path) -> str:
    others = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".gguf"))
    return f"; found {', '.join(others)}, but only safetensors is supported" if others else ""


def _read_index(p: Path) -> dict[str, str]:
    index_path = p / INDEX_FILE
    index = read_json(index_path, CheckpointError)
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
        raise CheckpointError(f"{index_path}: expected an object with a 'weight_map' of tensor name -> shard file")
    for fname in set(wmap.values()):
        if Path(fname).name != fname:
            raise CheckpointError(f"{index_path}: shard {fname!r} is not a plain file name in the checkpoint directory")
    return wmap


def _read_sharded(p: Path) -> dict[str, np.ndarray]:
    """Tensors of all shards named by the index; every tensor must sit where the index says."""
    index_path = p / INDEX_FILE
    wmap = _read_index(p)
    shards = sorted(set(wmap.values()))
    for fname in shards:
        if not (p / fname).is_file():
            raise CheckpointError(f"{index_path}: names shard {fname!r}, which is missing from {p}")
    weights: dict[str, np.ndarray] = {}
    for fname in shards:
        for name, arr in _read_safetensors(p / fname).items():
            if wmap.get(name) != fname:
                where = f"maps it to {wmap[name]!r}" if name in wmap else "does not list it"
                raise CheckpointError(f"{p / fname}: holds tensor {name!r}, but {index_path} {where}")
            weights[name] = arr
    for name, fname in wmap.items():
        if name not in weights:
            raise CheckpointError(f"{index_path}: maps tensor {name!r} to {fname!r}, which does not hold it")
    return weights


# ---- reading tensor by tensor ----------------------------------------------------------------------

class LazyWeights:
    """A checkpoint's tensors as a read-only mapping that reads each one from its file when asked for it
    (never memory-mapped, never cached): what a layer-by-layer compile needs so that memory holds the
    tensors in use, not the checkpoint (a map of all 11 GB of a 2.7B would count against resident
    memory once read). Shapes and dtypes are checked on opening, each tensor's values on reading."""

    def __init__(self, cfg: ModelConfig, entries: dict[str, tuple[Path, tuple]], source: str):
        self.cfg, self.entries, self.source = cfg, entries, source
        self._dims = {t.name: t.dims for t in S.released_tensors(cfg)}

    def __contains__(self, name) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self):
        """The tensor names."""
        return self.entries.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, without reading it."""
        return self.entries[name][1][2]

    def __getitem__(self, name: str) -> np.ndarray:
        path, entry = self.entries[name]
        with open(path, "rb") as f:
            arr = _read_tensor(f, *entry, mmap=False)
        problem = _tensor_problem(self.cfg, name, self._dims[name], S.dim_sizes(self.cfg), arr)
        if problem:
            raise CheckpointError(f"{self.source}: {problem}")
        return arr

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of a tensor (its first axis), read alone; a non-finite value is an error
        naming the tensor, as for the whole tensor."""
        path, (data_start, np_dtype, shape, begin, _) = self.entries[name]
        stop = min(stop, shape[0])
        row = math.prod(shape[1:]) * np.dtype(np_dtype).itemsize
        with open(path, "rb") as f:
            arr = _read_tensor(f, data_start, np_dtype, (stop - start, *shape[1:]), begin + start * row,
                               begin + stop * row, mmap=False)
        n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            whole = self[name]                        # the whole tensor's message (counts every bad value)
            raise CheckpointError(f"{self.source}: tensor {name!r} has non-finite values ({whole.size} read)")
        return arr


def _stub(np_dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """An array of the tensor's shape and dtype that takes no memory (for the checks made on opening)."""
    dt = np.float32 if np_dtype == "<u2" else np.dtype(np_dtype)
    return np.lib.stride_tricks.as_strided(np.zeros(1, dt), shape=shape, strides=(0,) * len(shape))


def open_checkpoint(path) -> tuple[ModelConfig, LazyWeights]:
    """``load_checkpoint``'s config and tensors, the tensors read one by one on use (``LazyWeights``):
    the same names, shapes, dtypes and errors, a non-finite value reported when its tensor is read."""
    p = Path(path)
    cfg, _ = _checkpoint_files(p)
    if (p / SINGLE_FILE).is_file():
        source = p / SINGLE_FILE
        entries = {n: (source, e) for n, e in _file_entries(source).items()}
    else:
        source = p / INDEX_FILE
        entries = _sharded_entries(p)
    stubs = {n: _stub(e[1], e[2]) for n, (_, e) in entries.items()}
    problems = _weight_problems(cfg, stubs, values=False)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise CheckpointError(f"{source} (with {CONFIG_FILE}): {problems[0]}{more}")
    return cfg, LazyWeights(cfg, entries, f"{source} (with {CONFIG_FILE})")


def _sharded_entries(p: Path) -> dict[str, tuple[Path, tuple]]:
    """Every tensor's (shard, entry), each where the index says (as ``_read_sharded`` checks)."""
    index_path = p / INDEX_FILE
    wmap = _read_index(p)
    for fname in sorted(set(wmap.values())):
        if not (p / fname).is_file():
            raise CheckpointError(f"{index_path}: names shard {fname!r}, which is missing from {p}")
    out: dict[str, tuple[Path, tuple]] = {}
    for fname in sorted(set(wmap.values())):
        for name, e in _file_entries(p / fname).items():
            if wmap.get(name) != fname:
                where = f"maps it to {wmap[name]!r}" if name in wmap else "does not list it"
                raise CheckpointError(f"{p / fname}: holds tensor {name!r}, but {index_path} {where}")
            out[name] = (p / fname, e)
    for name, fname in wmap.items():
        if name not in out:
            raise CheckpointError(f"{index_path}: maps tensor {name!r} to {fname!r}, which does not hold it")
    return out
