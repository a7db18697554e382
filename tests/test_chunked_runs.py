"""A run in pieces equals one run: every executor's results stay valid after the next run (no executor
may hand out views of buffers it reuses), which eval's chunked runs rely on."""
import numpy as np
import pytest

from mflc import executors
from mflc.compiler.model.int_model import IntModel


@pytest.mark.parametrize("name", ["fast", "sequence", "engine", "int-model"])
def test_chunked_run_equals_the_integer_model(tiny_qm, name):
    toks = np.random.default_rng(5).integers(0, tiny_qm.cfg.vocab_size, 50).tolist()
    want, _ = IntModel(tiny_qm).forward(toks)
    ex = executors.create(name, qm=tiny_qm)
    parts = [ex.run(toks[a:a + 7]) for a in range(0, len(toks), 7)]      # kept while later pieces run
    got = np.concatenate([p.outputs["logits"] for p in parts])
    assert np.array_equal(got, want)
    ex.reset()
    assert np.array_equal(executors.run_in_chunks(ex, toks, chunk=9).outputs["logits"], want)


def test_generate_gives_the_engines_continuation_for_long_and_short_prompts():
    """`mflc generate` (the fast executor, which may ingest the prompt whole-sequence) continues a prompt
    exactly as the token-by-token engine does."""
    import json

    from util import cli_run

    long_prompt = ("the chip runs the model one token at a time " * 8)[:300]
    for prompt in (long_prompt, "def "):
        got = [json.loads(cli_run("generate", "--prompt", prompt, "--max-new-tokens", "6", "--engine", e, "--json").stdout)
               for e in ("fast", "engine")]
        assert got[0]["tokens"] == got[1]["tokens"] and got[0]["prompt_tokens"] == len(prompt)


def test_verify_stepwise_runs_both_sides_token_by_token(tmp_path):
    """`mflc verify --stepwise` takes the token-by-token path (IntModel.step and the engine) and agrees;
    it is refused for executors it does not apply to, naming the option."""
    import json

    from util import cli_run

    cli_run("init", "--preset", "tiny", "--out", tmp_path / "m")
    cli_run("compile", tmp_path / "m", "--out", tmp_path / "b")
    for args in ([tmp_path / "b"], [tmp_path / "m"]):
        js = json.loads(cli_run("verify", *args, "--tokens", "5", "--stepwise", "--json").stdout)
        assert js["ok"] and js["stepwise"] and js["tokens"] == 5
    js = json.loads(cli_run("verify", tmp_path / "b", "--tokens", "3", "--sequences", "2", "--stepwise", "--json").stdout)
    assert js["ok"] and len(js["sequences"]) == 2
    r = cli_run("verify", tmp_path / "b", "--engine", "fast", "--stepwise", ok=False)
    assert r.exit_code == 1 and "--stepwise applies to the engine and sequence executors" in r.output
