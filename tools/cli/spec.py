"""Specification commands: trace (every site's integers per token, from any executor) and conformance
(vector sets another implementation proves itself against)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mflc.cli.app import app, check_out_file, emit_json, err, guarded, out
from mflc.ir.errors import MflcError

EngineOpt = typer.Option("int-model", "--engine", help="Executor to record from (`mflc executors` lists them)")


def parse_tokens(tokens: Optional[str], text: Optional[str], build: Path, vocab: int) -> list[int]:
    """Token ids from ``--tokens 1,2,3`` or ``--text`` (tokenized as the build's model tokenizes)."""
    if (tokens is None) == (text is None):
        raise MflcError("give exactly one of --tokens ID,ID,... and --text TEXT")
    if text is not None:
        from mflc.compiler.model.tokenizer import tokenizer_for

        ids = list(tokenizer_for(build, vocab).encode(text))
    else:
        try:
            ids = [int(t) for t in tokens.replace(" ", "").split(",") if t]
        except ValueError:
            raise MflcError(f"--tokens {tokens!r}: expected comma-separated token ids, e.g. --tokens 100,101,32") from None
    if not ids:
        raise MflcError("no tokens to run (--tokens / --text is empty)")
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise MflcError(f"--tokens: token id {bad[0]} outside the vocabulary [0, {vocab})")
    return ids


@app.command("trace")
@guarded
def trace_cmd(build: Path = typer.Argument(..., help="Build directory (`mflc compile --out`)"),
              tokens: Optional[str] = typer.Option(None, "--tokens", help="Token ids, comma-separated"),
              text: Optional[str] = typer.Option(None, "--text", help="Text, tokenized by the build's tokenizer"),
              sites: str = typer.Option("*", "--sites", help="Sites to keep: glob patterns, comma-separated "
                                        "(e.g. 'L0.*,logits')"),
              engine: str = EngineOpt,
              out_file: Path = typer.Option(..., "--out", help="Trace file to write (safetensors, JSON index "
                                            "in its header; docs/formats.md, Traces)"),
              json_out: bool = typer.Option(False, "--json")):
    """Record every site's integers per token from an executor, under the integer model's site names."""
    from mflc.build import Build
    from mflc.trace import record

    check_out_file(out_file)
    b = Build.load(build)
    qm = b.quantized
    ids = parse_tokens(tokens, text, build, qm.cfg.vocab_size)
    with err.status(f"tracing {len(ids)} tokens on {engine}"):
        tr = record(qm, b.graph, [ids], engine, sites)
    tr.save(out_file)
    if json_out:
        emit_json(dict(file=str(out_file), engine=tr.engine, tokens=ids, rows=tr.rows,
                       sites={k: dict(bits=tr.bits.get(k), width=int(v.shape[1])) for k, v in tr.values.items()},
                       missing=tr.missing))
        return
    t = Table(title=f"trace of {len(ids)} tokens on {tr.engine} -> {out_file}", title_justify="left")
    for c in ("site", "bits", "width", "min", "max"):
        t.add_column(c, justify="left" if c == "site" else "right")
    for k, v in tr.values.items():
        t.add_row(k, str(tr.bits.get(k)), str(v.shape[1]), str(int(v.min())), str(int(v.max())))
    out.print(t)
    if tr.missing:
        first = next(iter(tr.missing.items()))
        out.print(f"{len(tr.missing)} site(s) not observable on {tr.engine}, e.g. {first[0]}: {first[1]}")
