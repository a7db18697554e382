"""Whole-sequence executor of an IR graph: every group over all tokens at once, the same integers as the
token-by-token executors.

Why it is exact. The IR's timing contract (ir/graph.py) puts every synapse from a group of stage s to a
group of stage s' > s with delay s' - s - 1, so a token's inputs to a group are exactly its sources'
outputs *for the same token*; the only thing that carries from one token to the next is the groups'
persistent registers (and a delta sender's last message and its receivers' running sums). So, in stage
order, each group can take its sources' outputs for all T tokens ([T, n_src]) and

* each synapse's contribution for all tokens is one exact product ([T, n_src] messages times the block,
  in the dtype ``fp.exact_product_dtype`` proves exact, or a Numba CSR loop for sparse blocks), then
  Lava's shift (``fp.shr_floor``) elementwise, as ``reference.synapse_output`` does per token;
* a delta sender's messages are the per-token differences of its outputs (the first against the last
  message of the previous run); each receiver port adds the running sum (cumsum) of the shifted
  contributions, as the reference's delta accumulator does token after token;
* the group's program runs over the tokens in its generated function's token loop (simulator/progcode;
  ``programs="interpreted"``: a Numba loop around ``nbprogram.run_program_flat``), so registers carry
  from token to token as in ``Engine``; a group without registers runs once over tokens x neurons.

Activity counters are those ``Engine`` keeps (synaptic ops, neuron updates, messages by distance and
payload bits, per core, per (core, stage) and per step), computed from how many tokens each neuron sent a
non-zero message. tests/test_sequence.py checks outputs, states and counters equal to Engine's and
the reference executor's. Both schedules give the same per-token integers; only the step numbers differ.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from mflc.ir import fixedpoint as fp
from mflc.ir.coremap import CoreMap
from mflc.ir.errors import MflcError
from mflc.ir.graph import Graph, PackedSynapseGroup, SynapseGroup
from mflc.ir.ternary import unpack_dense
from mflc.ir.modes import Send
from mflc.ir.validate import validate

from . import int8dot
from .engine import DENSE_MIN_DENSITY, Counters
from .nbprogram import _RT, RUN_ERRORS, run_program_flat
from .progcode import CompiledProgram, program_for
from .reference import RunResult, injection_steps

HOLD_BLOCK_BYTES = 512 << 20    # dense blocks are held in their product dtype when all of them fit this
PARALLEL_MIN_MACS = 1 << 24      # integer products at least this large run their rows on all cores
WIDE_CACHE_BYTES = 64 << 20     # stateless groups' [slots, T·size] matrices are kept between runs up to this


class SequenceUnsupported(MflcError):
    """The graph is not one the whole-sequence executor can run (virtual synapses, a broken delay contract)."""


@nb.njit(cache=True)
def _run_tokens(code, env, tables, rt, size, port_rows, ports, out_row, outs, reg_rows, regs):
    """The group's program once per token, registers carried in ``env`` ([n_slots, size] flat): loads
    token t's ports, runs the compiled program on every neuron, copies out the output and the registers
    asked for. Returns -1, or t · 4 + the interpreter's error code of the first failing token."""
    for t in range(ports.shape[1]):
        for p in range(port_rows.size):
            b = port_rows[p] * size
            for i in range(size):
                env[b + i] = ports[p, t, i]
        err = run_program_flat(code, 0, code.shape[0], env, tables, 0, rt, 0, size)
        if err:
            return t * 4 + err
        b = out_row * size
        for i in range(size):
            outs[t, i] = env[b + i]
        for r in range(reg_rows.size):
            b = reg_rows[r] * size
            for i in range(size):
                regs[r, t, i] = env[b + i]
    return -1


@nb.njit(cache=True)
def _csr_tokens(indptr, indices, values, msgs_t, out):
    """out[t, r] = Σ_q values[q] · msgs_t[indices[q], t] over row r's entries: a sparse block for all
    tokens in int64; the inner loop runs over contiguous tokens of the transposed messages."""
    acc = np.zeros(msgs_t.shape[1], np.int64)
    for r in range(indptr.size - 1):
        acc[:] = 0
        for q in range(indptr[r], indptr[r + 1]):
            j, v = indices[q], values[q]
            for t in range(msgs_t.shape[1]):
                acc[t] += v * msgs_t[j, t]
        for t in range(msgs_t.shape[1]):
            out[t, r] = acc[t]


