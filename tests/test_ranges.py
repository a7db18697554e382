"""Chip counts as ranges: the layer extrapolation equals the full count, every sensitivity row is what a
layout under that one changed figure gives, the profiles differ the way their synaptic models say, and the
estimate's JSON carries the range keys."""
import json
from pathlib import Path
from dataclasses import replace

import pytest

from mflc.compiler.chip.hardware import PROFILES, resolve_profile
from mflc.compiler.chip.ranges import LayerExtrapolation, count_graph, figure_range
from mflc.compiler.model.config import preset
from mflc.compiler.model.skeleton import skeleton_graph

from util import cli_run

CFG = replace(preset("tiny"), num_hidden_layers=6, hidden_size=64, intermediate_size=128)


def _extrapolation(cfg=CFG):
    return LayerExtrapolation(lambda n: skeleton_graph(replace(cfg, num_hidden_layers=n)), cfg.num_hidden_layers)


@pytest.mark.parametrize("profile", ["loihi2-lava", "loihi2-ideal"])
@pytest.mark.parametrize("hw", [[], ["neurons_per_core=40"], ["synaptic_memory_bits=200000"], ["partition_rule=0"]])
def test_layer_extrapolation_equals_the_full_count(profile, hw):
    p = resolve_profile(profile, hw)
    full = count_graph(skeleton_graph(CFG), p)
    assert _extrapolation()(p) == full


def test_each_sensitivity_row_is_a_layout_under_that_figure():
    hw = PROFILES["loihi2-lava"]
    ex = _extrapolation()
    r = figure_range(ex, hw)
    assert r["cores_low"] <= r["cores"] <= r["cores_high"] and r["chips_low"] <= r["chips"] <= r["chips_high"]
    assert {row["figure"] for row in r["sensitivity"]} == {label for label, _ in hw.uncertain()}
    for row in r["sensitivity"]:
        for end in ("low", "high"):
            vals = {k: (row[end][k] if isinstance(row[end], dict) else row[end]) for k in row["figures"]}
            c = count_graph(skeleton_graph(CFG), replace(hw, **vals))
            assert (c.cores, c.chips) == (row[f"cores_at_{end}"], row[f"chips_at_{end}"]), (row["figure"], end)
    effects = [abs(x["chips_at_low"] - x["chips_at_high"]) for x in r["sensitivity"]]
    assert effects == sorted(effects, reverse=True)
    assert r["profiles"]["loihi2-lava"]["cores"] == r["cores"]


def test_calibrated_synapses_cost_more_than_ideal_packing():
    """The compiler packs several times fewer 2-bit synapses per core than ideal packing (docs/estimates.md)."""
    lava, ideal = (count_graph(skeleton_graph(preset("370M")), PROFILES[p]) for p in ("loihi2-lava", "loihi2-ideal"))
    assert lava.cores > 5 * ideal.cores and lava.binding == ideal.binding == "synapse_bits"


def test_moving_a_figure_moves_the_count_the_right_way():
    ex = _extrapolation()
    base = PROFILES["loihi2-lava"]
    assert ex(replace(base, cores_per_chip=1)).chips > ex(base).chips
    assert ex(replace(base, synmem_synapse_milli=4000)).cores > ex(base).cores
    assert ex(replace(base, partition_rule=0)).cores <= ex(base).cores
    assert ex(replace(base, neuron_groups_per_core=1)).cores > ex(base).cores


def test_estimate_json_has_the_range_keys():
    js = json.loads(cli_run("estimate", "--preset", "tiny", "--json").stdout)
    for k in ("cores", "chips", "cores_low", "cores_high", "chips_low", "chips_high", "profiles", "sensitivity"):
        assert k in js, k
    for row in js["sensitivity"]:
        assert {"figure", "low", "high", "chips_at_low", "chips_at_high"} <= set(row)
    js2 = json.loads(cli_run("estimate", "--preset", "tiny", "--json", "--no-range").stdout)
    assert "sensitivity" not in js2 and js2["cores"] == js["cores"]


def test_tornado_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    r = cli_run("estimate", "--preset", "tiny", "--plot", tmp_path / "e.png")
    assert (tmp_path / "e_sensitivity.png").stat().st_size > 1000 and "e_sensitivity.png" in r.stdout


def test_time_and_energy_follow_the_range():
    js = json.loads(cli_run("estimate", "--preset", "tiny", "--json").stdout)
    cr = js["cost_range"]
    assert cr["assumed"]["cores"] == js["cores"] and cr["assumed"]["generation_tokens_per_s"] == pytest.approx(
        js["cost"]["throughput"]["generation_tokens_per_s"])
    for corner in ("all_favourable", "all_unfavourable"):
        assert cr[corner]["cores"] == js["range"][corner]["cores"] and cr[corner]["generation_tokens_per_s"] > 0


