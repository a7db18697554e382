"""Chip counts as ranges: how many cores and chips a graph needs under each built-in profile, under the low,
assumed and high values of every uncertain hardware figure, and each figure's effect alone (sensitivity).

Nobody outside Intel knows how its compiler packs 2-bit weights, so a single number would hide the question
a buyer asks. Every count here is a real partition of the graph (``split_fan_in`` then ``_partition``, the
compiler's own passes) under a changed profile; chips are ceil(cores / cores_per_chip), as ``place`` lays
them out. A model built from a configuration alone is counted on two and three of its layers and
extrapolated (``LayerExtrapolation``): its layers are identical and are packed layer by layer, so the count
is linear in depth (tests/test_ranges.py checks it against the full count).
"""
from __future__ import annotations

from collections import Counter as _Tally
from dataclasses import asdict, dataclass, replace
from typing import Callable

from mflc.ir.errors import FitError
from mflc.ir.graph import Graph

from .hardware import FIGURE_KEYS, KINDS, PROFILES, HardwareProfile, limits


@dataclass(frozen=True)
class Count:
    """Cores and chips of one layout; ``binding``: the limit most cores are full on; ``error`` when it does
    not fit at all (a single neuron larger than a core under that profile)."""

    cores: int | None
    chips: int | None
    binding: str | None = None
    error: str | None = None

    @property
    def fits(self) -> bool:
        """Whether the graph could be laid out at all under the profile."""
        return self.error is None


