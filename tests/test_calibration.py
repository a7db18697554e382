"""The loihi2-lava profile against Intel's compiler: the published layers read from the NetX files, their
SynMem units within 5 % and their core counts (or the documented difference), the fit's error on layers it
never saw, and the NetX reader's refusals."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mflc.api import estimate_netx
from mflc.compiler.chip import calibration as C
from mflc.compiler.chip.hardware import PROFILES, axon_list_units
from mflc.compiler.model.netx import NetxError, integer_weights, read_netx

from util import cli_run

import os

# the published networks (lava-dl NetX files, BSD-3-Clause) beside the checkout, as the project keeps them;
# $MFLC_LAVA_DL_DATA points elsewhere
_CANDIDATES = [os.environ.get("MFLC_LAVA_DL_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data" / "lava-dl",
               Path("/work/shared/data/lava-dl")]
DATA = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "oxford.net").is_file()), Path(_CANDIDATES[1]))
pytestmark = pytest.mark.skipif(not (DATA / "oxford.net").is_file(), reason=f"no lava-dl networks at {DATA}")
LAVA = PROFILES["loihi2-lava"]
# the one published layer whose core count the model does not reproduce, and why (docs/estimates.md)
CORE_DIFFERENCES = {("oxford.net", 0): "2 cores of 128 neurons fit 12,000 units each (8,100 by the compiler's own "
                                       "allocation); the compiler used 3: another limit it did not print"}


@pytest.fixture(scope="module")
def netx():
    """Each published network read with its layers laid out under loihi2-lava (no ranges)."""
    return {f: estimate_netx(DATA / f, dense_only=True, ranges=False)[0] for f in ("oxford.net", "pilotnet_snn.net")}


@pytest.mark.parametrize("layer", C.PUBLISHED, ids=lambda x: x.name)
def test_published_facts_match_the_files(layer):
    """Inputs, neurons and the weight width Lava stores (NetX's optimize_weight_bits rule: the common power of
    two into the exponent, then the narrowest signed width) are the files' own."""
    net = read_netx(DATA / layer.network, dense_only=True)
    (d,) = [x for x in net.dense if x["layer"] == layer.layer]
    assert d["shape"] == [layer.inputs, layer.neurons]
    s = net.graph.synapses[d["synapse"]]
    from mflc.compiler.chip.hardware import weight_width

    assert weight_width(s, LAVA) == layer.weight_bits


@pytest.mark.parametrize("layer", C.PUBLISHED, ids=lambda x: x.name)
def test_units_within_5_percent_of_the_compiler(layer):
    """The whole layer on one core, as the compiler's printed allocation counts it."""
    units = layer.inputs * axon_list_units(layer.neurons, layer.weight_bits, LAVA)
    assert abs(units - layer.units) / layer.units <= 0.05, (units, layer.units)


@pytest.mark.parametrize("layer", C.PUBLISHED, ids=lambda x: x.name)
def test_core_counts_equal_the_compiler_or_the_documented_difference(netx, layer):
    (row,) = [x for x in netx[layer.network]["layers"] if x["layer"] == layer.layer]
    if (layer.network, layer.layer) in CORE_DIFFERENCES:
        assert row["cores"] != layer.cores
        assert "oxford[0]" in Path(__file__).resolve().parents[1].joinpath("docs/estimates.md").read_text()
    else:
        assert row["cores"] == layer.cores, (row, layer)


def test_profile_carries_the_fit_and_its_range():
    f = C.fit()
    assert f["worst_error"] <= 0.05 and f["core_mismatches"] <= 1
    assert LAVA.synaptic_memory_bits == C.SYNMEM_UNITS_PER_CORE * LAVA.synmem_unit_bits    # the printed budget
    assert (LAVA.synmem_axon_milli, LAVA.synmem_synapse_milli, LAVA.synmem_weight_bit_milli) == (
        f["synmem_axon_milli"], f["synmem_synapse_milli"], f["synmem_weight_bit_milli"])
    rng = C.coefficient_range()
    for k in ("synmem_axon_milli", "synmem_synapse_milli", "synmem_weight_bit_milli"):
        fig = LAVA.figure(k)
        assert (fig["low"], fig["high"]) == rng[k], k


def test_held_out_layers_are_predicted_within_10_percent():
    """Fitted on five layers, the sixth is predicted; the closing note and docs/estimates.md quote these."""
    res = C.leave_one_out()
    assert len(res) == len(C.PUBLISHED)
    assert max(abs(r["error"]) for r in res) <= 0.10, res


