"""Skeleton models for estimates: the IR of a configuration whose weights are not at hand.

The lowering runs unchanged on a stand-in quantized model whose ternary matrices are ``VirtualTernary``
(shape and density only) and whose small parameters (gains, tables) are placeholders of the right shape
and width. The resulting graph has the real structure (groups, sizes, programs, stages, fan-ins) and is
what ``mflc estimate`` partitions and places; it is never executed.
"""
from __future__ import annotations

import numpy as np

from mflc.ir import fixedpoint as fp

from .config import ModelConfig
from .lower import VirtualTernary, lower
from .quantize import LAYER_SITES, QuantizedModel, QuantOptions

# Fraction of non-zero ternary weights assumed when no weights are given. absmean ternarisation of a
# Gaussian matrix keeps |w| > absmean/2, i.e. P(|z| > 0.399) ≈ 0.69 of the weights; trained BitNet-style
# models are reported near 0.6–0.7. Confidence: medium. Override with --density.
DEFAULT_TERNARY_DENSITY = 0.69


# Bytes of memory ``mflc estimate`` takes per neuron of the skeleton graph, graph and layout together: an
# upper bound from the 2.7B preset (2,183,138 neurons, 1.65 GB peak RSS of which ~0.25 GB is the interpreter
# and its libraries: ~640 B per neuron), rounded up. Virtual synapses store a row count per neuron only.
SKELETON_BYTES_PER_NEURON = 1024
SKELETON_BASE_BYTES = 512 << 20


def skeleton_neurons(cfg: ModelConfig) -> int:
    """Neurons of ``skeleton_graph(cfg)``, from the configuration alone (nothing allocated): per layer 12
    groups of d neurons, 6 of d_attn, 3 of m and 7 single-neuron reductions; then 5 of d, the head's V and 2.
    tests/test_bad_inputs.py checks it against the lowered graph."""
    return cfg.L * (12 * cfg.d + 6 * cfg.d_attn + 3 * cfg.m + 7) + 5 * cfg.d + cfg.vocab_size + 2


def physical_memory_bytes() -> int | None:
    """This machine's RAM (os.sysconf SC_PHYS_PAGES x SC_PAGE_SIZE), None where the OS does not say."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_skeleton_memory(cfg: ModelConfig, ram_bytes: int | None = None, source: str = "config") -> int:
    """Refuse, before allocating anything, a configuration whose skeleton graph and layout would need more
    memory than the machine has; returns the estimate in bytes."""
    from mflc.ir.errors import ConfigError

    n = skeleton_neurons(cfg)
    need = SKELETON_BASE_BYTES + n * SKELETON_BYTES_PER_NEURON
    ram = physical_memory_bytes() if ram_bytes is None else ram_bytes
    if ram is not None and need > ram:
        raise ConfigError(
            f"{source}: hidden_size {cfg.d:,}, d_attn {cfg.d_attn:,}, intermediate {cfg.m:,}, vocab_size "
            f"{cfg.vocab_size:,}, {cfg.L:,} layer(s) give a graph of {n:,} neurons; laying it out needs about "
            f"{_gib(need)} ({SKELETON_BYTES_PER_NEURON} B per neuron), more than the limit of this machine's "
            f"{_gib(ram)} of RAM (os.sysconf SC_PHYS_PAGES)")
    return need


class _SkeletonQM(QuantizedModel):
    def t(self, name: str):
        return self.tensors[name]


def skeleton_qm(cfg: ModelConfig, density: float = DEFAULT_TERNARY_DENSITY, options: QuantOptions | None = None):
    opts = options or QuantOptions()
    inner = not opts.remove_inner_norm
    d, e, m, V = cfg.d, cfg.d_attn, cfg.m, cfg.vocab_size
    sites = {}
    for i in range(cfg.L):
        for k in LAYER_SITES:
            sites[f"L{i}.{k}"] = dict(bits=opts.bits(k), scale=1.0, frac=0, amax=1.0)
    for k in ("final.x", "final.norm", "head.in"):
        sites[k] = dict(bits=opts.bits(k), scale=1.0, frac=0, amax=1.0)
    T: dict = {"emb.Q": np.zeros((1, d), np.int64), "W.head": VirtualTernary((V, d), density)}
    S: dict = {}
    lut = lambda bits, vmax: np.zeros(1 << bits, np.int64) + vmax  # noqa: E731  (placeholder, right width)

    def norm(key, n, red):
        T[f"G.{key}"] = np.full(n, fp.smax(opts.gain_bits), np.int64)
        S[f"gexp.{key}"], S[f"E.{red}"] = 0, 1

    for i in range(cfg.L):
        L = f"L{i}."
        for p, shape in (("i", (e, d)), ("f", (e, d)), ("g", (e, d)), ("o", (d, e)), ("gate", (2 * m, d)), ("down", (d, m))):
            T[f"W.{L}{p}"] = VirtualTernary(shape, density)
        for key, n, red in (("attn_norm", d, "x"), ("i_in", d, "u"), ("f_in", d, "u"), ("g_in", d, "u"), ("gn", e, "g"),
                            ("o_in", e, "o"), ("mlp_norm", d, "r"), ("gate_in", d, "v"), ("down_in", m, "z")):
            norm(L + key, n, L + red)
        T[L + "B"] = np.zeros(e, np.int64)
        T[L + "lut.sig_f"] = lut(opts.bits("f"), 1 << fp.GATE_FRAC)
        T[L + "lut.silu_i"] = lut(opts.bits("i"), fp.smax(opts.bits("h")))
        T[L + "lut.silu_h"] = lut(opts.bits("hq"), fp.smax(opts.lut_out_bits))
        T[L + "lut.silu_a"] = lut(opts.bits("a"), fp.smax(opts.lut_out_bits))
        for key in ("i", "f", "g", "attn_out", "a", "b", "mlp_out", "hq", "res_x", "res_ao", "res_r", "res_mo"):
            S[f"M.{L}{key}"], S[f"s.{L}{key}"] = 1, 0
        S[L + "n.o"] = S[L + "n.z"] = 16
    norm("final.norm", d, "final.x")
    norm("head.in", d, "final.norm")
    qm = _SkeletonQM(cfg, opts, sites, T, S, dict(logit_scale=1.0, absmean={}, skeleton=True, density=density))
    return qm


def skeleton_graph(cfg: ModelConfig, density: float = DEFAULT_TERNARY_DENSITY, options: QuantOptions | None = None):
    """The IR structure of ``cfg`` with virtual ternary synapses of the given density."""
    if not 0.0 < density <= 1.0:
        from mflc.ir.errors import ConfigError
        raise ConfigError(f"weight density {density} must be in (0, 1]")
    check_skeleton_memory(cfg)
    g = lower(skeleton_qm(cfg, density, options), check=False)
    g.meta["skeleton"] = True
    g.meta["density"] = density
    return g