def test_compile_report_carries_the_range(tmp_path):
    cli_run("init", "--preset", "tiny", "--out", tmp_path / "m")
    js = json.loads(cli_run("compile", tmp_path / "m", "--out", tmp_path / "b", "--json").stdout)
    lay = js["layout"]
    assert lay["cores_low"] <= lay["cores"] <= lay["cores_high"] and set(lay["profiles"]) == set(PROFILES)
    assert lay["profiles"][lay["range"]["profile"]]["cores"] == lay["cores"]
    js2 = json.loads(cli_run("compile", tmp_path / "m", "--out", tmp_path / "b2", "--json", "--no-range").stdout)
    assert "range" not in js2["layout"] and js2["layout"]["cores"] == lay["cores"]


def test_gpu_baseline_is_like_for_like_and_labelled_from_the_parameters(tmp_path):
    """Issue 25, item 3: the baseline nearest in size by default, unlike sizes said so, the GPU label from
    the power actually used, ratios without false precision."""
    small = json.loads(cli_run("estimate", "--json", "--no-range").stdout)["cost"]
    assert [b["model"] for b in small["gpu_baselines"]] == ["Qwen2.5-0.5B"]
    assert "NOT like for like" in small["gpu_baseline_note"]
    (tmp_path / "p.json").write_text('{"gpu": {"power": 25}}')
    r = cli_run("estimate", "--preset", "370M", "--no-range", "--cost-params", tmp_path / "p.json")
    assert "Jetson Orin Nano 8GB (25 W)" in r.stdout and "(15 W)" not in r.stdout
    assert "NOT like for like" not in r.stdout and "1.3x the model's 0.37 B" in r.stdout
    both = json.loads(cli_run("estimate", "--json", "--no-range", "--baseline", "all").stdout)["cost"]
    assert len(both["gpu_baselines"]) == 2
    bad = cli_run("estimate", "--no-range", "--baseline", "gpt-5", ok=False)
    assert bad.exit_code == 1 and "Qwen2.5-0.5B" in bad.output and "Llama-3.2-1B" in bad.output
    assert "e+" not in cli_run("estimate", "--no-range").stdout.split("vs Qwen")[1].split("\n")[0].split("(")[1]


def test_counts_are_named_where_two_definitions_meet():
    """Issue 25, item 4: the per-role core column says it counts shared cores once per role; the two message
    counts carry their definitions."""
    out = cli_run("estimate", "--preset", "tiny", "--no-range").stdout
    assert "cores*" in out and "* cores touched" in out and "more than the layout's" in out
    assert "routes per token between cores" in out and "messages at the activity rates, on core included" in out


def test_estimate_with_measured_activity(tmp_path):
    """Issue 25, item 11: a build's time and energy from the activity the engine measured on real text,
    beside the assumed rates, saved and read back; bad inputs named."""
    cli_run("init", "--preset", "tiny", "--out", tmp_path / "m")
    cli_run("compile", tmp_path / "m", "--out", tmp_path / "b", "--no-range")
    js = json.loads(cli_run("estimate", "--activity", tmp_path / "b", "--activity-tokens", "8", "--json",
                            "--save-activity", tmp_path / "a.json").stdout)
    assert "measured by the engine's counters" in js["activity_source"]
    assert js["measured"]["activity_per_token"]["source"] == js["activity_source"]
    assert js["assumed"]["activity_per_token"]["source"].startswith("assumed")
    assert js["measured"]["activity_per_token"]["synops"] > 0
    again = json.loads(cli_run("estimate", "--activity", tmp_path / "a.json", "--json").stdout)
    assert again["measured"]["time"] == js["measured"]["time"]
    r = cli_run("estimate", "--activity", tmp_path / "m", ok=False)
    assert r.exit_code == 1 and "not a build directory" in r.output
    (tmp_path / "x.json").write_text("{}")
    r = cli_run("estimate", "--activity", tmp_path / "x.json", ok=False)
    assert r.exit_code == 1 and "not an activity file" in r.output
    r = cli_run("estimate", "--preset", "tiny", "--activity", tmp_path / "b", ok=False)
    assert r.exit_code == 1 and "give no MODEL, --preset" in r.output


def test_sweep_table_whole_at_80_columns_and_plots_named(tmp_path):
    """Issue 25, item 8 for estimate: no cell cut at 80 columns; every picture --plot writes is named."""
    from rich.console import Console

    from mflc.sweep import rows_table

    rows = [dict(model="370M", hw="weight_bits=8,neurons_per_core=64", params=374_000_000, fits=True, cores=11385,
                 chips=95, steps_per_token=608, messages_between_chips=13_287_605, generation_tokens_per_s=48.04,
                 prefill_tokens_per_s=674.5, generation_energy_per_token_J=0.2125)]
    for width in (80, 140):
        con = Console(width=width, record=True)
        con.print(rows_table(rows, width))
        text = con.export_text()
        assert "…" not in text and "11,385" in text and "0.212" not in text and "212" in text
        assert ("13,287,605" in text) == (width == 140)
    pytest.importorskip("matplotlib")
    js = json.loads(cli_run("estimate", "--preset", "tiny", "--json", "--plot", tmp_path / "e.png").stdout)
    assert set(js["files"]) == {"layout_plot", "scaling_plot", "sensitivity_plot"}
    assert all(Path(f).is_file() for f in js["files"].values())
