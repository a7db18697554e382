"""docs/fixed-point.md runs: its ```exact blocks, read from the Markdown, equal ir/fixedpoint.py.

Every op's formula is checked exhaustively where the domain allows (every 8-bit input, every pair of
8-bit inputs for two-operand ops, every 16-bit input of one-operand ops, rsqrt at every t < 2^16 and
every normalised u) and on random inputs elsewhere (seeded numpy draws here, hypothesis below). The
block's per-site steps are run on the default model and the tiny preset and compared, site by site and
token by token, with ``IntModel.step``. A copied page with one constant changed by one fails.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mflc
import specdoc
from mflc.compiler.model.int_model import IntModel
from mflc.ir.range_analysis import norm_square_shift
from mflc.ir import fixedpoint as fp

DOC = Path(__file__).resolve().parents[1] / "docs" / "fixed-point.md"
I16 = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
I8 = np.arange(-128, 128, dtype=np.int64)
PAIRS8 = np.array(np.meshgrid(I8, I8)).reshape(2, -1)

BLOCK_NAMES = ("N", "R", "A", "V", "embed", "layer", "head")


def _eq(name, want, got, args):
    want, got = np.asarray(want, dtype=object), np.asarray(got, dtype=object)
    if want.shape != got.shape or not (want == got).all():
        bad = np.argwhere(want != got)[0] if want.shape == got.shape else ()
        at = tuple(int(i) for i in bad)
        raise AssertionError(f"docs/fixed-point.md {name}: differs from ir/fixedpoint.py at {at}: "
                             f"doc {want[at] if at else want.shape}, code {got[at] if at else got.shape} "
                             f"(arguments {args})")


def _map(fn, *cols):
    return [fn(*(int(c[k]) for c in cols)) for k in range(len(cols[0]))]


def _wide(rng, bits, n):
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), n, dtype=np.int64)


# ---- one check per documented op: (doc namespace, rng) -> None, AssertionError naming the op ----------
def c_saturate(d, rng):
    for b in (2, 8, 12, 16, 24):
        _eq("saturate", _map(lambda x: d["saturate"](x, b), I16), fp.saturate(I16, b), f"bits={b}")
    x = _wide(rng, 62, 4000)
    for b in (2, 24, 40):
        _eq("saturate", _map(lambda v: d["saturate"](v, b), x), fp.saturate(x, b), f"bits={b}")


def c_shr_round(d, rng):
    for n in range(-3, 18):
        _eq("shr_round", _map(lambda x: d["shr_round"](x, n), I16), fp.shr_round(I16, n), f"n={n}")
    x, n = _wide(rng, 52, 6000), rng.integers(-8, 63, 6000)     # left shifts are small: the result stays < 2^62
    _eq("shr_round", _map(d["shr_round"], x, n), fp.shr_round(x, n), "array n")


def c_shr_floor(d, rng):
    for n in range(-3, 18):
        _eq("shr_floor", _map(lambda x: d["shr_floor"](x, n), I16), fp.shr_floor(I16, n), f"n={n}")
    x = _wide(rng, 50, 3000)
    for n in (1, 20, 49):
        _eq("shr_floor", _map(lambda v: d["shr_floor"](v, n), x), fp.shr_floor(x, n), f"n={n}")


def c_mul_shr(d, rng):
    a, b = PAIRS8
    for n, ob in ((0, 16), (3, 8), (7, 8), (9, 12)):
        _eq("mul_shr", _map(lambda x, y: d["mul_shr"](x, y, n, ob), a, b), fp.mul_shr(a, b, n, ob), f"n={n}")
    a, b = _wide(rng, 24, 3000), _wide(rng, 24, 3000)
    for n, ob in ((0, 24), (17, 20), (30, 12), (-4, 24)):
        _eq("mul_shr", _map(lambda x, y: d["mul_shr"](x, y, n, ob), a, b), fp.mul_shr(a, b, n, ob), f"n={n}")


def c_rescale(d, rng):
    x, m = _wide(rng, 24, 3000), rng.integers(0, 1 << 23, 3000)
    for s, b in ((0, 24), (15, 8), (22, 12)):
        _eq("rescale", _map(lambda v, mm: d["rescale"](v, mm, s, b), x, m), [int(fp.rescale(v, int(mm), s, b)) for v, mm in zip(x, m)], f"s={s}")


def c_pow2_rescale(d, rng):
    for a in range(-12, 13):
        for b in range(-12, 13):
            _eq("pow2_rescale", d["pow2_rescale"](a, b), fp.pow2_rescale(a, b), (a, b))


def c_quantize_multiplier(d, rng):
    reals = np.exp(rng.uniform(math.log(1e-6), math.log(1e6), 3000))
    reals = [0.0, *(2.0 ** k for k in range(-20, 21)), *(float(r) for r in reals)]
    for b in (8, 12, 16, 24):
        for r in reals:
            _eq("quantize_multiplier", d["quantize_multiplier"](r, b), fp.quantize_multiplier(r, b), (r, b))


def c_add_sat(d, rng):
    a, b = PAIRS8
    for bits in (8, 9):
        _eq("add_sat", _map(lambda x, y: d["add_sat"](x, y, bits), a, b), fp.add_sat(a, b, bits), bits)
    a, b = _wide(rng, 24, 3000), _wide(rng, 24, 3000)
    _eq("add_sat", _map(lambda x, y: d["add_sat"](x, y, 24), a, b), fp.add_sat(a, b, 24), 24)


def c_square(d, rng):
    _eq("square", _map(d["square"], I16), fp.square(I16), "16-bit x")


def c_square_shr(d, rng):
    for k in (0, 2, 4, 8, 14):
        _eq("square_shr", _map(lambda x: d["square_shr"](x, k), I16), fp.square_shr(I16, k), f"k={k}")


def c_largest_square(d, rng):
    for b in range(2, 25):
        for k in range(0, 48, 2):
            _eq("largest_square", d["largest_square"](b, k), fp.largest_square(b, k), (b, k))
            _eq("square_bits", d["square_bits"](b, k), fp.square_bits(b, k), (b, k))


def c_norm_square_shift(d, rng):
    ns = sorted({1, 128, 384, 1024, 2816, *((1 << p) + e for p in range(1, 18) for e in (-1, 0, 1)),
                 *rng.integers(1, 1 << 17, 60).tolist()})
    for b in (8, 9, 12, 16):
        for n in ns:
            _eq("norm_square_shift", d["norm_square_shift"](b, n), norm_square_shift(b, n), (b, n))
    _eq("MSG_BITS", d["MSG_BITS"], fp.MSG_BITS_MAX, "constant")
    _eq("ACC_BITS", d["ACC_BITS"], fp.ACC_BITS, "constant")


def c_lut(d, rng):
    for bits, xs in ((8, I8), (16, I16)):
        table = _wide(rng, 24, 1 << bits)
        _eq("lut", _map(lambda x: d["lut"](x, table, bits), xs), fp.lut(xs, table, bits), f"in_bits={bits}")


def _fn_values(fn, in_bits, in_scale):
    """fn at every q·in_scale, computed once as the library computes it (vectorised numpy), looked up by
    argument: the generator's contract is about rounding fn's value, not about which libm computes it."""
    x = np.arange(fp.smin(in_bits), fp.smax(in_bits) + 1, dtype=np.float64) * in_scale
    vals = dict(zip(x.tolist(), fn(x).tolist()))
    return lambda v: vals[v]


def c_build_lut(d, rng):
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731
    for fn in (sig, silu):
        for in_bits, s_in, s_out, ob in ((8, 2.0 ** -4, 2.0 ** -15, 17), (8, 0.037, 0.011, 16), (12, 2.0 ** -7, 2.0 ** -9, 8)):
            got = fp.build_lut(fn, in_bits, s_in, s_out, ob)
            _eq("build_lut", d["build_lut"](_fn_values(fn, in_bits, s_in), in_bits, s_in, s_out, ob), got, (in_bits, s_in))


def c_rsqrt(d, rng):
    t = np.arange(1, 1 << 16, dtype=np.int64)
    r, j = fp.rsqrt(t)
    _eq("rsqrt", _map(d["rsqrt"], t), np.stack([r, j], 1), "every t < 2^16")
    u = np.arange(1 << 14, 1 << 16, dtype=np.int64)
    for jj in (-7, 1, 15):
        tt = u << (2 * jj) if jj >= 0 else u >> (-2 * jj)
        tt = tt[(tt >= 1) & (tt < (1 << 46))]
        r, j = fp.rsqrt(tt)
        _eq("rsqrt", _map(d["rsqrt"], tt), np.stack([r, j], 1), f"every normalised u at j={jj}")
    tt = np.unique(np.concatenate([rng.integers(1, 1 << 46, 3000), [(1 << 46) - 1]]))
    r, j = fp.rsqrt(tt)
    _eq("rsqrt", _map(d["rsqrt"], tt), np.stack([r, j], 1), "random t < 2^46")


def c_newton(d, rng):
    u, r = rng.integers(1 << 14, 1 << 16, 3000), rng.integers(1 << 15, 1 << 16, 3000)
    # the library's step, written out once more from ir/fixedpoint.py's constants
    want = (r * ((3 << fp.RSQRT_FRAC) - ((u * ((r * r) >> 16)) >> (2 * fp.RSQRT_FRAC - 16 - fp.RSQRT_FRAC)))) >> (fp.RSQRT_FRAC + 1)
    _eq("newton", _map(d["newton"], u, r), want, "random u, r")


def c_rsqrt_table(d, rng):
    _eq("RSQRT_TABLE", d["RSQRT_TABLE"], fp.RSQRT_TABLE, "generator")
    _eq("RSQRT_TABLE_VALUES", d["RSQRT_TABLE_VALUES"], fp.RSQRT_TABLE, "literal values")


def c_pack_rsqrt(d, rng):
    r = np.arange(1 << 15, (1 << 16) + 1, dtype=np.int64)
    for j in (-32, -7, 0, 15, 31):
        p = fp.pack_rsqrt(r, j)
        _eq("pack_rsqrt", _map(lambda x: d["pack_rsqrt"](x, j), r), p, f"j={j}")
        _eq("unpack_rsqrt", _map(d["unpack_rsqrt"], p), np.stack(fp.unpack_rsqrt(p), 1), f"j={j}")


def c_rms_factor(d, rng):
    s, e = rng.integers(0, 1 << 44, 3000), rng.integers(1, 1 << 40, 3000)
    _eq("rms_factor", _map(d["rms_factor"], s, e), fp.rms_factor(s, e), "random")
    s = np.arange(0, 1 << 16, dtype=np.int64)
    _eq("rms_factor", _map(lambda v: d["rms_factor"](v, 1), s), fp.rms_factor(s, 1), "every 16-bit sum, E=1")


def c_rms_apply(d, rng):
    n = 3000
    x, g = _wide(rng, 24, n), _wide(rng, 16, n)
    p = fp.rms_factor(rng.integers(0, 1 << 44, n), rng.integers(1, 1 << 20, n))
    for gexp, b in ((0, 8), (7, 12), (15, 24)):
        _eq("rms_apply", _map(lambda a, pp, gg: d["rms_apply"](a, pp, gg, gexp, b), x, p, g),
            [int(fp.rms_apply(a, pp, gg, gexp, b)) for a, pp, gg in zip(x, p, g)], (gexp, b))
    pp = fp.rms_factor(np.int64(5000), 1)
    _eq("rms_apply", _map(lambda a: d["rms_apply"](a, int(pp), 12345, 3, 8), I16), fp.rms_apply(I16, pp, 12345, 3, 8), "16-bit x")


def c_forget_gate(d, rng):
    sig = np.arange(0, (1 << 15) + 1, dtype=np.int64)
    for beta in (0, 1, 2 ** 14, 2 ** 15 - 1, 2 ** 15):
        _eq("forget_gate", _map(lambda s: d["forget_gate"](s, beta), sig), fp.forget_gate(sig, beta), f"beta={beta}")
        _eq("forget_gate", _map(lambda b: d["forget_gate"](beta, b), sig), fp.forget_gate(beta, sig), f"sigma={beta}")


def c_mlgru_candidate(d, rng):
    f = np.arange(0, (1 << 15) + 1, 64, dtype=np.int64)
    si, ff = np.array(np.meshgrid(I8, f)).reshape(2, -1)
    _eq("mlgru_candidate", _map(lambda a, b: d["mlgru_candidate"](a, b, 8), si, ff), fp.mlgru_candidate(si, ff, 8), "8-bit si")
    si, f = _wide(rng, 24, 3000), rng.integers(0, (1 << 15) + 1, 3000)
    for sb in (12, 24):
        _eq("mlgru_candidate", _map(lambda a, b: d["mlgru_candidate"](a, b, sb), si, f), fp.mlgru_candidate(si, f, sb), sb)


def c_mlgru_update(d, rng):
    h, c = PAIRS8
    for f in (0, 1, 1 << 14, (1 << 15) - 1, 1 << 15):
        _eq("mlgru_update", _map(lambda a, b: d["mlgru_update"](a, f, b, 8), h, c), fp.mlgru_update(h, f, c, 8), f"f={f}")
    h, c, f = _wide(rng, 24, 3000), _wide(rng, 24, 3000), rng.integers(0, (1 << 15) + 1, 3000)
    _eq("mlgru_update", _map(lambda a, ff, b: d["mlgru_update"](a, ff, b, 24), h, f, c), fp.mlgru_update(h, f, c, 24), 24)


def c_exact_matmul(d, rng):
    for T, n, m, xb in ((3, 17, 5, 8), (2, 40, 3, 24), (4, 9, 6, 40)):
        x, w = _wide(rng, xb, (T, n)), rng.integers(-1, 2, (m, n))
        _eq("exact_matmul", d["exact_matmul"](x.tolist(), w.tolist()), fp.exact_matmul(x, w, xb, 1), (T, n, m, xb))
        _eq("product_bound", d["product_bound"](n, 1, xb), fp.product_bound(n, 1, xb), (n, xb))


def c_offset_matmul(d, rng):
    for T, n, m, wm in ((3, 17, 5, 1), (2, 70, 3, 127), (4, 9, 6, 3)):
        x, w = rng.integers(-128, 128, (T, n)), rng.integers(-wm, wm + 1, (m, n))
        x[0] = -128
        x[-1] = 127
        got = d["offset_matmul"](x.tolist(), w.tolist())
        _eq("offset_matmul", got, fp.offset_matmul(x, w), (T, n, m, wm))
        _eq("offset_matmul", got, fp.exact_matmul(x, w, 8, wm), ("against exact_matmul", T, n, m, wm))
        _eq("offset_product_bound", d["offset_product_bound"](n, wm), fp.offset_product_bound(n, wm), (n, wm))
    _eq("U8_OFFSET", d["U8_OFFSET"], fp.U8_OFFSET, "")


CHECKS = {
    "saturate": c_saturate, "shr_round": c_shr_round, "shr_floor": c_shr_floor, "mul_shr": c_mul_shr,
    "rescale": c_rescale, "pow2_rescale": c_pow2_rescale, "quantize_multiplier": c_quantize_multiplier, "multiplier": c_quantize_multiplier,
    "add_sat": c_add_sat, "square": c_square, "square_shr": c_square_shr,
    "largest_square": c_largest_square, "square_bits": c_largest_square,
    "norm_square_shift": c_norm_square_shift, "MSG_BITS": c_norm_square_shift, "ACC_BITS": c_norm_square_shift,
    "lut": c_lut, "build_lut": c_build_lut, "rsqrt": c_rsqrt, "newton": c_newton,
    "RSQRT_TABLE": c_rsqrt_table, "RSQRT_TABLE_VALUES": c_rsqrt_table,
    "pack_rsqrt": c_pack_rsqrt, "unpack_rsqrt": c_pack_rsqrt, "rms_factor": c_rms_factor,
    "rms_apply": c_rms_apply, "forget_gate": c_forget_gate, "mlgru_candidate": c_mlgru_candidate,
    "mlgru_update": c_mlgru_update, "exact_matmul": c_exact_matmul, "product_bound": c_exact_matmul,
    "offset_matmul": c_offset_matmul, "offset_product_bound": c_offset_matmul, "U8_OFFSET": c_offset_matmul,
}
OPS = tuple(n for n in CHECKS if n[0].islower())


def check_ops(doc: Path, only=None) -> None:
    """Every op of ``doc`` against the library; raises AssertionError naming the first op that differs."""
    _, ns = specdoc.load(doc)
    for check in dict.fromkeys(CHECKS[n] for n in CHECKS if only is None or n in only):
        try:
            check(ns, np.random.default_rng(0))
        except (ArithmeticError, LookupError, TypeError, ValueError) as e:   # a formula that cannot even run
            raise AssertionError(f"docs/fixed-point.md {check.__name__[2:]}: {type(e).__name__}: {e}") from e


# ---- the block -------------------------------------------------------------------------------------------
class _Keys:
    """A mapping of the block's notation: key "L.name" -> the layer's own key, then the model's value."""

    def __init__(self, read, prefix: str):
        self.read, self.prefix = read, prefix

    def __getitem__(self, key: str):
        return self.read(self.prefix + key[2:] if key.startswith("L.") else key)


