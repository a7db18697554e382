"""Build commands: compile (model -> quantized model + IR), ir (summary of a build)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mflc.cli.app import Stages, resolve_model, app, emit_json, given_options, guarded, kv_table, out
from mflc.cli.layout import HardwareOpt, HwSetOpt, PlotOpt, SystemOpt
from mflc.cli.model import (QUANT_PARAMS, ActBits, CalibOpt, CalibTokensOpt, NoPow2, RemoveInner, RmsEps, ScaleMethod,
                            SiteBits, StateBits, Uniform, quant_options, report_calibration)
from mflc.cli.open import require_checkpoint
from mflc.ir.errors import ConfigError


def load_build_graph(build: Path):
    """The unsplit IR of a build, after its manifest and hashes are checked."""
    from mflc.build import Build

    return Build.load(build).graph


@app.command("compile")
@guarded
def compile_cmd(ctx: typer.Context,
                model: Optional[Path] = typer.Argument(None, help="Checkpoint or quantized-model directory (default: the embedded default model)"),
                out_dir: Path = typer.Option(..., "--out", help="Build directory to write"),
                calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
                act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
                uniform: bool = Uniform,
                no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
                scale_method: str = ScaleMethod,
                hardware: Optional[str] = HardwareOpt, hw_set: list[str] = HwSetOpt, system: Optional[str] = SystemOpt,
                plot: Optional[Path] = PlotOpt,
                whole_model: bool = typer.Option(False, "--whole-model", help="Hold the whole model in memory at "
                                                 "once (the path before layer-by-layer compiling; same build)"),
                no_range: bool = typer.Option(False, "--no-range", help="Skip the cores and chips under the other "
                                              "profile and the figures' ranges (about 25 partitions of the IR)"),
                json_out: bool = typer.Option(False, "--json")):
    """Quantize (unless already quantized), lower to IR, validate, lay out on Loihi 2, and write the build
    directory; a float checkpoint layer by layer, in about constant memory (docs/architecture.md)."""
    model = resolve_model(model)
    require_checkpoint(model, "compile", quantized_ok=True)
    import mflc
    from mflc.api import STREAM_STAGES, WHOLE_STAGES
    from mflc.compiler.chip.summary import ir_summary
    from mflc.compiler.model.loading import is_quantized_dir

    quantized = is_quantized_dir(model)
    given = given_options(ctx, QUANT_PARAMS)
    if quantized and given:
        raise ConfigError(f"{model} is a quantized model: its widths and scales are fixed, so {', '.join(given)} "
                          "would have no effect. Compile (or `mflc quantize`) the float checkpoint it was quantized "
                          "from with them, or leave them out")
    stage = Stages([s for s in WHOLE_STAGES if s != "quantizing"] if quantized else
                   list(WHOLE_STAGES if whole_model else STREAM_STAGES))
    build = mflc.compile(model, out_dir, hardware=hardware, hw=hw_set, system=system, stages=stage,
                         stream=not whole_model, **({} if quantized else dict(
                             calib=calib, calib_tokens=calib_tokens,
                             options=quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm,
                                                   rms_eps, scale_method, uniform))))
    (g, placed), rep = build.structure, build.report
    if plot is not None:
        from mflc.compiler.chip.report import plot_layout

        plot_layout(build.layout, plot, placed)
        rep["files"]["plot"] = str(plot)
    seconds = {k: round(v, 3) for k, v in stage.timings.items()}
    if not no_range:
        _add_range(rep, g, build.hardware)
    s = ir_summary(g)
    if json_out:
        emit_json(dict(build=str(out_dir), ir=s, layout=rep,
                       steps=[dict(step=k, seconds=v) for k, v in seconds.items()]))
    else:
        _print_compiled(model, out_dir, s, rep, seconds, whole_model or quantized)
    how = rep["calibration"]
    report_calibration(how, json_out, warn=not quantized, when=f" (when {model} was quantized)" if quantized else "")


def _print_compiled(model: Path, out_dir: Path, s: dict, rep: dict, seconds: dict, whole: bool) -> None:
    """compile's human output: the IR's size, the layout report, and the steps' times."""
    from mflc.compiler.chip.report import render_report

    t = s["totals"]
    out.print(f"compiled {model} -> {out_dir}: {t['groups']} neuron groups, {t['neurons']:,} neurons, "
              f"{t['synapses']:,} synapses, pipeline depth {t['depth']} steps")
    # the paths written go below as plain lines (a terminal wraps them): in the summary table they were cut
    render_report({k: v for k, v in rep.items() if k not in ("files", "source")}, out, title=f"layout {out_dir}")
    if "range" in rep:
        from mflc.compiler.chip.range_report import render_range

        render_range(rep, out)
    out.print("written: " + "; ".join(f"{k} {v}" for k, v in rep["files"].items()), highlight=False,
              markup=False, soft_wrap=True)
    if rep["compile"]["mode"] != "layer by layer" and not whole:
        out.print(f"[yellow]note:[/] compiled as a whole model: {rep['compile']['reason']}")
    out.print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), highlight=False)


