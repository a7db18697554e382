"""`mflc estimate --sweep FILE`: every grid point equals the single estimate of the same
model and --hw settings, in the file's order; table, --json, --csv and --plot; the points run through
mflc.tasks.map_tasks with --workers/--scheduler passed into its Runner; hostile files are refused
with the file, field and value named."""
import csv
import json
import pickle

import pytest
from typer.testing import CliRunner

from mflc.cli import app
from mflc import sweep as sw

ODD = {"name": "odd", "d": 24, "L": 3, "m": 40, "V": 37}


def run(*args, ok=True):
    r = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 1, r.output
    return r


def write(tmp_path, obj, name="sweep.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def single(*args):
    rep = json.loads(run("estimate", *args, "--json").stdout)
    return rep["cores"], rep["chips"], rep["steps_per_token"], rep["traffic"]["messages_between_chips"], \
        rep["cost"]["throughput"]["generation_tokens_per_s"], rep["cost"]["energy"]["generation_per_token_J"]


def test_sweep_points_equal_single_estimates(tmp_path):
    """Models outer, hardware inner; each row's figures are the single estimate's, exactly."""
    f = write(tmp_path, {"models": ["tiny"], "hw": [{}, {"cores_per_chip": 2}, {"weight_bits": 8}]})
    rows = json.loads(run("estimate", "--sweep", f, "--json").stdout)["points"]
    assert [r["hw"] for r in rows] == ["default", "cores_per_chip=2", "weight_bits=8"]
    for r, hw in zip(rows, [[], ["--hw", "cores_per_chip=2"], ["--hw", "weight_bits=8"]]):
        assert r["fits"] and (r["cores"], r["chips"], r["steps_per_token"], r["messages_between_chips"],
                              r["generation_tokens_per_s"], r["generation_energy_per_token_J"]) == single("--preset", "tiny", *hw)
    assert rows[1]["chips"] > rows[0]["chips"]


def test_sweep_explicit_points_and_shared_settings(tmp_path):
    """'points' lists (model, hw) pairs; density and prompt/generation lengths apply to all."""
    f = write(tmp_path, {"points": [{"model": ODD}, {"model": "tiny", "hw": {"cores_per_chip": 3}}],
                         "density": 0.5, "prompt_len": 7, "gen_len": 2})
    rows = json.loads(run("estimate", "--sweep", f, "--json").stdout)["points"]
    assert [r["model"] for r in rows] == ["odd", "tiny"]
    assert (rows[0]["d"], rows[0]["L"], rows[0]["m"], rows[0]["V"]) == (24, 3, 40, 37)
    rep = json.loads(run("estimate", "--preset", "tiny", "--hw", "cores_per_chip=3", "--density", "0.5",
                         "--prompt-len", "7", "--gen-len", "2", "--json").stdout)
    assert rows[1]["ttft_s"] == rep["cost"]["latency"]["ttft_s"] and rows[1]["cores"] == rep["cores"]


def test_sweep_table_csv_and_plot(tmp_path):
    f = write(tmp_path, {"models": ["tiny", ODD], "hw": [{}, {"weight_bits": 8}]})
    r = run("estimate", "--sweep", f, "--csv", tmp_path / "s.csv", "--plot", tmp_path / "s.png")
    assert "estimate sweep" in r.output and "odd" in r.output
    with open(tmp_path / "s.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and list(table[0]) == list(sw.ROW_KEYS)
    assert [t["model"] for t in table] == ["tiny", "tiny", "odd", "odd"]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_point_that_does_not_fit_is_a_row(tmp_path):
    """A model too large for the system is reported, with the reason, and the sweep goes on."""
    f = write(tmp_path, {"models": ["tiny"], "hw": [{}, {"cores_per_chip": 1}], "system": "oheo_gulch"})
    rows = json.loads(run("estimate", "--sweep", f, "--json").stdout)["points"]
    assert rows[0]["fits"] and not rows[1]["fits"]
    assert "oheo_gulch" in rows[1]["error"] and rows[1]["cores"] is None


def test_workers_and_scheduler_go_into_the_runner(tmp_path, monkeypatch):
    """The points go through map_tasks, with a module-level, picklable fn and picklable points."""
    import mflc.tasks as tasks

    seen = {}
    real = tasks.map_tasks

    def spy(fn, items, *, runner=None, labels=None, progress=None):
        seen.update(fn=fn, runner=runner, labels=list(labels), n=len(items))
        assert pickle.loads(pickle.dumps(fn)) is fn and pickle.loads(pickle.dumps(list(items))) == list(items)
        return real(fn, items, runner=tasks.Runner(), labels=labels, progress=progress)

    monkeypatch.setattr(tasks, "map_tasks", spy)
    f = write(tmp_path, {"models": ["tiny"], "hw": [{}, {"weight_bits": 8}]})
    run("estimate", "--sweep", f, "--workers", "3", "--json")
    assert seen["fn"] is sw.sweep_point and seen["n"] == 2
    assert seen["runner"] == tasks.Runner(3, None)
    assert seen["labels"][1] == "sweep point tiny [weight_bits=8]"
    run("estimate", "--sweep", f, "--scheduler", "tcp://127.0.0.1:8786", "--json")
    assert seen["runner"] == tasks.Runner(None, "tcp://127.0.0.1:8786")


@pytest.mark.parametrize("content,expect", [
    ("{not json", "not a JSON sweep file"),
    ([1, 2], "a sweep file is a JSON object"),
    ({"models": ["tiny"], "colour": 1}, "unknown field 'colour'"),
    ({"models": []}, "models: must be a non-empty list"),
    ({"models": ["7B"]}, "models[0]: unknown preset '7B'"),
    ({"models": [{"d": 8, "L": 1}]}, "models[0]: field 'V' is missing"),
    ({"models": [{"d": -8, "L": 1, "V": 4}]}, "models[0].d: -8 is outside"),
    ({"models": [{"d": True, "L": 1, "V": 4}]}, "models[0].d: must be an integer"),
    ({"models": [{"d": "8", "L": 1, "V": 4}]}, "models[0].d: must be an integer"),
    ({"models": [{"d": 8, "L": 1, "V": 4, "heads": 2}]}, "unknown field 'heads'"),
    ({"models": [{"d": 1 << 20, "L": 1 << 20, "V": 4}]}, "RAM"),
    ({"models": ["tiny"], "hw": [{"warp_drive": 1}]}, "hw[0]"),
    ({"models": ["tiny"], "hw": [{"weight_bits": "8"}]}, "hw[0].weight_bits: must be an integer"),
    ({"models": ["tiny"], "hw": [{}, {"weight_bits": 0}]}, "hw[1]"),
    ({"models": ["tiny"], "hw": "weight_bits=8"}, "hw: must be a non-empty list"),
    ({"models": ["tiny"], "points": [{"model": "tiny"}]}, "not both"),
    ({"points": [{"model": "tiny", "speed": 2}]}, "points[0]: must be an object with 'model'"),
    ({"points": []}, "no points"),
    ({"models": ["tiny"] * 200, "hw": [{}] * 60}, "more than the limit of 10,000"),
    ({"models": ["tiny"], "density": 1.5}, "density: must be a number in (0, 1]"),
    ({"models": ["tiny"], "system": "deep_thought"}, "deep_thought"),
    ({"models": ["tiny"], "prompt_len": 0}, "prompt_len: 0 is outside"),
    ({"models": ["tiny"], "remove_inner_norm": "yes"}, "remove_inner_norm: must be true or false"),
])
def test_hostile_sweep_files_are_refused(tmp_path, content, expect):
    f = write(tmp_path, content)
    r = run("estimate", "--sweep", f, ok=False)
    assert expect in r.output and str(f) in r.output.replace("\n", "")


def test_sweep_option_misuse(tmp_path):
    f = write(tmp_path, {"models": ["tiny"]})
    assert "sweep file not found" in run("estimate", "--sweep", tmp_path / "none.json", ok=False).output
    assert "give no MODEL" in run("estimate", "--sweep", f, "--preset", "tiny", ok=False).output
    assert "go with --sweep" in run("estimate", "--preset", "tiny", "--csv", tmp_path / "x.csv", ok=False).output
    assert "--workers 0: must be a whole number >= 1" in run("estimate", "--sweep", f, "--workers", "0", ok=False).output
    assert "is a directory" in run("estimate", "--sweep", f, "--csv", tmp_path, ok=False).output


def test_sweep_on_two_dask_workers_equals_serial(tmp_path):
    """The points run as tasks of a real two-worker LocalCluster: the same rows, in the file's order."""
    pytest.importorskip("dask.distributed")
    f = write(tmp_path, {"models": ["tiny", ODD], "hw": [{}, {"cores_per_chip": 2}]})
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    serial = json.loads(run("estimate", "--sweep", f, "--json").stdout)["points"]
    dask = json.loads(run("estimate", "--sweep", f, "--workers", "2", "--json").stdout)["points"]
    assert strip(dask) == strip(serial) and [r["label"] for r in dask] == [r["label"] for r in serial]
