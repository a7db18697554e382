"""Traces: the same site names and integers from int-model and the IR executors, the file format read
back exactly, a damaged file named, and ``mflc trace`` on the command line."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mflc.build import Build
from mflc.spec.trace import Trace, TraceError, compare, record, site_order, trace_build

from util import cli_run

TOKENS = [3, 0, 17, 200, 5, 5]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("trace")
    cli_run("init", "--preset", "tiny", "--out", d / "m", "--seed", "3")
    cli_run("compile", d / "m", "--out", d / "b")
    return d / "b"


@pytest.fixture(scope="module")
def reference(build):
    return trace_build(build, TOKENS, "int-model")


def test_int_model_records_every_site_in_order(build, reference):
    b = Build.load(build)
    assert list(reference.values) == site_order(b.quantized.cfg)
    assert reference.values["L0.h"].shape == (len(TOKENS), b.quantized.cfg.d_attn)
    assert reference.bits["L0.o"] == b.quantized.bits("L0.o") and reference.bits["L0.h"] == 24
    assert not reference.missing


@pytest.mark.parametrize("engine", ["ir-reference", "engine", "sequence"])
def test_ir_executors_agree_under_the_same_names(build, reference, engine):
    tr = trace_build(build, TOKENS, engine)
    diff, cover = compare(reference, tr)
    assert diff is None, diff.describe()
    if engine == "ir-reference":            # every program value is visible: every site
        assert set(tr.values) == set(reference.values) and not tr.missing
    else:                                   # group outputs and states only; the fused ones are named
        assert {"L0.x", "L0.attn_norm", "L0.h", "L0.o", "L0.r", "L0.z", "final.x", "logits"} <= set(tr.values)
        assert set(tr.missing) == set(reference.values) - set(tr.values)
        assert "L0.mlgru" in tr.missing["L0.i"]
    assert cover["sites_compared"] == len(tr.values)


def test_one_changed_integer_is_located(reference):
    vals = {k: v.copy() for k, v in reference.values.items()}
    vals["L0.gn"][2, 7] += 1
    vals["L1.x"][4, 0] += 1                  # later token: the first difference is the earlier one
    diff, _ = compare(reference, Trace("other", reference.sequences, vals))
    assert (diff.token, diff.site, diff.index) == (2, "L0.gn", 7)
    assert diff.got == diff.expected + 1 and diff.token_id == TOKENS[2]


def test_file_round_trip_and_sequences(build, tmp_path):
    b = Build.load(build)
    tr = record(b.quantized, b.graph, [("a", [1, 2, 3]), ("b", [4, 5])], "int-model", "L1.*,logits")
    assert all(s.startswith("L1.") or s == "logits" for s in tr.values)
    p = tr.save(tmp_path / "t.safetensors")
    back = Trace.load(p)
    assert [s["start"] for s in back.sequences] == [0, 3] and back.engine == "int-model"
    assert all(np.array_equal(back.values[k], v) for k, v in tr.values.items())
    one = record(b.quantized, b.graph, [[4, 5]], "int-model", "logits")   # each sequence from zero state
    assert np.array_equal(one.values["logits"], tr.values["logits"][3:])
    header = p.read_bytes()
    n = struct.unpack("<Q", header[:8])[0]
    idx = json.loads(json.loads(header[8:8 + n])["__metadata__"]["mflc.spec.trace"])   # readable without safetensors
    assert idx["format"] == "mflc-trace" and idx["sequences"][1]["tokens"] == [4, 5]


def test_damaged_trace_files_are_named(reference, tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"nonsense")
    with pytest.raises(TraceError, match="not a readable safetensors"):
        Trace.load(p)
    save_file({"logits": np.zeros((2, 3), np.int64)}, str(p))
    with pytest.raises(TraceError, match="no 'mflc.spec.trace' index"):
        Trace.load(p)
    idx = reference.index()
    save_file({"logits": np.zeros((2, 3), np.int64)}, str(p), metadata={"mflc.spec.trace": json.dumps(idx)})
    with pytest.raises(TraceError, match=r"tensor 'logits': shape \[2, 3\], expected \[6, width\]"):
        Trace.load(p)
    save_file({"logits": np.zeros((6, 3), np.float32)}, str(p), metadata={"mflc.spec.trace": json.dumps(idx)})
    with pytest.raises(TraceError, match="dtype float32"):
        Trace.load(p)
    save_file({"logits": np.zeros((6, 3), np.int64)}, str(p), metadata={"mflc.spec.trace": json.dumps(dict(idx, version=9))})
    with pytest.raises(TraceError, match="trace version 9"):
        Trace.load(p)


def test_cli_trace(build, tmp_path):
    out = tmp_path / "t.safetensors"
    r = cli_run("trace", build, "--tokens", "3,0,17", "--sites", "L0.*", "--engine", "engine", "--out", out, "--json")
    js = json.loads(r.stdout)
    assert js["tokens"] == [3, 0, 17] and "L0.x" in js["sites"] and "L0.gn" in js["missing"]
    assert set(Trace.load(out).values) == set(js["sites"])
    r = cli_run("trace", build, "--text", "ab", "--out", out)
    assert "L0.attn_norm" in r.stdout
    for args, msg in ((("--tokens", "1,x"), "comma-separated token ids"), (("--tokens", "1,9999"), "outside the vocabulary"),
                      (("--tokens", "1", "--sites", "nope"), "matches no site"), ((), "exactly one of"),
                      (("--tokens", "1", "--engine", "warp"), "no such executor")):
        r = cli_run("trace", build, *args, "--out", out, ok=False)
        assert r.exit_code == 1 and msg in r.output, r.output