def _add_range(rep: dict, graph, profile) -> None:
    """The compile report's range: the compiled IR partitioned under each profile and each uncertain figure's
    low and high value (progress on stderr), its headline keys beside ``cores`` and ``chips``."""
    from mflc.api import add_range_keys
    from mflc.cli.layout import range_progress
    from mflc.compiler.chip.ranges import count_graph, figure_range

    with range_progress(False, "partitions for the profiles and figure ranges") as tick:
        rep["range"] = figure_range(lambda h: count_graph(graph, h), profile, tick)
    add_range_keys(rep)


@app.command("ir")
@guarded
def ir_cmd(build: Path = typer.Argument(..., help="Build directory from `mflc compile`"),
           json_out: bool = typer.Option(False, "--json")):
    """Summarise a compiled IR: groups, neurons, synapses, weight density, bit widths."""
    from mflc.compiler.chip.summary import ir_summary
    from mflc.build import Build
    from mflc.ir.validate import problems

    b = Build.load(build)
    g = b.graph
    s = ir_summary(g)
    s["problems"] = problems(g, **b.hardware.ir_limits())
    if json_out:
        emit_json(s)
        return
    t = s["totals"]
    out.print(kv_table(f"IR {build}", [
        ("neuron groups", t["groups"]), ("neurons", f"{t['neurons']:,}"),
        ("synapse groups", t["synapse_groups"]), ("synapses (non-zero)", f"{t['synapses']:,}"),
        ("ternary weight density", f"{s['ternary_density']:.3f}" if s["ternary_density"] is not None else "-"),
        ("pipeline depth (steps/token)", t["depth"]), ("widest message (bits)", s["max_message_bits"]),
        ("widest register (bits)", s["max_register_bits"]), ("recurrent state", ", ".join(s["state"])),
        ("validation", "ok" if not s["problems"] else f"{len(s['problems'])} problem(s)"),
    ]))
    rt = Table(title="neuron groups by role", title_justify="left")
    for c in ("role", "groups", "neurons", "max msg bits", "max reg bits"):
        rt.add_column(c, justify="left" if c == "role" else "right")
    for role, r in sorted(s["roles"].items()):
        rt.add_row(role, str(r["groups"]), f"{r['neurons']:,}", str(r["max_out_bits"]), str(r["max_register_bits"]))
    out.print(rt)
    st = Table(title="synapse groups by kind", title_justify="left")
    for c in ("kind", "groups", "synapses", "density", "max delay"):
        st.add_column(c, justify="left" if c == "kind" else "right")
    for kind, k in sorted(s["synapse_kinds"].items()):
        st.add_row(kind, str(k["groups"]), f"{k['synapses']:,}", f"{k['density']:.3f}", str(k["max_delay"]))
    out.print(st)
    for p in s["problems"]:
        out.print(f"[red]problem:[/] {p}")
    if s["problems"]:
        raise typer.Exit(1)
