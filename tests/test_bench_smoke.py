"""The benchmarks' new figures run end to end on small inputs and report what the issue asks of them
(the figures themselves are measured by hand: docs/benchmarks.md)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mflc.simulator import int8dot


@pytest.mark.skipif(not int8dot._host_has_vnni(), reason="this CPU has no AVX-512 VNNI")
def test_bench_kernels_reports_the_kernel_beside_the_peak():
    p = subprocess.run([sys.executable, "-m", "mflc.bench.kernels", "--rows", "64", "--cols", "256", "--blocks", "2",
                        "--rounds", "1", "--seq-tokens", "7", "--json"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)                         # stdout is the JSON document only
    for k in ("kernel_gmac_s", "int8_peak_gmac_s", "kernel_1t_gmac_s", "int8_peak_1t_gmac_s", "blas_f32_gmac_s"):
        assert d[k] > 0, k
    assert d["kernel_over_peak"] == pytest.approx(d["kernel_gmac_s"] / d["int8_peak_gmac_s"])


@pytest.mark.slow
def test_generation_under_load_is_measured_and_the_competitors_are_gone():
    from mflc.bench import load
    from mflc.bench.sim import build

    _, _, _, g = build("tiny")
    toks = np.random.default_rng(0).integers(0, 256, 30).tolist()
    res: dict = {}
    with load.competing_work(cpu=1, memory=1) as procs:
        assert all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    load.bench_under_load(g, toks, res, settle=4)
    assert res["generation_under_load_tokens_per_s"] > 0 and res["generation_quiet_tokens_per_s"] > 0
    assert 0 <= res["under_load_one_thread_share"] <= 1 and res["usable_cpus"] >= 1
