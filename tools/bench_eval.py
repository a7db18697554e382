"""Evaluation speed benchmark (run it directly: python -m mflc.bench_eval; not a test).

`mflc eval` and `mflc ablate` need the fixed-point logits of every byte of the held-out text, many times
over. This prints, on the embedded default model and the same bytes: tokens/s of the numpy integer
reference model (IntModel), of the Numba fast path on the compiled IR (the `--engine fast` default), and
of the numpy float model (whole sequence at once: its projections are matrix products over all positions),
with the ratios between them; and checks that the two integer engines agreed.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    """Time the integer and float models on held-out bytes and check the two integer engines agree."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=512, help="bytes of the held-out sample to run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from mflc.cli_app import resolve_model
    from mflc.compiler.model.float_model import FloatModel
    from mflc import executors
    from mflc.compiler.model.loading import load_float, resolve_calibration
    from mflc.compiler.model.lower import lower
    from mflc.compiler.model.quantize import quantize

    model = resolve_model(None)
    cfg, w = load_float(model)
    seqs, _ = resolve_calibration(cfg, model)
    qm = quantize(cfg, w, seqs)
    toks = list((model.parent / "heldout_sample.txt").read_bytes()[: args.tokens])
    graph = lower(qm)
    fx = executors.create("fast", graph=graph)
    fx.run(toks[:4])                                  # compile the Numba kernels outside the timing
    fx.reset()

    t0 = time.perf_counter()
    fast = fx.run(toks).outputs["logits"]
    t_fast = time.perf_counter() - t0
    im = executors.create("int-model", qm=qm)
    t0 = time.perf_counter()
    ref = im.run(toks).outputs["logits"]
    t_ref = time.perf_counter() - t0
    fm = FloatModel(cfg, w)
    t0 = time.perf_counter()
    fm.forward(toks)
    t_float = time.perf_counter() - t0

    n = len(toks)
    d = dict(tokens=n, equal=bool(np.array_equal(fast, ref)),
             fast_tokens_per_s=n / t_fast, reference_tokens_per_s=n / t_ref, float_tokens_per_s=n / t_float,
             fast_vs_reference=t_ref / t_fast, fast_vs_float=t_float / t_fast)
    if args.json:
        print(json.dumps(d, indent=2))
        return
    print(f"default model, {n} bytes of held-out text; integer engines agree: {d['equal']}")
    print(f"  Numba fast path (eval --engine fast)   {d['fast_tokens_per_s']:10,.0f} tokens/s")
    print(f"  IntModel (eval --engine reference)     {d['reference_tokens_per_s']:10,.0f} tokens/s   "
          f"fast path / reference {d['fast_vs_reference']:.1f}x")
    print(f"  numpy float model                      {d['float_tokens_per_s']:10,.0f} tokens/s   "
          f"fast path / float {d['fast_vs_float']:.2f}x")
    if not d["equal"]:
        raise SystemExit("the fast path and IntModel disagree: a bug; run mflc verify")


if __name__ == "__main__":
    main()
