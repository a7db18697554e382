"""One executor protocol, and the registry of every executor by name (docs/architecture.md, "Executors").

An executor runs token ids through one implementation of the network and gives the same integers as
every other: logits and recurrent states per token.

* ``ex.run(tokens) -> RunResult``: ``outputs["logits"]`` [n, V] and ``states["L{i}.h"]`` [n, d] after
  each token, ``counters`` when the executor keeps them. A run **continues from the state the previous
  run left**, so generation is ``run(prompt)`` then ``run([next])`` ... and ``ex.step(t)`` is a shortcut
  for the logits of ``run([t])``; ``ex.reset()`` returns to the initial state.
* ``create(name, qm=..., graph=..., core_map=...)`` makes one; each entry says what it needs (a quantized
  model, or an IR graph with an optional core map; a graph is lowered from ``qm`` if not given) and
  whether it can run here (``unavailable``: lava only where lava-nc imports, fast only for graphs it
  supports). ``create_with_fallback`` falls back to a second executor and returns the note saying why.

Adding an executor is one decorated class in this file: ``@register("name", needs=..., description=...)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from mflc.ir.errors import MflcError
from mflc.simulator.reference import RunResult, injection_steps


@runtime_checkable
class Executor(Protocol):
    """What every simulator of a compiled model offers, so CLI commands and tests can swap them by name."""

    name: str

    def run(self, tokens) -> RunResult:
        """Run ``tokens`` from the current state (which the run then leaves for the next call)."""

    def reset(self) -> None:
        """Back to the initial (all-zero) state."""

    def step(self, token: int) -> np.ndarray:
        """The logits of one more token: ``run([token]).outputs['logits'][0]``."""


class UnknownExecutor(MflcError):
    """A name that is not in the registry (the message lists the registered names)."""


class ExecutorUnavailable(MflcError):
    """A registered executor that cannot run here or cannot run this graph (the message says why)."""


@dataclass(frozen=True)
class ExecutorSpec:
    """A registry entry: how to make an executor, what input it needs and why it may be unavailable here."""

    name: str
    needs: str                                        # "quantized" (a QuantizedModel) or "graph" (IR + core map)
    description: str
    make: Callable[..., Executor]
    unavailable: Callable[[object], str | None]       # graph (or None) -> why it cannot run, or None


REGISTRY: dict[str, ExecutorSpec] = {}
ALIASES: dict[str, str] = {}


def register(name: str, *, needs: str, description: str, unavailable: Callable | None = None,
             aliases: tuple[str, ...] = ()):
    """Class decorator: the one place an executor is registered. The class is called with keywords
    ``qm``, ``graph``, ``core_map`` (what it needs; the rest may be None) and any executor options."""
    if needs not in ("quantized", "graph"):
        raise ValueError(f"needs must be 'quantized' or 'graph', not {needs!r}")

    def deco(cls):
        """Record the class under its name and aliases (twice is an error) and return it unchanged."""
        if name in REGISTRY or name in ALIASES:
            raise ValueError(f"executor {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = ExecutorSpec(name, needs, description, cls, unavailable or (lambda graph: None))
        for a in aliases:
            ALIASES[a] = name
        return cls

    return deco


def names() -> list[str]:
    """The registered names, in registration order."""
    return list(REGISTRY)


def choices_text() -> str:
    """The registered names and aliases, for help texts and error messages."""
    al = ", ".join(f"{a} = {n}" for a, n in ALIASES.items())
    return ", ".join(REGISTRY) + (f" (aliases: {al})" if al else "")


def canonical(name: str, option: str = "--engine") -> str:
    """The registered name of ``name`` (an alias resolved); UnknownExecutor naming the choices otherwise."""
    n = ALIASES.get(name, name)
    if n not in REGISTRY:
        raise UnknownExecutor(f"{option} {name!r}: no such executor; choose one of {choices_text()}")
    return n


def spec(name: str, option: str = "--engine") -> ExecutorSpec:
    """The registry entry of a name or alias; an unknown one is a usage error naming ``option``."""
    return REGISTRY[canonical(name, option)]


def why_unavailable(name: str, graph=None) -> str | None:
    """Why executor ``name`` cannot run (here, or ``graph`` when given), or None if it can."""
    return spec(name).unavailable(graph)


def create(name: str, *, qm=None, graph=None, core_map=None, option: str = "--engine", **options) -> Executor:
    """A fresh executor ``name`` for a quantized model ``qm`` and/or its IR ``graph`` (+ ``core_map``)."""
    s = spec(name, option)
    if s.needs == "quantized" and qm is None:
        raise MflcError(f"{option} {s.name}: needs the quantized model, and only an IR graph was given")
    if s.needs == "graph" and graph is None:
        if qm is None:
            raise MflcError(f"{option} {s.name}: needs an IR graph or a quantized model to lower")
        from mflc.compiler.model.lower import lower

        graph = lower(qm)
    reason = s.unavailable(graph)
    if reason:
        raise ExecutorUnavailable(f"{option} {s.name}: {reason}")
    return s.make(qm=qm, graph=graph, core_map=core_map, **options)


def create_with_fallback(name: str, fallback: str | None, **kw) -> tuple[Executor, str | None]:
    """``create(name)``, or, if it cannot run, ``create(fallback)`` with the note saying why (never silent)."""
    try:
        return create(name, **kw), None
    except ExecutorUnavailable as e:
        if fallback is None or canonical(fallback) == canonical(name):
            raise
        return create(fallback, **kw), f"{e}; using {canonical(fallback)} instead"


def run_in_chunks(ex: Executor, tokens, progress=None, chunk: int = 256) -> RunResult:
    """``ex.run(tokens)`` in pieces of ``chunk`` tokens, calling ``progress(done)`` after each piece;
    the same result as one run (runs continue from the state). Pieces are long because the whole-sequence
    executors (``fast``'s prefill, ``sequence``, ``int-model``) pay their per-run costs once per piece."""
    tokens = [int(t) for t in tokens]
    parts = []
    for a in range(0, len(tokens), chunk):
        parts.append(ex.run(tokens[a:a + chunk]))
        if progress:
            progress(min(a + chunk, len(tokens)))
    if not parts:
        return ex.run([])
    if len(parts) == 1:
        return parts[0]
    cat = lambda d: {k: np.concatenate([p_[k] for p_ in d]) for k in d[0]}  # noqa: E731
    offs = np.cumsum([0] + [p.steps for p in parts])
    return RunResult(cat([p.outputs for p in parts]), cat([p.states for p in parts]),
                     [s + int(o) for p, o in zip(parts, offs) for s in p.output_steps], int(offs[-1]),
                     {}, parts[-1].counters)


# ---- the executors ------------------------------------------------------------------------------------
def _stack(rows: list) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0,))


