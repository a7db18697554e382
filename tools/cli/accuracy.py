"""Accuracy commands: eval (float vs fixed point on text) and ablate (which quantization site costs what)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import typer

from mflc.cli.app import app, emit_json, guarded, out, resolve_model
from mflc.cli.open import require_checkpoint
from mflc.cli.tasks import SchedulerOpt, WorkersOpt, run_tasks, runner_from
from mflc.cli.model import (ActBits, CalibOpt, CalibTokensOpt, NoPow2, RemoveInner, RmsEps, ScaleMethod, SiteBits,
                            StateBits, Uniform, quant_options, quantize_with_calibration, read_text)
from mflc.ir.errors import ConfigError
from mflc.tasks import Runner, worker_cached

TextOpt = typer.Option(None, "--text", help="Text file to evaluate on, tokenized by the model (bytes, or its tokenizer.json; repeatable)")
HeldoutOpt = typer.Option(False, "--heldout", help="Evaluate on the held-out split of this Python's standard library "
                          "(the default model's split; see tools/training/corpus.py)")
StdlibOpt = typer.Option(None, help="Standard-library directory for --heldout (default: this interpreter's)")
MaxTokensOpt = typer.Option(2048, help="Evaluate at most this many tokens of each file")
MaxFilesOpt = typer.Option(None, help="Evaluate at most this many files")
EngineOpt = typer.Option("fast", help="Executor of the fixed-point logits (see `mflc executors`). fast: the Numba "
                         "simulator of the compiled IR (proven equal to the reference); reference (= int-model): the "
                         "numpy integer model (~40x slower)")


def evaluation_texts(model: Path, vocab_size: int, text: list[Path] | None, heldout: bool, stdlib: Path | None,
                     max_tokens: int, max_files: int | None, byte_counts: dict | None = None) -> list[tuple[str, list[int]]]:
    """(name, tokens) of every text to evaluate on: the given files, or the stdlib's held-out split.
    ``byte_counts``, if given, receives name -> bytes of text the predicted tokens cover."""
    if bool(text) == heldout:
        raise ConfigError("give either --text FILE (repeatable) or --heldout")
    if max_tokens < 2:
        raise ConfigError(f"--max-tokens {max_tokens}: needs at least 2")
    if max_files is not None and max_files < 1:
        raise ConfigError(f"--max-files {max_files}: needs at least 1")
    if heldout:
        from mflc.training.corpus import heldout_files, stdlib_dir

        root = stdlib or stdlib_dir()
        if not Path(root).is_dir():
            raise ConfigError(f"--stdlib {root}: not a directory")
        files = heldout_files(root)
        if not files:
            raise ConfigError(f"{root}: no held-out .py files found (is this a Python standard library?)")
    else:
        files = [(str(p), p) for p in text]
    from mflc.compiler.model.tokenizer import tokenizer_for

    tok = tokenizer_for(model, vocab_size)              # parsed once, not once per file
    seqs = []
    for name, p in files[:max_files] if max_files else files:
        toks, n_bytes = read_text(Path(p), tok, max_tokens)
        if byte_counts is not None:
            byte_counts[name] = n_bytes
        if len(toks) < 2:
            raise ConfigError(f"{p}: needs at least 2 tokens of text, has {len(toks)}")
        seqs.append((name, toks))
    return seqs


def fixed_point_results(fm, qm, seqs, engine: str, float_logits: dict | None = None, progress=None, ex=None, im=None):
    """EvalResult per sequence for one quantized model; fixed-point logits from the executor named
    ``engine`` (``mflc.executors``; or ``ex``, one already made for ``qm``), from a fresh state for each sequence."""
    from mflc import executors
    from mflc.compiler.model.evaluate import evaluate
    from mflc.compiler.model.int_model import IntModel

    im = im or IntModel(qm)
    ex = ex or executors.create(engine, qm=qm)      # an IR executor lowers qm
    results, done = [], 0
    for name, toks in seqs:
        def step(n, base=done):
            """Progress callback offset by the tokens of earlier sequences."""
            if progress:
                progress(base + n)
        ex.reset()
        li = executors.run_in_chunks(ex, toks, step).outputs["logits"].astype("int64")
        lf = float_logits.get(name) if float_logits is not None else None
        results.append((name, evaluate(fm, im, toks, progress=step, int_logits=li, float_logits=lf)))
        done += len(toks)
    return results


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint and its calibration, by path: what a task needs to rebuild an evaluation's models on
    any worker (a shared filesystem, the same path). ``identity`` is what the files were when the command
    started; a worker that sees other files (changed since, or another machine's) refuses to run."""

    model: str
    calib: Optional[str] = None
    calib_tokens: Optional[int] = None
    calib_text: tuple = ()          # the first evaluated text's tokens: the calibration when no file is found
    remove_inner_norm: bool = False
    identity: tuple = ()

    @classmethod
    def of(cls, model: Path, calib: Path | None, calib_tokens: int | None, calib_text, remove_inner_norm: bool = False):
        """The source of ``model`` as it is on disk now, by absolute path (a worker's directory is not ours)."""
        model, calib = str(Path(model).absolute()), str(Path(calib).absolute()) if calib else None
        return cls(model, calib, calib_tokens, tuple(int(t) for t in calib_text), remove_inner_norm,
                   _source_identity(model, calib))

    def float_model(self):
        """(config, weights, FloatModel), loaded once per process while the files stay the same."""
        from mflc.compiler.model.float_model import FloatModel
        from mflc.compiler.model.loading import load_float

        def make():
            """Read the checkpoint and build its float model."""
            cfg, w = load_float(Path(self.model))
            return cfg, w, FloatModel(cfg, w, remove_inner_norm=self.remove_inner_norm)
        return worker_cached(("float", self.model, self.remove_inner_norm), self._checked_identity(), make)

    def quantized(self, opts):
        """The model quantized with ``opts`` and this calibration, once per process and setting."""
        cfg, w, _ = self.float_model()
        return worker_cached(self.quant_key(opts), self.identity, lambda: quantize_with_calibration(
            Path(self.model), cfg, w, Path(self.calib) if self.calib else None, self.calib_tokens, opts,
            text_tokens=list(self.calib_text)))

    def quant_key(self, opts) -> tuple:
        """What a quantized model of this source depends on: the cache key of ``quantized(opts)``."""
        return ("quant", self.model, self.calib, self.calib_tokens, self.calib_text, repr(asdict(opts)))

    def _checked_identity(self) -> tuple:
        now = _source_identity(self.model, self.calib)
        if now != self.identity:
            import socket

            raise ConfigError(f"{self.model}: the checkpoint or calibration file on {socket.gethostname()} differs "
                              "from the one the command started with (changed meanwhile, or this worker does not "
                              "share the client's filesystem at the same path)")
        return now


