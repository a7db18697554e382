"""Quantization-aware training of a small byte-level HGRN-Bit (MatMul-free LM) on Python's standard library.

This is the tool that produced mflc's embedded default model (``tools/data/default``). It needs torch,
numpy and safetensors only -- not mflc -- so it can run in its own venv, e.g. the one
``bash tools/setup.sh --train`` makes (Python 3.11 and the ``train`` extra: torch==2.13.0, pinned because
that CPU build is on these machines' disk and an unpinned torch pulls a CUDA build of several GB):

    .venv-train/bin/python tools/training/train.py --out tools/data/default --seed 0

(the shipped model's exact command, seed, wall time and losses are in tools/data/default/TRAINING.md).

Corpus
------
The ``.py`` files of the running interpreter's standard library (``sysconfig.get_paths()["stdlib"]``),
read as bytes. Excluded: every file under a directory named ``test``, ``tests``, ``idle_test``,
``idlelib``, ``turtledemo``, ``site-packages``, ``dist-packages``, ``__pycache__`` or ``config-*``,
and the generated data modules under ``encodings/`` (codec tables) and ``pydoc_data/`` (the docs text).
Split, fixed and interpreter-independent: a file whose relative path ``rel`` (POSIX separators) has
``int(sha256(rel.encode()).hexdigest(), 16) % 20 == 0`` is held out for evaluation, every other file
is for training (``split_of`` below). Files are concatenated in sorted path order, each followed by
``\\n\\n``.

Model (follows docs of the released HGRN-Bit, model_type ``hgrn_bit``)
------------------------------------------------------------------------
Embeddings -> L x [x + MLGRU(RMSNorm(x)); r + GLU(RMSNorm(r))] -> RMSNorm -> BitLinear lm_head.
Every projection is a BitLinear exactly as the released code trains it: its own RMSNorm (weight
``<proj>.norm.weight``), per-token absmax int8 activation fake-quant and per-matrix absmean ternary
weight fake-quant, both with straight-through estimators. MLGRU with lower bounds:
``beta = cumsum(softmax(lower_bounds, layers)) - softmax(...)[0]``, ``f = beta + (1 - beta) sigmoid(f_proj)``,
``c = SiLU(i_proj) (1 - f)``, ``h_t = f_t h_{t-1} + c_t`` (computed with a parallel Hillis-Steele scan),
``o = RMSNorm(g_proj) * g_norm.weight * SiLU(h)``, ``o_proj(o)``. GLU: ``[a, b] = gate_proj``,
``down_proj(SiLU(a) b)``. At inference this computes exactly what ``mflc.compiler.model.float_model`` computes;
``--dump-check`` writes float64 logits of a few held-out sequences to compare against it.

Output: ``config.json`` + ``model.safetensors`` (F32, the released tensor names) in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- corpus ----------------------------------------------------------------------------------------
try:  # run as a script (tools/ is sys.path[0]) or as mflc.training.train
    from corpus import corpus_files, split_of
except ImportError:  # pragma: no cover
    from mflc.training.corpus import corpus_files, split_of


def load_corpus(stdlib: Path | None = None) -> dict:
    """The stdlib bytes split into train and held-out by file (split_of), with the file names of each side."""
    files = corpus_files(stdlib)
    data = {"train": [], "heldout": []}
    names = {"train": [], "heldout": []}
    for rel, p in files:
        s = split_of(rel)
        data[s].append(p.read_bytes() + b"\n\n")
        names[s].append(rel)
    return {k: np.frombuffer(b"".join(v), dtype=np.uint8) for k, v in data.items()} | {"names": names}


# ---- model -----------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """RMSNorm with a learned gain, as in the HGRN-Bit checkpoints mflc loads."""

    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        """Normalise over the last axis by the root mean square, then scale by the gain."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def ste(x, q):
    """Forward q, backward identity (straight-through estimator)."""
    return x + (q - x).detach()


