"""The pipeline as a Python API; the CLI commands parse their options, call these, and render.

    import mflc
    build = mflc.compile("tools/data/default", out="/tmp/b")      # -> mflc.Build
    verdict = mflc.Build.load("/tmp/b").verify(tokens=8)            # every check, then bit-exact simulation
    assert verdict.ok
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from .build import Build, check_destination, source_identity
from mflc.ir.errors import MflcError

DEFAULT_MODEL = Path(__file__).resolve().parent / "data" / "default"


def resolve_model(model: Path | None) -> Path:
    """The given model or build directory, or the embedded default model when none is given."""
    if model is not None:
        return model
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise MflcError(f"no MODEL given and the embedded default model is missing ({DEFAULT_MODEL}); "
                        "pass a model directory, e.g. one made by `mflc init --preset tiny --out DIR`")
    return DEFAULT_MODEL


def _stage(stages, name):
    if stages is None:
        return nullcontext()
    names = getattr(stages, "names", None)         # mflc.cli.app.Stages: a step it was not told of joins the list
    if isinstance(names, list) and name not in names:
        names.append(name)
    return stages(name)


STREAM_STAGES = ["loading", "quantizing and lowering, layer by layer", "laying out on Loihi 2", "writing"]
WHOLE_STAGES = ["loading", "quantizing", "lowering to IR", "laying out on Loihi 2", "writing"]


def compile(model: str | Path | None = None, out: str | Path = None, *, options=None, calib: Path | None = None,
            calib_tokens: int | None = None, hardware: str | None = None, hw: list[str] | dict | None = None,
            system: str | None = None, stages: Callable | None = None, stream: bool = True) -> Build:
    """Quantize (unless ``model`` is already quantized), lower, validate, lay out on Loihi 2, and write the
    build atomically at ``out``. ``hw``: figure overrides, ``["weight_bits=2"]`` or ``{"weight_bits": 2}``.
    ``stages``: an optional context-manager factory called with each step's name (the CLI's progress).
    ``stream``: a float checkpoint is compiled layer by layer in about constant memory
    (``mflc.stream_compile``; the same bytes), falling back to the whole-model path where that cannot
    decide (the report's ``compile`` says which ran and why); False: the whole-model path."""
    from mflc.compiler.chip.hardware import resolve_profile
    from mflc.compiler.chip.layout import check_layout
    from mflc.compiler.model.loading import is_quantized_dir, load_float, resolve_calibration
    from mflc.compiler.model.lower import lower
    from mflc.compiler.chip.place import layout_graph
    from mflc.compiler.model.quantize import QuantizedModel, QuantOptions, quantize
    from mflc.compiler.chip.report import build_report
    from mflc.ir.errors import ConfigError, FitError
    from mflc.ir.validate import validate

    if out is None:
        raise ConfigError("compile needs an output directory (out=...)")
    model, out = resolve_model(Path(model) if model is not None else None), Path(out)
    if not model.exists():
        raise ConfigError(f"{model}: no such model directory")
    check_destination(out)
    if calib_tokens is not None and calib_tokens < 1:
        raise ConfigError(f"--calib-tokens must be >= 1, got {calib_tokens}")
    if is_quantized_dir(model) and (options is not None or calib is not None or calib_tokens is not None):
        given = ", ".join(k for k, v in (("options", options), ("calib", calib), ("calib_tokens", calib_tokens))
                          if v is not None)
        raise ConfigError(f"{model} is a quantized model: its widths and scales are fixed, so {given} would have "
                          "no effect; quantize the float checkpoint with them instead, or leave them out")
    if isinstance(hw, dict):
        hw = [f"{k}={v}" for k, v in hw.items()]
    profile = resolve_profile(hardware, hw)
    how_compiled = dict(mode="whole model", reason="a quantized model is loaded whole" if is_quantized_dir(model)
                        else "stream=False")
    if stream and not is_quantized_dir(model):
        b, how_compiled = _compile_streaming(model, out, options, calib, calib_tokens, profile, system, stages)
        if b is not None:
            return b
    if is_quantized_dir(model):
        with _stage(stages, "loading"):
            qm = QuantizedModel.load(model)
    else:
        with _stage(stages, "loading"):
            cfg, w = load_float(model)
        with _stage(stages, "quantizing"):
            seqs, how = resolve_calibration(cfg, model, calib, calib_tokens)
            qm = quantize(cfg, w, seqs, options or QuantOptions())
            qm.meta["calibration"] = how
            del w                                    # the float weights are not needed past quantization
    with _stage(stages, "lowering to IR"):
        g = lower(qm)
        validate(g, **profile.ir_limits())           # against the build's hardware (--hw max_msg_bits=16, ...)
    with _stage(stages, "laying out on Loihi 2"):
        placed, lay = layout_graph(g, profile, system)
        problems = check_layout(lay, placed, profile)
        if problems:
            raise FitError([f"layout check: {p}" for p in problems])
        rep = build_report(placed, lay, profile, source=dict(build=str(out)))
    with _stage(stages, "writing"):
        summary = dict(cores=lay.totals()["cores"], chips=lay.n_chips, groups=len(g.groups))
        b = Build.write(out, qm, g, placed, lay, source=source_identity(model), hardware=profile.to_dict(),
                        model_dir=model, report=summary)
    _finish(b, rep, out, how_compiled, g, placed, qm.meta.get("calibration"))
    return b


def _finish(b: Build, rep: dict, out: Path, how_compiled: dict, graph, placed, calibration: str | None) -> None:
    """The report's file list, how the build was compiled and calibrated; the graphs' structure for summaries."""
    rep["calibration"] = calibration
    rep["files"] = dict(layout=str(out / "layout.json"), placed_ir=str(out / "placed_ir"), manifest=str(out / "build.json"))
    rep["check"] = "ok"
    rep["compile"] = how_compiled
    b.report = rep
    b.structure = (graph, placed)          # the IRs as compiled (without weights when streamed): for summaries


def _compile_streaming(model: Path, out: Path, options, calib, calib_tokens, profile, system, stages):
    """(Build, how) of the layer-by-layer compile, or (None, how) with the reason it fell back."""
    from mflc.compiler.model.checkpoint import open_checkpoint
    from mflc.compiler.model.loading import resolve_calibration
    from mflc.stream_compile import Fallback, stream_compile

    with _stage(stages, "loading"):
        cfg, weights = open_checkpoint(model)
        seqs, how = resolve_calibration(cfg, model, calib, calib_tokens)
    try:
        b, rep, g = stream_compile(model, out, cfg, weights, options=options, seqs=seqs, how=how, profile=profile,
                                   system=system, stage=lambda name: _stage(stages, name))
    except Fallback as e:
        return None, dict(mode="whole model", reason=f"the layer-by-layer compile fell back: {e}")
    how_compiled = dict(mode="layer by layer", reason="float checkpoint")
    _finish(b, rep, out, how_compiled, g, g, how)
    return b, how_compiled


def estimate(cfg, density: float | None = None, *, options=None, hardware: str | None = None,
             hw: list[str] | dict | None = None, system: str | None = None, cost_params=None,
             prompt_len: int = 500, gen_len: int = 100, source: dict | None = None, ranges: bool = True,
             progress=None, baselines: list[str] | None = None):
    """The Loihi 2 layout and cost of a configuration alone (``mflc estimate``): the skeleton graph of
    ``cfg`` at weight ``density`` (default: the stated default), split, partitioned, placed and checked,
    then the report and its cost figures. ``cost_params``: a CostParams (default: the sourced defaults).
    ``ranges``: also cores and chips under every profile and every uncertain figure's low and high value
    (``mflc.compiler.chip.ranges``; ``progress(step)`` is called after each count). ``baselines``: GPU
    baseline names or ["all"]; default the one nearest the model's parameter count, with a note saying how
    like the comparison is.
    Returns (report, placed skeleton graph, layout)."""
    from mflc.compiler.chip.costmodel import CostParams, cost_report
    from mflc.compiler.chip.gpu_baseline import choose_baselines
    from mflc.compiler.chip.hardware import resolve_profile
    from mflc.compiler.chip.layout import check_layout
    from mflc.compiler.chip.place import layout_graph
    from mflc.compiler.chip.report import build_report
    from mflc.compiler.model.skeleton import DEFAULT_TERNARY_DENSITY, skeleton_graph
    from mflc.ir.errors import ConfigError
    from mflc.ir.coremap import CoreMap
    from mflc.ir.errors import FitError

    if isinstance(hw, dict):
        hw = [f"{k}={v}" for k, v in hw.items()]
    profile = resolve_profile(hardware, hw)
    dens = DEFAULT_TERNARY_DENSITY if density is None else density
    g = skeleton_graph(cfg, dens, options)
    g2, lay = layout_graph(g, profile, system)
    problems = check_layout(lay, g2, profile)
    if problems:
        raise FitError([f"layout check: {p}" for p in problems])
    rep = build_report(g2, lay, profile, source=source or {})
    try:
        models, note = choose_baselines(cfg.n_params(), baselines)
    except ValueError as e:
        raise ConfigError(f"--baseline: {e}") from None
    rep["cost"] = cost_report(g2, CoreMap.from_layout(lay), None, cost_params or CostParams(), prompt_len, gen_len,
                              baselines=models, baseline_note=note)
    rep["cost"]["model_name"] = (source or {}).get("model")
    if ranges:
        from dataclasses import replace

        from mflc.compiler.chip.ranges import LayerExtrapolation, figure_range

        counter = LayerExtrapolation(lambda n: skeleton_graph(replace(cfg, num_hidden_layers=n), dens, options),
                                     cfg.num_hidden_layers)
        rep["range"] = figure_range(counter, profile, progress)
        add_range_keys(rep)
        rep["cost_range"] = _cost_at_corners(g, rep, profile, system, cost_params or CostParams(), prompt_len, gen_len)
    return rep, g2, lay


ACTIVITY_TEXT = DEFAULT_MODEL.parent / "heldout_sample.txt"      # real text the default model never trained on


def measured_activity(build_dir, tokens: list[int] | None = None, text_source: str | None = None,
                      n_tokens: int = 64) -> dict:
    """Activity per (core, stage) per token measured by the Numba engine's counters on the build's own
    placed IR and layout, over ``tokens`` (default: the first ``n_tokens`` bytes of ``ACTIVITY_TEXT``
    through the build's tokenizer). Returns {profile, source, tokens}: what ``cost_report`` takes instead
    of the assumed rates, and where it came from (also what ``--save-activity`` writes)."""
    from mflc.build import Build
    from mflc.compiler.model.tokenizer import tokenizer_for
    from mflc import executors

    b = Build.load(Path(build_dir))
    qm, placed, core_map = b.runnable()
    if tokens is None:
        tok = tokenizer_for(Path(build_dir), qm.cfg.vocab_size)
        tokens = tok.encode(ACTIVITY_TEXT.read_bytes(), source=str(ACTIVITY_TEXT))[:n_tokens]
        text_source = f"the first {len(tokens)} tokens of {ACTIVITY_TEXT.name}"
    if not tokens:
        raise MflcError("measuring activity needs at least one token")
    ex = executors.create("engine", graph=placed, core_map=core_map, counters=True)
    ex.run(list(tokens))
    return dict(profile=ex.counters.per_token_profile(), tokens=len(tokens),
                source=f"measured by the engine's counters on {text_source or f'{len(tokens)} given tokens'} "
                       f"({Path(build_dir)})")


def estimate_build_activity(build_dir, activity: dict, *, cost_params=None, prompt_len: int = 500,
                            gen_len: int = 100) -> dict:
    """The cost report of a build's own layout with a measured activity (``measured_activity`` or a saved
    one) beside the same report with the assumed rates, so the two can be compared."""
    from mflc.build import Build
    from mflc.compiler.chip.costmodel import CostParams, cost_report
    from mflc.compiler.chip.gpu_baseline import choose_baselines

    b = Build.load(Path(build_dir))
    placed, core_map = b.placed, b.core_map()
    models, note = choose_baselines(b.quantized.cfg.n_params(), None)
    kw = dict(params=cost_params or CostParams(), prompt_len=prompt_len, gen_len=gen_len, baselines=models,
              baseline_note=note)
    measured = cost_report(placed, core_map, activity["profile"], profile_source=activity["source"], **kw)
    assumed = cost_report(placed, core_map, None, **kw)
    return dict(build=str(build_dir), activity_source=activity["source"], measured=measured, assumed=assumed)


def _cost_at_corners(g, rep: dict, profile, system, params, prompt_len: int, gen_len: int) -> dict:
    """Throughput, latency and energy of the layouts with every figure at its favourable and at its unfavourable
    end (more cores: more static power and more messages between chips, so fewer tokens per second is still
    an answer); {corner: the headline figures} with the assumed layout's beside them."""
    from dataclasses import replace

    from mflc.compiler.chip.costmodel import cost_report
    from mflc.compiler.chip.place import layout_graph
    from mflc.ir.coremap import CoreMap
    from mflc.ir.errors import FitError

    def headline(c: dict, cores: int, chips: int) -> dict:
        return dict(cores=cores, chips=chips, generation_tokens_per_s=c["throughput"]["generation_tokens_per_s"],
                    prefill_tokens_per_s=c["throughput"]["prefill_tokens_per_s"], ttft_s=c["latency"]["ttft_s"],
                    generation_energy_per_token_J=c["energy"]["generation_per_token_J"],
                    static_power_W=c["energy"]["static_power_W"])

    out = dict(assumed=headline(rep["cost"], rep["cores"], rep["chips"]))
    for corner in ("all_favourable", "all_unfavourable"):
        figs = rep["range"][corner].get("figures") or {}
        prof = replace(profile, **figs)
        try:
            g2, lay = layout_graph(g, prof, system)
        except FitError as e:
            out[corner] = dict(error="; ".join(e.violations[:2]))
            continue
        c = cost_report(g2, CoreMap.from_layout(lay), None, params, prompt_len, gen_len)
        out[corner] = headline(c, lay.totals()["cores"], lay.n_chips)
    return out


def add_range_keys(rep: dict) -> None:
    """The range's headline figures at the top of a report, next to ``cores`` and ``chips`` (assumed)."""
    r = rep["range"]
    for k in ("cores_low", "cores_high", "chips_low", "chips_high", "profiles", "sensitivity"):
        rep[k] = r[k]


def estimate_netx(path, *, dense_only: bool = False, hardware: str | None = None, hw: list[str] | dict | None = None,
                  system: str | None = None, ranges: bool = True, progress=None):
    """Cores and chips of the dense layers of a lava-dl NetX network (``mflc estimate --netx``): read into IR
    (``mflc.compiler.model.netx``), laid out and checked, with a ``layers`` table (name, shape, synapses,
    weight_bits, synmem_units, cores per dense layer) and the same ranges as ``estimate``.
    Returns (report, placed graph, layout)."""
    from mflc.compiler.chip.hardware import resolve_profile, synmem_units, weight_width
    from mflc.compiler.chip.layout import check_layout
    from mflc.compiler.chip.place import layout_graph
    from mflc.compiler.chip.report import build_report
    from mflc.compiler.model.netx import read_netx
    from mflc.ir.errors import FitError

    if isinstance(hw, dict):
        hw = [f"{k}={v}" for k, v in hw.items()]
    profile = resolve_profile(hardware, hw)
    net = read_netx(path, dense_only)
    g2, lay = layout_graph(net.graph, profile, system)
    problems = check_layout(lay, g2, profile)
    if problems:
        raise FitError([f"layout check: {p}" for p in problems])
    rep = build_report(g2, lay, profile, source={"netx": str(path)})
    rows = {r["group"]: r for r in rep["groups"]}
    layers = []
    for d in net.dense:
        r = rows[d["group"]]
        s = g2.synapses[d["synapse"]] if d["synapse"] in g2.synapses else net.graph.synapses[d["synapse"]]
        layers.append(dict(name=d["name"], layer=d["layer"], shape=d["shape"], synapses=int(s.nnz),
                           weight_bits=int(weight_width(s, profile)), weight_exp=d["weight_exp"],
                           synmem_units=round(synmem_units(r["synapse_bits"], profile), 1),
                           synapse_bits=int(r["synapse_bits"]), cores=int(r["cores"]), neurons=d["shape"][1]))
    rep["layers"] = layers
    rep["skipped_layers"] = net.skipped
    rep["input_groups"] = [dict(group=n, neurons=g.size, cores=rows[n]["cores"]) for n, g in net.graph.groups.items()
                           if g.meta.get("role") == "netx_input"]
    if ranges:
        from mflc.compiler.chip.ranges import count_graph, figure_range

        rep["range"] = figure_range(lambda h: count_graph(net.graph, h), profile, progress)
        add_range_keys(rep)
    return rep, g2, lay
