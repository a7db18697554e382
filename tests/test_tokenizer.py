"""Subword models: a checkpoint with a Hugging Face tokenizer.json beside it (as the released MatMul-free
LMs ship) is evaluated, compiled, verified and sampled through that tokenizer, which travels into the
build; bad tokenizers and text give one message and exit 1."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from mflc.compiler.model.checkpoint import save_checkpoint
from mflc.compiler.model.config import ModelConfig
from mflc.compiler.model.tokenizer import ByteTokenizer, HFTokenizer, tokenizer_for

from util import cli_run, random_weights

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT / "tools" / "data" / "heldout_sample.txt").read_text()


run = cli_run


def make_tokenizer(vocab: int, family: str = "byte-level") -> Tokenizer:
    """A small BPE trained on Python text, of one of the two families released LMs use, with <unk>, <s>,
    </s> and a post-processor that prepends <s>:
    * "byte-level": GPT-2 style, every byte mapped to a printable character before merging;
    * "llama": the Llama/Mistral layout (what the released MMfreeLM ships): spaces become "▁" in a
      normaliser that also prepends one, and characters outside the vocabulary fall back to <0xNN>
      byte tokens."""
    if family == "byte-level":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator([CORPUS], trainers.BpeTrainer(
            vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    else:
        base = Tokenizer(models.BPE())
        base.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        base.train_from_iterator([CORPUS], trainers.BpeTrainer(vocab_size=vocab - 259, show_progress=False))
        js = json.loads(base.to_str())
        ids = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{i:02X}>": 3 + i for i in range(256)}
        for t, _ in sorted(js["model"]["vocab"].items(), key=lambda kv: kv[1]):
            ids.setdefault(t, len(ids))
        js["model"].update(vocab=ids, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
        tok = Tokenizer.from_str(json.dumps(js))
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


@pytest.fixture(scope="module", params=["byte-level", "llama"])
def subword(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("subword")
    tok = make_tokenizer(400 if request.param == "byte-level" else 700, request.param)
    n = tok.get_vocab_size()
    cfg = ModelConfig.from_dict(dict(vocab_size=n + 12, hidden_size=16, num_hidden_layers=1, intermediate_size=24))
    save_checkpoint(d / "m", cfg, random_weights(cfg, 5))
    tok.save(str(d / "m" / "tokenizer.json"))
    (d / "m" / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    (d / "text.txt").write_text(CORPUS[:3000])
    return d, tok


def test_byte_offsets_count_utf8_bytes(subword):
    d, tok = subword
    t = tokenizer_for(d / "m", tok.get_vocab_size() + 12)
    s = "héllo €uro 😀 def x():\n"
    ids, ends = t.encode_spans(s)
    assert len(ids) == len(ends) and ends[0] == 0 and ends[-1] == len(s.encode("utf-8"))
    assert all(ends[i] <= ends[i + 1] for i in range(len(ends) - 1))
    for (a, b), e in zip(tok.encode(s).offsets, ends):
        assert e == len(s[:b].encode("utf-8"))              # special tokens: (0, 0), so 0
    ids_b, ends_b = ByteTokenizer(256).encode_spans(s)
    assert ends_b.tolist() == list(range(1, len(s.encode()) + 1))


@pytest.mark.parametrize("family", ["byte-level", "llama"])
@settings(max_examples=80, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581"), max_size=60))
def test_round_trip_and_byte_offsets_on_any_text(tmp_path_factory, family, text):
    """decode(encode(s)) == s and the byte offsets climb to len(s in UTF-8), for any text: characters
    outside the little vocabulary take the byte fallback (llama) or byte characters (byte-level)."""
    t = _hf(tmp_path_factory, family)
    ids, ends = t.encode_spans(text)
    assert t.decode(ids) == text
    assert ends[0] == 0 and ends[-1] == len(text.encode("utf-8")) and bool(np.all(np.diff(ends) >= 0))


_HF: dict = {}


def _hf(tmp_path_factory, family: str) -> HFTokenizer:
    if family not in _HF:
        d = tmp_path_factory.mktemp(f"tok-{family}")
        make_tokenizer(400 if family == "byte-level" else 700, family).save(str(d / "tokenizer.json"))
        _HF[family] = HFTokenizer(d / "tokenizer.json", 1000)
    return _HF[family]


def test_tokenizer_for_reads_tokenizer_json(subword):
    d, tok = subword
    t = tokenizer_for(d / "m", tok.get_vocab_size() + 12)
    assert isinstance(t, HFTokenizer)
    ids = t.encode(b"def handler(self):\n    return 1\n")
    assert ids[0] == tok.token_to_id("<s>") and len(ids) < 20          # BOS, then merged subwords
    assert t.decode(ids) == "def handler(self):\n    return 1\n"
    assert t.decode(ids + [t.n, t.n + 5]) == t.decode(ids)               # padded-vocabulary ids have no spelling
    assert t.start_tokens() == [tok.token_to_id("<s>")]
    assert isinstance(tokenizer_for(d, 300), ByteTokenizer)              # no tokenizer.json: bytes


def test_eval_compile_verify_generate_use_it(subword, tmp_path):
    d, tok = subword
    e = json.loads(run("eval", d / "m", "--text", d / "text.txt", "--max-tokens", "200", "--json").stdout)
    assert e["unit"] == "bits per token" and e["total"]["tokens"] == 199
    # bits per byte: all bits of the 199 predicted tokens over the bytes they cover (the text up to the
    # end of token 200; BOS covers none)
    enc = tok.encode(CORPUS[:3000])
    covered = len(CORPUS[:enc.offsets[199][1]].encode("utf-8"))
    tot = e["total"]
    assert tot["bytes"] == covered and covered > 199
    assert tot["fixed_bits_per_byte"] == pytest.approx(tot["fixed_bits_per_token"] * 199 / covered, rel=1e-12)
    assert e["calibration"].startswith("first 200 tokens")        # calibrated on the evaluated (tokenized) text
    table = run("eval", d / "m", "--text", d / "text.txt", "--max-tokens", "200").output
    assert "bits per token" in table and "200 tokens each" in table and f"the {covered:,} bytes" in table

    b = tmp_path / "b"
    run("compile", d / "m", "--out", b)
    assert (b / "quant" / "tokenizer.json").read_bytes() == (d / "m" / "tokenizer.json").read_bytes()
    assert (b / "quant" / "tokenizer_config.json").is_file()
    v = json.loads(run("verify", b, "--text", d / "text.txt", "--tokens", "10", "--json").stdout)
    assert v["ok"] and v["tokens"] == 10
    g = json.loads(run("generate", b, "--prompt", "import ", "--max-new-tokens", "6", "--json").stdout)
    assert g["prompt_tokens"] == len(tok.encode("import ").ids) and g["new_tokens"] == 6
    ids = tok.encode("import ").ids
    assert g["text"] == tok.decode(ids + g["tokens"], skip_special_tokens=True)[len("import "):]

    q = tmp_path / "q"
    run("quantize", d / "m", "--out", q)
    assert (q / "tokenizer.json").is_file()


def test_tokenizer_larger_than_the_vocabulary(subword, tmp_path):
    d, tok = subword
    m = tmp_path / "m"
    cfg = ModelConfig.from_dict(dict(vocab_size=300, hidden_size=8, num_hidden_layers=1, intermediate_size=8))
    save_checkpoint(m, cfg, random_weights(cfg, 0))
    tok.save(str(m / "tokenizer.json"))
    r = run("eval", m, "--text", d / "text.txt", ok=False)
    assert r.exit_code == 1 and f"{tok.get_vocab_size():,} tokens" in r.output and "'vocab_size'" in r.output


def test_malformed_tokenizer_json(subword, tmp_path):
    d, _ = subword
    m = tmp_path / "m"
    cfg = ModelConfig.from_dict(dict(vocab_size=300, hidden_size=8, num_hidden_layers=1, intermediate_size=8))
    save_checkpoint(m, cfg, random_weights(cfg, 0))
    (m / "tokenizer.json").write_text('{"model": "nonsense"}')
    r = run("eval", m, "--text", d / "text.txt", ok=False)
    assert r.exit_code == 1 and "tokenizer.json: not a valid tokenizer.json" in r.output


def test_text_that_is_not_utf8(subword, tmp_path):
    d, _ = subword
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"def f():\n    return '\xff\xfe'\n")
    r = run("eval", d / "m", "--text", bad, ok=False)
    assert r.exit_code == 1 and f"{bad}: not UTF-8 text (byte 21: invalid start byte)" in r.output


def test_small_vocabulary_without_tokenizer_says_what_is_missing(tmp_path):
    m = tmp_path / "m"
    cfg = ModelConfig.from_dict(dict(vocab_size=100, hidden_size=8, num_hidden_layers=1, intermediate_size=8))
    save_checkpoint(m, cfg, random_weights(cfg, 0))
    (tmp_path / "t.txt").write_text("hello world")
    r = run("eval", m, "--text", tmp_path / "t.txt", ok=False)
    assert r.exit_code == 1 and "vocab_size >= 256" in r.output and "tokenizer.json" in r.output


def test_continuation_keeps_its_leading_space_and_split_characters(tmp_path_factory):
    """A Llama decoder strips the leading space of what it decodes and needs every byte of a character:
    generate's text is the whole decode minus the prompt's, never the new tokens decoded alone."""
    t = _hf(tmp_path_factory, "llama")
    prompt = t.encode("def")
    new = [t.tok.token_to_id(x) for x in ["\u2581", "f", "o", "o", "(", "<0xC3>", "<0xA9>", ")"]]
    assert t.decode(new) != " foo(é)"                       # decoded alone: the space is gone
    assert t.decode_continuation(prompt, new) == " foo(é)"
    assert ByteTokenizer(256).decode_continuation([100], list(b" x")) == " x"
