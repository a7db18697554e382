"""``mflc estimate --sweep FILE``: the estimate of every point of a grid of model sizes and hardware
settings, one task per point (``mflc.tasks.map_tasks``, so a Dask cluster can run them), as a table,
JSON, CSV and a plot of cores and tokens/s against model size.

The sweep file is JSON (docs/estimates.md, "Sweeps")::

    {"models": ["370M", "1.3B", {"name": "wide", "d": 3072, "L": 24, "m": 8192, "V": 32000}],
     "hw": [{}, {"weight_bits": 8}],
     "density": 0.69, "system": null, "hardware": null, "prompt_len": 500, "gen_len": 100,
     "remove_inner_norm": false}

The grid is every model with every ``hw`` entry (models outer); ``"points": [{"model": ..., "hw": {...}},
...]`` lists points instead. Every field is checked before any point runs; an error names the file,
the field and the value.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from mflc.ir.errors import ConfigError, FitError, MflcError

MAX_POINTS = 10_000
MODEL_FIELDS = {"d": "hidden_size", "L": "num_hidden_layers", "m": "intermediate_size", "V": "vocab_size"}
TOP_KEYS = ("models", "hw", "points", "density", "system", "hardware", "prompt_len", "gen_len", "remove_inner_norm")
ROW_KEYS = ("label", "model", "hw", "d", "L", "m", "V", "params", "fits", "cores", "chips", "steps_per_token",
            "messages_between_chips", "generation_tokens_per_s", "prefill_tokens_per_s", "ttft_s",
            "generation_energy_per_token_J", "error", "seconds")


class SweepError(ConfigError):
    """A sweep file that cannot be run: names the file, the field and the value."""


def _int_field(v, where: str, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SweepError(f"{where}: must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise SweepError(f"{where}: {v} is outside [{lo}, {hi if hi is not None else '∞'}]")
    return v


def _model(entry, where: str) -> tuple[str, dict]:
    """(label, config.json fields) of a model entry: a preset name or {name?, d, L, m?, V}."""
    from mflc.compiler.model.config import PRESETS, ModelConfig
    from mflc.compiler.model.skeleton import check_skeleton_memory

    if isinstance(entry, str):
        if entry not in PRESETS:
            raise SweepError(f"{where}: unknown preset {entry!r}; choose one of {', '.join(PRESETS)} or give "
                             "{\"d\": ..., \"L\": ..., \"V\": ...}")
        return entry, dict(PRESETS[entry])
    if not isinstance(entry, dict):
        raise SweepError(f"{where}: a model is a preset name or an object with d, L, V (and m), got {entry!r}")
    unknown = sorted(set(entry) - set(MODEL_FIELDS) - {"name"})
    if unknown:
        raise SweepError(f"{where}: unknown field {unknown[0]!r}; a model has name, d, L, m, V")
    for k in ("d", "L", "V"):
        if k not in entry:
            raise SweepError(f"{where}: field {k!r} is missing ({MODEL_FIELDS[k]})")
    raw = {MODEL_FIELDS[k]: _int_field(entry[k], f"{where}.{k}", 1, 1 << 20) for k in MODEL_FIELDS if k in entry}
    name = entry.get("name", "d{d} L{L}".format(**entry) + (f" m{entry['m']}" if "m" in entry else "") + f" V{entry['V']}")
    if not isinstance(name, str) or not name:
        raise SweepError(f"{where}.name: must be a non-empty string, got {name!r}")
    try:
        check_skeleton_memory(ModelConfig.from_dict(dict(raw), source=where), source=where)
    except ConfigError as e:
        raise SweepError(str(e)) from None
    return name, raw


def _hw(entry, hardware, where: str) -> list[str]:
    """A hardware entry ({figure: integer}) as --hw strings, checked against the profile now."""
    from mflc.compiler.chip.hardware import resolve_profile

    if not isinstance(entry, dict):
        raise SweepError(f"{where}: a hardware setting is an object of figures, e.g. {{\"weight_bits\": 8}}, got {entry!r}")
    for k, v in entry.items():
        _int_field(v, f"{where}.{k}", 0)
    items = [f"{k}={v}" for k, v in entry.items()]
    try:
        resolve_profile(hardware, items)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None
    return items


def _read(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SweepError(f"{path}: not a JSON sweep file ({e})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a JSON object with 'models' and 'hw' (or 'points'), got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown field {unknown[0]!r}; known: {', '.join(TOP_KEYS)}")
    return raw


def _shared_settings(raw: dict, path: Path) -> dict:
    """The settings every point shares, checked: density, system, hardware, prompt and generation lengths."""
    from mflc.compiler.chip.hardware import get_system, resolve_profile

    s = dict(density=raw.get("density"), system=raw.get("system"), hardware=raw.get("hardware"),
             prompt_len=_int_field(raw.get("prompt_len", 500), f"{path}: prompt_len"),
             gen_len=_int_field(raw.get("gen_len", 100), f"{path}: gen_len", 0),
             remove_inner_norm=raw.get("remove_inner_norm", False))
    d = s["density"]
    if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d <= 1.0):
        raise SweepError(f"{path}: density: must be a number in (0, 1], got {d!r}")
    if not isinstance(s["remove_inner_norm"], bool):
        raise SweepError(f"{path}: remove_inner_norm: must be true or false, got {s['remove_inner_norm']!r}")
    for k in ("system", "hardware"):
        if s[k] is not None and not isinstance(s[k], str):
            raise SweepError(f"{path}: {k}: must be a name or null, got {s[k]!r}")
    try:
        get_system(s["system"])
        resolve_profile(s["hardware"], None)
    except MflcError as e:
        raise SweepError(f"{path}: {e}") from None
    return s


def load_sweep(path: Path) -> list[dict]:
    """The points of a sweep file, each a picklable dict that ``sweep_point`` runs, every field checked first."""
    path = Path(path)
    raw = _read(path)
    shared = _shared_settings(raw, path)
    if "points" in raw:
        if "models" in raw or "hw" in raw:
            raise SweepError(f"{path}: give either 'points' or 'models' (with 'hw'), not both")
        pts = raw["points"]
        if not isinstance(pts, list):
            raise SweepError(f"{path}: points: must be a list, got {type(pts).__name__}")
        pairs = []
        for k, p in enumerate(pts):
            if not isinstance(p, dict) or "model" not in p or set(p) - {"model", "hw"}:
                raise SweepError(f"{path}: points[{k}]: must be an object with 'model' (and 'hw'), got {p!r}")
            pairs.append((p["model"], f"points[{k}].model", p.get("hw", {}), f"points[{k}].hw"))
    else:
        models, hws = raw.get("models"), raw.get("hw", [{}])
        if not isinstance(models, list) or not models:
            raise SweepError(f"{path}: models: must be a non-empty list of presets or {{d, L, m, V}} objects, got {models!r}")
        if not isinstance(hws, list) or not hws:
            raise SweepError(f"{path}: hw: must be a non-empty list of hardware settings, got {hws!r}")
        pairs = [(m, f"models[{i}]", h, f"hw[{j}]") for i, m in enumerate(models) for j, h in enumerate(hws)]
    if not pairs:
        raise SweepError(f"{path}: the sweep has no points")
    if len(pairs) > MAX_POINTS:
        raise SweepError(f"{path}: {len(pairs):,} points, more than the limit of {MAX_POINTS:,}")
    out = []
    for m, mwhere, h, hwhere in pairs:
        name, cfg = _model(m, f"{path}: {mwhere}")
        items = _hw(h, shared["hardware"], f"{path}: {hwhere}")
        hw_label = ", ".join(items) or "default"
        out.append(dict(shared, label=f"{name} [{hw_label}]", model=name, config=cfg, hw=items, hw_label=hw_label))
    return out


def sweep_point(point: dict) -> dict:
    """One grid point's estimate as a table row (a model too large for the system is a row with
    ``fits`` false and the reason, not a failed sweep). Module-level and picklable, for Dask workers."""
    from mflc.api import estimate
    from mflc.compiler.model.config import ModelConfig
    from mflc.compiler.model.quantize import QuantOptions

    t0 = time.perf_counter()
    cfg = ModelConfig.from_dict(dict(point["config"]), source=point["label"])
    row = dict.fromkeys(ROW_KEYS)
    row.update(label=point["label"], model=point["model"], hw=point["hw_label"], d=cfg.d, L=cfg.L, m=cfg.m,
               V=cfg.vocab_size, params=cfg.n_params())
    try:
        rep, _, _ = estimate(cfg, point["density"], options=QuantOptions(remove_inner_norm=point["remove_inner_norm"]),
                             hardware=point["hardware"], hw=point["hw"], system=point["system"],
                             prompt_len=point["prompt_len"], gen_len=point["gen_len"])
    except FitError as e:
        more = f" (and {len(e.violations) - 1} more)" if len(e.violations) > 1 else ""
        row.update(fits=False, error=(e.violations[0] if e.violations else str(e)) + more,
                   seconds=round(time.perf_counter() - t0, 3))
        return row
    c = rep["cost"]
    row.update(fits=True, cores=rep["cores"], chips=rep["chips"], steps_per_token=rep["steps_per_token"],
               messages_between_chips=rep["traffic"]["messages_between_chips"],
               generation_tokens_per_s=c["throughput"]["generation_tokens_per_s"],
               prefill_tokens_per_s=c["throughput"]["prefill_tokens_per_s"], ttft_s=c["latency"]["ttft_s"],
               generation_energy_per_token_J=c["energy"]["generation_per_token_J"],
               seconds=round(time.perf_counter() - t0, 3))
    return row


def run_sweep(points: list[dict], runner=None, progress=None) -> list[dict]:
    """Every point's row, in the file's order, through ``mflc.tasks.map_tasks`` (serial or on Dask)."""
    from mflc.tasks import map_tasks

    return map_tasks(sweep_point, points, runner=runner, labels=[f"sweep point {p['label']}" for p in points],
                     progress=progress)


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as CSV (one column per ROW_KEYS entry, empty where a point does not fit)."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW_KEYS))
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r[k] is None else r[k] for k in ROW_KEYS})


def plot_sweep(rows: list[dict], path: Path) -> None:
    """Cores and generation tokens/s against parameters, one line per hardware setting (points that fit)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for hw in dict.fromkeys(r["hw"] for r in rows):
        pts = sorted((r["params"], r["cores"], r["generation_tokens_per_s"], r["model"]) for r in rows
                     if r["hw"] == hw and r["fits"])
        if not pts:
            continue
        x = [p[0] for p in pts]
        a1.plot(x, [p[1] for p in pts], "o-", label=hw)
        a2.plot(x, [p[2] for p in pts], "o-", label=hw)
        for ax, k in ((a1, 1), (a2, 2)):             # each point names its model
            for p in pts:
                ax.annotate(p[3], (p[0], p[k]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for ax, what in ((a1, "Loihi 2 cores"), (a2, "generation tokens/s")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8, title="--hw")
    fig.suptitle("mflc estimate --sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rows_table(rows: list[dict], width: int | None = None):
    """The rows as a rich table for the terminal: every cell whole at 80 columns (the --hw settings wrap
    within their column; the messages between chips, the widest figure, only where the terminal has room)."""
    from rich.table import Table

    wide = (width or 80) >= 110
    t = Table(title="estimate sweep" + ("" if wide else " (a wider terminal adds steps and messages between chips)"),
              title_justify="left")
    cols = [("model", "left"), ("--hw", "left"), ("params", "right"), ("cores", "right"), ("chips", "right")] + (
        [("steps", "right"), ("msgs between chips", "right")] if wide else []) + [
            ("gen/s", "right"), ("pre/s", "right"), ("mJ/tok", "right")]
    for col, just in cols:
        t.add_column(col, justify=just, overflow="fold", no_wrap=col not in ("--hw", "model"),
                     min_width={"model": 5, "--hw": 9}.get(col))
    for r in rows:
        if not r["fits"]:
            t.add_row(r["model"], r["hw"], _size(r["params"]), "no fit", *[""] * (len(cols) - 4))
            continue
        cells = [r["model"], r["hw"].replace(",", ", "), _size(r["params"]), f"{r['cores']:,}", f"{r['chips']:,}"] + (
            [f"{r['steps_per_token']:,}", f"{r['messages_between_chips']:,}"] if wide else []) + [
                 _g(r["generation_tokens_per_s"]), _g(r["prefill_tokens_per_s"]),
                 _g(r["generation_energy_per_token_J"] * 1e3)]
        t.add_row(*cells)
    return t


def _g(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _size(n: int) -> str:
    """A parameter count as people say it: 37.6 k, 374 M, 2.7 B."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return str(n)
