"""On-disk IR: ``graph.json`` (structure, versioned) + ``graph.safetensors`` (every integer array)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from . import ternary
from .errors import MflcError
from .graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, SynapseGroup
from .schema import STRICT, MapOf, OneOf, Opt, Tup, check, read_json
from .tensorfile import load_tensors

FORMAT = "mflc-ir"
VERSION = 2          # 2: ternary synapse blocks at 2 bits per weight ("encoding"); 1: CSR only


def _narrowest(v: np.ndarray):
    """int8/16/32/64, whichever first holds every value (an 8-bit embedding is a byte per entry on disk)."""
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    return next(t for t in (np.int8, np.int16, np.int32, np.int64)
                if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)


def synapse_encoding(s: SynapseGroup) -> str:
    """How a synapse group is stored: "ternary2" (2 bits per weight of the whole block, ir/ternary.py) for
    ±1 weights wherever that is smaller than CSR, else "csr" (int64 row pointer, int32 index, int8 value)."""
    rows, cols = s.shape
    if s.values is not None and ternary.is_ternary(s.values) and \
            ternary.packed_bytes(rows, cols) < ternary.csr_bytes(rows, s.nnz):
        return "ternary2"
    return "csr"


def save_graph(g: Graph, path: str | Path) -> None:
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    groups = []
    for grp in g.groups.values():
        for k, v in grp.params.items():
            arrays[f"group/{grp.name}/param/{k}"] = np.ascontiguousarray(v, dtype=np.int64)
        for k, v in grp.tables.items():
            arrays[f"group/{grp.name}/table/{k}"] = np.ascontiguousarray(v, dtype=np.int64)
        groups.append(dict(name=grp.name, size=grp.size, ports=grp.ports, output=grp.output,
                           out_bits=grp.out_bits, stage=grp.stage, registers=grp.registers, send=grp.send,
                           meta=grp.meta, params=sorted(grp.params), tables=sorted(grp.tables),
                           program=[[i.op, i.out, list(i.args), dict(i.imm)] for i in grp.program]))
    syns = []
    for s in g.synapses.values():
        enc = synapse_encoding(s)
        if enc == "ternary2":
            arrays[f"syn/{s.name}/ternary2"] = ternary.pack_csr(s.shape, s.indptr, s.indices, s.values)
        else:
            arrays[f"syn/{s.name}/indptr"] = np.ascontiguousarray(s.indptr, dtype=np.int64)
            arrays[f"syn/{s.name}/indices"] = np.ascontiguousarray(s.indices, dtype=np.int32)
            arrays[f"syn/{s.name}/values"] = np.ascontiguousarray(s.values, dtype=np.int8)
        syns.append(dict(name=s.name, src=s.src, dst=s.dst, port=s.port, shape=list(s.shape), encoding=enc,
                         weight_exp=s.weight_exp, delay=s.delay, acc_bits=s.acc_bits, meta=s.meta))
    for k, v in g.host_tensors.items():             # the narrowest integer type that holds the table
        arrays[f"host/{k}"] = np.ascontiguousarray(v, dtype=_narrowest(v))
    head = dict(format=FORMAT, version=VERSION, groups=groups, synapses=syns,
                inputs=[vars(i) for i in g.inputs], outputs=[vars(o) for o in g.outputs],
                host_tensors=sorted(g.host_tensors), state={k: list(v) for k, v in g.state.items()}, meta=g.meta)
    (d / "graph.json").write_text(json.dumps(head, indent=1) + "\n")
    save_file(arrays, str(d / "graph.safetensors"))


_IMM = OneOf(int, str)
GROUP_SCHEMA = {
    "name": str, "size": int, "ports": [str], "output": str, "out_bits": int, "stage": int,
    "registers": MapOf(int), "send": str, "meta": Opt(dict), "params": [str], "tables": [str],
    "program": [Tup(str, str, [str], MapOf(_IMM), label="[op, out, args, imm]")],
}
SYNAPSE_SCHEMA = {
    "name": str, "src": str, "dst": str, "port": str, "shape": Tup(int, int, label="[dst size, src size]"),
    "encoding": str, "weight_exp": int, "delay": int, "acc_bits": int, "meta": Opt(dict),
}
GRAPH_SCHEMA = {
    "format": str, "version": int, "groups": [GROUP_SCHEMA], "synapses": [SYNAPSE_SCHEMA],
    "inputs": [{"name": str, "group": str, "port": str, "table": str, STRICT: True}],
    "outputs": [{"name": str, "group": str, STRICT: True}],
    "host_tensors": [str], "state": MapOf(Tup(str, str, label="[group, register]")), "meta": Opt(dict),
}


def load_graph(path: str | Path) -> Graph:
    """The graph of an IR directory; a damaged graph.json or graph.safetensors raises an MflcError naming
    the file and the field, array, dtype or shape at fault."""
    d = Path(path)
    jf, af = d / "graph.json", d / "graph.safetensors"
    for f in (jf, af):
        if not f.is_file():
            raise MflcError(f"{f}: IR file not found (expected graph.json + graph.safetensors from `mflc compile`)")
    head = read_json(jf, MflcError, object_required=True)
    if head.get("format") != FORMAT:
        raise MflcError(f"{jf}: field 'format' is {head.get('format')!r}, expected {FORMAT!r}")
    if head.get("version") != VERSION:
        old = " (written by an older mflc, with CSR weights); recompile it with `mflc compile`" \
            if head.get("version") == 1 else ""
        raise MflcError(f"{jf}: IR version {head.get('version')!r} not supported (this mflc reads {VERSION}){old}")
    check(head, GRAPH_SCHEMA, str(jf))
    try:
        arrays = load_tensors(af)
    except Exception as e:
        raise MflcError(f"{af}: cannot read arrays ({e})") from None

    def arr(key, dtype, shape=None, ndim=None, where=""):
        """Array ``key`` of the given dtype (None: any integer dtype) and shape (None entries: any)."""
        if key not in arrays:
            raise MflcError(f"{af}: array {key!r} is missing{f' (named by {jf.name}: {where})' if where else ''}")
        a = arrays[key]
        if (a.dtype != np.dtype(dtype)) if dtype is not None else not np.issubdtype(a.dtype, np.integer):
            raise MflcError(f"{af}: array {key!r}: dtype {a.dtype}, expected {np.dtype(dtype) if dtype else 'an integer dtype'}")
        if ndim is not None and a.ndim != ndim or shape is not None and (
                a.ndim != len(shape) or any(w is not None and w != n for w, n in zip(shape, a.shape))):
            want = "[" + ", ".join("*" if w is None else str(w) for w in (shape or [None] * ndim)) + "]"
            raise MflcError(f"{af}: array {key!r}: shape {list(a.shape)}, expected {want}")
        return a

    for what, items, key in (("groups", head["groups"], "role"), ("synapses", head["synapses"], "kind")):
        for i, d in enumerate(items):         # meta is free-form, but reports and the cost model read these
            if isinstance(d.get("meta"), dict) and not isinstance(d["meta"].get(key, ""), str):
                raise MflcError(f"{jf}: {what}[{i}].meta.{key}: {d['meta'][key]!r}, expected a string")
    g = Graph(meta=head.get("meta", {}))
    for gi, gd in enumerate(head["groups"]):
        w, n = f"groups[{gi}]", gd["name"]
        if n in g.groups:
            raise MflcError(f"{jf}: {w}.name: duplicate neuron group {n!r}")
        if gd["size"] < 0:
            raise MflcError(f"{jf}: {w}.size: {gd['size']} is negative")
        g.add_group(NeuronGroup(
            name=n, size=gd["size"], ports=list(gd["ports"]),
            program=[Instr(op, out, tuple(args), tuple(sorted(imm.items()))) for op, out, args, imm in gd["program"]],
            output=gd["output"], out_bits=gd["out_bits"], stage=gd["stage"], registers=dict(gd["registers"]),
            params={k: arr(f"group/{n}/param/{k}", np.int64, (gd["size"],), where=f"{w}.params") for k in gd["params"]},
            tables={k: arr(f"group/{n}/table/{k}", np.int64, ndim=1, where=f"{w}.tables") for k in gd["tables"]},
            send=gd["send"], meta=gd.get("meta", {})))
    for si, sd in enumerate(head["synapses"]):
        w, n = f"synapses[{si}]", sd["name"]
        if n in g.synapses:
            raise MflcError(f"{jf}: {w}.name: duplicate synapse group {n!r}")
        rows, cols = sd["shape"]
        if rows < 0 or cols < 0:
            raise MflcError(f"{jf}: {w}.shape: {sd['shape']} has a negative size")
        if sd["encoding"] == "ternary2":
            key = f"syn/{n}/ternary2"
            indptr, indices, values = ternary.unpack_to_csr(
                arr(key, np.uint8, (ternary.packed_bytes(rows, cols),), where=w), (rows, cols), f"{af}: array {key!r}")
        elif sd["encoding"] == "csr":
            indptr = arr(f"syn/{n}/indptr", np.int64, (rows + 1,), where=w)
            if indptr[0] != 0 or (indptr.size > 1 and bool((np.diff(indptr) < 0).any())):
                raise MflcError(f"{af}: array 'syn/{n}/indptr': not a CSR row pointer (must start at 0 and never decrease)")
            nnz = int(indptr[-1])
            indices = arr(f"syn/{n}/indices", np.int32, (nnz,), where=w)
            values = arr(f"syn/{n}/values", np.int8, (nnz,), where=w)
        else:
            raise MflcError(f"{jf}: {w}.encoding: {sd['encoding']!r}, expected 'csr' or 'ternary2'")
        g.add_synapse(SynapseGroup(n, sd["src"], sd["dst"], sd["port"], (rows, cols), indptr, indices, values,
                                   sd["weight_exp"], sd["delay"], sd["acc_bits"], sd.get("meta", {})))
    g.inputs = [GraphInput(**i) for i in head["inputs"]]
    g.outputs = [GraphOutput(**o) for o in head["outputs"]]
    g.host_tensors = {k: arr(f"host/{k}", None, ndim=2, where="host_tensors").astype(np.int64, copy=False)
                      for k in head["host_tensors"]}
    for ii, i in enumerate(g.inputs):
        if i.table not in g.host_tensors:
            raise MflcError(f"{jf}: inputs[{ii}].table: {i.table!r} is not one of host_tensors {sorted(g.host_tensors)}")
    g.state = {k: tuple(v) for k, v in head["state"].items()}
    return g


def graphs_equal(a: Graph, b: Graph) -> bool:
    """Structural and bit-exact equality of two graphs (used by round-trip tests)."""
    if set(a.groups) != set(b.groups) or set(a.synapses) != set(b.synapses):
        return False
    for n, x in a.groups.items():
        y = b.groups[n]
        if (x.size, x.ports, x.program, x.output, x.out_bits, x.stage, x.registers, x.send, x.meta) != \
           (y.size, y.ports, y.program, y.output, y.out_bits, y.stage, y.registers, y.send, y.meta):
            return False
        for dx, dy in ((x.params, y.params), (x.tables, y.tables)):
            if set(dx) != set(dy) or any(not np.array_equal(dx[k], dy[k]) for k in dx):
                return False
    for n, s in a.synapses.items():
        t = b.synapses[n]
        if (s.src, s.dst, s.port, tuple(s.shape), s.weight_exp, s.delay, s.acc_bits, s.meta) != \
           (t.src, t.dst, t.port, tuple(t.shape), t.weight_exp, t.delay, t.acc_bits, t.meta):
            return False
        if not (np.array_equal(s.indptr, t.indptr) and np.array_equal(s.indices, t.indices)
                and np.array_equal(s.values, t.values)):
            return False
    if [vars(i) for i in a.inputs] != [vars(i) for i in b.inputs] or [vars(o) for o in a.outputs] != [vars(o) for o in b.outputs]:
        return False
    if set(a.host_tensors) != set(b.host_tensors) or any(not np.array_equal(a.host_tensors[k], b.host_tensors[k]) for k in a.host_tensors):
        return False
    return a.state == b.state and a.meta == b.meta
