"""On-disk IR: ``graph.json`` (structure, versioned) + ``graph.safetensors`` (every integer array)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from . import ternary
from .errors import MflcError
from .graph import Graph, GraphInput, GraphOutput, Instr, NeuronGroup, PackedSynapseGroup, SynapseGroup
from .schema import STRICT, MapOf, OneOf, Opt, Tup, check, check_format, read_json
from .tensorfile import load_tensors, narrowest_int

FORMAT = "mflc-ir"
VERSION = 2          # 2: ternary synapse blocks at 2 bits per weight ("encoding"); 1: CSR only


def synapse_encoding(s: SynapseGroup) -> str:
    """How a synapse group is stored: "ternary2" (2 bits per weight of the whole block, ir/ternary.py) for
    ±1 weights wherever that is smaller than CSR, else "csr" (int64 row pointer, int32 index, int8 value)."""
    rows, cols = s.shape
    if isinstance(s, PackedSynapseGroup) and not s.decoded:      # the same rule, nnz from the codes
        return "ternary2" if ternary.packed_bytes(rows, cols) < ternary.csr_bytes(rows, s.nnz) else "csr"
    if s.values is not None and ternary.is_ternary(s.values) and \
            ternary.packed_bytes(rows, cols) < ternary.csr_bytes(rows, s.nnz):
        return "ternary2"
    return "csr"


def _same_arrays(s: SynapseGroup, t: SynapseGroup | None) -> bool:
    if all(isinstance(x, PackedSynapseGroup) and not x.decoded for x in (s, t)):
        return PackedSynapseGroup.same_codes(s, t)      # decided by the codes either way, no CSR copy
    return t is not None and tuple(s.shape) == tuple(t.shape) and s.values is not None and t.values is not None \
        and np.array_equal(s.indptr, t.indptr) and np.array_equal(s.indices, t.indices) \
        and np.array_equal(s.values, t.values)


def _narrow(v: np.ndarray) -> np.ndarray:
    """A per-neuron parameter or table as stored: the narrowest signed integer type that holds it."""
    v = np.asarray(v)
    return np.ascontiguousarray(v, dtype=narrowest_int(v))


def _wide(a: np.ndarray, where: str) -> np.ndarray:
    """A stored parameter or table as the programs read it (int64); any integer type is accepted whose values
    int64 holds (a uint64 beyond it is refused, not wrapped)."""
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise MflcError(f"{where}: dtype uint64 holds {int(a.max())}, beyond the int64 the programs compute in")
    return a.astype(np.int64)


def _shared(a: np.ndarray) -> np.ndarray:
    """A read-only view of an array two graphs share: editing one graph's copy must not edit the other's
    unseen (the partition check compares them), so an edit raises; copy first to change it."""
    v = a.view()
    v.flags.writeable = False
    return v


def group_entry(grp: NeuronGroup, arrays: dict) -> dict:
    """A group's graph.json entry; its parameters and tables go into ``arrays`` (key -> int64 array)."""
    for k, v in grp.params.items():
        arrays[f"group/{grp.name}/param/{k}"] = _narrow(v)
    for k, v in grp.tables.items():
        arrays[f"group/{grp.name}/table/{k}"] = _narrow(v)
    return dict(name=grp.name, size=grp.size, ports=grp.ports, output=grp.output,
                out_bits=grp.out_bits, stage=grp.stage, registers=grp.registers, send=grp.send,
                meta=grp.meta, params=sorted(grp.params), tables=sorted(grp.tables),
                program=[[i.op, i.out, list(i.args), dict(i.imm)] for i in grp.program])


def synapse_arrays(s: SynapseGroup, enc: str) -> dict[str, np.ndarray]:
    """The arrays a synapse group is stored as in encoding ``enc`` ("base": none)."""
    if enc == "base":
        return {}
    if enc == "ternary2":
        return {f"syn/{s.name}/ternary2": ternary.pack_csr(s.shape, s.indptr, s.indices, s.values)}
    return {f"syn/{s.name}/indptr": np.ascontiguousarray(s.indptr, dtype=np.int64),
            f"syn/{s.name}/indices": np.ascontiguousarray(s.indices, dtype=np.int32),
            f"syn/{s.name}/values": np.ascontiguousarray(s.values, dtype=np.int8)}


