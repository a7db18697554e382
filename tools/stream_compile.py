"""The constant-memory compile: quantize, lower, validate, lay out and write a float
checkpoint layer by layer, so that memory holds about one layer plus the embedding and the head, whatever
the depth. The build is byte for byte the one the whole-model path writes (``mflc.compile(...,
stream=False)``; tests/test_stream_compile.py compares every file).

How, step by step (``compiler/model/stream.StreamingModel`` makes the steps):

* tensors are read from the checkpoint one by one when used (``checkpoint.open_checkpoint``), never
  mapped, so the checkpoint's pages do not count as the process's memory;
* each step's quantized tensors go straight into ``quant/quant.safetensors`` and each synapse group's
  arrays into ``ir/graph.safetensors`` (``SafetensorsWriter``: spilled beside the file, put in the
  library's order on closing); the graph then keeps, for each synapse group, only its row pointer and
  the range of its weights: all that partitioning, placement, the layout check and the report read;
* each step is validated on a window of the graph: its own groups and synapse groups with the groups
  that feed them. A fed-in group counts with the whole range of its message width, never less than
  what the whole-graph range analysis gives it, so a window without problems proves that the whole
  graph has none there (inputs, outputs and state are checked on the whole structure);
* the layout runs on that graph. ``placed_ir/`` refers to ``ir/`` for every synapse group.

Where this cannot decide, the compile falls back to the whole-model path and says why (``Fallback``):
a window with a problem (the whole graph may not have it: the exact validator then decides), and a
fan-in that needs splitting (the split rewrites the weights of the groups it cuts).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from mflc.ir.errors import FitError, MflcError


class Fallback(Exception):
    """The layer-by-layer compile cannot decide this model: the whole-model path must (the reason says why)."""


def light_synapse(s):
    """The synapse group without its weights: the row pointer (row counts, nnz) stays, and in place of the
    values the two extreme weights (what ``weight_range`` reads; empty when it has no weights). Never
    written or executed: ``indices`` is None, so anything reading the weights fails loudly."""
    v = s.values
    ext = np.array([v.min(), v.max()], np.int8) if v.size else np.zeros(0, np.int8)
    return replace(s, indices=None, values=ext)


def _own(p: str, names: set[str], kinds: tuple[str, ...]) -> bool:
    """Whether problem ``p`` is about one of ``names`` (a group or synapse group of the step)."""
    head = p.split(":", 1)[0]
    return any(head == f"{k} {n}" or head.startswith(f"{k} {n} ") for k in kinds for n in names) or \
        head.split(" ", 1)[0] == "input"


SPLIT_WEIGHTS = 1 << 22      # a sink's synapse group above this many weights is validated in row blocks


def _row_block_sink(graph, name: str, syns: list) -> object | None:
    """The one synapse group into ``name`` when the group can be validated a block of rows at a time with
    exactly the whole group's verdict: it sends to no group, has one port fed by that synapse group alone,
    no parameters and a program of copies (the head). Its range is then the hull of its rows' ranges, so
    every check (widths, accumulator, weights, shapes) fails on the whole iff it fails on some block."""
    grp = graph.groups[name]
    into = [s for s in syns if s.dst == name]
    if len(grp.ports) != 1 or len(into) != 1 or grp.params or any(i.op != "copy" for i in grp.program):
        return None
    if any(s.src == name for s in graph.synapses.values()) or into[0].nnz <= SPLIT_WEIGHTS:
        return None
    return into[0]


def _blocks(grp, s):
    """(group, synapse group) of each block of rows of a sink and its one synapse group (views, no copies)."""
    from dataclasses import replace as rep

    step = max(1, SPLIT_WEIGHTS // max(1, s.shape[1]))
    for r0 in range(0, grp.size, step):
        r1 = min(grp.size, r0 + step)
        a, b = int(s.indptr[r0]), int(s.indptr[r1])
        g_k = rep(grp, name=f"{grp.name}#rows{r0}", size=r1 - r0)
        yield g_k, rep(s, name=f"{s.name}#rows{r0}", dst=g_k.name, shape=(r1 - r0, s.shape[1]),
                       indptr=s.indptr[r0:r1 + 1] - a, indices=s.indices[a:b], values=s.values[a:b])


def window_problems(graph, step, limits: dict) -> list[str]:
    """The problems of one step's groups and synapse groups, validated with the groups feeding them (at
    their declared widths: a superset of the ranges the whole graph gives them). A large sink such as the
    head is validated a block of rows at a time (``_row_block_sink``); its problems then name the block."""
    from mflc.ir.graph import Graph
    from mflc.ir.validate import problems

    own = set(step.groups)
    syns = [graph.synapses[n] for n in step.synapses]
    outside = [s.name for s in syns if s.dst not in own]
    if outside:
        raise Fallback(f"step {step.name} adds synapse group {outside[0]} into a group of another step")
    split = {n: s for n in step.groups if (s := _row_block_sink(graph, n, syns)) is not None}
    embed = step.name == "embedding"

    def window(groups, synapses):
        """A graph of these groups and synapse groups and the groups feeding them."""
        w = Graph(inputs=list(graph.inputs) if embed else [], host_tensors=dict(graph.host_tensors) if embed else {})
        for grp in groups:
            w.add_group(grp)
        for s in synapses:
            if s.src not in w.groups:
                w.add_group(graph.groups[s.src])
            w.add_synapse(s)
        return w

    windows = [window([graph.groups[n] for n in step.groups if n not in split],
                      [s for s in syns if s.dst not in split])]
    names = own | set(step.synapses)
    found = []
    for n, s in split.items():
        for g_k, s_k in _blocks(graph.groups[n], s):     # only the block's own problems (its source is checked above)
            found += [p for p in problems(window([g_k], [s_k]), **limits)
                      if _own(p, {g_k.name, s_k.name}, ("group", "synapse"))]
    return [p for p in problems(windows[0], **limits) if _own(p, names, ("group", "synapse"))] + found


def structure_problems(graph, limits: dict) -> list[str]:
    """Problems of the outputs and the recurrent state (the rest is checked window by window)."""
    from mflc.ir.graph import Graph
    from mflc.ir.validate import problems

    w = Graph(outputs=list(graph.outputs), state=dict(graph.state))
    for grp in graph.groups.values():
        w.add_group(grp)
    return [p for p in problems(w, **limits) if p.split(" ", 1)[0] in ("output", "state")]


def _steps(sm, quant_writer, ir_writer, limits: dict, trim=lambda: None) -> None:
    """Run the model's steps: write each step's tensors and synapse arrays, validate its window, keep its
    synapse groups light. ``trim()`` is called before the head's calibration starts."""
    g = sm.graph
    before_head = f"layer {sm.cfg.L - 2}" if sm.cfg.L > 1 else "embedding"
    for step in sm.steps():
        packed = {}                                   # id of a ternary tensor -> its 2-bit stored form
        for name, (v, dtype) in step.tensors.items():
            stored, enc = quant_writer.add(name, v, dtype)
            if enc == "ternary2":
                packed[id(v)] = stored
        found = window_problems(g, step, limits)
        if found:
            raise Fallback(f"{step.name}: the window check found {len(found)} possible problem(s), e.g. {found[0]}")
        for n in step.synapses:
            ir_writer.add_synapse(g.synapses[n], *_encoded(g.synapses[n], step.dense.get(n), packed))
            g.synapses[n] = light_synapse(g.synapses[n])
        head_next = step.name == before_head
        del packed, step                              # nothing of the step outlives it
        if head_next:
            trim()