def block_namespace(doc: Path, qm, layer: int, record: dict) -> dict:
    """The doc's block definitions, compiled with the ops bound to the library (checked equal above) and
    the quantized model's parameters read through the documented keys for layer ``layer``."""
    P, cfg = f"L{layer}.", qm.cfg
    ns = {op: getattr(fp, op) for op in OPS if hasattr(fp, op)}
    ns["sum"] = lambda v: np.sum(v, axis=-1)
    ns.update(
        T=_Keys(qm.t, P), W=_Keys(lambda k: qm.t("W." + k).astype(np.int64), P), G=_Keys(lambda k: qm.t("G." + k), P),
        gexp=_Keys(lambda k: qm.s("gexp." + k), P), E=_Keys(lambda k: qm.s("E." + k), P),
        M=_Keys(lambda k: qm.s("M." + k), P), s=_Keys(lambda k: qm.s("s." + k), P), S=_Keys(qm.s, P),
        sq=_Keys(lambda k: qm.scalars.get("sq." + k, 0), P), bits=_Keys(qm.bits, P),
        inner=not qm.options.remove_inner_norm, m=cfg.m,
        NEXT=f"L{layer + 1}.x" if layer + 1 < cfg.L else "final.x")
    return specdoc.compile_defs(specdoc.parse(doc.read_text()), ns, keep=tuple(ns), record=record)


