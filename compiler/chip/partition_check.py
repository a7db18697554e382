"""Independent check that a placed graph is exactly a partition of the unsplit (lowered) graph.

``check_partition(unsplit, placed)`` lists every reason why ``placed`` (what ``place.layout_graph`` returns,
``placed_ir/`` in a build) is not exactly what ``partition.split_fan_in`` may make of ``unsplit`` (``ir/``),
recomputed from the integers of both graphs and trusting nothing stored in ``placed`` (its meta, names of
parts, column blocks):

* every group of ``unsplit`` is in ``placed`` with the same size, ports, program, registers, params and
  tables (array-equal), output, out_bits, send and meta; its stage moved exactly as a split moves it (one
  step later per split destination whose old stage is at or before its own). out_bits may only widen for
  a split destination that feeds nothing but the host, to exactly the IR validator's bound on ``placed``;
* every synapse group of ``unsplit`` is in ``placed`` with the same CSR integers (indptr, indices, values),
  shape, src, dst, port, weight_exp, acc_bits and meta, or it was split: groups ``S#part0 .. S#part{K-1}``,
  each a copy neuron (size of dst, stage just before dst's new stage, out_bits = the worst case of its
  partial sums) fed by one piece of S (same src, shape, weight_exp, acc_bits) whose columns lie in the
  part's block, the blocks disjoint and tiling S's source columns, the pieces' rows together holding exactly
  S's weights (same integers), and each part feeding dst.port by one identity synapse (weights 1, weight_exp
  0); S itself must have weight_exp 0;
* nothing else is in ``placed`` (no other group or synapse group), inputs, outputs, host tensors
  (array-equal), the state map and the graph meta (apart from ``fan_in_splits``, which must describe the
  splits found) are the same, and every delay of ``placed`` is stage(dst) − stage(src) − 1.

It never raises: malformed graphs (missing names, broken CSR arrays, wrong types) are problems too. Work is
vectorised over rows and weights (no Python loop over rows), so it runs on the largest models.
"""
from __future__ import annotations

import re
from bisect import bisect_right

import numpy as np

from mflc.ir.hardware import DEFAULT, HardwareProfile
from mflc.ir.graph import Graph, Instr, PackedSynapseGroup
from mflc.ir.ops import range_bits
from mflc.ir.range_analysis import accumulation, analyse, partial_peak

_PART = re.compile(r"^(?P<syn>.+)#part(?P<k>\d+)$")
_COPY = [Instr.make("copy", "y", "x")]


def check_partition(unsplit: Graph, placed: Graph, hw: HardwareProfile | None = None) -> list[str]:
    """Every reason why ``placed`` is not exactly a fan-in-split partition of ``unsplit`` ([] if it is);
    widened messages and partial sums are bounded by ``hw.max_msg_bits`` (default profile: loihi2)."""
    out: list[str] = []
    try:
        _check(unsplit, placed, out, (hw or DEFAULT).max_msg_bits)
    except Exception as e:  # noqa: BLE001 - the check reports, it never raises
        out.append(f"the partition check could not finish: {type(e).__name__}: {e}")
    return out


