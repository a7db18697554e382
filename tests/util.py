"""Random small HGRN-Bit models for tests: checkpoint-format weights with non-trivial norms and bounds."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mflc.compiler.model.checkpoint import init_weights
from mflc.compiler.model.config import ModelConfig
from mflc.compiler.model.quantize import QuantOptions, quantize


def random_weights(cfg: ModelConfig, seed: int, weight_scale: float = 1.0, emb_scale: float = 1.0) -> dict:
    """init_weights plus random norm gains and lower bounds, so every parameter matters."""
    rng = np.random.default_rng(seed + 1_000_003)
    w = init_weights(cfg, seed)
    for k in list(w):
        if k.endswith("norm.weight"):
            w[k] = rng.uniform(0.3, 2.0, w[k].shape).astype(np.float32)
        elif k == "model.lower_bounds":
            w[k] = rng.normal(0.0, 1.0, w[k].shape).astype(np.float32)
        elif k == "model.embeddings.weight":
            w[k] = (w[k] * emb_scale).astype(np.float32)
        else:
            w[k] = (w[k] * weight_scale).astype(np.float32)
    return w


@st.composite
def model_configs(draw, max_layers=2, max_hidden=24, max_vocab=64):
    lower = draw(st.booleans())
    return ModelConfig.from_dict(dict(
        vocab_size=draw(st.integers(2, max_vocab)),
        hidden_size=draw(st.integers(1, max_hidden)),
        num_hidden_layers=draw(st.integers(1, max_layers)),
        expand_ratio=1 if lower else draw(st.integers(1, 2)),
        intermediate_size=draw(st.integers(1, 40)),
        use_lower_bound=lower,
        tie_word_embeddings=draw(st.booleans()),
    ))


@st.composite
def quantized_models(draw, **kw):
    """(cfg, weights, qm, tokens): a random model, quantized with random legal options, and a token sequence."""
    cfg = draw(model_configs(**kw))
    seed = draw(st.integers(0, 2**16))
    ws = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    es = draw(st.sampled_from([1e-2, 1.0, 50.0]))
    w = random_weights(cfg, seed, ws, es)
    # a few sites wider than the rest (as the default model's o), up to 16 bits: norms over them square
    # with a shift (range_analysis.norm_square_shift) once x² no longer fits a graded spike
    wide = draw(st.dictionaries(st.sampled_from(["o", "x", "r", "z", "g"]), st.integers(8, 16), max_size=2))
    opts = QuantOptions(act_bits=draw(st.integers(4, 10)), state_bits=draw(st.integers(12, 24)), site_bits=wide,
                        pow2=draw(st.booleans()), remove_inner_norm=draw(st.booleans()),
                        scale_method=draw(st.sampled_from(["max", "mse"])))
    rng = np.random.default_rng(seed)
    qm = quantize(cfg, w, [rng.integers(0, cfg.vocab_size, 24)], opts)
    tokens = draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=1, max_size=6))
    return cfg, w, qm, tokens


def cli_run(*args, ok=True):
    """Invoke the mflc CLI in-process; unless ``ok`` is False, insist that it exits 0 (showing its output)."""
    from typer.testing import CliRunner

    from mflc.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def rehash_build(path) -> None:
    """Regenerate a build's manifest hashes after a test edited its files: what a user who hand-edits a
    build and fixes up build.json does. Semantic checks must still catch the edit."""
    import json
    from pathlib import Path

    from mflc.build import MANIFEST, _files_under, file_sha256

    p = Path(path)
    m = json.loads((p / MANIFEST).read_text())
    m["files"] = {rel: file_sha256(p / rel) for rel in _files_under(p)}
    (p / MANIFEST).write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")
