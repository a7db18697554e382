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
                  rms_eps: float | None = None):
    from mflc.compiler.quantize import QuantOptions

    return QuantOptions(act_bits=act_bits, state_bits=state_bits, site_bits=parse_site_bits(site_bits),
                        pow2=not no_pow2, remove_inner_norm=remove_inner_norm, rms_eps=rms_eps)


def read_text_tokens(path: Path, vocab_size: int, model_dir: Path | None, max_tokens: int | None) -> list[int]:
    from mflc.compiler.tokenizer import tokenizer_for

    if not path.is_file():
        raise ConfigError(f"{path}: text file not found")
    toks = tokenizer_for(model_dir, vocab_size).encode(path.read_bytes())
    return toks[:max_tokens] if max_tokens else toks


ActBits = typer.Option(8, help="Bits of every activation quantization site.")
StateBits = typer.Option(24, help="Bits of the recurrent state h (<= 24).")
SiteBits = typer.Option(None, "--site-bits", help="Per-site override, e.g. --site-bits r=12 (repeatable).")
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
                 calib: Optional[Path] = typer.Option(None, help="Text file for calibration (default: random tokens)"),
                 calib_tokens: int = typer.Option(256, help="Calibration tokens"),
                 act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
                 no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
                 json_out: bool = typer.Option(False, "--json")):
    """Quantize a checkpoint to the fixed-point model and save it (its scales and widths included)."""
    model = resolve_model(model)
    from mflc.compiler.loading import calibration_tokens, load_float
    from mflc.compiler.quantize import quantize

    cfg, w = load_float(model)
    toks = read_text_tokens(calib, cfg.vocab_size, model, calib_tokens) if calib else None
    qm = quantize(cfg, w, calibration_tokens(cfg, toks, n=calib_tokens),
                  quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm, rms_eps))
    qm.save(out_dir)
    if json_out:
        emit_json({"out": str(out_dir), "sites": qm.sites})
    else:
        out.print(f"wrote quantized model ({len(qm.sites)} sites, {len(qm.tensors)} integer tensors) to {out_dir}")


@app.command("eval")
@guarded
def eval_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
             text: Path = typer.Option(..., help="Text file to evaluate on (byte-level)"),
             max_tokens: int = typer.Option(2048, help="Evaluate at most this many tokens"),
             calib: Optional[Path] = typer.Option(None, help="Calibration text (default: the first tokens of --text)"),
             calib_tokens: int = typer.Option(256),
             act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
             no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
             json_out: bool = typer.Option(False, "--json")):
    """Float vs fixed-point bits per byte and top-1 agreement of next-token predictions."""
    model = resolve_model(model)
    from mflc.compiler.evaluate import evaluate
    from mflc.compiler.float_model import FloatModel
    from mflc.compiler.int_model import IntModel
    from mflc.compiler.loading import calibration_tokens, load_float
    from mflc.compiler.quantize import quantize

    cfg, w = load_float(model)
    toks = read_text_tokens(text, cfg.vocab_size, model, max_tokens)
    if len(toks) < 2:
        raise ConfigError(f"{text}: needs at least 2 bytes of text, has {len(toks)}")
    ctoks = read_text_tokens(calib, cfg.vocab_size, model, calib_tokens) if calib else toks[:calib_tokens]
    opts = quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm, rms_eps)
    qm = quantize(cfg, w, calibration_tokens(cfg, ctoks, n=calib_tokens), opts)
    fm = FloatModel(cfg, w, remove_inner_norm=remove_inner_norm)
    prog, adv = progress_bar(len(toks), "fixed-point model")
    with prog:
        res = evaluate(fm, IntModel(qm), toks, progress=adv)
    d = res.to_dict()
    d.update(text=str(text), calibration=str(calib or f"first {min(calib_tokens, len(toks))} tokens of --text"),
             unit="bits per byte")
    if json_out:
        emit_json(d)
        return
    out.print(kv_table(f"accuracy on {text} ({res.tokens} predictions)", [
        ("float bits/byte", res.float_bits_per_token),
        ("fixed-point bits/byte", res.fixed_bits_per_token),
        ("relative gap", f"{100 * res.relative_gap:+.2f} %"),
        ("top-1 agreement (float vs fixed)", res.top1_agreement),
        ("float top-1 accuracy", res.float_top1_accuracy),
        ("fixed-point top-1 accuracy", res.fixed_top1_accuracy),
        ("calibration", d["calibration"]),
    ]))
