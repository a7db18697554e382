"""Bad input, one case per test: one message naming the file, tensor, field, limit or value, and exit status 1
(never a traceback)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from util import cli_run

run = cli_run


def bad(*args, fragments=()):
    """Run the CLI expecting a clean failure: exit 1, no traceback, every fragment in the message."""
    r = run(*args, ok=False)
    assert r.exit_code == 1, (r.output, r.exception)
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for f in fragments:
        assert str(f) in r.output, (f, r.output)
    return r


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    run("init", "--preset", "tiny", "--out", d / "m", "--seed", "1")
    run("quantize", d / "m", "--out", d / "q")
    return d


# ---- 1. outputs that cannot be written -------------------------------------------------------------------
def test_quantize_out_is_an_existing_file(models, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    bad("quantize", models / "m", "--out", f, fragments=[str(f), "not a directory"])
    assert f.read_text() == "x"


def test_quantize_out_under_a_file(models, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    bad("quantize", models / "m", "--out", f / "q", fragments=[str(f), "is a file"])


def test_export_lava_out_is_a_directory(models, tmp_path):
    bad("export-lava", models / "q", "--out", tmp_path, fragments=[str(tmp_path), "is a directory"])


def test_export_lava_out_under_a_file(models, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    bad("export-lava", models / "q", "--out", f / "x.json", fragments=[str(f), "is a file"])


# ---- 6. option ranges ------------------------------------------------------------------------------------
def test_verify_tokens_above_limit(models):
    bad("verify", models / "q", "--tokens", "1000000000", fragments=["--tokens", "MAX_VERIFY_TOKENS", "1,000,000"])


def test_verify_negative_seed(models):
    bad("verify", models / "q", "--seed", "-1", fragments=["--seed", ">= 0", "-1"])


@pytest.mark.parametrize("t", ["-1", "nan", "inf"])
def test_generate_bad_temperature(models, t):
    bad("generate", models / "q", "--temperature", t, fragments=["--temperature", "finite", t])


def test_generate_max_new_tokens_limit(models):
    bad("generate", models / "q", "--max-new-tokens", "1000000000", fragments=["--max-new-tokens", "MAX_NEW_TOKENS"])
    bad("generate", models / "q", "--max-new-tokens", "-1", fragments=["--max-new-tokens", ">= 0"])


def test_quantize_negative_calib_tokens(models, tmp_path):
    bad("quantize", models / "m", "--out", tmp_path / "q", "--calib-tokens", "-5", fragments=["--calib-tokens", ">= 1", "-5"])


def test_compile_negative_calib_tokens(models, tmp_path):
    bad("compile", models / "m", "--out", tmp_path / "b", "--calib-tokens", "-5", fragments=["--calib-tokens", ">= 1", "-5"])