# ---- helpers -----------------------------------------------------------------------------------------------
def _guard(out: list[str], where: str, fn, *args) -> None:
    """Run one item's checks; an exception (a malformed item) becomes a problem naming the item."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        out.append(f"{where}: malformed ({type(e).__name__}: {e})")


def _norm(x):
    """A comparable form of JSON-like data (tuples and lists alike, numpy scalars and arrays as Python)."""
    if isinstance(x, np.ndarray):
        return ("ndarray", x.shape, x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, Instr):
        return [x.op, x.out, list(x.args), _norm(dict(x.imm))]
    return x


def _same(a, b) -> bool:
    try:
        return _norm(a) == _norm(b)
    except Exception:  # noqa: BLE001
        return False


def _instr(i) -> str:
    try:
        imm = "".join(f", {k}={v}" for k, v in i.imm)
        return f"{i.out} = {i.op}({', '.join(i.args)}{imm})"
    except Exception:  # noqa: BLE001
        return repr(i)


def _bits(lo: int, hi: int) -> int:
    """Smallest signed width holding [lo, hi] (as mflc.ir.ops.range_bits)."""
    b = 1
    while lo < -(1 << (b - 1)) or hi > (1 << (b - 1)) - 1:
        b += 1
    return b


def _arr_diff(a, b) -> str | None:
    """None if two integer arrays are equal, else where they first differ."""
    if a is None or b is None:
        return None if a is None and b is None else ("absent in the placed graph" if a is None else
                                                     "absent in the unsplit IR")
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if np.array_equal(a, b):
        return None
    i = int(np.flatnonzero(a.ravel() != b.ravel())[0])
    return f"first at entry {i}: {a.ravel()[i]} vs {b.ravel()[i]}"


def _csr_problem(s, n_dst: int, n_src: int) -> str | None:
    """Why a synapse group's arrays are not a sound CSR of shape (n_dst, n_src) (None if they are)."""
    ip = np.asarray(s.indptr)
    if ip.ndim != 1 or ip.shape[0] != n_dst + 1:
        return f"indptr has shape {ip.shape}, expected ({n_dst + 1},)"
    if not np.issubdtype(ip.dtype, np.integer):
        return f"indptr has dtype {ip.dtype}"
    if ip[0] != 0 or np.any(np.diff(ip) < 0):
        return "indptr does not start at 0 and never decrease"
    if s.values is None and s.indices is None:
        return None
    if s.values is None or s.indices is None:
        return "only one of indices / values is stored"
    ind, val = np.asarray(s.indices), np.asarray(s.values)
    if ind.ndim != 1 or val.ndim != 1 or ind.size != val.size or ind.size != int(ip[-1]):
        return f"{ind.size} indices and {val.size} values for indptr[-1] = {int(ip[-1])}"
    if not (np.issubdtype(ind.dtype, np.integer) and np.issubdtype(val.dtype, np.integer)):
        return f"indices / values have dtypes {ind.dtype} / {val.dtype}"
    if ind.size and (int(ind.min()) < 0 or int(ind.max()) >= n_src):
        return f"source indices span [{int(ind.min())}, {int(ind.max())}], outside [0, {n_src})"
    return None


