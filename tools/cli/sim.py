"""Simulation commands: verify (engine vs integer reference, exactly) and generate (text from the simulated chip)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from rich.markup import escape

from mflc.cli.app import resolve_model, app, emit_json, err, guarded, kv_table, out, progress_bar
from mflc.cli.open import is_build_dir, load_for_simulation, render_checks
from mflc.cli.tasks import SchedulerOpt, WorkersOpt, run_tasks, runner_from
from mflc.ir.errors import MflcError
from mflc.tasks import Runner, worker_cached

MAX_VERIFY_TOKENS = 1_000_000      # verify runs the integer reference and the simulator on every token
MAX_NEW_TOKENS = 100_000           # generate steps the simulated chip once per token
MAX_VERIFY_SEQUENCES = 100_000     # verify --sequences: one task (and one table row) each
REFERENCE = "int-model"            # the executor verify compares the others against


def check_count(option: str, value: int, lo: int, hi: int, limit_name: str) -> None:
    """Refuse a count option outside [lo, hi], naming the limit that sets hi."""
    if value < lo:
        raise MflcError(f"{option} must be >= {lo}, got {value}")
    if value > hi:
        raise MflcError(f"{option} {value:,} is above the limit {limit_name} = {hi:,}")


def _sides_row(executor: str, stepwise: bool) -> list[tuple[str, str]]:
    """How the engine and sequence executors ran both sides (the others have one way each)."""
    if executor not in ("engine", "sequence"):
        return []
    return [("both sides run", "token by token (--stepwise)" if stepwise else "whole sequence")]


def counter_rows(counters: dict) -> list[tuple[str, str]]:
    """The activity rows of a verify table, for an executor that counts (the engine)."""
    if "synops" not in counters:
        return []
    return [("synaptic ops", f"{counters['synops']:,}"), ("neuron updates", f"{counters['neuron_updates']:,}")]


@dataclass(frozen=True)
class VerifySequence:
    """One random sequence of ``mflc verify --sequences``: a task of its own, the build by path and by the
    SHA-256 of its manifest (which lists every file's hash), so a worker never runs another build."""

    build: str
    manifest_sha256: str
    engine: str
    index: int
    seed: int
    tokens: int
    stepwise: bool = False


def _worker_build(task: VerifySequence):
    """The task's build, loaded (every hash checked) once per worker process while build.json is unchanged."""
    from mflc.build import MANIFEST, Build, file_sha256

    mf = Path(task.build) / MANIFEST
    now = file_sha256(mf) if mf.is_file() else None
    if now != task.manifest_sha256:
        import socket

        raise MflcError(f"{task.build}: the build on {socket.gethostname()} is not the one verify started with "
                        f"({MANIFEST} {'missing' if now is None else 'differs'}): it was recompiled meanwhile, or "
                        "this worker does not share the client's filesystem at the same path")
    return worker_cached(("build", task.build), now, lambda: Build.load(Path(task.build)))


def verify_sequence(task: VerifySequence):
    """(VerifyResult, seconds) of one sequence: ``task.tokens`` random tokens drawn with ``task.seed``, the
    build's static checks already made by the caller."""
    b = _worker_build(task)
    t0 = time.perf_counter()
    v = b.verify(task.tokens, task.seed, engine=task.engine, checked=[], stepwise=task.stepwise)
    return v.simulation, time.perf_counter() - t0


def verify_sequences(path: Path, tokens: int, seed: int, sequences: int, engine: str = "engine",
                     runner: Runner | None = None, checks=None, stepwise: bool = False):
    """(checks, [(VerifyResult, seconds)] in sequence order): the build's static checks once (or the given
    ``checks``), then, if they pass, sequence k (``tokens`` random tokens of seed ``seed + k``, what
    ``mflc verify --seed SEED+k`` runs alone) as a task each; no results when a check failed."""
    from mflc.build import MANIFEST, Build, file_sha256

    b = Build.load(path)
    checks = b.verify(simulate=False).checks if checks is None else checks
    if not all(c.ok for c in checks):
        return checks, []
    build = str(Path(path).resolve())
    sha = file_sha256(Path(build) / MANIFEST)
    tasks = [VerifySequence(build, sha, engine, k, seed + k, tokens, stepwise) for k in range(sequences)]
    labels = [f"sequence {k} (seed {seed + k})" for k in range(sequences)]
    return checks, run_tasks(verify_sequence, tasks, labels, runner or Runner(), "sequences")


def _sequences_report(path: Path, tokens: int, seed: int, engine: str, checks, done, dt: float, json_out: bool) -> bool:
    """Print verify --sequences' checks and one row per sequence; name each sequence that diverged."""
    ok = all(c.ok for c in checks) and bool(done) and all(r.ok for r, _ in done)
    rows = [dict(sequence=k, seed=seed + k, seconds=s, **r.to_dict()) for k, (r, s) in enumerate(done)]
    if json_out:
        emit_json(dict(ok=ok, checks=[c.to_dict() for c in checks], sequences=rows, tokens=tokens, seed=seed,
                       failed_check=next((c.name for c in checks if not c.ok), None), engine=engine, seconds=dt,
                       failed_sequences=[r["sequence"] for r in rows if not r["ok"]]))
        return ok
    from rich.table import Table

    render_checks(checks, f"verify {path} (static checks, once)")
    if not done:
        bad = next(c for c in checks if not c.ok)
        err.print(f"[red]verify: check '{bad.name}' failed; no sequence was simulated[/]", soft_wrap=True)
        return ok
    t = Table(title=f"simulation: {len(done)} random sequences of {tokens} tokens, executor {engine} ({dt:.2f} s in all)",
              title_justify="left")
    for c in ("sequence", "seed", "values compared", "result", "seconds"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r["sequence"]), str(r["seed"]), f"{r['compared_values']:,}",
                  "[green]bit-exact[/]" if r["ok"] else "[red]MISMATCH[/]", f"{r['seconds']:.2f}")
    out.print(t)
    for k, (r, _) in enumerate(done):
        if not r.ok:
            err.print(f"[red]sequence {k} (seed {seed + k}, `mflc verify {escape(str(path))} --seed {seed + k} "
                      f"--tokens {tokens}` alone) diverged: {escape(r.divergence.describe())}[/]", soft_wrap=True)
    return ok


