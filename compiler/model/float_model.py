"""Float reference of HGRN-Bit in numpy: the spec the fixed-point model is measured against.

It computes what the released checkpoint computes at inference: every BitLinear normalises its input
with its own RMSNorm, fake-quantizes it to int8 with a per-token absmax scale and multiplies by the
absmean-ternarised weight. Token-by-token stepping with an explicit recurrent state mirrors how the
chip runs the model; ``forward`` is the same computation over a whole sequence, for evaluation.

An optional ``observe(site, value)`` callback sees every quantization site; the quantizer uses it to
calibrate static scales.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import structure as S
from .config import BITLINEAR_NORM_EPS, ModelConfig

Observer = Callable[[str, np.ndarray], None]

ACT_QMAX = 127.0  # released activation_quant: scale = 127 / absmax, clamp to [-128, 127]
EPS_CLAMP = 1e-5  # released code clamps absmax and absmean at 1e-5


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis, with gain w."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    """x times sigmoid(x), the models' activation."""
    return x / (1.0 + np.exp(-x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function (forget gates)."""
    return 1.0 / (1.0 + np.exp(-x))


def ternarize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """BitLinear weight quantization: W ≈ W_t · absmean, W_t ∈ {-1, 0, 1} (int8)."""
    absmean = max(float(np.mean(np.abs(w), dtype=np.float64)), EPS_CLAMP)
    x = w / absmean
    # = clip(round(x), -1, 1) with round half to even (±0.5 -> 0), in two comparisons instead of
    # three float passes (tests/test_models.py checks the identity, ties included)
    wt = (x > 0.5).astype(np.int8)
    wt -= x < -0.5
    return wt, absmean


def lower_bound_betas(lower_bounds: np.ndarray) -> np.ndarray:
    """β_i = cumsum(softmax over layers)_i − softmax_0, per layer and channel (β_0 = 0)."""
    lb = lower_bounds.astype(np.float64)
    e = np.exp(lb - lb.max(axis=0, keepdims=True))
    sm = e / e.sum(axis=0, keepdims=True)
    return np.cumsum(sm, axis=0) - sm[0:1]


@dataclass
class BitLinear:
    """One ternary projection with its own input RMSNorm."""

    name: str
    wt: np.ndarray          # [out, in] int8 ternary
    absmean: float          # weight scale: W ≈ wt * absmean
    norm_w: np.ndarray | None  # [in] float64, None when the inner norm is removed
    eps: float
    act_quant: bool = True
    cache_float32: bool = True
    site: str | None = None    # the quantization site its normed input is observed as (structure.site)

    def __post_init__(self):
        # float32 transpose, made once: with quantized (integer-valued, |x| <= 128) activations every
        # product and sum is an integer below 2^24, so float32 computes it exactly. Without the cache
        # (cache_float32=False: 4 bytes a weight saved, for whole-sequence passes such as calibration)
        # each call converts the int8 matrix for its one product.
        self.wt_t = np.ascontiguousarray(self.wt.T, dtype=np.float32) if self.cache_float32 else None

    def _weights_t(self) -> np.ndarray:
        # the same layout as the cache, so BLAS takes the same path and float inputs round the same way
        return self.wt_t if self.wt_t is not None else np.ascontiguousarray(self.wt.T, dtype=np.float32)

    @classmethod
    def from_weights(cls, name, weights, eps, use_norm=True, act_quant=True, cache_float32=True,
                     site=None) -> "BitLinear":
        """A BitLinear from checkpoint weights: ternarized matrix, its absmean and the inner norm's gain."""
        wt, absmean = ternarize(weights[f"{name}.weight"])
        nw = weights[f"{name}.norm.weight"].astype(np.float64) if use_norm else None
        return cls(name, wt, absmean, nw, eps, act_quant, cache_float32, site)

    def __call__(self, x: np.ndarray, observe: Observer | None = None) -> np.ndarray:
        xn = rms_norm(x, self.norm_w, self.eps) if self.norm_w is not None else x
        if observe:
            observe(self.site or f"{self.name}.in", xn)
        if self.act_quant:
            s = ACT_QMAX / np.maximum(np.max(np.abs(xn), axis=-1, keepdims=True), EPS_CLAMP)
            xq = np.clip(np.round(xn * s), -128, 127).astype(np.float32)
            return (xq @ self._weights_t()).astype(np.float64) / s * self.absmean
        return (xn.astype(np.float32) @ self._weights_t()).astype(np.float64) * self.absmean


class FloatModel:
    """HGRN-Bit in float64. ``remove_inner_norm`` drops each BitLinear's own RMSNorm (the fork's option);
    ``low_memory`` keeps only the int8 ternary matrices (no float32 copies: 5x less for the weights,
    slower token-by-token ``step``, the same numbers)."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray], *, remove_inner_norm: bool = False,
                 act_quant: bool = True, low_memory: bool = False):
        self.cfg = cfg
        self.eps = cfg.rms_norm_eps            # attn_norm, g_norm, mlp_norm, final norm: the config's
        self.inner_eps = BITLINEAR_NORM_EPS    # every BitLinear's own input norm: fixed, as released
        self.remove_inner_norm = remove_inner_norm
        f64 = lambda k: weights[k].astype(np.float64)  # noqa: E731
        self.emb = f64(S.EMBEDDINGS)
        self.betas = (lower_bound_betas(weights[S.LOWER_BOUNDS]) if cfg.use_lower_bound
                      else np.zeros((cfg.L, cfg.d_attn)))

        def mk(proj: S.Projection, layer: int | None, ws=weights) -> BitLinear:
            """The BitLinear of one projection of a layer, named and observed as the structure says."""
            module = S.weight_name(proj, layer)[: -len(".weight")]
            return BitLinear.from_weights(module, ws, self.inner_eps, not remove_inner_norm, act_quant,
                                          not low_memory, S.site(layer, proj.in_site))
        # per layer: the norm weights by their quantization-site key (attn_norm, gn, mlp_norm) and the
        # projections by theirs (i, f, g, o, gate, down), as structure.LAYER_PARTS declares them
        self.layers = []
        for i in range(cfg.L):
            ly = {n.key: f64(S.weight_name(n, i)) for n in S.LAYER_NORMS}
            ly.update({p.key: mk(p, i) for p in S.LAYER_PROJECTIONS})
            self.layers.append(ly)
        self.final_norm = f64(S.weight_name(S.FINAL_NORM, None))
        head = dict(weights)
        if cfg.tie_word_embeddings:
            head[S.HEAD_WEIGHT] = weights[S.EMBEDDINGS]
        self.head = mk(S.HEAD, None, head)

    def init_state(self) -> np.ndarray:
        """Recurrent state h of every layer, [L, d_attn]."""
        return np.zeros((self.cfg.L, self.cfg.d_attn))

    # The block is written once for a [..., d] batch of tokens: step passes one token, forward passes
    # all tokens of a sequence with the recurrence done in a loop.
    def _mixer_inputs(self, i: int, x: np.ndarray, obs: Observer | None):
        ly = self.layers[i]
        if obs:
            obs(S.site(i, "x"), x)
        u = rms_norm(x, ly["attn_norm"], self.eps)
        if obs:
            obs(S.site(i, "attn_norm"), u)
        fi, ff, fg = ly["i"](u, obs), ly["f"](u, obs), ly["g"](u, obs)
        if obs:
            obs(S.site(i, "i"), fi), obs(S.site(i, "f"), ff), obs(S.site(i, "g"), fg)
        beta = self.betas[i]
        f = beta + (1.0 - beta) * sigmoid(ff)
        c = silu(fi) * (1.0 - f)
        return f, c, fg

    def _mixer_output(self, i: int, x, h, g, obs: Observer | None):
        ly = self.layers[i]
        if obs:
            obs(S.site(i, S.STATE_SITE), h)
        gn = rms_norm(g, ly["gn"], self.eps)
        if obs:
            obs(S.site(i, "gn"), gn)
        o = gn * silu(h)
        if obs:
            obs(S.site(i, "o"), o)
        a_out = ly["o"](o, obs)
        if obs:
            obs(S.site(i, "attn_out"), a_out)
        r = x + a_out
        if obs:
            obs(S.site(i, "r"), r)
        v = rms_norm(r, ly["mlp_norm"], self.eps)
        if obs:
            obs(S.site(i, "mlp_norm"), v)
        ab = ly["gate"](v, obs)
        m = self.cfg.m
        a, b = ab[..., :m], ab[..., m:]
        if obs:
            obs(S.site(i, "a"), a), obs(S.site(i, "b"), b)
        z = silu(a) * b
        if obs:
            obs(S.site(i, "z"), z)
        mo = ly["down"](z, obs)
        if obs:
            obs(S.site(i, "mlp_out"), mo)
        return r + mo

    def _head(self, x, obs: Observer | None):
        if obs:
            obs(S.FINAL_NORM.src_site, x)
        xn = rms_norm(x, self.final_norm, self.eps)
        if obs:
            obs(S.FINAL_NORM.key, xn)
        return self.head(xn, obs)

    def step(self, token: int, state: np.ndarray, observe: Observer | None = None):
        """One token: returns (logits [V], new state [L, d_attn]). ``state`` is not modified."""
        x = self.emb[int(token)]
        new = state.copy()
        for i in range(self.cfg.L):
            f, c, g = self._mixer_inputs(i, x, observe)
            new[i] = f * state[i] + c
            x = self._mixer_output(i, x, new[i], g, observe)
        return self._head(x, observe), new

    def forward(self, tokens, state: np.ndarray | None = None, observe: Observer | None = None):
        """Whole sequence: returns (logits [T, V], final state)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        x = self.emb[tokens]
        st = self.init_state() if state is None else state.copy()
        for i in range(self.cfg.L):
            f, c, g = self._mixer_inputs(i, x, observe)
            h = np.empty_like(c)
            hi = st[i]
            for t in range(len(tokens)):
                hi = f[t] * hi + c[t]
                h[t] = hi
            st[i] = hi
            x = self._mixer_output(i, x, h, g, observe)
        return self._head(x, observe), st
