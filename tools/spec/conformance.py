"""Conformance vectors: a self-describing set of token sequences with the integers every site must hold,
for another implementation (microcode, FPGA, GPU, another simulator) to prove itself against.

``write`` copies the build's quantized model (the parameters, referenced by SHA-256 from the index),
chooses token sequences that reach as many corner cases of the arithmetic as it can find (mflc.spec.coverage:
table entries, saturation ends, rounding ties, rsqrt table entries), records the integer model's trace
of them (docs/formats.md, "Traces") and writes ``conformance.json`` with the sequences, what each was
chosen for, and the coverage reached. ``check`` compares a trace (from another implementation, or from
one of mflc's executors) with the expected one and names the first differing token, site and index.

Choosing sequences: random and single-token-repeated candidates are run, and kept greedily while they add
cases; then, for each usable saturation end still unreached and each table whose usable entries beyond the
reached extremes are not reached, a sequence is grown token by token (hill climbing: of a sample of next
tokens, keep the one that drives the sites furthest that way). What the model can use comes from
mflc.spec.usable; the usable cases no sequence reaches are given as op-level vectors (mflc.spec.op_vectors).
"""
from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mflc.ir.errors import MflcError

FORMAT = "mflc-conformance"
VERSION = 2
INDEX = "conformance.json"
EXPECTED = "expected.safetensors"
QUANT_FILES = ("quant.json", "quant.safetensors")


class ConformanceError(MflcError):
    """A vector set that is missing, damaged or of another version, or results that cannot be compared."""


@dataclass
class Budget:
    """How hard ``write`` searches: candidates and their length, and the hill-climbing effort per target."""

    random: int = 64
    repeated: int = 64
    length: int = 32
    climb_tokens: int = 24
    climb_sample: int = 16
    seed: int = 0


def _trace_values(im, tokens) -> dict[str, np.ndarray]:
    got: dict[str, np.ndarray] = {}
    im.forward_sequence(tokens, trace=lambda n, v: got.__setitem__(n, np.array(v, np.int64)))
    return got


def _candidates(vocab: int, b: Budget) -> list[tuple[str, list[int]]]:
    rng = np.random.default_rng(b.seed)
    out = [(f"random-{k}", rng.integers(0, vocab, b.length).tolist()) for k in range(b.random)]
    reps = np.linspace(0, vocab - 1, min(b.repeated, vocab)).astype(int)
    return out + [(f"repeat-{t}", [int(t)] * b.length) for t in dict.fromkeys(reps.tolist())]


def empty_coverage(qm, graph=None):
    """(a Coverage with nothing reached, against what exists and what the model can use; the Usable)."""
    from mflc.spec.coverage import Coverage, universe
    from mflc.spec.usable import analyse_usable

    if graph is None:
        from mflc.compiler.model.lower import lower

        graph = lower(qm)
    u = universe(qm)
    usable = analyse_usable(qm, graph, u)
    return Coverage(set(), u, usable.items), usable


def choose_sequences(qm, budget: Budget | None = None, progress=None, graph=None):
    """(chosen [(name, tokens, purpose)], total Coverage, Usable): greedy over the candidates, then hill
    climbing toward each unreached saturation end the model can use."""
    from mflc.compiler.model.int_model import IntModel
    from mflc.spec.coverage import measure

    b = budget or Budget()
    im = IntModel(qm)
    total, usable = empty_coverage(qm, graph)
    runs = []
    cands = _candidates(qm.cfg.vocab_size, b)
    for k, (name, toks) in enumerate(cands):
        runs.append((name, toks, measure(qm, _trace_values(im, toks))))
        if progress:
            progress(k + 1, len(cands) + 10)
    chosen = []
    while runs:
        gains = [len(c.items - total.items) for _, _, c in runs]
        best = int(np.argmax(gains))
        if gains[best] == 0:
            break
        name, toks, cov = runs.pop(best)
        chosen.append((name, toks, f"adds {total.add(cov)} corner cases"))
    targets = _targets(qm, total)
    for k, (name, score, purpose, stop) in enumerate(targets):
        found = _climb(qm, im, name, score, stop, b)
        if found is not None:
            n = total.add(measure(qm, _trace_values(im, found)))
            if n:
                chosen.append((f"climb-{name}", found, f"{purpose} (adds {n} corner cases)"))
        if progress:
            progress(len(cands) + k + 1, len(cands) + len(targets))
    return chosen, total, usable