class BitLinear(nn.Module):
    """RMSNorm (own weight) -> per-token absmax int8 fake-quant -> absmean ternary weight; no bias."""

    def __init__(self, n_in: int, n_out: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.norm = RMSNorm(n_in, eps)

    def forward(self, x):
        """Quantization-aware forward: int8 activations and ternary weights, straight-through gradients."""
        xn = self.norm(x)
        s = 127.0 / xn.abs().amax(-1, keepdim=True).clamp(min=1e-5)
        xq = ste(xn, (xn * s).round().clamp(-128, 127) / s)
        w = self.weight
        absmean = w.abs().mean().clamp(min=1e-5)
        wq = ste(w, (w / absmean).round().clamp(-1, 1) * absmean)
        return F.linear(xq, wq)


def scan(f, c):
    """h_t = f_t h_{t-1} + c_t with h_{-1} = 0 along dim 1, in log2(T) parallel steps (Hillis-Steele)."""
    h, a = c, f
    T = c.shape[1]
    k = 1
    while k < T:
        h_prev = F.pad(h[:, :-k], (0, 0, k, 0))
        a_prev = F.pad(a[:, :-k], (0, 0, k, 0), value=1.0)
        h = h + a * h_prev
        a = a * a_prev
        k *= 2
    return h


class MLGRU(nn.Module):
    """The MatMul-free token mixer: a gated linear recurrence whose projections are all ternary BitLinears."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.i_proj = BitLinear(d, d, eps)
        self.f_proj = BitLinear(d, d, eps)
        self.g_proj = BitLinear(d, d, eps)
        self.g_norm = RMSNorm(d, eps)
        self.o_proj = BitLinear(d, d, eps)

    def forward(self, u, beta, h0=None):
        """Run the recurrence over the sequence (from h0 if given); returns outputs and the last state."""
        f = beta + (1 - beta) * torch.sigmoid(self.f_proj(u))
        c = F.silu(self.i_proj(u)) * (1 - f)
        if h0 is not None:  # fold a carried state into the first step
            c = torch.cat([c[:, :1] + f[:, :1] * h0[:, None], c[:, 1:]], dim=1)
        h = scan(f, c)
        o = self.g_norm(self.g_proj(u)) * F.silu(h)
        return self.o_proj(o), h[:, -1]


class GLU(nn.Module):
    """The channel mixer: a SiLU-gated linear unit of ternary projections."""

    def __init__(self, d: int, m: int, eps: float):
        super().__init__()
        self.m = m
        self.gate_proj = BitLinear(d, 2 * m, eps)
        self.down_proj = BitLinear(m, d, eps)

    def forward(self, x):
        """SiLU(gate) times the up half, projected back to the model width."""
        ab = self.gate_proj(x)
        return self.down_proj(F.silu(ab[..., : self.m]) * ab[..., self.m:])


class Block(nn.Module):
    """One layer: pre-norm MLGRU then pre-norm GLU, each with a residual."""

    def __init__(self, d, m, eps):
        super().__init__()
        self.attn_norm = RMSNorm(d, eps)
        self.attn = MLGRU(d, eps)
        self.mlp_norm = RMSNorm(d, eps)
        self.mlp = GLU(d, m, eps)

    def forward(self, x, beta, h0=None):
        """The layer on a sequence, returning its output and the MLGRU's last state."""
        a, h = self.attn(self.attn_norm(x), beta, h0)
        r = x + a
        return r + self.mlp(self.mlp_norm(r)), h


class Backbone(nn.Module):
    """Embeddings, the layers with their learned forget-gate lower bounds, and the final norm."""

    def __init__(self, V, d, L, m, eps):
        super().__init__()
        self.embeddings = nn.Embedding(V, d)
        self.lower_bounds = nn.Parameter(torch.zeros(L, d))
        self.layers = nn.ModuleList([Block(d, m, eps) for _ in range(L)])
        self.norm = RMSNorm(d, eps)


class HGRNBit(nn.Module):
    """Module and parameter names equal the released checkpoint's tensor names."""

    def __init__(self, cfg: dict):
        super().__init__()
        V, d, L, m, eps = (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                           cfg["intermediate_size"], cfg["rms_norm_eps"])
        self.cfg = cfg
        self.model = Backbone(V, d, L, m, eps)
        self.lm_head = BitLinear(d, V, eps)

    def betas(self):
        """Each layer's forget-gate lower bound, increasing with depth (cumulative softmax, first layer 0)."""
        sm = torch.softmax(self.model.lower_bounds, dim=0)
        return torch.cumsum(sm, dim=0) - sm[0:1]

    def forward(self, tokens, state=None):
        """tokens [B, T] -> logits [B, T, V], final states [L, B, d]."""
        x = self.model.embeddings(tokens)
        betas = self.betas()
        states = []
        for i, blk in enumerate(self.model.layers):
            x, h = blk(x, betas[i], None if state is None else state[i])
            states.append(h)
        return self.lm_head(self.model.norm(x)), torch.stack(states)

    def init_weights(self, gen: torch.Generator):
        """As the released code: normal(0.02) embeddings / gate / head, normal(0.02/sqrt(2L)) down_proj,
        xavier_uniform(gain 2^-2.5) for the MLGRU projections, norm weights 1, lower bounds 0."""
        std, L = self.cfg["initializer_range"], self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name == "model.lower_bounds":
                    p.zero_()
                elif ".attn." in name:
                    fan_out, fan_in = p.shape
                    bound = 2 ** -2.5 * math.sqrt(6.0 / (fan_in + fan_out))
                    p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
                elif name.endswith("down_proj.weight"):
                    p.copy_(torch.randn(p.shape, generator=gen) * std / math.sqrt(2 * L))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)