@nb.njit(cache=True, nogil=True)
def _range_and_nonzero(a):
    """(min, max, number of non-zero values) of an int64 array in one pass (0, 0, 0 if empty): a group's
    outputs checked against its message width and counted as messages, without three passes over [T, size]."""
    flat = a.reshape(-1) if a.flags.c_contiguous else a.copy().reshape(-1)
    if flat.size == 0:
        return 0, 0, 0
    lo = hi = flat[0]
    nz = 0
    for v in flat:
        lo = min(lo, v)
        hi = max(hi, v)
        nz += v != 0
    return lo, hi, nz


@nb.njit(cache=True, nogil=True, fastmath=True)
def _dense_tokens16(w, msgs, out):
    """out[t, r] = Σ_c w[r, c] · msgs[t, c] for int8 weights and int16 messages, in int32 lanes (the
    engine's dense16 kernel for all tokens: each weight row is read once for every token)."""
    for r in range(w.shape[0]):
        for t in range(msgs.shape[0]):
            acc = np.int32(0)
            for c in range(w.shape[1]):
                acc = np.int32(acc + np.int32(np.int16(w[r, c]) * msgs[t, c]))
            out[t, r] = acc


@nb.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _dense_tokens16_parallel(w, msgs, out):
    """_dense_tokens16 with the rows in parallel, for blocks large enough to repay a thread wake-up."""
    for r in nb.prange(w.shape[0]):
        for t in range(msgs.shape[0]):
            acc = np.int32(0)
            for c in range(w.shape[1]):
                acc = np.int32(acc + np.int32(np.int16(w[r, c]) * msgs[t, c]))
            out[t, r] = acc


