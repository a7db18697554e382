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
    from mflc.spec.trace import record

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


conformance = typer.Typer(no_args_is_help=True, help="Conformance vectors: write a set from a build; check an "
                          "implementation's trace (or an mflc executor) against it (docs/conformance.md).")
app.add_typer(conformance, name="conformance")


def _coverage_table(cov: dict) -> Table:
    from mflc.spec.coverage import HEADLINE

    t = Table(title="coverage (corner cases reached / existing)", title_justify="left")
    for c in ("category", "reached", "of", "not reached (first)"):
        t.add_column(c, justify="right" if c in ("reached", "of") else "left")
    for cat in sorted(cov, key=lambda c: (c not in HEADLINE, c)):
        v = cov[cat]
        t.add_row(cat if cat in HEADLINE else f"[dim]{cat}[/]", str(v["reached"]), str(v["total"]),
                  ", ".join(v["missing"][:4]))
    return t


@conformance.command("write")
@guarded
def conformance_write(build: Path = typer.Argument(..., help="Build directory (`mflc compile --out`)"),
                      out_dir: Path = typer.Option(..., "--out", help="Directory for the vector set"),
                      candidates: int = typer.Option(64, "--candidates", help="Random and repeated-token candidate "
                                                     "sequences of each kind to choose from"),
                      length: int = typer.Option(32, "--length", help="Tokens per candidate sequence"),
                      seed: int = typer.Option(0, "--seed", help="Seed of the random candidates"),
                      json_out: bool = typer.Option(False, "--json")):
    """Write a self-describing vector set: the quantized model, token sequences chosen to reach table
    entries, saturation, rounding ties and the rsqrt table, and the expected integers at every site."""
    from mflc.cli.app import check_out_dir, progress_bar
    from mflc.spec.conformance import Budget, write

    check_out_dir(out_dir)
    for opt, v, lo, hi in (("--candidates", candidates, 1, 4096), ("--length", length, 1, 4096)):
        if not lo <= v <= hi:
            raise MflcError(f"{opt} must be in [{lo}, {hi}], got {v}")
    prog, adv = progress_bar(2 * candidates + 10, "choosing sequences")
    with prog:
        idx = write(build, out_dir, Budget(random=candidates, repeated=candidates, length=length, seed=seed),
                    progress=lambda k, n: adv(k))
    if json_out:
        emit_json(dict(out=str(out_dir), sequences=len(idx["sequences"]),
                       tokens=sum(len(s["tokens"]) for s in idx["sequences"]), coverage=idx["coverage"]))
        return
    out.print(f"{out_dir}: {len(idx['sequences'])} sequences, "
              f"{sum(len(s['tokens']) for s in idx['sequences'])} tokens, {len(idx['expected']['sites'])} sites")
    out.print(_coverage_table(idx["coverage"]))


@conformance.command("check")
@guarded
def conformance_check(vectors: Path = typer.Argument(..., help="Vector set (`mflc conformance write --out`)"),
                      results: Optional[Path] = typer.Option(None, "--results", help="Another implementation's trace "
                                                             "of the vectors' sequences (docs/formats.md, Traces)"),
                      engine: Optional[str] = typer.Option(None, "--engine", help="Check one of mflc's executors instead"),
                      json_out: bool = typer.Option(False, "--json")):
    """Compare a trace with the vectors: pass, or the first differing sequence, token, site and index."""
    from mflc.spec.conformance import check

    with err.status("checking"):
        res = check(vectors, results, engine)
    if json_out:
        emit_json(res.to_dict())
    else:
        d = res.to_dict()
        out.print(f"{'[green]PASS[/]' if res.ok else '[red]FAIL[/]'}  {res.engine}: {d['sites_compared']} of "
                  f"{d['sites_expected']} sites compared, {d['values_compared']:,} integers")
        if d["sites_not_in_results"]:
            out.print(f"not in the results (not compared): {', '.join(d['sites_not_in_results'][:8])}"
                      f"{' ...' if len(d['sites_not_in_results']) > 8 else ''}")
        if res.difference is not None:
            err.print(f"[red]first difference: {res.difference.describe()}[/]", soft_wrap=True)
    if not res.ok:
        raise typer.Exit(1)
