"""The fast estimate gives the full path's figures exactly: the prefill schedule's
window maxima per kind of window (costmodel.PipelineWindows) against every step's window
(pipeline_time_direct), and the traffic counted as runs of neurons (assumed_profile) against every
(source neuron, destination core) pair listed (assumed_profile_direct), on tiny and odd shapes, real
and skeleton graphs, one chip and many; equality is ==, never approximate."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mflc.compiler.chip import costmodel as cm
from mflc.compiler.chip.hardware import resolve_profile
from mflc.compiler.chip.place import layout_graph
from mflc.compiler.model.config import ModelConfig, preset
from mflc.compiler.model.lower import lower
from mflc.compiler.model.skeleton import skeleton_graph
from mflc.ir.coremap import CoreMap

# Small cores and chips, so that tiny models spread over many cores and several chips.
SMALL_HW = ["neurons_per_core=24", "cores_per_chip=5", "synaptic_memory_bits=20000"]


def odd_config(d=24, m=40, V=37, L=3) -> ModelConfig:
    """A configuration of no preset's proportions (odd vocabulary, m not a multiple of d)."""
    return ModelConfig.from_dict(dict(vocab_size=V, hidden_size=d, num_hidden_layers=L, intermediate_size=m))


def _matrices(seed, rows, depth, chips, zeros):
    rng = np.random.default_rng(seed)
    work = rng.random((rows, depth)) * (rng.random((rows, depth)) > zeros)
    link = rng.random((chips, depth)) * (rng.random((chips, depth)) > 0.5) * 1e-3
    return work, link


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(0, 7), depth=st.integers(1, 15), chips=st.integers(1, 3),
       zeros=st.floats(0, 1), prompt=st.integers(1, 40), barrier=st.sampled_from([0.0, 1e-7, 3.3e-6]))
def test_pipeline_time_equals_every_window(seed, rows, depth, chips, zeros, prompt, barrier):
    """Prompts shorter than, equal to and longer than the pipeline: the same float, to the bit."""
    work, link = _matrices(seed, rows, depth, chips, zeros)
    assert cm.pipeline_time(work, link, prompt, barrier) == cm.pipeline_time_direct(work, link, prompt, barrier)


def test_pipeline_windows_reused_over_prompt_lengths():
    """One PipelineWindows answers every prompt length as pipeline_time_direct does for each."""
    work, link = _matrices(3, 9, 30, 2, 0.6)
    win = cm.PipelineWindows(work, link)
    for n in [1, 2, 5, 29, 30, 31, 64, 1000, 65536]:
        assert win.time(n, 2e-7) == cm.pipeline_time_direct(work, link, n, 2e-7)


def _layouts():
    """(name, graph, core map) of real and skeleton graphs of tiny and odd shapes, on default and small cores."""
    from mflc.compiler.model.quantize import quantize

    from util import random_weights

    out = []
    for cname, cfg in (("tiny", preset("tiny")), ("odd", odd_config()), ("odd1", odd_config(d=17, m=23, V=5, L=1))):
        rng = np.random.default_rng(1)
        qm = quantize(cfg, random_weights(cfg, 1), [rng.integers(0, cfg.vocab_size, 32)])
        for gname, g in (("real", lower(qm)), ("skeleton", skeleton_graph(cfg, 0.5))):
            for hname, hw in (("default", []), ("small", SMALL_HW)):
                g2, lay = layout_graph(g, resolve_profile(None, hw), None)
                out.append((f"{cname}-{gname}-{hname}", g2, CoreMap.from_layout(lay)))
    return out


LAYOUTS = _layouts()


@pytest.mark.parametrize("name,g,cmap", LAYOUTS, ids=[x[0] for x in LAYOUTS])
@pytest.mark.parametrize("rates", [None, 1.0, 0.3, {"norm.apply": 0.25}])
def test_assumed_profile_equals_pair_listing(name, g, cmap, rates):
    """Counting runs of neurons gives the same profile, float for float, as listing every pair."""
    assert cm.assumed_profile(g, cmap, rates) == cm.assumed_profile_direct(g, cmap, rates)