SITE_OF = dict(u="attn_norm", vi="i_in", vf="f_in", vg="g_in", iq="i", fq="f", gq="g", h1="h", hq="hq", gn="gn",
               o="o", vo="o_in", ao="attn_out", r="r", vm="mlp_norm", vv="gate_in", a="a", b="b", z="z",
               vz="down_in", mo="mlp_out")


def run_block(doc: Path, qm, tokens) -> list[dict]:
    """Per token, the documented block's values under the trace's site names."""
    h = np.zeros((qm.cfg.L, qm.cfg.d_attn), np.int64)
    spaces = [(block_namespace(doc, qm, i, rec), rec) for i in range(qm.cfg.L) for rec in [{}]]
    out = []
    for tok in tokens:
        seen: dict = {}
        x = np.asarray(spaces[0][0]["embed"](int(tok))).astype(np.int64)
        for i, (ns, rec) in enumerate(spaces):
            seen[f"L{i}.x"] = x
            x, h[i] = ns["layer"](x, h[i])
            seen.update({f"L{i}.{site}": rec["layer"][k] for k, site in SITE_OF.items()})
        seen["final.x"] = x
        seen["logits"] = spaces[-1][0]["head"](x)
        seen.update({"final.norm": spaces[-1][1]["head"]["xn"], "head.in": spaces[-1][1]["head"]["vh"]})
        out.append(seen)
    return out


