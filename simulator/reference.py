"""IR reference executor: a plain numpy interpreter of the IR's timestep contract. Obviously correct,
not fast. It knows nothing of the model: only groups, programs, synapses, stages and delays.

Step t: every group whose stage puts a token at t runs its program on the port values delivered for t;
its message goes through each outgoing synapse (exact integer sum, then Lava's shift) and is queued for
delivery at t + 1 + delay.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.graph import Graph
from mflc.ir.modes import Schedule, Send
from mflc.ir.validate import validate

from .program import run_program


def synapse_output(dense_w: np.ndarray, msg: np.ndarray, weight_exp: int) -> np.ndarray:
    """Lava Dense fixed point: a = W·s exactly, then a << exp, or a >> -exp (floor)."""
    return fp.shr_floor(dense_w @ msg, -weight_exp)


def injection_steps(n_tokens: int, depth: int, schedule: str) -> list[int]:
    """'pipelined': one token per step (prefill); 'sequential': next token after the last one finished."""
    if schedule == Schedule.PIPELINED:
        return list(range(n_tokens))
    if schedule == Schedule.SEQUENTIAL:
        return [k * depth for k in range(n_tokens)]
    raise ValueError(f"unknown schedule {schedule!r}")


@dataclass
class RunResult:
    """What any executor returns for a run: outputs and states per token, steps, messages, counters."""

    outputs: dict[str, np.ndarray]                  # name -> [tokens, size]
    states: dict[str, np.ndarray]                   # state name -> [tokens, size] after each token
    output_steps: list[int]                         # step at which each token's output was produced
    steps: int
    messages: dict[str, int] = field(default_factory=dict)   # group -> non-zero messages sent
    counters: object = None                         # activity counters, if the executor keeps them


class ReferenceExecutor:
    """The IR run as plainly as possible (dense weights, op definitions): the executors' golden reference."""

    def __init__(self, graph: Graph, check: bool = True):
        if check:
            validate(graph)
        self.g = graph
        self.dense = {n: s.to_dense() for n, s in graph.synapses.items()}
        self.order = sorted(graph.groups, key=lambda n: graph.groups[n].stage)
        self.out_syn = defaultdict(list)
        for s in graph.synapses.values():
            self.out_syn[s.src].append(s)
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: registers, delta senders' last messages and accumulators zeroed."""
        g = self.g
        self.regs = {n: {r: np.zeros(grp.size, np.int64) for r in grp.registers} for n, grp in g.groups.items()}
        self.last_sent = {n: np.zeros(grp.size, np.int64) for n, grp in g.groups.items() if grp.send == Send.DELTA}
        self.delta_acc = {s.name: np.zeros(s.shape[0], np.int64) for s in g.synapses.values() if g.groups[s.src].send == Send.DELTA}

    def run(self, tokens, schedule: str = "sequential", trace=None, probe=None) -> RunResult:
        """Run a token sequence from the current state (call ``reset`` for a fresh one). ``trace(t, k,
        name, out)`` sees every firing's output; ``probe(k, name, env)`` every value its program computed."""
        g = self.g
        tokens = [int(t) for t in tokens]
        depth = g.depth
        inject = injection_steps(len(tokens), depth, schedule)
        token_at = {s: k for k, s in enumerate(inject)}
        last = (inject[-1] + depth) if tokens else 0
        pending: dict[tuple[int, str, str], np.ndarray] = {}
        delta_pending: dict[tuple[int, str], np.ndarray] = {}
        outs = {o.name: [None] * len(tokens) for o in g.outputs}
        out_steps = [0] * len(tokens)
        states = {k: [None] * len(tokens) for k in g.state}
        sent = defaultdict(int)
        host = {i.group: i for i in g.inputs}
        for t in range(last):
            # deltas arriving now update their synapse's running sum before anyone reads it
            for (step, sname) in [k for k in delta_pending if k[0] == t]:
                self.delta_acc[sname] += delta_pending.pop((step, sname))
            for name in self.order:
                grp = g.groups[name]
                k = token_at.get(t - grp.stage)
                if k is None:
                    continue
                ports = {p: pending.pop((t, name, p), np.zeros(grp.size, np.int64)) for p in grp.ports}
                for s in g.synapses.values():
                    if s.dst == name and s.name in self.delta_acc:
                        ports[s.port] = ports[s.port] + self.delta_acc[s.name]
                if name in host:
                    inp = host[name]
                    table = g.host_tensors[inp.table]
                    if not 0 <= tokens[k] < table.shape[0]:
                        raise ValueError(f"token {tokens[k]} outside the input table {inp.table} [0, {table.shape[0]})")
                    ports[inp.port] = ports[inp.port] + table[tokens[k]].astype(np.int64)
                env = {} if probe is not None else None
                out = run_program(grp, ports, self.regs[name], env=env)
                if probe is not None:
                    probe(k, name, env)
                if trace is not None:
                    trace(t, k, name, out)
                for o in g.outputs:
                    if o.group == name:
                        outs[o.name][k] = out.copy()
                        out_steps[k] = t
                for sname, (sg, reg) in g.state.items():
                    if sg == name:
                        states[sname][k] = self.regs[name][reg].copy()
                if grp.send == Send.DELTA:
                    msg = out - self.last_sent[name]
                    self.last_sent[name] = out.copy()
                else:
                    msg = out
                sent[name] += int(np.count_nonzero(msg))
                for s in self.out_syn[name]:
                    contrib = synapse_output(self.dense[s.name], msg, s.weight_exp)
                    arrive = t + 1 + s.delay
                    if s.name in self.delta_acc:
                        key = (arrive, s.name)
                        delta_pending[key] = delta_pending.get(key, 0) + contrib
                    else:
                        key = (arrive, s.dst, s.port)
                        pending[key] = pending.get(key, 0) + contrib
        return RunResult({k: np.stack(v) if v else np.zeros((0,)) for k, v in outs.items()},
                         {k: np.stack(v) if v else np.zeros((0,)) for k, v in states.items()},
                         out_steps, last, dict(sent))