def count_graph(graph: Graph, hw: HardwareProfile) -> Count:
    """Partition ``graph`` under ``hw`` and count its cores, chips and binding limit (no placement)."""
    from .partition import _partition, split_fan_in

    try:
        g2 = split_fan_in(graph, hw)
        pieces, violations = _partition(g2, hw)
    except FitError as e:
        return Count(None, None, None, "; ".join(e.violations[:3]))
    if violations:
        return Count(None, None, None, "; ".join(violations[:3]))
    lim = limits(hw)
    tally = _Tally(max(KINDS, key=lambda k: p.usage.get(k, 0) / lim[k]) for p in pieces)
    n = len(pieces)
    return Count(n, -(-n // hw.cores_per_chip), tally.most_common(1)[0][0] if tally else None)


class LayerExtrapolation:
    """Counts of a model given by its configuration: exact counts of its skeleton at two and three layers,
    extrapolated linearly to its depth (the full skeleton when it has three layers or fewer)."""

    def __init__(self, build: Callable[[int], Graph], layers: int):
        self.build, self.layers = build, layers
        self._graphs: dict[int, Graph] = {}

    def _graph(self, n: int) -> Graph:
        if n not in self._graphs:
            self._graphs[n] = self.build(n)
        return self._graphs[n]

    def __call__(self, hw: HardwareProfile) -> Count:
        if self.layers <= 3:
            return count_graph(self._graph(self.layers), hw)
        a, b = count_graph(self._graph(2), hw), count_graph(self._graph(3), hw)
        if not (a.fits and b.fits):
            return a if not a.fits else b
        cores = a.cores + (self.layers - 2) * (b.cores - a.cores)
        return Count(cores, -(-cores // hw.cores_per_chip), b.binding)


def _with(hw: HardwareProfile, values: dict, note: str) -> HardwareProfile:
    """``hw`` with some figures changed, their sources saying why."""
    return replace(hw, **values, sources={**hw.sources, **{k: (note, "range") for k in values}})


def _profile_like(name: str, hw: HardwareProfile) -> HardwareProfile:
    """The built-in profile ``name`` with the figures the user overrode in ``hw`` (its sources say which)."""
    base = PROFILES[name]
    user = {k: getattr(hw, k) for k, (_, conf) in hw.sources.items() if conf == "user"}
    return replace(base, **user, sources={**base.sources, **{k: hw.sources[k] for k in user}})


def figure_range(counter: Callable[[HardwareProfile], Count], hw: HardwareProfile,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Cores and chips under ``hw`` (assumed), under every built-in profile, each uncertain figure at its low
    and high value alone (``sensitivity``, largest effect first), and all of them at once at their favourable
    and unfavourable ends (``cores_low`` / ``cores_high``: the extremes over every count made, so the range
    always holds the assumed value). ``counter`` maps a profile to a ``Count``."""
    tick = progress or (lambda what: None)
    assumed = counter(hw)
    tick("assumed")
    profiles = {}
    for name in PROFILES:
        other = _profile_like(name, hw)
        c = assumed if all(getattr(other, k) == getattr(hw, k) for k in FIGURE_KEYS) else counter(other)
        profiles[name] = _row(c)
        tick(f"profile {name}")
    sens, good, bad = [], {}, {}
    for label, figs in hw.uncertain():
        fs = [hw.figure(k) for k in figs]
        at = {}
        for end in ("low", "high"):
            vals = {f["name"]: int(f[end]) for f in fs}
            same = all(v == getattr(hw, k) for k, v in vals.items())
            at[end] = assumed if same else counter(_with(hw, vals, f"{end} end of its range"))
            tick(f"{label} {end}")
        one = len(fs) == 1
        sens.append(dict(figure=label, figures=figs,
                         value=fs[0]["value"] if one else {f["name"]: f["value"] for f in fs},
                         low=fs[0]["low"] if one else {f["name"]: f["low"] for f in fs},
                         high=fs[0]["high"] if one else {f["name"]: f["high"] for f in fs},
                         range_note=fs[0]["range_note"],
                         chips_at_low=at["low"].chips, chips_at_high=at["high"].chips,
                         cores_at_low=at["low"].cores, cores_at_high=at["high"].cores,
                         binding_at_low=at["low"].binding, binding_at_high=at["high"].binding,
                         error_at_low=at["low"].error, error_at_high=at["high"].error))
        lo_key, hi_key = _badness(at["low"]), _badness(at["high"])
        if lo_key == hi_key:
            continue                                    # no effect: the corners keep the assumed value
        fav, unfav = ("low", "high") if lo_key < hi_key else ("high", "low")
        good.update({f["name"]: int(f[fav]) for f in fs})
        bad.update({f["name"]: int(f[unfav]) for f in fs})
    sens.sort(key=lambda r: (-_effect(r, "chips"), -_effect(r, "cores"), r["figure"]))
    best = counter(replace(hw, **good)) if good else assumed
    tick("all favourable")
    worst = counter(replace(hw, **bad)) if bad else assumed
    tick("all unfavourable")
    made = [assumed, best, worst] + [_count_of(r, e) for r in sens for e in ("low", "high")]
    fitting = [c for c in made if c.fits]
    out = dict(cores=assumed.cores, chips=assumed.chips, binding=assumed.binding, error=assumed.error,
               cores_low=min((c.cores for c in fitting), default=None),
               cores_high=max((c.cores for c in fitting), default=None),
               chips_low=min((c.chips for c in fitting), default=None),
               chips_high=max((c.chips for c in fitting), default=None),
               all_favourable=dict(_row(best), figures=good), all_unfavourable=dict(_row(worst), figures=bad),
               profiles=profiles, sensitivity=sens, profile=hw.name)
    if not worst.fits:
        out["chips_high_note"] = f"with every figure at its unfavourable end the model does not fit: {worst.error}"
    return out


def _count_of(row: dict, end: str) -> Count:
    return Count(row[f"cores_at_{end}"], row[f"chips_at_{end}"], row[f"binding_at_{end}"], row[f"error_at_{end}"])


def _badness(c: Count) -> tuple:
    """Order of counts from best to worst: fewer chips, then fewer cores; not fitting is worst."""
    return (0, c.chips, c.cores) if c.fits else (1, 0, 0)


def _effect(row: dict, what: str) -> int:
    a, b = row[f"{what}_at_low"], row[f"{what}_at_high"]
    if a is None or b is None:
        return 1 << 40                                   # "does not fit" at one end: the largest effect
    return abs(a - b)


def _row(c: Count) -> dict:
    d = asdict(c)
    return {k: v for k, v in d.items() if v is not None or k in ("cores", "chips")}