def _unloadable_verdict(path: Path, e: Exception, json_out: bool) -> None:
    """verify of a build that cannot even be loaded: with --json a verdict naming the failed check
    (integrity) like any other failure, then exit 1."""
    if not json_out:
        raise e
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    emit_json(dict(ok=False, error=str(e), exit_status=1, command="verify",        # as every --json failure
                   failed_check="integrity", build=str(path), tokens=0, compared_values=0,
                   divergence=None, counters={},
                   checks=[dict(name="integrity", ok=False, detail=str(e), seconds=0.0, problems=[str(e)], n_problems=1)]))
    raise typer.Exit(1)


def verify_build(path: Path, tokens: int, seed: int, text: Optional[Path], json_out: bool,
                 engine: str = "engine", sequences: int = 1, runner: Runner | None = None,
                 stepwise: bool = False, source: Optional[Path] = None) -> None:
    """verify on a build: every check of ``Build.checks`` in order, then the bit-exact simulation (of
    ``sequences`` random sequences as tasks, when more than one or a Dask runner is asked for)."""
    from mflc.build import Build

    runner = runner or Runner()
    if sequences > 1 or not runner.serial:
        if source is not None:
            raise MflcError("--source is checked once, with one sequence; drop --sequences / --workers / --scheduler")
        if text is not None:
            raise MflcError(f"--text and --sequences {sequences} / --workers / --scheduler: a text is one sequence; "
                            "random sequences are drawn from --seed (give one or the other)")
        t0 = time.perf_counter()
        checks, done = verify_sequences(path, tokens, seed, sequences, engine, runner, stepwise=stepwise)
        if not _sequences_report(path, tokens, seed, engine, checks, done, time.perf_counter() - t0, json_out):
            raise typer.Exit(1)
        return
    try:
        b = Build.load(path)
    except MflcError as e:
        return _unloadable_verdict(path, e, json_out)
    toks: int | list[int] = tokens
    if text is not None:
        from mflc.cli.model import read_text_tokens

        toks = read_text_tokens(text, b.quantized.cfg.vocab_size, path, tokens)
        if not toks:
            raise MflcError(f"{text}: empty text file")
    n = tokens if isinstance(toks, int) else len(toks)
    prog, adv = progress_bar(n, "integer reference")
    t0 = time.perf_counter()
    with prog:
        v = b.verify(toks, seed, progress=adv, engine=engine, stepwise=stepwise, source=source)
    dt = time.perf_counter() - t0
    res = v.simulation
    if json_out:
        d = res.to_dict() if res is not None else dict(ok=False, tokens=0, compared_values=0, divergence=None, counters={})
        d.update(ok=v.ok, checks=[c.to_dict() for c in v.checks], failed_check=v.failed.name if v.failed else None,
                 seed=seed, text=str(text) if text else None, seconds=dt, engine=engine, stepwise=stepwise)
        emit_json(d)
    else:
        render_checks(v.checks, f"verify {path} ({text or f'random tokens, seed {seed}'})")
        if res is not None:
            out.print(kv_table("simulation", [
                ("tokens", res.tokens), ("values compared (logits + states)", f"{res.compared_values:,}"),
                ("result", "[green]bit-exact[/]" if res.ok else "[red]MISMATCH[/]"), ("executor", engine),
                *_sides_row(engine, stepwise),
                *counter_rows(res.counters), ("seconds", f"{dt:.2f}")]))
            if res.divergence:
                err.print(f"[red]{escape(res.divergence.describe())}[/]", soft_wrap=True)
        else:
            err.print(f"[red]verify: check '{v.failed.name}' failed; the simulation was not run[/]", soft_wrap=True)
    if not v.ok:
        raise typer.Exit(1)


