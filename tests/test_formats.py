"""docs/formats.md names every key mflc's writers emit, and nothing they do not: each key table of the
page is compared with real files (the default model's build, the tiny preset without inner norms, a
trace). The documented 2-bit decoding is run against ir/ternary.py."""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

import specdoc
from mflc.build import Build
from mflc.ir import ternary

from util import cli_run

DOC = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
ROW = re.compile(r"^\|\s*(`.*?`(?:\s*,\s*`.*?`)*)\s*\|(.*)\|\s*$")


def doc_tables(text: str) -> dict[str, list[tuple[list[str], str, str]]]:
    """heading -> rows (key patterns, type, when) of the first key table under it."""
    out: dict[str, list] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            continue
        if heading and line.startswith("| key |"):
            out.setdefault(heading, [])
            continue
        m = ROW.match(line)
        if m and heading in out and not (out[heading] and out[heading][-1] == "END"):
            cells = [c.strip() for c in m.group(2).split("|")]
            out[heading].append((re.findall(r"`([^`]*)`", m.group(1)), cells[0], cells[1]))
    return out


def expand(pattern: str, layers: int) -> list[str]:
    """A documented key as regular expressions: <i> per layer, {a,b} alternatives, <name> any name."""
    parts = [pattern]
    while any("{" in p for p in parts):
        nxt = []
        for p in parts:
            m = re.search(r"\{([^{}]*)\}", p)
            if not m:
                nxt.append(p)
                continue
            nxt += [p[:m.start()] + alt + p[m.end():] for alt in m.group(1).split(",")]
        parts = nxt
    out = []
    for p in parts:
        for i in range(layers) if "<i>" in p else [None]:
            q = p.replace("<i>", str(i)) if i is not None else p
            out.append("^" + re.sub(r"\\?<[a-z_]+\\?>", ".+", re.escape(q)) + "$")
    return out


def check_keys(heading: str, actual, layers: int, inner: bool) -> None:
    rows = doc_tables(DOC.read_text())[heading]
    assert rows, f"docs/formats.md has no key table under {heading!r}"
    documented = []
    for keys, _, when in rows:
        for k in keys:
            for rx in expand(k, layers):
                documented.append((rx, when, "<" in rx or ".+" in rx))
    actual = set(actual)
    undocumented = sorted(a for a in actual if not any(re.match(rx, a) for rx, _, _ in documented))
    assert not undocumented, f"{heading}: written but not in docs/formats.md: {undocumented[:8]}"
    required = [rx for rx, when, wild in documented if when == "always" or (when == "inner" and inner)]
    absent = sorted(rx for rx in required if not any(re.match(rx, a) for a in actual))
    assert not absent, f"{heading}: documented as present but not written: {absent[:8]}"
    stray = sorted(rx for rx, when, _ in documented if when == "inner" and not inner and any(re.match(rx, a) for a in actual))
    assert not stray, f"{heading}: documented as inner-norm only but written without them: {stray[:8]}"


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    cli_run("compile", "--out", d / "default")
    cli_run("init", "--preset", "tiny", "--out", d / "tiny", "--seed", "4")
    cli_run("compile", d / "tiny", "--out", d / "noinner", "--remove-inner-norm")
    return {"default": (d / "default", True), "noinner": (d / "noinner", False)}


QUANT_HEADINGS = {"quant.json": lambda q: q, "quant.json: config": lambda q: q["config"],
                  "quant.json: options": lambda q: q["options"], "quant.json: sites": lambda q: q["sites"],
                  "quant.json: scalars": lambda q: q["scalars"], "quant.json: meta": lambda q: q["meta"]}


@pytest.mark.parametrize("which", ["default", "noinner"])
def test_quantized_model_keys(builds, which):
    path, inner = builds[which]
    q = json.loads((path / "quant" / "quant.json").read_text())
    L = q["config"]["num_hidden_layers"]
    for heading, part in QUANT_HEADINGS.items():
        check_keys(heading, part(q), L, inner)
    from safetensors import safe_open

    with safe_open(str(path / "quant" / "quant.safetensors"), "numpy") as f:
        names = list(f.keys())
    check_keys("quant.safetensors", names, L, inner)
    assert set(names) == set(q["tensor_dtypes"])


def _dims(q):
    c = q["config"]
    return dict(V=c["vocab_size"], d=c["hidden_size"], e=c["hidden_size"] * c["expand_ratio"], m=c["intermediate_size"])


