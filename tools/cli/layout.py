"""Layout commands: estimate (the Loihi 2 layout of a configuration, without weights), and the hardware
options that compile shares."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from mflc.cli.app import app, emit_json, err, guarded, out, resolve_model
from mflc.ir.errors import ConfigError, MflcError

HardwareOpt = typer.Option(None, "--profile", "--hardware",
                           help="Hardware profile: loihi2-lava (default: calibrated to Intel's compiler), "
                                "loihi2-ideal (every synaptic bit used), or a JSON file overriding any figure "
                                "(docs/layout.md)")
HwSetOpt = typer.Option(None, "--hw", help="Override one hardware figure, FIGURE=VALUE (repeatable), e.g. "
                        "--hw weight_bits=2; applied on top of --hardware")
SystemOpt = typer.Option(None, "--system", help="Target system: oheo_gulch (1 chip), kapoho_point (8), hala_point (1152); "
                                                "fail if the model needs more chips. Default: report the smallest that fits")
PlotOpt = typer.Option(None, "--plot", help="Write a picture of the layout (PNG) here")
ActivityOpt = typer.Option(None, "--activity", help="A build (simulated now with activity counters) or a JSON file "
                           "--save-activity wrote: the build's time and energy with measured activity beside the "
                           "assumed rates")
BaselineOpt = typer.Option(None, "--baseline", help="GPU baseline model (Qwen2.5-0.5B, Llama-3.2-1B, or all; "
                           "repeatable). Default: the one nearest the model's size")
NetxOpt = typer.Option(None, "--netx", help="A lava-dl NetX network (.net, HDF5): cores and chips of its dense layers")
DenseOnlyOpt = typer.Option(False, "--dense-only", help="With --netx: cost the dense layers and list the others "
                            "(conv, pool) instead of refusing the file")
NoRangeOpt = typer.Option(False, "--no-range", help="Skip the profiles, figure ranges and sensitivity (one layout "
                          "instead of about 25)")


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
        from mflc.cli.open import is_build_dir

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
                 netx: Optional[Path] = NetxOpt,
                 dense_only: bool = DenseOnlyOpt,
                 no_range: bool = NoRangeOpt,
                 activity: Optional[Path] = ActivityOpt,
                 activity_tokens: int = typer.Option(64, "--activity-tokens", help="With --activity BUILD: "
                                                     "tokens of real text to simulate"),
                 save_activity: Optional[Path] = typer.Option(None, "--save-activity", help="With --activity "
                                                              "BUILD: also write the measured activity here (JSON)"),
                 baseline: list[str] = BaselineOpt,
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
                 sweep: Optional[Path] = typer.Option(None, "--sweep", help="JSON grid of models and --hw settings "
                                                      "(docs/estimates.md, 'Sweeps'): one estimate per point"),
                 csv_out: Optional[Path] = typer.Option(None, "--csv", help="With --sweep: write the table as CSV here"),
                 workers: Optional[str] = typer.Option(None, "--workers", metavar="N|auto",
                                                       help="With --sweep: run the points on N workers (auto: one per CPU)"),
                 scheduler: Optional[str] = typer.Option(None, "--scheduler", help="With --sweep: a Dask scheduler "
                                                         "address, tcp://HOST:PORT"),
                 json_out: bool = typer.Option(False, "--json")):
    """Partition and place a model on Loihi 2 from its configuration alone; report cores, chips, traffic,
    and the estimated throughput, latency and energy (with a GPU baseline), as a range over the hardware
    profiles and uncertain figures. With --sweep FILE, every point of a grid of models and hardware
    settings; with --netx FILE, a lava-dl network's dense layers; with --activity BUILD, the build's time
    and energy from the activity a simulation measures."""
    if activity is not None or save_activity is not None:
        return _activity_cmd(activity, activity_tokens, save_activity, cost_params, prompt_len, gen_len, json_out,
                             given=model is not None or preset is not None or netx is not None or sweep is not None
                             or density is not None)
    if netx is not None:
        if model is not None or preset is not None or sweep is not None or density is not None or cost_params:
            raise ConfigError("--netx FILE estimates that network: give no MODEL, --preset, --sweep, --density "
                              "or --cost-params with it")
        return _netx_cmd(netx, dense_only, hardware, hw_set, system, plot, no_range, json_out)
    if dense_only:
        raise ConfigError("--dense-only goes with --netx FILE")
    if sweep is not None:
        if model is not None or preset is not None or hw_set or density is not None or detail or cost_params:
            raise ConfigError("--sweep FILE takes the models, --hw settings and density from FILE: give no MODEL, "
                              "--preset, --hw, --density, --detail or --cost-params with it")
        return _sweep_cmd(sweep, csv_out, plot, workers, scheduler, json_out)
    if csv_out is not None or workers is not None or scheduler is not None:
        raise ConfigError("--csv, --workers and --scheduler go with --sweep FILE")
    from mflc.api import estimate
    from mflc.compiler.chip.costmodel import CostParams, load_cost_params
    from mflc.compiler.chip.hardware import resolve_profile
    from mflc.compiler.model.quantize import QuantOptions

    t0 = time.perf_counter()
    if model is not None and preset is not None:
        raise ConfigError("give either --preset NAME (370M, 1.3B, 2.7B, tiny) or a MODEL directory, not both")
    if preset is None:
        model = resolve_model(model)           # neither: the embedded default model
    hw = resolve_profile(hardware, hw_set)
    params = load_cost_params(cost_params) if cost_params is not None else CostParams()
    options = QuantOptions(remove_inner_norm=remove_inner_norm)
    cfg, what, dens, dens_src, options = _estimate_source(model, preset, density, options)
    t1 = time.perf_counter()
    with range_progress(no_range) as tick:
        rep, g2, lay = estimate(cfg, dens, options=options, hardware=hardware, hw=hw_set, system=system,
                                cost_params=params, prompt_len=prompt_len, gen_len=gen_len,
                                source={"model": what, "weight density": f"{dens:.4f} ({dens_src})"},
                                ranges=not no_range, progress=tick, baselines=baseline or None)
    rep["density"] = dict(value=dens, source=dens_src)
    _show_estimate(rep, lay, g2, what, hw, plot, detail, json_out, t0, t1)


def _show_estimate(rep: dict, lay, g2, what: str, hw, plot: Optional[Path], detail: bool, json_out: bool,
                   t0: float, t1: float) -> None:
    """Pictures, timings and the report of an estimate: JSON, or the tables and the cost summary."""
    from mflc.compiler.chip.costmodel import format_report, plot_scaling
    from mflc.compiler.chip.report import plot_layout, render_report

    cost = rep["cost"]
    scaling_plot = tornado = None
    if plot is not None:
        plot_layout(lay, plot, g2, title=f"{what}: {lay.totals()['cores']:,} cores on {lay.n_chips:,} chips ({hw.name})")
        scaling_plot = plot.with_name(plot.stem + "_scaling.png")
        plot_scaling(cost, scaling_plot)
        if "range" in rep:
            from mflc.compiler.chip.range_report import plot_tornado

            tornado = plot.with_name(plot.stem + "_sensitivity.png")
            plot_tornado(rep, tornado)
        rep["files"] = {k: str(v) for k, v in (("layout_plot", plot), ("scaling_plot", scaling_plot),
                                                ("sensitivity_plot", tornado)) if v is not None}
    rep["seconds"] = round(time.perf_counter() - t0, 3)
    rep["seconds_layout"] = round(time.perf_counter() - t1, 3)
    rep["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if json_out:
        emit_json(rep)
        return
    render_report(rep, out, detail=detail, title=f"estimate {what}")
    if "range" in rep:
        from mflc.compiler.chip.range_report import render_range

        render_range(rep, out)
    out.print(format_report(cost), highlight=False, markup=False)
    if plot is not None:
        out.print(f"layout picture: {plot}; time and energy against sequence length: {scaling_plot}"
                  + (f"; sensitivity of the chip count: {tornado}" if tornado else ""))
    err.print(f"[dim]{rep['seconds']:.1f} s, peak memory {rep['peak_rss_mb']:,.0f} MB[/]")


def _activity_cmd(path: Optional[Path], n_tokens: int, save: Optional[Path], cost_params: Optional[Path],
                  prompt_len: int, gen_len: int, json_out: bool, given: bool) -> None:
    """``estimate --activity``: a build's time and energy with measured activity beside the assumed rates
    (``given``: whether another model source was given too, which is refused)."""
    import json

    from mflc.compiler.chip.costmodel import CostParams, load_cost_params

    if path is None:
        raise ConfigError("--save-activity goes with --activity BUILD")
    if given:
        raise ConfigError("--activity BUILD_OR_FILE estimates that build's own layout: give no MODEL, --preset, "
                          "--netx, --sweep or --density with it")
    params = load_cost_params(cost_params) if cost_params is not None else CostParams()

    from mflc.api import estimate_build_activity, measured_activity
    from mflc.cli.app import check_out_file
    from mflc.cli.open import is_build_dir
    from mflc.compiler.chip.costmodel import format_report
    from mflc.ir.schema import read_json

    if save is not None:
        check_out_file(save, "--save-activity")
    if path.is_dir():
        if not is_build_dir(path):
            raise ConfigError(f"--activity {path}: not a build directory (make one with `mflc compile --out DIR`)")
        if n_tokens < 1:
            raise ConfigError(f"--activity-tokens must be >= 1, got {n_tokens}")
        err.print(f"simulating {n_tokens} tokens of real text on {path} with activity counters ...")
        act = measured_activity(path, n_tokens=n_tokens)
        act["build"] = str(path)
        if save is not None:
            save.write_text(json.dumps(act))
    else:
        if save is not None:
            raise ConfigError("--save-activity writes a measurement: give --activity a build directory")
        act = read_json(path, ConfigError)
        if not isinstance(act, dict) or not {"profile", "source", "build"} <= set(act):
            raise ConfigError(f"--activity {path}: not an activity file (keys profile, source, build; "
                              "written by --save-activity)")
    rep = estimate_build_activity(act["build"], act, cost_params=params, prompt_len=prompt_len, gen_len=gen_len)
    if json_out:
        emit_json(rep)
        return
    m, a = rep["measured"], rep["assumed"]
    out.print(f"activity: {rep['activity_source']}", highlight=False)
    for label, key, unit, scale in (("generation", "generation_token_s", "ms/token", 1e3),
                                    ("energy, generation", "generation_per_token_J", "mJ/token", 1e3)):
        src = "time" if key.endswith("_s") else "energy"
        out.print(f"  {label:20s} measured {m[src][key] * scale:.3g} {unit}, assumed rates "
                  f"{a[src][key] * scale:.3g} {unit}", highlight=False)
    out.print(format_report(m), highlight=False, markup=False)


def range_progress(skip: bool, label: str = "layouts for the profiles, figure ranges and sensitivity"):
    """A progress bar on stderr over the counts a range makes (about 25), or nothing when it is skipped;
    yields the ``progress(step)`` callback ``figure_range`` takes."""
    import contextlib

    if skip:
        return contextlib.nullcontext(None)
    from mflc.cli.app import progress_bar

    @contextlib.contextmanager
    def bar():
        prog, advance = progress_bar(None, label)
        done = [0]

        def tick(step: str) -> None:
            done[0] += 1
            advance(done[0])
        with prog:
            yield tick
    return bar()


def _netx_cmd(path: Path, dense_only: bool, hardware, hw_set, system, plot: Optional[Path], no_range: bool,
              json_out: bool) -> None:
    """``estimate --netx``: the dense layers of a lava-dl network, their cores and the range."""
    from mflc.api import estimate_netx
    from mflc.compiler.chip.range_report import plot_tornado, render_netx_layers, render_range
    from mflc.compiler.chip.report import plot_layout, render_report

    t0 = time.perf_counter()
    with range_progress(no_range) as tick:
        rep, g2, lay = estimate_netx(path, dense_only=dense_only, hardware=hardware, hw=hw_set, system=system,
                                     ranges=not no_range, progress=tick)
    rep["seconds"] = round(time.perf_counter() - t0, 3)
    if plot is not None:
        plot_layout(lay, plot, g2, title=f"{path.name}: {rep['cores']:,} cores on {rep['chips']:,} chips "
                                         f"({rep['hardware']['name']})")
        if "range" in rep:
            plot_tornado(rep, plot.with_name(plot.stem + "_sensitivity.png"))
    if json_out:
        emit_json(rep)
        return
    render_netx_layers(rep, out)
    render_report(rep, out, title=f"estimate {path.name}")
    if "range" in rep:
        render_range(rep, out)
    if plot is not None:
        out.print(f"layout picture: {plot}" + (f"; sensitivity: {plot.with_name(plot.stem + '_sensitivity.png')}"
                                               if "range" in rep else ""))


def _sweep_cmd(path: Path, csv_out: Optional[Path], plot: Optional[Path], workers: Optional[str],
               scheduler: Optional[str], json_out: bool) -> None:
    """``estimate --sweep``: check the file, run every point as a task, print and write the results."""
    from mflc.cli.app import check_out_file, progress_bar
    from mflc.sweep import load_sweep, plot_sweep, rows_table, run_sweep, write_csv
    from mflc.cli.tasks import runner_from

    runner = runner_from(workers, scheduler)
    for opt, p in (("--csv", csv_out), ("--plot", plot)):
        if p is not None:
            check_out_file(p, opt)
    t0 = time.perf_counter()
    points = load_sweep(path)
    prog, advance = progress_bar(len(points), f"estimate sweep ({len(points)} points)")
    with prog:
        rows = run_sweep(points, runner, advance)
    if csv_out is not None:
        write_csv(rows, csv_out)
    if plot is not None:
        plot_sweep(rows, plot)
    if json_out:
        emit_json(dict(points=rows, seconds=round(time.perf_counter() - t0, 3), file=str(path)))
        return
    out.print(rows_table(rows, out.width))
    for r in rows:
        if not r["fits"]:
            out.print(f"{r['model']} ({r['hw']}): does not fit: {r['error']}", highlight=False)
    for what, p in (("CSV", csv_out), ("plot", plot)):
        if p is not None:
            out.print(f"{what}: {p}")
    err.print(f"[dim]{len(rows)} points in {time.perf_counter() - t0:.1f} s[/]")
