"""The memory-mapping safetensors reader reads what the safetensors library writes, every dtype and size,
maps the large arrays copy-on-write, and names what is wrong with a damaged file."""
import mmap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from safetensors.numpy import load_file, save_file

from mflc.ir import tensorfile as T

DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64, np.bool_]


def _mapped(a) -> bool:
    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None)
    return a is not None


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 6))
def test_reads_what_safetensors_writes(tmp_path_factory, seed, n):
    rng = np.random.default_rng(seed)
    arrays = {}
    for k in range(n):
        dt = DTYPES[int(rng.integers(len(DTYPES)))]
        shape = tuple(int(s) for s in rng.integers(0, 5, int(rng.integers(1, 4))))
        arrays[f"t{k}"] = (rng.integers(-100, 100, shape) if dt != np.bool_ else rng.random(shape) < 0.5).astype(dt)
    f = tmp_path_factory.mktemp("tf") / "a.safetensors"
    save_file(arrays, str(f))
    got, ref = T.load_tensors(f), load_file(str(f))
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape and np.array_equal(got[k], ref[k])


def test_large_arrays_are_mapped_copy_on_write(tmp_path):
    big = np.arange(T.MMAP_MIN_BYTES // 4 + 10, dtype=np.int32)
    save_file({"big": big, "small": np.arange(5, dtype=np.int64)}, str(tmp_path / "a.safetensors"))
    got = T.load_tensors(tmp_path / "a.safetensors")
    assert _mapped(got["big"]) and not _mapped(got["small"]) and np.array_equal(got["big"], big)
    got["big"][0] = -1
    assert T.load_tensors(tmp_path / "a.safetensors")["big"][0] == 0


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:5], "too short for the header length"),
    (lambda b: b[:20], "truncated inside the header"),
    (lambda b: b[:-8], "do not hold shape"),
    (lambda b: b[:8] + b"{" * (len(b) - 8), "header is not valid JSON"),
])
def test_damaged_files_say_what_is_wrong(tmp_path, damage, message):
    f = tmp_path / "a.safetensors"
    save_file({"x": np.arange(10, dtype=np.int64)}, str(f))
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(ValueError, match=message):
        T.load_tensors(f)
