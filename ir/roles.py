"""What a graph's groups mean, as the graph itself says it: roles in ``NeuronGroup.meta``.

The lowering tags every group with ``meta = {"layer": ..., "role": ...}``; executors and verification
read the recurrent states and the logits through these tags, ``Graph.state`` and ``Graph.outputs``, never
through the compiler's naming of them (the simulator does not import the compiler).
"""
from __future__ import annotations

from .graph import Graph, GraphOutput

ROLE_RECURRENT = "mlgru"      # the group holding a layer's recurrent state (a Graph.state register)
ROLE_LOGITS = "logits"        # the group whose output is the model's logits (a Graph.outputs entry)


def recurrent_states(graph: Graph) -> list[str]:
    """Names of the graph's state entries in layer order (the group's ``meta["layer"]``; entries whose
    group has no integer layer keep their declaration order, after the others)."""
    def layer(name: str) -> tuple[int, int]:
        """Sort key: integer layer first, in order; groups without one after, in declaration order."""
        group = graph.groups.get(graph.state[name][0])
        lay = group.meta.get("layer") if group is not None else None
        return (0, lay) if isinstance(lay, int) and not isinstance(lay, bool) else (1, 0)
    return sorted(graph.state, key=layer)   # sorted is stable: ties keep declaration order


def logits_output(graph: Graph) -> GraphOutput:
    """The output whose group has role "logits"; the first output when no group says so."""
    for out in graph.outputs:
        group = graph.groups.get(out.group)
        if group is not None and group.meta.get("role") == ROLE_LOGITS:
            return out
    if not graph.outputs:
        raise ValueError("graph has no outputs")
    return graph.outputs[0]
