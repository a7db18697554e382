"""Conformance vectors: a self-describing set of token sequences with the integers every site must hold,
for another implementation (microcode, FPGA, GPU, another simulator) to prove itself against.

``write`` copies the build's quantized model (the parameters, referenced by SHA-256 from the index),
chooses token sequences that reach as many corner cases of the arithmetic as it can find (mflc.spec.coverage:
table entries, saturation ends, rounding ties, rsqrt table entries), records the integer model's trace
of them (docs/formats.md, "Traces") and writes ``conformance.json`` with the sequences, what each was
chosen for, and the coverage reached. ``check`` compares a trace (from another implementation, or from
one of mflc's executors) with the expected one and names the first differing token, site and index.

Choosing sequences: random and single-token-repeated candidates are run, and kept greedily while they add
cases; then, for each saturating op whose ends are still unreached, a sequence is grown token by token
(hill climbing: of a sample of next tokens, keep the one that drives that op's sites closest to the end).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mflc.ir.errors import MflcError

FORMAT = "mflc-conformance"
VERSION = 1
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


def choose_sequences(qm, budget: Budget | None = None, progress=None):
    """(chosen [(name, tokens, purpose)], total Coverage): greedy over the candidates, then hill climbing
    toward each unreached saturation end."""
    from mflc.compiler.model.int_model import IntModel
    from mflc.spec.coverage import Coverage, measure, universe

    b = budget or Budget()
    im = IntModel(qm)
    total = Coverage(set(), universe(qm))
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
    for k, (op, end) in enumerate(_unreached_ends(total)):
        found = _climb(qm, im, op, end, b)
        if found is not None:
            cov = measure(qm, _trace_values(im, found))
            n = total.add(cov)
            if n:
                chosen.append((f"climb-{op}-{end}", found, f"drives {op} toward its {end} (adds {n} corner cases)"))
        if progress:
            progress(len(cands) + k + 1, len(cands) + 10)
    return chosen, total


def _unreached_ends(total) -> list[tuple[str, str]]:
    want = total.universe["saturation ends per op"] - total.items
    return sorted((op, end) for _, op, end in want)


def _closeness(qm, values: dict, op: str, end: str) -> float:
    """How near the op's sites came to the end: the largest value / limit over its sites (1.0: reached)."""
    from mflc.spec.coverage import saturating_sites, site_op
    from mflc.ir import fixedpoint as fp

    best = -np.inf
    for s in saturating_sites(qm):
        if s in values and site_op(s) == op:
            b = qm.bits(s)
            lim = fp.smax(b) if end == "max" else fp.smin(b)
            best = max(best, float(np.max(values[s] / lim)))
    return best


def _climb(qm, im, op: str, end: str, b: Budget) -> list[int] | None:
    """A sequence grown token by token, each the sampled next token that brings ``op``'s sites closest to
    ``end``; returned once the end is reached (or the best found after ``climb_tokens``)."""
    rng = np.random.default_rng(hash((op, end, b.seed)) & 0xFFFF)
    state, seq, best_score = im.init_state(), [], -np.inf
    for _ in range(b.climb_tokens):
        trial = []
        for t in rng.choice(qm.cfg.vocab_size, size=min(b.climb_sample, qm.cfg.vocab_size), replace=False):
            seen: dict = {}
            _, st = im.step(int(t), state, trace=lambda n, v: seen.__setitem__(n, np.array(v, np.int64)[None]))
            trial.append((_closeness(qm, seen, op, end), int(t), st))
        score, tok, state = max(trial, key=lambda x: x[0])
        seq.append(tok)
        best_score = max(best_score, score)
        if score >= 1.0:
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
    chosen, total = choose_sequences(qm, budget, progress)
    tr = record(qm, b.graph, [(name, toks) for name, toks, _ in chosen], "int-model")
    tr.save(out_dir / EXPECTED)
    index = dict(
        format=FORMAT, version=VERSION,
        model={f"quant/{n}": file_sha256(out_dir / "quant" / n) for n in sorted(p.name for p in (out_dir / "quant").iterdir())},
        build=dict(path=str(b.path), source_sha256=b.manifest["source"].get("sha256")),
        expected=dict(file=EXPECTED, sha256=file_sha256(out_dir / EXPECTED), engine="int-model",
                      sites=list(tr.values)),
        sequences=[dict(name=n, tokens=t, purpose=p) for n, t, p in chosen],
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
    for key in ("model", "expected", "sequences", "coverage"):
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