def synapse_entry(s: SynapseGroup, enc: str) -> dict:
    """A synapse group's graph.json entry (its arrays are ``synapse_arrays``)."""
    return dict(name=s.name, src=s.src, dst=s.dst, port=s.port, shape=list(s.shape), encoding=enc,
                weight_exp=s.weight_exp, delay=s.delay, acc_bits=s.acc_bits, meta=s.meta)


def graph_head(g: Graph, groups: list[dict], syns: list[dict], host_in_base: list[str]) -> dict:
    """graph.json's content, from the group and synapse entries."""
    return dict(format=FORMAT, version=VERSION, groups=groups, synapses=syns,
                inputs=[vars(i) for i in g.inputs], outputs=[vars(o) for o in g.outputs],
                host_tensors=sorted(g.host_tensors), host_tensors_in_base=host_in_base,
                state={k: list(v) for k, v in g.state.items()}, meta=g.meta)


def host_array(v: np.ndarray) -> np.ndarray:
    """A host table as stored: the narrowest integer type that holds it."""
    return np.ascontiguousarray(v, dtype=narrowest_int(v))


def write_head(head: dict, d: Path) -> None:
    """Write graph.json."""
    (d / "graph.json").write_text(json.dumps(head, indent=1) + "\n")


def save_graph(g: Graph, path: str | Path, base: Graph | None = None) -> None:
    """Write ``g``; with ``base`` (the graph stored beside it, e.g. a build's unsplit IR), every synapse
    group and host table whose integers equal the base's is written as a reference to it ("base"),
    so a placed IR holds only what splitting changed."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    groups = [group_entry(grp, arrays) for grp in g.groups.values()]
    syns = []
    for s in g.synapses.values():
        enc = "base" if base is not None and _same_arrays(s, base.synapses.get(s.name)) else synapse_encoding(s)
        arrays.update(synapse_arrays(s, enc))
        syns.append(synapse_entry(s, enc))
    host_in_base = sorted(k for k, v in g.host_tensors.items()
                          if base is not None and k in base.host_tensors and np.array_equal(v, base.host_tensors[k]))
    for k, v in g.host_tensors.items():
        if k not in host_in_base:
            arrays[f"host/{k}"] = host_array(v)
    write_head(graph_head(g, groups, syns, host_in_base), d)
    save_file(arrays, str(d / "graph.safetensors"))


class StreamingGraphWriter:
    """``save_graph`` for a graph whose synapse weights are never all in memory: each synapse group's
    arrays are written (``add_synapse``) while its weights exist, then ``close`` writes the groups, the
    host tables and graph.json from the graph's structure. The files are byte for byte ``save_graph``'s."""

    def __init__(self, path: str | Path):
        from .streamfile import SafetensorsWriter

        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.arrays = SafetensorsWriter(self.dir / "graph.safetensors")
        self.encodings: dict[str, str] = {}

    def add_synapse(self, s: SynapseGroup, enc: str | None = None, arrays: dict | None = None) -> str:
        """Write one synapse group's arrays now (its encoding: ``synapse_encoding``, or ``enc``). ``arrays``:
        the caller's own ``synapse_arrays(s, enc)`` (e.g. the 2-bit block packed from the dense matrix)."""
        enc = synapse_encoding(s) if enc is None else enc
        for k, v in (synapse_arrays(s, enc) if arrays is None else arrays).items():
            self.arrays.add(k, v)
        self.encodings[s.name] = enc
        return enc

    def close(self, g: Graph, host_in_base: list[str] = ()) -> None:
        """Finish with ``g``'s structure: every synapse group of ``g`` must have been added."""
        missing = [n for n in g.synapses if n not in self.encodings]
        if missing:
            raise MflcError(f"{self.dir}: synapse group {missing[0]} was never written")
        arrays: dict[str, np.ndarray] = {}
        groups = [group_entry(grp, arrays) for grp in g.groups.values()]
        for k, v in g.host_tensors.items():
            if k not in host_in_base:
                arrays[f"host/{k}"] = host_array(v)
        for k, v in arrays.items():
            self.arrays.add(k, v)
        syns = [synapse_entry(s, self.encodings[s.name]) for s in g.synapses.values()]
        write_head(graph_head(g, groups, syns, sorted(host_in_base)), self.dir)
        self.arrays.close()

    def abort(self) -> None:
        """Remove what was written (a failed compile)."""
        self.arrays.abort()


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
    "host_tensors": [str], "host_tensors_in_base": [str], "state": MapOf(Tup(str, str, label="[group, register]")), "meta": Opt(dict),
}


