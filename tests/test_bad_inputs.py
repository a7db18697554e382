"""Bad input, one case per test: one message naming the file, tensor, field, limit or value, and exit status 1
(never a traceback)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from util import cli_run

run = cli_run


def bad(*args, fragments=()):
    """Run the CLI expecting a clean failure: exit 1, no traceback, every fragment in the message."""
    r = run(*args, ok=False)
    assert r.exit_code == 1, (r.output, r.exception)
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for f in fragments:
        assert str(f) in r.output, (f, r.output)
    return r


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    run("init", "--preset", "tiny", "--out", d / "m", "--seed", "1")
    run("quantize", d / "m", "--out", d / "q")
    return d


# ---- 1. outputs that cannot be written -------------------------------------------------------------------
def test_quantize_out_is_an_existing_file(models, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    bad("quantize", models / "m", "--out", f, fragments=[str(f), "not a directory"])
    assert f.read_text() == "x"


def test_quantize_out_under_a_file(models, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    bad("quantize", models / "m", "--out", f / "q", fragments=[str(f), "is a file"])


def test_export_lava_out_is_a_directory(models, tmp_path):
    bad("export-lava", models / "q", "--out", tmp_path, fragments=[str(tmp_path), "is a directory"])


def test_export_lava_out_under_a_file(models, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    bad("export-lava", models / "q", "--out", f / "x.json", fragments=[str(f), "is a file"])


# ---- 6. option ranges ------------------------------------------------------------------------------------
def test_verify_tokens_above_limit(models):
    bad("verify", models / "q", "--tokens", "1000000000", fragments=["--tokens", "MAX_VERIFY_TOKENS", "1,000,000"])


def test_verify_negative_seed(models):
    bad("verify", models / "q", "--seed", "-1", fragments=["--seed", ">= 0", "-1"])


@pytest.mark.parametrize("t", ["-1", "nan", "inf"])
def test_generate_bad_temperature(models, t):
    bad("generate", models / "q", "--temperature", t, fragments=["--temperature", "finite", t])


def test_generate_max_new_tokens_limit(models):
    bad("generate", models / "q", "--max-new-tokens", "1000000000", fragments=["--max-new-tokens", "MAX_NEW_TOKENS"])
    bad("generate", models / "q", "--max-new-tokens", "-1", fragments=["--max-new-tokens", ">= 0"])


def test_quantize_negative_calib_tokens(models, tmp_path):
    bad("quantize", models / "m", "--out", tmp_path / "q", "--calib-tokens", "-5", fragments=["--calib-tokens", ">= 1", "-5"])


def test_compile_negative_calib_tokens(models, tmp_path):
    bad("compile", models / "m", "--out", tmp_path / "b", "--calib-tokens", "-5", fragments=["--calib-tokens", ">= 1", "-5"])


# ---- 3. a damaged IR (graph.json / graph.safetensors) ----------------------------------------------------
@pytest.fixture(scope="module")
def build(models):
    run("compile", models / "m", "--out", models / "b")
    return models / "b"


def damaged_ir(build, tmp_path, head=None, arrays=None):
    """A copy of the build with its unplaced IR's graph.json and/or arrays edited (``mflc ir`` reads it)
    and the manifest's hashes fixed up, so the IR reader itself must name the damage."""
    from safetensors.numpy import load_file, save_file

    from util import rehash_build

    d = tmp_path / "b"
    shutil.copytree(build, d)
    if head is not None:
        h = json.loads((d / "ir" / "graph.json").read_text())
        head(h)
        (d / "ir" / "graph.json").write_text(json.dumps(h))
    if arrays is not None:
        a = load_file(str(d / "ir" / "graph.safetensors"))
        arrays(a)
        save_file(a, str(d / "ir" / "graph.safetensors"))
    rehash_build(d)
    return d


def _first(a, suffix):
    return next(k for k in sorted(a) if k.endswith(suffix))