@app.command("verify")
@guarded
def verify_cmd(model: Optional[Path] = typer.Argument(None, help="Build directory (from compile) or model directory (default: the embedded default model)"),
               tokens: int = typer.Option(16, help="Number of random tokens to run"),
               seed: int = typer.Option(0, help="Seed of the random tokens"),
               text: Optional[Path] = typer.Option(None, "--text", help="Run the first --tokens bytes of this text file instead of random tokens"),
               engine: Optional[str] = typer.Option(None, "--engine", help="Executor under test (see `mflc executors`; default engine)"),
               backend: Optional[str] = typer.Option(None, help="Alias of --engine (engine or lava)"),
               sequences: int = typer.Option(1, "--sequences", help="Verify this many random sequences of --tokens "
                                             "each (sequence k drawn with seed --seed + k), each a task; the build's "
                                             "static checks run once"),
               workers: Optional[str] = WorkersOpt, scheduler: Optional[str] = SchedulerOpt,
               stepwise: bool = typer.Option(False, "--stepwise", help="Both sides token by token (the integer "
                                             "model's step and the engine) instead of whole-sequence: slower, the "
                                             "path before whole-sequence execution (engine and sequence executors)"),
               source: Optional[Path] = typer.Option(None, "--source", help="Also check that the build was compiled "
                                                     "from this checkpoint (names each file that differs)"),
               json_out: bool = typer.Option(False, "--json")):
    """Run the integer reference model and an executor (the simulator) side by side; exit 0 only if every logit and state is equal."""
    from mflc import executors

    if engine is not None and backend is not None and executors.canonical(engine) != executors.canonical(backend, "--backend"):
        raise MflcError(f"--engine {engine} and --backend {backend} disagree; give one (--backend is an alias of --engine)")
    name = executors.canonical(engine or backend or "engine", "--engine" if engine or not backend else "--backend")
    if name == REFERENCE:
        raise MflcError(f"--engine {engine or backend}: that is the integer reference model itself, what verify "
                        "compares an executor against, so it would only be compared with itself. Give an executor "
                        f"to check: {', '.join(n for n in executors.names() if n != REFERENCE)} (`mflc executors`)")
    check_count("--tokens", tokens, 1, MAX_VERIFY_TOKENS, "MAX_VERIFY_TOKENS")
    check_count("--sequences", sequences, 1, MAX_VERIFY_SEQUENCES, "MAX_VERIFY_SEQUENCES")
    if seed < 0:
        raise MflcError(f"--seed must be >= 0, got {seed}")
    if stepwise and name not in ("engine", "sequence"):
        raise MflcError(f"--stepwise applies to the engine and sequence executors (both sides token by token); "
                        f"--engine {name} runs its own way")
    runner = runner_from(workers, scheduler)
    model = resolve_model(model)
    split = sequences > 1 or not runner.serial
    if split and (name == "lava" or not (model.exists() and is_build_dir(model))):
        raise MflcError(f"--sequences {sequences} / --workers / --scheduler verify a build directory with a "
                        f"simulator executor; {model} is {'run by lava' if name == 'lava' else 'not a build'} "
                        "(compile one with `mflc compile MODEL --out BUILD`)")
    if name == "lava":
        from mflc.cli.lava import verify_lava_cmd

        return verify_lava_cmd(model, tokens, seed, json_out)
    if json_out and not model.exists():
        return _unloadable_verdict(model, MflcError(f"{model}: no such build or model directory"), True)
    if model.exists() and is_build_dir(model):
        return verify_build(model, tokens, seed, text, json_out, name, sequences, runner, stepwise, source)
    if source is not None:
        raise MflcError(f"--source checks a build's provenance; {model} is not a build directory")
    qm, graph, cm, ref = load_for_simulation(model)
    if text is not None:
        from mflc.cli.model import read_text_tokens

        toks = read_text_tokens(text, qm.cfg.vocab_size, model, tokens)
        if not toks:
            raise MflcError(f"{text}: empty text file")
        tokens = len(toks)
    else:
        toks = np.random.default_rng(seed).integers(0, qm.cfg.vocab_size, tokens).tolist()
    prog, adv = progress_bar(tokens, "integer reference")
    t0 = time.perf_counter()
    with prog:
        res = executors.verify_executor(name, qm, graph, toks, cm, progress=adv, reference_graph=ref,
                                        **(dict(stepwise=True) if stepwise else {}))
    dt = time.perf_counter() - t0
    if json_out:
        d = res.to_dict()
        d.update(seed=seed, text=str(text) if text else None, seconds=dt, engine=name, stepwise=stepwise)
        emit_json(d)
    else:
        rows = [("tokens", res.tokens), ("values compared (logits + states)", f"{res.compared_values:,}"),
                ("result", "[green]bit-exact[/]" if res.ok else "[red]MISMATCH[/]"), ("executor", name),
                *_sides_row(name, stepwise),
                *counter_rows(res.counters), ("seconds", f"{dt:.2f}")]
        out.print(kv_table(f"verify {model} ({text or f'random tokens, seed {seed}'})", rows))
        if res.divergence:
            err.print(f"[red]{escape(res.divergence.describe())}[/]", soft_wrap=True)
    if not res.ok:
        raise typer.Exit(1)