def _source_identity(model: str, calib: str | None) -> tuple:
    """Sizes and mtimes of the checkpoint's files and of the calibration file."""
    from mflc.tasks import files_identity

    c = Path(calib) if calib else None
    return files_identity(Path(model)), (c.name, c.stat().st_size, c.stat().st_mtime_ns) if c and c.is_file() else None


@dataclass(frozen=True)
class EvalTask:
    """One text of ``mflc eval``: a task of its own (tokens by value, the model by path)."""

    source: ModelSource
    opts: object                    # QuantOptions
    engine: str
    name: str
    tokens: tuple


def eval_text(task: EvalTask):
    """(name, EvalResult) of one text: the worker's cached float and quantized models and executor."""
    from mflc import executors
    from mflc.compiler.model.int_model import IntModel

    src = task.source
    _, _, fm = src.float_model()
    qm = src.quantized(task.opts)
    key = ("executor", task.engine, *src.quant_key(task.opts))
    im, ex = worker_cached(key, src.identity, lambda: (IntModel(qm), executors.create(task.engine, qm=qm)))
    return fixed_point_results(fm, qm, [(task.name, list(task.tokens))], task.engine, ex=ex, im=im)[0]


def eval_results(source: ModelSource, opts, seqs, engine: str, runner: Runner | None = None) -> list:
    """(name, EvalResult) of every text, in order: each text a task (``mflc.tasks``; serial by default)."""
    tasks = [EvalTask(source, opts, engine, name, tuple(int(t) for t in toks)) for name, toks in seqs]
    return run_tasks(eval_text, tasks, [f"file {name}" for name, _ in seqs], runner or Runner(), "files")