IR_HEAD_CASES = {
    "no_groups": (lambda h: h.pop("groups"), "groups: missing"),
    "groups_not_a_list": (lambda h: h.__setitem__("groups", {}), "groups: expected an array of objects, got {}"),
    "instr_is_an_object": (lambda h: h["groups"][3]["program"].__setitem__(0, {"op": "add"}),
                           "groups[3].program[0]: expected [op, out, args, imm]"),
    "size_is_a_string": (lambda h: h["groups"][2].__setitem__("size", "7"), "groups[2].size: expected an integer, got '7'"),
    "group_without_ports": (lambda h: h["groups"][1].pop("ports"), "groups[1].ports: missing"),
    "synapse_without_delay": (lambda h: h["synapses"][2].pop("delay"), "synapses[2].delay: missing"),
    "synapse_shape_of_three": (lambda h: h["synapses"][0].__setitem__("shape", [1, 2, 3]),
                               "synapses[0].shape: expected [dst size, src size]"),
    "input_unknown_key": (lambda h: h["inputs"][0].__setitem__("colour", 1), "inputs[0]: unknown key(s) 'colour'"),
    "state_not_a_pair": (lambda h: h["state"].__setitem__("L0.h", "L0.mlgru"), "state.L0.h: expected [group, register]"),
    "imm_is_a_list": (lambda h: next(i for g in h["groups"] for i in g["program"] if i[3])[3].update(x=[1]),
                      "expected an integer or a string, got [1]"),
    "input_table_unknown": (lambda h: h["inputs"][0].__setitem__("table", "nope"), "inputs[0].table: 'nope'"),
}


@pytest.mark.parametrize("case", sorted(IR_HEAD_CASES))
def test_damaged_graph_json(build, tmp_path, case):
    edit, fragment = IR_HEAD_CASES[case]
    d = damaged_ir(build, tmp_path, head=edit)
    bad("ir", d, fragments=["graph.json", fragment])


def _set(a, suffix, f):
    k = _first(a, suffix)
    a[k] = f(a[k])


IR_ARRAY_CASES = {
    "values_int32": (lambda a: _set(a, "/values", lambda v: v.astype(np.int32)), "/values': dtype int32, expected int8"),
    "values_short": (lambda a: _set(a, "/values", lambda v: v[:-1]), "/values': shape"),
    "indptr_decreasing": (lambda a: _set(a, "/indptr", lambda v: v[::-1].copy()), "/indptr': not a CSR row pointer"),
    "param_float": (lambda a: _set(a, "/param/gain", lambda v: v.astype(np.float32)), "dtype float32, expected an integer dtype"),
    "param_missing": (lambda a: a.pop(_first(a, "/param/gain")), "is missing (named by graph.json: groups["),
    "host_tensor_1d": (lambda a: _set(a, "host/embedding", lambda v: v[0].copy()), "'host/embedding': shape"),
}


@pytest.mark.parametrize("case", sorted(IR_ARRAY_CASES))
def test_damaged_graph_arrays(build, tmp_path, case):
    edit, fragment = IR_ARRAY_CASES[case]
    d = damaged_ir(build, tmp_path, arrays=edit)
    bad("ir", d, fragments=["graph.safetensors", fragment])


# ---- 4. a damaged quantized model (quant.json / quant.safetensors) ---------------------------------------
def damaged_quant(models, tmp_path, head=None, tensors=None):
    from safetensors.numpy import load_file, save_file

    d = tmp_path / "q"
    shutil.copytree(models / "q", d)
    if head is not None:
        h = json.loads((d / "quant.json").read_text())
        head(h)
        (d / "quant.json").write_text(json.dumps(h))
    if tensors is not None:
        a = load_file(str(d / "quant.safetensors"))
        tensors(a)
        save_file(a, str(d / "quant.safetensors"))
    return d


def _retype(h, name, dtype):
    h["tensor_dtypes"][name] = dtype


