"""What a new user tripped over (issue 25), command by command: options never dropped silently, the
calibration named, the same options everywhere, --json documents on failure, progress on stderr, tables
readable at 80 columns, errors that name the fix, and no verify of the reference against itself."""
import json
import re
from pathlib import Path

import pytest

import mflc
from mflc.cli import app
from mflc.ir.errors import ConfigError

from util import cli_run

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
run = cli_run


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("consistency")
    run("init", "--preset", "tiny", "--out", d / "m", "--seed", "5")
    run("quantize", d / "m", "--out", d / "q")
    run("compile", d / "m", "--out", d / "b")
    return d


@pytest.fixture(scope="module")
def stdlib(tmp_path_factory):
    """A fake standard library with more held-out files than `sites` used to take by default (4)."""
    from mflc.training.corpus import split_of

    root = tmp_path_factory.mktemp("stdlib")
    names = [f"mod{i}.py" for i in range(120)]
    for n in names:
        (root / n).write_text(f"def f{n[3:-3]}(x):\n    return x * {n[3:-3]} + 1\n")
    held = sorted(n for n in names if split_of(n) == "heldout")
    assert len(held) > 4
    return root, held


def fails(*args, status=1):
    """Run expecting a clean failure with ``status``; returns the result."""
    r = run(*args, ok=False)
    assert r.exit_code == status, (r.output, r.exception)
    assert "Traceback" not in r.output
    return r


# ---- 1. quantization options are never dropped silently ------------------------------------------------
@pytest.mark.parametrize("opts, named", [
    (["--act-bits", "4"], ["--act-bits 4"]),
    (["--calib", str(README), "--calib-tokens", "50"], ["--calib", "README.md", "--calib-tokens 50"]),
    (["--site-bits", "r=12", "--uniform"], ["--site-bits r=12", "--uniform"]),
    (["--scale-method", "mse", "--no-pow2", "--state-bits", "16"], ["--scale-method mse", "--no-pow2", "--state-bits 16"]),
])
def test_compile_of_a_quantized_model_refuses_quantization_options(d, tmp_path, opts, named):
    r = fails("compile", d / "q", "--out", tmp_path / "b", *opts)
    assert "is a quantized model" in r.output and "would have no effect" in r.output
    for n in named:
        assert n in r.output, (n, r.output)
    assert not (tmp_path / "b").exists()


def test_compile_of_a_quantized_model_without_options_still_works(d, tmp_path):
    js = json.loads(run("compile", d / "q", "--out", tmp_path / "b", "--json").stdout)
    assert js["layout"]["calibration"].startswith("256 random tokens")
    assert json.loads((tmp_path / "b" / "build.json").read_text())["quantization"]["act_bits"] == 8


def test_api_compile_of_a_quantized_model_refuses_options(d, tmp_path):
    from mflc.compiler.model.quantize import QuantOptions

    with pytest.raises(ConfigError, match="quantized model"):
        mflc.compile(d / "q", tmp_path / "b", options=QuantOptions(act_bits=4))
    with pytest.raises(ConfigError, match="calib"):
        mflc.compile(d / "q", tmp_path / "b2", calib=README)


# ---- 2. the calibration is named, random tokens warned about ------------------------------------------
def test_quantize_names_its_calibration_and_warns_on_random_tokens(d, tmp_path):
    r = run("quantize", d / "m", "--out", tmp_path / "q")
    assert "calibration: 256 random tokens" in r.stdout
    assert "warning:" in r.stderr and "random tokens" in r.stderr and "--calib" in r.stderr
    r = run("quantize", d / "m", "--out", tmp_path / "q2", "--calib", README)
    assert "calibration: text file" in r.stdout and "README.md" in r.stdout and "warning" not in r.stderr
    r = run("quantize", d / "m", "--out", tmp_path / "q3", "--json")
    assert json.loads(r.stdout)["calibration"].startswith("256 random tokens") and "warning:" in r.stderr


def test_compile_names_its_calibration_and_warns_on_random_tokens(d, tmp_path):
    r = run("compile", d / "m", "--out", tmp_path / "b")
    assert "calibration: 256 random tokens" in r.stdout and "warning:" in r.stderr
    r = run("compile", d / "m", "--out", tmp_path / "b2", "--calib", README)
    assert "README.md" in r.stdout and "warning" not in r.stderr
    r = run("compile", d / "q", "--out", tmp_path / "b3")         # quantized earlier: named, not re-warned
    assert "was quantized): 256 random tokens" in r.stdout and "warning" not in r.stderr


# ---- 5. the same options on every command ---------------------------------------------------------------
def test_scale_method_on_quantize_and_compile(d, tmp_path):
    run("quantize", d / "m", "--out", tmp_path / "q", "--scale-method", "mse")
    assert json.loads((tmp_path / "q" / "quant.json").read_text())["options"]["scale_method"] == "mse"
    run("compile", d / "m", "--out", tmp_path / "b", "--scale-method", "mse", "--calib", README)
    assert json.loads((tmp_path / "b" / "build.json").read_text())["quantization"]["scale_method"] == "mse"
    run("verify", tmp_path / "b", "--tokens", "3")
    fails("compile", d / "m", "--out", tmp_path / "b2", "--scale-method", "median")


