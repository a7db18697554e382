"""Model commands: init, quantize, eval."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mflc.cli.app import resolve_model, app, check_out_dir, emit_json, err, guarded, kv_table, out, progress_bar
from mflc.cli.open import require_checkpoint
from mflc.ir import fixedpoint as fp
from mflc.ir.errors import ConfigError


def parse_site_bits(specs: list[str]) -> dict:
    """SITE=BITS options into a dict, with a usage error for a malformed one."""
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
                  rms_eps: float | None = None, scale_method: str = "max", uniform: bool = False):
    """The QuantOptions the quantizing commands' shared options describe."""
    from mflc.compiler.model.quantize import DEFAULT_MIN_SITE_BITS, QuantOptions

    return QuantOptions(act_bits=act_bits, state_bits=state_bits, site_bits=parse_site_bits(site_bits),
                        min_site_bits={} if uniform else dict(DEFAULT_MIN_SITE_BITS),
                        pow2=not no_pow2, remove_inner_norm=remove_inner_norm, rms_eps=rms_eps,
                        scale_method=scale_method)


def read_text(path: Path, tokenizer, max_tokens: int | None) -> tuple[list[int], int]:
    """The tokens of a text file (at most ``max_tokens``) and how many bytes of text the predicted ones
    (all but the first) cover: the denominator of bits per byte, whatever the tokenizer."""
    if not path.is_file():
        raise ConfigError(f"{path}: text file not found")
    toks, ends = tokenizer.encode_spans(path.read_bytes(), source=str(path))
    if max_tokens:
        toks, ends = toks[:max_tokens], ends[:max_tokens]
    return toks, int(ends[-1] - ends[0]) if len(toks) else 0


def read_text_tokens(path: Path, vocab_size: int, model_dir: Path | None, max_tokens: int | None) -> list[int]:
    """A text file as the model's tokens (its own tokenizer, or bytes), at most max_tokens."""
    from mflc.compiler.model.tokenizer import tokenizer_for

    return read_text(path, tokenizer_for(model_dir, vocab_size), max_tokens)[0]


def check_calib_tokens(calib_tokens: int | None) -> None:
    """Refuse a calibration length below one token as a usage error."""
    if calib_tokens is not None and calib_tokens < 1:
        raise ConfigError(f"--calib-tokens must be >= 1, got {calib_tokens}")


def quantize_with_calibration(model: Path, cfg, w, calib: Path | None, calib_tokens: int | None, opts,
                              text_tokens: list[int] | None = None):
    """Quantize with the calibration ``resolve_calibration`` picks, recording its source in the model."""
    from mflc.compiler.model.loading import resolve_calibration
    from mflc.compiler.model.quantize import quantize

    check_calib_tokens(calib_tokens)
    seqs, source = resolve_calibration(cfg, model, calib, calib_tokens, text_tokens)
    qm = quantize(cfg, w, seqs, opts)
    qm.meta["calibration"] = source
    return qm


def report_calibration(how: str | None, json_out: bool, warn: bool = True, when: str = "") -> None:
    """Say what the scales were calibrated on: a line on stdout (a --json document carries it instead),
    and a warning on stderr when it was random tokens, which fit the scales to no real activations."""
    from mflc.compiler.model.loading import is_random_calibration

    if not json_out:
        out.print(f"calibration{when}: {how or 'not recorded'}", highlight=False, markup=False, soft_wrap=True)
    if warn and is_random_calibration(how):
        err.print("[yellow]warning:[/] the site scales were calibrated on random tokens, not text: a trained model's "
                  "activations on real text can be far from these ranges (clipped or coarse). Give --calib FILE, "
                  "or put a calibration.txt in the model directory", highlight=False, soft_wrap=True)


# every option that changes how a float checkpoint is quantized (a quantized model cannot honour them)
QUANT_PARAMS = ["calib", "calib_tokens", "act_bits", "state_bits", "site_bits", "uniform", "no_pow2",
                "remove_inner_norm", "rms_eps", "scale_method"]

CalibOpt = typer.Option(None, "--calib", help="Calibration text file (default: the model's calibration.txt, "
                        "else the evaluated text's first 256 tokens (eval), else random tokens).")
