"""Find out what a path holds (HF checkpoint or quantized model) and load it with clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mflc.ir.errors import CheckpointError

from .config import ModelConfig
from .quantize import QuantizedModel, QuantOptions, quantize


def is_quantized_dir(path: Path) -> bool:
    """Whether a directory holds a quantized model (its quant.json)."""
    return (Path(path) / "quant.json").is_file()


# A model directory may carry its own calibration text (the default model does): representative input
# from the model's training distribution, so that static scales fit what the model will see.
CALIBRATION_FILE = "calibration.txt"
RANDOM_CALIBRATION_TOKENS = 256
RANDOM_CALIBRATION = "random tokens (seed 0)"    # how a calibration source on random tokens is named


def resolve_calibration(cfg: ModelConfig, model_dir: Path | None, calib_file: Path | None = None,
                        n: int | None = None, text_tokens: list[int] | None = None) -> tuple[list[list[int]], str]:
    """Calibration sequences and where they came from, in order of preference: an explicit text file,
    the model's own ``calibration.txt``, the first tokens of the text being evaluated, random tokens.
    ``n`` caps the tokens taken (default: a whole file, else 256)."""
    from .tokenizer import tokenizer_for

    if n is not None and n < 1:
        raise CheckpointError(f"calibration token count (--calib-tokens) must be >= 1, got {n}")

    def from_file(f: Path, what: str):
        """Calibration tokens from a text file, refusing one shorter than two tokens."""
        if not Path(f).is_file():
            raise CheckpointError(f"{f}: calibration text not found")
        toks = tokenizer_for(model_dir, cfg.vocab_size).encode(Path(f).read_bytes(), source=str(f))
        toks = toks[:n] if n else toks
        if len(toks) < 2:
            raise CheckpointError(f"{f}: calibration text has {len(toks)} token(s); needs at least 2")
        return [toks], f"{what} {f} ({len(toks)} tokens)"

    if calib_file is not None:
        return from_file(calib_file, "text file")
    own = Path(model_dir) / CALIBRATION_FILE if model_dir is not None else None
    if own is not None and own.is_file():
        return from_file(own, "the model's own")
    k = n or RANDOM_CALIBRATION_TOKENS
    if text_tokens:
        return [list(text_tokens[:k])], f"first {min(k, len(text_tokens))} tokens of the evaluated text"
    return calibration_tokens(cfg, None, n=k), f"{k} {RANDOM_CALIBRATION}: a trained model deserves real text (--calib)"


def is_random_calibration(how: str | None) -> bool:
    """Whether a calibration source (``resolve_calibration``'s second value, kept in a quantized model's
    meta) is random tokens: scales fitted to no text, which the CLI warns about."""
    return bool(how) and RANDOM_CALIBRATION in how


def calibration_tokens(cfg: ModelConfig, text_tokens: list[int] | None, seed: int = 0, n: int = 256) -> list[list[int]]:
    """Calibration sequences: the given tokens (first n), else n random tokens drawn with ``seed``."""
    if text_tokens:
        return [list(text_tokens[:n])]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.vocab_size, n).tolist()]


def load_float(path) -> tuple[ModelConfig, dict]:
    """A float checkpoint's config and weights, with a clear error for a quantized-only directory."""
    from .checkpoint import load_checkpoint

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such model directory")
    if is_quantized_dir(p) and not (p / "config.json").is_file():
        raise CheckpointError(f"{p}: holds a quantized model only; this command needs the float checkpoint (config.json + model.safetensors)")
    return load_checkpoint(p)


def load_quantized(path, calib: list[list[int]] | None = None, options: QuantOptions | None = None) -> QuantizedModel:
    """A quantized model from a quantized dir, or by quantizing a float checkpoint on the fly."""
    p = Path(path)
    if is_quantized_dir(p):
        return QuantizedModel.load(p)
    cfg, w = load_float(p)
    if calib is None:
        calib, source = resolve_calibration(cfg, p)
    else:
        source = "given sequences"
    qm = quantize(cfg, w, calib, options)
    qm.meta["calibration"] = source
    return qm