def test_workers_auto_everywhere(tmp_path, monkeypatch):
    """estimate --sweep takes N|auto like the other commands that split into tasks."""
    import mflc.tasks as tasks

    seen = {}
    real = tasks.map_tasks

    def spy(fn, items, *, runner=None, labels=None, progress=None, **kw):
        seen["runner"] = runner
        return real(fn, items, runner=tasks.Runner(), labels=labels, progress=progress)

    monkeypatch.setattr(tasks, "map_tasks", spy)
    f = tmp_path / "sweep.json"
    f.write_text(json.dumps({"models": ["tiny"], "hw": [{}]}))
    run("estimate", "--sweep", f, "--workers", "auto", "--json")
    assert seen["runner"] == tasks.Runner("auto", None)
    assert "--workers 0: must be a whole number >= 1" in fails("estimate", "--sweep", f, "--workers", "0").output
    for cmd in ("eval", "ablate", "sites", "verify", "estimate"):
        assert "N|auto" in run(cmd, "--help").output, cmd


def test_sites_runs_its_files_as_tasks(d, monkeypatch):
    """sites --workers: each file a task through map_tasks; the statistics equal the serial run's."""
    import mflc.cli.tasks as clitasks
    import mflc.tasks as tasks

    args = ["sites", d / "m", "--text", README, "--text", ROOT / "pyproject.toml", "--max-tokens", "150",
            "--per-layer", "--json"]
    serial = json.loads(run(*args).stdout)
    seen = {}
    real = clitasks.map_tasks

    def spy(fn, items, *, runner=None, labels=None, **kw):
        seen.update(runner=runner, labels=list(labels))
        return real(fn, items, runner=tasks.Runner(), labels=labels, **kw)

    monkeypatch.setattr(clitasks, "map_tasks", spy)
    tasked = json.loads(run(*args, "--workers", "2").stdout)
    assert seen["runner"] == tasks.Runner(2, None) and len(seen["labels"]) == 2
    assert tasked["rows"] == serial["rows"]


def test_sites_and_eval_take_the_same_files(d, stdlib):
    root, held = stdlib
    ev = json.loads(run("eval", d / "m", "--heldout", "--stdlib", root, "--max-tokens", "20", "--json").stdout)
    si = json.loads(run("sites", d / "m", "--heldout", "--stdlib", root, "--max-tokens", "20", "--json").stdout)
    assert [f["file"] for f in ev["files"]] == held == si["texts"]


def test_init_json_and_version(tmp_path):
    js = json.loads(run("init", "--preset", "tiny", "--out", tmp_path / "m", "--json").stdout)
    assert js["preset"] == "tiny" and js["parameters"] > 0 and "model.safetensors" in js["files"]
    r = run("--version")
    assert f"mflc {mflc.__version__}" in r.stdout


# ---- 6. --json on failure: a JSON document with the error and the exit status ---------------------------
@pytest.mark.parametrize("args", [
    ["init", "--preset", "huge", "--out", "/tmp/x"],
    ["quantize", "/nonexistent/m", "--out", "/tmp/x"],
    ["eval", "/nonexistent/m", "--text", str(README)],
    ["ablate", "/nonexistent/m", "--text", str(README)],
    ["sites", "/nonexistent/m", "--text", str(README)],
    ["compile", "/nonexistent/m", "--out", "/tmp/x"],
    ["ir", "/nonexistent/b"],
    ["verify", "/nonexistent/b"],
    ["generate", "/nonexistent/b"],
    ["export-lava", "/nonexistent/b"],
    ["estimate", "--preset", "370M", "--system", "oheo_gulch"],
])
def test_json_failure_prints_a_document(args):
    r = fails(*args, "--json")
    js = json.loads(r.stdout)
    assert js["ok"] is False and js["exit_status"] == 1 and js["command"] == args[0] and js["error"]
    assert js["error"].split(":")[0] in r.stderr                      # the same message, on stderr too


def test_json_usage_error_prints_a_document(d):
    r = fails("verify", d / "b", "--tokens", "many", "--json", status=2)
    js = json.loads(r.stdout)
    assert js["exit_status"] == 2 and "--tokens" in js["error"] and js["command"] == "verify"


def test_verify_json_names_the_engine(d):
    js = json.loads(run("verify", d / "b", "--tokens", "2", "--engine", "fast", "--json").stdout)
    assert js["engine"] == "fast" and "backend" not in js
    js = json.loads(run("verify", d / "b", "--tokens", "2", "--sequences", "2", "--json").stdout)
    assert js["engine"] == "engine" and "backend" not in js


