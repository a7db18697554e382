"""Simulator speed benchmark (run it directly: python -m mflc.bench.sim; not a test).

One run prints (or, with --json, emits under these keys), on a random-weight preset (370M by default):
  * program_ms_per_token: every neuron program once (one token), generated code, beside the interpreter's
    program_interpreted_ms_per_token, in the same process (one call per group from Python), and
    program_in_driver_ms_per_token: the same inside the generation driver (no synapses);
  * kernel_gmac_s / int8_peak_gmac_s: the whole-sequence product kernel (simulator/int8dot.py) beside the
    measured peak of its instruction (tools/bench/kernels.py);
  * generation_tokens_per_s: the fast path token by token with ternary blocks read at 2 bits (bit planes),
    int8_generation_tokens_per_s: the same with the int8 kernel (one byte per weight), the baseline;
  * generation_under_load_tokens_per_s: the same beside two busy loops and a memory-streaming process the
    benchmark starts (tools/bench/load.py), with the quiet figure of that run and the engine pinned to
    every usable CPU under the same load (the behaviour before the thread governor);
  * packed_bound_tokens_per_s / int8_bound_tokens_per_s: bytes of synaptic arrays each reads per token
    over a copy bandwidth this script measures (bandwidth_gb_s): no kernel of that layout can beat it;
  * prefill_tokens_per_s: a prompt through the whole-sequence executor (`fast` executor's run);
  * verify_tokens_per_s: both sides of a verification (whole-sequence integer model and simulator);
  * build_bytes, and of `mflc generate` / `mflc verify --tokens 100` on that build: peak memory, seconds;
  * peak_rss_gib of this process; and on the default model eval_tokens_per_s beside
    float_eval_tokens_per_s (tools/bench/eval.py);
and on the tiny preset the engines against the IR reference executor (and Lava, where installed).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import time

import numpy as np

from .timing import best_seconds


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


def _progress(msg: str) -> None:
    """A progress line, on stderr: stdout holds only the results (the JSON document with --json)."""
    print(msg, file=sys.stderr, flush=True)


def _bench_programs(g, res: dict) -> None:
    """Every group's neuron program once on all its neurons (one token's worth), generated code against
    the interpreter in the same process: program_ms_per_token and the interpreter's figure."""
    from mflc.simulator.nbprogram import _RT, encode, run_program_flat
    from mflc.simulator.progcode import compile_program

    rng = np.random.default_rng(5)
    jobs = []
    for grp in g.groups.values():
        ep, cp = encode(grp), compile_program(grp)
        for p in grp.ports:                       # small values: inside every op's domain on a real graph
            ep.env[ep.slot[p]] = cp.env[cp.slot[p]] = rng.integers(0, 64, grp.size)
        jobs.append((ep, ep.flat_code(), cp))

    def interpreted():
        for ep, code, _ in jobs:
            run_program_flat(code, 0, len(code), ep.env.reshape(-1), ep.tables, 0, _RT, 0, ep.env.shape[1])

    def generated():
        for _, _, cp in jobs:
            n = cp.env.shape[1]
            cp.module.run(cp.env.reshape(-1), 0, n, cp.tables, 0, cp.imm, 0, _RT, 0, n)

    t_int, t_gen = best_seconds(interpreted), best_seconds(generated)
    res.update(program_ms_per_token=t_gen * 1e3, program_interpreted_ms_per_token=t_int * 1e3,
               program_speedup=t_int / t_gen, program_shapes=len({cp.module.__name__ for _, _, cp in jobs}),
               program_groups=len(jobs), programs_equal=all(np.array_equal(ep.env, cp.env) for ep, _, cp in jobs))
    res.update(_programs_in_driver(g))