CalibTokensOpt = typer.Option(None, "--calib-tokens", help="Use at most this many calibration tokens (default: all of a file, 256 otherwise).")
ActBits = typer.Option(8, help="Bits of every activation quantization site.")
StateBits = typer.Option(fp.STATE_BITS_MAX, help=f"Bits of the recurrent state h (<= {fp.STATE_BITS_MAX}).")
SiteBits = typer.Option(None, "--site-bits", help="Per-site override, e.g. --site-bits r=12 (repeatable). The product "
                        "sites o and z default to 12 bits (docs/accuracy.md); see --uniform.")
Uniform = typer.Option(False, "--uniform", help="The paper's scheme: every site --act-bits wide, o and z included "
                       "(--site-bits still applies).")
NoPow2 = typer.Option(False, "--no-pow2", help="Allow arbitrary (non power-of-two) site scales.")
RemoveInner = typer.Option(False, "--remove-inner-norm", help="Drop each BitLinear's own RMSNorm (changes the model).")
RmsEps = typer.Option(None, "--rms-eps", help="Override RMSNorm's eps in the fixed-point model (the fork's option).")
ScaleMethod = typer.Option("max", "--scale-method", help="How each site's scale is chosen: max (the calibrated "
                           "max |x|) or mse (the least squared rounding error over the calibration values; "
                           "docs/accuracy.md)")


@app.command()
@guarded
def init(preset: str = typer.Option(..., help="tiny, 370M, 1.3B or 2.7B"),
         out_dir: Path = typer.Option(..., "--out", help="Directory to write config.json + model.safetensors"),
         seed: int = typer.Option(0, help="Random seed"),
         shard_mb: Optional[int] = typer.Option(None, help="Shard the safetensors file at this size (MB)"),
         json_out: bool = typer.Option(False, "--json")):
    """Write a randomly initialised checkpoint of a preset size (Hugging Face format)."""
    from mflc.compiler.model.checkpoint import init_weights, save_checkpoint
    from mflc.compiler.model.config import preset as get_preset

    cfg = get_preset(preset)
    w = init_weights(cfg, seed)
    save_checkpoint(out_dir, cfg, w, max_shard_bytes=shard_mb * 2**20 if shard_mb else None)
    if json_out:
        emit_json(dict(out=str(out_dir), preset=preset, seed=seed, parameters=cfg.n_params(),
                       files=sorted(p.name for p in Path(out_dir).iterdir() if p.is_file())))
    else:
        out.print(f"wrote {preset} checkpoint ({cfg.n_params():,} parameters) to {out_dir}")


@app.command("quantize")
@guarded
def quantize_cmd(model: Optional[Path] = typer.Argument(None, help="Checkpoint directory (default: the embedded default model)"),
                 out_dir: Path = typer.Option(..., "--out"),
                 calib: Optional[Path] = CalibOpt, calib_tokens: Optional[int] = CalibTokensOpt,
                 act_bits: int = ActBits, state_bits: int = StateBits, site_bits: list[str] = SiteBits,
                 uniform: bool = Uniform,
                 no_pow2: bool = NoPow2, remove_inner_norm: bool = RemoveInner, rms_eps: Optional[float] = RmsEps,
                 scale_method: str = ScaleMethod,
                 json_out: bool = typer.Option(False, "--json")):
    """Quantize a checkpoint to the fixed-point model and save it (its scales and widths included)."""
    check_out_dir(out_dir, holds="a quantized-model directory: quant.json + quant.safetensors")
    check_calib_tokens(calib_tokens)
    model = resolve_model(model)
    require_checkpoint(model, "quantize")
    from mflc.compiler.model.loading import load_float

    cfg, w = load_float(model)
    qm = quantize_with_calibration(model, cfg, w, calib, calib_tokens,
                                   quant_options(act_bits, state_bits, site_bits, no_pow2, remove_inner_norm, rms_eps,
                                                 scale_method, uniform))
    qm.save(out_dir)
    from mflc.compiler.model.tokenizer import copy_tokenizer

    copy_tokenizer(model, out_dir)
    how = qm.meta["calibration"]
    if json_out:
        emit_json({"out": str(out_dir), "sites": qm.sites, "calibration": how, "quantization": qm.options.__dict__})
    else:
        out.print(f"wrote quantized model ({len(qm.sites)} sites, {len(qm.tensors)} integer tensors) to {out_dir}")
    report_calibration(how, json_out)
