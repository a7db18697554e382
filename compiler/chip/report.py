"""The layout report: per-group resources (in the spirit of the closed compiler's 'per core distribution'),
utilization by kind, chips needed and the smallest system that fits, traffic; rich tables and a picture.

``build_report`` returns plain data (what ``--json`` prints); ``render_report`` draws the same data as
tables; ``plot_layout`` draws chips and cores coloured by layer, shaded by fill.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from mflc.ir.graph import Graph

from .hardware import (KINDS, LIMIT_OF, SYSTEMS, Costs, HardwareProfile, ceil_div, limits, slice_bits,
                       smallest_system)
from .layout import Layout


SHORT = {"neurons": "neurons", "groups": "neuron groups", "neuron_bits": "neuron state memory (bits)", "synapse_bits": "synaptic memory (bits)",
         "axons_in": "input axons", "axons_out": "output routing entries", "program_instr": "microcode instructions"}


def _layer_key(layer) -> str:
    return "-" if layer is None else str(layer)


def layer_of(graph: Graph | None, group: str):
    """A group's layer: from the graph's metadata, else from its name (L<i>., embed, head/final)."""
    if graph is not None and group in graph.groups:
        return graph.groups[group].meta.get("layer")
    m = re.match(r"L(\d+)\.", group)
    if m:
        return int(m.group(1))
    if group.startswith("embed"):
        return "embed"
    if group.startswith(("head", "final")):
        return "head"
    return None


def _layer_rank(layer) -> tuple:
    if layer == "embed":
        return (0, 0)
    if isinstance(layer, int):
        return (1, layer)
    if layer == "head":
        return (2, 0)
    return (3, str(layer))


# the kinds whose total demand does not depend on the layout; input axons and routing entries do (shared
# axons, destination cores), so they give no bound before a layout exists
BOUND_KINDS = ("neurons", "groups", "neuron_bits", "synapse_bits", "program_instr")


def core_lower_bound(graph: Graph, hw: HardwareProfile, costs: Costs | None = None) -> dict:
    """The fewest cores any layout of ``graph`` can use: max over the kinds of BOUND_KINDS of
    ceil(total demand / one core's limit). Demand: every neuron; its state plus each group's tables once;
    every synapse group's rows (at its weight width and format, as ``Costs.core`` costs them); each group's
    program once. ``cores``, the binding ``kind``, and ``by_kind`` {kind: dict(demand, per_core_limit, cores)}."""
    costs = costs or Costs(graph, hw)
    lim = limits(hw)
    demand = dict(neurons=sum(g.size for g in graph.groups.values()), groups=len(graph.groups),
                  neuron_bits=sum(costs.neuron_usage(n, g.size) for n, g in graph.groups.items()),
                  synapse_bits=sum(slice_bits(s, 0, s.shape[0], hw, costs.width.get(n))
                                   for n, s in graph.synapses.items()),
                  program_instr=sum(costs.program.values()))
    by = {k: dict(demand=int(demand[k]), per_core_limit=lim[k], cores=ceil_div(demand[k], lim[k])) for k in BOUND_KINDS}
    kind = max(BOUND_KINDS, key=lambda k: (by[k]["cores"], by[k]["demand"] / lim[k]))
    return dict(cores=max(1, by[kind]["cores"]), kind=kind, by_kind=by)


def build_report(graph: Graph, layout: Layout, hw: HardwareProfile | None = None, source: dict | None = None) -> dict:
    """The layout's resources per group and in total, traffic and widths, as a JSON-ready report."""
    hw = hw or layout.hardware
    lim = limits(hw)
    costs = Costs(graph, hw)
    rows: dict[str, dict] = {}
    for name, grp in graph.groups.items():
        rows[name] = dict(group=name, layer=grp.meta.get("layer"), role=grp.meta.get("role"), neurons=grp.size,
                          axons_in=0, synapses=0, synapse_bits=0, neuron_bits=0, cores=0)
    cores_of = defaultdict(set)
    for ci, c in enumerate(layout.cores):
        for ns in c.neurons:
            if ns.group not in rows:
                continue
            inc = [(s.name, ns.start, ns.stop) for s in costs.incoming[ns.group]]
            u = costs.core([(ns.group, ns.start, ns.stop)], inc)
            r = rows[ns.group]
            r["axons_in"] += u["axons_in"]
            r["synapses"] += u["synapses"]
            r["synapse_bits"] += u["synapse_bits"]
            r["neuron_bits"] += u["neuron_bits"]
            cores_of[ns.group].add(ci)
    for name, r in rows.items():
        r["cores"] = len(cores_of[name])
    n = len(layout.cores)
    util = {}
    for k in KINDS:
        used = np.array([c.usage.get(k, 0) for c in layout.cores], np.float64)
        util[k] = dict(label=SHORT[k], used=int(used.sum()), per_core_limit=lim[k], limit_name=LIMIT_OF[k],
                       capacity=int(lim[k] * n), mean_fill=float(used.sum() / (lim[k] * n)) if n else 0.0,
                       max_fill=float(used.max() / lim[k]) if n else 0.0)
    fills = np.array([max(c.usage.get(k, 0) / lim[k] for k in KINDS) for c in layout.cores]) if n else np.zeros(0)
    binding = defaultdict(int)
    for c in layout.cores:
        binding[max(KINDS, key=lambda k: c.usage.get(k, 0) / lim[k])] += 1
    chips = layout.n_chips
    best = smallest_system(chips)
    totals = graph.totals()
    lb = core_lower_bound(graph, hw, costs)
    lb["ratio"] = n / lb["cores"]
    widths = defaultdict(int)
    for s in graph.synapses.values():
        widths[costs.width[s.name]] += s.nnz
    rep = dict(
        source=source or {},
        hardware=dict(name=hw.name, cores_per_chip=hw.cores_per_chip, figures=hw.figures()),
        graph=dict(totals, fan_in_splits=len(graph.meta.get("fan_in_splits", [])),
                   partial_sum_groups=sum(1 for g in graph.groups.values() if g.meta.get("role") == "partial_sum")),
        steps_per_token=graph.depth,
        groups=list(rows.values()),
        utilization=util,
        core_fill=dict(mean=float(fills.mean()) if n else 0.0, min=float(fills.min()) if n else 0.0,
                       binding_limit={k: int(v) for k, v in sorted(binding.items(), key=lambda kv: -kv[1])}),
        cores=n, chips=chips, cores_per_chip=hw.cores_per_chip,
        lower_bound=lb,
        weight_bits={str(b): int(c) for b, c in sorted(widths.items())},
        system=layout.system,
        smallest_system=best.name if best else None,
        systems=[dict(name=s.name, chips=s.chips, fits=chips <= s.chips) for s in SYSTEMS.values()],
        traffic=dict(layout.traffic),
    )
    return rep


def _kib(bits) -> str:
    return f"{bits / 8192:,.1f}"


def _n(x) -> str:
    """Compact count: 1,234 / 12.3k / 4.56M / 7.89G."""
    x = float(x)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(x) >= div:
            return f"{x / (div if suf != 'k' else 1e3):.3g}{suf}" if suf != "k" else f"{x / 1e3:.1f}k"
    return f"{int(x):,}"


def _mem(bits) -> str:
    """Bits as bytes, KiB, MiB or GiB with three significant digits."""
    x = bits / 8
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1000 or unit == "GiB":
            return f"{x:.3g} {unit}" if x < 100 else f"{x:,.0f} {unit}"
        x /= 1024
    return ""


def aggregate_rows(rows: list[dict], by: str) -> list[dict]:
    """Rows summed per ``by`` ('role' or 'layer'), in first-seen order; 'groups' counts the groups."""
    out: dict = {}
    for r in rows:
        k = _layer_key(r.get(by))
        a = out.setdefault(k, dict(group=k, layer=r.get("layer") if by == "layer" else "", role=r.get("role") if by == "role" else "",
                                   groups=0, neurons=0, axons_in=0, synapses=0, synapse_bits=0, neuron_bits=0, cores=0))
        a["groups"] += 1
        for f in ("neurons", "axons_in", "synapses", "synapse_bits", "neuron_bits", "cores"):
            a[f] += r[f]
    return list(out.values())


def render_report(rep: dict, console, detail: bool = False, title: str = "layout") -> None:
    """Print a build_report as tables (per group, or per role for large models)."""
    from rich.table import Table

    rows = rep["groups"]
    by_group = detail or len(rows) <= 40
    shown = rows if by_group else aggregate_rows(rows, "role")
    t = Table(title=f"{title}: resources per {'group' if by_group else 'role (--detail for every group)'}",
              title_justify="left")
    first = "group" if by_group else "role"
    cols = [first] + (["layer"] if by_group else ["grp"]) + ["neurons", "axons", "synapses", "memory", "cores*"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("group", "role", "layer") else "right",
                     no_wrap=c not in ("group", "role"), overflow="fold")
    for r in shown:
        t.add_row(str(r["group"]), str(_layer_key(r["layer"])) if by_group else str(r["groups"]), _n(r["neurons"]),
                  _n(r["axons_in"]), _n(r["synapses"]), _mem(r["synapse_bits"]),
                  f"{r['cores']:,}")
    console.print(t)
    console.print("* cores touched: the cores holding some of the row's neurons; a core shared by several rows "
                  f"counts in each, so the column can sum to more than the layout's {rep['cores']:,} cores; "
                  "axons: input axons; memory: synaptic memory", style="dim", highlight=False)
    u = Table(title="utilization of the cores in use", title_justify="left")
    for c in ("resource", "used", "per-core limit", "mean fill", "fullest core"):
        u.add_column(c, justify="left" if c == "resource" else "right")
    for k, v in rep["utilization"].items():
        u.add_row(v["label"], _n(v["used"]), f"{v['per_core_limit']:,}", f"{100 * v['mean_fill']:.1f} %",
                  f"{100 * v['max_fill']:.1f} %")
    console.print(u)
    s = Table(title="summary", show_header=False, title_justify="left")
    s.add_column("what", style="bold")
    s.add_column("value", justify="right")
    tr = rep["traffic"]
    fits = ", ".join(f"{x['name']} ({x['chips']:,}): {'yes' if x['fits'] else 'no'}" for x in rep["systems"])
    for k, v in [("hardware profile", rep["hardware"]["name"]),
                 ("neuron groups / neurons", f"{rep['graph']['groups']:,} / {rep['graph']['neurons']:,}"),
                 ("synapses", f"{rep['graph']['synapses']:,}"),
                 ("fan-in splits (partial-sum groups)", f"{rep['graph']['fan_in_splits']} ({rep['graph']['partial_sum_groups']})"),
                 ("cores", f"{rep['cores']:,}"),
                 ("lower bound of cores (total demand / one core)",
                  f"{rep['lower_bound']['cores']:,} ({SHORT[rep['lower_bound']['kind']]}); layout / bound = "
                  f"{rep['lower_bound']['ratio']:.3f}"),
                 ("weight widths (bits: synapses)", ", ".join(f"{b}: {_n(c)}" for b, c in rep["weight_bits"].items())),
                 ("mean core fill (largest kind)", f"{100 * rep['core_fill']['mean']:.1f} %"),
                 ("chips needed", f"{rep['chips']:,} at {rep['cores_per_chip']} cores per chip"),
                 ("smallest system that fits", rep["smallest_system"] or "none listed"),
                 ("systems", fits),
                 ("pipeline steps per token", f"{rep['steps_per_token']:,}"),
                 ("routes per token between cores, same chip (layout: each neuron to each core it "
                  "reaches, once)", f"{tr.get('messages_between_cores', 0):,}"),
                 ("routes per token between chips (same definition)", f"{tr.get('messages_between_chips', 0):,}"),
                 ("busiest chip, messages out per token", f"{tr.get('busiest_chip_out', 0):,}")]:
        s.add_row(k, str(v))
    for k, v in (rep.get("source") or {}).items():
        s.add_row(k, str(v))
    for k, v in (rep.get("files") or {}).items():
        s.add_row(f"{k} written", str(v))
    console.print(s)


def plot_layout(layout: Layout, path, graph: Graph | None = None, title: str | None = None) -> None:
    """Chips as tiles of cores; each core coloured by the layer of its first group, shaded by its fill."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.cm import ScalarMappable

    hw = layout.hardware
    lim = limits(hw)
    cpc = hw.cores_per_chip
    ccols = int(np.ceil(np.sqrt(cpc * 2)))            # a chip is about twice as wide as tall (8 x 16 cores)
    crows = int(np.ceil(cpc / ccols))
    n_chips = max(1, layout.n_chips)
    gcols = int(np.ceil(np.sqrt(n_chips * crows / ccols * 1.6)))
    gcols = max(1, min(n_chips, gcols))
    grows = int(np.ceil(n_chips / gcols))
    H, W = grows * (crows + 1) + 1, gcols * (ccols + 1) + 1
    img = np.ones((H, W, 3))
    layers = sorted({_layer_key(layer_of(graph, c.neurons[0].group)) for c in layout.cores if c.neurons},
                    key=lambda k: _layer_rank(int(k) if k.isdigit() else k))
    idx = {k: i for i, k in enumerate(layers)}
    base = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, max(1, len(layers))))[:, :3]
    for chip in range(n_chips):
        r0, c0 = 1 + (chip // gcols) * (crows + 1), 1 + (chip % gcols) * (ccols + 1)
        img[r0:r0 + crows, c0:c0 + ccols] = 0.9
    for c in layout.cores:
        if not c.neurons:
            continue
        f = min(1.0, max(c.usage.get(k, 0) / lim[k] for k in KINDS))
        col = base[idx[_layer_key(layer_of(graph, c.neurons[0].group))]]
        shade = 0.25 + 0.75 * f
        r = 1 + (c.chip // gcols) * (crows + 1) + c.core // ccols
        q = 1 + (c.chip % gcols) * (ccols + 1) + c.core % ccols
        img[r, q] = (1 - shade) * 1.0 + shade * col
    fig_w = min(18.0, max(6.0, W / 12))
    fig, ax = plt.subplots(figsize=(fig_w, max(3.0, fig_w * H / W + 1.2)))
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    tot = layout.totals()
    import textwrap                                   # a figure-wide title, wrapped to the figure: never clipped

    fig.suptitle(textwrap.fill(title or f"{tot['cores']:,} cores on {tot['chips']:,} chips ({hw.name}); colour = "
                               "layer, shade = fill of the fullest resource", width=int(fig_w * 8)))
    sm = ScalarMappable(cmap=ListedColormap(base))
    sm.set_array(np.arange(len(layers)))
    cb = fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.01)
    step = max(1, len(layers) // 12)
    ticks = list(range(0, len(layers), step))
    if layers and ticks[-1] != len(layers) - 1:
        ticks.append(len(layers) - 1)
    cb.set_ticks([(t + 0.5) * (len(layers) - 1) / max(1, len(layers)) for t in ticks])
    cb.set_ticklabels([layers[t] for t in ticks])
    cb.set_label("layer (the colour of a full core)")
    fig.text(0.5, 0.01, textwrap.fill("each square a core, each grey block a chip; a paler square is a less full "
                                      "core: its layer's colour mixed with white by 1 - the fill of its fullest "
                                      "resource", width=int(fig_w * 14)), ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=150)
    plt.close(fig)
