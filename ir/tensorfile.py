"""Reading safetensors files with large arrays memory-mapped: the integer arrays of a compiled 2.7B model
(CSR synapses, ternary matrices: ~12 GB) then live in the OS's file cache, which it can drop and re-read,
instead of in the process. Small arrays are read as usual. Copy-on-write, so a caller may edit what it
gets without touching the file. Writing stays with the safetensors library."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

MMAP_MIN_BYTES = 1 << 20   # smaller arrays are read: a mapping costs a page table entry and a syscall


def map_array(path: str | Path, dtype: str, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """A copy-on-write memory map of ``shape`` elements of ``dtype`` at byte ``offset`` of ``path``, as a
    plain ndarray: reads come from the file cache, writes go to private pages, the file never changes."""
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape).view(np.ndarray)
_DTYPES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
           "I64": "<i8", "U64": "<u8", "F16": "<f2", "F32": "<f4", "F64": "<f8"}


def load_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a safetensors file; a ValueError saying what is wrong for a malformed one."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"truncated: {size} byte(s), too short for the header length")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > size - 8:
            raise ValueError(f"truncated inside the header ({hlen} bytes announced, {size - 8} follow)")
        try:
            header = json.loads(f.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"header is not valid JSON ({e})") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        start, data_len = 8 + hlen, size - 8 - hlen
        out: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"tensor {name!r}: bad header entry {info!r}") from None
            n = math.prod(shape)
            if not 0 <= begin <= end <= data_len or end - begin != n * np.dtype(dtype).itemsize:
                raise ValueError(f"tensor {name!r}: data_offsets {[begin, end]} do not hold shape {shape} of "
                                 f"{info['dtype']} inside the {data_len}-byte data section (truncated?)")
            if end - begin >= MMAP_MIN_BYTES:
                out[name] = map_array(p, dtype, start + begin, shape)
            else:
                f.seek(start + begin)
                out[name] = np.frombuffer(f.read(end - begin), dtype=dtype).reshape(shape).copy()
        return out


def narrowest_int(v: np.ndarray) -> np.dtype:
    """int8/16/32/64, whichever first holds every value of ``v``: how integer tables are kept on disk."""
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    return np.dtype(next(t for t in (np.int8, np.int16, np.int32, np.int64)
                         if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max))
