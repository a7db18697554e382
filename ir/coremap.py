"""Which core (and chip) holds which neurons: the one description of a placement that the cost model,
the simulator and the CLI share. It lives in ir/ because it speaks only of groups and neuron ranges;
``from_layout`` reads any object with the compiler Layout's ``cores`` (duck-typed, so ir/ stays free
of the compiler)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError
from .graph import Graph


@dataclass
class CoreMap:
    """Which core runs which neuron slice of each group, and which chip each core is on: what executors and the cost model need of a layout."""

    slices: dict[str, list[tuple[int, int, int]]]   # group -> [(start, stop, core id)]
    chip_of_core: np.ndarray                         # core id -> chip id
    # core id -> (chip, core index on chip); by default the cores of each chip numbered in core-id order
    labels: list[tuple[int, int]] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.chip_of_core = np.asarray(self.chip_of_core, np.int64)
        if self.labels is None:
            seen: dict[int, int] = {}
            self.labels = []
            for ch in self.chip_of_core.tolist():
                self.labels.append((ch, seen.get(ch, 0)))
                seen[ch] = seen.get(ch, 0) + 1
        if len(self.labels) != self.chip_of_core.size:
            raise ConfigError(f"core map has {len(self.labels)} core label(s) for {self.chip_of_core.size} core(s)")

    @property
    def n_cores(self) -> int:
        """Number of cores the map uses."""
        return int(self.chip_of_core.size)

    def core_of_neurons(self, group: str, size: int) -> np.ndarray:
        """Core id of every neuron of ``group``; a ConfigError if any neuron (or the group) is unplaced."""
        if group not in self.slices:
            raise ConfigError(f"core map does not place group {group}")
        out = np.full(size, -1, dtype=np.int64)
        for a, b, c in self.slices[group]:
            out[a:b] = c
        if np.any(out < 0):
            first = int(np.flatnonzero(out < 0)[0])
            raise ConfigError(f"core map leaves neurons of group {group} unplaced (the first is neuron {first})")
        return out

    @classmethod
    def one_core_per_group(cls, g: Graph) -> "CoreMap":
        """Every group on a core of its own, all on one chip: the unpartitioned view."""
        slices = {n: [(0, grp.size, k)] for k, (n, grp) in enumerate(g.groups.items())}
        return cls(slices, np.zeros(len(slices), np.int64))

    @classmethod
    def from_layout(cls, layout) -> "CoreMap":
        """From a compiler Layout: its cores, in order, each with the neuron slices it holds."""
        slices: dict[str, list[tuple[int, int, int]]] = {}
        chips, labels = [], []
        for cid, core in enumerate(layout.cores):
            chips.append(core.chip)
            labels.append((core.chip, core.core))
            for ns in core.neurons:
                slices.setdefault(ns.group, []).append((ns.start, ns.stop, cid))
        return cls(slices, np.asarray(chips, np.int64), labels)
