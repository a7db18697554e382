"""Quantization of HGRN-Bit to the fixed-point model the chip runs (the Loihi 2 paper's scheme).

* Weights: BitLinear's absmean ternarisation, exactly as the checkpoint computes.
* Activations: static, per-tensor, symmetric scales calibrated by max-|x| observers on sample tokens
  (the chip has no room for BitLinear's per-token absmax), power-of-two by default so that every
  rescale is a shift; ``act_bits`` (8) at every site the paper's fork names, the recurrent state at
  ``state_bits`` (24).
* Every integer parameter the ops need (ternary matrices, norm gains, multipliers and shifts, tables)
  is derived here, once, and stored by name in a ``QuantizedModel``; the integer reference model and
  the lowering to IR both read these same integers and never re-derive them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors.numpy import save_file

from mflc.ir import fixedpoint as fp
from mflc.ir import range_analysis, ternary
from mflc.ir.errors import CheckpointError, ConfigError
from mflc.ir.schema import STRICT, MapOf, OneOf, Opt, check, check_format, read_json
from mflc.ir.tensorfile import load_tensors, narrowest_int

from . import structure as S
from .config import BITLINEAR_NORM_EPS, ModelConfig
from .float_model import FloatModel, sigmoid, silu
from .structure import FINAL_SITES, LAYER_SITES, site_kind  # noqa: F401  (re-exported)

FORMAT = "mflc-quantized"
FORMAT_VERSION = 2   # 2: ternary weights at 2 bits, tables at their narrowest type ("storage")

# The activation sites (structure.LAYER_SITES of every layer, then structure.FINAL_SITES) are declared
# with the rest of the model's structure in .structure.

# The two sites that are products of activations: o = RMSNorm(g)·SiLU(h) in the token mixer and z =
# SiLU(a)·b in the MLP. Their values are heavy-tailed (crest factor ~38 against ~5 elsewhere), so 8 bits
# with a max-based scale leave the bulk a few bits; on the trained default model's held-out split they
# take the gap to float from +2.14 % (all 8 bits) to +0.42 % (docs/accuracy.md, `mflc ablate`).
DEFAULT_MIN_SITE_BITS = {"o": 12, "z": 12}
SCALE_METHODS = ("max", "mse")
MSE_SAMPLE = 1 << 16        # values kept per site for the "mse" search (a deterministic stride subsample)
MSE_MAX_CLIP_OCTAVES = 3    # the "mse" search tries scales up to 2^3 finer than the max-based one


@dataclass
class QuantOptions:
    """How to quantize: activation, state and per-site widths, power-of-two scales, scale method, norm options."""

    act_bits: int = 8
    state_bits: int = fp.STATE_BITS_MAX        # the neuron state word (hardware figure state_word_bits)
    site_bits: dict = field(default_factory=dict)   # per site kind, e.g. {"r": 12, "x": 12}
    # Sites that keep at least this many bits whatever act_bits says (explicit site_bits still win); {}
    # gives the paper's uniform widths. 12 bits is well inside a 24-bit graded spike.
    min_site_bits: dict = field(default_factory=lambda: dict(DEFAULT_MIN_SITE_BITS))
    pow2: bool = True
    remove_inner_norm: bool = False                 # the fork's option; changes what the model computes
    state_headroom_bits: int = 1                    # spare bits above the calibrated max of h
    lut_out_bits: int = 16
    gain_bits: int = 16
    mult_bits: int = 16
    rms_eps: float | None = None                    # the fork's eps override (None: the checkpoint's)
    # How a site's scale is chosen from calibration: "max" maps the largest |value| seen to the top of the
    # range (the fork's min/max observers); "mse" picks, among the scales that clip at most the top few
    # octaves, the one with the least squared quantization error over the calibration values. The
    # recurrent state h always uses "max": clipping it would feed back through every later token.
    scale_method: str = "max"

    def bits(self, kind: str) -> int:
        """The width of a site kind: an explicit site_bits entry, the state word for h, else act_bits raised to its minimum."""
        if kind in self.site_bits:
            return int(self.site_bits[kind])
        if kind == "h":
            return self.state_bits
        return max(self.act_bits, int(self.min_site_bits.get(kind, 0)))

    def validate(self) -> None:
        """Refuse options the hardware or the quantizer cannot honour, as a ConfigError naming the option."""
        for name, b in [("act_bits", self.act_bits), *[(f"site_bits[{k}]", v) for k, v in self.site_bits.items()]]:
            if not 2 <= int(b) <= fp.MSG_BITS_MAX:
                raise ConfigError(f"quantization option {name} = {b}: must be in [2, {fp.MSG_BITS_MAX}] (graded-spike width)")
        if self.scale_method not in SCALE_METHODS:
            raise ConfigError(f"quantization option scale_method = {self.scale_method!r}: choose one of {', '.join(SCALE_METHODS)}")
        if self.rms_eps is not None and not 0.0 <= self.rms_eps < 1.0:
            raise ConfigError(f"quantization option rms_eps = {self.rms_eps}: must be in [0, 1)")
        if not 8 <= self.state_bits <= fp.STATE_BITS_MAX:
            raise ConfigError(f"quantization option state_bits = {self.state_bits}: must be in [8, {fp.STATE_BITS_MAX}] (neuron state width)")
        for k, b in self.min_site_bits.items():
            if not 2 <= int(b) <= fp.MSG_BITS_MAX:
                raise ConfigError(f"quantization option min_site_bits[{k}] = {b}: must be in [2, {fp.MSG_BITS_MAX}] (graded-spike width)")
        for k in [*self.site_bits, *self.min_site_bits]:
            if k not in LAYER_SITES and k not in FINAL_SITES:
                raise ConfigError(f"quantization option site_bits: unknown site {k!r}; known: {', '.join(LAYER_SITES)}")


# ---- calibration -------------------------------------------------------------------------------------
def calibrate(fm: FloatModel, token_seqs: Iterable[Iterable[int]], keep_values: bool = False,
              sample: int | None = MSE_SAMPLE):
    """max |value| per site over the given token sequences, run through the float model; with
    ``keep_values`` also each site's values (an evenly strided subsample of at most ``sample``; None: all)."""
    amax: dict[str, float] = {}
    vals: dict[str, list[np.ndarray]] = {}

    def obs(name: str, v: np.ndarray) -> None:   # name: a site (the float model observes by site name)
        """Calibration hook: track each site's max |x| (and keep its values for MSE scales)."""
        amax[name] = max(amax.get(name, 0.0), float(np.max(np.abs(v))) if v.size else 0.0)
        if keep_values:
            vals.setdefault(name, []).append(np.asarray(v, np.float64).ravel())

    for seq in token_seqs:
        fm.forward(list(seq), observe=obs)
    for i in range(fm.cfg.L):   # hq is the state requantized: its range is the state's
        amax[S.site(i, "hq")] = amax[S.site(i, S.STATE_SITE)]
        if keep_values:
            vals[S.site(i, "hq")] = vals[S.site(i, S.STATE_SITE)]
    if not keep_values:
        return amax
    kept = {}
    for k, parts in vals.items():
        v = np.concatenate(parts)
        kept[k] = v if sample is None else v[::max(1, -(-v.size // sample))]
    return amax, kept


def _mse_frac(v: np.ndarray, bits: int, frac0: int) -> int:
    """The power-of-two scale 2^-f, f in [frac0, frac0 + MSE_MAX_CLIP_OCTAVES], with the least mean
    squared error of saturating round-to-nearest quantization over the values v (ties: the coarser)."""
    lo, hi = fp.smin(bits), fp.smax(bits)
    best, best_err = frac0, np.inf
    for f in range(frac0, frac0 + MSE_MAX_CLIP_OCTAVES + 1):
        q = np.clip(np.round(v * 2.0 ** f), lo, hi) * 2.0 ** -f
        err = float(np.mean((q - v) ** 2))
        if err < best_err * (1 - 1e-9):
            best, best_err = f, err
    return best


def _mse_scale(v: np.ndarray, bits: int, amax: float) -> float:
    """A free scale in [amax/8, amax]/qmax with the least mean squared quantization error over v."""
    lo, hi = fp.smin(bits), fp.smax(bits)
    best, best_err = amax / hi, np.inf
    for a in amax * 2.0 ** -np.linspace(0, MSE_MAX_CLIP_OCTAVES, 4 * MSE_MAX_CLIP_OCTAVES + 1):
        s = max(a, 1e-8) / hi
        err = float(np.mean((np.clip(np.round(v / s), lo, hi) * s - v) ** 2))
        if err < best_err * (1 - 1e-9):
            best, best_err = s, err
    return best


def _site_scale(amax: float, bits: int, pow2: bool, headroom: int = 0) -> tuple[float, int | None]:
    """Scale s (real = q·s) so that amax maps to the top of the signed range; pow2 rounds s up to 2^-f."""
    qmax = fp.smax(bits)
    amax = max(amax, 1e-8) * (2.0 ** headroom)
    if pow2:
        frac = int(np.floor(np.log2(qmax / amax)))
        return 2.0 ** -frac, frac
    return amax / qmax, None


# ---- the quantized model -----------------------------------------------------------------------------
@dataclass
class QuantizedModel:
    """The integer model: site widths and scales, integer tensors and scalars, what lowering and the integer executors read."""

    cfg: ModelConfig
    options: QuantOptions
    sites: dict            # name -> {"bits": int, "scale": float, "frac": int | None, "amax": float}
    tensors: dict          # name -> int ndarray
    scalars: dict          # name -> int
    meta: dict             # float facts kept for reporting (absmeans, logit scale)

    # accessors name what is missing: a quantized model read from a hand-edited quant.json may lack an entry
    def t(self, name: str) -> np.ndarray:
        """A tensor by name; a missing one is a CheckpointError naming the file it should be in."""
        if name not in self.tensors:
            raise CheckpointError(f"quantized model: tensor {name!r} is missing (quant.safetensors / tensor_dtypes)")
        return self.tensors[name]

    def packed(self, name: str) -> "LazyTernary | None":
        """A ternary matrix still held as its 2-bit codes (a loaded model's, not yet read), or None."""
        v = self.tensors.stored(name) if isinstance(self.tensors, TensorStore) and name in self.tensors else None
        return v if isinstance(v, LazyTernary) else None

    def s(self, name: str) -> int:
        """A scalar by name; a missing one is a CheckpointError naming quant.json."""
        if name not in self.scalars:
            raise CheckpointError(f"quantized model: quant.json field 'scalars' has no {name!r}")
        return self.scalars[name]

    def _site(self, site: str) -> dict:
        if site not in self.sites:
            raise CheckpointError(f"quantized model: quant.json field 'sites' has no {site!r}")
        return self.sites[site]

    def bits(self, site: str) -> int:
        """A site's width in bits."""
        return self._site(site)["bits"]

    def scale(self, site: str) -> float:
        """A site's real value per integer step."""
        return self._site(site)["scale"]

    # ---- persistence ----
    def save(self, path: str | Path) -> None:
        """Write quant.json, quant.safetensors (each tensor at its narrowest stored form) and config.json."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        stored, storage = {}, {}
        raw = self.tensors.stored if isinstance(self.tensors, TensorStore) else self.tensors.__getitem__
        for k in self.tensors:
            v = raw(k)                                   # a still-packed tensor is written as it was read
            stored[k], enc = _stored_form(v)
            if enc != str(v.dtype):
                storage[k] = enc
        _write_quant_json(d, self.cfg, self.options, self.sites, self.scalars, self.meta,
                          {k: str(raw(k).dtype) for k in self.tensors}, storage)
        save_file(stored, str(d / "quant.safetensors"))


    @classmethod
    def load(cls, path: str | Path) -> "QuantizedModel":
        """The model of a quantized directory; a damaged quant.json or quant.safetensors raises a
        CheckpointError naming the file, the field or tensor, and what was expected against what is there."""
        d = Path(path)
        jf, tf = d / "quant.json", d / "quant.safetensors"
        for f in (jf, tf):
            if not f.is_file():
                raise CheckpointError(f"{f}: quantized-model file not found")
        head = read_json(jf, CheckpointError, object_required=True)
        check_format(head, FORMAT, FORMAT_VERSION, jf, CheckpointError, "format version",
                     {1: "written by an older mflc, weights at 8 bits; quantize or compile it again"})
        check(head, _QUANT_JSON_SCHEMA, str(jf), CheckpointError)
        cfg = ModelConfig.from_dict(head["config"], source=f"{jf}: config")
        _written_as_is(head["config"], cfg.to_dict(), jf, "config")
        opts = _options_from_dict(head["options"], jf)
        try:
            tensors = load_tensors(tf)
        except Exception as e:  # safetensors raises several types for truncated/corrupt files
            raise CheckpointError(f"{tf}: cannot read tensors ({e})") from None
        want = head["tensor_dtypes"]
        missing = sorted(set(want) - set(tensors))
        if missing:
            raise CheckpointError(f"{tf}: missing tensor(s) {', '.join(missing[:5])}")
        shapes = expected_tensors(cfg, opts, head["sites"], jf)
        _decode_storage(tensors, head["storage"], shapes, jf, tf)
        for name in sorted(set(shapes) - set(want)):
            raise CheckpointError(f"{jf}: tensor_dtypes: tensor {name!r} is missing (the config and options need it)")
        for name in sorted(set(want) - set(shapes)):
            raise CheckpointError(f"{jf}: tensor_dtypes: unexpected tensor {name!r} (not one this config and these options make)")
        for name, (shape, dtype) in shapes.items():
            a = tensors[name]
            if a.dtype != np.dtype(dtype):
                raise CheckpointError(f"{tf}: tensor {name!r}: dtype {a.dtype}, expected {dtype}")
            if want[name] != str(a.dtype):
                raise CheckpointError(f"{jf}: tensor_dtypes.{name}: {want[name]!r}, but {tf.name} holds {a.dtype} "
                                      f"(expected {dtype})")
            if tuple(a.shape) != shape:
                raise CheckpointError(f"{tf}: tensor {name!r}: shape {list(a.shape)}, expected {list(shape)} (from {jf.name}'s config)")
        _check_meta(head["meta"], head["sites"], want, opts, jf)
        _check_site_scales(head["sites"], opts, jf)
        return cls(cfg, opts, head["sites"], TensorStore({k: tensors[k] for k in want}), head["scalars"], head["meta"])


def _write_quant_json(d: Path, cfg, options, sites, scalars, meta, tensor_dtypes: dict, storage: dict) -> None:
    head = dict(format=FORMAT, version=FORMAT_VERSION, config=cfg.to_dict(), options=asdict(options), sites=sites,
                scalars=scalars, meta=meta, tensor_dtypes=tensor_dtypes, storage=storage)
    (d / "quant.json").write_text(json.dumps(head, indent=1, sort_keys=True) + "\n")


class QuantStreamWriter:
    """``QuantizedModel.save`` for a model whose tensors are never all in memory: each tensor is written in
    its stored form as it is made (``add``, with the dtype the model declares for it), quant.json on
    ``close``; the files are byte for byte ``save``'s (tests/test_stream_compile.py)."""

    def __init__(self, path: str | Path):
        from mflc.ir.streamfile import SafetensorsWriter

        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.arrays = SafetensorsWriter(self.dir / "quant.safetensors")
        self.tensor_dtypes: dict[str, str] = {}
        self.storage: dict[str, str] = {}

    def add(self, name: str, v: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
        """Write tensor ``name`` whose declared dtype is ``dtype`` (``v`` may hold it narrower); returns its
        stored form and encoding ("ternary2", a narrower type, or the dtype)."""
        stored, enc = _stored_form(v, dtype)
        self.arrays.add(name, stored)
        self.tensor_dtypes[name] = dtype
        if enc != dtype:
            self.storage[name] = enc
        return stored, enc

    def close(self, cfg: ModelConfig, options: "QuantOptions", sites: dict, scalars: dict, meta: dict) -> None:
        """Write quant.json and finish quant.safetensors."""
        _write_quant_json(self.dir, cfg, options, sites, scalars, meta, self.tensor_dtypes, self.storage)
        self.arrays.close()

    def abort(self) -> None:
        """Remove what was written (a failed compile)."""
        self.arrays.abort()


class LazyTernary:
    """A ternary int8 matrix of a loaded quantized model, kept as its 2-bit codes (checked: length, padding,
    no 0b10 code) until something reads it: `mflc generate` on a build never needs the weights of quant/."""

    dtype = np.dtype(np.int8)

    def __init__(self, codes: np.ndarray, shape: tuple, where: str, checked: bool = False):
        if not checked:
            ternary.check_codes(codes, tuple(shape), where, scan=True)
        self.codes, self.shape, self.where = codes, tuple(shape), where
        self.stats: dict = {}                 # per-row counts, shared with the synapse groups made of it

    def rows(self, a: int, b: int) -> "LazyTernary | None":
        """Rows a..b as a packed matrix of their own (the same bytes), or None when they do not start and end
        on a byte (4 weights)."""
        cols = self.shape[1]
        if (a * cols) % 4 or (b * cols) % 4:
            return None
        return LazyTernary(self.codes[a * cols // 4:b * cols // 4], (b - a, cols), f"{self.where} rows {a}..{b}",
                           checked=True)

    def row_nonzeros(self) -> np.ndarray:
        """Non-zero weights per row, from the codes (kept in ``stats``)."""
        if "n_plus" not in self.stats:
            _, _, self.stats["n_plus"], self.stats["n_minus"] = ternary.planes_from_codes(
                self.codes, self.shape, self.where, planes=False)
        return self.stats["n_plus"] + self.stats["n_minus"]

    @property
    def ndim(self) -> int:
        """Number of dimensions of the matrix."""
        return len(self.shape)

    def decode(self) -> np.ndarray:
        """The int8 matrix."""
        return ternary.unpack_dense(self.codes, self.shape, self.where)


class LazyWiden:
    """A tensor of a loaded quantized model stored narrower than its declared dtype (e.g. the int8 embedding of
    an int64 tensor), widened when first read."""

    def __init__(self, stored: np.ndarray, dtype: str):
        self.stored, self.dtype, self.shape = stored, np.dtype(dtype), stored.shape

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def decode(self) -> np.ndarray:
        """The tensor at its declared dtype."""
        return self.stored.astype(self.dtype)


class TensorStore(dict):
    """A loaded quantized model's tensors: a dict whose ternary matrices are decoded on first read."""

    def __getitem__(self, k):
        v = super().__getitem__(k)
        if isinstance(v, (LazyTernary, LazyWiden)):
            v = v.decode()
            super().__setitem__(k, v)
        return v

    def stored(self, k):
        """The tensor as held: a LazyTernary if it was never read."""
        return super().__getitem__(k)

    def get(self, k, default=None):
        """As dict.get, decoding like []."""
        return self[k] if k in self else default

    def values(self):
        """Every tensor, decoded."""
        return [self[k] for k in self]

    def items(self):
        """(name, tensor) pairs, decoded."""
        return [(k, self[k]) for k in self]


def _stored_form(v: np.ndarray, dtype: str | None = None) -> tuple[np.ndarray, str]:
    """How a tensor is kept on disk: ternary int8 matrices at 2 bits per weight ("ternary2",
    mflc.ir.ternary), other integers at the narrowest integer type holding them, the rest as they are.
    ``dtype``: the tensor's declared dtype when ``v`` holds its values in a narrower one (streaming)."""
    if isinstance(v, LazyTernary):
        return v.codes, "ternary2"
    if isinstance(v, LazyWiden):
        return v.stored, v.stored.dtype.name
    dt = np.dtype(dtype) if dtype is not None else v.dtype
    if dt == np.int8 and v.ndim == 2 and ternary.is_ternary(v[v != 0]):
        return ternary.pack_dense(v), "ternary2"
    if np.issubdtype(dt, np.signedinteger) and v.size:
        t = narrowest_int(v)
        if t.itemsize < dt.itemsize:
            return np.ascontiguousarray(v, dtype=t), t.name
    return np.ascontiguousarray(v, dtype=dt), str(dt)


def _decode_storage(tensors: dict, storage: dict, shapes: dict, jf: Path, tf: Path) -> None:
    """Turn each stored form back into the tensor of its declared dtype and shape, in place."""
    for name, enc in sorted(storage.items()):
        if name not in shapes or name not in tensors:
            raise CheckpointError(f"{jf}: storage: {name!r} is not a tensor of this model")
        shape, dtype = shapes[name]
        a = tensors[name]
        if enc == "ternary2":
            if dtype != "int8":
                raise CheckpointError(f"{jf}: storage.{name}: 'ternary2' holds int8 weights, the tensor is {dtype}")
            tensors[name] = LazyTernary(a, shape, f"{tf}: tensor {name!r}")    # checked now, decoded when read
        elif enc in ("int8", "int16", "int32"):
            if str(a.dtype) != enc:
                raise CheckpointError(f"{tf}: tensor {name!r}: dtype {a.dtype}, expected {enc} (its stored form "
                                      f"per {jf.name}'s storage; the tensor is {dtype})")
            if np.dtype(enc).itemsize >= np.dtype(dtype).itemsize:
                raise CheckpointError(f"{jf}: storage.{name}: {enc!r} is not narrower than the tensor's {dtype}")
            tensors[name] = LazyWiden(a, dtype)                 # widened when read
        else:
            raise CheckpointError(f"{jf}: storage.{name}: {enc!r}, expected 'ternary2' or a narrower integer type")


_SITE_SCHEMA = {"bits": int, "scale": float, "frac": OneOf(int, None), "amax": float}
_QUANT_JSON_SCHEMA = {
    "format": str, "version": int, "config": dict, "options": dict, "sites": MapOf(_SITE_SCHEMA),
    "scalars": MapOf(int), "meta": {"logit_scale": float, "absmean": MapOf(float)}, "tensor_dtypes": MapOf(str), "storage": MapOf(str),
}
_OPTION_SCHEMA = {
    "act_bits": int, "state_bits": int, "site_bits": MapOf(int), "min_site_bits": Opt(MapOf(int)), "pow2": bool,
    "remove_inner_norm": bool, "state_headroom_bits": int, "lut_out_bits": int, "gain_bits": int, "mult_bits": int,
    "rms_eps": OneOf(float, None), "scale_method": str, STRICT: True,
}


def _check_meta(meta: dict, sites: dict, tensor_names, opts: QuantOptions, jf: Path) -> None:
    """The float facts quant.json keeps agree with each other: one weight scale (absmean) per ternary
    tensor, and the logit scale is the head's weight scale times its input's scale, as ``quantize`` sets it."""
    want = {k[2:] for k in tensor_names if k.startswith("W.")}
    have = set(meta["absmean"])
    for k in sorted(want - have):
        raise CheckpointError(f"{jf}: meta.absmean: weight scale {k!r} is missing (tensor W.{k} needs it)")
    for k in sorted(have - want):
        raise CheckpointError(f"{jf}: meta.absmean: unexpected {k!r} (no tensor W.{k})")
    head_in = S.HEAD.src_site if opts.remove_inner_norm else S.HEAD.in_site
    if S.HEAD.key in have and head_in in sites:
        again = meta["absmean"][S.HEAD.key] * sites[head_in]["scale"]
        if meta["logit_scale"] != again:
            raise CheckpointError(f"{jf}: meta.logit_scale is {meta['logit_scale']!r}, but meta.absmean.head × "
                                  f"sites.{head_in}.scale = {again!r}")


def _check_site_scales(sites: dict, opts: QuantOptions, jf: Path) -> None:
    """With scale_method "max" a site's scale and fraction bits follow from its calibrated amax and width
    (``_site_scale``): a stored scale is then a claim checked here. ("mse" scales depend on calibration
    values that are not kept.)"""
    if opts.scale_method != "max":
        return
    for name, site in sites.items():
        head = opts.state_headroom_bits if site_kind(name) == S.STATE_SITE else 0
        s, frac = _site_scale(site["amax"], site["bits"], opts.pow2, head)
        if (site["scale"], site["frac"]) != (s, frac):
            raise CheckpointError(f"{jf}: sites.{name}: scale {site['scale']!r} / frac {site['frac']!r}, but amax "
                                  f"{site['amax']!r} at {site['bits']} bits gives {s!r} / {frac!r}")


def _written_as_is(raw: dict, again: dict, jf: Path, field: str, optional: tuple[str, ...] = ()) -> None:
    """A block mflc wrote must read back complete: a key dropped from it must not pass for its default."""
    again = json.loads(json.dumps(again))
    for k in sorted(set(again) - set(raw) - set(optional)):
        raise CheckpointError(f"{jf}: field {field!r} lacks {k!r} (mflc writes every key; the file was edited or damaged)")


def _options_from_dict(raw: dict, jf: Path) -> QuantOptions:
    check(raw, _OPTION_SCHEMA, str(jf), CheckpointError, where="options")
    options = dict(raw)
    options.setdefault("min_site_bits", {})   # written before the option existed: uniform widths
    try:
        opts = QuantOptions(**options)
    except TypeError as e:
        raise CheckpointError(f"{jf}: options: {e}") from None
    _written_as_is(raw, asdict(opts), jf, "options", optional=("min_site_bits",))
    try:
        opts.validate()
    except ConfigError as e:
        raise CheckpointError(f"{jf}: options: {e}") from None
    return opts


def expected_tensors(cfg: ModelConfig, opts: QuantOptions, sites: dict, source: Path | str = "quant.json") -> dict:
    """name -> (shape, dtype) of every integer tensor ``quantize`` makes for this config and these options
    (structure.quantized_tensors; table lengths from the sites' widths), to check a stored model against."""
    size = S.dim_sizes(cfg)

    def dim(sym: str) -> int:
        """A tensor dimension named in the schema: a config size, or a lut site's 2^bits entries."""
        if not sym.startswith("lut:"):
            return size[sym]
        site = sym[len("lut:"):]
        if site not in sites:
            raise CheckpointError(f"{source}: sites: site {site!r} is missing")
        b = sites[site]["bits"]
        if not 1 <= b <= fp.STATE_BITS_MAX:
            raise CheckpointError(f"{source}: sites.{site}.bits: {b} is outside [1, {fp.STATE_BITS_MAX}]")
        return 1 << b

    return {name: (tuple(dim(s) for s in dims), dtype)
            for name, (dims, dtype) in S.quantized_tensors(cfg, not opts.remove_inner_norm).items()}


def _gain(w: np.ndarray, n: int, s_out: float, gain_bits: int) -> tuple[np.ndarray, int]:
    """Integer RMSNorm gain G = round(w·√n/s_out · 2^gexp), gexp the largest that keeps |G| < 2^(gain_bits-1)."""
    real = w.astype(np.float64) * np.sqrt(n) / s_out
    peak = float(np.max(np.abs(real))) if real.size else 0.0
    if peak == 0.0:
        return np.zeros(w.shape, np.int64), 0
    gexp = int(np.floor(np.log2(fp.smax(gain_bits) / peak)))
    g = np.round(real * 2.0 ** gexp)
    if np.max(np.abs(g)) > fp.smax(gain_bits):
        gexp -= 1
        g = np.round(real * 2.0 ** gexp)
    return g.astype(np.int64), gexp


def _eps_int(eps: float, n: int, s_in: float) -> int:
    """RMSNorm's eps in units of the integer sum of squares: max(1, round(eps·n/s_in²))."""
    return int(max(1, min(round(eps * n / (s_in * s_in)), 1 << 40)))


def _lut_with_product_shift(fn, in_bits, in_scale, factor, lut_bits) -> tuple[np.ndarray, int]:
    """Table of fn(q·in_scale)·factor·2^n with n the largest shift that fits lut_bits; returns (table, n)."""
    q = np.arange(fp.smin(in_bits), fp.smax(in_bits) + 1, dtype=np.float64)
    vals = fn(q * in_scale) * factor
    peak = float(np.max(np.abs(vals)))
    n = int(np.floor(np.log2(fp.smax(lut_bits) / max(peak, 1e-30))))
    n = min(n, 40)
    table = np.clip(np.round(vals * 2.0 ** n), fp.smin(lut_bits), fp.smax(lut_bits)).astype(np.int64)
    return table, n


def quantize(cfg: ModelConfig, weights: dict[str, np.ndarray], calib_tokens, options: QuantOptions | None = None) -> QuantizedModel:
    """Build the fixed-point model from float weights and calibration token sequences."""
    opts = options or QuantOptions()
    opts.validate()
    # calibration runs whole sequences, so the float model need not keep float32 copies of the weights
    fm = FloatModel(cfg, weights, remove_inner_norm=opts.remove_inner_norm, low_memory=True)
    q = _Params(cfg, opts, _site_scales(cfg, opts, *_calibration(fm, calib_tokens, opts)))
    _embedding(q, weights)
    _norm_parameters(q, weights)
    _projection_parameters(q, fm)
    for i in range(cfg.L):
        _mlgru_parameters(q, i, fm.betas[i])
        _mixer_parameters(q, i)
    _check_ranges(q.tensors, q.scalars)
    return QuantizedModel(cfg, opts, q.sites, q.tensors, q.scalars, q.meta)


def _calibration(fm: FloatModel, calib_tokens, opts: QuantOptions) -> tuple[dict, dict]:
    """max |value| per site, and the values themselves only when the "mse" scale search needs them."""
    if opts.scale_method == "mse":
        return calibrate(fm, calib_tokens, keep_values=True)
    return calibrate(fm, calib_tokens), {}


def _site_scales(cfg: ModelConfig, opts: QuantOptions, amax: dict, samples: dict) -> dict:
    """Every site's width and static scale, from its calibrated range (and values, for "mse"): the one
    place a site's scale is chosen, so every parameter below follows from the same scales."""
    return {name: site_entry(kind, opts, amax[name], samples.get(name))
            for name, kind in S.quant_sites(cfg, not opts.remove_inner_norm)}


def site_entry(kind: str, opts: QuantOptions, amax: float, v: np.ndarray | None) -> dict:
    """One site's width and scale from its calibrated max |value| (and values, for "mse")."""
    b = opts.bits(kind)
    head = opts.state_headroom_bits if kind == S.STATE_SITE else 0
    s, frac = _site_scale(amax, b, opts.pow2, head)
    # the state keeps the max-based scale: clipping it would feed back through every later token
    if kind != S.STATE_SITE and v is not None and v.size:
        if opts.pow2:
            frac = _mse_frac(v, b, frac)
            s = 2.0 ** -frac
        else:
            s = _mse_scale(v, b, amax)
    return dict(bits=b, scale=s, frac=frac, amax=amax)


class _Params:
    """The integers being made (tensors, scalars) and the float facts kept, with the sites they follow from;
    the helpers name each parameter the way the integer model and the lowering read it."""

    def __init__(self, cfg: ModelConfig, opts: QuantOptions, sites: dict):
        self.cfg, self.opts, self.sites = cfg, opts, sites
        self.inner = not opts.remove_inner_norm
        self.tensors: dict = {}
        self.scalars: dict = {}
        self.meta: dict = {"absmean": {}}

    def sc(self, site: str) -> float:
        """A calibrated site's scale."""
        return self.sites[site]["scale"]

    def bits(self, site: str) -> int:
        """A calibrated site's width in bits."""
        return self.sites[site]["bits"]

    def rescale(self, key: str, s_from: float, s_to: float) -> None:
        """M/s pair taking a value at scale s_from to s_to (a pure shift with power-of-two scales)."""
        if self.opts.pow2:
            m, sh = fp.pow2_rescale(int(round(-np.log2(s_from))), int(round(-np.log2(s_to))))
        else:
            m, sh = fp.quantize_multiplier(s_from / s_to, self.opts.mult_bits)
        self.scalars[f"M.{key}"], self.scalars[f"s.{key}"] = int(m), int(sh)

    def accumulator(self, key: str, absmean: float, s_in: float, s_out: float) -> None:
        """M/s pair requantizing a ternary accumulator (input scale s_in, weight scale absmean) to s_out."""
        m, sh = fp.quantize_multiplier(absmean * s_in / s_out, self.opts.mult_bits)
        self.scalars[f"M.{key}"], self.scalars[f"s.{key}"] = int(m), int(sh)


def _embedding(q: _Params, weights: dict) -> None:
    """The embedding table quantized at the first layer's input scale: the host sends its rows as they are."""
    x0 = S.site(0, "x")
    emb = weights[S.EMBEDDINGS].astype(np.float64)
    q.tensors["emb.Q"] = np.clip(np.round(emb / q.sc(x0)), fp.smin(q.bits(x0)), fp.smax(q.bits(x0))).astype(np.int64)


def _norm_parameters(q: _Params, weights: dict, layers=None) -> None:
    """Gain, gain shift, square shift and integer eps of every RMSNorm (structure.all_norms).

    The config's eps for the block norms (attn_norm, g_norm, mlp_norm, final norm), the released
    BitLinear's fixed eps for each projection's own input norm (config.BITLINEAR_NORM_EPS); the rms_eps
    option overrides both. Norms that read the same site share one reduction and so one eps."""
    opts = q.opts
    for n in S.all_norms(q.cfg, q.inner):
        if layers is not None and n.layer not in layers:
            continue
        size = S.dim_sizes(q.cfg)[n.dim]
        s_in, in_bits = q.sc(n.src), q.bits(n.src)
        # wide inputs square into x²/2^k (range_analysis.norm_square_shift: the validator's own bound); the rsqrt of
        # the k-scaled sum is then 2^(k/2) too large, which the apply step's shift takes back: gexp grows by k/2
        k = range_analysis.norm_square_shift(in_bits, size)
        g, gexp = _gain(weights[n.weight], size, q.sc(n.key), opts.gain_bits)
        q.tensors[f"G.{n.key}"] = g
        q.scalars[f"gexp.{n.key}"] = gexp + k // 2
        if k:
            q.scalars[f"sq.{n.reduction}"] = k
        eps = q.cfg.rms_norm_eps if n.kind == "block" else BITLINEAR_NORM_EPS
        eps = eps if opts.rms_eps is None else opts.rms_eps
        q.scalars[f"E.{n.reduction}"] = _eps_int(eps, size, s_in * 2.0 ** (k / 2))


def _projection_parameters(q: _Params, fm: FloatModel) -> None:
    """Ternary matrices and weight scales of every projection, reused from the float model (same function,
    same weights), with the multipliers that requantize their accumulators; the head's sets the logit scale."""
    for i in [*range(q.cfg.L), None]:
        for p in (S.LAYER_PROJECTIONS if i is not None else (S.HEAD,)):
            projection_parameters(q, i, p, fm.layers[i][p.key] if i is not None else fm.head)


def projection_parameters(q: _Params, i: int | None, p: S.Projection, blin) -> None:
    """One projection's ternary matrix, weight scale and accumulator multipliers (layer i, None: the head)."""
    key = S.site(i, p.key)
    q.tensors[S.quant_weight_name(p, i)] = blin.wt
    q.meta["absmean"][key] = blin.absmean
    s_in = q.sc(S.site(i, p.in_site if q.inner else p.src_site))
    for out in p.out_sites:
        q.accumulator(S.site(i, out), blin.absmean, s_in, q.sc(S.site(i, out)))
    if p is S.HEAD:
        q.meta["logit_scale"] = blin.absmean * s_in


def _mlgru_parameters(q: _Params, i: int, betas: np.ndarray) -> None:
    """Layer i's MLGRU: forget-gate and candidate tables, lower-bound offsets, the state's requantization
    and the output gate's SiLU(h) table with the shift of the product o = gn·SiLU(h)."""
    k = lambda name: S.site(i, name)  # noqa: E731
    q.tensors[k("lut.sig_f")] = fp.build_lut(sigmoid, q.bits(k("f")), q.sc(k("f")), 2.0 ** -fp.GATE_FRAC,
                                             fp.GATE_FRAC + 2)
    q.tensors[k("B")] = np.round(betas * (1 << fp.GATE_FRAC)).astype(np.int64)
    q.tensors[k("lut.silu_i")] = fp.build_lut(silu, q.bits(k("i")), q.sc(k("i")), q.sc(k("h")), q.bits(k("h")))
    q.rescale(k("hq"), q.sc(k("h")), q.sc(k("hq")))
    tab, n = _lut_with_product_shift(silu, q.bits(k("hq")), q.sc(k("hq")), q.sc(k("gn")) / q.sc(k("o")),
                                     q.opts.lut_out_bits)
    q.tensors[k("lut.silu_h")], q.scalars[k("n.o")] = tab, n


def _mixer_parameters(q: _Params, i: int) -> None:
    """Layer i's two residual adds (each operand aligned to the sum's scale) and the GLU's SiLU(a) table
    with the shift of the product z = SiLU(a)·b."""
    k = lambda name: S.site(i, name)  # noqa: E731
    nxt = S.next_x(q.cfg, i)
    q.rescale(k("res_x"), q.sc(k("x")), q.sc(k("r")))
    q.rescale(k("res_ao"), q.sc(k("attn_out")), q.sc(k("r")))
    q.rescale(k("res_r"), q.sc(k("r")), q.sc(nxt))
    q.rescale(k("res_mo"), q.sc(k("mlp_out")), q.sc(nxt))
    tab, n = _lut_with_product_shift(silu, q.bits(k("a")), q.sc(k("a")), q.sc(k("b")) / q.sc(k("z")),
                                     q.opts.lut_out_bits)
    q.tensors[k("lut.silu_a")], q.scalars[k("n.z")] = tab, n


def _check_ranges(tensors, scalars) -> None:
    """Every stored integer must fit the hardware word it will live in."""
    for name, arr in tensors.items():
        if arr.size and (int(arr.min()) < fp.smin(fp.MSG_BITS_MAX) or int(arr.max()) > fp.smax(fp.MSG_BITS_MAX)):
            raise ConfigError(f"quantized tensor {name}: values [{int(arr.min())}, {int(arr.max())}] exceed 24 bits")
    for name, v in scalars.items():
        if name.startswith("M.") and not 0 <= v <= fp.smax(fp.MSG_BITS_MAX):
            raise ConfigError(f"quantized multiplier {name} = {v} is outside [0, 2^23)")