def check_block(doc: Path, qm, tokens) -> None:
    """The documented block equals IntModel.step at every traced site of every token."""
    im = IntModel(qm)
    state = im.init_state()
    got = run_block(doc, qm, tokens)
    for k, tok in enumerate(tokens):
        want: dict = {}
        _, state = im.step(int(tok), state, trace=lambda n, v: want.__setitem__(n, np.asarray(v).copy()))
        inner = not qm.options.remove_inner_norm
        named = {n for n in got[k] if inner or not n.endswith(("_in", "head.in"))}
        assert set(want) == named, f"sites the doc's block and IntModel do not share: {sorted(set(want) ^ named)}"
        for site in want:
            w, g = want[site], np.asarray(got[k][site])
            if w.shape != g.shape or not np.array_equal(w, g):
                idx = int(np.argmax(w != g)) if w.shape == g.shape else -1
                raise AssertionError(f"docs/fixed-point.md block: token {k} site {site} index {idx}: "
                                     f"doc {g.reshape(-1)[idx] if idx >= 0 else g.shape}, IntModel {w.reshape(-1)[idx] if idx >= 0 else w.shape}")


# ---- tests ---------------------------------------------------------------------------------------------
def test_every_definition_has_a_check():
    names = {d.name for d in specdoc.parse(DOC.read_text())}
    assert names - set(BLOCK_NAMES) == set(CHECKS), (names - set(BLOCK_NAMES)) ^ set(CHECKS)
    assert set(BLOCK_NAMES) <= names


