"""Figures quoted in docs/ come from commands a test runs: each quoted table lies between markers
``<!-- generated: NAME -->`` and ``<!-- /generated -->`` and must equal what its generator below makes from
the tool's output today (on failure the message shows the table to paste)."""
import json
import re
from pathlib import Path

import pytest

from util import cli_run

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _block(doc: str, name: str) -> str:
    m = re.search(rf"<!-- generated: {re.escape(name)} -->\n(.*?)<!-- /generated -->", (DOCS / doc).read_text(), re.S)
    assert m, f"docs/{doc}: no generated block {name!r}"
    return m.group(1)


def _g(x: float) -> str:
    return f"{x:,.3g}" if x < 1000 else f"{x:,.0f}"


def estimate_370m_table(js: dict) -> str:
    """The 370M's headline estimate under the default profile, as docs/estimates.md quotes it."""
    c = js["cost"]
    a, t, e = c["activity_per_token"], c["time"], c["energy"]
    msgs = a["msgs_on_core"] + a["msgs_on_chip"] + a["msgs_between_chips"]
    rows = [("profile", js["hardware"]["name"]),
            ("layout", f"{js['cores']:,} cores on {js['chips']} chips, {js['steps_per_token']} pipeline steps per token"),
            ("activity per token (assumed rates)", f"{a['synops']:.3g} synaptic ops, {a['neuron_updates']:.3g} neuron "
             f"updates, {msgs:.3g} messages ({a['msgs_between_chips']:.3g} between chips)"),
            ("generation", f"{_g(t['generation_token_s'] * 1e3)} ms/token = "
             f"{_g(c['throughput']['generation_tokens_per_s'])} tokens/s"),
            ("prefill (pipelined)", f"{_g(c['throughput']['prefill_tokens_per_s'])} tokens/s"),
            ("time to first token, 500-token prompt", f"{_g(c['latency']['ttft_s'] * 1e3)} ms"),
            ("energy per token", f"{_g(e['generation_per_token_J'] * 1e3)} mJ in generation, "
             f"{_g(e['prefill_per_token_J'] * 1e3)} mJ in prefill (static {_g(e['static_power_W'])} W)")]
    for b in c["gpu_baselines"]:
        adv = b["loihi_advantage"]
        rows.append((f"vs {b['model']} roofline on {b['gpu']}",
                     f"generation {adv['generation_throughput_x']:.2g}x, energy {adv['generation_energy_x']:.2g}x, "
                     f"TTFT {adv['ttft_x']:.2g}x, prefill {adv['prefill_throughput_x']:.2g}x (> 1 favours Loihi)"))
    return "| figure | estimate |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


@pytest.mark.slow
def test_estimates_md_370m_table_is_what_the_tool_prints():
    js = json.loads(cli_run("estimate", "--preset", "370M", "--json", "--no-range").stdout)
    want = estimate_370m_table(js)
    assert _block("estimates.md", "estimate-370m") == want, "\n" + want
