"""Issue 14, item 1: ``HardwareProfile`` (mflc.ir.hardware) is the only place a hardware figure is written.

For each figure: an override (a profile, or ``--hw FIGURE=VALUE`` through the CLI) reaches every consumer
(the IR validator refuses, the partitioner and placer use more cores, the cost model changes, export-lava
refuses), or the test says why the figure is fixed. Then a scan of the source tree: each figure's literal
default is written in ir/hardware.py only, and no module defines its own copy of a hardware constant.
"""
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

import mflc
from mflc.ir import fixedpoint as fp
from mflc.ir import hardware as H
from mflc.ir.errors import IRValidationError
from mflc.ir.validate import problems

from util import cli_run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = H.DEFAULT
IDEAL = H.PROFILES["loihi2-ideal"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hwfig")
    cli_run("init", "--preset", "tiny", "--out", d / "m", "--seed", "1")
    return d


@pytest.fixture(scope="module")
def tiny_graph(tiny_qm):
    from mflc.compiler.model.lower import lower

    return lower(tiny_qm)


def estimate(*hw: str) -> dict:
    args = ["estimate", "--preset", "tiny", "--json", "--prompt-len", "10", "--gen-len", "5", "--no-range",
            "--profile", "loihi2-ideal", "--hw", "neuron_groups_per_core=1000"]   # so that no group limit binds first
    for h in hw:
        args += ["--hw", h]
    return json.loads(cli_run(*args).stdout)


@pytest.fixture(scope="module")
def est_default():
    return estimate()


# ---- the default profile is what every reader used to hard-code ------------------------------------------------
def test_defaults_unchanged_and_read_by_every_consumer():
    assert (DEFAULT.max_msg_bits, DEFAULT.state_word_bits, DEFAULT.weight_bits, DEFAULT.accumulator_bits) == (24, 24, 8, 32)
    assert (DEFAULT.max_synapse_delay, DEFAULT.neurons_per_core, DEFAULT.cores_per_chip) == (62, 4096, 120)
    assert (IDEAL.neurons_per_core, IDEAL.cores_per_chip, IDEAL.synaptic_memory_bits) == (8192, 120, 128 * 1024 * 8)
    assert DEFAULT.synaptic_memory_bits == 12000 * DEFAULT.synmem_unit_bits and DEFAULT.estimate_routes_per_core == 4096
    assert H.DEFAULT_PROFILE == "loihi2-lava" and DEFAULT.synmem_model == 1 and IDEAL.synmem_model == 0
    assert (fp.MSG_BITS_MAX, fp.STATE_BITS_MAX, fp.WEIGHT_BITS_MAX, fp.ACC_BITS) == (24, 24, 8, 32)
    from mflc.compiler.chip import hardware as CH
    from mflc.ir.graph import SynapseGroup
    from mflc.ir.validate import LIMITS, SYNAPSE_DELAY_MAX
    from mflc.simulator import lava_backend as LB

    assert CH.HardwareProfile is H.HardwareProfile and CH.FIGURES is H.FIGURES   # re-exported, not copied
    assert LIMITS == DEFAULT.ir_limits() and SYNAPSE_DELAY_MAX == 62
    assert SynapseGroup.__dataclass_fields__["acc_bits"].default == DEFAULT.accumulator_bits
    assert (LB.LAVA_MSG_BITS, LB.LAVA_ACC_BITS, LB.LAVA_WEIGHT_BITS, LB.LAVA_DELAY_MAX) == (24, 32, 8, 63)
    assert LB.lava_problems(DEFAULT) == []
    for k in H.LAVA_LIMITS:          # every Lava limit is a figure of the profile, and the default is within it
        assert k in H.FIGURE_KEYS and getattr(DEFAULT, k) <= H.LAVA_LIMITS[k]


def test_every_new_figure_is_sourced_and_overridable():
    for k in ("max_synapse_delay", "estimate_routes_per_core"):
        f = H.FIGURES[k]
        assert f["source"] and f["confidence"] == "low" and f["unit"]
    hw = H.resolve_profile(None, ["max_synapse_delay=5", "estimate_routes_per_core=100"])
    assert hw.max_synapse_delay == 5 and hw.estimate_routes_per_core == 100
    assert hw.figure("max_synapse_delay")["source"] == "hardware profile --hw"
    assert H.resolve_profile(None, ["max_synapse_delay=0"]).max_synapse_delay == 0   # no delay at all is a profile


# ---- the IR validator: message, state, accumulator and weight widths, delay ---------------------------------------
@pytest.mark.parametrize("figure,value,words", [
    ("max_msg_bits", 16, "graded-spike limit of 16"),
    ("state_word_bits", 16, "above 16"),
    ("accumulator_bits", 16, "16-bit accumulator (accumulator_bits)"),
    ("weight_bits", 1, "1-bit range (weight_bits)"),
    ("max_synapse_delay", 0, "limit of 0 steps (max_synapse_delay)"),
])
def test_validator_follows_the_profile(tiny_graph, figure, value, words):
    assert problems(tiny_graph, **DEFAULT.ir_limits()) == [] == problems(tiny_graph)
    hw = replace(DEFAULT, **{figure: value})
    found = problems(tiny_graph, **hw.ir_limits())
    assert found and any(words in p for p in found), found[:3]


def test_validator_refuses_unknown_limits(tiny_graph):
    with pytest.raises(TypeError, match="unknown validator limit"):
        problems(tiny_graph, max_msg_bit=16)


def test_compile_refuses_24_bit_messages_under_hw_max_msg_bits_16(tiny_dir, tmp_path):
    r = cli_run("compile", tiny_dir / "m", "--out", tmp_path / "b", "--hw", "max_msg_bits=16", ok=False)
    assert r.exit_code != 0 and "graded-spike limit of 16" in r.output, r.output
    assert not (tmp_path / "b").exists()
    with pytest.raises(IRValidationError, match="neuron-state limit of 16|above 16"):
        mflc.compile(tiny_dir / "m", out=tmp_path / "b2", hw={"state_word_bits": 16})


def test_build_checks_use_the_builds_profile(tiny_dir, tmp_path):
    """A build's own checks validate against the profile in its manifest, not the defaults."""
    from mflc.build import Build

    b = mflc.compile(tiny_dir / "m", out=tmp_path / "b", hw=["max_msg_bits=24", "max_synapse_delay=20"])
    assert Build.load(tmp_path / "b").hardware.max_synapse_delay == 20
    assert all(c.ok for c in b.checks())
    hw = replace(b.hardware, max_synapse_delay=3)
    assert problems(b.placed, **hw.ir_limits())          # the same graph fails a tighter profile


# ---- partitioner, placer and layout check: per-core limits ------------------------------------------------------
@pytest.mark.parametrize("override", [
    "neurons_per_core=256", "synaptic_memory_bits=30000", "neuron_memory_bits=100000", "program_memory_instr=300",
    "microcode_per_op=40",
])
def test_partitioner_uses_more_cores(est_default, override):
    r = estimate(override)
    assert r["cores"] > est_default["cores"], (override, r["cores"])
    key, val = override.split("=")
    (fig,) = [f for f in r["hardware"]["figures"] if f["name"] == key]
    assert fig["value"] == int(val) and fig["source"] == "hardware profile --hw"


@pytest.mark.parametrize("override,kind", [
    ("weight_bits", "synapse_bits"), ("sparse_index_bits", "synapse_bits"), ("row_overhead_bits", "synapse_bits"),
    ("neuron_overhead_bits", "neuron_bits"), ("accumulator_bits", "neuron_bits"), ("state_word_bits", "neuron_bits"),
])
def test_costing_figures_change_the_usage(est_default, override, kind):
    r = estimate(f"{override}={4 * DEFAULT.figure(override)['value'] + 64}")
    assert r["utilization"][kind]["used"] > est_default["utilization"][kind]["used"]


def test_axon_limits_are_enforced(est_default):
    for key, kind in (("max_axons_in", "axons_in"), ("max_axons_out", "axons_out")):
        lim = est_default["utilization"][kind]["used"] // est_default["cores"] // 2
        r = estimate(f"{key}={lim}")
        assert r["cores"] > est_default["cores"] and r["utilization"][kind]["per_core_limit"] == lim


def test_cores_per_chip_changes_chips_and_the_cost_model(est_default):
    r = estimate("cores_per_chip=1")
    assert r["chips"] == est_default["cores"] > est_default["chips"] == 1
    t0, t1 = est_default["cost"]["time"], r["cost"]["time"]
    assert t1["barrier_s"] > t0["barrier_s"]                          # the barrier crosses a chip mesh
    assert r["cost"]["energy"]["static_power_W"] > est_default["cost"]["energy"]["static_power_W"]


def test_max_msg_bits_reaches_the_partitioner_and_partition_check(tiny_graph):
    from mflc.compiler.chip.partition_check import check_partition
    from mflc.compiler.chip.place import layout_graph

    tight = replace(DEFAULT, max_axons_in=64, neurons_per_core=64)       # forces fan-in splits
    placed, _ = layout_graph(tiny_graph, tight)
    assert check_partition(tiny_graph, placed, tight) == []
    wide = max(g.out_bits for n, g in placed.groups.items() if n not in tiny_graph.groups)
    narrow = replace(tight, max_msg_bits=wide - 1)
    assert check_partition(tiny_graph, placed, narrow)                   # the checker reads the profile too
    placed2, _ = layout_graph(tiny_graph, narrow)                         # the partitioner splits finer
    parts2 = [g for n, g in placed2.groups.items() if n not in tiny_graph.groups]
    assert len(parts2) > len([n for n in placed.groups if n not in tiny_graph.groups])
    assert max(g.out_bits for g in parts2) <= wide - 1 and check_partition(tiny_graph, placed2, narrow) == []


def test_packed_core_map_reads_the_profile(tiny_graph):
    from mflc.compiler.chip.costmodel import packed_core_map

    base = packed_core_map(tiny_graph)
    assert base.n_cores == packed_core_map(tiny_graph, hw=DEFAULT).n_cores
    assert packed_core_map(tiny_graph, hw=replace(DEFAULT, neurons_per_core=64)).n_cores > base.n_cores
    few = replace(DEFAULT, neurons_per_core=64, estimate_routes_per_core=DEFAULT.estimate_routes_per_core)
    fewer_routes = replace(few, estimate_routes_per_core=64)
    assert packed_core_map(tiny_graph, hw=fewer_routes).n_cores > packed_core_map(tiny_graph, hw=few).n_cores
    tiny_chips = replace(few, cores_per_chip=1)
    cm = packed_core_map(tiny_graph, hw=tiny_chips)
    assert int(cm.chip_of_core.max()) + 1 == cm.n_cores


# ---- the Lava back-end: fixed by Lava, a profile above it is refused ------------------------------------------------
@pytest.mark.parametrize("figure", sorted(H.LAVA_LIMITS))
def test_lava_refuses_a_profile_above_what_lava_runs(figure):
    from mflc.simulator.lava_backend import LavaExportError, check_profile_for_lava, lava_problems

    over = replace(DEFAULT, **{figure: H.LAVA_LIMITS[figure] + 1})
    (why,) = lava_problems(over)
    assert figure in why and str(H.LAVA_LIMITS[figure]) in why
    with pytest.raises(LavaExportError, match=figure):
        check_profile_for_lava(over)
    assert lava_problems(replace(DEFAULT, **{figure: H.LAVA_LIMITS[figure] - 1})) == []   # narrower runs


def test_export_lava_refuses_a_build_compiled_for_wider_messages(tiny_dir, tmp_path):
    cli_run("compile", tiny_dir / "m", "--out", tmp_path / "b", "--hw", "max_msg_bits=32")
    r = cli_run("export-lava", tmp_path / "b", "--tokens", "1", ok=False)
    assert r.exit_code != 0 and "max_msg_bits = 32" in r.output and "Lava" in r.output, r.output
    cli_run("compile", tiny_dir / "m", "--out", tmp_path / "ok", "--hw", "max_msg_bits=24")
    assert json.loads(cli_run("export-lava", tmp_path / "ok", "--tokens", "1", "--json").stdout)["steps"] > 0


# ---- one module writes each figure ---------------------------------------------------------------------------------
SOURCE_DIRS = ("ir", "compiler", "simulator", "tools")
# names that once held a copy of a hardware figure; none may be assigned a literal outside ir/hardware.py
CONSTANT = re.compile(r"^\s*(MSG_BITS_MAX|STATE_BITS_MAX|WEIGHT_BITS_MAX|ACC_BITS|SYNAPSE_DELAY_MAX|LAVA_\w+|"
                      r"LOIHI\d\w*|\w*(NEURONS|SYNAPSE\w*|CORES|FANOUT|AXONS)_PER_(CORE|CHIP))\s*(:[^=]*)?=\s*[-(\d]",
                      re.M)
# a figure (or a validator limit) given a literal default as a field or a parameter
FIELD = re.compile(r"\b(%s|msg_bits|state_bits|acc_bits|weight_bits|max_delay|max_neurons|max_synapses|"
                   r"max_fanout)\s*:\s*int\s*=\s*\d" % "|".join(H.FIGURE_KEYS))


def _sources():
    for d in SOURCE_DIRS:
        for p in sorted((ROOT / d).rglob("*.py")):
            yield p.relative_to(ROOT).as_posix(), p.read_text()


def test_each_figure_is_written_in_one_module():
    home = "ir/hardware.py"
    offenders = []
    for rel, text in _sources():
        if rel == home:
            continue
        offenders += [f"{rel}: {m.group(0).strip()}" for m in CONSTANT.finditer(text)]
        offenders += [f"{rel}: {m.group(0).strip()}" for m in FIELD.finditer(text)]
        offenders += [f"{rel}: _fig(" for _ in re.finditer(r"\b_fig\(", text)]
    assert offenders == [], offenders
    text = (ROOT / home).read_text()
    for k in H.FIGURE_KEYS:             # each figure's default is written once there
        assert len(re.findall(rf"^\s*{k}: int = _fig\(", text, re.M)) == 1, k


def test_the_op_library_reads_its_widths_from_the_profile():
    text = (ROOT / "ir/fixedpoint.py").read_text()
    assert "from .hardware import DEFAULT" in text
    for name, fig in (("MSG_BITS_MAX", "max_msg_bits"), ("STATE_BITS_MAX", "state_word_bits"),
                      ("WEIGHT_BITS_MAX", "weight_bits"), ("ACC_BITS", "accumulator_bits")):
        (line,) = re.findall(rf"^{name} = .*$", text, re.M)               # defined once (ACC_BITS was twice)
        assert f"_HW.{fig}" in line, line
