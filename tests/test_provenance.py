"""A build's tokenizer is part of its source: adding or changing one (manifest re-hashed) fails verify;
``verify --source`` names the files and config fields in which another checkpoint differs; ``verify
--json`` prints a verdict with ``failed_check`` also when the build cannot be loaded."""
from __future__ import annotations

import json
import shutil

import pytest

from util import cli_run, rehash_build

TOKENIZER = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
             "pre_tokenizer": None, "post_processor": None, "decoder": None,
             "model": {"type": "WordLevel", "vocab": {**{chr(97 + i): i for i in range(26)}, "[UNK]": 26},
                       "unk_token": "[UNK]"}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("prov")
    for seed in (1, 2):
        cli_run("init", "--preset", "tiny", "--out", d / f"m{seed}", "--seed", str(seed))
    shutil.copytree(d / "m1", d / "m1tok")
    (d / "m1tok" / "tokenizer.json").write_text(json.dumps(TOKENIZER))
    cli_run("compile", d / "m1", "--out", d / "b1")
    cli_run("compile", d / "m1tok", "--out", d / "b1tok")
    return d


def _verdict(path, *args):
    r = cli_run("verify", path, "--tokens", "2", "--json", *args, ok=False)
    return r.exit_code, json.loads(r.stdout)


def _copy(models, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(models / name, dst)
    return dst


def test_manifest_records_the_tokenizer(models):
    with_tok = json.loads((models / "b1tok" / "build.json").read_text())["source"]
    without = json.loads((models / "b1" / "build.json").read_text())["source"]
    assert without["tokenizer"] is None and isinstance(with_tok["tokenizer"], str)
    assert "tokenizer.json" in with_tok["files"] and with_tok["sha256"] != without["sha256"]
    assert _verdict(models / "b1tok")[1]["ok"]


def test_added_tokenizer_fails_verify(models, tmp_path):
    b = _copy(models, tmp_path, "b1")
    (b / "quant" / "tokenizer.json").write_text(json.dumps(TOKENIZER))
    rehash_build(b)
    code, v = _verdict(b)
    assert code == 1 and v["failed_check"] == "same source"
    bad = next(c for c in v["checks"] if not c["ok"])
    assert "tokenizer.json" in bad["detail"] and "without a tokenizer" in bad["detail"]


def test_changed_or_removed_tokenizer_fails_verify(models, tmp_path):
    b = _copy(models, tmp_path, "b1tok")
    tok = dict(TOKENIZER, model=dict(TOKENIZER["model"], vocab={**TOKENIZER["model"]["vocab"], "a": 1, "b": 0}))
    (b / "quant" / "tokenizer.json").write_text(json.dumps(tok))
    rehash_build(b)
    code, v = _verdict(b)
    assert code == 1 and v["failed_check"] == "same source"
    assert "tokenizer.json differ" in next(c for c in v["checks"] if not c["ok"])["detail"]
    (b / "quant" / "tokenizer.json").unlink()
    rehash_build(b)
    code, v = _verdict(b)
    assert code == 1 and "tokenizer files are missing" in next(c for c in v["checks"] if not c["ok"])["detail"]


def test_verify_source(models):
    code, v = _verdict(models / "b1", "--source", models / "m1")
    assert code == 0 and v["ok"] and any(c["name"].startswith("compiled from") and c["ok"] for c in v["checks"])
    code, v = _verdict(models / "b1", "--source", models / "m2")
    assert code == 1 and v["failed_check"].startswith("compiled from")
    probs = " ".join(next(c for c in v["checks"] if not c["ok"])["problems"])
    assert "model.safetensors: differs" in probs
    code, v = _verdict(models / "b1", "--source", models / "m1tok")
    assert code == 1 and "tokenizer.json: not part of the source" in " ".join(
        next(c for c in v["checks"] if not c["ok"])["problems"])


def test_verify_source_names_config_fields(models, tmp_path):
    m = tmp_path / "wider"
    cli_run("init", "--preset", "tiny", "--out", m, "--seed", "1")
    cfg = json.loads((m / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (m / "config.json").write_text(json.dumps(cfg))
    code, v = _verdict(models / "b1", "--source", m)
    probs = " ".join(next(c for c in v["checks"] if not c["ok"])["problems"])
    assert code == 1 and "config.json: differs" in probs and "rms_norm_eps is 1e-05" in probs


def test_verify_json_when_the_build_cannot_be_loaded(models, tmp_path):
    b = _copy(models, tmp_path, "b1")
    (b / "layout.json").write_text("{}")                  # hash mismatch: Build.load refuses it
    code, v = _verdict(b)
    assert code == 1 and v["ok"] is False and v["failed_check"] == "integrity"
    assert "layout.json" in v["checks"][0]["detail"]
    (b / "build.json").unlink()
    code, v = _verdict(b)
    assert code == 1 and v["failed_check"] == "integrity" and "build.json is missing" in v["checks"][0]["detail"]
    code, v = _verdict(tmp_path / "nothing")
    assert code == 1 and v["failed_check"] == "integrity"