@app.command("eval")
@guarded
def eval_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
             text: list[Path] = TextOpt, heldout: bool = HeldoutOpt, stdlib: Optional[Path] = StdlibOpt,
             max_tokens: int = MaxTokensOpt, max_files: Optional[int] = MaxFilesOpt, engine: str = EngineOpt,
             calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
             act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
             uniform: bool = Uniform,
             no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
             scale_method: str = ScaleMethod,
             workers: Optional[str] = WorkersOpt, scheduler: Optional[str] = SchedulerOpt,
             json_out: bool = typer.Option(False, "--json")):
    """Float vs fixed-point bits per byte and top-1 agreement of next-token predictions, file by file."""
    model = resolve_model(model)
    require_checkpoint(model, "eval")
    runner = runner_from(workers, scheduler)        # a bad --workers fails before any work
    from mflc.compiler.model.evaluate import combine

    from mflc import executors

    executors.canonical(engine)                     # an unknown name fails before any work
    from mflc.compiler.model.tokenizer import tokenizer_for

    base = ModelSource.of(model, calib, calib_tokens, (), remove_inner_norm)
    cfg, _, _ = base.float_model()                  # read once in this process (serial: the tasks reuse it)
    per, tokens_col = ("byte", "bytes") if tokenizer_for(model, cfg.vocab_size).kind == "bytes" else ("token", "tokens")
    n_bytes: dict[str, int] = {}
    seqs = evaluation_texts(model, cfg.vocab_size, text, heldout, stdlib, max_tokens, max_files, n_bytes)
    opts = quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm, rms_eps, scale_method, uniform)
    source = replace(base, calib_text=tuple(int(t) for t in seqs[0][1]))
    qm = source.quantized(opts)                     # serial: the tasks reuse it; Dask: each worker makes its own
    results = eval_results(source, opts, seqs, engine, runner)
    total = combine([r for _, r in results])

    def per_byte(r, nb: int) -> dict:
        """Bits per byte of both models: the bits of every predicted token over the bytes they cover."""
        return dict(bytes=nb, float_bits_per_byte=r.float_bits_per_token * r.tokens / nb if nb else None,
                    fixed_bits_per_byte=r.fixed_bits_per_token * r.tokens / nb if nb else None)

    total_bytes = sum(n_bytes[n] for n, _ in results)
    d = dict(total=total.to_dict() | per_byte(total, total_bytes),
             files=[dict(file=n, **r.to_dict(), **per_byte(r, n_bytes[n])) for n, r in results],
             calibration=qm.meta["calibration"], engine=engine, unit=f"bits per {per}",
             max_tokens_per_file=max_tokens, quantization=qm.options.__dict__)
    if json_out:
        emit_json(d)
        return
    from rich.table import Table

    t = Table(title=f"bits per {per}, float vs fixed point ({len(results)} file(s), at most {max_tokens} {tokens_col} each)",
              title_justify="left")
    t.add_column("file", overflow="fold")
    for col in (tokens_col, "float", "fixed point", "gap", "top-1 agree"):
        t.add_column(col, justify="right", no_wrap=True)
    for n, r in results + [("all", total)]:
        t.add_row(n, f"{r.tokens:,}", f"{r.float_bits_per_token:.4f}", f"{r.fixed_bits_per_token:.4f}",
                  f"{100 * r.relative_gap:+.2f} %", f"{r.top1_agreement:.3f}", end_section=n == results[-1][0])
    out.print(t)
    if per == "token":
        t_pb = d["total"]
        out.print(f"bits per byte over the {total_bytes:,} bytes those tokens cover: float {t_pb['float_bits_per_byte']:.4f}, "
                  f"fixed point {t_pb['fixed_bits_per_byte']:.4f}")
    out.print(f"float top-1 accuracy {total.float_top1_accuracy:.3f}, fixed point {total.fixed_top1_accuracy:.3f}; "
              f"calibration: {qm.meta['calibration']}")


def ablation_configs(wide: int, sites: list[str]) -> list[tuple[str, dict]]:
    """(label, QuantOptions fields) of each variant, all relative to the paper's uniform scheme."""
    from mflc.compiler.model.quantize import DEFAULT_MIN_SITE_BITS

    paper = dict(act_bits=8, site_bits={}, min_site_bits={}, pow2=True, scale_method="max")
    wide_default = ", ".join(f"{k} {b}" for k, b in DEFAULT_MIN_SITE_BITS.items())
    default = dict(paper, min_site_bits=dict(DEFAULT_MIN_SITE_BITS))
    rows = [("paper: every site 8 bits, power-of-two, max", paper),
            (f"mflc default ({wide_default} bits)", default),
            ("mflc default, free scales", dict(default, pow2=False)),
            ("mflc default, mse scales", dict(default, scale_method="mse")),
            ("free (non power-of-two) scales", dict(paper, pow2=False)),
            ("mse scales", dict(paper, scale_method="mse")),
            (f"every site {wide} bits", dict(paper, act_bits=wide)),
            ("state h 16 bits (instead of 24)", dict(paper, state_bits=16))]
    rows += [(f"{k} at {wide} bits", dict(paper, site_bits={k: wide})) for k in sites]
    return rows