class _Arrays:
    """The arrays of one graph.safetensors, each handed out only with the dtype and shape it must have."""

    def __init__(self, af: Path, jf: Path):
        self.af, self.jf = af, jf
        try:
            self.arrays = load_tensors(af)
        except Exception as e:
            raise MflcError(f"{af}: cannot read arrays ({e})") from None

    def get(self, key, dtype, shape=None, ndim=None, where=""):
        """Array ``key`` of the given dtype (None: any integer dtype) and shape (None entries: any)."""
        af = self.af
        if key not in self.arrays:
            raise MflcError(f"{af}: array {key!r} is missing{f' (named by {self.jf.name}: {where})' if where else ''}")
        a = self.arrays[key]
        if (a.dtype != np.dtype(dtype)) if dtype is not None else not np.issubdtype(a.dtype, np.integer):
            raise MflcError(f"{af}: array {key!r}: dtype {a.dtype}, expected {np.dtype(dtype) if dtype else 'an integer dtype'}")
        if ndim is not None and a.ndim != ndim or shape is not None and (
                a.ndim != len(shape) or any(w is not None and w != n for w, n in zip(shape, a.shape))):
            want = "[" + ", ".join("*" if w is None else str(w) for w in (shape or [None] * ndim)) + "]"
            raise MflcError(f"{af}: array {key!r}: shape {list(a.shape)}, expected {want}")
        return a


def _read_head(jf: Path) -> dict:
    """graph.json, its format and version checked (a version-1 IR asks for a recompile), schema-checked."""
    head = read_json(jf, MflcError, object_required=True)
    check_format(head, FORMAT, VERSION, jf, MflcError, "IR version",
                 {1: "written by an older mflc, with CSR weights; recompile it with `mflc compile`"})
    check(head, GRAPH_SCHEMA, str(jf))
    for what, items, key in (("groups", head["groups"], "role"), ("synapses", head["synapses"], "kind")):
        for i, d in enumerate(items):         # meta is free-form, but reports and the cost model read these
            if isinstance(d.get("meta"), dict) and not isinstance(d["meta"].get(key, ""), str):
                raise MflcError(f"{jf}: {what}[{i}].meta.{key}: {d['meta'][key]!r}, expected a string")
    return head


def _read_groups(g: Graph, head: dict, arr: _Arrays, jf: Path) -> None:
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
            params={k: _wide(arr.get(f"group/{n}/param/{k}", None, (gd["size"],), where=f"{w}.params"),
                             f"{arr.af}: array 'group/{n}/param/{k}'") for k in gd["params"]},
            tables={k: _wide(arr.get(f"group/{n}/table/{k}", None, ndim=1, where=f"{w}.tables"),
                             f"{arr.af}: array 'group/{n}/table/{k}'") for k in gd["tables"]},
            send=gd["send"], meta=gd.get("meta", {})))


def _read_weights(sd: dict, w: str, arr: _Arrays, base: Graph | None, jf: Path):
    """(indptr, indices, values) of one synapse group, from whichever encoding it is stored in."""
    n, (rows, cols), af = sd["name"], sd["shape"], arr.af
    if sd["encoding"] == "base":
        t = base.synapses.get(n) if base is not None else None
        if t is None or tuple(t.shape) != (rows, cols) or t.values is None:
            why = "no base graph was given (open it through its build)" if base is None else \
                "the base graph has no such synapse group of that shape"
            raise MflcError(f"{jf}: {w}: stored as a reference to the unsplit IR, but {why}")
        return tuple(_shared(a) for a in (t.indptr, t.indices, t.values))
    if sd["encoding"] == "ternary2":
        key = f"syn/{n}/ternary2"
        return ternary.unpack_to_csr(arr.get(key, np.uint8, (ternary.packed_bytes(rows, cols),), where=w),
                                     (rows, cols), f"{af}: array {key!r}")
    if sd["encoding"] == "csr":
        indptr = arr.get(f"syn/{n}/indptr", np.int64, (rows + 1,), where=w)
        if indptr[0] != 0 or (indptr.size > 1 and bool((np.diff(indptr) < 0).any())):
            raise MflcError(f"{af}: array 'syn/{n}/indptr': not a CSR row pointer (must start at 0 and never decrease)")
        nnz = int(indptr[-1])
        return indptr, arr.get(f"syn/{n}/indices", np.int32, (nnz,), where=w), arr.get(f"syn/{n}/values", np.int8, (nnz,), where=w)
    raise MflcError(f"{jf}: {w}.encoding: {sd['encoding']!r}, expected 'csr', 'ternary2' or 'base'")


