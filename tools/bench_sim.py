"""Simulator speed benchmark (run it directly: python -m mflc.bench_sim; not a test).

One run prints, on a random-weight preset (370M by default):
  * engine tokens/s in generation (one token waits for the previous: sequential schedule),
  * the numpy float reference's tokens/s (token by token),
  * the bound set by memory bandwidth: bytes of synaptic arrays the engine reads per token over a
    bandwidth this script measures (large-array copy), and the engine's fraction of it,
and on the tiny preset: engine vs IR reference executor. Peak resident memory is reported at the end.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def measure_bandwidth(gib: float = 1.0, repeats: int = 3) -> float:
    """Bytes/s of a large copy (read + write counted), best of a few: a STREAM-copy style figure."""
    n = int(gib * 2**30) // 8
    a = np.ones(n, dtype=np.int64)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def engine_bytes_per_token(engine) -> int:
    """Bytes of synaptic arrays one token's accumulation reads (index lists, row pointers, values)."""
    total = 0
    for syns in engine.syn_out.values():
        for sy in syns:
            total += sum(a.nbytes for a in sy.arrays)
    return total


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build(preset_name: str, seed: int = 0, calib: int = 32):
    """A preset with random weights, quantized and lowered: (config, weights, quantized model, IR)."""
    from mflc.compiler.model.checkpoint import init_weights
    from mflc.compiler.model.config import preset
    from mflc.compiler.model.lower import lower
    from mflc.compiler.model.quantize import quantize

    cfg = preset(preset_name)
    w = init_weights(cfg, seed)
    rng = np.random.default_rng(seed)
    qm = quantize(cfg, w, [rng.integers(0, cfg.vocab_size, calib).tolist()])
    return cfg, w, qm, lower(qm)


def time_tokens(fn, n: int) -> float:
    """Tokens per second of calling fn(k) for k = 0..n-1."""
    t0 = time.perf_counter()
    for k in range(n):
        fn(k)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    """Benchmark the simulators on tiny and on ``--preset``; print (or ``--json``) and return the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="370M")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res: dict = {"preset": args.preset}
    res["tiny"] = _bench_tiny()
    from mflc.simulator.lava_backend import lava_available

    if lava_available():                     # issue 6: the same tiny network under Lava's CPU simulation
        res["tiny_lava"] = lava_vs_engine_tiny()
    _bench_preset(args.preset, args.tokens, res)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_summary(res, args.preset)
    return res


def _bench_tiny() -> dict:
    """Engine and fast path against the IR reference executor on tiny: the speed-ups that need no big build."""
    from mflc import executors

    _, _, _, g_tiny = build("tiny")
    toks = np.random.default_rng(1).integers(0, 256, 32).tolist()
    executors.create("engine", graph=g_tiny).run(toks[:2])            # JIT warm-up
    t0 = time.perf_counter(); executors.create("ir-reference", graph=g_tiny).run(toks); t_ref = time.perf_counter() - t0
    t0 = time.perf_counter(); executors.create("engine", graph=g_tiny).run(toks); t_eng = time.perf_counter() - t0
    ft = executors.create("fast", graph=g_tiny)
    ft.step(0)
    t0 = time.perf_counter(); [ft.step(t) for t in toks]; t_fast = time.perf_counter() - t0
    return dict(reference_tokens_per_s=len(toks) / t_ref, engine_tokens_per_s=len(toks) / t_eng,
                fast_tokens_per_s=len(toks) / t_fast, engine_over_reference=t_ref / t_eng,
                fast_over_reference=t_ref / t_fast)


def _bench_preset(preset: str, tokens: int, res: dict) -> None:
    """Engine, fast path and float model on a full-size preset, against the memory-bandwidth bound (into res)."""
    from mflc import executors
    from mflc.compiler.model.float_model import FloatModel

    print(f"building {preset} (random weights) ...", flush=True)
    t0 = time.perf_counter()
    cfg, w, qm, g = build(preset)
    res["build_seconds"] = time.perf_counter() - t0
    weight_bytes = sum(v.nbytes for v in w.values())
    fm = FloatModel(cfg, w)
    del w
    eng = executors.create("engine", graph=g, check=False)
    res["synapses"] = int(sum(s.nnz for s in g.synapses.values()))
    rng = np.random.default_rng(2)
    toks = rng.integers(0, cfg.vocab_size, tokens + 1).tolist()
    eng.run(toks[:1])                        # warm-up (JIT, caches)
    res["engine_tokens_per_s"] = time_tokens(lambda k: eng.run([toks[k + 1]]), tokens)
    fast = executors.create("fast", graph=g)
    fast.step(toks[0])
    res["fast_tokens_per_s"] = time_tokens(lambda k: fast.step(toks[(k + 1) % len(toks)]), max(tokens, 20))
    st = fm.init_state()

    def fstep(k):
        """One float-model step on token k, carrying the state."""
        nonlocal st
        _, st = fm.step(toks[k], st)

    fstep(0)
    res["float_tokens_per_s"] = time_tokens(fstep, tokens)
    bw = measure_bandwidth()
    fe = fast.fe                             # the FastEngine's arrays
    bpt = fe.w8.nbytes + fe.ind.nbytes + fe.val.nbytes + fe.ptr.nbytes
    res.update(bandwidth_gb_s=bw / 1e9, engine_bytes_per_token=bpt, bound_tokens_per_s=bw / bpt,
               fraction_of_bound=res["fast_tokens_per_s"] / (bw / bpt),
               engine_over_float=res["engine_tokens_per_s"] / res["float_tokens_per_s"],
               fast_over_float=res["fast_tokens_per_s"] / res["float_tokens_per_s"],
               float_weight_bytes=weight_bytes, peak_rss_gib=peak_rss_gib(),
               peak_rss_over_weights=peak_rss_gib() * 2**30 / weight_bytes)


def _print_summary(res: dict, preset: str) -> None:
    """The human-readable form of ``main``'s figures."""
    bpt, bw_gb = res["engine_bytes_per_token"], res["bandwidth_gb_s"]
    t = res["tiny"]
    print(f"tiny: fast path {t['fast_tokens_per_s']:.0f} tok/s ({t['fast_over_reference']:.1f}x), engine "
          f"{t['engine_tokens_per_s']:.1f} tok/s ({t['engine_over_reference']:.2f}x), IR reference {t['reference_tokens_per_s']:.1f} tok/s")
    if "tiny_lava" in res:
        lv = res["tiny_lava"]
        print(f"tiny under Lava (Loihi2SimCfg fixed_pt, {lv['processes']} processes, sequential): "
              f"{lv['lava_seconds_per_token']:.2f} s/token + {lv['lava_startup_seconds']:.1f} s start-up; engine "
              f"{lv['engine_seconds_per_token'] * 1e3:.1f} ms/token: engine {lv['engine_over_lava']:.0f}x faster "
              f"({lv['engine_over_lava_with_startup']:.0f}x with Lava's start-up), fast path {lv['fast_over_lava']:.0f}x; "
              f"bit-exact: {lv['bit_exact']}")
    print(f"{preset}: {res['synapses']:,} synapses, built in {res['build_seconds']:.1f} s")
    print(f"  fast path (generation)  {res['fast_tokens_per_s']:8.3f} tok/s   (fast/float {res['fast_over_float']:.2f}x)")
    print(f"  engine (generation)     {res['engine_tokens_per_s']:8.3f} tok/s   (per-group dispatch, counters capable)")
    print(f"  float numpy reference   {res['float_tokens_per_s']:8.3f} tok/s   (engine/float {res['engine_over_float']:.2f}x)")
    print(f"  bandwidth bound         {res['bound_tokens_per_s']:8.3f} tok/s   ({bpt / 1e9:.2f} GB/token at {bw_gb:.1f} GB/s)")
    print(f"  fast path / bound       {res['fraction_of_bound']:8.2f}")
    print(f"  peak RSS {res['peak_rss_gib']:.2f} GiB = {res['peak_rss_over_weights']:.1f}x the float32 weights")


