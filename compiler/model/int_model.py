"""Integer reference model: the whole network, token by token, in integers only.

It is the golden model that the IR reference executor, the Numba engine and the Lava back-end must equal
bit for bit. ``step`` is written for obviousness, not speed: every line is one op of ``mflc.ir.fixedpoint``
applied to the integers the quantizer stored, in the order the equations of docs/fixed-point.md give.

``forward_sequence`` computes the same integers for a whole known sequence at once (verify, eval): layer
by layer over all T tokens, each ternary projection one matrix product of [T, in] activations (exact:
``fp.exact_matmul`` picks float32, float64 or int64 from the proven bound), the elementwise recurrence
h_t = f_t ⊙ h_{t-1} + c_t scanned token by token over whole rows, every other op vectorised over [T, d].
tests/test_int_sequence.py checks it equal to ``step`` on every logit and state.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mflc.ir import fixedpoint as fp

from .quantize import QuantizedModel

Trace = Callable[[str, np.ndarray], None]
TERNARY_W_MAX = 1     # the quantizer's projection weights are ternary by format: |w| <= 1 is declared, not measured


def _no_trace(name: str, values: np.ndarray) -> None:
    return None


def ternary_matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_j w_ij x_j with w ∈ {-1,0,1}: additions only, exact in int64."""
    return w.astype(np.int64) @ x.astype(np.int64)