class _Base:
    name = ""

    def step(self, token: int) -> np.ndarray:
        """One token in, its logits out: the interface generation loops use."""
        return self.run([int(token)]).outputs["logits"][0]


def _graph_runnable(graph) -> str | None:
    virtual = [s.name for s in graph.synapses.values() if s.virtual] if graph is not None else []
    return f"synapse {virtual[0]} is virtual (a skeleton graph); it cannot be executed" if virtual else None


@register("int-model", needs="quantized", aliases=("reference",),
          description="the numpy integer reference model (compiler/model/int_model.py): the golden integers")
class IntModelExecutor(_Base):
    """The golden integers: the numpy integer model, run token by token without any IR."""

    def __init__(self, *, qm, **_):
        from mflc.compiler.model.int_model import IntModel

        self.im = IntModel(qm)
        self.reset()

    def reset(self) -> None:
        """Back to the model's all-zero recurrent state."""
        self.state = self.im.init_state()

    def run(self, tokens) -> RunResult:
        """The integer model over tokens from the current state: one token is ``IntModel.step``, several
        the whole-sequence forward (the same integers, tests/test_int_sequence.py); logits and each
        layer's state per token."""
        tokens = [int(t) for t in tokens]
        if len(tokens) == 1:
            lg, self.state = self.im.step(tokens[0], self.state)
            logits, states = lg[None], self.state[None].copy()
        else:
            logits, states = self.im.forward_sequence(tokens, self.state)
            if len(tokens):
                self.state = states[-1].copy()
        if not len(tokens):
            return RunResult({"logits": np.zeros((0,))}, {f"L{i}.h": np.zeros((0,)) for i in range(self.im.cfg.L)}, [], 0)
        st = {f"L{i}.h": states[:, i] for i in range(self.im.cfg.L)}
        return RunResult({"logits": logits}, st, list(range(len(logits))), len(logits))