@app.command("generate")
@guarded
def generate_cmd(model: Optional[Path] = typer.Argument(None, help="Build directory or model directory (default: the embedded default model)"),
                 prompt: str = typer.Option("", help="Prompt text"),
                 max_new_tokens: int = typer.Option(64, help="Tokens to generate"),
                 temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples from the softmax of the logits"),
                 seed: int = typer.Option(0),
                 engine: str = typer.Option("fast", help="Executor (see `mflc executors`); fast falls back to engine, "
                                            "with a note, for a graph the fast path cannot run"),
                 json_out: bool = typer.Option(False, "--json")):
    """Generate text token by token from the simulated chip (bytes, or the model's tokenizer.json)."""
    check_count("--max-new-tokens", max_new_tokens, 0, MAX_NEW_TOKENS, "MAX_NEW_TOKENS")
    if not (np.isfinite(temperature) and temperature >= 0):
        raise MflcError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if seed < 0:
        raise MflcError(f"--seed must be >= 0, got {seed}")
    from mflc import executors

    engine = executors.canonical(engine)
    model = resolve_model(model)
    from mflc.compiler.model.tokenizer import tokenizer_for

    qm, graph, cm, _ = load_for_simulation(model)
    tok = tokenizer_for(model, qm.cfg.vocab_size)
    ids = tok.encode(prompt, source="--prompt") or tok.start_tokens()
    if max_new_tokens < 0:
        raise MflcError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    rng = np.random.default_rng(seed)
    # the engine and the IR reference run the prompt pipelined (one token per step; the same integers)
    # the fast executor ingests the prompt whole-sequence where that measured faster than stepping
    # (executors.FastExecutor, prefill=None: small graphs), else token by token
    ex, note = executors.create_with_fallback(engine, "engine" if engine == "fast" else None, qm=qm, graph=graph,
                                              core_map=cm, schedule="pipelined")
    if note:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    step = ex.step
    t0 = time.perf_counter()
    logits = ex.run(ids).outputs["logits"][-1]     # prefill
    t_prefill = time.perf_counter() - t0
    new: list[int] = []
    t1 = time.perf_counter()
    for _ in range(max_new_tokens):
        if temperature > 0:
            z = logits.astype(np.float64) * qm.meta["logit_scale"] / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        else:
            nxt = int(np.argmax(logits))
        new.append(nxt)
        logits = step(nxt)
    t_gen = time.perf_counter() - t1
    text = tok.decode_continuation(ids, new)
    stats = dict(engine=ex.name, prompt_tokens=len(ids), new_tokens=len(new), steps_per_token=graph.depth,
                 prefill_steps=len(ids) + graph.depth - 1, prefill_seconds=t_prefill,
                 generation_tokens_per_second=len(new) / t_gen if t_gen > 0 else None)
    if json_out:
        emit_json(dict(text=text, tokens=new, **stats))
        return
    out.print(prompt + text, highlight=False, markup=False)
    err.print(f"[dim]{len(new)} tokens, {stats['generation_tokens_per_second'] or 0:.1f} tokens/s simulated; "
              f"{graph.depth} chip steps per token; prefill of {len(ids)} tokens in {stats['prefill_steps']} steps[/]")


@app.command("executors")
@guarded
def executors_cmd(json_out: bool = typer.Option(False, "--json")):
    """The registered executors (the names --engine takes), what each needs and whether it can run here."""
    from rich.table import Table

    from mflc import executors

    rows = [dict(name=s.name, needs=s.needs, description=s.description,
                 aliases=[a for a, n in executors.ALIASES.items() if n == s.name],
                 unavailable=s.unavailable(None)) for s in executors.REGISTRY.values()]
    if json_out:
        emit_json(rows)
        return
    t = Table(title="executors (--engine NAME)", title_justify="left")
    longest = max((len(w) for r in rows for w in r["description"].split()), default=10)
    t.add_column("name", no_wrap=True)
    t.add_column("needs", max_width=12)
    t.add_column("here", max_width=14)
    t.add_column("what", min_width=min(longest, 40))        # a path in a description is never cut mid-word
    for r in rows:
        t.add_row(r["name"] + "".join(f"\n({a})" for a in r["aliases"]),
                  "quantized model" if r["needs"] == "quantized" else "IR graph + core map",
                  "[green]yes[/]" if not r["unavailable"] else f"[red]no[/]: {escape(r['unavailable'])}",
                  escape(r["description"]))
    out.print(t)