@pytest.mark.parametrize("op", sorted(set(CHECKS.values()), key=lambda c: c.__name__), ids=lambda c: c.__name__[2:])
def test_doc_op_equals_library(op):
    _, ns = specdoc.load(DOC)
    op(ns, np.random.default_rng(0))


def test_block_on_tiny_preset(tiny_qm):
    check_block(DOC, tiny_qm, [3, 0, 17, 255 % tiny_qm.cfg.vocab_size, 5])


def test_block_without_inner_norms(tiny_model):
    from mflc.compiler.model.quantize import QuantOptions, quantize

    cfg, w = tiny_model
    qm = quantize(cfg, w, [np.random.default_rng(1).integers(0, cfg.vocab_size, 64)], QuantOptions(remove_inner_norm=True))
    check_block(DOC, qm, [1, 2, 3])


@pytest.fixture(scope="module")
def default_qm():
    from mflc.compiler.model.checkpoint import load_checkpoint
    from mflc.compiler.model.loading import resolve_calibration
    from mflc.compiler.model.quantize import quantize
    default = Path(mflc.__file__).parent / "data" / "default"
    cfg, w = load_checkpoint(default)
    return quantize(cfg, w, resolve_calibration(cfg, default)[0])


def test_block_on_default_model(default_qm):
    assert default_qm.bits("L0.o") == 12        # the widths are the sites', not a constant 8
    check_block(DOC, default_qm, list(b"def f(x):\n"))


