"""Serial against Dask (``--workers N``) wall time of the commands that split into tasks, measured in one
run, alternating, so a loaded machine slows both alike: ``mflc eval --heldout`` and ``mflc verify BUILD
--sequences 8``. Each command runs as its own process (the cluster's start-up and the workers' loading
are part of what ``--workers`` costs); the JSON reports of both runs must be equal (timings aside).

    .venv/bin/python -m mflc.bench.tasks [--workers 2] [--repeat 3] [--sequences 8] [--tokens 16] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from mflc.cli import main; main()"]


def _without_seconds(obj):
    """A JSON report with every timing removed, to compare the results of two runs."""
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


def timed(args: list[str]) -> tuple[float, dict]:
    """(wall seconds, JSON report) of one mflc command in a fresh process."""
    t0 = time.perf_counter()
    r = subprocess.run(CLI + args + ["--json"], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"mflc {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt, json.loads(r.stdout)


def bench(name: str, args: list[str], workers: int, repeat: int, progress) -> dict:
    """Median wall time serial and with --workers, alternating; the reports must agree."""
    times = {"serial": [], "dask": []}
    for k in range(repeat):
        for mode, extra in (("serial", []), ("dask", ["--workers", str(workers)])):
            dt, rep = timed(args + extra)
            times[mode].append(dt)
            if mode == "serial":
                want = _without_seconds(rep)
            elif _without_seconds(rep) != want:
                raise SystemExit(f"{name}: the --workers {workers} report differs from the serial one")
            progress(f"{name}: {mode} run {k + 1}/{repeat}: {dt:.1f} s")
    s, d = statistics.median(times["serial"]), statistics.median(times["dask"])
    return dict(command=f"mflc {' '.join(args)}", serial_s=s, dask_s=d, speedup=s / d, runs=times)


def main(argv=None) -> None:
    """Measure, print a table (or --json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--build", type=Path, default=None, help="Build to verify (default: compile the default model)")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from rich.console import Console

    err = Console(stderr=True)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        build = a.build
        if build is None:
            build = Path(tmp) / "b"
            subprocess.run(CLI + ["compile", "--out", str(build), "--json"], check=True, capture_output=True)
        cases = [] if a.skip_eval else [("eval --heldout", ["eval", "--heldout"])]
        cases.append((f"verify --sequences {a.sequences}",
                      ["verify", str(build), "--sequences", str(a.sequences), "--tokens", str(a.tokens)]))
        rows = [dict(case=n, **bench(n, args, a.workers, a.repeat, err.log)) for n, args in cases]
    meta = dict(cpus=os.cpu_count(), workers=a.workers, repeat=a.repeat, load_before=load0, load_after=os.getloadavg())
    if a.json:
        print(json.dumps(dict(rows=rows, **meta), indent=2))
        return
    from rich.table import Table

    t = Table(title=f"serial vs --workers {a.workers} (median of {a.repeat}, wall time of the whole command; "
                    f"{meta['cpus']} CPUs, load {load0[0]:.1f} -> {meta['load_after'][0]:.1f})", title_justify="left")
    for c in ("command", "serial s", f"--workers {a.workers} s", "speed-up"):
        t.add_column(c, justify="left" if c == "command" else "right")
    for r in rows:
        t.add_row(r["command"], f"{r['serial_s']:.1f}", f"{r['dask_s']:.1f}", f"{r['speedup']:.2f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
