"""Quantize and lower a float checkpoint layer by layer, so that memory holds about one layer (plus the
embedding and the head) whatever the depth: the model side of the constant-memory compile.

The layers of HGRN-Bit are independent once their calibration statistics exist, and a layer's
statistics need only the layers before it: calibration runs every calibration sequence through layer
0, then layer 1, ... (whole sequences, as ``FloatModel.forward`` does, with the same functions and the
same BitLinears, so every observed value is the same float). Layer i's scales are known after its
pass; its integer parameters also need the next layer's input scale, so layer i is quantized and
lowered after pass i + 1 (the last layer after the head's pass). Each step yields what it made
(``Step``): the caller writes its tensors and synapse arrays and may replace its synapse groups by
lighter ones before the next step; the step's weights are then dropped.

Every integer equals ``quantize`` + ``lower`` of the whole model (``tests/test_stream_compile.py``
compares whole builds byte for byte): the parameters are made by the same functions of
``quantize.py``, per layer; sites, scalars and tensors are keyed by name, so the order they are made
in does not show in any file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.tensorfile import narrowest_int

from . import quantize as Q
from . import structure as S
from .config import BITLINEAR_NORM_EPS, ModelConfig
from .float_model import ACT_QMAX, EPS_CLAMP, BitLinear, FloatModel, lower_bound_betas, rms_norm
from .lower import IncrementalLowering

EMBED_ROWS = 4096          # embedding rows quantized at a time
BLOCK_WEIGHTS = 1 << 22    # weights of a matrix read, ternarized or converted to float32 at a time


def _row_blocks(shape) -> range:
    """Starts of row blocks of about BLOCK_WEIGHTS weights."""
    step = max(1, BLOCK_WEIGHTS // max(1, int(np.prod(shape[1:]))))
    return range(0, shape[0], step)


def ternarize_blocks(weights, name: str) -> tuple[np.ndarray, float]:
    """``float_model.ternarize(weights[name])`` holding the float matrix a block of rows at a time: its
    |w| is gathered into one array (so the mean is numpy's own over the same array: the same float),
    then each block is divided and compared exactly as ``ternarize`` does, element by element."""
    shape = weights.shape(name)
    blocks = _row_blocks(shape)
    a = np.empty(shape, np.float32)
    for r in blocks:
        w = weights.rows(name, r, r + blocks.step)
        a[r:r + w.shape[0]] = np.abs(w)
    absmean = max(float(np.mean(a, dtype=np.float64)), EPS_CLAMP)
    del a
    wt = np.empty(shape, np.int8)
    for r in blocks:
        x = weights.rows(name, r, r + blocks.step) / absmean
        b = (x > 0.5).astype(np.int8)
        b -= x < -0.5
        wt[r:r + b.shape[0]] = b
    return wt, absmean


class InMemoryWeights(dict):
    """A dict of tensors with ``LazyWeights``' ``shape`` and ``rows`` (weights already in memory)."""

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape."""
        return tuple(self[name].shape)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of a tensor."""
        return self[name][start:stop]


class BlockBitLinear(BitLinear):
    """A BitLinear whose product is taken over blocks of output rows, each converted to float32 on its own.
    With quantized activations (the calibration's) every product and partial sum is an integer below
    2^24, which float32 holds exactly in any order, so the blocks give the same numbers as BitLinear
    while the float32 copy of the weights is one block, not the whole matrix (the head's is 327 MB)."""

    def __call__(self, x: np.ndarray, observe=None) -> np.ndarray:
        if not self.act_quant:
            return super().__call__(x, observe)
        xn = rms_norm(x, self.norm_w, self.eps) if self.norm_w is not None else x
        if observe:
            observe(self.site or f"{self.name}.in", xn)
        s = ACT_QMAX / np.maximum(np.max(np.abs(xn), axis=-1, keepdims=True), EPS_CLAMP)
        xq = np.clip(np.round(xn * s), -128, 127).astype(np.float32)
        y = np.empty(xq.shape[:-1] + (self.wt.shape[0],), np.float32)
        blocks = _row_blocks(self.wt.shape)
        for r in blocks:
            y[..., r:r + blocks.step] = xq @ np.ascontiguousarray(self.wt[r:r + blocks.step].T, dtype=np.float32)
        return y.astype(np.float64) / s * self.absmean


@dataclass
class Step:
    """What one step made: its name ("embedding", "layer 3", "head"), the names of the groups and
    synapse groups it added to the graph, its quantized tensors (name -> (array, declared dtype)) and the
    dense matrices its ternary synapse groups were made from."""

    name: str
    groups: list[str]
    synapses: list[str]
    tensors: dict = field(default_factory=dict)
    dense: dict = field(default_factory=dict)      # synapse name -> the dense ternary matrix (or view) it holds


class _LayerwiseFloat(FloatModel):
    """The float model with one layer's BitLinears at a time (``build``/``drop``): the same BitLinears as
    ``FloatModel(low_memory=True)`` builds, and FloatModel's own block functions run them."""

    def __init__(self, cfg: ModelConfig, weights, remove_inner_norm: bool):
        self.cfg, self.weights = cfg, weights
        self.eps, self.inner_eps, self.remove_inner_norm = cfg.rms_norm_eps, BITLINEAR_NORM_EPS, remove_inner_norm
        self.betas = (lower_bound_betas(weights[S.LOWER_BOUNDS]) if cfg.use_lower_bound
                      else np.zeros((cfg.L, cfg.d_attn)))
        self.layers: dict = {}
        self.final_norm = weights[S.weight_name(S.FINAL_NORM, None)].astype(np.float64)
        self.head = None

    def _bitlinear(self, proj: S.Projection, layer: int | None) -> BitLinear:
        module = S.weight_name(proj, layer)[: -len(".weight")]
        tied = proj is S.HEAD and self.cfg.tie_word_embeddings          # lm_head reuses the embeddings
        wt, absmean = ternarize_blocks(self.weights, S.EMBEDDINGS if tied else f"{module}.weight")
        nw = None if self.remove_inner_norm else self.weights[f"{module}.norm.weight"].astype(np.float64)
        return BlockBitLinear(module, wt, absmean, nw, self.inner_eps, True, False, S.site(layer, proj.in_site))

    def build(self, i: int) -> None:
        """Make layer i's norms and BitLinears (ternarizing its matrices from the checkpoint)."""
        ly = {n.key: self.weights[S.weight_name(n, i)].astype(np.float64) for n in S.LAYER_NORMS}
        ly.update({p.key: self._bitlinear(p, i) for p in S.LAYER_PROJECTIONS})
        self.layers[i] = ly

    def build_head(self) -> None:
        """Make the head's BitLinear."""
        self.head = self._bitlinear(S.HEAD, None)


class _Observer:
    """``calibrate``'s observer: max |value| per site, and the values themselves for "mse" scales."""

    def __init__(self, keep_values: bool):
        self.amax: dict[str, float] = {}
        self.vals: dict[str, list] = {}
        self.keep = keep_values

    def __call__(self, name: str, v: np.ndarray) -> None:
        self.amax[name] = max(self.amax.get(name, 0.0), float(np.max(np.abs(v))) if v.size else 0.0)
        if self.keep:
            self.vals.setdefault(name, []).append(np.asarray(v, np.float64).ravel())

    def samples(self, name: str) -> np.ndarray | None:
        """The site's kept values as ``calibrate`` returns them (a strided subsample), None without "mse"."""
        if not self.keep:
            return None
        v = np.concatenate(self.vals[name])
        return v[::max(1, -(-v.size // Q.MSE_SAMPLE))]


class StreamingModel:
    """``quantize(cfg, weights, calib, options)`` then ``lower`` of it, made step by step (``steps()``).
    After the last step ``sites``, ``scalars`` and ``meta`` are the quantized model's, and ``graph`` is
    the IR (with whatever the caller put in place of each step's synapse groups)."""

    def __init__(self, cfg: ModelConfig, weights, calib_tokens, options: Q.QuantOptions | None = None):
        weights = weights if hasattr(weights, "rows") else InMemoryWeights(weights)
        self.cfg, self.weights = cfg, weights
        self.opts = options or Q.QuantOptions()
        self.opts.validate()
        self.seqs = [np.asarray(list(s), dtype=np.int64) for s in calib_tokens]
        self.fm = _LayerwiseFloat(cfg, weights, self.opts.remove_inner_norm)
        self.obs = _Observer(self.opts.scale_method == "mse")
        self.q = Q._Params(cfg, self.opts, {})
        self.q.meta["logit_scale"] = None           # set by the head, before the graph is written
        self.qm = Q.QuantizedModel(cfg, self.opts, self.q.sites, self.q.tensors, self.q.scalars, self.q.meta)
        self.lowering = IncrementalLowering(self.qm, widen_host=False, keep_dense=True)
        self.declared = {k: v[1] for k, v in S.quantized_tensors(cfg, not self.opts.remove_inner_norm).items()}
        self._site_kinds = dict(S.quant_sites(cfg, not self.opts.remove_inner_norm))

    @property
    def sites(self) -> dict:
        """Every site's width and scale (complete after the last step)."""
        return self.q.sites

    @property
    def scalars(self) -> dict:
        """Every integer scalar (complete after the last step)."""
        return self.q.scalars

    @property
    def meta(self) -> dict:
        """The float facts quant.json keeps (absmeans, logit scale)."""
        return self.q.meta

    @property
    def graph(self):
        """The IR as lowered so far."""
        return self.lowering.graph

    # ---- calibration ----------------------------------------------------------------------------------
    def _pass(self, i: int, xs: list[np.ndarray]) -> list[np.ndarray]:
        """Every calibration sequence through layer i, as FloatModel.forward runs a layer."""
        out = []
        for x in xs:
            f, c, g = self.fm._mixer_inputs(i, x, self.obs)
            h = np.empty_like(c)
            hi = np.zeros(self.cfg.d_attn)
            for t in range(len(x)):
                hi = f[t] * hi + c[t]
                h[t] = hi
            out.append(self.fm._mixer_output(i, x, h, g, self.obs))
        hq, h = S.site(i, "hq"), S.site(i, S.STATE_SITE)    # hq is the state requantized: its range is the state's
        self.obs.amax[hq] = self.obs.amax[h]
        if self.obs.keep:
            self.obs.vals[hq] = self.obs.vals[h]
        return out

    def _scales(self, layer: int | None) -> None:
        """The scales of every site of one layer, or of the final sites (None)."""
        names = [S.site(layer, k) for k in S.LAYER_SITES] if layer is not None else list(S.FINAL_SITES)
        for name in names:
            kind = self._site_kinds.get(name)
            if kind is not None:
                self.q.sites[name] = Q.site_entry(kind, self.opts, self.obs.amax[name], self.obs.samples(name))

    # ---- the steps ------------------------------------------------------------------------------------
    def steps(self) -> Iterator[Step]:
        """Calibrate, quantize and lower, yielding each step once its tensors and groups are made."""
        xs = [self._embedding_rows(s) for s in self.seqs]
        for i in range(self.cfg.L):
            self.fm.build(i)
            xs = self._pass(i, xs)
            self._scales(i)
            if i == 0:
                yield self._step("embedding", self.lowering.embedding, self._embedding)
            else:
                yield self._layer_step(i - 1)
        self.fm.build_head()
        for x in xs:
            self.fm._head(x, self.obs)
        self._scales(None)
        yield self._layer_step(self.cfg.L - 1)
        yield self._step("head", self.lowering.head, self._head_parameters)
        self.graph.meta["logit_scale"] = self.q.meta["logit_scale"]

    def _step(self, name: str, lower_fn, make_fn) -> Step:
        """Make a step's parameters (``make_fn``), check their ranges, lower it (``lower_fn``)."""
        before, s0 = set(self.q.tensors), dict(self.q.scalars)
        make_fn()
        made = [k for k in self.q.tensors if k not in before]
        Q._check_ranges({k: self.q.tensors[k] for k in made},
                        {k: v for k, v in self.q.scalars.items() if k not in s0 or s0[k] != v})
        groups, syns = lower_fn()
        dense = {n: self.lowering.b.dense_of.pop(n) for n in syns if n in self.lowering.b.dense_of}
        step = Step(name, groups, syns, {k: (self.q.tensors[k], self.declared[k]) for k in made}, dense)
        for k in made:                                # the caller writes them; the model drops them
            del self.q.tensors[k]
        return step

    def _layer_step(self, i: int) -> Step:
        step = self._step(f"layer {i}", lambda: self.lowering.layer(i), lambda: self._layer_parameters(i))
        del self.fm.layers[i]
        return step

    def _layer_parameters(self, i: int) -> None:
        """Layer i's parameters, by quantize's own functions."""
        Q._norm_parameters(self.q, self.weights, layers={i})
        for p in S.LAYER_PROJECTIONS:
            Q.projection_parameters(self.q, i, p, self.fm.layers[i][p.key])
        Q._mlgru_parameters(self.q, i, self.fm.betas[i])
        Q._mixer_parameters(self.q, i)

    def _head_parameters(self) -> None:
        Q._norm_parameters(self.q, self.weights, layers={None})
        Q.projection_parameters(self.q, None, S.HEAD, self.fm.head)
        self.fm.head = None

    def _embedding_rows(self, tokens: np.ndarray) -> np.ndarray:
        """``emb[tokens]`` in float64, reading the embedding a block of rows at a time."""
        shape = self.weights.shape(S.EMBEDDINGS)
        out = np.empty((len(tokens), shape[1]), np.float64)
        blocks = _row_blocks(shape)
        for r in blocks:
            sel = np.flatnonzero((tokens >= r) & (tokens < r + blocks.step))
            if sel.size:
                out[sel] = self.weights.rows(S.EMBEDDINGS, r, r + blocks.step)[tokens[sel] - r].astype(np.float64)
        return out

    def _embedding(self) -> None:
        """emb.Q as ``quantize._embedding`` makes it, row block by row block, held at its narrowest
        integer type (its stored form) instead of int64."""
        x0 = S.site(0, "x")
        s, bits = self.q.sc(x0), self.q.bits(x0)
        shape = self.weights.shape(S.EMBEDDINGS)
        starts = range(0, shape[0], EMBED_ROWS)
        block = lambda a: np.clip(np.round(self.weights.rows(S.EMBEDDINGS, a, a + EMBED_ROWS)  # noqa: E731
                                           .astype(np.float64) / s), fp.smin(bits), fp.smax(bits)).astype(np.int64)
        lo = hi = 0
        for a in starts:                              # first the range, to pick the type
            b = block(a)
            if b.size:
                lo, hi = (int(b.min()), int(b.max())) if a == 0 else (min(lo, int(b.min())), max(hi, int(b.max())))
        out = np.empty(shape, narrowest_int(np.array([lo, hi])))
        for a in starts:
            out[a:a + EMBED_ROWS] = block(a)
        self.q.tensors["emb.Q"] = out
