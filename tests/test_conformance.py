"""Conformance vectors: written from a build, they describe themselves, reach corner cases and report
which; ``check`` passes mflc's own executors and a faithful results file, and names the site of one
changed integer; a damaged vector set or results file is named."""
from __future__ import annotations

import json

import pytest

from mflc.spec.conformance import Budget, ConformanceError, check, load_index, write
from mflc.spec.coverage import measure
from mflc.ir.errors import MflcError
from mflc.spec.trace import Trace

from util import cli_run

SMALL = Budget(random=6, repeated=6, length=12, climb_tokens=6, climb_sample=6)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    d = tmp_path_factory.mktemp("conf")
    cli_run("init", "--preset", "tiny", "--out", d / "m", "--seed", "5")
    cli_run("compile", d / "m", "--out", d / "b")
    write(d / "b", d / "v", SMALL)
    return d


def test_vector_set_describes_itself(vectors):
    idx = load_index(vectors / "v")
    assert idx["format"] == "mflc-conformance" and set(idx["model"]) == {"quant/quant.json", "quant/quant.safetensors"}
    assert idx["sequences"] and all(s["purpose"] for s in idx["sequences"])
    exp = Trace.load(vectors / "v" / "expected.safetensors")
    assert [s["tokens"] for s in exp.sequences] == [s["tokens"] for s in idx["sequences"]]
    assert "logits" in exp.values and "L0.gn" in exp.values
    cov = idx["coverage"]
    for cat in ("table entries", "saturation ends per op", "rounding ties per op", "rsqrt table entries"):
        assert 0 < cov[cat]["reached"] <= cov[cat]["usable"] <= cov[cat]["total"], cat
        assert cov[cat]["usable"] + cov[cat]["unreachable_proven"] == cov[cat]["total"], cat
        assert cov[cat]["reached_not_usable"] == 0, cat


def test_coverage_is_the_union_of_the_chosen_sequences(vectors):
    """The reported coverage is recomputed from the expected trace, sequence by sequence."""
    from mflc.compiler.model.quantize import QuantizedModel

    from mflc.spec import op_vectors
    from mflc.spec.conformance import empty_coverage

    qm = QuantizedModel.load(vectors / "v" / "quant")
    exp = Trace.load(vectors / "v" / "expected.safetensors")
    total, usable = empty_coverage(qm)
    for s in exp.sequences:
        rows = slice(s["start"], s["start"] + len(s["tokens"]))
        total.add(measure(qm, {k: v[rows] for k, v in exp.values.items()}))
    ops = op_vectors.build(qm, total, usable)
    idx = load_index(vectors / "v")
    assert total.report() == idx["coverage"] and ops == idx["op_vectors"]


def test_coverage_finds_a_planted_tie_and_saturation(vectors):
    from mflc.compiler.model.quantize import QuantizedModel
    from mflc.ir import fixedpoint as fp

    qm = QuantizedModel.load(vectors / "v" / "quant")
    exp = Trace.load(vectors / "v" / "expected.safetensors")
    vals = {k: v[:1].copy() for k, v in exp.values.items()}
    vals["L0.r"][0, 3] = fp.smax(qm.bits("L0.r"))
    got = measure(qm, vals).items
    assert ("sat", "L0.r", "max") in got and ("sat-op", "add_sat", "max") in got
    s = qm.s("s.L0.res_r")
    if s > 0 and qm.s("M.L0.res_r") == 1:
        vals["L0.r"][0, 3] = 1 << (s - 1)         # exactly half an LSB of the alignment's shift
        assert ("tie", "L0.res_r") in measure(qm, vals).items


@pytest.mark.parametrize("engine", ["int-model", "ir-reference", "engine", "sequence"])
def test_check_passes_mflc_executors(vectors, engine):
    res = check(vectors / "v", engine=engine)
    assert res.ok and res.difference is None and res.coverage["sites_compared"] > 0


def test_check_results_file_and_one_changed_integer(vectors, tmp_path):
    exp = Trace.load(vectors / "v" / "expected.safetensors")
    good = tmp_path / "good.safetensors"
    Trace("my-fpga", exp.sequences, dict(exp.values)).save(good)
    r = cli_run("conformance", "check", vectors / "v", "--results", good, "--json")
    assert json.loads(r.stdout)["ok"] is True
    vals = {k: v.copy() for k, v in exp.values.items()}
    row = exp.sequences[-1]["start"] + 2
    vals["L1.z"][row, 5] += 1
    bad = tmp_path / "bad.safetensors"
    Trace("my-fpga", exp.sequences, vals).save(bad)
    r = cli_run("conformance", "check", vectors / "v", "--results", bad, "--json", ok=False)
    d = json.loads(r.stdout)
    assert r.exit_code == 1 and d["ok"] is False
    f = d["first_difference"]
    assert (f["sequence"], f["token"], f["site"], f["index"]) == (exp.sequences[-1]["name"], 2, "L1.z", 5)
    r = cli_run("conformance", "check", vectors / "v", "--results", bad, ok=False)
    assert r.exit_code == 1 and "site L1.z, index 5" in r.output


def test_only_logits_is_enough_and_partial_sites_are_reported(vectors, tmp_path):
    exp = Trace.load(vectors / "v" / "expected.safetensors")
    p = tmp_path / "logits.safetensors"
    Trace("gpu", exp.sequences, {"logits": exp.values["logits"]}).save(p)
    res = check(vectors / "v", results=p)
    assert res.ok and res.coverage["sites_compared"] == 1 and "L0.x" in res.coverage["sites_not_in_results"]


def test_damage_is_named(vectors, tmp_path):
    import shutil

    v = tmp_path / "v"
    shutil.copytree(vectors / "v", v)
    exp = Trace.load(v / "expected.safetensors")
    other = tmp_path / "other.safetensors"
    Trace("x", [dict(s, tokens=[0] * len(s["tokens"])) for s in exp.sequences], dict(exp.values)).save(other)
    with pytest.raises(MflcError, match="ran other tokens"):
        check(v, results=other)
    Trace("x", exp.sequences, {"nonsense": exp.values["logits"]}).save(other)
    with pytest.raises(ConformanceError, match="share no site"):
        check(v, results=other)
    with pytest.raises(ConformanceError, match="exactly one of"):
        check(v)
    raw = bytearray((v / "quant" / "quant.safetensors").read_bytes())
    raw[-1] ^= 1
    (v / "quant" / "quant.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ConformanceError, match="quant.safetensors: content differs"):
        check(v, engine="int-model")
    r = cli_run("conformance", "check", tmp_path / "nowhere", "--engine", "int-model", ok=False)
    assert r.exit_code == 1 and "not a conformance vector set" in r.output


def test_cli_write_json(vectors, tmp_path):
    r = cli_run("conformance", "write", vectors / "b", "--out", tmp_path / "w", "--candidates", "3", "--length", "6", "--json")
    d = json.loads(r.stdout)
    assert d["sequences"] >= 1 and d["coverage"]["rsqrt table entries"]["total"] == 48
    r = cli_run("conformance", "write", vectors / "b", "--out", tmp_path / "w2", "--candidates", "0", ok=False)
    assert r.exit_code == 1 and "--candidates must be in" in r.output
    r = cli_run("conformance", "check", tmp_path / "w", "--engine", "int-model")
    assert "PASS" in r.output