class IntModel:
    """The golden integer model: the quantized network stepped in numpy, with no IR in between."""

    def __init__(self, qm: QuantizedModel):
        self.qm = qm
        self.cfg = qm.cfg
        self.inner = not qm.options.remove_inner_norm
        self.force_dtype = None   # None: exact_product_dtype's choice; np.int64 forces the integer fallback
        self._tr: Trace = _no_trace   # the current run's trace: every norm and requantization reports its site

    def init_state(self) -> np.ndarray:
        """The all-zero recurrent state of every layer."""
        return np.zeros((self.cfg.L, self.cfg.d_attn), dtype=np.int64)

    # -- building blocks, each a direct use of the op library --
    def _norm(self, x, red_key, apply_key, out_site):
        """RMSNorm of the last axis (one token [d], or a sequence [T, d] row by row)."""
        qm = self.qm
        sq = fp.square_shr(x, qm.scalars.get(f"sq.{red_key}", 0))
        packed = fp.rms_factor(np.sum(sq, axis=-1, keepdims=np.ndim(x) > 1), qm.s(f"E.{red_key}"))
        y = fp.rms_apply(x, packed, qm.t(f"G.{apply_key}"), qm.s(f"gexp.{apply_key}"), qm.bits(out_site))
        self._tr(out_site, y)
        return y

    def _requant(self, acc, key, out_site):
        y = fp.rescale(acc, self.qm.s(f"M.{key}"), self.qm.s(f"s.{key}"), self.qm.bits(out_site))
        self._tr(out_site, y)
        return y

    def _align(self, x, key):
        return fp.rescale(x, self.qm.s(f"M.{key}"), self.qm.s(f"s.{key}"), fp.MSG_BITS_MAX)

    def step(self, token: int, state: np.ndarray, trace: Trace | None = None):
        """One token: (logits int64 [V], new state int64 [L, d_attn]). ``state`` is not modified."""
        qm, cfg = self.qm, self.cfg
        tr = self._tr = trace or _no_trace
        if not 0 <= int(token) < cfg.vocab_size:
            raise ValueError(f"token {token} outside the vocabulary [0, {cfg.vocab_size})")
        x = qm.t("emb.Q")[int(token)].astype(np.int64)
        new = state.copy()
        m = cfg.m
        for i in range(cfg.L):
            L = f"L{i}."
            nxt = f"L{i + 1}.x" if i + 1 < cfg.L else "final.x"
            tr(L + "x", x)
            u = self._norm(x, L + "x", L + "attn_norm", L + "attn_norm")
            acc = {}
            for p in ("i", "f", "g"):
                v = self._norm(u, L + "u", L + f"{p}_in", L + f"{p}_in") if self.inner else u
                acc[p] = ternary_matvec(qm.t(f"W.{L}{p}"), v)
            iq = self._requant(acc["i"], L + "i", L + "i")
            fq = self._requant(acc["f"], L + "f", L + "f")
            gq = self._requant(acc["g"], L + "g", L + "g")
            sig = fp.lut(fq, qm.t(L + "lut.sig_f"), qm.bits(L + "f"))
            f = fp.forget_gate(sig, qm.t(L + "B"))
            si = fp.lut(iq, qm.t(L + "lut.silu_i"), qm.bits(L + "i"))
            c = fp.mlgru_candidate(si, f, qm.bits(L + "h"))
            h = fp.mlgru_update(state[i], f, c, qm.bits(L + "h"))
            new[i] = h
            tr(L + "h", h)
            hq = self._requant(h, L + "hq", L + "hq")
            gn = self._norm(gq, L + "g", L + "gn", L + "gn")
            sh = fp.lut(hq, qm.t(L + "lut.silu_h"), qm.bits(L + "hq"))
            o = fp.mul_shr(gn, sh, qm.s(L + "n.o"), qm.bits(L + "o"))
            tr(L + "o", o)
            v = self._norm(o, L + "o", L + "o_in", L + "o_in") if self.inner else o
            ao = self._requant(ternary_matvec(qm.t(f"W.{L}o"), v), L + "attn_out", L + "attn_out")
            r = fp.add_sat(self._align(x, L + "res_x"), self._align(ao, L + "res_ao"), qm.bits(L + "r"))
            tr(L + "r", r)
            vm = self._norm(r, L + "r", L + "mlp_norm", L + "mlp_norm")
            vg = self._norm(vm, L + "v", L + "gate_in", L + "gate_in") if self.inner else vm
            ab = ternary_matvec(qm.t(f"W.{L}gate"), vg)
            a = self._requant(ab[:m], L + "a", L + "a")
            b = self._requant(ab[m:], L + "b", L + "b")
            sa = fp.lut(a, qm.t(L + "lut.silu_a"), qm.bits(L + "a"))
            z = fp.mul_shr(sa, b, qm.s(L + "n.z"), qm.bits(L + "z"))
            tr(L + "z", z)
            vd = self._norm(z, L + "z", L + "down_in", L + "down_in") if self.inner else z
            mo = self._requant(ternary_matvec(qm.t(f"W.{L}down"), vd), L + "mlp_out", L + "mlp_out")
            x = fp.add_sat(self._align(r, L + "res_r"), self._align(mo, L + "res_mo"), qm.bits(nxt))
        tr("final.x", x)
        xn = self._norm(x, "final.x", "final.norm", "final.norm")
        vh = self._norm(xn, "final.norm", "head.in", "head.in") if self.inner else xn
        logits = ternary_matvec(qm.t("W.head"), vh)
        tr("logits", logits)
        self._tr = _no_trace          # the caller's trace is not kept (the model stays picklable)
        return logits, new

    def forward(self, tokens, state: np.ndarray | None = None):
        """Logits of every token of a sequence [T, V] and the final state."""
        st = self.init_state() if state is None else state
        out = []
        for t in tokens:
            lg, st = self.step(int(t), st)
            out.append(lg)
        return np.stack(out) if out else np.zeros((0, self.cfg.vocab_size), np.int64), st

    # -- the whole sequence at once: the same integers as ``step``, token after token --
    def _project(self, x, name: str, in_site: str, dtype=None) -> np.ndarray:
        """All tokens of one ternary projection: [T, in] @ W.T as one exact product ([T, out] int64)."""
        dt = self.force_dtype if dtype is None else dtype
        return fp.exact_matmul(x, self.qm.t(name), self.qm.bits(in_site), TERNARY_W_MAX, dt)

    def _proj_in(self, v, L: str, p: str):
        """A projection's input: its own inner RMSNorm of ``v``, unless the build removed inner norms."""
        src = {"i": "u", "f": "u", "g": "u", "o": "o", "gate": "v", "down": "z"}[p]
        site = {"i": "i_in", "f": "f_in", "g": "g_in", "o": "o_in", "gate": "gate_in", "down": "down_in"}[p]
        return self._norm(v, L + src, L + site, L + site) if self.inner else v

    def _bits_of_input(self, L: str, p: str, outer: str) -> str:
        """The site whose declared width bounds projection ``p``'s input (the inner norm, or ``outer``)."""
        site = {"i": "i_in", "f": "f_in", "g": "g_in", "o": "o_in", "gate": "gate_in", "down": "down_in"}[p]
        return L + site if self.inner else outer

    def _seq_mixer(self, i: int, x, h0, tr):
        """Token mixing of layer i over all tokens: (r [T, d], states h [T, d_attn])."""
        qm, L = self.qm, f"L{i}."
        tr(L + "x", x)
        u = self._norm(x, L + "x", L + "attn_norm", L + "attn_norm")
        q = {}
        for p in ("i", "f", "g"):
            acc = self._project(self._proj_in(u, L, p), f"W.{L}{p}", self._bits_of_input(L, p, L + "attn_norm"))
            q[p] = self._requant(acc, L + p, L + p)
        f = fp.forget_gate(fp.lut(q["f"], qm.t(L + "lut.sig_f"), qm.bits(L + "f")), qm.t(L + "B"))
        c = fp.mlgru_candidate(fp.lut(q["i"], qm.t(L + "lut.silu_i"), qm.bits(L + "i")), f, qm.bits(L + "h"))
        h = np.empty_like(c)
        prev = np.asarray(h0, np.int64)
        for t in range(len(c)):                 # the recurrence: the only loop over tokens
            prev = h[t] = fp.mlgru_update(prev, f[t], c[t], qm.bits(L + "h"))
        tr(L + "h", h)
        hq = self._requant(h, L + "hq", L + "hq")
        gn = self._norm(q["g"], L + "g", L + "gn", L + "gn")
        o = fp.mul_shr(gn, fp.lut(hq, qm.t(L + "lut.silu_h"), qm.bits(L + "hq")), qm.s(L + "n.o"), qm.bits(L + "o"))
        tr(L + "o", o)
        acc = self._project(self._proj_in(o, L, "o"), f"W.{L}o", self._bits_of_input(L, "o", L + "o"))
        ao = self._requant(acc, L + "attn_out", L + "attn_out")
        r = fp.add_sat(self._align(x, L + "res_x"), self._align(ao, L + "res_ao"), qm.bits(L + "r"))
        tr(L + "r", r)
        return r, h

    def _seq_mlp(self, i: int, r, tr):
        """Channel mixing of layer i over all tokens: the next layer's input x [T, d]."""
        qm, cfg, L = self.qm, self.cfg, f"L{i}."
        nxt = f"L{i + 1}.x" if i + 1 < cfg.L else "final.x"
        vm = self._norm(r, L + "r", L + "mlp_norm", L + "mlp_norm")
        ab = self._project(self._proj_in(vm, L, "gate"), f"W.{L}gate", self._bits_of_input(L, "gate", L + "mlp_norm"))
        a = self._requant(ab[:, :cfg.m], L + "a", L + "a")
        b = self._requant(ab[:, cfg.m:], L + "b", L + "b")
        z = fp.mul_shr(fp.lut(a, qm.t(L + "lut.silu_a"), qm.bits(L + "a")), b, qm.s(L + "n.z"), qm.bits(L + "z"))
        tr(L + "z", z)
        acc = self._project(self._proj_in(z, L, "down"), f"W.{L}down", self._bits_of_input(L, "down", L + "z"))
        mo = self._requant(acc, L + "mlp_out", L + "mlp_out")
        return fp.add_sat(self._align(r, L + "res_r"), self._align(mo, L + "res_mo"), qm.bits(nxt))

    def forward_sequence(self, tokens, state: np.ndarray | None = None, trace: Trace | None = None):
        """Logits of every token [T, V] and the recurrent state after every token [T, L, d_attn], computed
        layer by layer over the whole sequence; equal, integer for integer, to stepping ``step``.
        ``trace(name, values)`` sees each site for all tokens at once ([T, ...])."""
        cfg, tr = self.cfg, trace or _no_trace
        self._tr = tr
        toks = np.asarray([int(t) for t in tokens], np.int64)
        bad = (toks < 0) | (toks >= cfg.vocab_size)
        if bad.any():
            raise ValueError(f"token {int(toks[bad][0])} outside the vocabulary [0, {cfg.vocab_size})")
        h0 = self.init_state() if state is None else np.asarray(state, np.int64)
        states = np.zeros((len(toks), cfg.L, cfg.d_attn), np.int64)
        if len(toks) == 0:
            return np.zeros((0, cfg.vocab_size), np.int64), states
        x = self.qm.t("emb.Q")[toks].astype(np.int64)
        for i in range(cfg.L):
            r, states[:, i] = self._seq_mixer(i, x, h0[i], tr)
            x = self._seq_mlp(i, r, tr)
        tr("final.x", x)
        xn = self._norm(x, "final.x", "final.norm", "final.norm")
        vh = self._norm(xn, "final.norm", "head.in", "head.in") if self.inner else xn
        logits = self._project(vh, "W.head", "head.in" if self.inner else "final.norm")
        tr("logits", logits)
        self._tr = _no_trace
        return logits, states

    def logits_to_float(self, logits: np.ndarray) -> np.ndarray:
        """Integer logits in real units (times the logit scale), to compare with the float model."""
        return logits.astype(np.float64) * self.qm.meta["logit_scale"]
