"""The build as one artifact: atomic writing, the manifest, and every check ``verify`` makes, each shown
to fail on its own kind of damage, also after the manifest's hashes were regenerated."""
import json
import shutil
from pathlib import Path

import pytest

import mflc
from mflc.build import MANIFEST, Build, BuildError

from util import cli_run, rehash_build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("builds")
    for seed in (1, 2):
        cli_run("init", "--preset", "tiny", "--out", d / f"m{seed}", "--seed", str(seed))
        cli_run("compile", d / f"m{seed}", "--out", d / f"b{seed}")
    return d


def copy(builds, tmp_path, name="b1") -> Path:
    dst = tmp_path / name
    shutil.copytree(builds / name, dst)
    return dst


def failed_check(path) -> tuple[str, str]:
    r = cli_run("verify", path, "--tokens", "2", "--json", ok=False)
    assert r.exit_code == 1, r.output
    js = json.loads(r.stdout)
    assert js["ok"] is False
    bad = next(c for c in js["checks"] if not c["ok"])
    return bad["name"], " ".join(bad["problems"])


def edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def retotal(d: dict) -> None:
    """layout.json's totals made consistent with its (edited) cores: what a careful forger does."""
    from mflc.compiler.chip.hardware import KINDS

    d["totals"] = dict(cores=len(d["cores"]), chips=1 + max(c["chip"] for c in d["cores"]),
                       **{k: sum(c["usage"].get(k, 0) for c in d["cores"]) for k in KINDS + ("synapses",)})


def test_fresh_build_passes_every_check(builds):
    js = json.loads(cli_run("verify", builds / "b1", "--tokens", "3", "--json").stdout)
    assert js["ok"] and [c["name"] for c in js["checks"]] == [
        "integrity", "ir validates", "placed IR validates", "layout is legal",
        "placed IR is a partition of the IR", "same source", "bit-exact simulation"]
    m = json.loads((builds / "b1" / MANIFEST).read_text())
    assert m["format"] == "mflc-build" and m["version"] == 1 and m["mflc_version"] == mflc.__version__
    assert len(m["source"]["sha256"]) == 64 and "config.json" in m["source"]["files"]
    assert set(m["files"]) >= {"ir/graph.json", "ir/graph.safetensors", "placed_ir/graph.json", "layout.json",
                               "quant/quant.json", "quant/quant.safetensors"}


def test_builds_of_two_checkpoints_have_different_source_ids(builds):
    a, b = (json.loads((builds / n / MANIFEST).read_text())["source"]["sha256"] for n in ("b1", "b2"))
    assert a != b


# ---- integrity --------------------------------------------------------------------------------------------
def test_any_changed_file_is_named(builds, tmp_path):
    for rel in json.loads((builds / "b1" / MANIFEST).read_text())["files"]:
        b = copy(builds, tmp_path / rel.replace("/", "_"))
        with open(b / rel, "r+b") as f:
            f.seek(0)
            c = f.read(1)
            f.seek(0)
            f.write(bytes([c[0] ^ 1]))
        r = cli_run("verify", b, "--tokens", "1", ok=False)
        assert r.exit_code == 1 and rel in r.output and "SHA-256" in r.output, (rel, r.output)


def test_missing_and_extra_files_are_named(builds, tmp_path):
    b = copy(builds, tmp_path)
    (b / "layout.json").unlink()
    r = cli_run("verify", b, ok=False)
    assert r.exit_code == 1 and "layout.json" in r.output and "missing" in r.output
    b = copy(builds, tmp_path / "x")
    (b / "ir" / "notes.txt").write_text("hi")
    r = cli_run("ir", b, ok=False)
    assert r.exit_code == 1 and "notes.txt" in r.output and "not part of the build" in r.output


def test_half_written_build_is_named_incomplete(builds, tmp_path):
    b = copy(builds, tmp_path)
    (b / MANIFEST).unlink()
    for cmd in (("verify", b), ("ir", b), ("generate", b, "--max-new-tokens", "1")):
        r = cli_run(*cmd, ok=False)
        assert r.exit_code == 1 and "incomplete build" in r.output and MANIFEST in r.output, r.output


def test_other_format_version_asks_for_recompile(builds, tmp_path):
    b = copy(builds, tmp_path)
    edit_json(b / MANIFEST, lambda m: m.update(version=99))
    r = cli_run("verify", b, ok=False)
    assert r.exit_code == 1 and "version 99" in r.output and "recompile" in r.output