def _encoded(s, dense, packed: dict) -> tuple[str, dict | None]:
    """(encoding, arrays) of a synapse group made from the dense ternary matrix ``dense``: its 2-bit block is
    the matrix's row-major 2-bit packing, so it is packed from the matrix (or taken from the quantized
    model's stored form of the same matrix) instead of from the CSR arrays; (encoding, None) otherwise."""
    from mflc.ir.serialize import synapse_encoding
    from mflc.ir.ternary import pack_dense

    enc = synapse_encoding(s)
    if enc != "ternary2" or dense is None:
        return enc, None
    blob = packed.get(id(dense))
    return enc, {f"syn/{s.name}/ternary2": blob if blob is not None else pack_dense(dense)}
    found = structure_problems(g, limits)
    if found:
        raise Fallback(f"the IR has {len(found)} problem(s), e.g. {found[0]}")


# glibc's mallopt parameters (malloc.h) and the values the layer-by-layer compile sets for its run.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 * 1024


@contextmanager
def reused_heap(limit: int = 1 << 30):
    """Keep freed large arrays in the heap for the next layer's, instead of returning them to the OS.

    Each layer makes the same large temporaries (a projection's float32 weights, their ternary form, CSR
    arrays); by default glibc maps every array above 32 MiB afresh and unmaps it when freed, so every
    layer pays again for zeroed pages (measured on the 2.7B on this machine: system time 6.3 s -> 1.9 s
    and wall time 33 s -> 14 s over the first four layers, peak memory 0.88 -> 1.0 GB). Where glibc's
    mallopt is not available this does nothing. Yields ``trim()``, which gives the kept memory back (before
    the head, whose arrays are of another size); the defaults are restored and the heap trimmed after."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, limit) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 * limit) == 1
    except (OSError, AttributeError):
        libc, ok = None, False
    try:
        yield (lambda: libc.malloc_trim(0)) if ok else (lambda: None)
    finally:
        if ok:
            libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
            libc.malloc_trim(0)


def stream_compile(model: Path, out: Path, cfg, weights, *, options, seqs, how: str, profile, system,
                   stage=lambda name: nullcontext()):
    """Compile float checkpoint ``model`` (its config and ``open_checkpoint`` tensors) into build ``out``
    layer by layer; returns (Build, report, graph without weights). ``stage(name)``: a context manager
    around each step (progress). Raises ``Fallback`` where only the whole-model path can decide, and the
    same MflcErrors as that path for bad input."""
    from mflc.build import Build, source_identity
    from mflc.compiler.chip.layout import check_layout, save_layout
    from mflc.compiler.chip.partition import fan_ins_fit
    from mflc.compiler.chip.place import layout_graph
    from mflc.compiler.chip.report import build_report
    from mflc.compiler.model.quantize import QuantOptions, QuantStreamWriter
    from mflc.compiler.model.stream import StreamingModel
    from mflc.compiler.model.tokenizer import copy_tokenizer
    from mflc.ir.serialize import StreamingGraphWriter

    opts = options or QuantOptions()
    sm = StreamingModel(cfg, weights, seqs, opts)
    limits = profile.ir_limits()
    held: dict = {}

    def fill(tmp: Path):
        """Every part of the build, step by step."""
        qw, iw = QuantStreamWriter(tmp / "quant"), StreamingGraphWriter(tmp / "ir")   # a failure: assemble removes tmp
        with stage("quantizing and lowering, layer by layer"), reused_heap() as trim:
            _steps(sm, qw, iw, limits, trim)
        g = sm.graph
        with stage("laying out on Loihi 2"):
            if not fan_ins_fit(g, profile):
                raise Fallback("a fan-in needs splitting into partial sums")
            placed, lay = layout_graph(g, profile, system)
            problems = check_layout(lay, placed, profile)
            if problems:
                raise FitError([f"layout check: {p}" for p in problems])
        with stage("writing"):
            qw.close(cfg, opts, sm.sites, sm.scalars, dict(sm.meta, calibration=how))
            copy_tokenizer(model, tmp / "quant")
            iw.close(g)
            pw = StreamingGraphWriter(tmp / "placed_ir")
            for s in placed.synapses.values():
                pw.add_synapse(s, "base")                  # no split: every synapse group is the IR's
            pw.close(placed, list(placed.host_tensors))
            save_layout(lay, tmp / "layout.json")
        held.update(graph=g, placed=placed, layout=lay)
        return lay.system, dict(cores=lay.totals()["cores"], chips=lay.n_chips, groups=len(g.groups))

    b = Build.assemble(out, fill, quantization=asdict(opts), source=source_identity(model),
                       hardware=profile.to_dict())
    rep = build_report(held["placed"], held["layout"], profile, source=dict(build=str(out)))
    return b, rep, held["graph"]

