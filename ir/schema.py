"""A small checker of JSON-shaped data against a schema, so that a damaged file gives one message naming the
file and the field (``graph.json: groups[3].program[0]: expected [op, out, args, imm], got {...}``)
instead of a KeyError or TypeError deep inside a loader.

A schema is plain data:

* a type: ``int`` (not bool), ``float`` (int or float, finite), ``str``, ``bool``, ``dict`` (any object),
  ``list`` (any array), ``object`` (anything), ``None`` (null);
* ``{"key": schema, ...}``: an object with these keys (``Opt(schema)`` for an optional one); other keys are
  allowed unless the dict has ``STRICT: True``;
* ``[schema]``: an array of items, each of ``schema``;
* ``Tup(a, b, ..., label=...)``: an array of exactly these items, in order;
* ``MapOf(schema)``: an object of any keys, each value of ``schema``;
* ``OneOf(a, b)``: either.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import MflcError

STRICT = "__strict__"


@dataclass(frozen=True)
class Opt:
    """Marks a key of a dict schema as optional."""

    schema: object


@dataclass(frozen=True)
class MapOf:
    """A JSON object whose keys are free and whose every value matches one schema."""

    schema: object


class Tup:
    """A fixed-length JSON array whose items match the given schemas in order."""

    def __init__(self, *items, label: str | None = None):
        self.items, self.label = items, label


class OneOf:
    """A value matching any one of several schemas."""

    def __init__(self, *options):
        self.options = options


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
               list: "an array", None: "null"}


def describe(schema) -> str:
    """A schema in words, for error messages that say what was expected."""
    if isinstance(schema, Tup):
        return schema.label or "[" + ", ".join(describe(s) for s in schema.items) + "]"
    if isinstance(schema, OneOf):
        return " or ".join(describe(s) for s in schema.options)
    if isinstance(schema, MapOf):
        return f"an object of {describe(schema.schema)}"
    if isinstance(schema, dict):
        return "an object with " + ", ".join(repr(k) for k in schema if k != STRICT)
    if isinstance(schema, list):
        return "an array of objects" if isinstance(schema[0], dict) else f"an array of {describe(schema[0])}"
    return _TYPE_NAMES.get(schema, "anything")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


class SchemaError(Exception):
    """A JSON document not matching its schema, with the path to the offending value."""

    def __init__(self, where: str, msg: str):
        self.where, self.msg = where, msg
        super().__init__(f"{where}: {msg}" if where else msg)


def _join(where: str, key) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def _check(v, schema, where: str) -> None:
    if schema is object:
        return
    if schema is None:
        if v is not None:
            raise SchemaError(where, f"expected null, got {_short(v)}")
        return
    if schema in (int, float, str, bool, dict, list):
        ok = {int: lambda: isinstance(v, int) and not isinstance(v, bool),
              float: lambda: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
              str: lambda: isinstance(v, str), bool: lambda: isinstance(v, bool),
              dict: lambda: isinstance(v, dict), list: lambda: isinstance(v, list)}[schema]()
        if not ok:
            raise SchemaError(where, f"expected {describe(schema)}, got {_short(v)}")
        return
    if isinstance(schema, OneOf):
        for s in schema.options:
            try:
                _check(v, s, where)
                return
            except SchemaError:
                pass
        raise SchemaError(where, f"expected {describe(schema)}, got {_short(v)}")
    if isinstance(schema, Tup):
        if not isinstance(v, list) or len(v) != len(schema.items):
            raise SchemaError(where, f"expected {describe(schema)}, got {_short(v)}")
        for i, (x, s) in enumerate(zip(v, schema.items)):
            _check(x, s, _join(where, i))
        return
    if isinstance(schema, list):
        if not isinstance(v, list):
            raise SchemaError(where, f"expected {describe(schema)}, got {_short(v)}")
        for i, x in enumerate(v):
            _check(x, schema[0], _join(where, i))
        return
    if isinstance(schema, MapOf):
        if not isinstance(v, dict):
            raise SchemaError(where, f"expected {describe(schema)}, got {_short(v)}")
        for k, x in v.items():
            _check(x, schema.schema, _join(where, k))
        return
    if isinstance(schema, dict):
        if not isinstance(v, dict):
            raise SchemaError(where, f"expected {describe(schema)}, got {_short(v)}")
        for k, s in schema.items():
            if k == STRICT:
                continue
            if k not in v:
                if isinstance(s, Opt):
                    continue
                raise SchemaError(_join(where, k), "missing")
            _check(v[k], s.schema if isinstance(s, Opt) else s, _join(where, k))
        if schema.get(STRICT):
            extra = sorted(set(v) - set(schema) - {STRICT})
            if extra:
                raise SchemaError(where, f"unknown key(s) {', '.join(map(repr, extra))}; "
                                  f"known: {', '.join(k for k in schema if k != STRICT)}")
        return
    raise TypeError(f"bad schema {schema!r}")


def check(value, schema, source: str, error=MflcError, where: str = "") -> None:
    """Raise ``error("{source}: {field}: expected ..., got ...")`` at the first place ``value`` breaks ``schema``."""
    try:
        _check(value, schema, where)
    except SchemaError as e:
        raise error(f"{source}: {e}") from None


def read_json(path, error=MflcError, object_required: bool = False):
    """A JSON file's value, or ``error`` naming the file: not found, not UTF-8, not JSON, or (with
    ``object_required``) not an object. Every loader of a file a user can hand us reads through here."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: file not found")
    try:
        v = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{p}: not valid JSON ({e})") from None
    if object_required and not isinstance(v, dict):
        raise error(f"{p}: expected a JSON object, got {type(v).__name__}")
    return v


def check_format(head: dict, fmt: str, version: int, path, error=MflcError, noun: str = "format version",
                 older: dict | None = None, otherwise: str = "") -> None:
    """A file's ``format`` and ``version`` fields are the ones this mflc writes; a known older version
    gets its own hint (``older``: version -> what to do), any other version ``otherwise``."""
    if head.get("format") != fmt:
        raise error(f"{path}: field 'format' is {head.get('format')!r}, expected {fmt!r}")
    v = head.get("version")
    if v != version:
        known = older and isinstance(v, int) and not isinstance(v, bool) and v in older
        hint = f" ({older[v]})" if known else f" ({otherwise})" if otherwise else ""
        raise error(f"{path}: {noun} {v!r} is not supported (this mflc reads version {version}){hint}")
