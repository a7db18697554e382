"""``Constant``: one sourced figure of the cost model or the GPU baseline, in a module both import.

It lives apart from ``costmodel`` so that ``gpu_baseline`` (whose figures are Constants) and ``costmodel``
(which prices the baselines) need not import each other.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Constant:
    """One figure of the model: value in SI units, its source, a confidence and a plausible range."""

    value: float
    unit: str
    source: str
    confidence: str                 # high | medium | low
    low: float | None = None
    high: float | None = None
    note: str = ""

    def with_value(self, value: float, source: str | None = None, confidence: str | None = None) -> "Constant":
        """The same figure overridden (by the user unless ``source`` says otherwise), its range dropped."""
        return replace(self, value=float(value), source=source or f"user override (was: {self.source})",
                       confidence=confidence or "user", low=None if source is None else self.low,
                       high=None if source is None else self.high)

    def as_dict(self) -> dict:
        """The figure as reports print it (JSON-ready)."""
        return dict(value=self.value, unit=self.unit, source=self.source, confidence=self.confidence,
                    low=self.low, high=self.high, note=self.note)