def lava_vs_engine_tiny(n_tokens: int = 3, seed: int = 1) -> dict:
    """The tiny preset under Lava's CPU simulation (lava-nc, Loihi2SimCfg fixed_pt) vs the Numba engine.

    Sequential schedule (depth steps per token). Lava is run for 1 and for ``n_tokens`` tokens; the
    difference gives its time per token without the fixed cost of compiling and starting ~160 OS
    processes. The engine is timed warm on the same tokens. Also checks the two agree exactly.
    """
    from mflc import executors

    _, _, _, g = build("tiny")
    toks = np.random.default_rng(seed).integers(0, 256, n_tokens).tolist()
    executors.create("engine", graph=g).run(toks[:1])                  # JIT warm-up
    eng = executors.create("engine", graph=g)
    t0 = time.perf_counter()
    want = eng.run(toks)
    t_eng = time.perf_counter() - t0
    fast = executors.create("fast", graph=g)
    fast.step(toks[0])                       # JIT warm-up
    fast.reset()
    t0 = time.perf_counter()
    for t in toks:
        fast.step(t)
    t_fast = time.perf_counter() - t0
    lava = executors.create("lava", graph=g, schedule="sequential")
    t0 = time.perf_counter()
    lava.run(toks[:1])
    t_one = time.perf_counter() - t0
    lava.reset()
    t0 = time.perf_counter()
    got = lava.run(toks)
    t_all = time.perf_counter() - t0
    per_token = (t_all - t_one) / max(n_tokens - 1, 1)
    eng_per_token = t_eng / n_tokens
    exact = bool(np.array_equal(got.outputs["logits"], want.outputs["logits"])
                 and all(np.array_equal(got.states[k], want.states[k]) for k in want.states))
    return dict(tokens=n_tokens, steps_per_token=g.depth, processes=got.counters["processes"],
                lava_seconds=t_all, lava_seconds_one_token=t_one, lava_seconds_per_token=per_token,
                lava_startup_seconds=max(t_one - per_token, 0.0), lava_seconds_per_step=per_token / g.depth,
                engine_seconds=t_eng, engine_seconds_per_token=eng_per_token,
                engine_over_lava=per_token / eng_per_token, engine_over_lava_with_startup=t_all / t_eng,
                fast_seconds_per_token=t_fast / n_tokens, fast_over_lava=per_token / (t_fast / n_tokens),
                bit_exact=exact)


if __name__ == "__main__":
    main()
