"""The training tool (tools/training/train.py) end to end: a short quantization-aware run writes a checkpoint that
mflc's loader accepts as it is, whose float model is the one torch trained (the run's own --dump-check
logits), that has learnt something, and that compiles and verifies bit-exactly.

train.py needs torch, which these machines have for Python 3.11 only, so it runs in a subprocess of an
interpreter that has torch: $MFLC_TRAIN_PYTHON, this one, or .venv-train (``bash tools/setup.sh --train``).
Without one the test is skipped, unless $MFLC_REQUIRE_TRAIN is set (CI sets it): then it fails.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "tools" / "training" / "train.py"

pytestmark = pytest.mark.train


def _torch_python() -> str | None:
    cands = [os.environ.get("MFLC_TRAIN_PYTHON"), sys.executable, str(ROOT / ".venv-train" / "bin" / "python")]
    for c in cands:
        if c and Path(c).exists() and subprocess.run([c, "-c", "import torch"], capture_output=True).returncode == 0:
            return c
    return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    py = _torch_python()
    if py is None:
        msg = "no Python with torch (run: bash tools/setup.sh --train)"
        if os.environ.get("MFLC_REQUIRE_TRAIN"):
            pytest.fail(msg + "; MFLC_REQUIRE_TRAIN is set")
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("train")
    out, check = d / "model", d / "check.npz"
    argv = ["--out", out, "--seed", "3", "--hidden", "32", "--layers", "2", "--intermediate", "64",
            "--seq-len", "64", "--batch", "8", "--steps", "40", "--warmup", "5", "--eval-every", "1000",
            "--eval-windows", "8", "--no-compile", "--threads", "1", "--dump-check", check]
    r = subprocess.run([py, TRAIN_PY, *map(str, argv)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out, check, r.stdout


def test_training_learns(trained):
    """Held-out bits per byte fall well below an untrained model's 8 in 40 steps."""
    _, _, log = trained
    m = re.search(r"done: 40 steps .* held-out ([0-9.]+) bits/byte", log)
    assert m, log
    assert float(m.group(1)) < 7.0, log


def test_checkpoint_loads_and_reproduces_torch(trained):
    from mflc.compiler.model.checkpoint import load_checkpoint
    from mflc.compiler.model.float_model import FloatModel

    out, check, _ = trained
    cfg, w = load_checkpoint(out)                     # validates every tensor name and shape against config
    assert (cfg.vocab_size, cfg.d, cfg.L, cfg.m) == (256, 32, 2, 64) and cfg.use_lower_bound
    assert json.loads((out / "config.json").read_text())["model_type"] == "hgrn_bit"
    z = np.load(check)
    fm = FloatModel(cfg, w)
    for toks, want in zip(z["tokens"], z["logits"]):
        got, _ = fm.forward(list(toks))
        assert np.max(np.abs(got - want)) < 1e-4      # float64 torch vs mflc on float32 weights
        assert np.array_equal(got.argmax(-1), want.argmax(-1))


def test_trained_checkpoint_compiles_and_verifies(trained, tmp_path):
    from typer.testing import CliRunner

    from mflc.cli import app

    out, _, _ = trained
    runner = CliRunner()
    r = runner.invoke(app, ["compile", str(out), "--out", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "b"), "--tokens", "12", "--json"])
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)
    assert v["ok"] and v["tokens"] == 12


def test_parameter_names_are_the_declared_structure():
    """train.py cannot import mflc, so its module names are checked here against the structure declared in
    compiler/model/structure.py: the same tensor names with the same shapes."""
    from mflc.compiler.model.config import ModelConfig
    from mflc.compiler.model.structure import tensor_shapes

    py = _torch_python()
    if py is None:
        if os.environ.get("MFLC_REQUIRE_TRAIN"):
            pytest.fail("no Python with torch; MFLC_REQUIRE_TRAIN is set")
        pytest.skip("no Python with torch (run: bash tools/setup.sh --train)")
    code = ("import json, sys, train\n"
            "cfg = train.make_config(type('A', (), dict(hidden=8, layers=3, intermediate=12))())\n"
            "m = train.HGRNBit(cfg)\n"
            "json.dump(dict(cfg=cfg, shapes=[[k, list(v.shape)] for k, v in m.state_dict().items()]), sys.stdout)\n")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=300, cwd=TRAIN_PY.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    want = tensor_shapes(ModelConfig.from_dict(got["cfg"]))
    assert {k: tuple(s) for k, s in got["shapes"]} == want
