"""Whole-sequence speed benchmark (run it directly: python -m mflc.bench.eval; not a test).

`mflc eval`, `mflc verify` and prompt ingestion have the whole token sequence in hand. On the embedded
default model and the same held-out bytes, in one run (the machine is shared: the ratios are the figures),
this prints tokens/s of

* eval as `mflc eval` runs it (the `fast` executor through ``executors.run_in_chunks``: whole-sequence
  chunks) against the numpy float model (whole sequence at once: its projections are matrix products);
* prefill (one whole-sequence run of the `fast` executor) against generation (the fast path token by token);
* the integer model's whole-sequence forward against its ``step``;

and checks that every integer path gave the same logits. Each compared pair runs ``REPEAT`` times,
alternating, and the medians are reported (the integer model's two forms once each: they take long). ``--build DIR`` adds the same prefill,
generation and integer-model figures on a compiled build (e.g. the 370M).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

REPEAT = 5      # each timed pair runs this many times, alternating; the figures are the medians


def _timed(fn):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _integer_paths(qm, graph, toks, gen_tokens: int, step_tokens: int, core_map=None) -> dict:
    """Prefill vs generation on the fast executor and IntModel's sequence forward vs step, equal logits."""
    from mflc import executors
    from mflc.compiler.model.int_model import IntModel

    pre = executors.create("fast", graph=graph, core_map=core_map, prefill=True)
    gen = executors.create("fast", graph=graph, core_map=core_map, prefill=False)
    _, t_setup = _timed(lambda: pre.run(toks[:3]))    # builds the sequence executor's blocks (once per executor)
    gen.run(toks[:3])                                 # compile the Numba kernels outside the timing
    pre.reset(), gen.reset()
    t_pre, t_gen = [], []
    for _ in range(REPEAT):        # alternated, medians: the machine is shared, its load moves between runs
        pre.reset(), gen.reset()
        prefill, t = _timed(lambda: pre.run(toks).outputs["logits"])
        t_pre.append(t)
        stepped, t = _timed(lambda: gen.run(toks[:gen_tokens]).outputs["logits"])
        t_gen.append(t)
    t_pre, t_gen = float(np.median(t_pre)), float(np.median(t_gen))
    im = IntModel(qm)
    seq, t_seq = _timed(lambda: im.forward_sequence(toks)[0])
    step, t_step = _timed(lambda: im.forward(toks[:step_tokens])[0])
    dense = sum(b.s.shape[0] * b.s.shape[1] for bl in pre.seq.out_syn.values() for b in bl if b.dense)
    flops = _blas_flops(len(toks))
    equal = (np.array_equal(prefill, seq) and np.array_equal(stepped, seq[:gen_tokens])
             and np.array_equal(step, seq[:step_tokens]))
    return dict(equal=bool(equal), prompt_tokens=len(toks), prefill_setup_s=t_setup,
                prefill_tokens_per_s=len(toks) / t_pre, generation_tokens_per_s=gen_tokens / t_gen,
                prefill_vs_generation=(len(toks) / t_pre) / (gen_tokens / t_gen),
                int_sequence_tokens_per_s=len(toks) / t_seq, int_step_tokens_per_s=step_tokens / t_step,
                int_sequence_vs_step=(len(toks) / t_seq) / (step_tokens / t_step),
                dense_weights=dense, blas_gflops=flops / 1e9, prefill_bound_tokens_per_s=flops / (2 * dense))


def _blas_flops(rows: int) -> float:
    """Measured float32 matrix-product rate (flop/s) at ``rows`` tokens: what bounds a whole-sequence run,
    which multiplies every dense block by [rows, n] messages (2 flops per weight and token)."""
    rng = np.random.default_rng(0)
    a, w = rng.random((rows, 2048), np.float32), rng.random((4096, 2048), np.float32)
    a @ w.T
    _, t = _timed(lambda: [a @ w.T for _ in range(5)])
    return 5 * 2 * rows * 2048 * 4096 / t


def default_model_figures(n_tokens: int) -> dict:
    """Eval (as `mflc eval` runs it) vs the float model, and the integer paths, on the default model."""
    from mflc import executors
    from mflc.api import resolve_model
    from mflc.compiler.model.float_model import FloatModel
    from mflc.compiler.model.loading import load_float, resolve_calibration
    from mflc.compiler.model.lower import lower
    from mflc.compiler.model.quantize import quantize

    model = resolve_model(None)
    cfg, w = load_float(model)
    seqs, _ = resolve_calibration(cfg, model)
    qm = quantize(cfg, w, seqs)
    toks = list((model.parent / "heldout_sample.txt").read_bytes()[:n_tokens])
    graph = lower(qm)
    ex = executors.create("fast", qm=qm)              # what cli_accuracy.fixed_point_results makes
    executors.run_in_chunks(ex, toks[:70])            # compile outside the timing
    ex.reset()
    fm = FloatModel(cfg, w)
    fm.forward(toks[:8])
    stepping = executors.create("fast", qm=qm, prefill=False)     # eval as it ran before: token by token
    executors.run_in_chunks(stepping, toks[:8])
    t_eval, t_step, t_float = [], [], []
    for _ in range(REPEAT):        # alternated, medians
        ex.reset(), stepping.reset()
        ev, t = _timed(lambda: executors.run_in_chunks(ex, toks).outputs["logits"])
        t_eval.append(t)
        t_step.append(_timed(lambda: executors.run_in_chunks(stepping, toks))[1])
        t_float.append(_timed(lambda: fm.forward(toks))[1])
    t_eval, t_step, t_float = (float(np.median(x)) for x in (t_eval, t_step, t_float))
    d = dict(tokens=len(toks), eval_tokens_per_s=len(toks) / t_eval, float_eval_tokens_per_s=len(toks) / t_float,
             eval_vs_float=t_float / t_eval, eval_stepping_tokens_per_s=len(toks) / t_step,
             eval_vs_stepping=t_step / t_eval)
    d.update(_integer_paths(qm, graph, toks, gen_tokens=len(toks), step_tokens=min(len(toks), 128)))
    d["equal"] = d["equal"] and bool(np.array_equal(ev, executors.create("int-model", qm=qm).run(toks).outputs["logits"]))
    return d


