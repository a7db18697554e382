"""HGRN-Bit model configuration (Hugging Face ``config.json``, model_type ``hgrn_bit``) and presets.

Only the fields that change what the network computes are kept; unknown extra fields of a released
config (``attn_mode``, ``fuse_cross_entropy``, ...) are accepted and carried along untouched so that
a config we write back is still readable by the original code.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mflc.ir.errors import ConfigError
from mflc.ir.schema import read_json

MODEL_TYPE = "hgrn_bit"

# eps of every BitLinear's own input RMSNorm (i/f/g/o_proj, gate/down_proj, lm_head), whatever the
# config's ``rms_norm_eps``. The released model (ridgerchu/matmulfreellm, main branch) builds its
# BitLinears as ``mmfreelm/ops/fusedbitnet.py::FusedBitLinear``, whose forward calls
# ``layer_norm_linear_quant_fn`` without an eps, so the function's default 1e-6 applies (the module's
# own ``RMSNorm(in_features, eps=1e-8)`` contributes only its weight); nothing passes ``rms_norm_eps``
# to a BitLinear. ``rms_norm_eps`` reaches only attn_norm, mlp_norm, the attention's g_norm and the
# final norm (``models/hgrn_bit/modeling_hgrn_bit.py``, ``layers/hgrn_bit.py``). docs/fixed-point.md,
# "Which eps each norm uses", has the evidence.
BITLINEAR_NORM_EPS = 1e-6


def default_intermediate_size(hidden_size: int, hidden_ratio: int) -> int:
    """The released code's rule when ``intermediate_size`` is null: 2/3 of hidden*ratio, rounded up to 256."""
    m = int(hidden_size * hidden_ratio * 2 / 3)
    return 256 * ((m + 255) // 256)


@dataclass(frozen=True)
class ModelConfig:
    """An HGRN-Bit checkpoint's config.json fields that mflc uses, checked, with unknown ones kept."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_heads: int = 1
    expand_ratio: int = 1
    hidden_ratio: int = 4
    intermediate_size: int | None = None
    hidden_act: str = "swish"
    rms_norm_eps: float = 1e-6
    use_lower_bound: bool = True
    use_short_conv: bool = False
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def d(self) -> int:
        """Model width (hidden_size), under the name the maths uses."""
        return self.hidden_size

    @property
    def d_attn(self) -> int:
        """Width of the MLGRU's i/f/g projections and of its recurrent state (d · expand_ratio)."""
        return self.hidden_size * self.expand_ratio

    @property
    def m(self) -> int:
        """GLU intermediate width."""
        if self.intermediate_size is not None:
            return int(self.intermediate_size)
        return default_intermediate_size(self.hidden_size, self.hidden_ratio)

    @property
    def L(self) -> int:
        """Number of layers, under the name the maths uses."""
        return self.num_hidden_layers

    def n_params(self) -> int:
        """Parameter count implied by the configuration (for reports and sizing)."""
        d, e, m, V, L = self.d, self.d_attn, self.m, self.vocab_size, self.L
        per_layer = 3 * e * d + e * d + 2 * m * d + m * d + (2 * d + e) + (3 * d + e + d + m)
        head = (0 if self.tie_word_embeddings else V * d) + d  # lm_head.norm exists even when tied
        lb = L * d if self.use_lower_bound else 0
        return V * d + L * per_layer + d + head + lb

    # ---- (de)serialisation ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "ModelConfig":
        """Parse and check a config mapping, errors naming ``source`` and the field."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        mt = raw.get("model_type", MODEL_TYPE)
        if mt != MODEL_TYPE:
            raise ConfigError(f"{source}: field 'model_type' is {mt!r}; mflc supports only {MODEL_TYPE!r}")
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        required = ["vocab_size", "hidden_size", "num_hidden_layers"]
        for name in required:
            if name not in raw or raw[name] is None:
                raise ConfigError(f"{source}: required field {name!r} is missing")
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            if name not in raw:
                continue
            kwargs[name] = _check_field(name, raw[name], source)
        extra = {k: v for k, v in raw.items() if k not in known}
        cfg = cls(**kwargs, extra=extra)
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        """Refuse sizes and options mflc cannot compile, as a ConfigError naming the field."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "expand_ratio", "hidden_ratio"):
            v = getattr(self, name)
            if v < 1:
                raise ConfigError(f"{source}: field {name!r} must be >= 1, got {v}")
        if self.intermediate_size is not None and self.intermediate_size < 1:
            raise ConfigError(f"{source}: field 'intermediate_size' must be >= 1 or null, got {self.intermediate_size}")
        if self.hidden_act not in ("swish", "silu"):
            raise ConfigError(f"{source}: field 'hidden_act' is {self.hidden_act!r}; only 'swish'/'silu' is supported")
        if self.use_short_conv:
            raise ConfigError(f"{source}: field 'use_short_conv' is true; the short convolution is not supported (the released models do not use it)")
        if self.num_heads != 1:
            raise ConfigError(f"{source}: field 'num_heads' is {self.num_heads}; the released HGRN-Bit models use 1 and mflc supports only 1")
        if self.use_lower_bound and self.expand_ratio != 1:
            raise ConfigError(f"{source}: fields 'use_lower_bound' = true and 'expand_ratio' = {self.expand_ratio} contradict: "
                              "the lower bounds have hidden_size channels and can only gate an expand_ratio of 1")
        if not (0.0 <= self.rms_norm_eps < 1.0):
            raise ConfigError(f"{source}: field 'rms_norm_eps' must be in [0, 1), got {self.rms_norm_eps}")

    def to_dict(self) -> dict[str, Any]:
        """The config.json mapping, unknown fields preserved, model_type set."""
        out = dict(self.extra)
        out.update({k: v for k, v in asdict(self).items() if k != "extra"})
        out["model_type"] = MODEL_TYPE
        out.setdefault("architectures", ["HGRNBitForCausalLM"])
        return out

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        """Read and check a config.json file."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        return cls.from_dict(read_json(p, ConfigError), source=str(p))

    def save(self, path: str | Path) -> None:
        """Write the configuration as config.json."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


_INT_FIELDS = {"vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "expand_ratio", "hidden_ratio", "intermediate_size"}
_BOOL_FIELDS = {"use_lower_bound", "use_short_conv", "tie_word_embeddings"}
_FLOAT_FIELDS = {"rms_norm_eps", "initializer_range"}


def _check_field(name: str, value: Any, source: str) -> Any:
    if name in _INT_FIELDS:
        if value is None and name == "intermediate_size":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: field {name!r} must be an integer, got {value!r}")
    elif name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: field {name!r} must be true or false, got {value!r}")
    elif name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: field {name!r} must be a number, got {value!r}")
        value = float(value)
    elif name == "hidden_act" and not isinstance(value, str):
        raise ConfigError(f"{source}: field 'hidden_act' must be a string, got {value!r}")
    return value


# Presets. 370M: d=1024, L=24, V=32000 as quoted from ridger/MMfreeLM-370M's config.json (seen in a
# public fine-tune's config that names it as _name_or_path). 1.3B and 2.7B: d and L from Zhu et al.
# 2024 (arXiv 2406.02528) model table (1.3B: d=2048, L=24; 2.7B: d=2560, L=32), intermediate_size null
# as in the released configs, so m follows default_intermediate_size. `tiny` is ours, byte-level.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, intermediate_size=64),
    "370M": dict(vocab_size=32000, hidden_size=1024, num_hidden_layers=24),
    "1.3B": dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=24),
    "2.7B": dict(vocab_size=32000, hidden_size=2560, num_hidden_layers=32),
}


def preset(name: str) -> ModelConfig:
    """The configuration of a named preset size (370M, 1.3B, 2.7B, tiny)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig.from_dict(dict(PRESETS[name]), source=f"preset {name}")
