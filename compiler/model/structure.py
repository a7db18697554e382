"""The HGRN-Bit model's structure, declared once.

Every released tensor (its Hugging Face name, its shape in symbols of the config, its role), the parts
of one layer (which projections, which norms, in which order), the quantization sites of a layer in
execution order and the integer tensors the quantizer makes are named here and nowhere else: the
checkpoint reader, the float model, the quantizer and the skeleton derive their names and shapes from
these declarations.

Dimension symbols: ``V`` vocab_size, ``d`` hidden_size, ``e`` = d_attn = hidden_size * expand_ratio,
``m`` intermediate size, ``2m`` twice it (gate_proj makes both GLU halves), ``L`` num_hidden_layers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from .config import ModelConfig

# ---- the parts of the network -----------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """A BitLinear: a ternary matrix [out, in] with its own input RMSNorm (``<module>.norm.weight``).

    ``in_site`` is the site of its (inner-normed) input, ``src_site`` the site that norm reads and
    ``reduction`` the key of that norm's sum of squares (projections reading the same source share one);
    ``out_sites`` are the sites its accumulators are requantized to (none for the head: the logits)."""

    key: str                       # our short name: i, f, g, o, gate, down, head
    module: str                    # Hugging Face module path (inside a layer, except for the head)
    out: str                       # dimension symbol of its rows
    inp: str                       # dimension symbol of its columns (and of its input norm)
    in_site: str
    src_site: str
    reduction: str
    out_sites: tuple[str, ...]


@dataclass(frozen=True)
class Norm:
    """A block RMSNorm with its own weight ``<module>.weight``, over site ``src_site`` into site ``key``."""

    key: str                       # its output site (and the name of its integer gain)
    module: str                    # Hugging Face module path (inside a layer, except for the final norm)
    dim: str
    src_site: str
    reduction: str


# One layer's parts in checkpoint order (the order random init draws them in).
LAYER_PARTS: tuple[Norm | Projection, ...] = (
    Norm("attn_norm", "attn_norm", "d", "x", "x"),
    Projection("i", "attn.i_proj", "e", "d", "i_in", "attn_norm", "u", ("i",)),
    Projection("f", "attn.f_proj", "e", "d", "f_in", "attn_norm", "u", ("f",)),
    Projection("g", "attn.g_proj", "e", "d", "g_in", "attn_norm", "u", ("g",)),
    Norm("gn", "attn.g_norm", "e", "g", "g"),
    Projection("o", "attn.o_proj", "d", "e", "o_in", "o", "o", ("attn_out",)),
    Norm("mlp_norm", "mlp_norm", "d", "r", "r"),
    Projection("gate", "mlp.gate_proj", "2m", "d", "gate_in", "mlp_norm", "v", ("a", "b")),
    Projection("down", "mlp.down_proj", "d", "m", "down_in", "z", "z", ("mlp_out",)),
)
LAYER_PROJECTIONS: tuple[Projection, ...] = tuple(p for p in LAYER_PARTS if isinstance(p, Projection))
LAYER_NORMS: tuple[Norm, ...] = tuple(p for p in LAYER_PARTS if isinstance(p, Norm))
FINAL_NORM = Norm("final.norm", "model.norm", "d", "final.x", "final.x")
HEAD = Projection("head", "lm_head", "V", "d", "head.in", "final.norm", "final.norm", ())

EMBEDDINGS = "model.embeddings.weight"
LOWER_BOUNDS = "model.lower_bounds"
HEAD_WEIGHT = HEAD.module + ".weight"
_LAYER_PREFIX = "model.layers.{}."
_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.")


def layer_prefix(i: int) -> str:
    """The Hugging Face name prefix of layer i's tensors."""
    return _LAYER_PREFIX.format(i)


def layer_of(name: str) -> int | None:
    """The layer a released tensor name belongs to (None for the embeddings, bounds, final norm, head)."""
    m = _LAYER_NAME.match(name)
    return int(m.group(1)) if m else None


def weight_name(part: Norm | Projection, layer: int | None) -> str:
    """The released name of a norm's weight or a projection's matrix (layer None: final norm / head)."""
    return (layer_prefix(layer) if layer is not None else "") + part.module + ".weight"


def input_norm_name(proj: Projection, layer: int | None) -> str:
    """The released name of a projection's own input-norm weight."""
    return (layer_prefix(layer) if layer is not None else "") + proj.module + ".norm.weight"


# ---- released tensors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One released tensor: Hugging Face name, shape in dimension symbols, role, layer and part key."""

    name: str
    dims: tuple[str, ...]
    role: str                      # embedding | lower_bounds | norm | projection | projection.norm
    layer: int | None = None
    part: str | None = None        # the Norm / Projection key