def _targets(qm, total) -> list[tuple[str, object, str]]:
    """(name, score(site values) -> float, purpose, score to stop at) of each hill climb: every usable saturation end per op
    not reached (score: the op's sites' largest value / limit, 1.0 at the end), then each table input
    whose usable entries beyond the extremes reached are not reached (score: that site's extreme)."""
    from mflc.spec.coverage import TABLES, saturating_sites, site_op
    from mflc.ir import fixedpoint as fp

    use = total.usable or total.universe
    out = []
    for _, op, end in sorted(use["saturation ends per op"] - total.items):
        sites = [(s, fp.smax(qm.bits(s)) if end == "max" else fp.smin(qm.bits(s)))
                 for s in saturating_sites(qm) if site_op(s) == op]
        out.append((f"{op}-{end}", lambda v, sites=sites: max(float(np.max(v[s] / lim)) for s, lim in sites if s in v),
                    f"drives {op} toward its {end}", 1.0))
    missed = use["table entries"] - total.items
    got = total.universe["table entries"] & total.items
    for i in range(qm.cfg.L):
        for table, kind in TABLES:
            key, site = f"L{i}.{table}", f"L{i}.{kind}"
            reached = [v for _, k, v in got if k == key] or [0]
            want = [v for _, k, v in missed if k == key]
            if any(v > max(reached) for v in want):
                out.append((f"{key}-max", lambda v, s=site: float(np.max(v[s])), f"drives {site} up for {key}'s top entries", np.inf))
            if any(v < min(reached) for v in want):
                out.append((f"{key}-min", lambda v, s=site: -float(np.min(v[s])), f"drives {site} down for {key}'s bottom entries", np.inf))
    return out


def _climb(qm, im, name: str, score, stop: float, b: Budget) -> list[int] | None:
    """A sequence grown token by token from the all-zero state, each the sampled next token that scores
    highest (``score`` of that token's site values); stops early once the score reaches ``stop``."""
    rng = np.random.default_rng(zlib.crc32(f"{name}/{b.seed}".encode()))
    state, seq = im.init_state(), []
    for _ in range(b.climb_tokens):
        trial = []
        for t in rng.choice(qm.cfg.vocab_size, size=min(b.climb_sample, qm.cfg.vocab_size), replace=False):
            seen: dict = {}
            _, st = im.step(int(t), state, trace=lambda n, v: seen.__setitem__(n, np.array(v, np.int64)[None]))
            trial.append((score(seen), int(t), st))
        best, tok, state = max(trial, key=lambda x: x[0])
        seq.append(tok)
        if best >= stop:
            break
    return seq if seq else None


