"""Side-by-side verification: the placed IR against the integer reference model, exactly.

The integer reference model gives the expected logits and recurrent states of every token; by default both
sides run the whole sequence at once (``IntModel.forward_sequence`` and ``sequence.SequenceExecutor``,
which gives Engine's integers and activity counters), the fast exact path. If they differ, the Numba engine
re-runs the tokens one by one with a trace, and the IR reference executor (which equals the integer model
on a correct build) locates the first neuron-group output that differs: token, step, core, group, neuron,
expected and got. ``stepwise=True`` verifies with both sides token by token, as before.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mflc.ir.coremap import CoreMap
from mflc.ir.graph import Graph
from mflc.ir.roles import logits_output, recurrent_states

from .engine import Counters, Engine
from .reference import ReferenceExecutor
from .sequence import SequenceExecutor

SEQUENCE_CHUNK = 400    # tokens per whole-sequence call of the integer model: each call streams every weight once


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


def expected_sequence(int_model, tokens, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The same as ``expected_run``, computed by the integer model's whole-sequence forward in chunks of
    ``SEQUENCE_CHUNK`` tokens (each chunk continues from the previous chunk's last state): logits [T, V],
    states [T, L, d]."""
    st = int_model.init_state()
    logits, states = [], []
    for a in range(0, len(tokens), SEQUENCE_CHUNK):
        lg, sts = int_model.forward_sequence(tokens[a:a + SEQUENCE_CHUNK], st)
        logits.append(lg)
        states.append(sts)
        st = sts[-1]
        if progress:
            progress(min(a + SEQUENCE_CHUNK, len(tokens)))
    if not logits:
        return int_model.forward_sequence([])
    return np.concatenate(logits), np.concatenate(states)


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
           reference_graph=None, stepwise: bool = False) -> VerifyResult:
    """The placed IR against the integer model on ``tokens``, exactly. By default both sides run the whole
    sequence at once; on a mismatch the engine re-runs token by token to locate it. ``stepwise``: both
    sides token by token (the integer model's ``step``, the engine). ``reference_graph``: an independent
    lowering of the same quantized model (a Graph, or a function that makes one, called only on a
    mismatch: lowering a large model costs seconds), used only to locate a divergence."""
    tokens = [int(t) for t in tokens]
    if stepwise:
        want_logits, want_states = expected_run(int_model, tokens, progress)
        return _verify_engine(graph, tokens, core_map, want_logits, want_states, reference_graph)
    logits, states = expected_sequence(int_model, tokens, progress)
    want_logits, want_states = list(logits), list(states)
    ex = SequenceExecutor(graph, core_map)
    counters = Counters.zeros(ex.cm.n_cores)
    res = ex.run(tokens, "sequential", counters)
    compared, div = compare_run(graph, want_logits, want_states, res.outputs, res.states)
    if div is None:
        return VerifyResult(True, len(tokens), compared, None, counters.totals())
    return _verify_engine(graph, tokens, core_map, want_logits, want_states, reference_graph)


def _verify_engine(graph: Graph, tokens, core_map, want_logits, want_states, reference_graph) -> VerifyResult:
    """The engine, token by token with a trace of every firing, against the expected run; a divergence is
    located to its step, core, group and neuron by the IR reference executor."""
    eng = Engine(graph, core_map)
    counters = Counters.zeros(eng.cm.n_cores)
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
