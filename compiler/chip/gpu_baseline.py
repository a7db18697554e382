"""The comparison the paper makes: a small transformer LLM on an edge GPU (NVIDIA Jetson Orin Nano).

A roofline from published figures, not a measurement. Generating one token at batch size 1 reads every
weight and the whole KV cache once, so its time is (weight bytes + KV bytes(context)) / memory bandwidth,
or the compute time if that is longer; the prompt (prefill) is compute-bound: 2·params·P FLOPs plus the
causal attention, at the GPU's peak rate times a utilisation. Energy is the module's power budget times
the time. Efficiency and utilisation default to 1 (the GPU at its published peak): the baseline is the
GPU's best case, so a Loihi advantage computed against it is conservative. Every figure is a
``Constant`` with its source and confidence (``mflc.compiler.chip.constant``); the JSON override file of
``load_cost_params`` changes them under its ``"gpu"`` key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from .constant import Constant

JETSON_DATASHEET = ("NVIDIA Jetson Orin Nano Series module data sheet (8 GB module: 1024 CUDA cores, 32 tensor "
                    "cores, 128-bit LPDDR5 at 68 GB/s, up to 40 sparse INT8 TOPS, 7 W / 15 W power modes)")
JETSON_SUPER = ("NVIDIA Jetson Orin Nano Super developer kit (JetPack 6.1, Dec 2024): same module at higher "
                "clocks, 102 GB/s, 67 sparse INT8 TOPS, 25 W mode")
FP16_NOTE = ("dense FP16 tensor rate = sparse INT8 TOPS / 4 (structured sparsity doubles, INT8 doubles FP16); "
             "10 TFLOPS FP16 for the 8 GB module is also quoted by E. Liu, 'Why your Jetson Orin Nano's 40 TOPS "
             "goes unused' (2025), who measured single-stream LLM decoding there to be memory-bandwidth bound")
ROOFLINE = "assumption: roofline at the published peak (no efficiency loss): the GPU's best case"


@dataclass(frozen=True)
class TransformerSpec:
    """A decoder-only transformer with grouped-query attention and a gated (SwiGLU) MLP."""

    name: str
    layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab: int
    tied: bool
    qkv_bias: bool
    source: str

    @property
    def n_params(self) -> int:
        """Parameter count from the architecture (attention, MLP, norms, embeddings, untied head)."""
        d, kv = self.d_model, self.n_kv_heads * self.head_dim
        q = self.n_heads * self.head_dim
        attn = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if self.qkv_bias else 0)
        per_layer = attn + 3 * d * self.d_ff + 2 * d
        head = 0 if self.tied else self.vocab * d
        return self.vocab * d + self.layers * per_layer + d + head

    def kv_elements_per_token(self) -> int:
        """Keys and values cached per token of context, over all layers."""
        return 2 * self.layers * self.n_kv_heads * self.head_dim

    def matmul_params(self) -> int:
        """Weights multiplied per token in the layers (everything but the embedding lookup and the head)."""
        return self.n_params - self.vocab * self.d_model * (1 if self.tied else 2) - self.d_model


QWEN2_5_0_5B = TransformerSpec(
    "Qwen2.5-0.5B", layers=24, d_model=896, n_heads=14, n_kv_heads=2, head_dim=64, d_ff=4864, vocab=151936,
    tied=True, qkv_bias=True, source="Qwen/Qwen2.5-0.5B config.json on Hugging Face (0.49 B parameters)")
LLAMA3_2_1B = TransformerSpec(
    "Llama-3.2-1B", layers=16, d_model=2048, n_heads=32, n_kv_heads=8, head_dim=64, d_ff=8192, vocab=128256,
    tied=True, qkv_bias=False, source="meta-llama/Llama-3.2-1B config.json on Hugging Face (1.24 B parameters)")
BASELINE_MODELS = {m.name: m for m in (QWEN2_5_0_5B, LLAMA3_2_1B)}
LIKE_FOR_LIKE = 4.0          # a baseline within this factor of the model's parameter count is a comparison of like sizes


def _params_text(n: float) -> str:
    return f"{n / 1e9:.2g} B" if n >= 1e8 else f"{n / 1e6:.2g} M"


def choose_baselines(n_params: int | None, names=None) -> tuple[list[TransformerSpec], str]:
    """The GPU baselines to compare a model of ``n_params`` parameters with, and a note saying how like the
    comparison is. ``names``: baseline names (case-insensitive) or ["all"]; default: the one nearest in size."""
    if names:
        key = {k.lower(): m for k, m in BASELINE_MODELS.items()}
        if [n.lower() for n in names] == ["all"]:
            chosen = list(BASELINE_MODELS.values())
        else:
            unknown = [n for n in names if n.lower() not in key]
            if unknown:
                raise ValueError(f"unknown GPU baseline {', '.join(unknown)}; choose from {', '.join(BASELINE_MODELS)} "
                                 "or all")
            chosen = [key[n.lower()] for n in names]
    elif n_params:
        chosen = [min(BASELINE_MODELS.values(), key=lambda m: abs(math.log(m.n_params / n_params)))]
    else:
        chosen = list(BASELINE_MODELS.values())
    if not n_params:
        return chosen, "baselines named by the user; the model's parameter count is not known"
    parts = []
    for m in chosen:
        r = m.n_params / n_params
        like = 1 / LIKE_FOR_LIKE <= r <= LIKE_FOR_LIKE
        ratio = f"{r:,.0f}x" if r >= 100 else f"{r:.2g}x"
        parts.append(f"{m.name} ({_params_text(m.n_params)} parameters, {ratio} the model's "
                     f"{_params_text(n_params)}){'' if like else ': NOT like for like'}")
    note = "compared with " + "; ".join(parts)
    if all(not (1 / LIKE_FOR_LIKE <= m.n_params / n_params <= LIKE_FOR_LIKE) for m in chosen):
        note += (f". No GPU baseline within {LIKE_FOR_LIKE:g}x of this model's size: the ratios compare unlike "
                 "models and say little")
    return chosen, note


@dataclass(frozen=True)
class GpuParams:
    """The GPU's published figures (bandwidth, peak FLOP/s, power, efficiencies), each a sourced Constant."""

    name: str = "Jetson Orin Nano 8GB (15 W)"
    mem_bw: Constant = Constant(68e9, "B/s", JETSON_DATASHEET, "high", 68e9, 102e9,
                                "peak DRAM bandwidth; the Super firmware raises it to 102 GB/s")
    peak_flops: Constant = Constant(10e12, "FLOP/s", FP16_NOTE, "medium", 10e12, 16.75e12,
                                    "dense FP16 tensor-core peak")
    power: Constant = Constant(15.0, "W", JETSON_DATASHEET, "medium", 7.0, 25.0,
                               "the module's power-mode budget, taken as its draw while busy")
    bw_efficiency: Constant = Constant(1.0, "1", ROOFLINE, "low", 0.5, 1.0,
                                       "fraction of peak bandwidth reached while decoding")
    compute_utilisation: Constant = Constant(1.0, "1", ROOFLINE, "low", 0.2, 1.0,
                                             "fraction of peak FLOP/s reached during prefill")
    bytes_per_weight: Constant = Constant(2.0, "B", "assumption: FP16/BF16 weights, the released checkpoints' "
                                          "dtype (bfloat16); INT8/INT4 quantisation would halve/quarter it",
                                          "medium", 0.5, 2.0)
    bytes_per_kv: Constant = Constant(2.0, "B", "assumption: FP16 KV cache", "medium", 1.0, 2.0)

    def value(self, name: str) -> float:
        """A figure's value in SI units, by field name."""
        return float(getattr(self, name).value)

    def label(self) -> str:
        """The GPU's name with the power actually used (an overridden power budget shows in every label)."""
        base = self.name.rsplit(" (", 1)[0] if self.name.endswith(" W)") else self.name
        return f"{base} ({self.value('power'):g} W)"

    def constants(self) -> dict[str, Constant]:
        """Every figure by field name, for reports and overrides."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


JETSON_ORIN_NANO_8GB = GpuParams()
JETSON_ORIN_NANO_SUPER = replace(
    GpuParams(), name="Jetson Orin Nano Super 8GB (25 W)",
    mem_bw=Constant(102e9, "B/s", JETSON_SUPER, "high", 68e9, 102e9),
    peak_flops=Constant(16.75e12, "FLOP/s", JETSON_SUPER + "; " + FP16_NOTE, "medium", 10e12, 16.75e12),
    power=Constant(25.0, "W", JETSON_SUPER, "medium", 7.0, 25.0))
GPUS = {"orin-nano": JETSON_ORIN_NANO_8GB, "orin-nano-super": JETSON_ORIN_NANO_SUPER}


def weight_bytes(m: TransformerSpec, gpu: GpuParams) -> float:
    """Bytes read per generated token for the weights (every weight once, at batch size 1)."""
    return m.n_params * gpu.value("bytes_per_weight")


def kv_bytes(m: TransformerSpec, gpu: GpuParams, context: int) -> float:
    """Bytes of KV cache read per generated token at a given context length."""
    return m.kv_elements_per_token() * context * gpu.value("bytes_per_kv")


def token_flops(m: TransformerSpec, context: int) -> float:
    """FLOPs to generate one token attending to ``context`` earlier tokens (plus itself), logits included."""
    attn = 4 * m.layers * m.n_heads * m.head_dim * (context + 1)
    return 2.0 * (m.matmul_params() + m.vocab * m.d_model) + attn


def generation_time(m: TransformerSpec, gpu: GpuParams, context: int) -> float:
    """Seconds to generate one token with ``context`` tokens already in the KV cache (batch size 1)."""
    mem = (weight_bytes(m, gpu) + kv_bytes(m, gpu, context)) / (gpu.value("mem_bw") * gpu.value("bw_efficiency"))
    comp = token_flops(m, context) / (gpu.value("peak_flops") * gpu.value("compute_utilisation"))
    return max(mem, comp)


def prefill_flops(m: TransformerSpec, prompt_len: int) -> float:
    """Every prompt token through every layer, causal attention, logits of the last token only."""
    p = prompt_len
    attn = 4 * m.layers * m.n_heads * m.head_dim * p * (p + 1) / 2
    return 2.0 * m.matmul_params() * p + attn + 2.0 * m.vocab * m.d_model


def prefill_time(m: TransformerSpec, gpu: GpuParams, prompt_len: int) -> float:
    """Seconds to process a prompt of ``prompt_len`` tokens in one batch (compute- or memory-bound)."""
    comp = prefill_flops(m, prompt_len) / (gpu.value("peak_flops") * gpu.value("compute_utilisation"))
    mem = (weight_bytes(m, gpu) + kv_bytes(m, gpu, prompt_len)) / (gpu.value("mem_bw") * gpu.value("bw_efficiency"))
    return max(comp, mem)


def gpu_figures(m: TransformerSpec, gpu: GpuParams, prompt_len: int, gen_len: int) -> dict:
    """The baseline's figures for a prompt of ``prompt_len`` tokens followed by ``gen_len`` generated ones."""
    if prompt_len < 1 or gen_len < 0:
        raise ValueError("prompt_len must be >= 1 and gen_len >= 0")
    p_w = gpu.value("power")
    ttft = prefill_time(m, gpu, prompt_len)
    gen = [generation_time(m, gpu, prompt_len + k) for k in range(max(gen_len - 1, 0))]
    gen_mean = (sum(gen) / len(gen)) if gen else generation_time(m, gpu, prompt_len)
    total = ttft + sum(gen)
    return dict(
        model=m.name, model_params=m.n_params, model_source=m.source, gpu=gpu.label(),
        weight_bytes=weight_bytes(m, gpu), kv_bytes_per_token=kv_bytes(m, gpu, 1),
        ttft_s=ttft,
        prefill_tokens_per_s=prompt_len / ttft,
        prefill_energy_per_token_J=p_w * ttft / prompt_len,
        generation_time_per_token_s=gen_mean,
        generation_tokens_per_s=1.0 / gen_mean,
        generation_energy_per_token_J=p_w * gen_mean,
        total_time_s=total,
        total_energy_J=p_w * total,
        power_W=p_w,
    )


def gpu_scaling(m: TransformerSpec, gpu: GpuParams, seq_lens) -> dict:
    """Per-token time and energy against sequence length: generation at that context, prefill averaged."""
    p_w = gpu.value("power")
    gen = [generation_time(m, gpu, int(n)) for n in seq_lens]
    pre = [prefill_time(m, gpu, int(n)) / int(n) for n in seq_lens]
    return dict(generation_time_per_token_s=gen, generation_energy_per_token_J=[p_w * t for t in gen],
                prefill_time_per_token_s=pre, prefill_energy_per_token_J=[p_w * t for t in pre])


def default_seq_lens(max_len: int = 65536) -> list[int]:
    """Sequence lengths spaced by powers of two up to max_len, for the scaling plot."""
    n = max(2, int(math.log2(max_len)) + 1)
    return sorted({int(round(2 ** (k * math.log2(max_len) / (n - 1)))) for k in range(n)} | {1})