def build_figures(path, prompt: int, gen_tokens: int, step_tokens: int) -> dict:
    """Prefill vs generation and IntModel sequence vs step on a compiled build's placed IR."""
    from mflc.build import Build

    b = Build.load(path)
    qm = b.quantized
    toks = np.random.default_rng(0).integers(0, qm.cfg.vocab_size, prompt).tolist()
    return dict(build=str(path), **_integer_paths(qm, b.placed, toks, gen_tokens, step_tokens, b.core_map()))


def verify_figures(path, tokens: int, stepwise_tokens: int) -> dict:
    """The bit-exact simulation of `mflc verify` on a build (both sides, without the static checks):
    whole-sequence (the default) on ``tokens`` tokens against token by token on ``stepwise_tokens``."""
    from mflc.build import Build
    from mflc.compiler.model.int_model import IntModel
    from mflc.simulator.verify import verify

    b = Build.load(path)
    qm, graph, cm = b.quantized, b.placed, b.core_map()
    toks = np.random.default_rng(0).integers(0, qm.cfg.vocab_size, tokens).tolist()
    im = IntModel(qm)
    whole, t_whole = _timed(lambda: verify(im, graph, toks, cm))
    stepped, t_step = _timed(lambda: verify(im, graph, toks[:stepwise_tokens], cm, stepwise=True))
    return dict(ok=bool(whole.ok and stepped.ok), tokens=tokens, verify_tokens_per_s=tokens / t_whole,
                verify_seconds=t_whole, stepwise_tokens=stepwise_tokens,
                stepwise_verify_tokens_per_s=stepwise_tokens / t_step,
                verify_vs_stepwise=(tokens / t_whole) / (stepwise_tokens / t_step))


def _print(d: dict, title: str) -> None:
    print(title + f"; integer paths agree: {d['equal']}")
    if "eval_tokens_per_s" in d:
        print(f"  eval (fast executor, run_in_chunks)     {d['eval_tokens_per_s']:10,.0f} tokens/s   "
              f"vs float {d['eval_vs_float']:.2f}x")
        print(f"  eval token by token (fast, prefill off) {d['eval_stepping_tokens_per_s']:10,.0f} tokens/s   "
              f"whole-sequence eval vs it {d['eval_vs_stepping']:.2f}x")
        print(f"  numpy float model (whole sequence)      {d['float_eval_tokens_per_s']:10,.0f} tokens/s")
    print(f"  prefill ({d['prompt_tokens']} tokens, whole sequence)   {d['prefill_tokens_per_s']:10,.1f} tokens/s   "
          f"vs generation {d['prefill_vs_generation']:.1f}x")
    print(f"  prefill set-up (first run: blocks)      {d['prefill_setup_s']:10,.2f} s")
    print(f"  prefill bound ({d['blas_gflops']:.0f} GFLOP/s float32 BLAS, {d['dense_weights']:,} weights)"
          f" {d['prefill_bound_tokens_per_s']:8,.1f} tokens/s")
    print(f"  generation (fast path, token by token)  {d['generation_tokens_per_s']:10,.1f} tokens/s")
    print(f"  IntModel whole sequence                 {d['int_sequence_tokens_per_s']:10,.1f} tokens/s   "
          f"vs step {d['int_sequence_vs_step']:.1f}x")
    print(f"  IntModel.step                           {d['int_step_tokens_per_s']:10,.1f} tokens/s")


def main(argv: list[str] | None = None) -> None:
    """Time eval, prefill, generation and the integer model's two forms; check they all agree."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=512, help="bytes of the held-out sample to run")
    ap.add_argument("--build", help="also a compiled build (e.g. the 370M): prefill, generation, IntModel")
    ap.add_argument("--prompt", type=int, default=100, help="--build: prompt tokens for prefill and IntModel")
    ap.add_argument("--gen-tokens", type=int, default=8, help="--build: tokens generated one by one")
    ap.add_argument("--step-tokens", type=int, default=4, help="--build: tokens through IntModel.step")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--verify", type=int, default=0, metavar="N",
                    help="--build: also time verify's simulation on N tokens (and token by token on --step-tokens)")
    args = ap.parse_args(argv)
    out = dict(default=default_model_figures(args.tokens))
    if args.build:
        out["build"] = build_figures(args.build, args.prompt, args.gen_tokens, args.step_tokens)
        if args.verify:
            out["verify"] = verify_figures(args.build, args.verify, args.step_tokens)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out["default"], f"default model, {out['default']['tokens']} bytes of held-out text")
        if "build" in out:
            _print(out["build"], f"build {args.build}")
        if "verify" in out:
            v = out["verify"]
            print(f"  verify simulation, whole sequence ({v['tokens']} tokens) {v['verify_tokens_per_s']:8,.1f} tokens/s "
                  f"({v['verify_seconds']:.1f} s)   vs token by token {v['verify_vs_stepwise']:.1f}x")
            print(f"  verify simulation, token by token ({v['stepwise_tokens']} tokens)  "
                  f"{v['stepwise_verify_tokens_per_s']:8,.2f} tokens/s")
    if not all(d.get("equal", d.get("ok")) for d in out.values()):
        raise SystemExit("the integer paths disagree: a bug; run mflc verify")


if __name__ == "__main__":
    main()
