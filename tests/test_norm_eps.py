"""Which eps each RMSNorm uses, on a checkpoint whose config says rms_norm_eps = 1e-5 .

The released HGRN-Bit passes the config's ``rms_norm_eps`` to the block norms only (attn_norm, the
attention's g_norm, mlp_norm, the final norm); every BitLinear normalises its input with the fused
kernel's fixed eps = 1e-6 (``config.BITLINEAR_NORM_EPS``; evidence in docs/fixed-point.md, "Which eps
each norm uses"). At the default eps of 1e-6 the two agree, so only a checkpoint with another eps can
tell them apart.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from mflc.compiler.model.checkpoint import load_checkpoint, save_checkpoint
from mflc.compiler.model.config import BITLINEAR_NORM_EPS, ModelConfig, preset
from mflc.compiler.model.evaluate import evaluate
from mflc.compiler.model.float_model import BitLinear, FloatModel
from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.quantize import QuantOptions, quantize

from util import cli_run, random_weights

CFG_EPS = 1e-5
# small weights and embeddings: the norms' inputs then have a mean square near the eps, so a wrong eps
# shows (at init scale the block norms barely notice 1e-5 against 1e-6)
WEIGHT_SCALE, EMB_SCALE = 0.1, 0.3
TOKENS = np.random.default_rng(7).integers(0, 256, 40)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A two-layer tiny model written as a Hugging Face checkpoint (config.json + model.safetensors)."""
    cfg = ModelConfig.from_dict(dict(preset("tiny").to_dict(), rms_norm_eps=CFG_EPS))
    path = tmp_path_factory.mktemp("eps") / "model"
    save_checkpoint(path, cfg, random_weights(cfg, 3, WEIGHT_SCALE, EMB_SCALE))
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)


# ---- an independent numpy restatement of the released forward pass ---------------------------------
def _rms_norm(x, w, eps):
    # mmfreelm/modules/layernorm.py, rms_norm_ref: x * rstd * weight, rstd = 1/sqrt(mean(x²) + eps)
    return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)) * w


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _bitlinear(x, w, norm_w, eps):
    # mmfreelm/ops/fusedbitnet.py: RMSNorm, per-token absmax int8 fake-quant, absmean ternary weight
    y = _rms_norm(x, norm_w, eps)
    s = 127.0 / np.maximum(np.abs(y).max(axis=-1, keepdims=True), 1e-5)
    y = np.clip(np.round(y * s), -128, 127) / s
    w = w.astype(np.float64)
    absmean = max(np.abs(w).mean(), 1e-5)
    return y @ (np.clip(np.round(w / absmean), -1, 1) * absmean).T


def released_logits(cfg, w, tokens, block_eps, bitlinear_eps):
    """HGRNBitForCausalLM.forward over a sequence (fused_recurrent mode, no short conv, one head)."""
    g = {k: v.astype(np.float64) for k, v in w.items()}

    def bl(prefix, x):
        return _bitlinear(x, g[prefix + ".weight"], g[prefix + ".norm.weight"], bitlinear_eps)

    lb = g["model.lower_bounds"]
    sm = np.exp(lb - lb.max(axis=0)) / np.exp(lb - lb.max(axis=0)).sum(axis=0)
    lower = np.cumsum(sm, axis=0) - sm[0]
    x = g["model.embeddings.weight"][tokens]
    for i in range(cfg.L):
        p = f"model.layers.{i}."
        u = _rms_norm(x, g[p + "attn_norm.weight"], block_eps)
        ic, f = bl(p + "attn.i_proj", u), 1.0 / (1.0 + np.exp(-bl(p + "attn.f_proj", u)))
        if cfg.use_lower_bound and i > 0:
            f = lower[i] + (1.0 - lower[i]) * f
        ic = _silu(ic) * (1.0 - f)                     # swiglu(i, 1 - f)
        h, hs = np.zeros(cfg.d_attn), []
        for t in range(len(tokens)):                   # fused_recurrent_hgrn: h = g·h + x
            h = f[t] * h + ic[t]
            hs.append(h)
        o = _rms_norm(bl(p + "attn.g_proj", u), g[p + "attn.g_norm.weight"], block_eps) * _silu(np.array(hs))
        r = x + bl(p + "attn.o_proj", o)               # mlp_norm(o, residual, prenorm=True)
        ab = bl(p + "mlp.gate_proj", _rms_norm(r, g[p + "mlp_norm.weight"], block_eps))
        x = r + bl(p + "mlp.down_proj", _silu(ab[:, :cfg.m]) * ab[:, cfg.m:])
    head = g["model.embeddings.weight"] if cfg.tie_word_embeddings else g["lm_head.weight"]
    xn = _rms_norm(x, g["model.norm.weight"], block_eps)
    return _bitlinear(xn, head, g["lm_head.norm.weight"], bitlinear_eps)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- (a) the float model ---------------------------------------------------------------------------