QUANT_HEAD_CASES = {
    "no_tensor_dtypes": (lambda h: h.pop("tensor_dtypes"), "tensor_dtypes: missing"),
    "no_sites": (lambda h: h.pop("sites"), "sites: missing"),
    "sites_a_list": (lambda h: h.__setitem__("sites", []), "sites: expected an object of"),
    "site_bits_a_string": (lambda h: h["sites"]["L0.f"].__setitem__("bits", "8"), "sites.L0.f.bits: expected an integer, got '8'"),
    "scalar_a_float": (lambda h: h["scalars"].__setitem__("E.L0.x", 1.5), "scalars.E.L0.x: expected an integer, got 1.5"),
    "unknown_option": (lambda h: h["options"].__setitem__("colour", 1), "options: unknown key(s) 'colour'"),
    "option_out_of_range": (lambda h: h["options"].__setitem__("state_bits", 40), "options: quantization option state_bits = 40"),
    "config_hidden_size_zero": (lambda h: h["config"].__setitem__("hidden_size", 0), "config: field 'hidden_size' must be >= 1"),
    "config_not_an_object": (lambda h: h.__setitem__("config", [1]), "config: expected an object, got [1]"),
    "no_logit_scale": (lambda h: h["meta"].pop("logit_scale"), "meta.logit_scale: missing"),
    "tensor_not_listed": (lambda h: h["tensor_dtypes"].pop("L0.B"), "tensor 'L0.B' is missing (the config and options need it)"),
    "dtype_mismatch_json": (lambda h: _retype(h, "L0.B", "float32"), "tensor_dtypes.L0.B: 'float32', but quant.safetensors holds int64"),
    "config_larger_than_tensors": (lambda h: h["config"].__setitem__("vocab_size", 300),  # 2-bit head weights
                                   "tensor 'W.head': 2048 byte(s) of uint8, expected 2400 uint8 for 9600 weights"),
}


@pytest.mark.parametrize("case", sorted(QUANT_HEAD_CASES))
def test_damaged_quant_json(models, tmp_path, case):
    edit, fragment = QUANT_HEAD_CASES[case]
    bad("verify", damaged_quant(models, tmp_path, head=edit), "--tokens", "1", fragments=["quant.json" if "tensor '" not in fragment else "quant", fragment])


def test_quant_tensor_of_wrong_shape(models, tmp_path):
    def edit(a):                      # W.* are stored at 2 bits per weight: one byte short is 4 weights short
        a["W.L1.gate"] = a["W.L1.gate"][:-1].copy()
    d = damaged_quant(models, tmp_path, tensors=edit)
    bad("verify", d, "--tokens", "1", fragments=["quant.safetensors", "tensor 'W.L1.gate'", "1023 byte(s)",
                                                 "expected 1024 uint8 for 4096 weights"])

    def edit_table(a):                # G.* are stored at their narrowest integer type
        a["G.L0.gn"] = a["G.L0.gn"][:-1].copy()
    d = damaged_quant(models, tmp_path / "g", tensors=edit_table)
    bad("verify", d, "--tokens", "1", fragments=["quant.safetensors", "tensor 'G.L0.gn'", "shape [31], expected [32]"])


def test_quant_tensor_of_wrong_dtype(models, tmp_path):
    def edit(a):
        a["G.L0.gn"] = a["G.L0.gn"].astype(np.float32)

    def head(h):
        h["tensor_dtypes"]["G.L0.gn"] = "float32"
    d = damaged_quant(models, tmp_path, head=head, tensors=edit)
    bad("verify", d, "--tokens", "1", fragments=["quant.safetensors", "tensor 'G.L0.gn'", "dtype float32, expected int16"])


def test_quant_lut_of_wrong_length(models, tmp_path):
    d = damaged_quant(models, tmp_path, head=lambda h: h["sites"]["L0.f"].__setitem__("bits", 9))
    bad("verify", d, "--tokens", "1", fragments=["tensor 'L0.lut.sig_f'", "shape [256], expected [512]"])


