"""Model commands: init, quantize, eval."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mflc.cli import resolve_model, app, emit_json, guarded, kv_table, out, progress_bar
from mflc.ir.errors import ConfigError


def parse_site_bits(specs: list[str]) -> dict:
    bits = {}
    for s in specs or []:
        if "=" not in s:
            raise ConfigError(f"--site-bits {s!r}: expected SITE=BITS, e.g. r=12")
        k, v = s.split("=", 1)
        try:
            bits[k.strip()] = int(v)
        except ValueError:
            raise ConfigError(f"--site-bits {s!r}: BITS must be an integer") from None
    return bits


def quant_options(act_bits: int, state_bits: int, site_bits: list[str], no_pow2: bool, remove_inner_norm: bool,
                  rms_eps: float | None = None, scale_method: str = "max"):
    from mflc.compiler.quantize import QuantOptions

    return QuantOptions(act_bits=act_bits, state_bits=state_bits, site_bits=parse_site_bits(site_bits),
                        pow2=not no_pow2, remove_inner_norm=remove_inner_norm, rms_eps=rms_eps,
                        scale_method=scale_method)


def read_text_tokens(path: Path, vocab_size: int, model_dir: Path | None, max_tokens: int | None) -> list[int]:
    from mflc.compiler.tokenizer import tokenizer_for

    if not path.is_file():
        raise ConfigError(f"{path}: text file not found")
    toks = tokenizer_for(model_dir, vocab_size).encode(path.read_bytes())
    return toks[:max_tokens] if max_tokens else toks


def quantize_with_calibration(model: Path, cfg, w, calib: Path | None, calib_tokens: int | None, opts,
                              text_tokens: list[int] | None = None):
    """Quantize with the calibration ``resolve_calibration`` picks, recording its source in the model."""
    from mflc.compiler.loading import resolve_calibration
    from mflc.compiler.quantize import quantize

    seqs, source = resolve_calibration(cfg, model, calib, calib_tokens, text_tokens)
    qm = quantize(cfg, w, seqs, opts)
    qm.meta["calibration"] = source
    return qm


CalibOpt = typer.Option(None, "--calib", help="Calibration text file (default: the model's calibration.txt, "
                        "else the evaluated text's first 256 tokens (eval), else random tokens).")
CalibTokensOpt = typer.Option(None, "--calib-tokens", help="Use at most this many calibration tokens (default: all of a file, 256 otherwise).")
ActBits = typer.Option(8, help="Bits of every activation quantization site.")
StateBits = typer.Option(24, help="Bits of the recurrent state h (<= 24).")
SiteBits = typer.Option(None, "--site-bits", help="Per-site override, e.g. --site-bits r=12 (repeatable). The site o "
                        "defaults to 12 bits (docs/accuracy.md); --site-bits o=8 gives the paper's uniform 8.")
NoPow2 = typer.Option(False, "--no-pow2", help="Allow arbitrary (non power-of-two) site scales.")
RemoveInner = typer.Option(False, "--remove-inner-norm", help="Drop each BitLinear's own RMSNorm (changes the model).")
RmsEps = typer.Option(None, "--rms-eps", help="Override RMSNorm's eps in the fixed-point model (the fork's option).")


@app.command()
@guarded
def init(preset: str = typer.Option(..., help="tiny, 370M, 1.3B or 2.7B"),
         out_dir: Path = typer.Option(..., "--out", help="Directory to write config.json + model.safetensors"),
         seed: int = typer.Option(0, help="Random seed"),
         shard_mb: Optional[int] = typer.Option(None, help="Shard the safetensors file at this size (MB)")):
    """Write a randomly initialised checkpoint of a preset size (Hugging Face format)."""
    from mflc.compiler.checkpoint import init_weights, save_checkpoint
    from mflc.compiler.config import preset as get_preset

    cfg = get_preset(preset)
    w = init_weights(cfg, seed)
    save_checkpoint(out_dir, cfg, w, max_shard_bytes=shard_mb * 2**20 if shard_mb else None)
    out.print(f"wrote {preset} checkpoint ({cfg.n_params():,} parameters) to {out_dir}")


@app.command("quantize")
@guarded
def quantize_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
                 out_dir: Path = typer.Option(..., "--out"),
                 calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
                 act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
                 no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
                 json_out: bool = typer.Option(False, "--json")):
    """Quantize a checkpoint to the fixed-point model and save it (its scales and widths included)."""
    model = resolve_model(model)
    from mflc.compiler.loading import load_float

    cfg, w = load_float(model)
    qm = quantize_with_calibration(model, cfg, w, calib, calib_tokens,
                                   quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm, rms_eps))
    qm.save(out_dir)
    if json_out:
        emit_json({"out": str(out_dir), "sites": qm.sites})
    else:
        out.print(f"wrote quantized model ({len(qm.sites)} sites, {len(qm.tensors)} integer tensors) to {out_dir}")


@app.command("eval")
@guarded
def eval_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
             text: list[Path] = typer.Option(None, "--text", help="Text file to evaluate on, byte-level (repeatable)"),
             heldout: bool = typer.Option(False, "--heldout", help="Evaluate on the held-out split of this Python's standard "
                                          "library (the default model's split; see tools/corpus.py)"),
             stdlib: Optional[Path] = typer.Option(None, help="Standard-library directory for --heldout (default: this interpreter's)"),
             max_tokens: int = typer.Option(2048, help="Evaluate at most this many tokens of each file"),
             max_files: Optional[int] = typer.Option(None, help="Evaluate at most this many files"),
             engine: str = typer.Option("fast", help="fast: fixed-point logits from the Numba simulator of the compiled IR "
                                        "(proven equal to the reference); reference: the numpy integer model (~40x slower)"),
             calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
             act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
             no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
             json_out: bool = typer.Option(False, "--json")):
    """Float vs fixed-point bits per byte and top-1 agreement of next-token predictions, file by file."""
    model = resolve_model(model)
    from mflc.compiler.evaluate import combine, evaluate
    from mflc.compiler.float_model import FloatModel
    from mflc.compiler.int_model import IntModel
    from mflc.compiler.loading import load_float

    if engine not in ("fast", "reference"):
        raise ConfigError(f"--engine {engine!r}: choose fast or reference")
    if bool(text) == heldout:
        raise ConfigError("give either --text FILE (repeatable) or --heldout")
    if max_tokens < 2:
        raise ConfigError(f"--max-tokens {max_tokens}: needs at least 2")
    cfg, w = load_float(model)
    if heldout:
        from mflc.corpus import heldout_files, stdlib_dir

        root = stdlib or stdlib_dir()
        if not Path(root).is_dir():
            raise ConfigError(f"--stdlib {root}: not a directory")
        files = [(rel, p) for rel, p in heldout_files(root)]
        if not files:
            raise ConfigError(f"{root}: no held-out .py files found (is this a Python standard library?)")
    else:
        files = [(str(p), p) for p in text]
    files = files[:max_files] if max_files else files
    seqs = []
    for name, p in files:
        toks = read_text_tokens(Path(p), cfg.vocab_size, model, max_tokens)
        if len(toks) < 2:
            raise ConfigError(f"{p}: needs at least 2 bytes of text, has {len(toks)}")
        seqs.append((name, toks))
    opts = quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm, rms_eps)
    qm = quantize_with_calibration(model, cfg, w, calib, calib_tokens, opts, text_tokens=seqs[0][1])
    fm = FloatModel(cfg, w, remove_inner_norm=remove_inner_norm)
    im = IntModel(qm)
    graph = None
    if engine == "fast":
        from mflc.compiler.lower import lower
        from mflc.simulator.fastpath import run_tokens

        graph = lower(qm)
    results = []
    prog, adv = progress_bar(sum(len(t) for _, t in seqs), "fixed-point model")
    done = 0
    with prog:
        for name, toks in seqs:
            def step(n, base=done):
                adv(base + n)
            li = run_tokens(graph, toks, progress=step) if graph is not None else None
            results.append((name, evaluate(fm, im, toks, progress=step, int_logits=li)))
            done += len(toks)
    total = combine([r for _, r in results])
    d = dict(total=total.to_dict(), files=[dict(file=n, **r.to_dict()) for n, r in results],
             calibration=qm.meta["calibration"], engine=engine, unit="bits per byte",
             max_tokens_per_file=max_tokens, quantization=qm.options.__dict__)
    if json_out:
        emit_json(d)
        return
    from rich.table import Table

    t = Table(title=f"bits per byte, float vs fixed point ({len(results)} file(s), at most {max_tokens} bytes each)",
              title_justify="left")
    t.add_column("file", overflow="fold")
    for col in ("bytes", "float", "fixed point", "gap", "top-1 agree"):
        t.add_column(col, justify="right", no_wrap=True)
    for n, r in results + [("all", total)]:
        t.add_row(n, f"{r.tokens:,}", f"{r.float_bits_per_token:.4f}", f"{r.fixed_bits_per_token:.4f}",
                  f"{100 * r.relative_gap:+.2f} %", f"{r.top1_agreement:.3f}", end_section=n == results[-1][0])
    out.print(t)
    out.print(f"float top-1 accuracy {total.float_top1_accuracy:.3f}, fixed point {total.fixed_top1_accuracy:.3f}; "
              f"calibration: {qm.meta['calibration']}")