def test_netx_weights_keep_their_values():
    w = np.array([[4.0, -8.0, 0.0], [12.0, 2.0, -2.0]])
    q, e = integer_weights(w, "t")
    assert e == 1 and np.array_equal(q.astype(np.int64) << e, w.astype(np.int64))
    with pytest.raises(NetxError, match="not integers"):
        integer_weights(np.array([[0.5]]), "t")
    with pytest.raises(NetxError, match="more than 8 bits"):
        integer_weights(np.array([[255.0, -3.0]]), "t")


def test_estimate_netx_json_keys():
    js = json.loads(cli_run("estimate", "--netx", DATA / "oxford.net", "--json").stdout)
    for k in ("cores", "chips", "cores_low", "cores_high", "chips_low", "chips_high", "profiles", "sensitivity",
              "layers"):
        assert k in js, k
    assert {"loihi2-lava", "loihi2-ideal"} <= set(js["profiles"])
    for x in js["layers"]:
        assert set(x) >= {"name", "shape", "synapses", "weight_bits", "synmem_units", "cores"}
    assert [x["synapses"] for x in js["layers"]] == [50422, 39974]          # the non-zeros of the two layers
    assert js["cores_low"] <= js["cores"] <= js["cores_high"]


def test_netx_conv_layers_are_refused_by_name_or_listed():
    r = cli_run("estimate", "--netx", DATA / "pilotnet_snn.net", ok=False)
    assert r.exit_code == 1 and "layer 1 (conv)" in r.output and "--dense-only" in r.output
    js = json.loads(cli_run("estimate", "--netx", DATA / "pilotnet_snn.net", "--dense-only", "--json",
                            "--no-range").stdout)
    assert [s["type"] for s in js["skipped_layers"]][:6] == ["input", "conv", "conv", "conv", "conv", "conv"]


def test_bad_netx_files_exit_1(tmp_path):
    trunc = tmp_path / "trunc.net"
    trunc.write_bytes((DATA / "oxford.net").read_bytes()[:5000])
    text = tmp_path / "text.net"
    text.write_text("not hdf5")
    empty = tmp_path / "empty.net"
    with h5py.File(empty, "w") as f:
        f.create_group("layer")
    for path, words in ((trunc, "truncated"), (text, "not an HDF5 file"), (tmp_path / "absent.net", "no such"),
                        (empty, "groups named 0, 1, 2")):
        r = cli_run("estimate", "--netx", path, ok=False)
        assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output, (path, r.output)
    r = cli_run("estimate", "--preset", "tiny", "--dense-only", ok=False)
    assert r.exit_code == 1 and "--dense-only goes with --netx" in r.output


def _doc_rows() -> dict:
    """The calibration table of docs/estimates.md: {layer name: its cells}."""
    text = Path(__file__).resolve().parents[1].joinpath("docs/estimates.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and "->" in cells[0] and cells[1].isdigit():
            rows[cells[0]] = cells
    return rows


def test_the_docs_calibration_table_is_what_the_tool_prints(netx):
    """docs/estimates.md cannot quote a unit or core count the tool no longer gives."""
    rows = _doc_rows()
    assert set(rows) == {x.name for x in C.PUBLISHED}
    loo = {r["layer"]: r for r in C.leave_one_out()}
    num = lambda s: int(s.split()[0].replace(",", "").replace("*", ""))       # noqa: E731
    for layer in C.PUBLISHED:
        cells = rows[layer.name]
        (row,) = [x for x in netx[layer.network]["layers"] if x["layer"] == layer.layer]
        one = layer.inputs * axon_list_units(layer.neurons, layer.weight_bits, LAVA)
        assert (num(cells[1]), num(cells[2]), num(cells[3])) == (layer.weight_bits, layer.units, layer.cores)
        assert (num(cells[4]), num(cells[5]), num(cells[6])) == (one, row["cores"], loo[layer.name]["predicted"])


@pytest.mark.slow
def test_the_docs_370m_range_is_what_the_tool_prints():
    js = json.loads(cli_run("estimate", "--preset", "370M", "--json").stdout)
    text = Path(__file__).resolve().parents[1].joinpath("docs/estimates.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("| 370M | **"))
    want = f"**{js['cores']:,} cores, {js['chips']} chips** | {js['cores_low']:,}–{js['cores_high']:,} cores, " \
           f"**{js['chips_low']}–{js['chips_high']} chips**"
    assert want in line, (want, line)