# ---- 5. a prompt the model's subword vocabulary cannot encode --------------------------------------------
def test_prompt_the_tokenizer_cannot_encode(models, tmp_path):
    from tokenizers import Tokenizer, models as tmodels, pre_tokenizers

    d = tmp_path / "q"
    shutil.copytree(models / "q", d)
    tok = Tokenizer(tmodels.WordLevel({"def": 0, "x": 1}, unk_token="[UNK]"))   # no [UNK] in the vocabulary
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    run("generate", d, "--prompt", "def x", "--max-new-tokens", "1")
    bad("generate", d, "--prompt", "def y", "--max-new-tokens", "1",
        fragments=["--prompt 'def y'", str(d / "tokenizer.json"), "cannot encode", "Missing [UNK]"])


# ---- 7. estimate --cost-params FILE that is not a cost-parameter object ----------------------------------
COST_CASES = {
    "not_utf8": (b"\xff\xfe{}", "not UTF-8 text"),
    "not_json": (b"{", "not valid JSON"),
    "not_an_object": (b"[1]", "expected a JSON object, got list"),
    "unknown_key": (b'{"t_synapse": 1}', "unknown cost parameter 't_synapse'; known: t_synop"),
    "unknown_gpu_key": (b'{"gpu": {"watts": 1}}', "unknown GPU parameter 'gpu.watts'"),
    "string_value": (b'{"t_synop": "fast"}', "cost parameter 't_synop': expected a number"),
    "string_in_object": (b'{"e_synop": {"value": "a"}}', "cost parameter 'e_synop': 'value' must be a number, got 'a'"),
    "negative_value": (b'{"e_synop": -1}', "cost parameter 'e_synop': value -1.0 must be finite and >= 0"),
}


@pytest.mark.parametrize("case", sorted(COST_CASES))
def test_bad_cost_params(tmp_path, case):
    data, fragment = COST_CASES[case]
    f = tmp_path / "cost.json"
    f.write_bytes(data)
    bad("estimate", "--preset", "tiny", "--cost-params", f, fragments=[f"cost parameter file {f}", fragment])


# ---- 2. estimate of a configuration too big to lay out in this machine's memory --------------------------
def test_estimate_refuses_a_graph_larger_than_memory(models, tmp_path):
    d = tmp_path / "huge"
    d.mkdir()
    cfg = json.loads((models / "m" / "config.json").read_text())
    cfg["hidden_size"] = 1_000_000_000
    (d / "config.json").write_text(json.dumps(cfg))
    for extra in ((), ("--density", "0.5")):
        bad("estimate", d, *extra, fragments=[str(d / "config.json"), "hidden_size 1,000,000,000", "neurons",
                                              "GiB", "of RAM (os.sysconf SC_PHYS_PAGES)"])


def test_skeleton_memory_check_counts_neurons_exactly_and_passes_real_presets():
    from mflc.compiler.model.config import ModelConfig, preset
    from mflc.compiler.model.skeleton import check_skeleton_memory, skeleton_graph, skeleton_neurons
    from mflc.ir.errors import ConfigError

    for raw in (dict(vocab_size=40, hidden_size=8, num_hidden_layers=1, intermediate_size=16),
                dict(vocab_size=70, hidden_size=12, num_hidden_layers=3, expand_ratio=2, intermediate_size=40,
                     use_lower_bound=False)):
        cfg = ModelConfig.from_dict(raw)
        assert skeleton_neurons(cfg) == skeleton_graph(cfg).totals()["neurons"]
    assert skeleton_neurons(preset("2.7B")) == 2_183_138          # `mflc estimate --preset 2.7B --json`: graph.neurons
    for p in ("370M", "1.3B", "2.7B"):
        assert check_skeleton_memory(preset(p), ram_bytes=8 << 30) < 8 << 30
    with pytest.raises(ConfigError, match="more than the limit"):
        check_skeleton_memory(preset("2.7B"), ram_bytes=1 << 30)
