"""The calibrated synaptic-memory model: the published SynMem allocations of Intel's Loihi 2 compiler, and the
fit of ``axon_list_units`` (profile ``loihi2-lava``) to them.

The compiler's cost database prints, for a layer that does not fit one core, its whole allocation in SynMem
units (docs/estimates.md quotes the notebooks). Every allocation published is a multiple of the layer's input
count, so the compiler stores one list per input axon; its length grows with the neurons the axon reaches
and their weight width, and zeros cost as much as other weights (PilotNet's 73 %-zero layer costs the same
per axon as a dense one). The model: units per axon = ceil((axon + n * (synapse + weight_bit * w)) / 1000)
with n neurons of w-bit weights on the core, the three coefficients in thousandths of a unit.

``fit`` searches the coefficient grid for the set with the smallest worst relative error over the given
layers (ties: smallest squared error); ``coefficient_range`` gives the extremes of every set within a
tolerance, which the profile uses as each coefficient's low and high value; ``leave_one_out`` fits on all
layers but one and predicts that one, for a fair error on layers the fit never saw.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OXFORD = "lava-dl tutorials/lava/lib/dl/netx/oxford/run.ipynb (printed violations and per-core table)"
PILOTNET = "lava-dl tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb (printed violation and per-core table)"


@dataclass(frozen=True)
class PublishedLayer:
    """One dense layer whose SynMem allocation and core count Intel's compiler printed. ``weight_bits``:
    the width Lava stores its weights at (the narrowest signed width once the weights' common power of two
    is moved into the weight exponent, as NetX does), checked against the file by tests/test_calibration.py."""

    network: str          # file name in ../shared/data/lava-dl/
    layer: int            # index under /layer in the NetX file
    inputs: int
    neurons: int
    weight_bits: int
    units: int            # the compiler's whole-layer SynMem allocation
    cores: int            # cores the compiler used for the layer
    source: str

    @property
    def name(self) -> str:
        """How tables name the layer: network, layer and shape (inputs -> neurons)."""
        return f"{self.network.removesuffix('.net')}[{self.layer}] {self.inputs}->{self.neurons}"


PUBLISHED = (
    PublishedLayer("oxford.net", 1, 256, 200, 7, 16128, 2, OXFORD),
    PublishedLayer("oxford.net", 0, 200, 256, 8, 16200, 3, OXFORD),
    PublishedLayer("pilotnet_snn.net", 7, 2560, 100, 3, 61440, 12, PILOTNET),
    PublishedLayer("pilotnet_snn.net", 8, 100, 50, 4, 1300, 1, PILOTNET),
    PublishedLayer("pilotnet_snn.net", 9, 50, 10, 5, 150, 1, PILOTNET),
    PublishedLayer("pilotnet_snn.net", 10, 10, 1, 6, 10, 1, PILOTNET),
)
SYNMEM_UNITS_PER_CORE = 12000            # self.cost_db.registers['SynMem'] in the same printed violations

# the coefficient grid searched, in thousandths of a unit
AXON_GRID = np.arange(0, 1001, 10)
SYNAPSE_GRID = np.arange(100, 301, 1)
WEIGHT_BIT_GRID = np.arange(0, 61, 1)


def predicted_units(layers, axon, synapse, weight_bit) -> np.ndarray:
    """Whole-layer units of each layer (one list per input axon reaching all its neurons); the coefficients
    may be arrays of equal shape, giving [..., n_layers]."""
    a, s, b = (np.asarray(x, np.int64)[..., None] for x in (axon, synapse, weight_bit))
    n = np.array([x.neurons for x in layers], np.int64)
    w = np.array([x.weight_bits for x in layers], np.int64)
    i = np.array([x.inputs for x in layers], np.int64)
    milli = a + n * (s + b * w)
    return i * (-(-milli // 1000))


def _errors(layers) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Relative error [grid..., n_layers] of every coefficient set of the grid, and the grid's arrays."""
    A, S, B = np.meshgrid(AXON_GRID, SYNAPSE_GRID, WEIGHT_BIT_GRID, indexing="ij")
    units = np.array([x.units for x in layers], np.float64)
    err = (predicted_units(layers, A, S, B) - units) / units
    return err, (A, S, B)