@register("ir-reference", needs="graph", unavailable=_graph_runnable,
          description="the IR reference executor (simulator/reference.py): a plain numpy interpreter of the IR")
class IRReferenceExecutor(_Base):
    """The IR run by the plain reference executor: the definitions themselves, slow but obviously right."""

    def __init__(self, *, graph, schedule: str = "sequential", check: bool = True, **_):
        from mflc.simulator.reference import ReferenceExecutor

        self.x, self.schedule = ReferenceExecutor(graph, check=check), schedule

    def reset(self) -> None:
        """Back to the initial (all-zero) state."""
        self.x.reset()

    def run(self, tokens) -> RunResult:
        """Run tokens with the executor's schedule, continuing from the current state."""
        return self.x.run(tokens, self.schedule)


@register("engine", needs="graph", unavailable=_graph_runnable,
          description="the Numba engine (simulator/engine.py): step by step, per core, with activity counters")
class EngineExecutor(_Base):
    """The placed IR on the event-driven engine, with optional activity counters for the cost model."""

    def __init__(self, *, graph, core_map=None, schedule: str = "sequential", counters: bool = False,
                 check: bool = True, parallel: bool = True, **_):
        from mflc.simulator.engine import Engine

        self.eng = Engine(graph, core_map, check=check, parallel=parallel)
        self.schedule, self.keep_counters = schedule, counters
        self.reset()

    def reset(self) -> None:
        """Back to the initial state, with fresh counters if they are kept."""
        from mflc.simulator.engine import Counters

        self.eng.reset()
        self.counters = Counters.zeros(self.eng.cm.n_cores) if self.keep_counters else None

    def run(self, tokens, trace=None) -> RunResult:
        """Run tokens with the executor's schedule; the result carries the accumulated counters."""
        res = self.eng.run(tokens, self.schedule, self.counters, trace=trace)
        res.counters = self.counters
        return res


def _fast_unavailable(graph) -> str | None:
    from mflc.simulator.fastpath import unsupported

    if _graph_runnable(graph):
        return _graph_runnable(graph)
    bad = unsupported(graph) if graph is not None else []
    return (f"the fast path cannot run this graph (it needs weight_exp 0 and 'every' messages; not: "
            f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''})") if bad else None


PREFILL_MIN_TOKENS = 2     # runs of at least this many tokens go through the whole-sequence executor
PREFILL_PIECE = 192        # in pieces of at most this many (370M prompt of 256: 192 + 64 measured 1.1x one piece of 256)
# prefill=None chooses the whole-sequence path for graphs of at most this many synapses: on the default
# model (0.6 M) it ran eval 1.4x and a prompt 1.2x faster than stepping; on the 370M (242 M) the packed
# generation kernel steps twice as fast as the whole-sequence products run (docs/benchmarks.md)
PREFILL_AUTO_MAX_SYNAPSES = 16_000_000


@register("fast", needs="graph", unavailable=_fast_unavailable,
          description="the Numba fast path (simulator/fastpath.py) for generation; runs of several tokens "
                      "(prompts, eval) whole-sequence (simulator/sequence.py); no counters")
