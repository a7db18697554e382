"""Which core (and chip) holds which neurons: the engine's view of a placement."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mflc.ir.graph import Graph


@dataclass
class CoreMap:
    slices: dict[str, list[tuple[int, int, int]]]   # group -> [(start, stop, core id)]
    chip_of_core: np.ndarray                         # core id -> chip id
    labels: list[tuple[int, int]]                    # core id -> (chip, core index on chip)

    @property
    def n_cores(self) -> int:
        return int(self.chip_of_core.size)

    def core_of_neurons(self, group: str, size: int) -> np.ndarray:
        out = np.full(size, -1, dtype=np.int64)
        for a, b, c in self.slices[group]:
            out[a:b] = c
        if np.any(out < 0):
            raise ValueError(f"core map leaves neurons of group {group} unplaced")
        return out

    @classmethod
    def one_core_per_group(cls, g: Graph) -> "CoreMap":
        """Every group on a core of its own, all on one chip: the unpartitioned view."""
        slices = {n: [(0, grp.size, k)] for k, (n, grp) in enumerate(g.groups.items())}
        n = len(slices)
        return cls(slices, np.zeros(n, np.int64), [(0, k) for k in range(n)])

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