def write(build, out_dir: Path, budget: Budget | None = None, progress=None) -> dict:
    """Write a vector set for ``build`` (a path or mflc.Build) into ``out_dir``; returns the index."""
    from mflc.build import Build, file_sha256
    from mflc.spec.trace import record

    b = build if isinstance(build, Build) else Build.load(Path(build))
    qm = b.quantized
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quant").mkdir(exist_ok=True)
    for f in sorted((b.path / "quant").iterdir()):
        if f.is_file():
            shutil.copyfile(f, out_dir / "quant" / f.name)
    from mflc.spec import op_vectors

    chosen, total, usable = choose_sequences(qm, budget, progress, b.graph)
    ops = op_vectors.build(qm, total, usable)
    tr = record(qm, b.graph, [(name, toks) for name, toks, _ in chosen], "int-model")
    tr.save(out_dir / EXPECTED)
    index = dict(
        format=FORMAT, version=VERSION,
        model={f"quant/{n}": file_sha256(out_dir / "quant" / n) for n in sorted(p.name for p in (out_dir / "quant").iterdir())},
        build=dict(path=str(b.path), source_sha256=b.manifest["source"].get("sha256")),
        expected=dict(file=EXPECTED, sha256=file_sha256(out_dir / EXPECTED), engine="int-model",
                      sites=list(tr.values)),
        sequences=[dict(name=n, tokens=t, purpose=p) for n, t, p in chosen],
        op_vectors=ops,
        coverage=total.report())
    (out_dir / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def load_index(vec_dir: Path) -> dict:
    """conformance.json, with every file it names present and unchanged (SHA-256)."""
    from mflc.build import file_sha256
    from mflc.ir.schema import read_json

    vec_dir = Path(vec_dir)
    jf = vec_dir / INDEX
    if not jf.is_file():
        raise ConformanceError(f"{vec_dir}: not a conformance vector set (no {INDEX}; write one with "
                               f"`mflc conformance write BUILD --out {vec_dir}`)")
    idx = read_json(jf, ConformanceError, object_required=True)
    if idx.get("format") != FORMAT:
        raise ConformanceError(f"{jf}: field 'format' is {idx.get('format')!r}, expected {FORMAT!r}")
    if idx.get("version") != VERSION:
        raise ConformanceError(f"{jf}: version {idx.get('version')!r} not supported (this mflc reads {VERSION})")
    for key in ("model", "expected", "sequences", "op_vectors", "coverage"):
        if key not in idx:
            raise ConformanceError(f"{jf}: field {key!r} is missing")
    files = dict(idx["model"], **{idx["expected"]["file"]: idx["expected"]["sha256"]})
    for rel, sha in files.items():
        p = vec_dir / rel
        if not p.is_file():
            raise ConformanceError(f"{p}: named in {INDEX} but missing")
        if file_sha256(p) != sha:
            raise ConformanceError(f"{p}: content differs from {INDEX} (SHA-256); the vector set was changed")
    return idx


@dataclass
class CheckResult:
    """What ``check`` found: pass/fail, the first difference, and what was compared."""

    ok: bool
    difference: object | None
    coverage: dict
    engine: str

    def to_dict(self) -> dict:
        """As ``--json`` prints it."""
        d = self.difference
        return dict(ok=self.ok, engine=self.engine, first_difference=None if d is None else dict(
            sequence=d.sequence, token=d.token, token_id=d.token_id, site=d.site, index=d.index,
            expected=d.expected, got=d.got, text=d.describe()), **self.coverage)


def check(vec_dir: Path, results: Path | None = None, engine: str | None = None) -> CheckResult:
    """Compare a results trace (``results``) or mflc executor ``engine``'s trace with the vectors."""
    from mflc.compiler.model.quantize import QuantizedModel
    from mflc.spec.trace import Trace, compare, record

    if (results is None) == (engine is None):
        raise ConformanceError("give exactly one of --results FILE and --engine NAME")
    vec_dir = Path(vec_dir)
    idx = load_index(vec_dir)
    want = Trace.load(vec_dir / idx["expected"]["file"])
    if results is not None:
        got = Trace.load(Path(results))
    else:
        from mflc.compiler.model.lower import lower
        from mflc.executors import spec

        qm = QuantizedModel.load(vec_dir / "quant")
        graph = lower(qm) if spec(engine).needs == "graph" else None
        got = record(qm, graph, [(s["name"], s["tokens"]) for s in want.sequences], engine)
    diff, cover = compare(want, got)
    if cover["sites_compared"] == 0:
        raise ConformanceError(f"the results share no site with the vectors (they have {', '.join(list(got.values)[:5])}); "
                               "name tensors by site (docs/formats.md, Traces)")
    return CheckResult(diff is None, diff, cover, got.engine)
