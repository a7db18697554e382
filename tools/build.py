"""A build is one artifact: the directory ``mflc compile`` writes, owned by the ``Build`` type.

Layout on disk::

    BUILD/
      build.json        manifest, written last: format + version, mflc version, source identity,
                        quantization and hardware settings, and a SHA-256 of every other file
      quant/            the quantized model (quant.json + quant.safetensors [+ tokenizer files])
      ir/               the unsplit IR, exactly ``lower(quant)``
      placed_ir/        the fan-in split IR the layout refers to
      layout.json       which core of which chip holds which neurons and synapse rows

Writing is atomic: the build is assembled in a hidden sibling directory and renamed into place only
when complete, so an interrupted or failed compile leaves the earlier build (or nothing), never a
mixture. Loading checks the manifest and every hash and names the first file that differs; the
semantic checks (``Build.checks``) recompute everything else from the integers, so a hand-edited build
whose hashes were regenerated still fails on each semantic error.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mflc.ir.errors import MflcError
from mflc.ir.schema import check_format, read_json

FORMAT = "mflc-build"
VERSION = 1
MANIFEST = "build.json"
PARTS = ("quant", "ir", "placed_ir", "layout.json")
_HASH_CHUNK = 1 << 22


class BuildError(MflcError):
    """A build directory is missing, incomplete, of another version, or differs from its manifest."""


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in chunks so multi-GB weight files need no memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files_under(root: Path) -> list[str]:
    """Every regular file below ``root`` (relative POSIX paths, sorted), the manifest excluded."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in filenames:
            rel = (Path(dirpath) / n).relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def _combined_sha256(hashes: dict[str, str]) -> str:
    """One SHA-256 over named file hashes: ``name \\0 sha256 \\n`` for each name in sorted order."""
    h = hashlib.sha256()
    for n in sorted(hashes):
        h.update(n.encode() + b"\0" + hashes[n].encode() + b"\n")
    return h.hexdigest()


def _tokenizer_hashes(model_dir: Path) -> dict[str, str]:
    """SHA-256 of each tokenizer file a model (or a build's quant/) has: they decide how text is tokenized."""
    from mflc.compiler.model.tokenizer import TOKENIZER_FILES, tokenizer_dir

    d = tokenizer_dir(model_dir)
    return {n: file_sha256(d / n) for n in TOKENIZER_FILES if d is not None and (d / n).is_file()}