def test_quant_tensor_types_and_shapes_as_documented(builds):
    """The type column (`int8 [e, d] (stored ternary2)`) against the loaded model's tensors."""
    path, _ = builds["default"]
    q = json.loads((path / "quant" / "quant.json").read_text())
    qm = Build.load(path).quantized
    dims = _dims(q)
    for keys, typ, when in doc_tables(DOC.read_text())["quant.safetensors"]:
        m = re.match(r"(int\d+) \[([^\]]*)\](?: \(stored ([^)]*)\))?", typ)
        assert m, typ
        for k in keys:
            for rx in expand(k, q["config"]["num_hidden_layers"]):
                for name in [n for n in q["tensor_dtypes"] if re.match(rx, n)]:
                    t = qm.t(name)
                    assert q["tensor_dtypes"][name] == m.group(1), name
                    if not m.group(2).startswith("2^"):
                        assert list(t.shape) == [dims[s.strip()] if s.strip() in dims else int(s.strip()[0]) * dims[s.strip()[1:]]
                                                 for s in m.group(2).split(",")], name
                    else:
                        site = re.search(r"bits\((.*)\)", m.group(2)).group(1).replace("<i>", name.split(".")[0][1:])
                        assert t.shape == (1 << qm.bits(site),), name
                    stored = q["storage"].get(name, m.group(1))
                    assert m.group(3) is None or stored in m.group(3).split(" or "), (name, stored)


@pytest.mark.parametrize("which", ["default", "noinner"])
def test_build_keys(builds, which):
    path, inner = builds[which]
    m = json.loads((path / "build.json").read_text())
    check_keys("build.json", m, 0, inner)
    check_keys("build.json: source", m["source"], 0, inner)
    for part in ("ir", "placed_ir"):
        g = json.loads((path / part / "graph.json").read_text())
        check_keys("ir/graph.json and placed_ir/graph.json", g, 0, inner)
        check_keys("graph.json: group entry", set().union(*(x.keys() for x in g["groups"])), 0, inner)
        check_keys("graph.json: synapse entry", set().union(*(x.keys() for x in g["synapses"])), 0, inner)
        from safetensors import safe_open

        with safe_open(str(path / part / "graph.safetensors"), "numpy") as f:
            check_keys("graph.safetensors", list(f.keys()), 0, inner)
    check_keys("layout.json", json.loads((path / "layout.json").read_text()), 0, inner)


def test_trace_keys(builds, tmp_path):
    path, inner = builds["default"]
    out = tmp_path / "t.safetensors"
    cli_run("trace", path, "--tokens", "1,2", "--out", out)
    header = out.read_bytes()
    n = int.from_bytes(header[:8], "little")
    head = json.loads(header[8:8 + n])
    check_keys("Traces", [k if k != "__metadata__" else '__metadata__["mflc.spec.trace"]' for k in head], 4, inner)
    check_keys("trace index", json.loads(head["__metadata__"]["mflc.spec.trace"]), 4, inner)


def test_documented_ternary_decoding(builds):
    """The page's bit order, run: every weight of a random block (with padding) and of a real one."""
    ns = specdoc.compile_defs(specdoc.parse(DOC.read_text()))
    weight = ns["ternary2_weight"]
    w = np.random.default_rng(0).integers(-1, 2, (7, 9)).astype(np.int8)     # 63 weights: padding in the last byte
    nz = w != 0
    codes = ternary.pack_csr(w.shape, np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int64),
                             np.nonzero(nz)[1].astype(np.int32), w[nz])
    assert [[weight(codes.tolist(), 9, r, c) for c in range(9)] for r in range(7)] == w.tolist()
    qm = Build.load(builds["default"][0]).quantized
    lazy, dense = qm.packed("W.L0.i"), qm.t("W.L0.i")
    codes = lazy.codes.tolist()
    rows, cols = dense.shape
    for r, c in itertools.product(range(0, rows, 7), range(cols)):
        assert weight(codes, cols, r, c) == dense[r, c]


def test_conformance_keys(builds, tmp_path):
    from mflc.spec.conformance import Budget, write

    path, inner = builds["noinner"]
    idx = write(path, tmp_path / "v", Budget(random=2, repeated=2, length=4, climb_tokens=2, climb_sample=2))
    check_keys("conformance.json", idx, 0, inner)
    assert json.loads((tmp_path / "v" / "conformance.json").read_text()) == json.loads(json.dumps(idx))