def _row_sums(indptr: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = indptr.shape[0] - 1
    out = np.zeros(n, np.int64)
    nonempty = np.diff(indptr) > 0
    if nonempty.any():
        out[nonempty] = np.add.reduceat(x, indptr[:-1][nonempty], dtype=np.int64)
    return out


# ---- the check ----------------------------------------------------------------------------------------------
def _check(u: Graph, p: Graph, out: list[str], msg_bits: int) -> None:
    for what, g in (("unsplit IR", u), ("placed graph", p)):
        for attr, typ in (("groups", dict), ("synapses", dict), ("inputs", list), ("outputs", list),
                          ("host_tensors", dict), ("state", dict), ("meta", dict)):
            if not isinstance(getattr(g, attr, None), typ):
                out.append(f"the {what} is not a graph: its {attr} is not a {typ.__name__}")
                return
        for kind, d in (("group", g.groups), ("synapse", g.synapses)):
            for k, v in d.items():
                if getattr(v, "name", None) != k:
                    out.append(f"{kind} {k} of the {what}: stored under {k!r} but named {getattr(v, 'name', None)!r}")

    # the splits: unsplit synapse groups absent from placed, replaced by groups S#part{k}
    replaced = [n for n in u.synapses if n not in p.synapses]
    rset = set(replaced)
    parts: dict[str, dict[int, str]] = {n: {} for n in replaced}
    extra_groups = []
    for name in p.groups:
        if name in u.groups:
            continue
        m = _PART.match(name)
        if m and m["syn"] in rset and name == f"{m['syn']}#part{int(m['k'])}":
            parts[m["syn"]][int(m["k"])] = name
        else:
            extra_groups.append(name)
    splits = {}
    for n in replaced:
        if not parts[n]:
            out.append(f"synapse {n}: missing from the placed graph, and no partial-sum groups {n}#part<k> replace it")
        else:
            splits[n] = parts[n]
    for name in extra_groups:
        out.append(f"group {name}: in the placed graph but not in the unsplit IR (and not a partial-sum group of a "
                   "split synapse)")

    # stages: every split destination's old stage adds one step at and after it
    z = sorted({u.groups[u.synapses[n].dst].stage for n in splits if u.synapses[n].dst in u.groups})

    def new_stage(stage: int) -> int:
        """A stage's number in the placed IR: one later for each partial-sum stage inserted at or before it."""
        return stage + bisect_right(z, stage)

    split_dsts = {u.synapses[n].dst for n in splits}
    senders = {s.src for s in p.synapses.values()}
    for name, ug in u.groups.items():
        _guard(out, f"group {name}", _check_group, name, ug, p, new_stage, name in split_dsts and name not in senders,
               out, msg_bits)

    # synapse groups: kept ones identical, split ones as their pieces; everything in placed claimed once
    claimed: set[str] = set()
    for name, us in u.synapses.items():
        if name in p.synapses:
            claimed.add(name)
            _guard(out, f"synapse {name}", _check_kept, name, us, p.synapses[name], out)
    into: dict[str, list] = {}
    outof: dict[str, list] = {}
    for s in p.synapses.values():
        into.setdefault(s.dst, []).append(s)
        outof.setdefault(s.src, []).append(s)
    for name, ks in splits.items():
        _guard(out, f"synapse {name}", _check_split, name, ks, u, p, into, outof, new_stage, claimed, out,
               msg_bits)
    for name, s in p.synapses.items():
        if name not in claimed:
            out.append(f"synapse {name} ({getattr(s, 'src', '?')} -> {getattr(s, 'dst', '?')}.{getattr(s, 'port', '?')}): "
                       "in the placed graph but not in the unsplit IR (and not a piece of a split synapse)")

    # delays against the placed stages
    for name, s in p.synapses.items():
        _guard(out, f"synapse {name}", _check_delay, name, s, p, out)

    _guard(out, "graph", _check_graph, u, p, splits, out)


def _check_delay(name, s, p: Graph, out: list[str]) -> None:
    src, dst = p.groups.get(s.src), p.groups.get(s.dst)
    if src is None or dst is None:
        out.append(f"synapse {name}: its {'source' if src is None else 'destination'} group "
                   f"{s.src if src is None else s.dst} is not in the placed graph")
        return
    want = dst.stage - src.stage - 1
    if s.delay != want:
        out.append(f"synapse {name}: delay {s.delay}, but stage({s.dst}) - stage({s.src}) - 1 = "
                   f"{dst.stage} - {src.stage} - 1 = {want}")


def _check_group(name, ug, p: Graph, new_stage, may_widen: bool, out: list[str], msg_bits: int) -> None:
    pg = p.groups.get(name)
    if pg is None:
        out.append(f"group {name}: missing from the placed graph")
        return
    w = f"group {name}"
    for f in ("size", "ports", "output", "send", "registers", "meta"):
        a, b = getattr(pg, f), getattr(ug, f)
        if not _same(a, b):
            out.append(f"{w}: {f} differs (placed {a!r} vs unsplit {b!r})")
    pp, up = list(pg.program), list(ug.program)
    if len(pp) != len(up):
        out.append(f"{w}: program has {len(pp)} instructions in the placed graph, {len(up)} unsplit")
    for i, (a, b) in enumerate(zip(pp, up)):
        if not _same(a, b):
            out.append(f"{w}: program instruction {i} differs (placed {_instr(a)} vs unsplit {_instr(b)})")
    for f in ("params", "tables"):
        a, b = getattr(pg, f), getattr(ug, f)
        if set(a) != set(b):
            out.append(f"{w}: {f} {sorted(a)} in the placed graph vs {sorted(b)} unsplit")
        for k in sorted(set(a) & set(b)):
            d = _arr_diff(a[k], b[k])
            if d:
                out.append(f"{w}: {f[:-1]} {k} differs ({d}, placed vs unsplit)")
    want = new_stage(ug.stage)
    if pg.stage != want:
        out.append(f"{w}: stage {pg.stage} in the placed graph, expected {want} (unsplit stage {ug.stage} moved by "
                   f"the {want - ug.stage} split stage(s) at or before it)")
    if pg.out_bits != ug.out_bits:
        if not may_widen or not ug.out_bits < pg.out_bits <= msg_bits:
            out.append(f"{w}: out_bits {pg.out_bits} in the placed graph vs {ug.out_bits} unsplit (only a split "
                       f"destination that feeds nothing but the host may widen, up to {msg_bits} bits)")
        else:
            need = _output_bound(p, name)
            if need != pg.out_bits:
                out.append(f"{w}: out_bits widened from {ug.out_bits} to {pg.out_bits}, but the IR validator bounds its "
                           f"output in the placed graph at {need} bits")


def _output_bound(g: Graph, name: str) -> int | None:
    """Width of ``name``'s output as the IR validator bounds it in ``g`` (None if it cannot say): the range
    analysis' (mflc.ir.range_analysis), as the partitioner widened it."""
    out = analyse(g).groups[name].output
    return None if out is None else range_bits(out)


def _check_kept(name, us, ps, out: list[str]) -> None:
    w = f"synapse {name}"
    for f in ("src", "dst", "port", "weight_exp", "acc_bits", "meta"):
        a, b = getattr(ps, f), getattr(us, f)
        if not _same(a, b):
            out.append(f"{w}: {f} differs (placed {a!r} vs unsplit {b!r})")
    if tuple(ps.shape) != tuple(us.shape):
        out.append(f"{w}: shape {tuple(ps.shape)} in the placed graph vs {tuple(us.shape)} unsplit")
        return
    if PackedSynapseGroup.same_codes(ps, us):       # kept groups share the unsplit IR's codes: no CSR copy
        return
    d = _arr_diff(ps.indptr, us.indptr)
    if d:
        out.append(f"{w}: indptr (row counts) differs from the unsplit IR ({d}, placed vs unsplit)")
        return
    ip = np.asarray(us.indptr)
    for f in ("indices", "values"):
        a, b = getattr(ps, f), getattr(us, f)
        d = _arr_diff(a, b)
        if d is None:
            continue
        if a is not None and b is not None and np.shape(a) == np.shape(b):
            i = int(np.flatnonzero(np.asarray(a) != np.asarray(b))[0])
            row = int(np.searchsorted(ip, i, side="right")) - 1
            out.append(f"{w}: {f} differ from the unsplit IR (first at row {row}, entry {i}: placed "
                       f"{np.asarray(a)[i]} vs unsplit {np.asarray(b)[i]})")
        else:
            out.append(f"{w}: {f} differ from the unsplit IR ({d})")


def _check_split(name, ks: dict[int, str], u: Graph, p: Graph, into, outof, new_stage, claimed: set,
                 out: list[str], msg_bits: int) -> None:
    """Synapse ``name`` split into partial-sum groups ``ks``: each part, its piece and its identity synapse
    must be exactly what the partitioner makes, and the pieces together exactly the unsplit synapse."""
    S = u.synapses[name]
    w = f"synapse {name}"
    K = max(ks) + 1
    if sorted(ks) != list(range(K)):
        missing = [f"{name}#part{k}" for k in range(K) if k not in ks]
        out.append(f"{w}: partial-sum groups {', '.join(missing)} are missing (parts 0..{K - 1} expected)")
    if S.weight_exp != 0:
        out.append(f"{w}: split into partial sums but its weight_exp is {S.weight_exp}; partial sums are exact only "
                   "with weight_exp 0")
    dst, src = u.groups.get(S.dst), u.groups.get(S.src)
    if dst is None or src is None:
        out.append(f"{w}: its {'destination' if dst is None else 'source'} group "
                   f"{S.dst if dst is None else S.src} is not in the unsplit IR")
        return
    n_dst, n_src = int(S.shape[0]), int(S.shape[1])
    bad = _csr_problem(S, n_dst, n_src)
    if bad:
        out.append(f"{w}: the unsplit CSR is malformed ({bad})")
        return
    virtual = S.values is None
    c0, c1 = (0, n_src)
    if S.meta.get("columns"):
        c0, c1 = int(S.meta["columns"][0]), int(S.meta["columns"][1])
    stage = new_stage(dst.stage) - 1
    if dst.size != n_dst:
        out.append(f"{w}: shape {tuple(S.shape)} but its destination {S.dst} has {dst.size} neurons")
    slo, shi = -(1 << (src.out_bits - 1)), (1 << (src.out_bits - 1)) - 1
    pieces = []                                    # (k, lo, hi, piece synapse) with sound arrays
    blocks = []                                    # (k, lo, hi) from the part groups' meta
    for k in sorted(ks):
        pn = ks[k]
        pg = p.groups[pn]
        pw = f"group {pn}"
        cols, lo, hi = _check_part_group(pg, pw, name, n_dst, stage, dst, out)
        if lo is not None:
            blocks.append((k, lo, hi))
        # its one input: the k-th piece of S
        ins = into.get(pn, [])
        claimed.update(s.name for s in ins)
        if len(ins) != 1:
            out.append(f"{pw}: fed by {len(ins)} synapse groups ({', '.join(s.name for s in ins) or 'none'}); a "
                       f"partial-sum group is fed by exactly one piece of {name}")
        for ps in ins[:1]:
            sw = f"synapse {ps.name} (piece {k} of {name})"
            if not _check_piece_form(ps, sw, pn, name, S, n_dst, n_src, cols, virtual, out):
                continue
            if lo is not None:
                _check_piece_columns(ps, sw, lo, hi, virtual, out)
            pieces.append((k, ps))
            plo, phi = _partial_sum_range(ps, virtual, slo, shi, n_dst)
            need = _bits(plo, phi)
            if pg.out_bits != need:
                out.append(f"{pw}: out_bits {pg.out_bits}, but its partial sums of {src.out_bits}-bit inputs range over "
                           f"[{plo}, {phi}], which needs {need} bits")
            if need > msg_bits:
                out.append(f"{pw}: its partial sums need {need} bits, more than a {msg_bits}-bit message")
        # its one output: identity into dst.port
        outs = outof.get(pn, [])
        claimed.update(s.name for s in outs)
        if len(outs) != 1:
            out.append(f"{pw}: sends on {len(outs)} synapse groups ({', '.join(s.name for s in outs) or 'none'}); a "
                       f"partial-sum group feeds exactly one identity synapse into {S.dst}.{S.port}")
        for os_ in outs[:1]:
            _check_identity(os_, pn, S, n_dst, virtual, out)

    _check_blocks(w, name, blocks, len(ks), c0, c1, out)
    _check_rows(w, S, pieces, virtual, n_dst, n_src, out)


def _check_blocks(w: str, name: str, blocks: list, n_parts: int, c0: int, c1: int, out: list[str]) -> None:
    """The pieces' column blocks must be disjoint and contiguous and tile the split synapse's source columns."""
    blocks.sort()
    if blocks and len(blocks) == n_parts:
        edges = [blocks[0][1]] + [b[2] for b in blocks]
        starts = [b[1] for b in blocks]
        if edges[0] != c0 or edges[-1] != c1:
            out.append(f"{w}: the pieces' column blocks span [{edges[0]}, {edges[-1]}), not {name}'s source columns "
                       f"[{c0}, {c1})")
        for (k, lo, hi), nxt in zip(blocks, starts[1:] + [None]):
            if hi < lo:
                out.append(f"{w}: piece {k}'s column block [{lo}, {hi}) is reversed")
            if nxt is not None and nxt != hi:
                out.append(f"{w}: piece {k}'s column block ends at {hi} but piece {k + 1}'s starts at {nxt} "
                           f"({'overlap' if nxt < hi else 'gap'}); the blocks must be disjoint and cover every column")


def _check_rows(w: str, S, pieces: list, virtual: bool, n_dst: int, n_src: int, out: list[str]) -> None:
    """The pieces' rows together must hold exactly the unsplit synapse's weights (counts, if virtual)."""
    if virtual:
        tot = np.zeros(n_dst, np.int64)
        for _, ps in pieces:
            tot += np.diff(np.asarray(ps.indptr, np.int64))
        oc = np.diff(np.asarray(S.indptr, np.int64))
        diff = np.flatnonzero(tot != oc)
        if diff.size:
            r = int(diff[0])
            out.append(f"{w}: row {r} of the placed pieces holds {int(tot[r])} weights, the unsplit IR {int(oc[r])} "
                       f"({diff.size} rows differ)")
    else:
        _check_weights(w, S, [ps for _, ps in pieces], n_dst, n_src, out)


def _check_part_group(pg, pw: str, name: str, n_dst: int, stage: int, dst, out: list[str]):
    """A partial-sum group must be a bare copy neuron just before dst; returns (columns, lo, hi) of its
    meta's column block (lo = hi = None if malformed)."""
    for f, want in (("size", n_dst), ("ports", ["x"]), ("program", _COPY), ("output", "y"), ("registers", {}),
                    ("send", "every"), ("stage", stage)):
        got = getattr(pg, f)
        if not _same(got, want):
            shown = [_instr(i) for i in got] if f == "program" else got
            out.append(f"{pw}: {f} {shown!r}, expected {_instr(_COPY[0]) if f == 'program' else want!r} for a "
                       f"partial-sum group of {name}")
    for f in ("params", "tables"):
        if getattr(pg, f):
            out.append(f"{pw}: has {f} {sorted(getattr(pg, f))}; a partial-sum group has none")
    cols = pg.meta.get("columns") if isinstance(pg.meta, dict) else None
    try:
        lo, hi = int(cols[0]), int(cols[1])
        if len(cols) != 2:
            raise ValueError
    except Exception:  # noqa: BLE001
        out.append(f"{pw}: meta columns {cols!r} is not a [start, stop) column block")
        lo = hi = None
    want_meta = dict(layer=dst.meta.get("layer"), role="partial_sum", split_of=name, columns=cols)
    if not _same(pg.meta, want_meta):
        out.append(f"{pw}: meta {pg.meta!r}, expected {want_meta!r}")
    return cols, lo, hi


def _check_piece_form(ps, sw: str, pn: str, name: str, S, n_dst: int, n_src: int, cols, virtual: bool,
                      out: list[str]) -> bool:
    """A piece must look like the split synapse (name, fields, shape, meta, sound CSR, same kind of weights);
    False if it is too broken to check further."""
    want_name = f"{S.src}->{pn}.x"
    if ps.name != want_name:
        out.append(f"{sw}: named {ps.name!r}, expected {want_name!r}")
    for f, want in (("src", S.src), ("port", "x"), ("weight_exp", S.weight_exp), ("acc_bits", S.acc_bits)):
        if not _same(getattr(ps, f), want):
            out.append(f"{sw}: {f} {getattr(ps, f)!r}, expected {want!r} (as {name})")
    if tuple(ps.shape) != (n_dst, n_src):
        out.append(f"{sw}: shape {tuple(ps.shape)}, expected {(n_dst, n_src)} (as {name})")
        return False
    want_meta = dict(S.meta, split_of=name, columns=cols)
    if not _same(ps.meta, want_meta):
        out.append(f"{sw}: meta {ps.meta!r}, expected {want_meta!r}")
    bad = _csr_problem(ps, n_dst, n_src)
    if bad:
        out.append(f"{sw}: malformed CSR ({bad})")
        return False
    if (ps.values is None) != virtual:
        out.append(f"{sw}: {'virtual' if ps.values is None else 'real'} weights, but {name}'s are "
                   f"{'virtual' if virtual else 'real'}")
        return False
    return True


def _check_piece_columns(ps, sw: str, lo: int, hi: int, virtual: bool, out: list[str]) -> None:
    """A piece's weights must lie in its column block [lo, hi) (virtual: no row longer than the block)."""
    if virtual:
        rc = np.diff(np.asarray(ps.indptr))
        if rc.size and int(rc.max()) > max(hi - lo, 0):
            r = int(np.argmax(rc))
            out.append(f"{sw}: row {r} has {int(rc[r])} weights, more than its block [{lo}, {hi}) has columns")
    else:
        ind = np.asarray(ps.indices)
        outside = (ind < lo) | (ind >= hi)
        if outside.any():
            i = int(np.argmax(outside))
            row = int(np.searchsorted(np.asarray(ps.indptr), i, side="right")) - 1
            out.append(f"{sw}: {int(outside.sum())} weights outside its column block [{lo}, {hi}) (first: "
                       f"row {row}, column {int(ind[i])})")


def _partial_sum_range(ps, virtual: bool, slo: int, shi: int, n_dst: int) -> tuple[int, int]:
    """The worst case of a piece's partial sums over [slo, shi] inputs, by the range analysis' accumulation
    bound (what the part group's out_bits must hold)."""
    ip = np.asarray(ps.indptr, np.int64)
    if virtual:
        rc = np.diff(ip)
        top = partial_peak(int(rc.max()) if rc.size else 0, (slo, shi))
        return -top, top
    v = np.asarray(ps.values)
    return accumulation(_row_sums(ip, np.maximum(v, 0)), _row_sums(ip, np.minimum(v, 0)), (slo, shi)) if n_dst else (0, 0)


def _check_identity(s, pn: str, S, n: int, virtual: bool, out: list[str]) -> None:
    sw = f"synapse {s.name} (identity of {pn})"
    want_name = f"{pn}->{S.dst}.{S.port}"
    if s.name != want_name:
        out.append(f"{sw}: named {s.name!r}, expected {want_name!r}")
    for f, want in (("dst", S.dst), ("port", S.port), ("weight_exp", 0)):
        if not _same(getattr(s, f), want):
            out.append(f"{sw}: {f} {getattr(s, f)!r}, expected {want!r}")
    want_meta = dict(kind="identity", partial_sum_of=S.name)
    if not _same(s.meta, want_meta):
        out.append(f"{sw}: meta {s.meta!r}, expected {want_meta!r}")
    if tuple(s.shape) != (n, n):
        out.append(f"{sw}: shape {tuple(s.shape)}, expected {(n, n)}")
        return
    bad = _csr_problem(s, n, n)
    if bad:
        out.append(f"{sw}: malformed CSR ({bad})")
        return
    if not np.array_equal(np.asarray(s.indptr), np.arange(n + 1)):
        out.append(f"{sw}: not one weight per row")
        return
    if (s.values is None) != virtual:
        out.append(f"{sw}: {'virtual' if s.values is None else 'real'} weights, but {S.name}'s are "
                   f"{'virtual' if virtual else 'real'}")
        return
    if s.values is not None:
        ind, val = np.asarray(s.indices), np.asarray(s.values)
        wrong = (ind != np.arange(n)) | (val != 1)
        if wrong.any():
            r = int(np.argmax(wrong))
            out.append(f"{sw}: row {r} holds weight {int(val[r])} from neuron {int(ind[r])}; an identity synapse "
                       f"holds weight 1 from neuron {r}")


def _check_weights(w: str, S, pieces: list, n_dst: int, n_src: int, out: list[str]) -> None:
    """The pieces' rows, merged in block order, against S's rows: equal integers (a fast elementwise pass);
    rows that differ are compared as weight sums per (row, column) for the message."""
    oip = np.asarray(S.indptr, np.int64)
    oind, oval = np.asarray(S.indices), np.asarray(S.values)
    oc = np.diff(oip)
    pcs = [np.diff(np.asarray(ps.indptr, np.int64)) for ps in pieces]
    tot = np.zeros(n_dst, np.int64)
    for c in pcs:
        tot += c
    cip = np.concatenate([[0], np.cumsum(tot)]).astype(np.int64)
    nnz = int(cip[-1])
    cind = np.empty(nnz, np.int64)
    cval = np.empty(nnz, np.int64)
    off = cip[:-1].copy()
    for ps, c in zip(pieces, pcs):
        pip = np.asarray(ps.indptr, np.int64)
        m = int(pip[-1])
        if m:
            dest = np.repeat(off - pip[:-1], c) + np.arange(m, dtype=np.int64)
            cind[dest] = ps.indices
            cval[dest] = ps.values
        off += c
    same_n = oc == tot
    if same_n.all():
        bad_e = (oind != cind) | (oval != cval)
        if not bad_e.any():
            return
        bad_rows = np.unique(np.searchsorted(oip, np.flatnonzero(bad_e), side="right") - 1)
    else:
        om, cm = np.repeat(same_n, oc), np.repeat(same_n, tot)
        bad_e = (oind[om] != cind[cm]) | (oval[om] != cval[cm])
        rows_eq = np.repeat(np.flatnonzero(same_n), oc[same_n])
        bad_rows = np.union1d(np.flatnonzero(~same_n), rows_eq[bad_e])
    # the candidate rows, as multisets of (row, column) -> weight sum
    isbad = np.zeros(n_dst, bool)
    isbad[bad_rows] = True
    om, cm = np.repeat(isbad, oc), np.repeat(isbad, tot)
    ko = np.repeat(np.arange(n_dst, dtype=np.int64), oc)[om] * n_src + oind[om]
    kc = np.repeat(np.arange(n_dst, dtype=np.int64), tot)[cm] * n_src + cind[cm]
    keys, inv = np.unique(np.concatenate([ko, kc]), return_inverse=True)
    so = np.bincount(inv[:ko.size], weights=oval[om].astype(np.float64), minlength=keys.size)
    sp = np.bincount(inv[ko.size:], weights=cval[cm].astype(np.float64), minlength=keys.size)
    so, sp = np.rint(so).astype(np.int64), np.rint(sp).astype(np.int64)
    dk = np.flatnonzero(so != sp)
    if dk.size:
        rows = np.unique(keys[dk] // n_src)
        j = int(dk[0])
        r, c = int(keys[j] // n_src), int(keys[j] % n_src)
        more = f"; {rows.size} rows differ" if rows.size > 1 else ""
        out.append(f"{w}: row {r} of the placed pieces sums to different weights than the unsplit IR (column {c}: "
                   f"{int(sp[j])} in the pieces vs {int(so[j])} unsplit){more}")
    else:
        cnt = np.flatnonzero(oc != tot)
        if cnt.size:                       # same sums, other integers (explicit zeros, duplicates split up)
            r = int(cnt[0])
            out.append(f"{w}: row {r} of the placed pieces holds {int(tot[r])} weights, the unsplit IR {int(oc[r])} "
                       f"(same sums, other integers; {cnt.size} rows differ)")


def _check_graph(u: Graph, p: Graph, splits: dict, out: list[str]) -> None:
    for f in ("inputs", "outputs"):
        a, b = [vars(x) for x in getattr(p, f)], [vars(x) for x in getattr(u, f)]
        if not _same(a, b):
            out.append(f"graph {f} differ (placed {a!r} vs unsplit {b!r})")
    if set(p.host_tensors) != set(u.host_tensors):
        out.append(f"host tensors {sorted(p.host_tensors)} in the placed graph vs {sorted(u.host_tensors)} unsplit")
    for k in sorted(set(p.host_tensors) & set(u.host_tensors)):
        d = _arr_diff(p.host_tensors[k], u.host_tensors[k])
        if d:
            out.append(f"host tensor {k} differs ({d}, placed vs unsplit)")
    ps, us = {k: _norm(v) for k, v in p.state.items()}, {k: _norm(v) for k, v in u.state.items()}
    for k in sorted(set(ps) | set(us)):
        if k not in ps:
            out.append(f"state {k}: {us[k]} in the unsplit IR, missing from the placed graph")
        elif k not in us:
            out.append(f"state {k}: {ps[k]} in the placed graph, not in the unsplit IR")
        elif ps[k] != us[k]:
            out.append(f"state {k}: {ps[k]} in the placed graph vs {us[k]} unsplit")
    pm = {k: v for k, v in p.meta.items() if k != "fan_in_splits"}
    um = {k: v for k, v in u.meta.items() if k != "fan_in_splits"}
    if not _same(pm, um):
        keys = sorted(k for k in set(pm) | set(um) if not _same(pm.get(k), um.get(k)))
        out.append(f"graph meta differs in {keys}")
    stored = p.meta.get("fan_in_splits")
    if not splits:
        if stored:
            out.append(f"graph meta fan_in_splits lists {len(stored)} splits, but nothing was split")
        return
    want = {n: dict(synapse=n, dst=u.synapses[n].dst, parts=len(ks),
                    out_bits=[p.groups[ks[k]].out_bits for k in sorted(ks)]) for n, ks in splits.items()}
    got = {}
    try:
        for e in stored or []:
            got[e["synapse"]] = e
    except Exception:  # noqa: BLE001
        out.append(f"graph meta fan_in_splits is malformed: {stored!r}")
        return
    for n in sorted(set(want) | set(got)):
        if n not in got:
            out.append(f"graph meta fan_in_splits does not list the split of {n}")
        elif n not in want:
            out.append(f"graph meta fan_in_splits lists a split of {n}, which was not split")
        elif not _same(got[n], want[n]):
            out.append(f"graph meta fan_in_splits entry of {n} is {got[n]!r}, the graph says {want[n]!r}")