@dataclass(frozen=True)
class AblateTask:
    """One setting of ``mflc ablate``: quantize with it and score every text (a task of its own)."""

    source: ModelSource
    label: str
    fields: dict                    # QuantOptions fields relative to the defaults
    seqs: tuple                     # ((name, tokens), ...)

    def texts_key(self) -> str:
        """A digest of the texts, to share their float logits between the settings a worker runs."""
        import hashlib

        h = hashlib.sha256()
        for name, toks in self.seqs:
            h.update(name.encode() + b"\0" + ",".join(map(str, toks)).encode() + b"\n")
        return h.hexdigest()


def ablate_setting(task: AblateTask) -> tuple[dict, str]:
    """(row of the ablation table, calibration source) of one setting, with the float logits of the texts
    computed once per worker."""
    from mflc.compiler.model.evaluate import combine
    from mflc.compiler.model.quantize import QuantOptions

    src = task.source
    _, _, fm = src.float_model()
    float_logits = worker_cached(("float logits", src.model, task.texts_key()), src.identity,
                                 lambda: {name: fm.forward(list(toks))[0] for name, toks in task.seqs})
    qm = src.quantized(replace(QuantOptions(), **task.fields))
    seqs = [(name, list(toks)) for name, toks in task.seqs]
    res = combine([r for _, r in fixed_point_results(fm, qm, seqs, "fast", float_logits)])
    return dict(config=task.label, options=task.fields, **res.to_dict()), qm.meta["calibration"]


def ablation_rows(source: ModelSource, seqs, configs: list[tuple[str, dict]], runner: Runner | None = None):
    """(rows, calibration source) of the ablation, one row per setting in order: each setting a task."""
    texts = tuple((name, tuple(int(t) for t in toks)) for name, toks in seqs)
    tasks = [AblateTask(source, label, fields, texts) for label, fields in configs]
    done = run_tasks(ablate_setting, tasks, [f"setting {label!r}" for label, _ in configs], runner or Runner(),
                     "settings")
    rows = [row for row, _ in done]
    for r in rows:
        r["gain_vs_paper"] = rows[0]["fixed_bits_per_token"] - r["fixed_bits_per_token"]
    return rows, done[-1][1]


