"""Find out what a path holds (HF checkpoint or quantized model) and load it with clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mflc.ir.errors import CheckpointError

from .config import ModelConfig
from .quantize import QuantizedModel, QuantOptions, quantize


def is_quantized_dir(path: Path) -> bool:
    return (Path(path) / "quant.json").is_file()


def calibration_tokens(cfg: ModelConfig, text_tokens: list[int] | None, seed: int = 0, n: int = 256) -> list[list[int]]:
    """Calibration sequences: the given tokens (first n), else n random tokens drawn with ``seed``."""
    if text_tokens:
        return [list(text_tokens[:n])]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, cfg.vocab_size, n).tolist()]


def load_float(path) -> tuple[ModelConfig, dict]:
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
    return quantize(cfg, w, calib or calibration_tokens(cfg, None), options)