def source_identity(model_dir: Path) -> dict:
    """What the build was made from: a hash over the model's config, weight and tokenizer files (or, for a
    quantized model, its quant files), each file's own hash (so ``verify --source`` can name the file that
    differs), and the tokenizer's hash alone (null without one: bytes), which ``verify`` ties to quant/."""
    d = Path(model_dir)
    names = sorted(p.name for p in d.iterdir() if p.is_file() and (
        p.name in ("config.json", "quant.json") or p.suffix == ".safetensors" or p.name.endswith(".safetensors.index.json")))
    per = {n: file_sha256(d / n) for n in names}
    tok = _tokenizer_hashes(d)
    per.update(tok)
    return dict(path=str(d), files=sorted(per), sha256=_combined_sha256(per), file_sha256=per,
                tokenizer=_combined_sha256(tok) if tok else None)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _normal(d):
    """A JSON value as it reads back from a file (tuples as lists), for comparing stored settings."""
    return json.loads(json.dumps(d, sort_keys=True, default=_json_default))


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` to ``dest``: an earlier build there is swapped out and removed; anything
    else at ``dest`` (a file, a non-empty folder that is not a build) is refused, never deleted."""
    if dest.exists() or dest.is_symlink():
        check_destination(dest)                 # nothing else may have appeared there meanwhile
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{int(time.time() * 1e6)}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)


def check_destination(dest: Path) -> None:
    """Fail before any work when ``dest`` can never receive a build."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise BuildError(f"{dest}: exists and is not a directory; choose another --out")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).is_file() and not (dest / "ir").is_dir():
        raise BuildError(f"{dest}: a non-empty directory that is not an mflc build; refusing to replace it "
                         "(choose another --out or empty it)")
    parent = dest.resolve().parent
    if not parent.is_dir():
        raise BuildError(f"{dest}: its parent directory {parent} does not exist")


@dataclass
class Check:
    """One of the checks ``verify`` makes: its name, whether it passed, and what it found."""

    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The check as JSON reports print it (at most 50 problems listed, all counted)."""
        return dict(name=self.name, ok=self.ok, detail=self.detail, seconds=round(self.seconds, 3),
                    problems=self.problems[:50], n_problems=len(self.problems))


class Build:
    """A compiled build directory, checked against its manifest when loaded."""

    def __init__(self, path: Path, manifest: dict, hash_seconds: float = 0.0):
        self.path = Path(path)
        self.manifest = manifest
        self.hash_seconds = hash_seconds
        self._cache: dict = {}

    # ---- writing ----------------------------------------------------------------------------------------
    @classmethod
    def write(cls, dest: Path, qm, graph, placed, layout, *, source: dict, hardware: dict,
              model_dir: Path | None = None, report: dict | None = None) -> "Build":
        """Write a complete build atomically and return it loaded (hashes checked)."""
        from dataclasses import asdict

        from mflc.compiler.chip.layout import save_layout
        from mflc.compiler.model.tokenizer import copy_tokenizer
        from mflc.ir.serialize import save_graph

        def fill(tmp: Path) -> None:
            """Every file of the build but the manifest."""
            qm.save(tmp / "quant")
            if model_dir is not None:
                copy_tokenizer(model_dir, tmp / "quant")
            save_graph(graph, tmp / "ir")
            save_graph(placed, tmp / "placed_ir", base=graph)   # only what splitting changed
            save_layout(layout, tmp / "layout.json")
            return layout.system, report or {}

        return cls.assemble(dest, fill, quantization=asdict(qm.options), source=source, hardware=hardware)

    @classmethod
    def assemble(cls, dest: Path, fill: Callable[[Path], tuple], *, quantization: dict, source: dict,
                 hardware: dict) -> "Build":
        """Write a build atomically: ``fill(tmp)`` writes every file but the manifest into a hidden sibling
        directory (``write``: the parts at once; the layer-by-layer compile: part by part as they are made)
        and returns (the layout's system, the summary); then the manifest with every file's hash is added
        and the directory renamed into place. A failure anywhere leaves the earlier build (or nothing) and
        no temporary directory."""
        from mflc import __version__

        dest = Path(dest)
        check_destination(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.resolve().parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)                # mkdtemp makes it private; a build is an ordinary folder
        try:
            system, report = fill(tmp)
            t0 = time.perf_counter()
            files = {rel: file_sha256(tmp / rel) for rel in _files_under(tmp)}
            manifest = dict(format=FORMAT, version=VERSION, mflc_version=__version__,
                            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            source=source, quantization=quantization, hardware=hardware,
                            system=system, summary=report or {}, files=files)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=_json_default) + "\n")
            hash_s = time.perf_counter() - t0
            _replace_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(dest, manifest, hash_s)

    # ---- loading ----------------------------------------------------------------------------------------
    @classmethod
    def read_manifest(cls, path: Path) -> dict:
        """The build's manifest, with a clear error for a missing directory, file or malformed JSON."""
        path = Path(path)
        if not path.exists():
            raise BuildError(f"{path}: no such build directory")
        if not path.is_dir():
            raise BuildError(f"{path}: not a directory (a build is the directory `mflc compile --out` writes)")
        mf = path / MANIFEST
        if not mf.is_file():
            have = [p for p in PARTS if (path / p).exists()]
            if have:
                raise BuildError(f"{path}: incomplete build: {MANIFEST} is missing (found {', '.join(have)}); "
                                 f"the compile was interrupted or made by an older mflc; recompile with "
                                 f"`mflc compile MODEL --out {path}`")
            raise BuildError(f"{path}: not a build directory (no {MANIFEST}; make one with `mflc compile MODEL --out {path}`)")
        m = read_json(mf, BuildError, object_required=True)
        check_format(m, FORMAT, VERSION, mf, BuildError, "build format version", otherwise="recompile")
        files = m.get("files")
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise BuildError(f"{mf}: field 'files' must map each file to its SHA-256")
        for key in ("source", "quantization", "hardware", "summary"):
            if not isinstance(m.get(key), dict):
                raise BuildError(f"{mf}: field {key!r} is missing or not an object")
        for key in ("created", "mflc_version", "system"):      # every key written: none passes for a default
            if key not in m:
                raise BuildError(f"{mf}: field {key!r} is missing")
        if m["system"] is not None and not isinstance(m["system"], str):
            raise BuildError(f"{mf}: field 'system' must be a system name or null, got {m['system']!r}")
        for part in PARTS:
            if not any(k == part or k.startswith(part + "/") for k in files):
                raise BuildError(f"{mf}: lists no file of {part}; the build is incomplete, recompile")
        return m

    @classmethod
    def load(cls, path: Path, check_hashes: bool = True) -> "Build":
        """Open a build: manifest, version, the set of files and (by default) every file's SHA-256."""
        path = Path(path)
        m = cls.read_manifest(path)
        t0 = time.perf_counter()
        if check_hashes:
            cls._check_files(path, m["files"])
        return cls(path, m, time.perf_counter() - t0)

    @staticmethod
    def _check_files(path: Path, files: dict) -> None:
        on_disk = _files_under(path)
        extra = sorted(set(on_disk) - set(files))
        missing = sorted(set(files) - set(on_disk))
        if missing:
            raise BuildError(f"{path / missing[0]}: listed in {MANIFEST} but missing from the build")
        if extra:
            raise BuildError(f"{path / extra[0]}: not part of the build (not listed in {MANIFEST}); remove it or recompile")
        for rel in sorted(files):
            if file_sha256(path / rel) != files[rel]:
                raise BuildError(f"{path / rel}: content differs from the build manifest "
                                 f"{MANIFEST} (SHA-256 mismatch); "
                                 "the file was changed after compile; recompile")

    # ---- parts ------------------------------------------------------------------------------------------
    def _get(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def quantized(self):
        """The build's quantized model, loaded once on first use."""
        from mflc.compiler.model.quantize import QuantizedModel

        return self._get("quant", lambda: QuantizedModel.load(self.path / "quant"))

    @property
    def graph(self):
        """The unsplit IR (``ir/``)."""
        from mflc.ir.serialize import load_graph

        return self._get("ir", lambda: load_graph(self.path / "ir"))

    @property
    def placed(self):
        """The fan-in split IR the layout places (``placed_ir/``)."""
        from mflc.ir.serialize import load_graph

        return self._get("placed", lambda: load_graph(self.path / "placed_ir", base=self.graph))

    @property
    def layout(self):
        """The build's layout, loaded once on first use."""
        from mflc.compiler.chip.layout import load_layout

        return self._get("layout", lambda: load_layout(self.path / "layout.json"))

    @property
    def hardware(self):
        """The hardware profile the build was compiled for, as recorded in its manifest."""
        from mflc.compiler.chip.hardware import HardwareProfile

        return HardwareProfile.from_dict(self.manifest["hardware"], f"{self.path / MANIFEST}: field 'hardware'")

    def core_map(self):
        """The core map of the build's layout, as the simulators take it."""
        from mflc.ir.coremap import CoreMap

        return CoreMap.from_layout(self.layout)

    def runnable(self):
        """(quantized model, placed IR, core map), once the placed IR validates and the layout places it
        legally: the checks an executor relies on (a hand-edited build with regenerated hashes would
        otherwise reach the engine and fail there with a bare KeyError). A BuildError names the first problem."""
        for c in (self._run("placed IR validates", lambda: self._validate(self.placed, "placed_ir", self.hardware)),
                  self._run("layout is legal", self._check_layout)):
            if not c.ok:
                more = f" (and {len(c.problems) - 1} more; `mflc verify` lists them)" if len(c.problems) > 1 else ""
                raise BuildError(f"{self.path}: check '{c.name}' failed: {c.detail}{more}")
        return self.quantized, self.placed, self.core_map()

    # ---- checks -----------------------------------------------------------------------------------------
    def checks(self) -> list[Check]:
        """Every static check of the build, in order; each stops at its own failure, never at another's."""
        out = [Check("integrity", True, f"{len(self.manifest['files'])} files match {MANIFEST} (SHA-256)",
                     self.hash_seconds)]
        out.append(self._run("ir validates", lambda: self._validate(self.graph, "ir", self.hardware)))
        out.append(self._run("placed IR validates", lambda: self._validate(self.placed, "placed_ir", self.hardware)))
        out.append(self._run("layout is legal", self._check_layout))
        out.append(self._run("placed IR is a partition of the IR", self._check_partition))
        out.append(self._run("same source", self._check_source))
        return out

    def _run(self, name: str, fn) -> Check:
        t0 = time.perf_counter()
        try:
            problems, detail = fn()
        except MflcError as e:
            problems, detail = [str(e)], ""
        return Check(name, not problems, detail if not problems else problems[0], time.perf_counter() - t0, problems)

    @staticmethod
    def _validate(g, what: str, hw):
        from mflc.ir.validate import problems

        found = problems(g, **hw.ir_limits())     # the build's hardware figures, not the defaults
        return [f"{what}/: {p}" for p in found], f"{len(g.groups)} groups, {len(g.synapses)} synapse groups"

    def _check_layout(self):
        from mflc.compiler.chip.layout import check_layout

        lay, hw = self.layout, self.hardware
        found = []
        figures = lambda d: {k: v for k, v in _normal(d).items() if k != "sources"}  # noqa: E731 (provenance notes)
        stored = self._stored_layout_hardware()
        if not isinstance(stored, dict) or figures(stored) != figures(self.manifest["hardware"]):
            found.append(f"layout.json: its hardware profile differs from the one in {MANIFEST}")
        if lay.system != self.manifest.get("system"):
            found.append(f"layout.json: system {lay.system!r} differs from {MANIFEST}'s {self.manifest.get('system')!r}")
        found += [f"layout.json: {p}" for p in check_layout(lay, self.placed, hw)]
        found += self._check_layout_summaries(lay)
        return found, f"{len(lay.cores):,} cores on {lay.n_chips} chip(s), every limit of {hw.name} recomputed from placed_ir/"

    def _check_layout_summaries(self, lay) -> list[str]:
        """The graph totals and per-token traffic that layout.json stores (and reports print), and the
        manifest's summary, recomputed from the IRs and the cores: a stored number is a claim, never an input."""
        from mflc.compiler.chip.place import layout_traffic

        found = []
        for what, stored, now in (("graph", lay.graph, lambda: self.placed.totals()),
                                  ("traffic", lay.traffic, lambda: layout_traffic(lay, self.placed))):
            again = _normal(now())
            if _normal(stored) != again:
                diff = sorted(k for k in set(again) | set(stored) if stored.get(k) != again.get(k))
                found.append(f"layout.json: field {what!r} disagrees with placed_ir/ and the cores for "
                             f"{', '.join(map(str, diff))} (stored {[stored.get(k) for k in diff]}, "
                             f"recomputed {[again.get(k) for k in diff]})")
        stored = self.manifest.get("summary")
        again = dict(cores=len(lay.cores), chips=lay.n_chips, groups=len(self.graph.groups))
        if stored != again:
            found.append(f"{MANIFEST}: field 'summary' is {stored!r}, but the build holds {again!r}")
        return found

    def _stored_layout_hardware(self) -> dict:
        """layout.json's hardware block as written, not as completed by defaults: a figure missing there
        must not pass for the default's value."""
        raw = json.loads((self.path / "layout.json").read_text())
        return raw.get("hardware") if isinstance(raw, dict) else None

    def _check_partition(self):
        from mflc.compiler.chip.partition_check import check_partition

        found = check_partition(self.graph, self.placed, self.hardware)
        return [f"placed_ir/: {p}" for p in found], "split pieces reassemble the IR's integers exactly"

    def _check_source(self):
        from dataclasses import asdict

        from mflc.compiler.model.lower import lower
        from mflc.ir.serialize import graph_difference

        qm = self.quantized
        found = []
        if asdict(qm.options) != self.manifest["quantization"]:
            found.append(f"quant/: quantization settings differ from {MANIFEST}'s")
        found += self._check_tokenizer()
        again = lower(qm, check=False)
        diff = graph_difference(again, self.graph)
        if diff:
            found.append(f"ir/: differs from the lowering of quant/ ({diff}): the IR and the quantized model "
                         "come from different sources, or one was edited")
        return found, "ir/ is exactly the lowering of quant/"

    def _check_tokenizer(self) -> list[str]:
        """quant/'s tokenizer files are the source's: one added, changed or removed after compile (even with
        the manifest re-hashed) would make generate tokenize differently from the model that was compiled."""
        src = self.manifest["source"]
        if "tokenizer" not in src:
            return [f"{MANIFEST}: field 'source' has no 'tokenizer' (written before the tokenizer was tied to the "
                    "source); recompile"]
        tok = _tokenizer_hashes(self.path / "quant")
        now = _combined_sha256(tok) if tok else None
        if now == src["tokenizer"]:
            return []
        if src["tokenizer"] is None:
            return [f"quant/: tokenizer file(s) {', '.join(sorted(tok))} are not the source's (it was compiled "
                    "without a tokenizer: bytes)"]
        if now is None:
            return ["quant/: the source's tokenizer files are missing (it was compiled with a tokenizer)"]
        want = src.get("file_sha256", {})
        changed = [n for n in sorted(tok) if want.get(n) != tok[n]] or sorted(tok)
        return [f"quant/: tokenizer file(s) {', '.join(changed)} differ from the source's (SHA-256)"]

    def check_source_dir(self, model_dir: Path) -> Check:
        """Whether the build was compiled from checkpoint ``model_dir``: its files' hashes against the
        manifest's, naming each file that differs, is missing or is extra."""
        t0 = time.perf_counter()
        name = f"compiled from {model_dir}"
        try:
            again = source_identity(Path(model_dir))
        except OSError as e:
            return Check(name, False, f"{model_dir}: cannot read it as a checkpoint ({e})", 0.0, [str(e)])
        src = self.manifest["source"]
        if again["sha256"] == src.get("sha256"):
            return Check(name, True, f"{len(again['files'])} source files match build.json's source hash",
                         time.perf_counter() - t0)
        was, now = src.get("file_sha256"), again["file_sha256"]
        if not isinstance(was, dict):
            found = [f"{model_dir}: its files' hash differs from build.json's source.sha256 (this build keeps no "
                     "per-file hashes; recompile to have the differing file named)"]
        else:
            found = [f"{model_dir}/{n}: differs from the file the build was compiled from (SHA-256)"
                     for n in sorted(set(was) & set(now)) if was[n] != now[n]]
            found += [f"{model_dir}/{n}: missing; the build was compiled with it" for n in sorted(set(was) - set(now))]
            found += [f"{model_dir}/{n}: not part of the source the build was compiled from" for n in sorted(set(now) - set(was))]
        found += self._config_differences(Path(model_dir))
        return Check(name, False, found[0], time.perf_counter() - t0, found)

    def _config_differences(self, model_dir: Path) -> list[str]:
        """The model-config fields in which a checkpoint differs from the build's quantized model."""
        cf = model_dir / "config.json"
        try:
            theirs = json.loads(cf.read_text())
            ours = json.loads((self.path / "quant" / "quant.json").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        if not isinstance(theirs, dict):
            return []
        keys = sorted(k for k in ours if k in theirs and theirs[k] != ours[k])
        return [f"{cf}: {k} is {theirs[k]!r}, the build's model has {ours[k]!r}" for k in keys]

    # ---- execution --------------------------------------------------------------------------------------
    def verify(self, tokens: int | list[int] = 16, seed: int = 0, progress=None, simulate: bool = True,
               engine: str = "engine", checked: list[Check] | None = None, stepwise: bool = False,
               source: Path | None = None) -> "BuildVerdict":
        """Every static check, then (when they pass) the placed network run by executor ``engine`` (a name of
        ``mflc.executors``) against the integer reference model on ``tokens`` (a count of random tokens
        drawn with ``seed``, or the token ids themselves). ``checked``: static checks already made (many
        sequences, one round of checks: ``verify(simulate=False)`` once, then ``checked=[]`` per sequence).
        ``stepwise``: both sides token by token (engine / sequence executors), not whole-sequence.
        ``source``: also check that the build was compiled from that checkpoint (``check_source_dir``)."""
        import numpy as np

        from mflc.compiler.model.lower import lower
        from mflc.executors import canonical, verify_executor

        engine = canonical(engine)
        checks = self.checks() if checked is None else list(checked)
        if source is not None:
            checks.append(self.check_source_dir(Path(source)))
        if not simulate or not all(c.ok for c in checks):
            return BuildVerdict(checks, None, [])
        qm = self.quantized
        toks = (np.random.default_rng(seed).integers(0, qm.cfg.vocab_size, tokens).tolist()
                if isinstance(tokens, int) else [int(t) for t in tokens])
        bad = [t for t in toks if not 0 <= t < qm.cfg.vocab_size]
        if bad:
            raise MflcError(f"token id {bad[0]} outside the vocabulary [0, {qm.cfg.vocab_size})")
        t0 = time.perf_counter()
        res = verify_executor(engine, qm, self.placed, toks, self.core_map(), progress=progress,
                              reference_graph=lambda: lower(qm), **(dict(stepwise=True) if stepwise else {}))
        checks.append(Check("bit-exact simulation", res.ok,
                            f"{res.compared_values:,} logits and states equal over {res.tokens} tokens" if res.ok
                            else res.divergence.describe(), time.perf_counter() - t0))
        return BuildVerdict(checks, res, toks)


@dataclass
class BuildVerdict:
    """What ``Build.verify`` found: each check in order, and the simulation's result when it ran."""

    checks: list[Check]
    simulation: object | None
    tokens: list[int]

    @property
    def ok(self) -> bool:
        """True only if every check passed and the simulation ran and matched."""
        return all(c.ok for c in self.checks) and self.simulation is not None and self.simulation.ok

    @property
    def failed(self) -> Check | None:
        """The first failed check, or None."""
        return next((c for c in self.checks if not c.ok), None)