def ratio_cores(layer: PublishedLayer, axon, synapse, weight_bit, per_core: int = SYNMEM_UNITS_PER_CORE) -> np.ndarray:
    """Cores the compiler's split rule gives one layer (the profile's ``partition_rule`` 1, synaptic memory
    only): split into ceil(allocation / limit) equal pieces, and again while the largest piece exceeds it."""
    a, s, b = (np.asarray(x, np.int64) for x in (axon, synapse, weight_bit))
    k = np.ones(np.broadcast(a, s, b).shape, np.int64)
    for _ in range(16):
        n = -(-layer.neurons // k)                                   # the largest piece
        alloc = layer.inputs * (-(-(a + n * (s + b * layer.weight_bits)) // 1000))
        grow = (alloc > per_core) & (n > 1)
        if not grow.any():
            break
        k = np.where(grow, np.minimum(layer.neurons, k * np.maximum(2, -(-alloc // per_core))), k)
    return k


def fit(layers=PUBLISHED, tolerance: float = 0.05) -> dict:
    """The coefficient set of the grid that, among those within ``tolerance`` of every layer's units, gives
    the most layers the compiler's core count under its split rule; then the smallest worst relative error,
    the smallest squared error and the smallest coefficients. Returns it with its errors."""
    err, (A, S, B) = _errors(layers)
    worst = np.abs(err).max(axis=-1)
    ok = worst <= tolerance if (worst <= tolerance).any() else worst <= worst.min()
    a, s, b, wo = A[ok], S[ok], B[ok], worst[ok]
    sq = (err[ok] ** 2).sum(axis=-1)
    miss = sum((ratio_cores(x, a, s, b) != x.cores).astype(np.int64) for x in layers)
    order = np.lexsort((b, s, a, np.round(sq, 12), np.round(wo, 12), miss))
    k = order[0]
    return dict(synmem_axon_milli=int(a[k]), synmem_synapse_milli=int(s[k]), synmem_weight_bit_milli=int(b[k]),
                worst_error=float(wo[k]), core_mismatches=int(miss[k]))


def coefficient_range(layers=PUBLISHED, tolerance: float = 0.05) -> dict:
    """The cheapest and the dearest coefficient sets for 2-bit weights (a ternary synapse costs about
    synapse + 2 * weight_bit) among every set of the grid within ``tolerance`` of all ``layers``: {figure:
    (low, high)}, each end one jointly valid set, and ``units_per_2bit_synapse`` at both ends."""
    err, (A, S, B) = _errors(layers)
    ok = np.abs(err).max(axis=-1) <= tolerance
    if not ok.any():
        raise ValueError(f"no coefficient set is within {tolerance:.0%} of every layer")
    a, s, b = A[ok], S[ok], B[ok]
    two = s + 2 * b
    lo = np.lexsort((a, -s, two))[0]           # cheapest at 2 bits; ties: the fewest per-axon units
    hi = np.lexsort((-a, s, -two))[0]          # dearest at 2 bits; ties: the most per-axon units
    return dict(synmem_axon_milli=(int(a[lo]), int(a[hi])), synmem_synapse_milli=(int(s[lo]), int(s[hi])),
                synmem_weight_bit_milli=(int(b[lo]), int(b[hi])),
                units_per_2bit_synapse=(float(two[lo]) / 1000, float(two[hi]) / 1000))


def leave_one_out(layers=PUBLISHED) -> list[dict]:
    """For each layer: the fit on every other layer, and its relative error on the layer left out."""
    out = []
    for k, held in enumerate(layers):
        rest = [x for j, x in enumerate(layers) if j != k]
        f = fit(rest)
        pred = int(predicted_units([held], f["synmem_axon_milli"], f["synmem_synapse_milli"],
                                   f["synmem_weight_bit_milli"])[0])
        out.append(dict(layer=held.name, units=held.units, predicted=pred, error=(pred - held.units) / held.units,
                        fit=f))
    return out


if __name__ == "__main__":          # python -m mflc.compiler.chip.calibration: the fit, its range, held-out errors
    f = fit()
    print("fit on all six layers:", f)
    print("coefficients within 5 %:", coefficient_range())
    for r in leave_one_out():
        print(f"held out {r['layer']:28s} units {r['units']:6d} predicted {r['predicted']:6d} error {r['error']:+.1%}")
