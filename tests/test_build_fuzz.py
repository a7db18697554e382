"""Hypothesis fuzzing of the build artifact (tools/build.py): random damage to a compiled build must make
``verify``, ``ir``, ``generate`` and ``estimate`` fail with exit 1 and a message naming the damaged file, never a
traceback and never exit 0; with the manifest's hashes regenerated afterwards (``rehash_build``) ``verify``
must still fail on every change of meaning (the others only have to exit 0 or 1 cleanly).

Changes accepted as meaning-preserving (``verify`` may exit 0), and why:
  * build.json keys ``created``, ``mflc_version``, ``source`` (provenance / descriptive only:
    nothing in ``Build.checks`` recomputes them; build.json is not itself hashed), layout.json's ``meta``
    (a description of the placement method), quant.json's ``meta.calibration`` (a note saying what the
    calibration text was) and each site's ``amax`` (the calibrated maximum: with scale_method "max" the
    stored scale must follow from it, but an amax that rounds to the same scale changes nothing), and ``hardware.sources`` in build.json or layout.json (provenance notes, ignored
    by the layout check). Every other stored number (layout.json's usage, totals, graph, traffic; the
    manifest's summary) is recomputed by verify;
  * after a rehash, the whole build.json swapped for the other build's: it then differs only in
    provenance (same preset, quantization and hardware settings);
  * after a rehash, an extra file (it is then listed, but nothing reads it);
  * a truncation or flip that leaves a JSON file equal as JSON (e.g. only trailing whitespace removed), or
    a flip inside a safetensors header's padding that parses to the same header;
  * a file swapped for a byte-identical one of the other build (no change at all).
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from util import cli_run, rehash_build

# bounded for the default run; MFLC_FUZZ_EXAMPLES=500 for a long hunt
FUZZ = settings(max_examples=int(os.environ.get("MFLC_FUZZ_EXAMPLES", "12")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FILES = ["build.json", "layout.json", "ir/graph.json", "ir/graph.safetensors", "placed_ir/graph.json",
         "placed_ir/graph.safetensors", "quant/quant.json", "quant/quant.safetensors"]
JSONS = ["build.json", "layout.json", "ir/graph.json", "placed_ir/graph.json", "quant/quant.json"]
NOOP_MANIFEST_KEYS = {"created", "mflc_version", "source"}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzbuilds")
    for seed in (1, 2):
        cli_run("init", "--preset", "tiny", "--out", d / f"m{seed}", "--seed", str(seed))
        cli_run("compile", d / f"m{seed}", "--out", d / f"b{seed}")
    got = sorted(p.relative_to(d / "b1").as_posix() for p in (d / "b1").rglob("*") if p.is_file())
    assert got == sorted(FILES), got
    return d


def no_traceback(r, what):
    assert r.exception is None or isinstance(r.exception, SystemExit), (what, r.output, repr(r.exception))
    assert "Traceback" not in r.output, (what, r.output)


def run_all(b: Path, names: list[str], rehashed: bool, must_fail: bool):
    """verify, ir, generate and estimate on the damaged build ``b``; ``names`` are strings one of which the
    error must contain. Without a rehash all four must fail; with one, only verify checks semantics."""
    cmds = [("verify", b, "--tokens", "2"), ("ir", b), ("generate", b, "--max-new-tokens", "1"), ("estimate", b)]
    for i, args in enumerate(cmds):
        r = cli_run(*args, ok=False)
        no_traceback(r, args)
        if must_fail and (i == 0 or not rehashed):
            assert r.exit_code == 1, (args, names, r.output)
            assert any(n in r.output for n in names), (args, names, r.output)
        else:
            assert r.exit_code in (0, 1), (args, r.output)


def fresh(builds, tmp: str, name="b1") -> Path:
    dst = Path(tmp) / name
    shutil.copytree(builds / name, dst)
    return dst


def descriptive_keys_dropped(rel: str, doc):
    """``doc`` without the keys nothing checks because they only describe (see the module docstring)."""
    if not isinstance(doc, dict):
        return doc
    d = dict(doc)
    if rel == "quant/quant.json" and isinstance(d.get("meta"), dict):
        d["meta"] = {k: v for k, v in d["meta"].items() if k != "calibration"}
    if rel == "quant/quant.json" and isinstance(d.get("sites"), dict):
        d["sites"] = {n: ({k: v for k, v in x.items() if k != "amax"} if isinstance(x, dict) else x)
                      for n, x in d["sites"].items()}
    if rel in ("build.json", "layout.json"):
        if isinstance(d.get("hardware"), dict):
            d["hardware"] = {k: v for k, v in d["hardware"].items() if k != "sources"}
        for k in (NOOP_MANIFEST_KEYS if rel == "build.json" else {"meta"}):
            d.pop(k, None)
    return d


def same_json(a: bytes, b: bytes, rel: str = "") -> bool:
    """Equal as JSON, up to the descriptive keys of ``rel``."""
    try:
        return descriptive_keys_dropped(rel, json.loads(a)) == descriptive_keys_dropped(rel, json.loads(b))
    except (ValueError, UnicodeDecodeError):
        return False


def names_for(rel: str) -> list[str]:
    return [rel, Path(rel).name] if rel == "build.json" else [rel, Path(rel).parent.name + "/", "build.json"]


# ---- 1. truncation ---------------------------------------------------------------------------------------
@FUZZ
@given(rel=st.sampled_from(FILES), frac=st.floats(0, 1, exclude_max=True), rehash=st.booleans())
def test_truncated_file(builds, rel, frac, rehash):
    with tempfile.TemporaryDirectory() as tmp:
        b = fresh(builds, tmp)
        p = b / rel
        data = p.read_bytes()
        new = data[:int(len(data) * frac)]
        p.write_bytes(new)
        if rehash and rel != "build.json":
            rehash_build(b)
        noop = rel.endswith(".json") and same_json(data, new, rel) and (rehash or rel == "build.json")
        # build.json is not hashed: editing it is a "rehashed" edit (ir and estimate read only its structure)
        run_all(b, names_for(rel), rehash or rel == "build.json", must_fail=not noop)


# ---- 2. flipped bytes ------------------------------------------------------------------------------------
def flip_is_noop(old: bytes, new: bytes) -> bool:
    """A flip inside a safetensors header's trailing padding (spaces) that still parses to the same header."""
    n = int.from_bytes(old[:8], "little")
    if new[:8] != old[:8] or new[8 + n:] != old[8 + n:]:
        return False
    return same_json(old[8:8 + n], new[8:8 + n])