# ---- 7. progress on stderr, also when it is not a terminal ----------------------------------------------
def test_long_steps_report_progress_on_stderr(d, stdlib):
    root, held = stdlib
    n = len(held)
    for cmd, what in (("eval", "files"), ("sites", "files")):
        r = run(cmd, d / "m", "--heldout", "--stdlib", root, "--max-tokens", "20", "--json")
        assert f"{what}: 0/{n}" in r.stderr and f"{what}: {n}/{n} in" in r.stderr, (cmd, r.stderr)
        json.loads(r.stdout)                                            # stdout stays one document
    r = run("ablate", d / "m", "--heldout", "--stdlib", root, "--max-tokens", "10", "--max-files", "2", "--json")
    assert re.search(r"settings: (\d+)/\1 in", r.stderr), r.stderr
    r = run("compile", d / "m", "--out", d / "progress_b")
    assert "[1/4] loading" in r.stderr and "[4/4] writing" in r.stderr


# ---- 8. readable at 80 columns ---------------------------------------------------------------------------
@pytest.fixture
def columns_80():
    """Both consoles rendering at 80 columns, whatever the terminal running the tests."""
    from mflc.cli.app import err, out

    saved = out._width, err._width
    out.width = err.width = 80
    yield
    out._width, err._width = saved


def test_no_cut_cells_at_80_columns(d, tmp_path, columns_80):
    """Every command but estimate (whose output is being rewritten elsewhere) at 80 columns: no cell cut
    to an ellipsis."""
    cmds = [["init", "--preset", "tiny", "--out", tmp_path / "m"],
            ["quantize", d / "m", "--out", tmp_path / "q"],
            ["compile", d / "m", "--out", tmp_path / "b", "--calib", README],
            ["ir", d / "b"],
            ["eval", d / "m", "--text", README, "--max-tokens", "60"],
            ["ablate", d / "m", "--text", README, "--max-tokens", "40"],
            ["sites", d / "m", "--text", README, "--max-tokens", "60"],
            ["sites", d / "m", "--text", README, "--max-tokens", "60", "--per-layer"],
            ["verify", d / "b", "--tokens", "2"],
            ["verify", d / "b", "--tokens", "2", "--sequences", "2"],
            ["generate", d / "b", "--max-new-tokens", "2"],
            ["executors"],
            ["export-lava", d / "b"]]
    for c in cmds:
        r = run(*c)
        assert "…" not in r.output, (c, r.output)


def test_executors_table_keeps_paths_whole(columns_80):
    from mflc import executors

    text = run("executors").stdout
    flat = re.sub(r"\s*│\s*", " ", text)
    for s in executors.REGISTRY.values():
        for path in re.findall(r"[\w/]+\.py", s.description):
            assert path in text, (path, text)
    assert "int-model" in flat and "(reference)" in flat


def test_compile_plot_title_is_inside_the_figure_and_clear_of_the_colour_bar(d, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figs = []
    real = Figure.savefig

    def keep(self, *a, **k):
        figs.append(self)
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", keep)
    run("compile", d / "q", "--out", tmp_path / "b", "--plot", tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file() and len(figs) == 1
    fig = figs[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()     # a closed figure's canvas (matplotlib >= 3.11) has none
    titles = [t for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None and t.get_text()]
    assert titles
    for t in titles:
        box = t.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (t.get_text(), box)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (t.get_text(), ax)


# ---- 9. errors that name the fix -------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["eval", "sites", "ablate"])
def test_a_build_given_for_a_checkpoint_is_named_with_its_source(d, cmd):
    r = fails(cmd, d / "b", "--text", README)
    assert "is a build" in r.output and str(d / "m") in r.output


def test_compile_and_quantize_of_a_build_name_the_way_out(d, tmp_path):
    r = fails("compile", d / "b", "--out", tmp_path / "x")
    assert "is a build" in r.output and str(d / "m") in r.output and str(d / "b" / "quant") in r.output
    r = fails("quantize", d / "b", "--out", tmp_path / "y")
    assert "is a build" in r.output and str(d / "m") in r.output


@pytest.mark.parametrize("name", ["loihi3", "loihi3.json"])
def test_unknown_hardware_lists_the_profiles(d, tmp_path, name):
    from mflc.compiler.chip.hardware import PROFILES

    r = fails("compile", d / "q", "--out", tmp_path / "b", "--hardware", name)
    assert name in r.output and all(p in r.output for p in PROFILES)


# ---- 10. verify never compares the reference with itself -------------------------------------------------
@pytest.mark.parametrize("opt", [["--engine", "int-model"], ["--engine", "reference"], ["--backend", "int-model"]])
def test_verify_refuses_the_reference_as_the_executor(d, opt):
    r = fails("verify", d / "b", "--tokens", "2", *opt)
    assert "itself" in r.output and "engine" in r.output and "bit-exact" not in r.output
