"""Side-by-side verification: the engine against the integer reference model, exactly.

The integer reference model gives the expected logits and recurrent states of every token. If the engine
differs, the IR reference executor (which equals the integer model on a correct build) is run with the same
tokens and the first neuron-group output that differs locates the divergence: token, step, core, group,
neuron, expected and got.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mflc.ir.coremap import CoreMap
from mflc.ir.graph import Graph
from mflc.ir.roles import logits_output, recurrent_states

from .engine import Counters, Engine
from .reference import ReferenceExecutor


@dataclass
class Divergence:
    """The first value where a run departs from the integer model: token, step, core, group, neuron."""

    token: int
    step: int | None
    core: tuple[int, int] | None
    group: str
    neuron: int
    expected: int
    got: int
    what: str

    def describe(self) -> str:
        """The divergence in one sentence for reports and CLI output."""
        where = f"step {self.step}, chip {self.core[0]} core {self.core[1]}, " if self.core else ""
        return (f"first divergence at token {self.token}, {where}group {self.group}, neuron {self.neuron} "
                f"({self.what}): expected {self.expected}, got {self.got}")


@dataclass
class VerifyResult:
    """The outcome of a verification run: pass or fail, how much was compared, the first divergence."""

    ok: bool
    tokens: int
    compared_values: int
    divergence: Divergence | None
    counters: dict

    def to_dict(self) -> dict:
        """The result as JSON reports print it."""
        d = asdict(self)
        d["divergence"] = asdict(self.divergence) if self.divergence else None
        return d


def _first_diff(a: np.ndarray, b: np.ndarray):
    idx = np.argwhere(a != b)
    return tuple(int(i) for i in idx[0]) if idx.size else None


def expected_run(int_model, tokens, progress=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The integer reference model's logits and recurrent states after every token."""
    st = int_model.init_state()
    want_logits, want_states = [], []
    for k, t in enumerate(tokens):
        lg, st = int_model.step(t, st)
        want_logits.append(lg)
        want_states.append(st.copy())
        if progress:
            progress(k + 1)
    return want_logits, want_states


def compare_run(graph: Graph, want_logits, want_states, outputs: dict, states: dict) -> tuple[int, Divergence | None]:
    """(values compared, first divergence) of a run's outputs and states against the expected ones, token
    by token, states before logits. The graph says which of its states are the model's state rows (layer
    order) and which output is the logits (ir.roles), so no name is spelt here."""
    out = logits_output(graph)
    got_logits = outputs[out.name]
    state_names = recurrent_states(graph)
    n_layers = len(want_states[0]) if want_states else len(state_names)
    if len(state_names) != n_layers:
        raise ValueError(f"graph holds {len(state_names)} recurrent state(s) ({', '.join(state_names)}) but the "
                         f"model has {n_layers} layer(s)")
    compared, div = 0, None
    for k in range(len(want_logits)):
        for i, name in enumerate(state_names):
            reg_group, _ = graph.state[name]
            got = states[name][k]
            d = _first_diff(want_states[k][i], got)
            compared += want_states[k][i].size
            if d is not None and div is None:
                div = Divergence(k, None, None, reg_group, d[0], int(want_states[k][i][d]), int(got[d]), f"state {name}")
        d = _first_diff(want_logits[k], got_logits[k])
        compared += want_logits[k].size
        if d is not None and div is None:
            div = Divergence(k, None, None, out.group, d[0], int(want_logits[k][d]), int(got_logits[k][d]), "logit")
        if div is not None:
            break
    return compared, div


def verify(int_model, graph: Graph, tokens, core_map: CoreMap | None = None, progress=None,
           reference_graph=None) -> VerifyResult:
    """``reference_graph``: an independent lowering of the same quantized model (a Graph, or a function
    that makes one, called only on a mismatch: lowering a large model costs seconds), used only to locate
    a divergence."""
    tokens = [int(t) for t in tokens]
    eng = Engine(graph, core_map)
    counters = Counters.zeros(eng.cm.n_cores)
    want_logits, want_states = expected_run(int_model, tokens, progress)
    fired: dict[tuple[int, str], tuple[int, np.ndarray]] = {}
    res = eng.run(tokens, "sequential", counters, trace=lambda t, k, name, out: fired.__setitem__((k, name), (t, out.copy())))
    compared, div = compare_run(graph, want_logits, want_states, res.outputs, res.states)
    if div is not None:
        ref = reference_graph() if callable(reference_graph) else reference_graph
        div = _locate(ref or graph, tokens, fired, eng.cm) or div
        if div.core is None and div.group in eng.core_of:
            c = int(eng.core_of[div.group][div.neuron])
            div.core = eng.cm.labels[c]
    return VerifyResult(div is None, len(tokens), compared, div, counters.totals())


def _locate(graph: Graph, tokens, fired, cm: CoreMap) -> Divergence | None:
    """The earliest group firing (by step of the reference) whose output differs from the engine's."""
    first = None

    def check(t, k, name, out):
        """Trace hook: remember the earliest firing whose output differs from the engine's."""
        nonlocal first
        if first is not None or (k, name) not in fired or fired[(k, name)][1].shape != out.shape:
            return
        _, got = fired[(k, name)]
        d = _first_diff(out, got)
        if d is not None:
            first = (t, k, name, d[0], int(out[d]), int(got[d]))

    ReferenceExecutor(graph, check=False).run(tokens, "sequential", trace=check)
    if first is None:
        return None
    t, k, name, n, exp, got = first
    core = None
    for a, b, c in cm.slices.get(name, []):
        if a <= n < b:
            core = cm.labels[c]
    return Divergence(k, t, core, name, n, exp, got, "group output")
