"""Traces: every site's integers, token by token, from any executor, under one set of names.

A trace is what another implementation compares itself with to find where it first differs. The names
are the integer model's sites (docs/fixed-point.md, "The integer HGRN-Bit block"): ``L0.x``,
``L0.attn_norm``, ``L0.i_in`` ... ``L0.mlp_out``, ``final.x``, ``final.norm``, ``head.in``, ``logits``.
``int-model`` records them from ``IntModel``'s trace hook; the IR executors from the neuron groups of the
build's unsplit IR (``ir/``) through ``SITE_VARS``, which says which program variable of which group
holds each site. The plain reference executor exposes every program value, so it records every site;
Engine and the whole-sequence executor expose only group outputs and the recurrent state, so the sites
that live inside a fused program (``i``, ``f``, ``hq``, ``gn``, ``attn_out``, ``a``, ``b``, ``mlp_out``)
are listed as not observable, with the group that holds them; any other executor records ``logits``
and the states.

On disk (docs/formats.md, "Traces") a trace is one safetensors file: one integer tensor per site (the
narrowest signed type that holds its values), shaped [tokens, width], the rows of all sequences one after the other, and the JSON index in the header's
``__metadata__["mflc.spec.trace"]``: format, version, engine, the sequences (name, token ids, first row)
and, per site, its width in bits and its length.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mflc.ir.errors import MflcError

FORMAT = "mflc-trace"
VERSION = 1
META_KEY = "mflc.spec.trace"

# program variable -> site kind, per group kind of the lowering (compiler/model/lower.py)
_NORM_GROUPS = ("attn_norm", "i_in", "f_in", "g_in", "o_in", "mlp_norm", "gate_in", "down_in")
SITE_VARS = {
    **{k: {"y": k} for k in _NORM_GROUPS},
    "mlgru": {"iq": "i", "fq": "f", "h": "h", "hq": "hq"},
    "g": {"gq": "g"},
    "gate": {"y": "gn", "o": "o"},
    "res1": {"aoq": "attn_out", "r": "r"},
    "glu": {"a": "a", "b": "b", "z": "z"},
    "res2": {"moq": "mlp_out", "x": "<next x>"},
}
_FINAL_VARS = {"embed": ("y", "L0.x"), "final.norm": ("y", "final.norm"), "head.in": ("y", "head.in"),
               "head": ("logits", "logits")}


class TraceError(MflcError):
    """A trace file that cannot be read as one, or a trace request that cannot be met."""


def site_order(cfg, inner: bool = True) -> list[str]:
    """Every traced site in execution order: the layers' sites, then the head's."""
    from mflc.compiler.model.structure import LAYER_SITES

    out = []
    for i in range(cfg.L):
        out += [f"L{i}.{k}" for k in LAYER_SITES if inner or not k.endswith("_in")]
    return out + ["final.x", "final.norm"] + (["head.in"] if inner else []) + ["logits"]


def ir_sites(graph, n_layers: int) -> dict[str, tuple[str, str]]:
    """site -> (group, program variable) in an IR made by the lowering."""
    out = {}
    for name, grp in graph.groups.items():
        if name in _FINAL_VARS:
            var, site = _FINAL_VARS[name]
            out[site] = (name, var)
            continue
        layer, _, kind = name.partition(".")
        if not (layer.startswith("L") and layer[1:].isdigit()) or kind not in SITE_VARS:
            continue
        i = int(layer[1:])
        for var, k in SITE_VARS[kind].items():
            site = (f"L{i + 1}.x" if i + 1 < n_layers else "final.x") if k == "<next x>" else f"L{i}.{k}"
            out[site] = (name, var)
    return out


@dataclass
class Trace:
    """Per-site integers of one or more token sequences (each from the all-zero state)."""

    engine: str
    sequences: list[dict]                          # {"name", "tokens", "start"}
    values: dict[str, np.ndarray]                  # site -> int64 [rows, width]
    bits: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)   # site -> why this engine cannot observe it

    @property
    def rows(self) -> int:
        """Tokens over all sequences."""
        return sum(len(s["tokens"]) for s in self.sequences)

    def index(self) -> dict:
        """The JSON index stored in the file's header."""
        return dict(format=FORMAT, version=VERSION, engine=self.engine, sequences=self.sequences,
                    sites={k: dict(bits=self.bits.get(k), width=int(v.shape[1])) for k, v in self.values.items()},
                    site_order=list(self.values), missing=self.missing)

    def save(self, path: str | Path) -> Path:
        """Write the trace as one safetensors file with its JSON index in the header."""
        from safetensors.numpy import save_file

        from mflc.ir.tensorfile import narrowest_int

        path = Path(path)
        arrays = {k: np.ascontiguousarray(v, dtype=narrowest_int(v) if v.size else np.int8) for k, v in self.values.items()}
        save_file(arrays, str(path), metadata={META_KEY: json.dumps(self.index(), sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """A trace file, checked: its index, every site's tensor, integer dtype, shape [rows, width]."""
        path = Path(path)
        if not path.is_file():
            raise TraceError(f"{path}: no such trace file")
        try:
            from safetensors import safe_open

            with safe_open(str(path), "numpy") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except TraceError:
            raise
        except Exception as e:          # safetensors raises several types for a damaged file
            raise TraceError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        return cls.from_parts(arrays, meta, str(path))

    @classmethod
    def from_parts(cls, arrays: dict, meta: dict, where: str) -> "Trace":
        """A trace from its tensors and header metadata, each checked against the index."""
        if META_KEY not in meta:
            raise TraceError(f"{where}: the header's __metadata__ has no {META_KEY!r} index (docs/formats.md, Traces)")
        try:
            idx = json.loads(meta[META_KEY])
        except json.JSONDecodeError as e:
            raise TraceError(f"{where}: __metadata__[{META_KEY!r}] is not JSON: {e}") from None
        if not isinstance(idx, dict) or idx.get("format") != FORMAT:
            raise TraceError(f"{where}: index field 'format' is {idx.get('format') if isinstance(idx, dict) else idx!r}, expected {FORMAT!r}")
        if idx.get("version") != VERSION:
            raise TraceError(f"{where}: trace version {idx.get('version')!r} not supported (this mflc reads {VERSION})")
        seqs = _check_sequences(idx.get("sequences"), where)
        rows = sum(len(s["tokens"]) for s in seqs)
        values = {}
        for k, a in arrays.items():
            if a.dtype.kind not in "iu":
                raise TraceError(f"{where}: tensor {k!r}: dtype {a.dtype}, expected an integer type")
            if a.ndim != 2 or a.shape[0] != rows:
                raise TraceError(f"{where}: tensor {k!r}: shape {list(a.shape)}, expected [{rows}, width] "
                                 f"(one row per token of the index's sequences)")
            values[k] = a.astype(np.int64)
        order = [k for k in idx.get("site_order", []) if k in values] + sorted(set(values) - set(idx.get("site_order", [])))
        sites = idx.get("sites") or {}
        return cls(str(idx.get("engine", "?")), seqs, {k: values[k] for k in order},
                   {k: v.get("bits") for k, v in sites.items() if isinstance(v, dict)}, dict(idx.get("missing") or {}))


def _check_sequences(seqs, where: str) -> list[dict]:
    if not isinstance(seqs, list) or not seqs:
        raise TraceError(f"{where}: index field 'sequences' must be a non-empty list")
    start = 0
    out = []
    for k, s in enumerate(seqs):
        if not isinstance(s, dict) or not isinstance(s.get("tokens"), list) or \
                not all(isinstance(t, int) and not isinstance(t, bool) for t in s["tokens"]):
            raise TraceError(f"{where}: sequences[{k}] must be an object with a list of integer 'tokens'")
        if s.get("start", start) != start:
            raise TraceError(f"{where}: sequences[{k}].start is {s.get('start')}, expected {start} (rows follow each other)")
        out.append(dict(name=str(s.get("name", k)), tokens=list(s["tokens"]), start=start))
        start += len(s["tokens"])
    return out


def select_sites(order: list[str], patterns: str | None) -> list[str]:
    """The sites matching any of the comma-separated glob ``patterns`` (None or "*": all), in order."""
    if not patterns or patterns.strip() == "*":
        return list(order)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [s for s in order if any(fnmatch.fnmatchcase(s, p) for p in pats)]
    if not chosen:
        raise TraceError(f"--sites {patterns!r} matches no site; sites are named like {', '.join(order[:4])} ... "
                         f"{order[-1]} (glob patterns, comma-separated)")
    return chosen


# ---- recording ----------------------------------------------------------------------------------------
def _record_int_model(qm, tokens) -> dict[str, np.ndarray]:
    from mflc.compiler.model.int_model import IntModel

    got: dict[str, np.ndarray] = {}
    IntModel(qm).forward_sequence(tokens, trace=lambda n, v: got.__setitem__(n, np.array(v, np.int64)))
    return got


def _record_reference(graph, sites: dict, tokens) -> dict[str, np.ndarray]:
    """Every site from the plain IR interpreter's program values."""
    from mflc.simulator.reference import ReferenceExecutor

    want = {}
    for site, (grp, var) in sites.items():
        want.setdefault(grp, []).append((var, site))
    rows: dict[str, list] = {s: [None] * len(tokens) for s in sites}

    def probe(k, name, env):
        """Copy the program values that are sites."""
        for var, site in want.get(name, ()):
            rows[site][k] = np.array(env[var], np.int64)
    ReferenceExecutor(graph, check=False).run(tokens, "sequential", probe=probe)
    return {s: np.stack(v) for s, v in rows.items() if v and v[0] is not None}


def _record_outputs(ex, graph, sites: dict, tokens) -> dict[str, np.ndarray]:
    """The sites that are group outputs, from an executor's trace hook, plus the recurrent states."""
    by_group = {grp: site for site, (grp, var) in sites.items() if graph.groups[grp].output == var}
    rows: dict[str, list] = {s: [None] * len(tokens) for s in by_group.values()}

    def trace(t, k, name, out):
        """Keep the firings of groups whose output is a site."""
        if name in by_group:
            rows[by_group[name]][k] = np.array(out, np.int64)
    res = ex.run(tokens, trace=trace)
    got = {s: np.stack(v) for s, v in rows.items() if v and v[0] is not None}
    got.update({k: np.asarray(v, np.int64) for k, v in res.states.items()})
    return got


def _record_any(ex, tokens) -> dict[str, np.ndarray]:
    res = ex.run(tokens)
    got = {"logits": np.asarray(res.outputs["logits"], np.int64)}
    got.update({k: np.asarray(v, np.int64) for k, v in res.states.items()})
    return got


def _recorder(engine: str, qm, graph):
    """(function tokens -> {site: [T, width]}, {site: why not observable}) for executor ``engine``."""
    from mflc import executors as X

    name = X.canonical(engine)
    order = site_order(qm.cfg, not qm.options.remove_inner_norm)
    if name == "int-model":
        return (lambda toks: _record_int_model(qm, toks)), {}
    sites = ir_sites(graph, qm.cfg.L)
    if name == "ir-reference":
        return (lambda toks: _record_reference(graph, sites, toks)), {}
    if name in ("engine", "sequence"):
        reason = X.why_unavailable(name, graph)
        if reason:
            raise X.ExecutorUnavailable(f"--engine {name}: {reason}")
        seen = {s for s, (g, v) in sites.items() if graph.groups[g].output == v} | set(graph.state)
        missing = {s: f"inside group {sites[s][0]}'s fused program (variable {sites[s][1]}); {name} exposes only "
                      f"group outputs and states; use ir-reference" for s in order if s not in seen and s in sites}

        def run(toks):
            """A fresh executor per sequence, so each starts from the all-zero state."""
            return _record_outputs(X.create(name, qm=qm, graph=graph), graph, sites, toks)
        return run, missing
    missing = {s: f"{name} exposes only logits and the recurrent states" for s in order
               if s != "logits" and not s.endswith(".h")}
    return (lambda toks: _record_any(X.create(name, qm=qm, graph=graph), toks)), missing


def record(qm, graph, sequences, engine: str = "int-model", sites: str | None = None) -> Trace:
    """The trace of ``sequences`` (lists of token ids, or (name, tokens) pairs), each from the all-zero
    state, on executor ``engine``, keeping the sites that match ``sites`` (comma-separated globs)."""
    from mflc.executors import canonical

    inner = not qm.options.remove_inner_norm
    order = site_order(qm.cfg, inner)
    keep = select_sites(order, sites)
    seqs = [s if isinstance(s, tuple) else (str(k), s) for k, s in enumerate(sequences)]
    for name, toks in seqs:
        bad = [t for t in toks if not 0 <= int(t) < qm.cfg.vocab_size]
        if bad:
            raise TraceError(f"sequence {name}: token id {bad[0]} outside the vocabulary [0, {qm.cfg.vocab_size})")
        if not toks:
            raise TraceError(f"sequence {name}: no tokens")
    run, missing = _recorder(engine, qm, graph)
    parts: dict[str, list] = {s: [] for s in keep}
    index, start = [], 0
    for name, toks in seqs:
        toks = [int(t) for t in toks]
        got = run(toks)
        for s in keep:
            if s in got:
                parts[s].append(got[s].reshape(len(toks), -1))
        index.append(dict(name=name, tokens=toks, start=start))
        start += len(toks)
    values = {s: np.concatenate(v) for s, v in parts.items() if len(v) == len(seqs)}
    bits = {s: _site_bits(qm, graph, s) for s in values}
    return Trace(canonical(engine), index, values, bits, {s: m for s, m in missing.items() if s in keep})


def _site_bits(qm, graph, site: str) -> int | None:
    """A site's declared width: the quantized model's, the state width for h, the head group's for logits."""
    if site == "logits":
        head = next((o.group for o in graph.outputs if o.name == "logits"), None) if graph is not None else None
        return graph.groups[head].out_bits if head else None
    try:
        return qm.bits(site)
    except MflcError:
        return None


def trace_build(build, tokens, engine: str = "int-model", sites: str | None = None) -> Trace:
    """``record`` on a build (a path or ``mflc.Build``): its quantized model and its unsplit IR."""
    from mflc.build import Build

    b = build if isinstance(build, Build) else Build.load(Path(build))
    seqs = tokens if tokens and isinstance(tokens[0], (list, tuple)) else [list(tokens)]
    return record(b.quantized, b.graph, seqs, engine, sites)


# ---- comparing ----------------------------------------------------------------------------------------
@dataclass
class Difference:
    """The first integer two traces disagree on, in token order, then site order, then element order."""

    sequence: str
    token: int                 # position in the sequence
    token_id: int
    site: str
    index: int
    expected: int
    got: int

    def describe(self) -> str:
        """One line naming where the traces first differ."""
        return (f"sequence {self.sequence}, token {self.token} (id {self.token_id}), site {self.site}, "
                f"index {self.index}: expected {self.expected}, got {self.got}")


def compare(expected: Trace, got: Trace) -> tuple[Difference | None, dict]:
    """(first difference or None, coverage): every site both traces hold, token by token. Raises a
    TraceError when the traces are of different token sequences or a shared site has another width."""
    e_seqs = [(s["name"], s["tokens"]) for s in expected.sequences]
    g_seqs = {s["name"]: s for s in got.sequences}
    for name, toks in e_seqs:
        if name not in g_seqs:
            raise TraceError(f"the results have no sequence {name!r} (they have {', '.join(g_seqs) or 'none'})")
        if g_seqs[name]["tokens"] != toks:
            raise TraceError(f"sequence {name!r}: the results ran other tokens than the vectors give")
    shared = [s for s in expected.values if s in got.values]
    for s in shared:
        if expected.values[s].shape[1] != got.values[s].shape[1]:
            raise TraceError(f"site {s}: width {got.values[s].shape[1]} in the results, {expected.values[s].shape[1]} expected")
    first = None
    for name, toks in e_seqs:
        e0, g0 = next(x["start"] for x in expected.sequences if x["name"] == name), g_seqs[name]["start"]
        for k in range(len(toks)):
            for s in shared:
                w, g = expected.values[s][e0 + k], got.values[s][g0 + k]
                if not np.array_equal(w, g):
                    i = int(np.flatnonzero(w != g)[0])
                    first = Difference(name, k, toks[k], s, i, int(w[i]), int(g[i]))
                    break
            if first:
                break
        if first:
            break
    cover = dict(sites_compared=len(shared), sites_expected=len(expected.values),
                 sites_not_in_results=[s for s in expected.values if s not in got.values],
                 values_compared=int(sum(expected.values[s].size for s in shared)))
    return first, cover
