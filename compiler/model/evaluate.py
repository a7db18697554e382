"""Accuracy of the fixed-point model against the float model: bits per byte and top-1 agreement."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .float_model import FloatModel
from .int_model import IntModel


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@dataclass
class EvalResult:
    """Float against fixed-point next-token quality on one text: bits per token and top-1 figures."""

    tokens: int
    float_bits_per_token: float
    fixed_bits_per_token: float
    top1_agreement: float
    float_top1_accuracy: float
    fixed_top1_accuracy: float

    @property
    def relative_gap(self) -> float:
        """How much worse the fixed-point model predicts, as a fraction of the float model's bits per token."""
        return self.fixed_bits_per_token / self.float_bits_per_token - 1.0

    def to_dict(self) -> dict:
        """The result as JSON reports print it, the relative gap included."""
        d = asdict(self)
        d["relative_gap"] = self.relative_gap
        return d


def evaluate(fm: FloatModel, im: IntModel, tokens, progress=None, int_logits: np.ndarray | None = None,
             float_logits: np.ndarray | None = None) -> EvalResult:
    """Next-token cross-entropy (bits) of both models on one sequence; the integer logits are read at
    the quantizer's logit scale, which is measurement only, never part of the integer path.

    ``int_logits`` lets a caller supply the fixed-point logits from an executor proven equal to ``im``
    (the Numba simulator is ~40x faster than the numpy reference model); else ``im`` computes them.
    ``float_logits`` likewise saves recomputing the float model when many quantizations are compared."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) < 2:
        raise ValueError("evaluation needs at least 2 tokens")
    lf = fm.forward(tokens)[0] if float_logits is None else np.asarray(float_logits, dtype=np.float64)
    if int_logits is not None:
        li = np.asarray(int_logits, dtype=np.int64)
        if li.shape != (len(tokens), im.cfg.vocab_size):
            raise ValueError(f"int_logits has shape {li.shape}, expected {(len(tokens), im.cfg.vocab_size)}")
    else:
        st = im.init_state()
        li = np.empty((len(tokens), im.cfg.vocab_size), dtype=np.int64)
        for t, tok in enumerate(tokens):
            li[t], st = im.step(int(tok), st)
            if progress:
                progress(t + 1)
    tgt = tokens[1:]
    lpf = _log_softmax(lf[:-1])
    lpi = _log_softmax(im.logits_to_float(li[:-1]))
    idx = np.arange(len(tgt))
    ln2 = np.log(2.0)
    return EvalResult(
        tokens=int(len(tgt)),
        float_bits_per_token=float(-lpf[idx, tgt].mean() / ln2),
        fixed_bits_per_token=float(-lpi[idx, tgt].mean() / ln2),
        top1_agreement=float(np.mean(lf[:-1].argmax(-1) == li[:-1].argmax(-1))),
        float_top1_accuracy=float(np.mean(lf[:-1].argmax(-1) == tgt)),
        fixed_top1_accuracy=float(np.mean(li[:-1].argmax(-1) == tgt)),
    )


def combine(results: list[EvalResult]) -> EvalResult:
    """Results of several sequences as one, weighted by predictions (bits per byte over all bytes)."""
    n = sum(r.tokens for r in results)
    if n == 0:
        raise ValueError("no predictions to combine")

    def avg(field: str) -> float:
        """A figure averaged over the results, weighted by their tokens."""
        return float(sum(getattr(r, field) * r.tokens for r in results) / n)

    return EvalResult(tokens=n, float_bits_per_token=avg("float_bits_per_token"),
                      fixed_bits_per_token=avg("fixed_bits_per_token"), top1_agreement=avg("top1_agreement"),
                      float_top1_accuracy=avg("float_top1_accuracy"), fixed_top1_accuracy=avg("fixed_top1_accuracy"))