class FastExecutor(_Base):
    """The placed IR on the fused Numba fast path, sequential schedule only. With ``prefill`` a run of
    several tokens (a prompt, an eval chunk) goes through the whole-sequence executor and then leaves the
    fast engine in exactly the state token-by-token stepping would; ``prefill=False`` steps every token;
    the default (None) prefills where that is faster: graphs of up to ``PREFILL_AUTO_MAX_SYNAPSES``."""

    def __init__(self, *, graph, core_map=None, prefill: bool | None = None, **_):
        from mflc.simulator.fastpath import FastEngine

        self.fe, self.g, self.cm = FastEngine(graph, core_map), graph, core_map
        if prefill is None:          # where it helps, by measurement (docs/benchmarks.md, whole-sequence)
            prefill = sum(s.nnz for s in graph.synapses.values()) <= PREFILL_AUTO_MAX_SYNAPSES
        self.prefill = bool(prefill)
        self.out_stage = {o.name: graph.groups[o.group].stage for o in graph.outputs}
        self.seq = None                     # the whole-sequence executor, made on the first prefill

    def reset(self) -> None:
        """Back to the initial (all-zero) state."""
        self.fe.reset()

    def run(self, tokens) -> RunResult:
        """Tokens from the current state: several at once through the whole-sequence executor (the fast
        engine's state then set to what stepping would leave), one by one through the fast path."""
        tokens = [int(t) for t in tokens]
        if self.prefill and len(tokens) > PREFILL_PIECE:
            return run_in_chunks(self, tokens, chunk=PREFILL_PIECE)
        if self.prefill and len(tokens) >= PREFILL_MIN_TOKENS:
            return self._run_sequence(tokens)
        g = self.g
        outs = {n: [] for n in self.fe.out_name}
        states = {k: [] for k in g.state}
        for t in tokens:
            for n, v in self.fe.step(t).items():
                outs[n].append(v)
            for k, (grp, reg) in g.state.items():
                states[k].append(self.fe.read(grp, reg))
        n = len(next(iter(outs.values()), []))
        inject = injection_steps(n, g.depth, "sequential")
        stage = next(iter(self.out_stage.values()), 0)
        return RunResult({k: _stack(v) for k, v in outs.items()}, {k: _stack(v) for k, v in states.items()},
                         [s + stage for s in inject], (inject[-1] + g.depth) if n else 0)

    def _run_sequence(self, tokens: list[int]) -> RunResult:
        """The run on the sequence executor, starting from and then writing back the fast engine's slots:
        registers and temporaries as the last token left them, ports consumed (zero), as ``FastEngine.step``
        leaves them."""
        from mflc.simulator.sequence import SequenceExecutor

        if self.seq is None:
            self.seq = SequenceExecutor(self.g, self.cm, check=False)
        fe = self.fe
        for name, grp in self.g.groups.items():
            env = self.seq.group_env(name)
            env.reshape(-1)[:] = fe.env[fe.base[name]:fe.base[name] + env.size]
        res = self.seq.run(tokens, "sequential")
        for name, grp in self.g.groups.items():
            env = self.seq.group_env(name)
            for p in grp.ports:
                env[fe.slot[name][p]] = 0
            fe.env[fe.base[name]:fe.base[name] + env.size] = env.reshape(-1)
        return res


def _lava_unavailable(graph) -> str | None:
    from mflc.simulator import lava_backend as LB

    if not LB.lava_available():
        return "needs lava-nc, which is not installed here (Python 3.10 venv: pip install -e '.[lava]')"
    return _graph_runnable(graph)


@register("lava", needs="graph", unavailable=_lava_unavailable,
          description="lava-nc's CPU simulation (Loihi2SimCfg fixed_pt, simulator/lava_backend.py); slow")
class LavaExecutor(_Base):
    """A Lava network is built for one fixed token sequence, so a run that continues the state re-runs
    every token since the last reset and returns the new ones: correct, and costly for long generation."""

    def __init__(self, *, graph, schedule: str = "pipelined", **lava_options):
        lava_options.pop("qm", None), lava_options.pop("core_map", None)
        self.g, self.schedule, self.options = graph, schedule, lava_options
        self.reset()

    def reset(self) -> None:
        """Forget the tokens replayed on the next run (Lava networks cannot continue a state)."""
        self.history: list[int] = []

    def run(self, tokens) -> RunResult:
        """Re-run every token since the last reset under Lava and return only the new ones."""
        from mflc.simulator.lava_backend import run_lava

        tokens = [int(t) for t in tokens]
        if not tokens:
            return RunResult({o.name: np.zeros((0,)) for o in self.g.outputs}, {k: np.zeros((0,)) for k in self.g.state}, [], 0)
        full = self.history + tokens
        res = run_lava(self.g, full, self.schedule, **self.options)
        self.history = full
        n = len(tokens)
        info = {k: v for k, v in res.lava.items() if k != "final_registers"}
        return RunResult({k: v[-n:] for k, v in res.outputs.items()}, {k: v[-n:] for k, v in res.states.items()},
                         res.output_steps[-n:], res.steps, {},
                         dict(lava_steps=res.steps, schedule=self.schedule, **info))