@app.command("ablate")
@guarded
def ablate_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
               text: list[Path] = TextOpt, heldout: bool = HeldoutOpt, stdlib: Optional[Path] = StdlibOpt,
               max_tokens: int = MaxTokensOpt, max_files: Optional[int] = MaxFilesOpt,
               wide: int = typer.Option(12, help="Width given to one site at a time"),
               calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
               workers: Optional[str] = WorkersOpt, scheduler: Optional[str] = SchedulerOpt,
               json_out: bool = typer.Option(False, "--json")):
    """Which quantization site costs the accuracy: widen one site at a time (and try other scale rules)
    against the paper's uniform 8-bit scheme; bits per byte over the same texts and calibration."""
    model = resolve_model(model)
    require_checkpoint(model, "ablate")
    runner = runner_from(workers, scheduler)
    from mflc.compiler.model.quantize import FINAL_SITES, LAYER_SITES
    from mflc.ir import fixedpoint as fp

    if not 9 <= wide <= fp.MSG_BITS_MAX:
        raise ConfigError(f"--wide {wide}: must be in [9, {fp.MSG_BITS_MAX}]")
    base = ModelSource.of(model, calib, calib_tokens, ())
    cfg, _, _ = base.float_model()
    seqs = evaluation_texts(model, cfg.vocab_size, text, heldout, stdlib, max_tokens, max_files)
    source = replace(base, calib_text=tuple(int(t) for t in seqs[0][1]))
    sites = [k for k in (*LAYER_SITES, *FINAL_SITES) if k != "h"]
    rows, calibration = ablation_rows(source, seqs, ablation_configs(wide, sites), runner)
    d = dict(rows=rows, texts=[n for n, _ in seqs], bytes=rows[0]["tokens"], calibration=calibration,
             float_bits_per_byte=rows[0]["float_bits_per_token"], wide=wide)
    if json_out:
        emit_json(d)
        return
    from rich.table import Table

    t = Table(title=f"ablation: fixed-point bits per byte on {len(seqs)} text(s), {d['bytes']:,} bytes "
                    f"(float {d['float_bits_per_byte']:.4f})", title_justify="left")
    t.add_column("configuration", overflow="fold")
    for col in ("fixed", "gap", "gain vs paper", "top-1 agree"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(r["config"], f"{r['fixed_bits_per_token']:.4f}", f"{100 * r['relative_gap']:+.2f} %",
                  f"{r['gain_vs_paper']:+.4f}", f"{r['top1_agreement']:.3f}", end_section=r is rows[7])
    out.print(t)
    out.print(f"calibration: {d['calibration']}")


@dataclass(frozen=True)
class SitesTask:
    """One text of ``mflc sites``: the moments of every site on it (a task of its own; tokens by value)."""

    source: ModelSource
    opts: object                    # QuantOptions
    name: str
    tokens: tuple


def sites_text(task: SitesTask) -> dict:
    """{site: SiteMoments} of one text, on the worker's cached float and quantized models."""
    from mflc.compiler.model.site_stats import site_moments

    _, _, fm = task.source.float_model()
    return site_moments(fm, task.source.quantized(task.opts), task.tokens)


@app.command("sites")
@guarded
def sites_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
              text: list[Path] = TextOpt, heldout: bool = HeldoutOpt, stdlib: Optional[Path] = StdlibOpt,
              max_tokens: int = MaxTokensOpt, max_files: Optional[int] = MaxFilesOpt,
              per_layer: bool = typer.Option(False, "--per-layer", help="One row per site instead of per site kind"),
              calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
              act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
              uniform: bool = Uniform, no_pow2: bool = NoPow2, scale_method: str = ScaleMethod,
              workers: Optional[str] = WorkersOpt, scheduler: Optional[str] = SchedulerOpt,
              json_out: bool = typer.Option(False, "--json")):
    """Why a site costs accuracy: how heavy-tailed its float values are (crest factor, kurtosis) and the
    signal-to-noise ratio of rounding them, in isolation, to the site's fixed-point grid; worst first.
    The texts are those `eval` takes (each a task), the statistics summed over all of them."""
    model = resolve_model(model)
    require_checkpoint(model, "sites")
    runner = runner_from(workers, scheduler)
    from mflc.compiler.model.site_stats import by_kind, combine_moments, stats_from_moments

    base = ModelSource.of(model, calib, calib_tokens, ())
    cfg, _, _ = base.float_model()
    seqs = evaluation_texts(model, cfg.vocab_size, text, heldout, stdlib, max_tokens, max_files)
    opts = quant_options(act_bits, state_bits, site_bits, no_pow2, False, None, scale_method, uniform)
    source = replace(base, calib_text=tuple(int(t) for t in seqs[0][1]))
    qm = source.quantized(opts)
    tasks = [SitesTask(source, opts, name, tuple(int(t) for t in toks)) for name, toks in seqs]
    parts = run_tasks(sites_text, tasks, [f"file {name}" for name, _ in seqs], runner, "files")
    stats = stats_from_moments(qm, combine_moments(parts))
    rows = [r.to_dict() for r in stats] if per_layer else by_kind(stats)
    rows.sort(key=lambda r: r["sqnr_db"])
    d = dict(rows=rows, texts=[n for n, _ in seqs], bytes=sum(len(t) for _, t in seqs),
             calibration=qm.meta["calibration"], quantization=qm.options.__dict__)
    if json_out:
        emit_json(d)
        return
    _print_sites(d, per_layer, len(seqs))


def _print_sites(d: dict, per_layer: bool, n_texts: int) -> None:
    """The sites table, worst SQNR first, and how to read it."""
    from rich.table import Table

    key = "site" if per_layer else "kind"
    t = Table(title=f"quantization sites on {n_texts} text(s), {d['bytes']:,} tokens, lowest SQNR first"
                    + ("" if per_layer else " (per kind: mean crest and kurtosis, worst SQNR over layers)"),
              title_justify="left")
    t.add_column(key)
    for col in ("bits", "crest", "kurtosis", "clipped", "SQNR dB"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in d["rows"]:
        bits = r["bits"] if per_layer else ",".join(map(str, r["bits"]))
        t.add_row(r[key], str(bits), f"{r['crest']:.1f}", f"{r['kurtosis']:.1f}", f"{100 * r['clipped']:.2f} %",
                  f"{r['sqnr_db']:.1f}")
    out.print(t)
    out.print(f"calibration: {d['calibration']}; crest = max|x|/rms (a Gaussian's is ~4 on a few thousand values)")