def test_checkpoint_carries_the_eps(checkpoint, model):
    cfg, _ = model
    assert json.loads((checkpoint / "config.json").read_text())["rms_norm_eps"] == CFG_EPS
    assert cfg.rms_norm_eps == CFG_EPS and BITLINEAR_NORM_EPS == 1e-6


def test_float_model_uses_the_config_eps_only_for_the_block_norms(model):
    cfg, w = model
    fm = FloatModel(cfg, w)
    assert fm.eps == CFG_EPS
    projections = [b for ly in fm.layers for b in ly.values() if isinstance(b, BitLinear)] + [fm.head]
    assert len(projections) == 6 * cfg.L + 1
    assert all(b.eps == BITLINEAR_NORM_EPS for b in projections)


def test_float_model_computes_the_released_equations(model):
    cfg, w = model
    ours, _ = FloatModel(cfg, w).forward(TOKENS)
    ref = released_logits(cfg, w, TOKENS, CFG_EPS, BITLINEAR_NORM_EPS)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())  # float vs float
    # the model is sensitive to both choices, so the match above is a real check of each
    assert _rel(released_logits(cfg, w, TOKENS, CFG_EPS, CFG_EPS), ref) > 1e-2        # config eps inside BitLinear
    assert _rel(released_logits(cfg, w, TOKENS, BITLINEAR_NORM_EPS, BITLINEAR_NORM_EPS), ref) > 1e-3  # 1e-6 everywhere


# ---- the quantizer -----------------------------------------------------------------------------------
BLOCK_REDUCTIONS = ("x", "g", "r")          # attn_norm, g_norm, mlp_norm (+ final.x: the final norm)
INNER_REDUCTIONS = ("u", "o", "v", "z")     # i/f/g_proj (shared), o_proj, gate_proj, down_proj (+ final.norm: lm_head)


def test_integer_eps_follows_each_norm(model):
    """E of each reduction equals the one quantized with that norm's eps forced everywhere (rms_eps only
    changes E, so the three quantizations share every scale)."""
    cfg, w = model
    calib = [TOKENS.tolist()]
    q = quantize(cfg, w, calib)
    at = {eps: quantize(cfg, w, calib, QuantOptions(rms_eps=eps)) for eps in (CFG_EPS, BITLINEAR_NORM_EPS)}
    block = [f"E.L{i}.{r}" for i in range(cfg.L) for r in BLOCK_REDUCTIONS] + ["E.final.x"]
    inner = [f"E.L{i}.{r}" for i in range(cfg.L) for r in INNER_REDUCTIONS] + ["E.final.norm"]
    assert sorted(block + inner) == sorted(k for k in q.scalars if k.startswith("E."))
    for key in block:
        assert q.scalars[key] == at[CFG_EPS].scalars[key], key
    for key in inner:
        assert q.scalars[key] == at[BITLINEAR_NORM_EPS].scalars[key], key
    # not vacuous: in both groups some E differ between the two eps (E >= 1 hides a tiny eps)
    for group in (block, inner):
        assert any(at[CFG_EPS].scalars[k] != at[BITLINEAR_NORM_EPS].scalars[k] for k in group), group


# ---- (b) the integer path verifies bit-exact --------------------------------------------------------
def test_compile_and_verify(checkpoint, tmp_path):
    build = tmp_path / "build"
    cli_run("compile", checkpoint, "--out", build)
    r = cli_run("verify", build, "--tokens", "3", "--json")
    js = json.loads(r.stdout)
    assert js["ok"] and all(c["ok"] for c in js["checks"]), js
    assert json.loads((build / "quant" / "quant.json").read_text())  # the quantized model was written


# ---- (c) the quantized model stays close to the float model ------------------------------------------
def test_integer_model_tracks_the_float_model(model):
    cfg, w = model
    toks = np.random.default_rng(11).integers(0, 256, 96).tolist()
    qm = quantize(cfg, w, [toks[:48]])
    fm, im = FloatModel(cfg, w), IntModel(qm)
    r = evaluate(fm, im, toks)
    assert r.top1_agreement > 0.5 and abs(r.relative_gap) < 0.05, r  # float vs integer: a tolerance
    # and it is closer to the released semantics than to the config eps inside every BitLinear
    fixed, _ = im.forward(toks)
    fixed = im.logits_to_float(fixed)
    ref = released_logits(cfg, w, np.array(toks), CFG_EPS, BITLINEAR_NORM_EPS)
    wrong = released_logits(cfg, w, np.array(toks), CFG_EPS, CFG_EPS)
    assert _rel(fixed, ref) < 0.5 * _rel(fixed, wrong)