def _read_packed(sd: dict, w: str, arr: _Arrays, base: Graph | None):
    """(codes, shared per-row counts, where) of a synapse group stored at 2 bits, or of a reference to a
    packed group of the base graph; None for every other encoding. The codes are checked here (length,
    0b10 codes and padding bits)."""
    n, (rows, cols) = sd["name"], sd["shape"]
    if sd["encoding"] == "base" and base is not None:
        t = base.synapses.get(n)
        if isinstance(t, PackedSynapseGroup) and not t.decoded and tuple(t.shape) == (rows, cols):
            return _shared(t.codes), t.stats, t.where
        return None
    if sd["encoding"] != "ternary2":
        return None
    key = f"syn/{n}/ternary2"
    codes = arr.get(key, np.uint8, (ternary.packed_bytes(rows, cols),), where=w)
    where = f"{arr.af}: array {key!r}"
    ternary.check_codes(codes, (rows, cols), where, scan=True)
    return codes, None, where


def _read_synapses(g: Graph, head: dict, arr: _Arrays, base: Graph | None, jf: Path) -> None:
    for si, sd in enumerate(head["synapses"]):
        w, n = f"synapses[{si}]", sd["name"]
        if n in g.synapses:
            raise MflcError(f"{jf}: {w}.name: duplicate synapse group {n!r}")
        rows, cols = sd["shape"]
        if rows < 0 or cols < 0:
            raise MflcError(f"{jf}: {w}.shape: {sd['shape']} has a negative size")
        kw = dict(weight_exp=sd["weight_exp"], delay=sd["delay"], acc_bits=sd["acc_bits"], meta=sd.get("meta", {}))
        packed = _read_packed(sd, w, arr, base)
        if packed is not None:            # kept at 2 bits: CSR only if something asks for it
            codes, stats, where = packed
            g.add_synapse(PackedSynapseGroup(n, sd["src"], sd["dst"], sd["port"], (rows, cols), codes,
                                             where=where, stats=stats, **kw))
            continue
        indptr, indices, values = _read_weights(sd, w, arr, base, jf)
        g.add_synapse(SynapseGroup(n, sd["src"], sd["dst"], sd["port"], (rows, cols), indptr, indices, values, **kw))


def _read_host(g: Graph, head: dict, arr: _Arrays, base: Graph | None, jf: Path) -> None:
    in_base = set(head["host_tensors_in_base"])
    for k in sorted(in_base):
        if k not in head["host_tensors"] or base is None or k not in base.host_tensors:
            raise MflcError(f"{jf}: host_tensors_in_base: {k!r} " + (
                "is not one of host_tensors" if k not in head["host_tensors"] else
                "refers to the unsplit IR, but no base graph was given (open it through its build)" if base is None
                else "is not a host table of the base graph"))
    g.host_tensors = {k: _shared(base.host_tensors[k]) if k in in_base else
                      arr.get(f"host/{k}", None, ndim=2, where="host_tensors")   # kept narrow: rows widen when read
                      for k in head["host_tensors"]}
    for ii, i in enumerate(g.inputs):
        if i.table not in g.host_tensors:
            raise MflcError(f"{jf}: inputs[{ii}].table: {i.table!r} is not one of host_tensors {sorted(g.host_tensors)}")


