"""The command line end to end on the tiny preset, and its answers to bad input (message + exit 1)."""
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from mflc.cli import app

from util import cli_run

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
run = cli_run


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    run("init", "--preset", "tiny", "--out", d / "m", "--seed", "3")
    run("compile", d / "m", "--out", d / "b")
    return d


def test_help():
    r = run("--help")
    for cmd in ("init", "eval", "compile", "ir", "verify", "generate"):
        assert cmd in r.output


def test_compile_writes_build(build):
    assert (build / "b" / "ir" / "graph.json").is_file()
    assert (build / "b" / "quant" / "quant.json").is_file()


def test_compile_reports_its_steps(build, tmp_path):
    js = json.loads(run("compile", build / "m", "--out", tmp_path / "b", "--json").stdout)
    assert [s["step"] for s in js["steps"]] == ["loading", "quantizing and lowering, layer by layer",
                                                 "laying out on Loihi 2", "writing"]     # layer by layer
    assert all(s["seconds"] >= 0 for s in js["steps"])
    js = json.loads(run("compile", build / "m", "--out", tmp_path / "b1", "--whole-model", "--json").stdout)
    assert [s["step"] for s in js["steps"]] == ["loading", "quantizing", "lowering to IR",
                                                 "laying out on Loihi 2", "writing"]
    js = json.loads(run("compile", build / "b" / "quant", "--out", tmp_path / "b2", "--json").stdout)
    assert "quantizing" not in [s["step"] for s in js["steps"]]      # a quantized model is only loaded
    assert "steps: loading" in run("compile", build / "m", "--out", tmp_path / "b3").output


def test_ir_summary_and_json(build):
    r = run("ir", build / "b")
    assert "pipeline depth" in r.output and "validation" in r.output
    js = json.loads(run("ir", build / "b", "--json").stdout)
    assert js["totals"]["groups"] > 10 and js["problems"] == [] and 0 < js["ternary_density"] < 1


def test_eval_prints_both_numbers(build):
    r = run("eval", build / "m", "--text", ROOT / "README.md", "--max-tokens", "300")
    assert "bits per byte, float vs fixed point" in r.output and "top-1 agree" in r.output and "README.md" in r.output
    js = json.loads(run("eval", build / "m", "--text", ROOT / "README.md", "--max-tokens", "200", "--json").stdout)
    tot = js["total"]
    assert tot["tokens"] == 199 and tot["float_bits_per_token"] > 0 and 0 <= tot["top1_agreement"] <= 1
    assert tot["bytes"] == 199 and tot["fixed_bits_per_byte"] == pytest.approx(tot["fixed_bits_per_token"], rel=1e-14)
    assert js["calibration"].startswith("first 200 tokens of the evaluated text")


def test_eval_engines_give_identical_figures(build):
    """The fast engine's logits are the reference model's integers, so every figure is equal."""
    args = ["eval", build / "m", "--text", ROOT / "README.md", "--text", ROOT / "pyproject.toml",
            "--max-tokens", "120", "--json"]
    fast = json.loads(run(*args, "--engine", "fast").stdout)
    ref = json.loads(run(*args, "--engine", "reference").stdout)
    assert fast["files"] == ref["files"] and fast["total"] == ref["total"]
    assert len(fast["files"]) == 2 and fast["total"]["tokens"] == 2 * 119


