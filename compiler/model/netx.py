"""Lava-DL NetX networks (HDF5 ``.net`` files) as mflc IR, so that a lava-dl user can see a core count without
Intel's closed compiler.

A NetX file holds ``/layer/<k>`` groups in order, each with a ``type`` (input, dense, conv, pool, flatten,
...), its neuron parameters and, for a dense layer, ``weight`` as [out, in] (one dimension when out is 1),
``inFeatures`` and ``outFeatures``. mflc costs dense layers: each becomes a neuron group (``netx.L<k>``)
fed by one synapse group from the layer before it. The weights are integers stored as floats; their
common power of two moves into the synapse's weight exponent, as NetX's ``optimize_weight_bits`` does, so
the stored width is the one Lava would store. Layers mflc cannot cost yet (conv, pool, ...) are refused by
name, or with ``dense_only`` skipped and listed: a dense layer after a skipped one reads from a stand-in
source group (``netx.L<k>.in``) of its ``inFeatures`` neurons, as the first dense layer reads the input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mflc.ir.errors import ConfigError
from mflc.ir.graph import Graph, Instr, NeuronGroup, SynapseGroup

PASS_THROUGH = ("flatten",)          # reshape only: no neurons, no synapses
STATE_BITS = 24                      # a neuron's current and voltage, as Lava's fixed-point CUBA models keep them


@dataclass
class NetxNetwork:
    """A NetX file read as IR: the graph, one entry per dense layer (name, group, synapse, shape), and the
    layers skipped or passed through (index, type, reason)."""

    path: Path
    graph: Graph
    dense: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


class NetxError(ConfigError):
    """A NetX file mflc cannot read or cost, named with the file and the layer."""


def _open(path: Path):
    try:
        import h5py
    except ImportError:                                         # pragma: no cover - h5py is a dependency
        raise NetxError("reading NetX files needs h5py (pip install h5py)") from None
    if not path.is_file():
        raise NetxError(f"{path}: no such NetX file")
    if not h5py.is_hdf5(str(path)):
        raise NetxError(f"{path}: not an HDF5 file (a lava-dl NetX network is an HDF5 .net file)")
    try:
        f = h5py.File(str(path), "r")
        layers = f["layer"]
        keys = sorted(layers.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    except (OSError, KeyError, ValueError) as e:
        raise NetxError(f"{path}: cannot read its /layer groups ({e}); the file is truncated or not a NetX network") \
            from None
    if not keys or not all(k.isdigit() for k in keys):
        raise NetxError(f"{path}: /layer must hold groups named 0, 1, 2, ...; found {keys[:5]}")
    return f, layers, keys


def _text(v) -> str:
    v = v[()]
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else str(v)


def _scalar(layer, key: str, where: str) -> int:
    if key not in layer:
        raise NetxError(f"{where}: no {key!r}")
    return int(np.asarray(layer[key][()]).reshape(-1)[0])


def integer_weights(w: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """(int8 weights, weight exponent): the file's integer-valued weights with their common power of two
    moved into the exponent; a clear error when they are not integers or need more than 8 bits."""
    if not np.all(np.isfinite(w)) or not np.array_equal(w, np.round(w)):
        raise NetxError(f"{where}: weights are not integers (NetX stores quantized integer weights)")
    wi = w.astype(np.int64)
    nz = wi[wi != 0]
    exp = 0
    if nz.size:
        while exp < 16 and np.all(nz % (1 << (exp + 1)) == 0):
            exp += 1
    wi = wi >> exp
    if wi.size and (wi.min() < -128 or wi.max() > 127):
        raise NetxError(f"{where}: weights in [{int(w.min())}, {int(w.max())}] need more than 8 bits "
                        "(Loihi 2 stores at most 8-bit weights)")
    return wi.astype(np.int8), exp


def _dense_layer(layer, k: int, where: str) -> tuple[np.ndarray, int, int]:
    """(weights [out, in], in, out) of a dense layer, checked against its declared features."""
    if "weight" not in layer:
        raise NetxError(f"{where}: dense layer without 'weight'")
    w = np.asarray(layer["weight"][()], np.float64)
    n_in = _scalar(layer, "inFeatures", where)
    n_out = _scalar(layer, "outFeatures", where)
    if w.ndim == 1 and n_out == 1:
        w = w[None, :]
    if w.shape != (n_out, n_in):
        raise NetxError(f"{where}: weight has shape {tuple(w.shape)}, expected [outFeatures, inFeatures] = "
                        f"[{n_out}, {n_in}]")
    return w, n_in, n_out


def read_netx(path, dense_only: bool = False) -> NetxNetwork:
    """The dense layers of a NetX file as an IR graph (see the module docstring). Raises ``NetxError``
    naming every layer mflc cannot cost unless ``dense_only``."""
    path = Path(path)
    f, layers, keys = _open(path)
    with f:
        types = {k: _text(layers[k]["type"]) if "type" in layers[k] else "?" for k in keys}
        unknown = [f"layer {k} ({t})" for k, t in types.items() if t not in ("dense", "input") + PASS_THROUGH]
        if unknown and not dense_only:
            raise NetxError(f"{path}: mflc costs dense layers only; cannot cost {', '.join(unknown)}. "
                            "Give --dense-only to estimate the dense layers alone (the others are listed, not costed)")
        net = NetxNetwork(path, Graph(meta=dict(source=f"netx {path.name}")))
        prev: str | None = None           # the group the next dense layer reads, when it is one of ours
        for k in keys:
            t = types[k]
            where = f"{path}: layer {k} ({t})"
            if t in PASS_THROUGH:
                net.skipped.append(dict(layer=int(k), type=t, reason="reshape only: no neurons or synapses"))
                continue
            if t != "dense":
                net.skipped.append(dict(layer=int(k), type=t, reason="input layer: its spikes are the next layer's "
                                        "input" if t == "input" else "not costed (--dense-only)"))
                prev = None
                continue
            _add_dense(net, layers[k], int(k), where, prev)
            prev = f"netx.L{k}"
    if not net.dense:
        raise NetxError(f"{path}: no dense layer to cost")
    return net


def _add_dense(net: NetxNetwork, layer, k: int, where: str, prev: str | None) -> None:
    """One dense layer: its neuron group, its synapse group and, when the layer before is not one of ours,
    a stand-in source group of its inputs."""
    w, n_in, n_out = _dense_layer(layer, k, where)
    g = net.graph
    if prev is None or g.groups[prev].size != n_in:
        src = f"netx.L{k}.in"
        g.add_group(NeuronGroup(src, n_in, ["x"], [Instr.make("copy", "y", "x")], "y", 1, stage=2 * k,
                                meta=dict(layer=f"L{k}.in", role="netx_input")))
    else:
        src = prev
    graded = "neuron" in layer and "gradedSpike" in layer["neuron"] and bool(layer["neuron"]["gradedSpike"][()])
    name = f"netx.L{k}"
    g.add_group(NeuronGroup(name, n_out, ["x"], [Instr.make("copy", "y", "x")], "y", STATE_BITS if graded else 1,
                            stage=g.groups[src].stage + 1, registers={"u": STATE_BITS, "v": STATE_BITS},
                            meta=dict(layer=f"L{k}", role="netx_dense")))
    vals, exp = integer_weights(w, where)
    syn = SynapseGroup.from_dense(f"{src}->{name}.x", src, name, "x", vals, weight_exp=exp, delay=0,
                                  meta=dict(kind="dense", netx_layer=k))
    g.add_synapse(syn)
    net.dense.append(dict(layer=k, name=f"layer {k} (dense)", group=name, synapse=syn.name, source=src,
                          shape=[n_in, n_out], weight_exp=exp))