def test_small_cores_reach_several_chips():
    """The small profile really spreads the tiny model over several chips (the classes 2, 3, 4 are all exercised)."""
    name, g, cmap = next(x for x in LAYOUTS if x[0] == "tiny-real-small")
    assert int(np.max(cmap.chip_of_core)) >= 2
    prof = cm.assumed_profile(g, cmap)
    assert all(sum(r[f] for r in prof) > 0 for f in ("msgs_on_core", "msgs_on_chip", "msgs_between_chips"))


def test_assumed_profile_many_source_slices():
    """A source group cut into more slices than one chunk of the run counter holds, across chips."""
    from mflc.ir.graph import Graph, NeuronGroup, SynapseGroup

    g = Graph()
    g.add_group(NeuronGroup("A", 3000, [], [], "y", 8, 0, meta={"role": "ra"}))
    g.add_group(NeuronGroup("B", 600, ["x"], [], "y", 8, 1, meta={"role": "rb"}))
    rng = np.random.default_rng(0)
    g.add_synapse(SynapseGroup.from_dense("AB", "A", "B", "x", (rng.random((600, 3000)) < 0.002).astype(np.int8)))
    a = [(k, k + 1, k % 1500) for k in range(3000)]
    b = [(k * 2, k * 2 + 2, 1500 + k) for k in range(300)]
    cmap = CoreMap({"A": a, "B": b}, np.arange(1800) // 100)
    assert cm.assumed_profile(g, cmap, 0.5) == cm.assumed_profile_direct(g, cmap, 0.5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(0, 40), cores=st.integers(1, 6), depth=st.integers(1, 7))
def test_work_matrices_equal_row_by_row(seed, rows, cores, depth):
    """Repeated (core, stage) rows, zero and non-zero chip traffic: the same matrices to the bit."""
    rng = np.random.default_rng(seed)
    prof = [dict(core=int(rng.integers(cores)), stage=int(rng.integers(depth)),
                 **{f: float(rng.random() * 1e4 * (rng.random() > 0.3)) for f in cm.FIELDS}) for _ in range(rows)]
    chip = rng.integers(0, 3, cores)
    p = cm.CostParams()
    for a, b in zip(cm._matrices(prof, cores, depth, chip, p), cm._matrices_direct(prof, cores, depth, chip, p)):
        assert np.array_equal(a, b)


def test_work_matrices_refuse_a_profile_outside_the_layout():
    from mflc.ir.errors import ConfigError

    prof = [dict(core=0, stage=0, **dict.fromkeys(cm.FIELDS, 1.0)), dict(core=5, stage=1, **dict.fromkeys(cm.FIELDS, 1.0))]
    with pytest.raises(ConfigError, match="names core 5 stage 1, outside 2 cores x 3 stages"):
        cm._matrices(prof, 2, 3, np.zeros(2, np.int64), cm.CostParams())


def _full_path(monkeypatch):
    """Make the cost model take the direct definitions (the path before the fast estimate)."""
    monkeypatch.setattr(cm, "assumed_profile", cm.assumed_profile_direct)
    monkeypatch.setattr(cm, "_matrices", cm._matrices_direct)
    monkeypatch.setattr(cm.PipelineWindows, "time", lambda self, n, tb: cm.pipeline_time_direct(*self._raw, n, tb))
    real_init = cm.PipelineWindows.__init__

    def init(self, work, link):
        real_init(self, work, link)
        self._raw = (work, link)
    monkeypatch.setattr(cm.PipelineWindows, "__init__", init)


@pytest.mark.parametrize("args", [["--preset", "tiny"], ["--preset", "tiny", "--hw", SMALL_HW[0], "--hw", SMALL_HW[1]],
                                  ["--preset", "tiny", "--prompt-len", "3", "--gen-len", "0"]])
def test_estimate_cli_equals_full_path(args, monkeypatch):
    """Every figure of `mflc estimate --json` (cores, chips, steps, traffic, cost) equals the full path's."""
    from typer.testing import CliRunner

    from mflc.cli import app

    def run():
        r = CliRunner().invoke(app, ["estimate", *args, "--json"])
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        for k in ("seconds", "seconds_layout", "peak_rss_mb"):
            rep.pop(k)
        return rep

    fast = run()
    _full_path(monkeypatch)
    assert run() == fast
