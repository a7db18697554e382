"""ir/roles.py: verification finds the recurrent states and the logits through the graph's own metadata."""
from __future__ import annotations

from mflc.compiler.model.int_model import IntModel
from mflc.compiler.model.lower import lower
from mflc.ir.roles import ROLE_LOGITS, ROLE_RECURRENT, logits_output, recurrent_states
from mflc.simulator.verify import verify


def _renamed(g):
    """The same graph with its states and output under other names (and states declared in reverse)."""
    g.state = {f"state_of_layer_{g.groups[v[0]].meta['layer']}": v for _, v in reversed(list(g.state.items()))}
    for out in g.outputs:
        out.name = "scores"
    return g


def test_roles_found_by_metadata(tiny_qm):
    g = lower(tiny_qm)
    assert recurrent_states(g) == [f"L{i}.h" for i in range(tiny_qm.cfg.L)]
    assert all(g.groups[g.state[s][0]].meta["role"] == ROLE_RECURRENT for s in recurrent_states(g))
    assert g.groups[logits_output(g).group].meta["role"] == ROLE_LOGITS
    r = _renamed(g)
    assert recurrent_states(r) == [f"state_of_layer_{i}" for i in range(tiny_qm.cfg.L)]
    assert logits_output(r).name == "scores"


def test_verify_reads_names_from_the_graph(tiny_qm):
    im = IntModel(tiny_qm)
    res = verify(im, _renamed(lower(tiny_qm)), [1, 2, 3])
    assert res.ok and res.compared_values == 3 * (tiny_qm.cfg.L * tiny_qm.cfg.d_attn + tiny_qm.cfg.vocab_size)
