"""Lava commands: export-lava (describe/build the lava-nc process network of a build) and the Lava path of verify."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from mflc.cli.app import app, check_out_file, emit_json, err, guarded, kv_table, out, progress_bar, resolve_model
from mflc.ir.errors import MflcError


def load_graph_for_lava(path: Path):
    """(graph, vocabulary size) of a build directory (its placed IR if there is one) or a model directory."""
    if not path.exists():
        raise MflcError(f"{path}: no such model or build directory")
    from mflc.cli.open import load_for_simulation

    _, g, _, _ = load_for_simulation(path)      # a build: hashes checked, placed IR and layout legal
    if not g.inputs:
        raise MflcError(f"{path}: the graph has no host input")
    vocab = int(g.host_tensors[g.inputs[0].table].shape[0])
    return g, vocab


def _summary_tables(plan: dict) -> list[Table]:
    t = Table(title="Lava processes", title_justify="left")
    t.add_column("Lava class")
    t.add_column("count", justify="right")
    for cls, n in sorted(plan["process_counts"].items(), key=lambda kv: -kv[1]):
        t.add_row(cls, str(n))
    enc: dict[tuple, list] = {}
    for p in plan["processes"]:
        if p.get("kind") == "synapse":
            key = (p["lava_class"], p["sign_mode"], p["weight_shift"], p["ir_weight_exp"], p["lava_weight_exp"])
            row = enc.setdefault(key, [0, 0, 0])
            row[0] += 1
            row[1] += p["nnz"]
            row[2] = max(row[2], p["acc_bits"])
    e = Table(title="synapse encodings: Lava w = IR w << shift, Lava exp = IR exp - shift", title_justify="left")
    e.add_column("Lava class", no_wrap=True)
    e.add_column("sign mode", no_wrap=True)
    for c in ("shift", "exp IR → Lava", "groups", "synapses", "acc bits"):     # 7 columns: readable at 80
        e.add_column(c, justify="right", no_wrap=c != "exp IR → Lava")
    for (cls, mode, sh, ie, le), (n, nnz, ab) in sorted(enc.items()):
        e.add_row(cls, mode, str(sh), f"{ie} → {le}", str(n), f"{nnz:,}", f"{ab}/32")
    return [t, e]


@app.command("export-lava")
@guarded
def export_lava_cmd(build: Path = typer.Argument(..., help="Build directory (from compile) or model directory"),
                    out_file: Optional[Path] = typer.Option(None, "--out", help="Write the network description (JSON) here"),
                    tokens: int = typer.Option(4, help="Tokens the input RingBuffer holds (random, from --seed)"),
                    seed: int = typer.Option(0, help="Seed of the random tokens"),
                    schedule: str = typer.Option("sequential", help="sequential or pipelined token injection"),
                    mixed_shift: Optional[int] = typer.Option(None, help="Default: each synapse group at its stored weight width (num_weight_bits; ternary 2, the ±128 encoding). k: the 8-bit encoding, mixed-sign weights pre-scaled by 2^k with weight_exp - k (k >= 1)"),
                    json_out: bool = typer.Option(False, "--json", help="Print the whole description as JSON")):
    """Export a build as a lava-nc process network: neuron programs as fixed-point Lava processes, synapse
    groups as Lava Dense/Sparse (with delays: DelayDense/DelaySparse), host I/O as RingBuffers. Lava objects
    do not serialize, so what is written is a JSON description: processes, ports, connections, weight encoding."""
    from mflc.simulator.lava_backend import export_lava, lava_available, plan_lava

    if out_file is not None:
        check_out_file(out_file)
    if schedule not in ("sequential", "pipelined"):
        raise MflcError(f"--schedule {schedule!r}: choose sequential or pipelined")
    if tokens < 1:
        raise MflcError(f"--tokens must be >= 1, got {tokens}")
    if mixed_shift is not None and mixed_shift < 1:
        raise MflcError(f"--mixed-shift must be >= 1 (Lava drops the lowest weight bit of mixed-sign weights), got {mixed_shift}")
    from mflc.cli.open import is_build_dir
    from mflc.simulator.lava_backend import check_profile_for_lava

    hw = None
    if build.exists() and is_build_dir(build):   # the build's hardware profile: refused if Lava cannot run it
        from mflc.build import Build

        hw = Build.load(build, check_hashes=False).hardware   # load_graph_for_lava checks the hashes
        check_profile_for_lava(hw)
    g, vocab = load_graph_for_lava(build)
    toks = np.random.default_rng(seed).integers(0, vocab, tokens).tolist()
    plan = plan_lava(g, toks, schedule, mixed_shift, hw=hw)
    if lava_available():
        t0 = time.perf_counter()
        net = export_lava(g, toks, schedule, mixed_shift, hw=hw)
        plan["instantiated"] = dict(processes=net.n_processes, seconds=time.perf_counter() - t0)
    else:
        plan["instantiated"] = None
    plan["source"] = str(build)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(plan, indent=1, default=_jsonable) + "\n")
    if json_out:
        emit_json(plan)
        return
    rows = [("neuron processes", len(g.groups)), ("synapse processes", len(g.synapses)),
            ("I/O processes", len(g.inputs) + len(g.outputs) + len(g.state)),
            ("tokens / schedule", f"{tokens} / {schedule}"), ("Lava steps", plan["steps"]),
            ("built with lava-nc", "yes" if plan["instantiated"] else "no (lava-nc not installed: description only)"),
            ("written to", str(out_file) if out_file else "-")]
    out.print(kv_table(f"export-lava {build}", rows))
    for t in _summary_tables(plan):
        out.print(t)


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def verify_lava_cmd(model: Path, tokens: int, seed: int, json_out: bool) -> None:
    """`mflc verify MODEL --engine lava` (or --backend lava): Lava (Loihi2SimCfg, fixed_pt, tokens pipelined)
    against the integer reference, exactly, through the executor registry."""
    from mflc.cli.open import is_build_dir, load_for_simulation, render_checks
    from mflc.executors import why_unavailable, verify_executor

    model = resolve_model(model)
    reason = why_unavailable("lava")
    if reason:
        raise MflcError(f"--engine lava {reason}")
    if tokens < 1:
        raise MflcError(f"--tokens must be >= 1, got {tokens}")
    checks = []
    if is_build_dir(model):                # the same static checks as the engine path, before any Lava run
        from mflc.build import Build

        b = Build.load(model)
        checks = b.checks()
        if not all(c.ok for c in checks):
            bad = next(c for c in checks if not c.ok)
            if json_out:
                emit_json(dict(ok=False, tokens=0, compared_values=0, divergence=None, counters={}, seed=seed,
                               engine="lava", checks=[c.to_dict() for c in checks], failed_check=bad.name))
            else:
                render_checks(checks, f"verify {model} --backend lava")
                err.print(f"[red]verify: check '{bad.name}' failed; the Lava run was not started[/]", soft_wrap=True)
            raise typer.Exit(1)
        qm, graph = b.quantized, b.placed
    else:
        qm, graph, _, _ = load_for_simulation(model)
    toks = np.random.default_rng(seed).integers(0, qm.cfg.vocab_size, tokens).tolist()
    prog, adv = progress_bar(tokens, "integer reference")
    t0 = time.perf_counter()
    with prog:
        res = verify_executor("lava", qm, graph, toks, progress=adv)
    dt = time.perf_counter() - t0
    if json_out:
        d = res.to_dict()
        d.update(seed=seed, seconds=dt, engine="lava", checks=[c.to_dict() for c in checks], failed_check=None)
        emit_json(d)
    else:
        c = res.counters
        rows = [("tokens", res.tokens), ("values compared (logits + states)", f"{res.compared_values:,}"),
                ("result", "[green]bit-exact[/]" if res.ok else "[red]MISMATCH[/]"),
                ("Lava processes", c["processes"]), ("Lava steps", f"{c['lava_steps']} ({c['schedule']})"),
                ("Lava run seconds", f"{c['run_seconds']:.2f}"), ("seconds", f"{dt:.2f}")]
        if checks:
            render_checks(checks, f"verify {model} --backend lava")
        out.print(kv_table(f"verify {model} --backend lava (seed {seed})", rows))
        if res.divergence:
            err.print(f"[red]{escape(res.divergence.describe())}[/]", soft_wrap=True)
    if not res.ok:
        raise typer.Exit(1)