def test_eval_heldout_uses_the_corpus_split(build, tmp_path):
    """--heldout picks exactly the files the training split holds out, from the given stdlib."""
    from mflc.training.corpus import split_of

    names = [f"mod{i}.py" for i in range(60)] + ["test/held.py", "encodings/x.py"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_text(f"def f_{n.replace('/', '_')[:-3]}(x):\n    return x + 1\n")
    want = sorted(n for n in names[:60] if split_of(n) == "heldout")
    assert 0 < len(want) < 60
    js = json.loads(run("eval", build / "m", "--heldout", "--stdlib", tmp_path, "--max-tokens", "40", "--json").stdout)
    assert [f["file"] for f in js["files"]] == want


@pytest.mark.parametrize("args, message", [
    ([], "either --text FILE"),
    (["--text", "README.md", "--heldout"], "either --text FILE"),
    (["--text", "README.md", "--engine", "gpu"], "--engine 'gpu'"),
    (["--text", "README.md", "--max-tokens", "1"], "--max-tokens 1"),
    (["--text", "no/such.txt"], "no/such.txt: text file not found"),
    (["--text", "README.md", "--calib", "no/calib.txt"], "no/calib.txt: calibration text not found"),
])
def test_eval_bad_arguments(build, args, message):
    r = runner.invoke(app, ["eval", str(build / "m"), *[str(ROOT / a) if a.endswith((".md", ".txt")) and "no/" not in a else a for a in args]])
    assert r.exit_code == 1 and message in r.output, r.output


def test_eval_heldout_empty_stdlib_is_an_error(build, tmp_path):
    r = runner.invoke(app, ["eval", str(build / "m"), "--heldout", "--stdlib", str(tmp_path)])
    assert r.exit_code == 1 and "no held-out .py files" in r.output


def test_verify_build_is_bit_exact(build):
    r = run("verify", build / "b", "--tokens", "4", "--seed", "1")
    assert "bit-exact" in r.output
    js = json.loads(run("verify", build / "b", "--tokens", "3", "--json").stdout)
    assert js["ok"] is True and js["divergence"] is None and js["counters"]["synops"] > 0


def test_verify_fails_on_a_corrupted_weight(build, tmp_path):
    import shutil

    from util import rehash_build

    bad = tmp_path / "bad"
    shutil.copytree(build / "b", bad)
    graph_dir = bad / "ir"                          # placed_ir/ refers to it for synapses it did not split
    arrays = load_file(str(graph_dir / "graph.safetensors"))
    key = next(k for k in sorted(arrays) if k.startswith("syn/L0.i_in->L0.mlgru") and k.endswith("/ternary2"))
    packed = arrays[key].copy()                     # 2-bit weights (ir/ternary.py): negate the first eight
    for shift in (0, 2, 4, 6):                      # non-zero ones: +1 (0b01) <-> -1 (0b11)
        nonzero = ((packed[:8] >> shift) & 3) != 0
        packed[:8] ^= (nonzero.astype(np.uint8) << (shift + 1))
    assert not np.array_equal(packed, arrays[key])
    arrays[key] = packed
    save_file(arrays, str(graph_dir / "graph.safetensors"))
    r = run("verify", bad, "--tokens", "4", ok=False)
    assert r.exit_code == 1 and "ir/graph.safetensors" in r.output and "SHA-256" in r.output
    rehash_build(bad)                               # hashes fixed up: re-lowering quant/ still sees it
    r = run("verify", bad, "--tokens", "4", ok=False)
    assert r.exit_code == 1 and "L0.i_in->L0.mlgru" in r.output and "same source" in r.output
    js = json.loads(run("verify", bad, "--tokens", "4", "--json", ok=False).stdout)
    assert js["ok"] is False and js["failed_check"] == "same source"


def test_verify_locates_a_divergence_in_a_corrupted_graph(build):
    """The simulation's own divergence report (reached through the API: a build with a wrong weight
    fails a static check before any simulation)."""
    from mflc.build import Build
    from mflc.compiler.model.int_model import IntModel
    from mflc.compiler.model.lower import lower
    from mflc.simulator.verify import verify

    b = Build.load(build / "b")
    g = b.placed
    s = next(s for n, s in sorted(g.synapses.items()) if n.startswith("L0.i_in->L0.mlgru"))
    s.values = s.values.copy()
    s.values[:8] = -s.values[:8]
    res = verify(IntModel(b.quantized), g, [1, 2, 3, 4], b.core_map(), reference_graph=lambda: lower(b.quantized))
    assert not res.ok and res.divergence.group == "L0.mlgru"
    assert "first divergence at token" in res.divergence.describe()


def test_generate(build):
    js = json.loads(run("generate", build / "b", "--prompt", "def ", "--max-new-tokens", "3", "--json").stdout)
    assert len(js["tokens"]) == 3 and js["steps_per_token"] > 10


@pytest.mark.parametrize("args, fragment", [
    (["init", "--preset", "huge", "--out", "/tmp/x"], "unknown preset 'huge'"),
    (["eval", "/nonexistent/model", "--text", "README.md"], "/nonexistent/model"),
    (["compile", "/nonexistent/model", "--out", "/tmp/x"], "/nonexistent/model"),
    (["ir", "/tmp"], "not a build directory"),
    (["verify", "/nonexistent/build"], "no such model or build directory"),
])
def test_bad_input_gives_message_and_exit_1(args, fragment):
    r = run(*args, ok=False)
    assert r.exit_code == 1 and fragment in r.output, r.output
    assert "Traceback" not in r.output


def test_eval_missing_text_file(build):
    r = run("eval", build / "m", "--text", build / "nope.txt", ok=False)
    assert r.exit_code == 1 and "nope.txt" in r.output and "not found" in r.output


def test_bad_site_bits(build, tmp_path):
    r = run("quantize", build / "m", "--out", tmp_path / "q", "--site-bits", "r12", ok=False)
    assert r.exit_code == 1 and "SITE=BITS" in r.output
    r = run("quantize", build / "m", "--out", tmp_path / "q", "--act-bits", "40", ok=False)
    assert r.exit_code == 1 and "act_bits" in r.output


def test_compile_on_truncated_checkpoint(build, tmp_path):
    import shutil

    m = tmp_path / "m"
    shutil.copytree(build / "m", m)
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 3])
    r = run("compile", m, "--out", tmp_path / "b", ok=False)
    assert r.exit_code == 1 and "model.safetensors" in r.output


