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


@dataclass
class SiteMoments:
    """The sums over a site's values on some text from which its SiteStats follow: two texts' moments
    add, so the statistics of many texts can be gathered text by text (on any worker) and combined."""

    values: int = 0
    sum_sq: float = 0.0
    sum_4th: float = 0.0
    amax: float = 0.0
    noise: float = 0.0          # sum of (x - q(x))^2
    clipped: int = 0

    def __add__(self, o: "SiteMoments") -> "SiteMoments":
        return SiteMoments(self.values + o.values, self.sum_sq + o.sum_sq, self.sum_4th + o.sum_4th,
                           max(self.amax, o.amax), self.noise + o.noise, self.clipped + o.clipped)


def site_moments(fm: FloatModel, qm: QuantizedModel, tokens: Iterable[int]) -> dict[str, SiteMoments]:
    """SiteMoments of every site of ``qm`` on the float model's activations over one token sequence."""
    _, values = calibrate(fm, [list(tokens)], keep_values=True, sample=None)
    out = {}
    for name, site in qm.sites.items():
        v = values.get(name)
        if v is None or not v.size:
            continue
        v = np.asarray(v, np.float64)
        scale, bits = float(site["scale"]), int(site["bits"])
        lim = ((1 << (bits - 1)) - 1) * scale
        sq = v * v
        out[name] = SiteMoments(values=int(v.size), sum_sq=float(sq.sum()), sum_4th=float((sq * sq).sum()),
                                amax=float(np.max(np.abs(v))),
                                noise=float(np.sum((v - quantize_on_grid(v, scale, bits)) ** 2)),
                                clipped=int(np.count_nonzero(np.abs(v) > lim + 0.5 * scale)))
    return out


def combine_moments(parts: Iterable[dict[str, SiteMoments]]) -> dict[str, SiteMoments]:
    """The moments of several texts together (added in the order given, so a run is reproducible)."""
    total: dict[str, SiteMoments] = {}
    for part in parts:
        for name, m in part.items():
            total[name] = total[name] + m if name in total else m
    return total


def stats_from_moments(qm: QuantizedModel, moments: dict[str, SiteMoments]) -> list[SiteStats]:
    """SiteStats of every site with values, in the quantized model's site order."""
    rows = []
    for name, site in qm.sites.items():
        m = moments.get(name)
        if m is None or not m.values:
            continue
        ms = m.sum_sq / m.values
        rms = float(np.sqrt(ms))
        noise = m.noise / m.values
        rows.append(SiteStats(
            site=name, kind=site_kind(name), bits=int(site["bits"]), scale=float(site["scale"]), values=m.values,
            rms=rms, crest=m.amax / rms if rms > 0 else 0.0,
            kurtosis=float(m.sum_4th / m.values / ms ** 2 - 3.0) if ms > 0 else 0.0,
            clipped=m.clipped / m.values,
            sqnr_db=float(10 * np.log10(ms / noise)) if noise > 0 else float("inf")))
    return rows


def site_statistics(fm: FloatModel, qm: QuantizedModel, token_seqs: Iterable[Iterable[int]]) -> list[SiteStats]:
    """SiteStats of every site of ``qm`` on the float model's activations over ``token_seqs``."""
    return stats_from_moments(qm, combine_moments(site_moments(fm, qm, t) for t in token_seqs))


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
