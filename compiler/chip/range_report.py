"""How the range of a chip count is shown: tables of the profiles, the low / assumed / high corners and the
sensitivity to each uncertain figure (``mflc estimate``, the compile report), the per-layer table of a
NetX network, and the sensitivity as a tornado chart."""
from __future__ import annotations

from rich.table import Table

from .hardware import LABEL


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def _val(v) -> str:
    if isinstance(v, dict):
        return "/".join(str(x) for x in v.values())
    return _n(v) if isinstance(v, int) else str(v)


def _counts(chips, cores, error) -> str:
    return "does not fit" if error else f"{_n(chips)} ({_n(cores)})"


def render_range(rep: dict, console) -> None:
    """Cores and chips under each profile and at the corners of the figures' ranges, then the sensitivity."""
    r = rep["range"]
    t = Table(title="chips (cores) by hardware profile and figure range", title_justify="left")
    for c in ("profile / figures", "chips (cores)", "binding limit"):
        t.add_column(c, justify="right" if c == "chips (cores)" else "left")
    for name, p in r["profiles"].items():
        mark = " (this run)" if name == r["profile"] else ""
        t.add_row(f"{name}{mark}", _counts(p.get("chips"), p.get("cores"), p.get("error")),
                  LABEL.get(p.get("binding"), p.get("binding") or "-"))
    fav, unf = r["all_favourable"], r["all_unfavourable"]
    t.add_row(f"{r['profile']}: every figure favourable", _counts(fav.get("chips"), fav.get("cores"), fav.get("error")),
              LABEL.get(fav.get("binding"), "-"))
    t.add_row(f"{r['profile']}: assumed", _counts(r["chips"], r["cores"], r.get("error")),
              LABEL.get(r.get("binding"), "-"))
    t.add_row(f"{r['profile']}: every figure unfavourable",
              _counts(unf.get("chips"), unf.get("cores"), unf.get("error")), LABEL.get(unf.get("binding"), "-"))
    console.print(t)
    console.print(f"range: {_n(r['chips_low'])} to {_n(r['chips_high'])} chips ({_n(r['cores_low'])} to "
                  f"{_n(r['cores_high'])} cores); assumed {_n(r['chips'])} ({_n(r['cores'])})", highlight=False)
    if r.get("chips_high_note"):
        console.print(r["chips_high_note"], highlight=False)
    s = Table(title="sensitivity: one figure moved alone (largest effect first)", title_justify="left")
    s.add_column("figure", no_wrap=True)
    s.add_column("low | assumed | high", justify="right", overflow="fold")
    s.add_column("chips at low", justify="right", no_wrap=True)
    s.add_column("at high", justify="right", no_wrap=True)
    for row in r["sensitivity"]:
        s.add_row(row["figure"], f"{_val(row['low'])} | {_val(row['value'])} | {_val(row['high'])}",
                  _counts(row["chips_at_low"], row["cores_at_low"], row["error_at_low"]),
                  _counts(row["chips_at_high"], row["cores_at_high"], row["error_at_high"]))
    console.print(s)
    console.print("chips (cores) per row; docs/layout.md gives each figure's sources and docs/estimates.md "
                  "the calibration behind loihi2-lava", style="dim", highlight=False)
    if rep.get("cost_range"):
        render_cost_range(rep["cost_range"], console)


def render_cost_range(cr: dict, console) -> None:
    """Throughput, latency and energy at the favourable, assumed and unfavourable layouts."""
    t = Table(title="time and energy across the range (the same cost model)", title_justify="left")
    for c in ("layout", "chips", "gen. tok/s", "prefill tok/s", "TTFT", "mJ/token"):
        t.add_column(c, justify="left" if c == "layout" else "right", no_wrap=True)
    for name, key in (("favourable", "all_favourable"), ("assumed", "assumed"), ("unfavourable", "all_unfavourable")):
        x = cr.get(key) or {}
        if "error" in x:
            t.add_row(name, "does not fit", "-", "-", "-", "-")
            continue
        t.add_row(name, _n(x.get("chips")), f"{x['generation_tokens_per_s']:.3g}", f"{x['prefill_tokens_per_s']:.3g}",
                  f"{x['ttft_s'] * 1e3:.3g} ms", f"{x['generation_energy_per_token_J'] * 1e3:.3g}")
    console.print(t)


def render_netx_layers(rep: dict, console) -> None:
    """One row per dense layer of a NetX network, and the layers not costed."""
    t = Table(title="dense layers (inputs -> neurons)", title_justify="left")
    for c in ("layer", "shape", "synapses", "bits", "SynMem units", "cores"):
        t.add_column(c, justify="left" if c in ("layer", "shape") else "right")
    for x in rep["layers"]:
        t.add_row(x["name"], f"{x['shape'][0]:,} -> {x['shape'][1]:,}", _n(x["synapses"]), str(x["weight_bits"]),
                  f"{x['synmem_units']:,.0f}", _n(x["cores"]))
    for g in rep.get("input_groups", []):
        t.add_row(f"input of {g['group']}", f"{g['neurons']:,}", "-", "-", "-", _n(g["cores"]))
    console.print(t)
    if rep.get("skipped_layers"):
        console.print("not costed: " + ", ".join(f"layer {s['layer']} ({s['type']})" for s in rep["skipped_layers"]),
                      highlight=False)


def plot_tornado(rep: dict, path) -> None:
    """The sensitivity table as a tornado chart: for each figure a bar from the chips at its low value to the
    chips at its high value, around the assumed count (figures that do not fit at one end are marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = rep["range"]
    rows = [x for x in r["sensitivity"]][::-1]
    base = r["chips"]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * max(1, len(rows))))
    for i, row in enumerate(rows):
        for end, colour in (("low", "#4477aa"), ("high", "#ee6677")):
            v = row[f"chips_at_{end}"]
            if v is None:
                ax.text(base, i, f"{end}: does not fit ", ha="right", va="center", fontsize=8)
                continue
            ax.barh(i, v - base, left=base, color=colour, height=0.6,
                    label=f"figure at its {end} value" if i == 0 else None)
            ax.text(v, i, f" {v:,}", va="center", fontsize=8, ha="left" if v >= base else "right")
    ax.axvline(base, color="black", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([x["figure"] for x in rows], fontsize=8)
    ax.set_xlabel(f"chips ({r['profile']}; assumed {base:,}, black line)")
    ax.set_title("which uncertain figure moves the chip count most", fontsize=10)
    if rows:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