def test_error_text_with_brackets_is_printed_verbatim(build, tmp_path):
    """Messages carry ranges like [0, 256); they must not be eaten as terminal markup."""
    r = run("quantize", build / "m", "--out", tmp_path / "q", "--state-bits", "40", ok=False)
    assert r.exit_code == 1 and "[8, 24]" in r.output


def test_estimate_includes_cost_figures(tmp_path):
    js = json.loads(run("estimate", "--preset", "tiny", "--prompt-len", "10", "--gen-len", "5", "--json").stdout)
    c = js["cost"]
    assert js["summary"]["cores"] > 0 if "summary" in js else True
    gen = c["throughput"]
    assert any(v > 0 for k, v in gen.items() if k.endswith("tokens_per_s") and isinstance(v, (int, float)))
    assert "params" in c and c["latency"]
    r = run("estimate", "--preset", "tiny", "--prompt-len", "0", ok=False)
    assert r.exit_code == 1 and "prompt length" in r.output
    r = run("estimate", "--preset", "tiny", "--cost-params", tmp_path / "none.json", ok=False)
    assert r.exit_code == 1 and "none.json" in r.output


def test_ablate_rows_and_json(build):
    """One row per variant, the paper's scheme first; each row's figures are those `eval` gives for it."""
    args = ["ablate", build / "m", "--text", ROOT / "README.md", "--max-tokens", "60", "--json"]
    js = json.loads(run(*args).stdout)
    rows = {r["config"]: r for r in js["rows"]}
    assert js["rows"][0]["config"].startswith("paper") and js["rows"][0]["gain_vs_paper"] == 0
    assert "o at 12 bits" in rows and "h at 12 bits" not in rows and len(js["rows"]) == 8 + 24
    ev = json.loads(run("eval", build / "m", "--text", ROOT / "README.md", "--max-tokens", "60",
                        "--uniform", "--json").stdout)
    assert ev["total"]["fixed_bits_per_token"] == js["rows"][0]["fixed_bits_per_token"]
    assert ev["quantization"]["min_site_bits"] == {}
    ev12 = json.loads(run("eval", build / "m", "--text", ROOT / "README.md", "--max-tokens", "60", "--json").stdout)
    assert ev12["total"]["fixed_bits_per_token"] == rows["mflc default (o 12, z 12 bits)"]["fixed_bits_per_token"]
    assert ev12["quantization"]["min_site_bits"] == {"o": 12, "z": 12}


def test_ablate_rejects_bad_width(build):
    r = runner.invoke(app, ["ablate", str(build / "m"), "--text", str(ROOT / "README.md"), "--wide", "30"])
    assert r.exit_code == 1 and "--wide 30" in r.output


def test_sites_table_and_json(build):
    r = run("sites", build / "m", "--text", ROOT / "README.md", "--max-tokens", "200")
    assert "SQNR dB" in r.output and "crest" in r.output
    js = json.loads(run("sites", build / "m", "--text", ROOT / "README.md", "--max-tokens", "200", "--per-layer",
                        "--json").stdout)
    sq = [row["sqnr_db"] for row in js["rows"]]
    assert sq == sorted(sq) and {row["site"] for row in js["rows"]} >= {"L0.o", "L0.x", "head.in"}
    assert all(row["values"] > 0 and row["crest"] >= 1 for row in js["rows"])
    r = run("sites", build / "m", ok=False)
    assert r.exit_code == 1 and "--text FILE" in r.output
