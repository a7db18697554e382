"""Layout commands: estimate (the Loihi 2 layout of a configuration, without weights), and the hardware
options that compile shares."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from mflc.cli_app import app, emit_json, err, guarded, out, resolve_model
from mflc.ir.errors import ConfigError, MflcError

HardwareOpt = typer.Option(None, "--hardware", help="Hardware profile: loihi2 (default), loihi2_120, or a JSON file "
                                                     "overriding any figure (see docs/layout.md)")
HwSetOpt = typer.Option(None, "--hw", help="Override one hardware figure, FIGURE=VALUE (repeatable), e.g. "
                        "--hw weight_bits=2; applied on top of --hardware")
SystemOpt = typer.Option(None, "--system", help="Target system: oheo_gulch (1 chip), kapoho_point (8), hala_point (1152); "
                                                "fail if the model needs more chips. Default: report the smallest that fits")
PlotOpt = typer.Option(None, "--plot", help="Write a picture of the layout (PNG) here")


def _bitlinear_names(w: dict) -> list[str]:
    names = sorted(k for k in w if k.endswith("_proj.weight"))
    names.append("lm_head.weight" if "lm_head.weight" in w else "model.embeddings.weight")
    return names


def measured_density(model: Path):
    """(config, fraction of non-zero ternarized weights over every BitLinear matrix, quant options or None)."""
    from mflc.compiler.model.loading import is_quantized_dir, load_float

    if is_quantized_dir(model):
        from mflc.compiler.model.quantize import QuantizedModel

        qm = QuantizedModel.load(model)
        ws = [v for k, v in qm.tensors.items() if k.startswith("W.")]
        nz, tot = sum(int((v != 0).sum()) for v in ws), sum(int(v.size) for v in ws)
        return qm.cfg, (nz / tot if tot else 0.0), qm.options
    from mflc.compiler.model.float_model import ternarize

    cfg, w = load_float(model)
    nz = tot = 0
    for k in _bitlinear_names(w):
        wt, _ = ternarize(w[k])
        nz += int(wt.astype(bool).sum())
        tot += int(wt.size)
    return cfg, (nz / tot if tot else 0.0), None


def _peak_rss_mb() -> float:
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _estimate_source(model: Optional[Path], preset: Optional[str], density: Optional[float], options):
    """What ``estimate`` sizes: (config, its name, weight density, where the density came from, quantizer
    options), from a preset or from a model directory (a build's quantized model once its integrity is checked)."""
    from mflc.compiler.model.config import ModelConfig, preset as get_preset
    from mflc.compiler.model.skeleton import DEFAULT_TERNARY_DENSITY, check_skeleton_memory

    if preset is not None:
        cfg = get_preset(preset)
        what = f"preset {preset}"
        dens, dens_src = (density, "given (--density)") if density is not None else (
            DEFAULT_TERNARY_DENSITY, "default (assumed; set with --density)")
    else:
        if not model.exists():
            raise MflcError(f"{model}: no such model directory")
        what = str(model)
        from mflc.cli_open import is_build_dir

        if is_build_dir(model):                  # a build: its quantized model, once its integrity is checked
            from mflc.build import Build

            Build.load(model)
            model = model / "quant"
        if (model / "config.json").is_file():   # before any weight is read: is the graph too big to hold?
            check_skeleton_memory(ModelConfig.load(model / "config.json"), source=str(model / "config.json"))
        if density is not None:
            from mflc.compiler.model.loading import is_quantized_dir

            cfg = (ModelConfig.load(model / "config.json") if (model / "config.json").is_file() else
                   measured_density(model)[0] if is_quantized_dir(model) else None)
            if cfg is None:
                raise MflcError(f"{model}: no config.json or quantized model inside")
            dens, dens_src = density, "given (--density)"
        else:
            cfg, dens, qopts = measured_density(model)
            dens_src = "measured from the weights"
            if qopts is not None:
                options = qopts
        if dens <= 0:
            raise ConfigError(f"{model}: every ternarized weight is zero; give --density")
    return cfg, what, dens, dens_src, options


@app.command("estimate")
@guarded
def estimate_cmd(model: Optional[Path] = typer.Argument(None, help="Model directory (checkpoint or quantized model; "
                                                                    "default: the embedded default model); or give --preset"),
                 preset: Optional[str] = typer.Option(None, "--preset", help="370M, 1.3B, 2.7B or tiny"),
                 density: Optional[float] = typer.Option(None, "--density", help="Fraction of non-zero ternary weights "
                                                         "(default: measured from MODEL's weights, else the stated default)"),
                 hardware: Optional[str] = HardwareOpt, hw_set: list[str] = HwSetOpt, system: Optional[str] = SystemOpt,
                 plot: Optional[Path] = PlotOpt,
                 remove_inner_norm: bool = typer.Option(False, "--remove-inner-norm",
                                                        help="Estimate the model without each BitLinear's own RMSNorm"),
                 detail: bool = typer.Option(False, "--detail", help="One table row per neuron group"),
                 prompt_len: int = typer.Option(500, "--prompt-len", help="Prompt length for time to first token"),
                 gen_len: int = typer.Option(100, "--gen-len", help="Tokens generated after the prompt"),
                 cost_params: Optional[Path] = typer.Option(None, "--cost-params",
                                                           help="JSON file overriding cost-model constants"),
                 json_out: bool = typer.Option(False, "--json")):
    """Partition and place a model on Loihi 2 from its configuration alone; report cores, chips, traffic,
    and the estimated throughput, latency and energy (with a GPU baseline)."""
    from mflc.compiler.chip.hardware import resolve_profile
    from mflc.compiler.chip.layout import check_layout
    from mflc.compiler.chip.place import layout_graph
    from mflc.compiler.model.quantize import QuantOptions
    from mflc.compiler.chip.report import build_report, plot_layout, render_report
    from mflc.compiler.model.skeleton import skeleton_graph

    t0 = time.perf_counter()
    if model is not None and preset is not None:
        raise ConfigError("give either --preset NAME (370M, 1.3B, 2.7B, tiny) or a MODEL directory, not both")
    if preset is None:
        model = resolve_model(model)           # neither: the embedded default model
    hw = resolve_profile(hardware, hw_set)
    from mflc.compiler.chip.costmodel import CostParams, cost_report, format_report, load_cost_params, plot_scaling

    params = load_cost_params(cost_params) if cost_params is not None else CostParams()
    options = QuantOptions(remove_inner_norm=remove_inner_norm)
    cfg, what, dens, dens_src, options = _estimate_source(model, preset, density, options)
    g = skeleton_graph(cfg, dens, options)
    t1 = time.perf_counter()
    g2, lay = layout_graph(g, hw, system)
    problems = check_layout(lay, g2, hw)
    if problems:
        from mflc.ir.errors import FitError

        raise FitError([f"layout check: {p}" for p in problems])
    rep = build_report(g2, lay, hw, source={"model": what, "weight density": f"{dens:.4f} ({dens_src})"})
    from mflc.ir.coremap import CoreMap

    cost = cost_report(g2, CoreMap.from_layout(lay), None, params, prompt_len, gen_len)
    rep["cost"] = cost
    scaling_plot = None
    if plot is not None:
        plot_layout(lay, plot, g2, title=f"{what}: {lay.totals()['cores']:,} cores on {lay.n_chips:,} chips ({hw.name})")
        scaling_plot = plot.with_name(plot.stem + "_scaling.png")
        plot_scaling(cost, scaling_plot)
    rep["density"] = dict(value=dens, source=dens_src)
    rep["seconds"] = round(time.perf_counter() - t0, 3)
    rep["seconds_layout"] = round(time.perf_counter() - t1, 3)
    rep["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if json_out:
        emit_json(rep)
        return
    render_report(rep, out, detail=detail, title=f"estimate {what}")
    out.print(format_report(cost), highlight=False, markup=False)
    if plot is not None:
        out.print(f"layout picture: {plot}; time and energy against sequence length: {scaling_plot}")
    err.print(f"[dim]{rep['seconds']:.1f} s, peak memory {rep['peak_rss_mb']:,.0f} MB[/]")