# hypothesis over the full domains of the wide ops
_ns = None


def _doc():
    global _ns
    if _ns is None:
        _ns = specdoc.load(DOC)[1]
    return _ns


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2 ** 57), 2 ** 57), st.integers(0, 100))
def test_hyp_shr_round(x, n):
    assert _doc()["shr_round"](x, n) == int(fp.shr_round(x, n))


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2 ** 23), 2 ** 23 - 1), st.integers(-(2 ** 23), 2 ** 23 - 1), st.integers(-8, 48), st.integers(2, 24))
def test_hyp_mul_shr(a, b, n, ob):
    assert _doc()["mul_shr"](a, b, n, ob) == int(fp.mul_shr(a, b, n, ob))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2 ** 46 - 1))
def test_hyp_rsqrt(t):
    r, j = fp.rsqrt(t)
    assert _doc()["rsqrt"](t) == (int(r), int(j))


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2 ** 23), 2 ** 23 - 1), st.integers(0, 2 ** 44), st.integers(1, 2 ** 40),
       st.integers(-(2 ** 15), 2 ** 15 - 1), st.integers(0, 20), st.integers(2, 24))
def test_hyp_rms(x, s, e, g, gexp, b):
    p = int(fp.rms_factor(s, e))
    assert _doc()["rms_factor"](s, e) == p
    assert _doc()["rms_apply"](x, p, g, gexp, b) == int(fp.rms_apply(x, p, g, gexp, b))


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2 ** 23), 2 ** 23 - 1), st.integers(0, 2 ** 15), st.integers(-(2 ** 23), 2 ** 23 - 1),
       st.integers(0, 2 ** 15), st.sampled_from([8, 12, 16, 24]))
