"""Writing a safetensors file whose arrays arrive one at a time and are never all in memory together:
what a layer-by-layer compile needs (``tools/stream_compile.py``), byte for byte the file that
``safetensors.numpy.save_file`` writes for the same arrays.

The safetensors library takes every array at once. Here each array's bytes go to a spill file beside the
destination as it is added; ``close`` writes the header and copies the spilled bytes in the library's
order (by data type, widest first, then by name), so memory holds one array at a time.
``tests/test_stream_compile.py`` compares the bytes with the library's on random arrays.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import MflcError

# safetensors' data type codes, in the library's order of its Dtype enum (its files put later ones first)
_ORDER = ("BOOL", "U8", "I8", "I16", "U16", "F16", "I32", "U32", "F32", "F64", "I64", "U64")
_CODE = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "float16": "F16",
         "int32": "I32", "uint32": "U32", "float32": "F32", "float64": "F64", "int64": "I64", "uint64": "U64"}
_COPY_CHUNK = 1 << 24


class SafetensorsWriter:
    """``add(name, array)`` any number of times, then ``close()``: the file at ``path`` then holds
    exactly what ``save_file({name: array, ...}, path)`` would. ``abort()`` removes everything."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spill_path = self.path.with_name(f".{self.path.name}.spill")   # beside it (a build's own temporary folder)
        self._spill = open(self._spill_path, "w+b")
        self._entries: dict[str, tuple[str, list[int], int, int]] = {}   # name -> (code, shape, offset, nbytes)
        self._offset = 0

    def add(self, name: str, array: np.ndarray) -> None:
        """Spill one array (C order, little-endian as safetensors stores it)."""
        if name in self._entries:
            raise MflcError(f"{self.path}: tensor {name!r} added twice")
        a = np.asarray(array)
        code = _CODE.get(a.dtype.name)
        if code is None:
            raise MflcError(f"{self.path}: tensor {name!r}: dtype {a.dtype} has no safetensors code")
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        self._spill.write(memoryview(a.reshape(-1)).cast("B"))
        self._entries[name] = (code, [int(n) for n in a.shape], self._offset, a.nbytes)
        self._offset += a.nbytes

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def close(self) -> None:
        """Write the file (header, then the data in the library's order) and remove the spill."""
        order = sorted(self._entries, key=lambda n: (-_ORDER.index(self._entries[n][0]), n.encode()))
        header, at = {}, 0
        for n in order:
            code, shape, _, nbytes = self._entries[n]
            header[n] = {"dtype": code, "shape": shape, "data_offsets": [at, at + nbytes]}
            at += nbytes
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        raw += b" " * (-len(raw) % 8)
        self._spill.flush()
        try:
            with open(self.path, "wb") as out:
                out.write(struct.pack("<Q", len(raw)))
                out.write(raw)
                for n in order:
                    _, _, off, nbytes = self._entries[n]
                    _copy_range(self._spill, out, off, nbytes)
        finally:
            self._discard_spill()

    def abort(self) -> None:
        """Forget everything written so far (a failed compile)."""
        self._discard_spill()
        self.path.unlink(missing_ok=True)

    def _discard_spill(self) -> None:
        if not self._spill.closed:
            self._spill.close()
        self._spill_path.unlink(missing_ok=True)


def _copy_range(src, dst, offset: int, nbytes: int) -> None:
    """Copy ``nbytes`` at ``offset`` of ``src`` to the end of ``dst`` in bounded chunks."""
    src.seek(offset)
    while nbytes:
        chunk = src.read(min(_COPY_CHUNK, nbytes))
        if not chunk:
            raise MflcError(f"{dst.name}: the spill file ended {nbytes} bytes early")
        dst.write(chunk)
        nbytes -= len(chunk)