class _Block:
    """One synapse group ready for whole-sequence products: a dense block for dense-ish blocks, multiplied
    in the dtype its product is exact in (``fp.exact_product_dtype``), CSR arrays (or a gather, for one
    synapse per row) for sparse ones. A packed ternary group (a loaded IR's 2-bit codes) is decoded
    straight to a dense block, never to CSR. ``hold()`` keeps the block in its product dtype (no
    conversion per run, 4 or 8 bytes per weight); otherwise a packed block is decoded from its codes at
    each run and an int8 block converted, which costs time per run and no memory between runs."""

    def __init__(self, s: SynapseGroup, msg_bits: int):
        self.s, self.msg_bits, self.gather, self.unit, self.identity, self.w = s, msg_bits, False, False, False, None
        self.packed = isinstance(s, PackedSynapseGroup) and not s.decoded
        if self.packed:
            self.w_max, self.dense = 1, True                  # ternary by format: |w| <= 1 is declared
        else:
            self.w_max = int(np.abs(s.values.astype(np.int64)).max()) if s.nnz else 0   # the compiled weights
            self.dense = s.density >= DENSE_MIN_DENSITY and s.shape[1] > 1
            if self.dense:
                self.w = np.zeros(s.shape, np.int8)
                self.w[np.repeat(np.arange(s.shape[0]), s.row_counts()), s.indices] = s.values
            else:
                self.arrays = (s.indptr.astype(np.int64), s.indices.astype(np.int64), s.values.astype(np.int64))
                # one synapse per destination row (identity, broadcast, permutation): a gather, no loop
                self.gather = bool(np.all(np.diff(self.arrays[0]) == 1))
                self.unit = self.gather and bool(np.all(self.arrays[2] == 1))     # a copy or a broadcast
                self.identity = self.unit and s.shape[0] == s.shape[1] and bool(
                    np.array_equal(self.arrays[1], np.arange(s.shape[0])))
        self.dtype = fp.exact_product_dtype(s.shape[1], self.w_max, msg_bits, int32_kernel=True)
        # byte dot products (AVX-512 VNNI) where the offset form is proven exact and the CPU has them
        self.dot = self.dense and fp.offset_product_exact(s.shape[1], self.w_max, msg_bits) and int8dot.available()
        self.prepared = None

    def held_bytes(self) -> int:
        """Bytes the block takes when held (int8 for the integer kernels, else its float dtype; 0 if sparse)."""
        per = self.dtype.itemsize if self.dtype.kind == "f" else 1
        return self.s.shape[0] * self.s.shape[1] * per if self.dense else 0

    def hold(self) -> None:
        """Keep the dense block as its product reads it from now on (no decoding or conversion per run)."""
        if self.dot:
            self.prepared = int8dot.PreparedWeights(self._weights())
            self.w = self.prepared.w[:self.s.shape[0], :self.s.shape[1]]      # a view: no second copy
        elif self.dense:
            self.w = self._weights()

    def _weights(self) -> np.ndarray:
        """The dense block as its product reads it: float32/float64 for BLAS, int8 for the integer products
        (the int32 kernel, and the int64 fallback, which converts exactly)."""
        w = unpack_dense(self.s.codes, self.s.shape, self.s.where) if self.w is None else self.w
        return w.astype(self.dtype) if self.dtype.kind == "f" and w.dtype != self.dtype else w

    def col_counts(self, slices) -> list[np.ndarray]:
        """Per (lo, hi, core) destination slice, the stored synapses per source neuron in rows lo..hi:
        the synaptic ops one non-zero message of each source neuron costs on that slice (a packed block
        is decoded once for all its slices)."""
        if self.dense:
            w = unpack_dense(self.s.codes, self.s.shape, self.s.where) if self.w is None else self.w
            return [np.count_nonzero(w[lo:hi], axis=0).astype(np.int64) for lo, hi, _ in slices]
        ip, ind, _ = self.arrays
        return [np.bincount(ind[ip[lo]:ip[hi]], minlength=self.s.shape[1]).astype(np.int64) for lo, hi, _ in slices]

    def product(self, msgs: np.ndarray, slices=None, msgs16: np.ndarray | None = None):
        """The exact integer sums W · m_t for every token ([T, n_dst]; int32 from the integer kernel, else
        int64), then Lava's shift. ``msgs16``: the messages already as int16, shared by a group's blocks.
        With ``slices`` also the per-slice synapse counts of ``col_counts``, from the same decoded block:
        (sums, counts)."""
        if self.dot:                                       # u8 x s8 in int32 lanes: exact by the offset bound
            w = self.w if self.prepared is not None else self._weights()
            acc = (self.prepared or int8dot.PreparedWeights(w)).product(msgs)
        elif self.dense and self.dtype == np.int32:        # int16 x int8 in int32 lanes: exact by the bound
            w = self._weights()
            acc = np.empty((msgs.shape[0], w.shape[0]), np.int32)
            big = w.size * msgs.shape[0] >= PARALLEL_MIN_MACS
            m16 = msgs.astype(np.int16) if msgs16 is None else msgs16
            (_dense_tokens16_parallel if big else _dense_tokens16)(w, m16, acc)
        elif self.dense:
            w = self._weights()
            acc = fp.exact_matmul(msgs, w, self.msg_bits, self.w_max)
        elif self.gather:                # contributions are only read, so an identity passes msgs on
            acc = msgs if self.identity else (msgs[:, self.arrays[1]] if self.unit else msgs[:, self.arrays[1]] * self.arrays[2])
        else:
            acc = np.empty((msgs.shape[0], self.s.shape[0]), np.int64)
            _csr_tokens(*self.arrays, np.ascontiguousarray(msgs.T, np.int64), acc)
        if slices is not None:
            counts = ([np.count_nonzero(w[lo:hi], axis=0).astype(np.int64) for lo, hi, _ in slices] if self.dense
                      else self.col_counts(slices))
        acc = fp.shr_floor(acc, -self.s.weight_exp) if self.s.weight_exp else acc
        return acc if slices is None else (acc, counts)