# ---- atomic writing -------------------------------------------------------------------------------------------
def test_failed_compile_leaves_the_earlier_build(builds, tmp_path, monkeypatch):
    b = copy(builds, tmp_path)
    before = {p: p.read_bytes() for p in b.rglob("*") if p.is_file()}
    import mflc.compiler.chip.layout as layout_mod

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(layout_mod, "save_layout", boom)
    with pytest.raises(OSError):
        mflc.compile(builds / "m2", out=b)
    assert {p: p.read_bytes() for p in b.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary build left behind"
    Build.load(b)


def test_failed_recompile_keeps_the_old_build_whole(builds, tmp_path):
    b = copy(builds, tmp_path)
    r = cli_run("compile", builds / "m2", "--out", b, "--hw", "neurons_per_core=1", "--system", "oheo_gulch", ok=False)
    assert r.exit_code == 1
    assert json.loads(cli_run("verify", b, "--tokens", "2", "--json").stdout)["ok"]
    assert (json.loads((b / MANIFEST).read_text())["source"]
            == json.loads((builds / "b1" / MANIFEST).read_text())["source"])


def test_recompile_replaces_a_build(builds, tmp_path):
    b = copy(builds, tmp_path)
    build = mflc.compile(builds / "m2", out=b)
    assert build.manifest["source"] == json.loads((builds / "b2" / MANIFEST).read_text())["source"]
    assert Build.load(b).verify(tokens=2).ok


def test_out_that_is_a_file_or_a_foreign_folder_is_refused(builds, tmp_path):
    f = tmp_path / "f"
    f.write_text("precious")
    r = cli_run("compile", builds / "m1", "--out", f, ok=False)
    assert r.exit_code == 1 and "not a directory" in r.output and f.read_text() == "precious"
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    r = cli_run("compile", builds / "m1", "--out", d, ok=False)
    assert r.exit_code == 1 and "not an mflc build" in r.output and (d / "thesis.tex").is_file()


# ---- semantic checks, with the manifest regenerated ------------------------------------------------------
def test_group_moved_to_a_core_that_does_not_exist(builds, tmp_path):
    b = copy(builds, tmp_path)
    edit_json(b / "layout.json", lambda d: d["cores"][0].update(core=500))
    rehash_build(b)
    name, why = failed_check(b)
    assert name == "layout is legal" and "core index 500" in why


def test_group_left_unplaced(builds, tmp_path):
    b = copy(builds, tmp_path)

    def drop(d):
        c = next(c for c in d["cores"] if c["neurons"])
        c["neurons"].pop(0)
        c["usage"] = {}
    edit_json(b / "layout.json", lambda d: (drop(d), retotal(d)))
    rehash_build(b)
    name, why = failed_check(b)
    assert name == "layout is legal" and "not placed" in why


def test_layout_hardware_figure_missing(builds, tmp_path):
    """A figure (or the name) dropped from layout.json's hardware block must not pass for its default
    (found by tests/test_build_fuzz.py)."""
    b = copy(builds, tmp_path)
    edit_json(b / "layout.json", lambda d: d["hardware"].pop("name"))
    rehash_build(b)
    name, why = failed_check(b)
    assert name == "layout is legal" and "hardware profile differs" in why


@pytest.mark.parametrize("damage", ["unplaced", "renamed"])
def test_executors_refuse_a_build_that_verify_refuses(builds, tmp_path, damage):
    """generate and export-lava run the placed IR and layout checks first: a group left unplaced, or a
    group renamed in placed_ir/ (hashes regenerated), is named, never a KeyError in the engine."""
    b = copy(builds, tmp_path)
    if damage == "unplaced":
        edit_json(b / "layout.json", lambda d: next(c for c in d["cores"] if c["neurons"])["neurons"].pop(0))
        want = "layout is legal"
    else:
        def rename(d):
            next(g for g in d["groups"] if g["name"] == "L0.down_in.sq")["name"] = "M0.down_in.sq"
        edit_json(b / "placed_ir" / "graph.json", rename)
        want = "placed IR validates"
    rehash_build(b)
    for args in (("generate", b, "--max-new-tokens", "1"), ("export-lava", b)):
        r = cli_run(*args, ok=False)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
        assert r.exit_code == 1 and want in r.output, (args, r.output)


@pytest.mark.parametrize("rel,edit,check,words", [
    ("layout.json", lambda d: d.pop("totals"), "integrity", "field 'totals' is missing"),
    ("layout.json", lambda d: d["traffic"].update(messages_between_chips=7), "layout is legal", "field 'traffic'"),
    ("layout.json", lambda d: d["graph"].update(depth=3), "layout is legal", "field 'graph'"),
    ("layout.json", lambda d: (d["cores"][0]["usage"].pop("synapse_bits"), retotal(d)), "layout is legal",
     "synapse_bits (none stored"),
    ("layout.json", lambda d: d["cores"][0].pop("usage"), "integrity", "field 'usage' is missing"),
    (MANIFEST, lambda d: d["summary"].update(chips=9), "layout is legal", "field 'summary'"),
    ("quant/quant.json", lambda d: d["config"].pop("architectures"), "integrity", "lacks 'architectures'"),
    ("quant/quant.json", lambda d: d["scalars"].pop("E.L0.g"), "same source", "has no 'E.L0.g'"),
    ("quant/quant.json", lambda d: d["meta"].pop("absmean"), "integrity", "absmean"),
    ("quant/quant.json", lambda d: d["meta"]["absmean"].pop("L1.f"), "integrity", "weight scale 'L1.f' is missing"),
    ("quant/quant.json", lambda d: d["meta"].update(logit_scale=d["meta"]["logit_scale"] * 2), "integrity",
     "meta.logit_scale"),
])
def test_stored_claims_are_recomputed(builds, tmp_path, rel, edit, check, words):
    """Every number a build stores is a claim that verify recomputes or refuses, never a default: found
    missing or changed by tests/test_build_fuzz.py (hashes regenerated)."""
    b = copy(builds, tmp_path)
    edit_json(b / rel, edit)
    rehash_build(b)
    r = cli_run("verify", b, "--tokens", "2", "--json", ok=False)
    assert r.exit_code == 1, r.output
    if check == "integrity":                   # the build cannot even be read: a plain error naming the file
        assert words in r.output and rel in r.output, r.output
        return
    name, why = failed_check(b)
    assert name == check and words in why, (name, why)


def test_core_over_its_synaptic_memory(builds, tmp_path):
    """Limits are recomputed from placed_ir/ against the profile, never read from stored usage: halve the
    synaptic memory in both the manifest and the layout, and the fullest core is named."""
    b = copy(builds, tmp_path)
    lay = json.loads((b / "layout.json").read_text())
    worst = max(c["usage"].get("synapse_bits", 0) for c in lay["cores"])
    assert worst > 0
    for f, key in ((b / "layout.json", "hardware"), (b / MANIFEST, "hardware")):
        edit_json(f, lambda d: d[key].update(synaptic_memory_bits=worst // 2))
    rehash_build(b)
    name, why = failed_check(b)
    assert name == "layout is legal" and "synaptic" in why


def test_stored_usage_is_not_trusted(builds, tmp_path):
    b = copy(builds, tmp_path)

    def lie(d):
        c = next(c for c in d["cores"] if c["usage"].get("synapse_bits"))
        c["usage"]["synapse_bits"] = 1
        retotal(d)
    edit_json(b / "layout.json", lie)
    rehash_build(b)
    name, why = failed_check(b)
    assert name == "layout is legal" and "recomputed" in why


def test_edited_unsplit_ir_weight(builds, tmp_path):
    from safetensors.numpy import load_file, save_file

    b = copy(builds, tmp_path)
    a = load_file(str(b / "ir" / "graph.safetensors"))
    k = next(k for k in sorted(a) if k.endswith("/values") and a[k].size)
    a[k] = a[k].copy()
    a[k][0] = -a[k][0] if a[k][0] else 1
    save_file(a, str(b / "ir" / "graph.safetensors"))
    rehash_build(b)
    name, why = failed_check(b)        # placed_ir/ refers to ir/ for unsplit synapses: the lowering sees it,
    # or first the layout check, when the new value widens the group's stored weight width
    assert (name, "weights differ" in why or "stored usage differs" in why) in (
        ("same source", True), ("layout is legal", True)), (name, why)


def test_quantized_model_of_another_checkpoint(builds, tmp_path):
    b = copy(builds, tmp_path)
    shutil.rmtree(b / "quant")
    shutil.copytree(builds / "b2" / "quant", b / "quant")
    rehash_build(b)
    name, why = failed_check(b)
    assert name == "same source" and "lowering of quant/" in why


def test_whole_ir_of_another_checkpoint(builds, tmp_path):
    b = copy(builds, tmp_path)
    for part in ("ir", "placed_ir"):
        shutil.rmtree(b / part)
        shutil.copytree(builds / "b2" / part, b / part)
    rehash_build(b)
    name, _ = failed_check(b)
    assert name in ("same source", "layout is legal")


def test_changed_opcode_is_an_ir_problem(builds, tmp_path):
    b = copy(builds, tmp_path)

    def swap(h):
        g = next(g for g in h["groups"] if any(ins[0] == "square" for ins in g["program"]))
        ins = next(ins for ins in g["program"] if ins[0] == "square")
        ins[0] = "copy"
    for part in ("ir", "placed_ir"):
        edit_json(b / part / "graph.json", swap)
    rehash_build(b)
    r = cli_run("verify", b, "--tokens", "2", "--json", ok=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    js = json.loads(r.stdout)
    assert js["failed_check"] in ("ir validates", "same source")


# ---- the API ------------------------------------------------------------------------------------------------
def test_readme_api_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("/tmp/b", str(tmp_path / "b")), "README.md", "exec"), {})


def test_estimate_reads_a_build_only_when_whole(builds, tmp_path):
    js = json.loads(cli_run("estimate", builds / "b1", "--json").stdout)
    assert js["cores"] >= 1
    b = copy(builds, tmp_path)
    (b / "quant" / "quant.json").write_text("{}")
    r = cli_run("estimate", b, ok=False)
    assert r.exit_code == 1 and "quant/quant.json" in r.output
