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
from . import structure as S
from .lower import VirtualTernary, lower
from .quantize import QuantizedModel, QuantOptions

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
        """A tensor by name, as a plain lookup: QuantizedModel.t's stored-model check does not apply to a skeleton."""
        return self.tensors[name]


def skeleton_qm(cfg: ModelConfig, density: float = DEFAULT_TERNARY_DENSITY, options: QuantOptions | None = None):
    """A stand-in quantized model with every site, tensor and scalar ``quantize`` makes for ``cfg`` (from
    structure.quant_sites / quantized_tensors / all_norms): virtual ternary matrices, placeholder gains
    and tables of the right widths, unit rescales."""
    opts = options or QuantOptions()
    inner = not opts.remove_inner_norm
    sites = {name: dict(bits=opts.bits(kind), scale=1.0, frac=0, amax=1.0) for name, kind in S.quant_sites(cfg, inner)}
    size = S.dim_sizes(cfg)
    # the largest value each table holds (a placeholder of the right width)
    lut_max = {"sig_f": 1 << fp.GATE_FRAC, "silu_i": fp.smax(opts.bits(S.STATE_SITE)),
               "silu_h": fp.smax(opts.lut_out_bits), "silu_a": fp.smax(opts.lut_out_bits)}
    T: dict = {}
    for name, (dims, _) in S.quantized_tensors(cfg, inner).items():
        if name == "emb.Q":
            T[name] = np.zeros((1, cfg.d), np.int64)        # the host's table: not needed for an estimate
        elif name.startswith("W."):
            T[name] = VirtualTernary(tuple(size[s] for s in dims), density)
        elif name.startswith("G."):
            T[name] = np.full(size[dims[0]], fp.smax(opts.gain_bits), np.int64)
        elif dims[0].startswith("lut:"):
            bits = sites[dims[0][len("lut:"):]]["bits"]
            T[name] = np.zeros(1 << bits, np.int64) + lut_max[name.rsplit(".", 1)[1]]
        else:
            T[name] = np.zeros(tuple(size[s] for s in dims), np.int64)
    scalars: dict = {}
    for n in S.all_norms(cfg, inner):
        scalars[f"gexp.{n.key}"], scalars[f"E.{n.reduction}"] = 0, 1
    for i in range(cfg.L):
        rescales = [o for p in S.LAYER_PROJECTIONS for o in p.out_sites] + list(S.LAYER_RESCALES)
        for key in rescales:
            scalars[f"M.{S.site(i, key)}"], scalars[f"s.{S.site(i, key)}"] = 1, 0
        for key in S.LAYER_PRODUCT_SHIFTS:
            scalars[S.site(i, key)] = 16
    return _SkeletonQM(cfg, opts, sites, T, scalars, dict(logit_scale=1.0, absmean={}, skeleton=True, density=density))


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