def unsupported(graph: Graph) -> list[str]:
    """Why the whole-sequence executor cannot run ``graph`` (empty if it can): virtual synapses, and
    synapses that break the delay contract (delay == stage(dst) - stage(src) - 1), without which a
    token's inputs would not be its sources' outputs for that same token."""
    bad = []
    for s in graph.synapses.values():
        if s.virtual:
            bad.append(f"synapse {s.name} is virtual (a skeleton graph); it cannot be executed")
            continue
        want = graph.groups[s.dst].stage - graph.groups[s.src].stage - 1
        if s.delay != want or want < 0:
            bad.append(f"synapse {s.name}: delay {s.delay}, but stages {s.src}={graph.groups[s.src].stage} -> "
                       f"{s.dst}={graph.groups[s.dst].stage} need {want} for per-token semantics")
    return bad


class SequenceExecutor:
    """The IR over whole token sequences: one exact product per synapse per run, programs looped over
    tokens in Numba. Same outputs, states and counters as ``Engine`` (which remains the executor that can
    stop at a step and trace one firing). Dense blocks are held as their products read them (int8 for
    the int32 kernel, float32/float64 for BLAS) when they all fit ``hold_bytes`` (the 370M: 343 MB);
    otherwise they are decoded from the 2-bit codes (or converted) at each run, adding no weight memory."""

    def __init__(self, graph: Graph, core_map: CoreMap | None = None, check: bool = True,
                 hold_bytes: int = HOLD_BLOCK_BYTES, programs: str = "compiled"):
        if check:
            validate(graph)
        bad = unsupported(graph)
        if bad:
            raise SequenceUnsupported("the sequence executor cannot run this graph: " + "; ".join(bad[:3])
                                      + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""))
        self.g, self.programs = graph, programs
        self.cm = core_map or CoreMap.one_core_per_group(graph)
        self.order = sorted(graph.groups, key=lambda n: graph.groups[n].stage)
        self.out_syn: dict[str, list[_Block]] = {n: [] for n in graph.groups}
        for s in graph.synapses.values():
            src = graph.groups[s.src]          # a delta (the change of a b-bit value) needs b + 1 bits
            self.out_syn[s.src].append(_Block(s, src.out_bits + (src.send == Send.DELTA)))
        blocks = [b for bl in self.out_syn.values() for b in bl]
        self.held = sum(b.held_bytes() for b in blocks) <= hold_bytes
        for b in blocks if self.held else ():
            b.hold()
        self.host = {i.group: i for i in graph.inputs}
        self.state_of: dict[str, list[tuple[str, str]]] = {}
        for k, (grp, reg) in graph.state.items():
            self.state_of.setdefault(grp, []).append((k, reg))
        self._counting: dict | None = None   # per-group counting data, built on the first run with counters
        self._block_counts: dict[int, list] = {}   # id(block) -> per-slice synapse counts (from its product)
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: fresh programs, delta senders' last messages and running sums zeroed."""
        g = self.g
        self.progs = {n: program_for(grp, self.programs) for n, grp in g.groups.items()}
        self.flat = {n: p.flat_code() for n, p in self.progs.items()}
        # stateless groups' (slots over T tokens, code) by (group, T): eval's and prefill's pieces come in
        # a few lengths (192 and the remainder), each kept while they fit WIDE_CACHE_BYTES
        self._wide: dict[tuple[str, int], tuple] = {}
        self._wide_bytes = 0
        self._arena: dict[tuple[int, int], np.ndarray] = {}     # shared slot matrices, by shape
        self._port_arena: dict[tuple[int, int, int], np.ndarray] = {}   # port values, by shape (no fresh pages)
        self.last_sent = {n: np.zeros(grp.size, np.int64) for n, grp in g.groups.items() if grp.send == Send.DELTA}
        self.delta_acc = {s.name: np.zeros(s.shape[0], np.int64) for s in g.synapses.values()
                          if g.groups[s.src].send == Send.DELTA}

    # ---- state exchange with token-by-token engines (prefill, then generation) ----
    def group_env(self, name: str) -> np.ndarray:
        """Group ``name``'s slot matrix [n_slots, size] (registers, parameters, ports, temporaries), live."""
        return self.progs[name].env

    def _ports(self, name: str, T: int, tokens: np.ndarray, arriving: dict) -> np.ndarray:
        """Group ``name``'s port values for all tokens, [n_ports, T, size]: synapse sums, delta running
        sums, the host's table rows."""
        grp = self.g.groups[name]
        shape = (len(grp.ports), T, grp.size)
        ports = self._port_arena.get(shape)       # every element is written below, and read only by _fire
        if ports is None:
            ports = self._port_arena[shape] = np.empty(shape, np.int64)
        for p, port in enumerate(grp.ports):
            parts = arriving.pop((name, port), ())
            if parts:
                ports[p] = parts[0]               # int32 or int64 sums, widened exactly
                for v in parts[1:]:
                    ports[p] += v
            else:
                ports[p] = 0
        if name in self.host:
            inp = self.host[name]
            table = self.g.host_tensors[inp.table]
            bad = (tokens < 0) | (tokens >= table.shape[0])
            if bad.any():
                raise ValueError(f"token {int(tokens[bad][0])} outside the input table {inp.table} [0, {table.shape[0]})")
            ports[grp.ports.index(inp.port)] += table[tokens].astype(np.int64)
        return ports

    def _fire(self, name: str, ports: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run group ``name``'s program over all tokens: (outputs [T, size], named-state registers [R, T, size])."""
        grp, prog = self.g.groups[name], self.progs[name]
        T = ports.shape[1]
        if not grp.registers and not any(ins.out in grp.params for ins in grp.program):
            outs, regs = self._fire_stateless(name, ports), np.zeros((0, T, grp.size), np.int64)
        else:
            port_rows = np.asarray([prog.slot[p] for p in grp.ports], np.int64)
            reg_rows = np.asarray([prog.slot[r] for _, r in self.state_of.get(name, ())], np.int64)
            outs = np.zeros((T, grp.size), np.int64)
            regs = np.zeros((reg_rows.size, T, grp.size), np.int64)
            if isinstance(prog, CompiledProgram):
                err = prog.module.run_tokens(prog.env.reshape(-1), grp.size, prog.tables, prog.imm, _RT, ports, outs,
                                             reg_rows, regs)
            else:
                err = _run_tokens(self.flat[name], prog.env.reshape(-1), prog.tables, _RT, grp.size, port_rows,
                                  ports, prog.output, outs, reg_rows, regs)
            if err >= 0:
                raise ValueError(f"group {name}, token {err // 4} of the run: " + RUN_ERRORS[err % 4])
        return outs, regs

    def _fire_stateless(self, name: str, ports: np.ndarray) -> np.ndarray:
        """A group without registers computes each token independently: its program runs once over T·size
        neurons (token t's neuron i at column t·size + i, parameters tiled), and the last token's columns
        are written back, leaving the slots exactly as stepping the tokens would."""
        grp, prog = self.g.groups[name], self.progs[name]
        T, n = ports.shape[1], grp.size
        env, code = self._wide.get((name, T), (None, None))
        shared = env is None
        if shared:
            code = prog.code.copy()
            code[:, 1:5] *= T * n
            shape = (prog.env.shape[0], T * n)
            if self._wide_bytes + shape[0] * shape[1] * 8 <= WIDE_CACHE_BYTES:   # kept for the next run of as many tokens
                env, shared = np.zeros(shape, np.int64), False
                self._wide_bytes += env.nbytes
                self._wide[(name, T)] = env, code
            else:          # one matrix per shape for every group beyond the cache: no fresh pages per run
                env = self._arena.get(shape)
                if env is None:
                    env = self._arena[shape] = np.empty(shape, np.int64)   # the validator: no read before a write
            for pname in grp.params:
                env[prog.slot[pname]] = np.tile(prog.env[prog.slot[pname]], T)
        for p, port in enumerate(grp.ports):
            env[prog.slot[port]] = ports[p].reshape(-1)
        if isinstance(prog, CompiledProgram):
            err = prog.module.run(env.reshape(-1), 0, T * n, prog.tables, 0, prog.imm, 0, _RT, 0, T * n)
        else:
            err = run_program_flat(code, 0, len(code), env.reshape(-1), prog.tables, 0, _RT, 0, T * n)
        if err:
            raise ValueError(f"group {name}, one of the run's {T} tokens: " + RUN_ERRORS[err])
        prog.env[:] = env[:, (T - 1) * n:]
        out = env[prog.output].reshape(T, n)
        return out.copy() if shared else out      # a view of the group's own matrix: read before its next run

    def _messages(self, name: str, outs: np.ndarray) -> np.ndarray:
        """What the group sends per token: its outputs, or (delta senders) their change since the last message."""
        if self.g.groups[name].send != Send.DELTA:
            return outs
        prev = np.concatenate([self.last_sent[name][None], outs[:-1]]) if len(outs) else outs
        if len(outs):
            self.last_sent[name] = outs[-1].copy()
        return outs - prev

    def _send(self, name: str, msgs: np.ndarray, arriving: dict, counting: bool = False) -> None:
        """Every outgoing synapse's contribution for all tokens, queued for its destination port; when
        ``counting``, each block's per-slice synapse counts are kept the first time (from the same decode)."""
        m16 = msgs.astype(np.int16) if any(b.dense and b.dtype == np.int32 and not b.dot for b in self.out_syn[name]) else None
        for b in self.out_syn[name]:
            if counting and id(b) not in self._block_counts:
                contrib, self._block_counts[id(b)] = b.product(msgs, sorted(self.cm.slices[b.s.dst]), m16)
            else:
                contrib = b.product(msgs, msgs16=m16)
            if b.s.name in self.delta_acc:          # the receiver's running sum, token after token
                contrib = self.delta_acc[b.s.name] + np.cumsum(contrib, axis=0, dtype=np.int64)
                self.delta_acc[b.s.name] = contrib[-1].copy()
            arriving.setdefault((b.s.dst, b.s.port), []).append(contrib)

    def run(self, tokens, schedule: str = "sequential", counters: Counters | None = None, trace=None) -> RunResult:
        """Run a token sequence from the current state (``reset`` for a fresh one), all tokens at once.
        ``trace(t, k, name, out)`` is called per firing as the token-by-token executors call it, in
        group-major order; pass a ``Counters`` to accumulate Engine's activity counters into it."""
        g = self.g
        toks = np.asarray([int(t) for t in tokens], np.int64)
        T, depth = len(toks), g.depth
        inject = np.asarray(injection_steps(T, depth, schedule), np.int64)
        last = int(inject[-1] + depth) if T else 0
        outs = {o.name: np.zeros((0,)) for o in g.outputs}
        states = {k: np.zeros((0,)) for k in g.state}
        sent: dict[str, int] = {}
        out_steps = [0] * T
        if T == 0:
            return RunResult(outs, states, out_steps, 0, sent)
        tally = _Tally(self, counters, inject, last) if counters is not None else None
        arriving: dict[tuple[str, str], list[np.ndarray]] = {}
        for name in self.order:
            grp = g.groups[name]
            out, regs = self._fire(name, self._ports(name, T, toks, arriving))
            lim = 1 << (grp.out_bits - 1)
            lo, hi, nonzero = _range_and_nonzero(out)
            if out.size and (lo < -lim or hi >= lim):
                raise OverflowError(f"group {name}: output outside its {grp.out_bits}-bit message width")
            if trace is not None:
                for k in range(T):
                    trace(int(inject[k]) + grp.stage, k, name, out[k].copy())
            for o in g.outputs:
                if o.group == name:
                    outs[o.name] = out.copy()     # _fire's buffers are reused by the next run
                    out_steps = [int(s) + grp.stage for s in inject]
            for r, (sk, _) in enumerate(self.state_of.get(name, ())):
                states[sk] = regs[r].copy()
            msgs = self._messages(name, out)
            sent[name] = nonzero if msgs is out else int(np.count_nonzero(msgs))
            self._send(name, msgs, arriving, counting=tally is not None)
            if tally is not None:
                tally.group(name, msgs)
        if tally is not None:
            tally.finish()
        return RunResult(outs, states, out_steps, last, sent, counters)


class _Tally:
    """Engine's activity counters for one whole-sequence run, from each neuron's count of non-zero messages."""

    def __init__(self, ex: SequenceExecutor, c: Counters, inject: np.ndarray, last: int):
        if ex._counting is None:
            ex._counting = {}           # filled group by group, after each group's products (their counts)
        self.ex, self.c, self.inject = ex, c, inject
        self.step_syn, self.step_upd, self.step_msg = (np.zeros(last, np.int64) for _ in range(3))

    def group(self, name: str, msgs: np.ndarray) -> None:
        """Count one group's firings over the run: updates, synaptic ops and messages, per core and stage."""
        ex, c = self.ex, self.c
        grp = ex.g.groups[name]
        stage, T = grp.stage, len(msgs)
        steps = self.inject + stage
        live = msgs != 0
        per_neuron = live.sum(axis=0).astype(np.int64)          # tokens each neuron sent a non-zero message
        for a, b, core in ex.cm.slices[name]:
            c.neuron_updates[core] += T * (b - a)
            c.add(core, stage, 1, T * (b - a))
        self.step_upd[steps] += grp.size
        if name not in ex._counting:
            ex._counting[name] = _counting_data(ex, name)
        slices, src, dst_core, src_core = ex._counting[name]
        sends = bool(live.any())     # Engine delivers (and records a (core, stage) entry) only then
        for core, cc in slices if sends else ():
            ops = int(per_neuron @ cc)
            c.synops[core] += ops
            c.add(core, stage, 0, ops)
        if sends and slices:                                      # per token: one product over all slices
            self.step_syn[steps] += live.astype(np.int64) @ np.sum([cc for _, cc in slices], axis=0)
        if src.size == 0:
            return
        n = per_neuron[src]
        chip = ex.cm.chip_of_core
        same_core = src_core == dst_core
        same_chip = (chip[src_core] == chip[dst_core]) & ~same_core
        bits = grp.out_bits
        for fi, sel, arr in ((2, same_core, c.msgs_on_core), (3, same_chip, c.msgs_on_chip),
                             (4, ~(same_core | same_chip), c.msgs_between_chips)):
            per_core = np.bincount(src_core[sel], weights=n[sel], minlength=ex.cm.n_cores).astype(np.int64)
            arr += per_core
            c.payload_bits += per_core * bits
            for core in np.flatnonzero(per_core):
                c.add(core, stage, fi, int(per_core[core]))
                c.add(core, stage, 5, int(per_core[core]) * bits)
        self.step_msg[steps] += live[:, src].sum(axis=1)

    def finish(self) -> None:
        """Append the per-step totals and the token count, as Engine does at the end of a run."""
        c = self.c
        c.per_step["synops"] += self.step_syn.tolist()
        c.per_step["neuron_updates"] += self.step_upd.tolist()
        c.per_step["messages"] += self.step_msg.tolist()
        c.tokens += len(self.inject)


def _counting_data(ex: SequenceExecutor, name: str):
    """For counting a group's activity: per destination slice (core, stored synapses per source neuron),
    and its (source neuron, destination core, source core) message pairs: each neuron's message goes once
    to every core holding a row that has a synapse from it (Engine's reach pairs)."""
    slices, keys = [], []
    n_cores = ex.cm.n_cores
    for b in ex.out_syn[name]:
        dst_slices = sorted(ex.cm.slices[b.s.dst])
        counts = ex._block_counts.get(id(b)) or b.col_counts(dst_slices)
        for (_, _, core), cc in zip(dst_slices, counts):
            slices.append((core, cc))
            keys.append(np.flatnonzero(cc).astype(np.int64) * n_cores + core)
    k = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    src, dst = k // n_cores, k % n_cores
    return slices, src, dst, ex.cm.core_of_neurons(name, ex.g.groups[name].size)[src]