def load_graph(path: str | Path, base: Graph | None = None) -> Graph:
    """The graph of an IR directory; a damaged graph.json or graph.safetensors raises an MflcError naming
    the file and the field, array, dtype or shape at fault. ``base``: the graph its "base" references
    point to (see save_graph)."""
    d = Path(path)
    jf, af = d / "graph.json", d / "graph.safetensors"
    for f in (jf, af):
        if not f.is_file():
            raise MflcError(f"{f}: IR file not found (expected graph.json + graph.safetensors from `mflc compile`)")
    head = _read_head(jf)
    arr = _Arrays(af, jf)
    g = Graph(meta=head.get("meta", {}))
    _read_groups(g, head, arr, jf)
    _read_synapses(g, head, arr, base, jf)
    g.inputs = [GraphInput(**i) for i in head["inputs"]]
    g.outputs = [GraphOutput(**o) for o in head["outputs"]]
    _read_host(g, head, arr, base, jf)
    g.state = {k: tuple(v) for k, v in head["state"].items()}
    return g


def _codes_pair(s: SynapseGroup, t: SynapseGroup):
    """(codes of s, codes of t) when one of them is a still-packed group and the other can be packed (±1
    weights, no duplicate entries); None when they must be compared as CSR."""
    packed = lambda x: isinstance(x, PackedSynapseGroup) and not x.decoded      # noqa: E731
    if not (packed(s) or packed(t)):
        return None
    out = []
    for x in (s, t):
        if packed(x):
            out.append(x.codes)
        elif x.values is None or not ternary.is_ternary(x.values) or not _csr_sorted_unique(x):
            return None
        else:
            out.append(ternary.pack_csr(x.shape, x.indptr, x.indices, x.values))
    return out


def _csr_sorted_unique(x: SynapseGroup) -> bool:
    """No repeated column within a row (packing would merge repeats, CSR adds them)."""
    if x.indices.size < 2:
        return True
    d = np.diff(x.indices.astype(np.int64))
    starts = np.zeros(x.indices.size - 1, bool)
    inner = x.indptr[1:-1]
    starts[inner[(inner > 0) & (inner < x.indices.size)] - 1] = True        # row boundaries may decrease
    return bool(np.all((d > 0) | starts))


def graph_difference(a: Graph, b: Graph) -> str | None:
    """The first difference between two graphs, in words (None: equal in structure and in every integer)."""
    for what, x, y in (("groups", a.groups, b.groups), ("synapse groups", a.synapses, b.synapses)):
        if set(x) != set(y):
            only = sorted(set(x) ^ set(y))
            return f"{what} differ: {', '.join(only[:3])} in only one of them"
    for n, x in a.groups.items():
        y = b.groups[n]
        for f in ("size", "ports", "program", "output", "out_bits", "stage", "registers", "send", "meta"):
            if getattr(x, f) != getattr(y, f):
                return f"group {n}: {f} differs"
        for what, dx, dy in (("param", x.params, y.params), ("table", x.tables, y.tables)):
            if set(dx) != set(dy):
                return f"group {n}: {what}s differ"
            for k in dx:
                if not np.array_equal(dx[k], dy[k]):
                    return f"group {n}: {what} {k!r} differs"
    for n, s in a.synapses.items():
        t = b.synapses[n]
        for f in ("src", "dst", "port", "shape", "weight_exp", "delay", "acc_bits", "meta"):
            if (tuple(getattr(s, f)) if f == "shape" else getattr(s, f)) != \
                    (tuple(getattr(t, f)) if f == "shape" else getattr(t, f)):
                return f"synapse {n}: {f} differs"
        codes = _codes_pair(s, t)
        if codes is not None:                 # a packed side: compared as 2-bit codes, no CSR decoded
            if not np.array_equal(*codes):
                return f"synapse {n}: weights differ (2-bit codes)"
            continue
        for f in ("indptr", "indices", "values"):
            if not np.array_equal(getattr(s, f), getattr(t, f)):
                return f"synapse {n}: weights differ ({f})"
    if [vars(i) for i in a.inputs] != [vars(i) for i in b.inputs]:
        return "inputs differ"
    if [vars(o) for o in a.outputs] != [vars(o) for o in b.outputs]:
        return "outputs differ"
    if set(a.host_tensors) != set(b.host_tensors):
        return "host tables differ"
    for k in a.host_tensors:
        if not np.array_equal(a.host_tensors[k], b.host_tensors[k]):
            return f"host table {k!r} differs"
    if a.state != b.state:
        return "state differs"
    return "graph meta differs" if a.meta != b.meta else None


def graphs_equal(a: Graph, b: Graph) -> bool:
    """Structural and bit-exact equality of two graphs (used by round-trip tests and verify)."""
    return graph_difference(a, b) is None
