"""Summaries of an IR graph for reports: totals and a per-role breakdown."""
from __future__ import annotations

from collections import defaultdict

from mflc.ir.graph import Graph


def ir_summary(g: Graph) -> dict:
    """Per-role counts and widths of an IR (groups, neurons, message and register bits) for reports."""
    roles = defaultdict(lambda: dict(groups=0, neurons=0, max_out_bits=0, max_register_bits=0))
    for grp in g.groups.values():
        r = roles[grp.meta.get("role", "other")]
        r["groups"] += 1
        r["neurons"] += grp.size
        r["max_out_bits"] = max(r["max_out_bits"], grp.out_bits)
        r["max_register_bits"] = max([r["max_register_bits"], *grp.registers.values()])
    kinds = defaultdict(lambda: dict(groups=0, synapses=0, dense_size=0, max_delay=0))
    for s in g.synapses.values():
        k = kinds[s.meta.get("kind", "other")]
        k["groups"] += 1
        k["synapses"] += s.nnz
        k["dense_size"] += s.shape[0] * s.shape[1]
        k["max_delay"] = max(k["max_delay"], s.delay)
    for k in kinds.values():
        k["density"] = k["synapses"] / k["dense_size"] if k["dense_size"] else 0.0
    tern = kinds.get("ternary")
    return dict(totals=g.totals(), roles=dict(roles), synapse_kinds=dict(kinds),
                ternary_density=tern["density"] if tern else None,
                max_message_bits=max((grp.out_bits for grp in g.groups.values()), default=0),
                max_register_bits=max((b for grp in g.groups.values() for b in grp.registers.values()), default=0),
                state=sorted(g.state))