def released_tensors(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of a released checkpoint for ``cfg``, in a stable order: embeddings, bounds, layers,
    final norm, head. Tied embeddings share only the matrix: lm_head keeps its own input norm."""
    out = [TensorSpec(EMBEDDINGS, ("V", "d"), "embedding")]
    if cfg.use_lower_bound:
        out.append(TensorSpec(LOWER_BOUNDS, ("L", "d"), "lower_bounds"))
    for i in range(cfg.L):
        for part in LAYER_PARTS:
            out += _part_tensors(part, i)
    out += _part_tensors(FINAL_NORM, None)
    head = _part_tensors(HEAD, None)
    out += head[1:] if cfg.tie_word_embeddings else head
    return out


def _part_tensors(part: Norm | Projection, layer: int | None) -> list[TensorSpec]:
    if isinstance(part, Norm):
        return [TensorSpec(weight_name(part, layer), (part.dim,), "norm", layer, part.key)]
    return [TensorSpec(weight_name(part, layer), (part.out, part.inp), "projection", layer, part.key),
            TensorSpec(input_norm_name(part, layer), (part.inp,), "projection.norm", layer, part.key)]


def dim_sizes(cfg: ModelConfig) -> dict[str, int]:
    """Size of every dimension symbol under ``cfg``."""
    return {"V": cfg.vocab_size, "d": cfg.d, "e": cfg.d_attn, "m": cfg.m, "2m": 2 * cfg.m, "L": cfg.L}


def tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every released tensor for ``cfg``, in ``released_tensors`` order."""
    size = dim_sizes(cfg)
    return {t.name: tuple(size[s] for s in t.dims) for t in released_tensors(cfg)}


# ---- quantization sites -----------------------------------------------------------------------------
# Activation sites of one layer, in execution order (names after the "L{i}." prefix). "hq" is the state
# requantized to act bits as SiLU's table input; its range is the state's. The *_in sites (each
# projection's inner-normed input) exist only while the inner norms are kept.
LAYER_SITES = ("x", "attn_norm", "i_in", "f_in", "g_in", "i", "f", "g", "h", "hq", "gn", "o", "o_in",
               "attn_out", "r", "mlp_norm", "gate_in", "a", "b", "z", "down_in", "mlp_out")
FINAL_SITES = ("final.x", "final.norm", "head.in")
STATE_SITE = "h"                   # the recurrent state, at state_bits
INNER_SITES = frozenset(p.in_site for p in (*LAYER_PROJECTIONS, HEAD))


def site(layer: int | None, kind: str) -> str:
    """The full site name: ``L{i}.{kind}`` inside a layer, the kind itself after the last layer."""
    return kind if layer is None else f"L{layer}.{kind}"


def site_kind(name: str) -> str:
    """The kind of a full site name (``L3.o`` -> ``o``; final sites are their own kind)."""
    return name.split(".", 1)[1] if name.startswith("L") and name[1:2].isdigit() else name


def next_x(cfg: ModelConfig, layer: int) -> str:
    """The site layer ``layer`` writes its output to: the next layer's input, or the final norm's."""
    return site(layer + 1, "x") if layer + 1 < cfg.L else FINAL_NORM.src_site


def quant_sites(cfg: ModelConfig, inner: bool = True) -> list[tuple[str, str]]:
    """(site, kind) of every quantization site in execution order; without the inner norms the
    projections' own input sites are dropped."""
    out = [(site(i, k), k) for i in range(cfg.L) for k in LAYER_SITES if inner or k not in INNER_SITES]
    return out + [(k, k) for k in FINAL_SITES if inner or k not in INNER_SITES]


# ---- integer tensors of the quantized model -----------------------------------------------------------
# (table name, site of its input) for the per-layer lookup tables: the forget gate's sigmoid, SiLU of the
# input gate, of the requantized state and of the GLU's gate half.
LAYER_TABLES = (("sig_f", "f"), ("silu_i", "i"), ("silu_h", "hq"), ("silu_a", "a"))
# rescale (multiplier, shift) pairs of a layer besides the projections' accumulator requantizations:
# state -> table input, and the four operands of the two residual adds
LAYER_RESCALES = ("hq", "res_x", "res_ao", "res_r", "res_mo")
LAYER_PRODUCT_SHIFTS = ("n.o", "n.z")   # the two products of activations: o = gn·SiLU(h), z = SiLU(a)·b


def quant_weight_name(proj: Projection, layer: int | None) -> str:
    """The quantized model's name of a projection's ternary matrix (``W.L0.i``, ``W.head``)."""
    return "W." + site(layer, proj.key)


class NormUse(NamedTuple):
    """One RMSNorm of the quantized model: its gain key (= its output site), the site it reads, the key of
    its sum of squares, its dimension symbol, layer (None after the last), kind ("block": the config's eps;
    "proj": a BitLinear's own input norm) and the released name of its weight."""

    key: str
    src: str
    reduction: str
    dim: str
    layer: int | None
    kind: str
    weight: str


def all_norms(cfg: ModelConfig, inner: bool = True) -> list[NormUse]:
    """Every RMSNorm of the quantized model in execution order (without ``inner`` no BitLinear input norms)."""
    out = []
    for i in [*range(cfg.L), None]:
        parts = LAYER_PARTS if i is not None else (FINAL_NORM, HEAD)
        for p in parts:
            if isinstance(p, Norm):
                out.append(NormUse(site(i, p.key), site(i, p.src_site), site(i, p.reduction), p.dim, i, "block",
                                   weight_name(p, i)))
            elif inner:
                out.append(NormUse(site(i, p.in_site), site(i, p.src_site), site(i, p.reduction), p.inp, i, "proj",
                                   input_norm_name(p, i)))
    return out


def quantized_tensors(cfg: ModelConfig, inner: bool = True) -> dict[str, tuple[tuple[str, ...], str]]:
    """name -> (shape in dimension symbols or ``lut:<site>`` for a table of that site's width, dtype) of
    every integer tensor the quantizer makes."""
    T: dict = {"emb.Q": (("V", "d"), "int64"), quant_weight_name(HEAD, None): (("V", "d"), "int8")}
    norms = all_norms(cfg, inner)
    for n in norms:
        if n.layer is None:
            T["G." + n.key] = ((n.dim,), "int64")
    for i in range(cfg.L):
        for p in LAYER_PROJECTIONS:
            T[quant_weight_name(p, i)] = ((p.out, p.inp), "int8")
        for n in norms:
            if n.layer == i:
                T["G." + n.key] = ((n.dim,), "int64")
        T[site(i, "B")] = (("e",), "int64")
        for lut, src in LAYER_TABLES:
            T[site(i, "lut." + lut)] = (("lut:" + site(i, src),), "int64")
    return T