def make_config(args) -> dict:
    """The Hugging Face config.json of the model (the fields mflc's ModelConfig.to_dict writes)."""
    return {
        "architectures": ["HGRNBitForCausalLM"], "model_type": "hgrn_bit",
        "vocab_size": 256, "hidden_size": args.hidden, "num_hidden_layers": args.layers, "num_heads": 1,
        "expand_ratio": 1, "hidden_ratio": 4, "intermediate_size": args.intermediate, "hidden_act": "swish",
        "rms_norm_eps": 1e-6, "use_lower_bound": True, "use_short_conv": False, "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }


def save(model: HGRNBit, out: Path, extra_meta: dict) -> None:
    """Write config.json and model.safetensors under the checkpoint names mflc's loader expects."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(model.cfg, indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().float().cpu().numpy().copy() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"),
              metadata={"format": "pt", **{k: str(v) for k, v in extra_meta.items()}})


# ---- training --------------------------------------------------------------------------------------
def batches(data: np.ndarray, batch: int, seq: int, rng: np.random.Generator):
    """Endless random windows of seq + 1 bytes (inputs and shifted targets) for training."""
    while True:
        starts = rng.integers(0, len(data) - seq - 1, batch)
        idx = starts[:, None] + np.arange(seq + 1)[None]
        yield torch.from_numpy(data[idx].astype(np.int64))


@torch.no_grad()
def heldout_bits(model: HGRNBit, data: np.ndarray, seq: int, n_windows: int) -> float:
    """Mean next-byte cross-entropy (bits/byte) over n_windows evenly spaced windows, state zero each."""
    model.eval()
    starts = np.linspace(0, len(data) - seq - 1, n_windows).astype(np.int64)
    idx = starts[:, None] + np.arange(seq + 1)[None]
    toks = torch.from_numpy(data[idx].astype(np.int64))
    tot = 0.0
    for k in range(0, n_windows, 16):
        tb = toks[k:k + 16]
        logits, _ = model(tb[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, 256), tb[:, 1:].reshape(-1), reduction="sum").item()
    model.train()
    return tot / (n_windows * seq) / math.log(2)


@torch.no_grad()
def sample(model: HGRNBit, prompt: bytes, n: int, temperature: float, gen: torch.Generator) -> bytes:
    """Generate n bytes after a prompt (greedy at temperature 0): a quick look at what the model learnt."""
    model.eval()
    toks = torch.tensor([list(prompt)])
    logits, st = model(toks)
    out = list(prompt)
    for _ in range(n):
        z = logits[0, -1].double()
        t = int(z.argmax()) if temperature <= 0 else int(torch.multinomial(torch.softmax(z / temperature, -1), 1, generator=gen))
        out.append(t)
        logits, st = model(torch.tensor([[t]]), st)
    model.train()
    return bytes(out)


def lr_at(step: int, args) -> float:
    """Linear warm-up then cosine decay to min_lr_frac of the peak rate."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def _parser() -> argparse.ArgumentParser:
    """The command line of ``main`` (model shape, schedule, limits, outputs)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.05, help="on the projection matrices only")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--no-compile", action="store_true", help="train eagerly (torch.compile fuses the "
                    "elementwise ops: about 1.6x faster steps after a one-off compile of a minute or two)")
    ap.add_argument("--max-minutes", type=float, default=45.0, help="safety stop: save and quit after this")
    ap.add_argument("--stdlib", type=Path, default=None, help="stdlib directory (default: this interpreter's)")
    ap.add_argument("--dump-check", type=Path, default=None,
                    help="also write float64 logits of a few held-out sequences (.npz) to compare with mflc")
    return ap


def _optimizer(model, args) -> torch.optim.Optimizer:
    """AdamW with weight decay on the projection matrices (and the head) only."""
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "proj" in n or n == "lm_head.weight"]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def _train(model, opt, tr, ho, rng, args) -> tuple[int, float, float]:
    """The training loop with its progress lines; returns (last step, EMA train bits/byte, minutes)."""
    train_fwd = model if args.no_compile else torch.compile(model)  # evaluation and sampling stay eager
    it = batches(tr, args.batch, args.seq_len, rng)
    ema = None
    t_train = time.time()
    step = 0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        b = next(it)
        logits, _ = train_fwd(b[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        bits = loss.item() / math.log(2)
        ema = bits if ema is None else 0.98 * ema + 0.02 * bits
        el = time.time() - t_train
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d} lr {lr_at(step, args):.2e} train {ema:.3f} bits/byte  "
                  f"{el / (step + 1):.3f} s/step  elapsed {el / 60:.1f} min", flush=True)
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            print(f"  eval step {step + 1}: held-out {heldout_bits(model, ho, 512, args.eval_windows):.3f} bits/byte",
                  flush=True)
        if el > args.max_minutes * 60:
            print(f"time limit {args.max_minutes} min reached at step {step}; stopping", flush=True)
            break
    return step, ema, (time.time() - t_train) / 60


def _dump_check(model, ho, path: Path) -> None:
    """float64 logits of three held-out sequences, for comparing the trained model with mflc's."""
    md = model.double()
    seqs = [ho[s:s + 200].astype(np.int64) for s in (0, len(ho) // 3, 2 * len(ho) // 3)]
    with torch.no_grad():
        lg = [md(torch.from_numpy(s)[None])[0][0].numpy() for s in seqs]
    np.savez(path, tokens=np.stack(seqs), logits=np.stack(lg))
    print(f"wrote {path}", flush=True)


def main(argv=None) -> int:
    """Train a small HGRN-Bit on the stdlib corpus and save a checkpoint mflc can compile."""
    args = _parser().parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    corpus = load_corpus(args.stdlib)
    tr, ho = corpus["train"], corpus["heldout"]
    print(f"corpus {args.stdlib or sysconfig.get_paths()['stdlib']}: train {len(corpus['names']['train'])} files "
          f"{len(tr):,} bytes, held-out {len(corpus['names']['heldout'])} files {len(ho):,} bytes", flush=True)

    cfg = make_config(args)
    model = HGRNBit(cfg)
    model.init_weights(gen)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model d={args.hidden} L={args.layers} m={args.intermediate}: {n_params:,} parameters; python "
          f"{sys.version.split()[0]}, torch {torch.__version__}, {args.threads} threads", flush=True)

    opt = _optimizer(model, args)
    step, ema, train_min = _train(model, opt, tr, ho, rng, args)
    hb = heldout_bits(model, ho, 512, args.eval_windows)
    print(f"done: {step + 1} steps in {train_min:.1f} min; train (EMA) {ema:.3f} bits/byte, held-out {hb:.3f} "
          f"bits/byte ({args.eval_windows} windows of 512)", flush=True)
    meta = dict(tool="tools/training/train.py", seed=args.seed, steps=step + 1, train_minutes=f"{train_min:.1f}",
                heldout_bits_per_byte=f"{hb:.4f}", argv=" ".join(sys.argv[1:] if argv is None else argv))
    save(model, args.out, meta)
    print(f"wrote {args.out}", flush=True)
    for p in (b"def ", b"import ", b"class "):
        print(f"sample (greedy) {p!r}: {sample(model, p, 160, 0.0, gen)!r}", flush=True)
    if args.dump_check:
        _dump_check(model, ho, args.dump_check)
    print(f"total wall time {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