def test_hyp_mlgru(h, f, c, beta, sb):
    d = _doc()
    assert d["mlgru_update"](h, f, c, sb) == int(fp.mlgru_update(h, f, c, sb))
    assert d["mlgru_candidate"](c, f, sb) == int(fp.mlgru_candidate(c, f, sb))
    assert d["forget_gate"](f, beta) == int(fp.forget_gate(f, beta))


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-9, 1e9), st.sampled_from([8, 12, 16, 24]))
def test_hyp_quantize_multiplier(real, b):
    assert _doc()["quantize_multiplier"](real, b) == fp.quantize_multiplier(real, b)


# ---- the page cannot drift: one constant changed by one in a copy fails -----------------------------------
MUTATIONS = [
    ("newton(u, r) = (r * (3 * 2**23 - ((u * ((r * r) >> 16)) >> 7))) >> 24",
     "newton(u, r) = (r * (3 * 2**23 - ((u * ((r * r) >> 16)) >> 8))) >> 24", "rsqrt|newton"),
    ("j  = (k - 15) >> 1", "j  = (k - 16) >> 1", "rsqrt"),
    ("RSQRT_TABLE_VALUES = [64535,", "RSQRT_TABLE_VALUES = [64536,", "RSQRT_TABLE_VALUES"),
    ("sign(x) * ((abs(x) + 2**(n-1)) >> n)", "sign(x) * ((abs(x) + 2**(n-2)) >> n)", "shr_round"),
    ("forget_gate(sig, beta) = beta + shr_round((2**15 - beta) * sig, 15)",
     "forget_gate(sig, beta) = beta + shr_round((2**15 - beta) * sig, 16)", "forget_gate"),
    ("saturate(x, b) = min(max(x, -2**(b-1)), 2**(b-1) - 1)", "saturate(x, b) = min(max(x, -2**(b-1)), 2**(b-1) - 2)", "saturate"),
    ("unpack_rsqrt(p) = (p >> 6, (p & 63) - 32)", "unpack_rsqrt(p) = (p >> 6, (p & 63) - 31)", "unpack_rsqrt"),
]


SLOW_MUTATIONS = ("RSQRT_TABLE_VALUES", "forget_gate", "unpack_rsqrt", "rsqrt")


@pytest.mark.parametrize("old,new,op", [pytest.param(*m, marks=[pytest.mark.slow] if m[2] in SLOW_MUTATIONS else [])
                                        for m in MUTATIONS], ids=[m[2].split("|")[-1] for m in MUTATIONS])
def test_changed_formula_fails(tmp_path, old, new, op):
    text = DOC.read_text()
    assert text.count(old) == 1, f"mutation anchor not found once: {old}"
    copy = tmp_path / "fixed-point.md"
    copy.write_text(text.replace(old, new))
    with pytest.raises(AssertionError, match=op):   # the page itself passes (test_doc_op_equals_library)
        check_ops(copy)


BLOCK_MUTATIONS = [
    ('o    = mul_shr(gn, lut(hq, T["L.lut.silu_h"], bits["L.hq"]), S["L.n.o"], bits["L.o"])',
     'o    = mul_shr(gn, lut(hq, T["L.lut.silu_h"], bits["L.hq"]), S["L.n.o"] + 1, bits["L.o"])', "L0.o"),
    ('A(v, key) = rescale(v, M[key], s[key], MSG_BITS)', 'A(v, key) = rescale(v, M[key], s[key] + 1, MSG_BITS)', "L0.r"),
]


@pytest.mark.parametrize("old,new,site", BLOCK_MUTATIONS, ids=[m[2] for m in BLOCK_MUTATIONS])
def test_changed_block_step_fails(tmp_path, tiny_qm, old, new, site):
    text = DOC.read_text()
    assert text.count(old) == 1, f"mutation anchor not found once: {old}"
    copy = tmp_path / "fixed-point.md"
    copy.write_text(text.replace(old, new))
    with pytest.raises(AssertionError, match=f"site {site}"):
        check_block(copy, tiny_qm, [3, 0, 17])
