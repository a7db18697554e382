"""Read the ```exact blocks of a Markdown page (docs/fixed-point.md) into callable Python definitions.

The blocks are the specification another implementation is written from, so the test runs them: each
block line ``name(args) = expr`` (with optional indented ``where v = expr`` lines) becomes a Python
function over unbounded integers, each ``NAME = expr`` a constant. The syntax is Python's expression
syntax, so nothing is translated except the ``where`` layout: what the page says is what runs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```exact[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
FUNC = re.compile(r"^(\w+)\s*\(([^)]*)\)\s*=\s*(.+)$")
CONST = re.compile(r"^(\w+)\s*=\s*(.+)$")


@dataclass
class Definition:
    """One documented formula: a function (``params`` not None) or a constant, with its where-lines."""

    name: str
    params: list[str] | None
    expr: str
    wheres: list[str] = field(default_factory=list)
    line: int = 0


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# ...`` comment (a ``#`` inside a string literal is kept)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip()
    return line.rstrip()


def parse(text: str) -> list[Definition]:
    """Every definition of every ```exact block of ``text``, in page order."""
    defs: list[Definition] = []
    for m in FENCE.finditer(text):
        first = text.count("\n", 0, m.start(1)) + 1
        for k, raw in enumerate(m.group(1).splitlines()):
            line = _strip_comment(raw)
            if not line.strip():
                continue
            if line[0].isspace():
                if not defs:
                    raise ValueError(f"line {first + k}: a continuation line before any definition")
                body = line.strip()
                body = body[len("where"):].strip() if body.startswith("where ") else body
                defs[-1].wheres.append(body)
                continue
            f, c = FUNC.match(line), CONST.match(line)
            if f:
                defs.append(Definition(f.group(1), [p.strip() for p in f.group(2).split(",") if p.strip()],
                                       f.group(3).strip(), line=first + k))
            elif c:
                defs.append(Definition(c.group(1), None, c.group(2).strip(), line=first + k))
            else:
                raise ValueError(f"line {first + k}: not a definition: {line!r}")
    return defs


def _sign(x):
    return (x > 0) - (x < 0)


def _bit_length(t) -> int:
    return int(t).bit_length()


def _rne(v) -> int:
    """Round a float half to even (Python's round on a float, which is numpy's round)."""
    return int(round(float(v)))


HELPERS = dict(sign=_sign, bit_length=_bit_length, rne=_rne, sqrt=math.sqrt, log2=math.log2,
               floor=math.floor, abs=abs, min=min, max=max, sum=sum, range=range, len=len)


def _source(d: Definition, record: bool) -> str:
    body = [f"    {w}" for w in d.wheres]
    if record:      # the named intermediate values, for a test that compares them one by one
        body.append(f"    __record__[{d.name!r}] = dict(locals())")
    return "\n".join([f"def {d.name}({', '.join(d.params)}):", *body, f"    return {d.expr}"])


def compile_defs(defs: list[Definition], namespace: dict | None = None, keep: tuple[str, ...] = (),
                 record: dict | None = None) -> dict:
    """A namespace holding every definition as a Python function or value. Names in ``keep`` that the
    namespace already holds are not replaced (the block test binds the ops to the numpy library). With
    ``record``, each function leaves its where-values in ``record[name]`` when it returns."""
    ns = dict(HELPERS)
    ns.update(namespace or {})
    ns["__record__"] = record if record is not None else {}
    for d in defs:
        if d.params is not None and d.name not in keep:
            try:
                exec(compile(_source(d, record is not None), f"<exact block, line {d.line}>", "exec"), ns)
            except SyntaxError as e:
                raise ValueError(f"line {d.line}: {d.name}: {e.msg}") from None
    for d in defs:
        if d.params is None and d.name not in keep:
            ns[d.name] = eval(compile(d.expr, f"<exact block, line {d.line}>", "eval"), ns)
    return ns


def load(path: str | Path, namespace: dict | None = None, keep: tuple[str, ...] = ()) -> tuple[list[Definition], dict]:
    """The definitions of a page and their compiled namespace."""
    defs = parse(Path(path).read_text())
    return defs, compile_defs(defs, namespace, keep)