def _programs_in_driver(g) -> dict:
    """The neuron programs as generation runs them: the fast path's token driver with its synapse table
    emptied (every group's program, output copy and port clearing, no synaptic work), generated programs
    and interpreted, one thread each."""
    from mflc.simulator.fastpath import FastEngine

    out = {}
    for programs, key in (("compiled", "program_in_driver_ms_per_token"),
                          ("interpreted", "program_in_driver_interpreted_ms_per_token")):
        fe = FastEngine(g, programs=programs, threads=1)
        fe.g_syn = np.zeros_like(fe.g_syn)
        if fe._run_token() != -1:
            raise SystemExit("a program reported a domain error on zero inputs: a bug")
        out[key] = best_seconds(fe._run_token) * 1e3
    return out


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
    from mflc.compiler.model.config import PRESETS

    ap.add_argument("--preset", default="370M", choices=list(PRESETS))
    ap.add_argument("--tokens", type=int, default=24, help="generation: tokens timed per kernel")
    ap.add_argument("--prompt", type=int, default=256, help="prefill: prompt tokens")
    ap.add_argument("--verify-tokens", type=int, default=100, help="verify: tokens (in-process and `mflc verify`)")
    ap.add_argument("--eval-tokens", type=int, default=2048, help="eval: bytes of the default model's held-out text")
    ap.add_argument("--no-build", action="store_true", help="skip compiling a build (build_bytes, generate, verify)")
    ap.add_argument("--no-lava", action="store_true", help="skip the tiny Lava comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for name in ("tokens", "prompt", "verify_tokens", "eval_tokens"):
        if getattr(args, name) < 2:
            ap.error(f"--{name.replace('_', '-')} must be at least 2, not {getattr(args, name)}")
    # with --json, stdout is the JSON document alone: anything else printed on the way goes to stderr
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        res = _run_all(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_summary(res, args.preset)
    return res


def _run_all(args) -> dict:
    """Every figure of ``main``, in one dict."""
    res: dict = {"preset": args.preset}
    res["tiny"] = _bench_tiny()
    from mflc.simulator.lava_backend import lava_available

    if lava_available() and not args.no_lava:   # the same tiny network under Lava's CPU simulation
        res["tiny_lava"] = lava_vs_engine_tiny()
    from mflc.bench.eval import default_model_figures

    d = default_model_figures(args.eval_tokens)
    res.update(eval_tokens_per_s=d["eval_tokens_per_s"], float_eval_tokens_per_s=d["float_eval_tokens_per_s"],
               eval_over_float=d["eval_vs_float"], eval_equal=d["equal"])
    _bench_preset(args.preset, args.tokens, res, args.prompt, args.verify_tokens, not args.no_build)
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


def _bench_generation(g, toks, res: dict) -> None:
    """Generation tokens/s with the packed (bit-plane) and the int8 kernel, equal logits, and their bounds."""
    from mflc.simulator.fastpath import FastEngine

    n = max(len(toks) - 1, 1)
    fe = FastEngine(g, programs="interpreted")           # the same, neuron programs interpreted: the baseline
    fe.step(toks[0])
    res["generation_interpreted_programs_tokens_per_s"] = time_tokens(lambda k: fe.step(toks[k + 1]), n)
    del fe
    for kernel, key in (("packed", "generation_tokens_per_s"), ("int8", "int8_generation_tokens_per_s")):
        t0 = time.perf_counter()
        fe = FastEngine(g, kernel=kernel)
        res[f"{kernel}_setup_seconds"] = time.perf_counter() - t0
        fe.step(toks[0])                                  # JIT and caches
        logits = []
        res[key] = time_tokens(lambda k: logits.append(fe.step(toks[k + 1])["logits"]), n)
        res[f"{kernel}_bytes_per_token"] = fe.weight_bytes()
        res.setdefault("_logits", []).append(np.stack(logits))
        del fe
    a, b = res.pop("_logits")
    res["packed_equals_int8"] = bool(np.array_equal(a, b))
    bw = measure_bandwidth()
    res.update(bandwidth_gb_s=bw / 1e9, packed_bound_tokens_per_s=bw / res["packed_bytes_per_token"],
               int8_bound_tokens_per_s=bw / res["int8_bytes_per_token"],
               packed_over_int8=res["generation_tokens_per_s"] / res["int8_generation_tokens_per_s"],
               generation_over_interpreted_programs=res["generation_tokens_per_s"]
               / res["generation_interpreted_programs_tokens_per_s"],
               packed_fraction_of_bound=res["generation_tokens_per_s"] / (bw / res["packed_bytes_per_token"]))


def _bench_sequence(qm, g, toks, verify_tokens: int, res: dict) -> None:
    """Prefill (the `fast` executor's whole-sequence run) against generation, and both sides of verify."""
    from mflc import executors
    from mflc.compiler.model.int_model import IntModel
    from mflc.simulator.verify import verify

    fast = executors.create("fast", graph=g, prefill=True)   # the whole-sequence path, whatever the default
    fast.run(toks[:4])                                    # compile outside the timing
    fast.reset()
    t0 = time.perf_counter()
    fast.run(toks)
    res["prefill_tokens"] = len(toks)
    res["prefill_tokens_per_s"] = len(toks) / (time.perf_counter() - t0)
    res["prefill_over_generation"] = res["prefill_tokens_per_s"] / res["generation_tokens_per_s"]
    vt = toks[:verify_tokens]
    t0 = time.perf_counter()
    v = verify(IntModel(qm), g, vt)
    res.update(verify_tokens=len(vt), verify_tokens_per_s=len(vt) / (time.perf_counter() - t0), verify_ok=v.ok)


# Runs `mflc ARGS` and reports the process's own peak resident memory (VmHWM) on stderr at exit. Not
# getrusage(RUSAGE_CHILDREN): on Linux a child's maxrss includes the memory of the parent it was forked from.
_CHILD_HWM = """
import atexit, sys
def _hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            sys.stderr.write('MFLC_VMHWM_KB ' + line.split()[1] + chr(10))
atexit.register(_hwm)
from mflc.cli import main
sys.argv = ['mflc'] + sys.argv[1:]
main()
"""


def _bench_build(qm, cli_tokens: int, res: dict) -> None:
    """Compile the quantized model to a build in a temporary directory: its bytes on disk, then the peak
    memory and time of `mflc generate` and `mflc verify --tokens N` on it, each in its own process."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from mflc.api import compile as compile_build

    with tempfile.TemporaryDirectory(prefix="mflc-bench-") as tmp:
        qdir, bdir = Path(tmp) / "quant", Path(tmp) / "build"
        qm.save(qdir)
        t0 = time.perf_counter()
        compile_build(qdir, bdir)
        res["compile_seconds"] = time.perf_counter() - t0
        res["build_bytes"] = sum(f.stat().st_size for f in bdir.rglob("*") if f.is_file())
        exe = [sys.executable, "-c", _CHILD_HWM]
        for key, args in (("generate", ["generate", str(bdir), "--prompt", "Hello", "--max-new-tokens", "48"]),
                          ("verify_cli", ["verify", str(bdir), "--tokens", str(cli_tokens)])):
            t0 = time.perf_counter()
            p = subprocess.run(exe + args + ["--json"], capture_output=True, text=True)
            res[f"{key}_seconds"] = time.perf_counter() - t0
            hwm = [ln.split()[1] for ln in p.stderr.splitlines() if ln.startswith("MFLC_VMHWM_KB ")]
            res[f"{key}_peak_rss_gib"] = int(hwm[-1]) / 2**20 if hwm else None
            res[f"{key}_ok"] = p.returncode == 0
            if p.returncode != 0:
                res[f"{key}_error"] = (p.stderr or p.stdout)[-500:]
            elif key == "generate":          # the tokens/s the command itself reports, against this run's
                res["cli_generation_tokens_per_s"] = json.loads(p.stdout)["generation_tokens_per_second"]
                res["cli_over_generation"] = res["cli_generation_tokens_per_s"] / res["generation_tokens_per_s"]
        res["verify_cli_tokens"] = cli_tokens


def _bench_preset(preset: str, tokens: int, res: dict, prompt: int = 256, verify_tokens: int = 100,
                  build_dir: bool = True) -> None:
    """Every full-size figure of the issue on ``preset`` (into res): generation (packed and int8) against
    the bandwidth bounds, prefill, verify, the float model, the build on disk and what its commands cost."""
    from mflc.compiler.model.float_model import FloatModel

    _progress(f"building {preset} (random weights) ...")
    t0 = time.perf_counter()
    cfg, w, qm, g = build(preset)
    res["build_seconds"] = time.perf_counter() - t0
    weight_bytes = sum(v.nbytes for v in w.values())
    fm = FloatModel(cfg, w)                   # float32 matrices: the numpy float reference at its own speed
    del w
    res["synapses"] = int(sum(s.nnz for s in g.synapses.values()))
    toks = np.random.default_rng(2).integers(0, cfg.vocab_size, max(tokens + 1, prompt)).tolist()
    _progress("neuron programs: generated code against the interpreter ...")
    _bench_programs(g, res)
    _progress("generation ...")
    _bench_generation(g, toks[:tokens + 1], res)
    _progress("whole-sequence product kernel against this machine's int8 peak ...")
    from mflc.bench.kernels import sequence_products
    from mflc.simulator import int8dot

    if int8dot.available():
        k = sequence_products(2816, 1024, 192, 3)
        res.update({n: k[n] for n in ("kernel_gmac_s", "int8_peak_gmac_s", "kernel_over_peak", "kernel_1t_gmac_s",
                                      "int8_peak_1t_gmac_s", "blas_f32_gmac_s", "kernel_over_blas")})
    else:
        res.update(kernel_gmac_s=None, int8_peak_gmac_s=None)
    _progress("generation beside two busy loops and a memory-streaming process ...")
    from mflc.bench.load import bench_under_load

    bench_under_load(g, toks[:max(3 * tokens, 80) + 1], res)
    _progress("prefill and verify ...")
    _bench_sequence(qm, g, toks[:prompt], verify_tokens, res)
    st = fm.init_state()

    def fstep(k):
        """One float-model step on token k, carrying the state."""
        nonlocal st
        _, st = fm.step(toks[k], st)

    fstep(0)
    res["float_tokens_per_s"] = time_tokens(fstep, min(tokens, 8))
    del fm
    if build_dir:
        _progress("compiling a build, then generate and verify on it ...")
        _bench_build(qm, verify_tokens, res)
    res.update(float_weight_bytes=weight_bytes, peak_rss_gib=peak_rss_gib(),
               peak_rss_over_weights=peak_rss_gib() * 2**30 / weight_bytes)


def _print_summary(res: dict, preset: str) -> None:
    """The human-readable form of ``main``'s figures."""
    t = res["tiny"]
    print(f"tiny: fast path {t['fast_tokens_per_s']:.0f} tok/s ({t['fast_over_reference']:.1f}x), engine "
          f"{t['engine_tokens_per_s']:.1f} tok/s ({t['engine_over_reference']:.2f}x), IR reference {t['reference_tokens_per_s']:.1f} tok/s")
    if "tiny_lava" in res:
        lv = res["tiny_lava"]
        print(f"tiny under Lava (Loihi2SimCfg fixed_pt, {lv['processes']} processes, sequential): "
              f"{lv['lava_seconds_per_token']:.2f} s/token + {lv['lava_startup_seconds']:.1f} s start-up; engine "
              f"{lv['engine_seconds_per_token'] * 1e3:.1f} ms/token: engine {lv['engine_over_lava']:.0f}x faster; "
              f"bit-exact: {lv['bit_exact']}")
    print(f"default model: eval {res['eval_tokens_per_s']:,.0f} tok/s vs numpy float {res['float_eval_tokens_per_s']:,.0f} "
          f"tok/s ({res['eval_over_float']:.2f}x; integer paths equal: {res['eval_equal']})")
    gb = lambda b: f"{b / 1e9:.3f} GB"
    print(f"{preset}: {res['synapses']:,} synapses, built in {res['build_seconds']:.1f} s; copy bandwidth "
          f"{res['bandwidth_gb_s']:.1f} GB/s")
    rows = [
        ("generation, 2-bit bit planes", res["generation_tokens_per_s"],
         f"{res['packed_over_int8']:.2f}x int8; {res['packed_fraction_of_bound']:.2f} of its bound; equal to int8: {res['packed_equals_int8']}"),
        ("generation, int8 kernel", res["int8_generation_tokens_per_s"], "baseline"),
        ("generation beside competing work", res["generation_under_load_tokens_per_s"],
         f"{res['under_load_over_quiet']:.2f} of quiet ({res['generation_quiet_tokens_per_s']:.1f}) on "
         f"{res['under_load_cpus_used']:.2f} of {res['quiet_cpus_used']:.2f} CPUs; "
         f"{res['under_load_over_pinned']:.1f}x pinned to {res['usable_cpus']} threads"),
        ("generation, programs interpreted", res["generation_interpreted_programs_tokens_per_s"],
         f"generated programs {res['generation_over_interpreted_programs']:.2f}x this"),
        ("bound, 2-bit", res["packed_bound_tokens_per_s"], gb(res["packed_bytes_per_token"]) + "/token"),
        ("bound, int8", res["int8_bound_tokens_per_s"], gb(res["int8_bytes_per_token"]) + "/token"),
        (f"prefill ({res['prefill_tokens']} tokens)", res["prefill_tokens_per_s"], f"{res['prefill_over_generation']:.1f}x generation"),
        (f"verify, both sides ({res['verify_tokens']} tokens)", res["verify_tokens_per_s"], f"bit-exact: {res['verify_ok']}"),
        ("numpy float model, token by token", res["float_tokens_per_s"], ""),
    ]
    for name, v, note in rows:
        print(f"  {name:40s} {v:10.2f} tok/s   {note}")
    if res.get("kernel_gmac_s") is not None:
        print(f"  whole-sequence products (VNNI, 192 x 2816 x 1024): {res['kernel_gmac_s']:.1f} G multiply-adds/s = "
              f"{res['kernel_over_peak']:.2f} of the measured int8 peak {res['int8_peak_gmac_s']:.1f} "
              f"(1 thread {res['kernel_1t_gmac_s']:.1f} of {res['int8_peak_1t_gmac_s']:.1f}); float32 BLAS "
              f"{res['blas_f32_gmac_s']:.1f}")
    print(f"  neuron programs in the token driver: {res['program_in_driver_ms_per_token']:.3f} ms generated, "
          f"{res['program_in_driver_interpreted_ms_per_token']:.3f} ms interpreted")
    print(f"  neuron programs per token: {res['program_ms_per_token']:.3f} ms generated, "
          f"{res['program_interpreted_ms_per_token']:.3f} ms interpreted ({res['program_speedup']:.1f}x; "
          f"{res['program_groups']} groups, {res['program_shapes']} shapes; equal: {res['programs_equal']})")
    if "build_bytes" in res:
        fmt = lambda k: f"{res[k]:.2f} GiB" if res.get(k) is not None else "n/a"
        print(f"  build on disk {res['build_bytes'] / 1e6:,.1f} MB (compile {res['compile_seconds']:.1f} s); "
              f"mflc generate {res['generate_seconds']:.1f} s, peak {fmt('generate_peak_rss_gib')} (ok: {res['generate_ok']}; "
              f"reports {res.get('cli_generation_tokens_per_s', float('nan')):.1f} tok/s = "
              f"{res.get('cli_over_generation', float('nan')):.2f} of the benchmark's); "
              f"mflc verify --tokens {res['verify_cli_tokens']} {res['verify_cli_seconds']:.1f} s, peak "
              f"{fmt('verify_cli_peak_rss_gib')} (ok: {res['verify_cli_ok']})")
    print(f"  peak RSS of this benchmark {res['peak_rss_gib']:.2f} GiB = {res['peak_rss_over_weights']:.1f}x the float32 weights")


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
