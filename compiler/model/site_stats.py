"""Per-site statistics of the float activations against each site's fixed-point grid.

``mflc ablate`` says which site costs accuracy by re-running the whole model; this says why, cheaply: for
every quantization site it measures how heavy-tailed the float values are (crest factor, kurtosis) and
the signal-to-quantization-noise ratio of rounding them, in isolation, to that site's integer grid
(round to nearest, saturate to its bits). A site with a crest factor far above a Gaussian's (~4 on a few
thousand values) spends most of a max-calibrated range on rare outliers, and its SQNR falls accordingly.
The figures are diagnostics of the float model; the integer model's own error also accumulates upstream.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from .float_model import FloatModel
from .quantize import QuantizedModel, calibrate, site_kind


@dataclass
class SiteStats:
    """One activation site's width, scale and measured spread (rms, crest factor) on a text."""

    site: str
    kind: str
    bits: int
    scale: float
    values: int
    rms: float
    crest: float             # max |x| / rms over the evaluated text
    kurtosis: float          # excess kurtosis (0 for a Gaussian)
    clipped: float           # share of values beyond the site's range
    sqnr_db: float           # 10 log10(mean x^2 / mean (x - q(x))^2)

    def to_dict(self) -> dict:
        """The statistics as JSON reports print them."""
        return asdict(self)


def quantize_on_grid(v: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """Round to nearest on the grid q·scale, saturated to a signed ``bits`` range (values, not integers)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.round(v / scale), lo, hi) * scale


def site_statistics(fm: FloatModel, qm: QuantizedModel, token_seqs: Iterable[Iterable[int]]) -> list[SiteStats]:
    """SiteStats of every site of ``qm`` on the float model's activations over ``token_seqs``."""
    _, values = calibrate(fm, token_seqs, keep_values=True, sample=None)
    rows = []
    for name, site in qm.sites.items():
        v = values.get(name)
        if v is None or not v.size:
            continue
        v = np.asarray(v, np.float64)
        ms = float(np.mean(v * v))
        rms = float(np.sqrt(ms))
        amax = float(np.max(np.abs(v)))
        q = quantize_on_grid(v, float(site["scale"]), int(site["bits"]))
        noise = float(np.mean((v - q) ** 2))
        lim = ((1 << (int(site["bits"]) - 1)) - 1) * float(site["scale"])
        rows.append(SiteStats(
            site=name, kind=site_kind(name), bits=int(site["bits"]), scale=float(site["scale"]), values=int(v.size),
            rms=rms, crest=amax / rms if rms > 0 else 0.0,
            kurtosis=float(np.mean(v ** 4) / ms ** 2 - 3.0) if ms > 0 else 0.0,
            clipped=float(np.mean(np.abs(v) > lim + 0.5 * float(site["scale"]))),
            sqnr_db=float(10 * np.log10(ms / noise)) if noise > 0 else float("inf")))
    return rows


def by_kind(rows: list[SiteStats]) -> list[dict]:
    """One row per site kind over all layers: its bits, mean crest and kurtosis, and worst (lowest) SQNR."""
    kinds: dict[str, list[SiteStats]] = {}
    for r in rows:
        kinds.setdefault(r.kind, []).append(r)
    out = []
    for k, rs in kinds.items():
        out.append(dict(kind=k, sites=len(rs), bits=sorted({r.bits for r in rs}),
                        crest=float(np.mean([r.crest for r in rs])), kurtosis=float(np.mean([r.kurtosis for r in rs])),
                        clipped=float(max(r.clipped for r in rs)), sqnr_db=float(min(r.sqnr_db for r in rs))))
    return out