def _sequence_unavailable(graph) -> str | None:
    from mflc.simulator.sequence import unsupported

    bad = unsupported(graph) if graph is not None else []
    return bad[0] + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "") if bad else None


@register("sequence", needs="graph", unavailable=_sequence_unavailable,
          description="the whole-sequence executor (simulator/sequence.py): each synapse for all tokens as one "
                      "exact product, programs looped over tokens; Engine's counters")
class SequenceRunExecutor(_Base):
    """The IR over whole known sequences (verify, eval, prefill): Engine's integers and counters, all
    tokens of a run at once."""

    def __init__(self, *, graph, core_map=None, schedule: str = "sequential", counters: bool = False,
                 check: bool = True, **_):
        from mflc.simulator.sequence import SequenceExecutor

        self.x = SequenceExecutor(graph, core_map, check=check)
        self.schedule, self.keep_counters = schedule, counters
        self.reset()

    def reset(self) -> None:
        """Back to the initial state, with fresh counters if they are kept."""
        from mflc.simulator.engine import Counters

        self.x.reset()
        self.counters = Counters.zeros(self.x.cm.n_cores) if self.keep_counters else None

    def run(self, tokens, trace=None) -> RunResult:
        """Run tokens with the executor's schedule; the result carries the accumulated counters."""
        res = self.x.run(tokens, self.schedule, self.counters, trace=trace)
        res.counters = self.counters
        return res


# ---- verification: any executor against the integer reference model -------------------------------------
def compare(want: RunResult, got: RunResult, graph):
    """(values compared, first Divergence or None): logits and every recurrent state, token by token."""
    from mflc.simulator.verify import Divergence, _first_diff

    n = len(want.outputs["logits"])
    keys = sorted(want.states, key=lambda k: int(k[1:].split(".")[0]))
    out_group = graph.outputs[0].group
    compared = 0
    for k in range(n):
        for key in keys:
            w, g_ = want.states[key][k], got.states[key][k]
            d = _first_diff(w, g_)
            compared += w.size
            if d is not None:
                return compared, Divergence(k, None, None, graph.state[key][0], d[0], int(w[d]), int(g_[d]), f"state {key}")
        w, g_ = want.outputs["logits"][k], got.outputs["logits"][k]
        d = _first_diff(w, g_)
        compared += w.size
        if d is not None:
            return compared, Divergence(k, None, None, out_group, d[0], int(w[d]), int(g_[d]), "logit")
    return compared, None


def verify_executor(name: str, qm, graph, tokens, core_map=None, progress=None, reference_graph=None,
                    option: str = "--engine", **options):
    """Executor ``name`` against the integer reference model on ``tokens``, exactly: a
    ``simulator.verify.VerifyResult``. The engine goes through ``simulator.verify.verify``, which also
    locates a divergence to its step and core; the others name the token and the first differing value.
    "engine" and "sequence" verify with both sides over the whole sequence (the sequence executor gives
    Engine's integers and counters; Engine re-runs to locate a mismatch); ``stepwise=True`` runs both
    token by token. "fast" checks the fast path's token kernel (``prefill=False`` unless given)."""
    n = canonical(name, option)
    tokens = [int(t) for t in tokens]
    if n in ("engine", "sequence"):
        reason = why_unavailable(n, graph)
        if reason:
            raise ExecutorUnavailable(f"{option} {n}: {reason}")
        from mflc.compiler.model.int_model import IntModel
        from mflc.simulator.verify import verify

        return verify(IntModel(qm), graph, tokens, core_map, progress=progress, reference_graph=reference_graph,
                      stepwise=bool(options.get("stepwise", False)))
    from mflc.simulator.verify import VerifyResult

    if n == "fast":
        options.setdefault("prefill", False)     # verify the token-by-token kernel itself, not the prefill path
    ex = create(n, qm=qm, graph=graph, core_map=core_map, option=option, **options)
    want = run_in_chunks(create("int-model", qm=qm), tokens, progress)
    got = ex.run(tokens)
    compared, div = compare(want, got, graph)
    c = got.counters
    counters = c.totals() if hasattr(c, "totals") else dict(c or {})
    return VerifyResult(div is None, len(tokens), compared, div, counters)