@FUZZ
@given(rel=st.sampled_from(FILES), data=st.data(), rehash=st.booleans())
def test_flipped_bytes(builds, rel, data, rehash):
    with tempfile.TemporaryDirectory() as tmp:
        b = fresh(builds, tmp)
        p = b / rel
        old = p.read_bytes()
        buf = bytearray(old)
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= data.draw(st.integers(1, 255))
        new = bytes(buf)
        p.write_bytes(new)
        if rehash and rel != "build.json":
            rehash_build(b)
        noop = new == old or ((rehash or rel == "build.json") and (
            (rel.endswith(".json") and same_json(old, new, rel)) or (rel.endswith(".safetensors") and flip_is_noop(old, new))))
        # build.json is not hashed: editing it is a "rehashed" edit (ir and estimate read only its structure)
        run_all(b, names_for(rel), rehash or rel == "build.json", must_fail=not noop)


# ---- 3. dropped / retyped JSON keys ----------------------------------------------------------------------
def paths_of(v, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(v, dict):
        for k, x in v.items():
            out += paths_of(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v[:4]):          # a few elements of long lists suffice
            out += paths_of(x, prefix + (i,))
    return out


@FUZZ
@given(rel=st.sampled_from(JSONS), data=st.data(), rehash=st.booleans())
def test_json_key_dropped_or_retyped(builds, rel, data, rehash):
    with tempfile.TemporaryDirectory() as tmp:
        b = fresh(builds, tmp)
        p = b / rel
        doc = json.loads(p.read_text())
        path = data.draw(st.sampled_from(paths_of(doc)), label="path")
        how = data.draw(st.sampled_from(["delete", "none", "string", "list"]), label="how")
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        old = parent[path[-1]]
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = {"none": None, "string": "fuzz", "list": [1, "x"]}[how]
        p.write_text(json.dumps(doc))
        if rehash and rel != "build.json":
            rehash_build(b)
        if how != "delete" and parent[path[-1]] == old:
            return
        noop = (rel == "quant/quant.json" and (path[:2] == ("meta", "calibration")
                                                or (path[0] == "sites" and path[-1] == "amax" and how != "delete"))) or rel in ("build.json", "layout.json") and (
            path[0] in (NOOP_MANIFEST_KEYS if rel == "build.json" else {"meta"})
            or (path[0] == "hardware" and len(path) > 1 and path[1] == "sources"))
        # build.json is not hashed, so editing it is already a "rehashed" edit: ir and generate read only the
        # manifest's structure, verify must catch the rest
        run_all(b, names_for(rel) + [str(path[-1])], rehash or rel == "build.json", must_fail=not noop)


# ---- 4. a file swapped with the other build's --------------------------------------------------------------
@FUZZ
@given(rel=st.sampled_from(FILES), rehash=st.booleans())
def test_file_swapped_with_other_build(builds, rel, rehash):
    with tempfile.TemporaryDirectory() as tmp:
        b = fresh(builds, tmp)
        other = (builds / "b2" / rel).read_bytes()
        if other == (b / rel).read_bytes():
            return
        (b / rel).write_bytes(other)
        if rehash:
            rehash_build(b)
        run_all(b, names_for(rel), rehash, must_fail=not (rehash and rel == "build.json"))


# ---- 5. an extra file, a deleted file --------------------------------------------------------------------
@FUZZ
@given(where=st.sampled_from(["", "ir/", "placed_ir/", "quant/", "newdir/"]),
       name=st.sampled_from(["extra.bin", "graph2.json", "notes.txt", "quant.json.bak"]), rehash=st.booleans())
def test_extra_file(builds, where, name, rehash):
    with tempfile.TemporaryDirectory() as tmp:
        b = fresh(builds, tmp)
        rel = where + name
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(b"fuzz\n")
        if rehash:
            rehash_build(b)
        run_all(b, [rel, name], rehash, must_fail=not rehash)


@FUZZ
@given(rel=st.sampled_from(FILES), rehash=st.booleans())
def test_deleted_file(builds, rel, rehash):
    with tempfile.TemporaryDirectory() as tmp:
        b = fresh(builds, tmp)
        (b / rel).unlink()
        if rehash and rel != "build.json":
            rehash_build(b)
        run_all(b, names_for(rel), rehash, must_fail=True)
