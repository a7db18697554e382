"""The model's structure declared once (compiler/model/structure.py): what ``mflc init`` writes, what the
checkpoint reader demands and blames, what the quantizer makes and what the skeleton stands in for all
follow from the same declarations."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mflc.compiler.model import structure as S
from mflc.compiler.model.checkpoint import SINGLE_FILE, init_weights, load_checkpoint
from mflc.compiler.model.config import ModelConfig, preset
from mflc.compiler.model.quantize import QuantOptions, expected_tensors, quantize
from mflc.compiler.model.skeleton import skeleton_qm
from mflc.ir.errors import CheckpointError

from util import cli_run

CONFIGS = [
    preset("tiny"),
    ModelConfig.from_dict(dict(vocab_size=10, hidden_size=4, num_hidden_layers=3, expand_ratio=2,
                               intermediate_size=3, use_lower_bound=False, tie_word_embeddings=True)),
]


def _shape(cfg, dims):
    size = S.dim_sizes(cfg)
    return tuple(size[d] for d in dims)


def test_structure_equals_what_mflc_init_writes(tmp_path):
    cli_run("init", "--preset", "tiny", "--out", tmp_path / "m")
    written = load_file(str(tmp_path / "m" / SINGLE_FILE))
    cfg = preset("tiny")
    specs = S.released_tensors(cfg)
    assert {t.name: _shape(cfg, t.dims) for t in specs} == {k: tuple(v.shape) for k, v in written.items()}
    assert S.tensor_shapes(cfg) == {t.name: _shape(cfg, t.dims) for t in specs}


@pytest.mark.parametrize("cfg", CONFIGS, ids=["tiny", "tied-expand"])
def test_roles_and_layers(cfg):
    specs = S.released_tensors(cfg)
    assert len({t.name for t in specs}) == len(specs)
    per_layer = [t for t in specs if t.layer == 0]
    assert [t.part for t in per_layer if t.role == "projection"] == [p.key for p in S.LAYER_PROJECTIONS]
    assert [t.part for t in per_layer if t.role == "norm"] == [n.key for n in S.LAYER_NORMS]
    assert all(S.layer_of(t.name) == t.layer for t in specs)
    assert (S.HEAD_WEIGHT in {t.name for t in specs}) == (not cfg.tie_word_embeddings)
    assert (S.LOWER_BOUNDS in {t.name for t in specs}) == cfg.use_lower_bound
    assert sum(int(np.prod(_shape(cfg, t.dims))) for t in specs) == cfg.n_params()


@pytest.mark.parametrize("pick", [0, 5, -1, -2])
def test_missing_and_misshaped_tensors_named_by_the_rule(tmp_path, pick):
    """Drop or misshape one tensor of an ``mflc init`` checkpoint: the error names exactly the structure's
    name, and for a misshape the shape the structure's rule gives."""
    cfg = preset("tiny")
    spec = S.released_tensors(cfg)[pick]
    want = _shape(cfg, spec.dims)
    for mode in ("missing", "misshaped"):
        d = tmp_path / mode
        cli_run("init", "--preset", "tiny", "--out", d)
        w = load_file(str(d / SINGLE_FILE))
        if mode == "missing":
            del w[spec.name]
        else:
            w[spec.name] = np.zeros(want[:-1] + (want[-1] + 1,), np.float32)
        save_file(w, str(d / SINGLE_FILE))
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(d)
        msg = str(e.value)
        if mode == "missing":
            assert f"tensor {spec.name!r} is missing" in msg
        else:
            assert f"tensor {spec.name!r} has shape" in msg and f"expected {want}" in msg


@pytest.mark.parametrize("inner", [True, False])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["tiny", "tied-expand"])
def test_quantizer_and_skeleton_make_the_declared_tensors(cfg, inner):
    opts = QuantOptions(remove_inner_norm=not inner)
    w = init_weights(cfg, 1)
    qm = quantize(cfg, w, [np.arange(12) % cfg.vocab_size], opts)
    assert list(qm.sites) == [name for name, _ in S.quant_sites(cfg, inner)]
    shapes = expected_tensors(cfg, opts, qm.sites)
    assert set(qm.tensors) == set(shapes) == set(S.quantized_tensors(cfg, inner))
    assert {k: (tuple(v.shape), str(v.dtype)) for k, v in qm.tensors.items()} == shapes
    sk = skeleton_qm(cfg, options=opts)
    assert set(sk.tensors) == set(shapes) and set(sk.sites) == set(qm.sites)
    assert set(sk.scalars) >= {k for k in qm.scalars if not k.startswith("sq.")}
