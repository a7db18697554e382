"""Whole-token Numba driver for generation (sequential schedule, 'every' messages, no counters).

With one token in flight and the IR's delay contract, every port receives all its messages before its
group runs, so a token is: for each group in stage order, run its program slice by slice, then push its
output through each outgoing synapse group, row slice by row slice, into the destination ports. The whole
token is one compiled call, without the per-group Python dispatch of ``Engine``; the integers are the
same (tests/test_fastpath.py checks it against ``Engine`` and the reference executor).
"""
from __future__ import annotations

import inspect
import sys

import numba as nb
import numpy as np

from mflc.ir.coremap import CoreMap
from mflc.ir.graph import Graph, PackedSynapseGroup
from mflc.ir.modes import Send
from mflc.ir.ternary import is_ternary, plane_words, planes_from_csr

from . import kernels as K
from . import jitcache, nbprogram
from . import lut as LT
from .nbprogram import _RT, run_program_flat
from .progcode import N_IMM, CompiledProgram, program_for
from .threads import ThreadGovernor

# A parallel region costs a thread wake-up, which on a busy or virtualised machine can take milliseconds:
# only blocks large enough to repay it run on all cores.
PARALLEL_MIN_WEIGHTS = 1 << 20

# How a synapse group is stored for the kernels (the first column of FastEngine.syn)
KIND_INT8, KIND_CSR, KIND_PLANES, KIND_IDENTITY, KIND_BROADCAST, KIND_LUT = 0, 1, 2, 3, 4, 5
# packed: ternary blocks at 2 bits, by table lookup (simulator/lut.py) where the CPU has its vector kernel
# and the block fills a 64-row tile, else as bit planes; planes / lut: only that 2-bit form (for
# comparisons); int8: one byte per weight
KERNELS = ("packed", "int8", "planes", "lut")
MAX_PLANE_BITS = 32               # messages wider than this take the CSR kernel
# Making a message's bit planes costs about as much as reading it a few dozen times: blocks with fewer rows
# than this (reductions, small heads) read the message directly with the int8 kernel instead.
PLANES_MIN_ROWS = 16
# The lookup-table kernel computes whole 64-row tiles: 'packed' gives it the blocks that fill one
LUT_MIN_ROWS = LT.TILE_ROWS



def merged_ranges(slices) -> list[tuple[int, int]]:
    """A group's core slices [(lo, hi, core)] as the fewest contiguous row ranges. Neurons are independent
    within a step and a synapse row's sum does not depend on which core holds it, so running adjacent
    slices as one range gives the same integers with one call (and one parallel region) instead of one per
    core, which matters for a placed build (``mflc generate BUILD``), whose groups span many cores."""
    out: list[tuple[int, int]] = []
    for lo, hi, _ in sorted(slices):
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def token_driver(order, progs, g_out, g_size, g_ports, g_slices, slices, env, tables, rt,
                 g_syn, syn, w8, ptr, ind, val, pw, planes, lw, ltab, msg16, outbuf, acc32):
    """One token through every group in stage order. Returns -1; or g for a table-domain error of group g;
    or G + g when group g sent a message wider than its bit planes hold.

    Its text is also the body of the generated driver (``_driver_source``), where ``run_group`` calls each
    group's generated program; here ``run_group`` is the interpreter's."""
    G = order.size
    for gi in range(G):
        g = order[gi]
        for s in range(g_slices[g, 0], g_slices[g, 1]):
            if run_group(progs, g, env, tables, rt, slices[s, 0], slices[s, 1]):
                return g
        out0, n = g_out[g], g_size[g]
        for k in range(n):
            outbuf[k] = env[out0 + k]
        for q in range(g_ports[g, 0], g_ports[g, 1]):     # ports consumed: clear them for the next token
            env[q] = 0
        planes_bits = 0                                   # the bit planes of this message, made once
        lut_bits = 0                                      # and its lookup tables
        for si in range(g_syn[g, 0], g_syn[g, 1]):        # one entry per (synapse group, core row slice)
            kind, dst, r_lo, r_hi, nrows = syn[si, 0], syn[si, 1], syn[si, 4], syn[si, 5], syn[si, 7]
            if kind == KIND_PLANES:
                ncols, nch = syn[si, 3], syn[si, 8]
                if planes_bits < 8 * nch:
                    planes_bits = 8 * nch
                    if K.message_planes(outbuf, ncols, planes_bits, planes) >= 0:
                        return G + g
                nw = (ncols + 63) // 64
                plus = pw[syn[si, 2]:syn[si, 2] + nrows * nw].reshape((nrows, nw))
                minus = pw[syn[si, 2] + nrows * nw:syn[si, 2] + 2 * nrows * nw].reshape((nrows, nw))
                port = env[dst:dst + nrows]                   # the sums go straight into the port
                if (r_hi - r_lo) * ncols >= PARALLEL_MIN_WEIGHTS:
                    K.planes_rows_parallel(plus, minus, planes, nch, port, r_lo, r_hi)
                else:
                    K.planes_rows(plus, minus, planes, nch, port, r_lo, r_hi)
            elif kind == KIND_LUT:
                ncols, nch = syn[si, 3], syn[si, 8]
                nsup = (ncols + LT.SUPER_COLS - 1) // LT.SUPER_COLS
                tab = ltab[:nch * nsup * LT.BLOCK_BYTES].reshape((nch, nsup, 4, 64))
                if lut_bits < 8 * nch:
                    lut_bits = 8 * nch
                    if LT.lut_tables(outbuf, ncols, lut_bits, tab) >= 0:
                        return G + g
                ntl = (nrows + LT.TILE_ROWS - 1) // LT.TILE_ROWS
                blk = lw[syn[si, 2]:syn[si, 2] + ntl * nsup * LT.BLOCK_BYTES].reshape((ntl, nsup, LT.BLOCK_BYTES))
                port = env[dst:dst + nrows]
                if (r_hi - r_lo) * ncols >= PARALLEL_MIN_WEIGHTS:
                    LT.lut_rows_parallel(blk, tab, nch, port, r_lo, r_hi)
                else:
                    LT.lut_rows(blk, tab, nch, port, r_lo, r_hi)
            elif kind == KIND_INT8:
                ncols = syn[si, 3]
                for k in range(ncols):
                    msg16[k] = outbuf[k]
                # a 2-D view of this synapse's block: the kernel's inner loop vectorises on it
                blk = w8[syn[si, 2]:syn[si, 2] + nrows * ncols].reshape((nrows, ncols))
                for r in range(r_lo, r_hi):
                    acc32[r] = 0
                if (r_hi - r_lo) * ncols >= PARALLEL_MIN_WEIGHTS:
                    K.dense_rows16_parallel(blk, msg16[:ncols], acc32, r_lo, r_hi)
                else:
                    K.dense_rows16(blk, msg16[:ncols], acc32, r_lo, r_hi)
                for r in range(r_lo, r_hi):
                    env[dst + r] += acc32[r]
            elif kind == KIND_IDENTITY:                   # unit weights, row r from source neuron r
                for r in range(r_lo, r_hi):
                    env[dst + r] += outbuf[r]
            elif kind == KIND_BROADCAST:                  # unit weights from the one source neuron
                v = outbuf[0]
                for r in range(r_lo, r_hi):
                    env[dst + r] += v
            else:
                p0 = syn[si, 6]
                for r in range(r_lo, r_hi):
                    acc = np.int64(0)
                    for q in range(ptr[p0 + r], ptr[p0 + r + 1]):
                        acc += val[q] * outbuf[ind[q]]
                    env[dst + r] += acc
    return -1


@nb.njit(cache=True, inline="always")
def run_group(progs, g, env, tables, rt, lo, hi):
    """Group g's program on neurons lo..hi by the interpreter (progs: code, per-group code rows, table offsets)."""
    code, g_code, g_tab = progs[0], progs[1], progs[2]
    return run_program_flat(code, g_code[g, 0], g_code[g, 1], env, tables, g_tab[g], rt, lo, hi)


# the interpreted driver: not cached (this module's run_group is the interpreter; the generated driver is)
_token_interpreted = nb.njit(token_driver)


def _driver_source(modules: list) -> str:
    """The generated driver's module: ``run_group`` dispatching each group to its program's generated
    function, then ``token_driver``'s own text, compiled with Numba's cache (one driver per set of shapes)."""
    calls = [f"    if pid == {k}:\n        return m{k}.run(env, g_base[g], g_size[g], tables, g_tab[g], imm, g_imm[g], rt, lo, hi)"
             for k in range(len(modules))]
    return "\n".join([
        "import numba as nb", "import numpy as np",
        "from mflc.simulator import kernels as K",
        "from mflc.simulator import lut as LT",
        "from mflc.simulator.fastpath import (KIND_BROADCAST, KIND_IDENTITY, KIND_INT8, KIND_LUT, KIND_PLANES,",
        "                                     PARALLEL_MIN_WEIGHTS)",
        *[f"import {m.__name__} as m{k}" for k, m in enumerate(modules)], "", "",
        "@nb.njit(inline='always')",
        "def run_group(progs, g, env, tables, rt, lo, hi):",
        "    g_tab, imm, g_imm, g_pid, g_base, g_size = progs[2], progs[3], progs[4], progs[5], progs[6], progs[7]",
        "    pid = g_pid[g]", *calls, "    return 2", "", "",
        inspect.getsource(token_driver), "",
        "token = nb.njit(cache=True)(token_driver)", ""])


def _unit_weights(s, identity: bool) -> bool:
    """Whether s is an identity (row r <- source r) or a broadcast (every row <- the one source), all weights
    1: the two patterns that forward messages, which the kernels then add without index lists."""
    rows, cols = s.shape
    if (rows != cols) if identity else (cols != 1):
        return False
    if isinstance(s, PackedSynapseGroup) and not s.decoded and s.shape[0] * s.shape[1] > (1 << 16):
        return False                      # a big ternary block: never one of these, and not worth decoding
    if s.nnz != rows or not np.array_equal(s.row_counts(), np.ones(rows, np.int64)):
        return False
    return bool(np.all(s.values == 1)) and (not identity or np.array_equal(s.indices, np.arange(rows)))


def unsupported(graph: Graph) -> list[str]:
    """What of ``graph`` the fast path cannot run (synapses with a weight shift or virtual, delta senders);
    empty if it runs the whole graph."""
    bad = [s.name for s in graph.synapses.values() if s.weight_exp != 0 or s.virtual]
    return bad + [n for n, grp in graph.groups.items() if grp.send != Send.EVERY]


class FastEngine:
    """Generation-speed executor of a placed IR; same integers as ``Engine`` (sequential schedule only)."""

    def __init__(self, graph: Graph, core_map: CoreMap | None = None, kernel: str = "packed",
                 programs: str = "compiled", threads: int | None = None):
        if kernel not in KERNELS:
            raise ValueError(f"unknown fast-path kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        self.kernel = kernel
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.threads = ThreadGovernor(threads)
        bad = unsupported(graph)
        if bad:
            raise NotImplementedError(f"fast path needs weight_exp 0 and 'every' messages; not: {', '.join(bad[:5])}")
        self.g = graph
        cm = core_map or CoreMap.one_core_per_group(graph)
        names = sorted(graph.groups, key=lambda n: graph.groups[n].stage)
        self.index = {n: k for k, n in enumerate(names)}
        G = len(names)
        self.order = np.arange(G, dtype=np.int64)
        g_code, g_ports, g_slices = np.zeros((G, 2), np.int64), np.zeros((G, 2), np.int64), np.zeros((G, 2), np.int64)
        g_out, g_size, g_tab = np.zeros(G, np.int64), np.zeros(G, np.int64), np.zeros(G, np.int64)
        codes, envs, tabs, slices, imms, modules = [], [], [], [], [], {}
        g_imm, g_pid = np.zeros(G, np.int64), np.zeros(G, np.int64)
        self.base, self.slot = {}, {}
        env_off = code_off = tab_off = 0
        for k, n in enumerate(names):
            grp = graph.groups[n]
            ep = program_for(grp, programs)
            if isinstance(ep, CompiledProgram):
                g_pid[k] = modules.setdefault(ep.module.__name__, (len(modules), ep.module))[0]
                g_imm[k] = sum(len(m) for m in imms)
                imms.append(ep.imm)
            c = ep.flat_code(env_off)                      # unused argument columns are never read
            codes.append(c)
            g_code[k] = (code_off, code_off + len(c))
            code_off += len(c)
            envs.append(ep.env.ravel())
            self.base[n], self.slot[n] = env_off, ep.slot
            port_slots = [ep.slot[p] for p in grp.ports]
            g_ports[k] = (env_off + min(port_slots) * grp.size, env_off + (max(port_slots) + 1) * grp.size) if port_slots else (0, 0)
            assert not port_slots or max(port_slots) - min(port_slots) + 1 == len(port_slots)
            g_out[k], g_size[k] = env_off + ep.output * grp.size, grp.size
            g_tab[k] = tab_off
            tabs.append(ep.tables)
            tab_off += ep.tables.size
            g_slices[k, 0] = len(slices)
            slices += merged_ranges(cm.slices[n])
            g_slices[k, 1] = len(slices)
            env_off += ep.env.size
        self.code = np.concatenate(codes) if codes else np.zeros((0, 9), np.int64)
        self.env0 = np.concatenate(envs)
        self.tables = np.concatenate(tabs)
        self.slices = np.asarray(slices, np.int64).reshape(-1, 2)
        self.g_code, self.g_ports, self.g_slices, self.g_out, self.g_size, self.g_tab = g_code, g_ports, g_slices, g_out, g_size, g_tab
        bases = np.asarray([self.base[n] for n in names], np.int64)
        imm = np.concatenate(imms) if imms else np.zeros((1, N_IMM), np.int64)
        self.progs = (self.code, g_code, g_tab, imm, g_imm, g_pid, bases, g_size)
        self._driver_module = None
        if modules:
            K.launch_threads()          # before loading a cached function that calls parallel kernels
            self._driver_module = jitcache.load("token", _driver_source([m for _, m in modules.values()]),
                                                deps=(K, LT, nbprogram, sys.modules[__name__]), what="the fast path's token driver")
        self._token = self._driver_module.token if self._driver_module else _token_interpreted
        self._unmarked = self._driver_module is not None
        self._pack_synapses(names, cm)
        maxn = max(grp.size for grp in graph.groups.values())
        self.msg16, self.outbuf = np.zeros(maxn, np.int16), np.zeros(maxn, np.int64)
        self.acc32 = np.zeros(maxn, np.int32)
        self.planes = np.zeros((self.max_plane_bits, (maxn + 63) // 64), np.uint64)
        self.ltab = np.zeros(self.max_plane_bits // 8 * LT.super_count(maxn) * LT.BLOCK_BYTES, np.uint8)
        self.host = [(graph.host_tensors[i.table], self.base[i.group] + self.slot[i.group][i.port] * graph.groups[i.group].size,
                      graph.groups[i.group].size) for i in graph.inputs]
        self.out_name = {o.name: o.group for o in graph.outputs}
        self.reset()
        self._warm_up()

    def _kind(self, s) -> int:
        """Which kernel runs synapse group s: dense blocks (at least a quarter non-zero) at 2 bits when
        ternary (``KERNELS``) or int8, everything sparser as CSR."""
        src_bits = self.g.groups[s.src].out_bits
        if _unit_weights(s, identity=True):
            return KIND_IDENTITY
        if _unit_weights(s, identity=False):
            return KIND_BROADCAST
        if s.nnz < 0.25 * s.shape[0] * s.shape[1] or s.shape[1] <= 1:
            return KIND_CSR
        packed = isinstance(s, PackedSynapseGroup) and not s.decoded      # ternary by construction
        if (self.kernel != "int8" and src_bits <= MAX_PLANE_BITS and s.shape[0] >= PLANES_MIN_ROWS
                and (packed or is_ternary(s.values))):
            lut = self.kernel == "lut" or (self.kernel == "packed" and LT.VECTOR and s.shape[0] >= LUT_MIN_ROWS)
            return KIND_LUT if lut else KIND_PLANES
        return KIND_INT8 if src_bits <= 16 else KIND_CSR

    def _pack_synapses(self, names: list[str], cm: CoreMap) -> None:
        """Synapses grouped by source in stage order, one row per destination core slice, each stored for
        its kernel (``_kind``). Row: kind, destination port offset, weight offset, columns, slice lo, hi,
        CSR pointer offset, rows, plane chunks (8-bit units of the source's message width)."""
        graph, G = self.g, len(names)
        rows, w8, ptrs, inds, vals = [], [], [np.zeros(1, np.int64)], [], []
        g_syn = np.zeros((G, 2), np.int64)
        w_off = pw_off = ptr_off = nnz_off = 0
        by_src = {n: [] for n in names}
        for s in graph.synapses.values():
            by_src[s.src].append(s)
        self.max_plane_bits = 8
        kinds = {s.name: self._kind(s) for s in graph.synapses.values()}
        # the bit planes are written straight into one array: never a second copy of the weights
        self.pw = np.zeros(max(1, sum(2 * s.shape[0] * plane_words(s.shape[1]) for s in graph.synapses.values()
                                      if kinds[s.name] == KIND_PLANES)), np.uint64)
        self.lw = np.zeros(max(1, sum(LT.tile_count(s.shape[0]) * LT.super_count(s.shape[1]) * LT.BLOCK_BYTES
                                      for s in graph.synapses.values() if kinds[s.name] == KIND_LUT)), np.uint8)
        lw_off = 0
        for k, n in enumerate(names):
            g_syn[k, 0] = len(rows)
            for s in by_src[n]:
                dst_base = self.base[s.dst] + self.slot[s.dst][s.port] * graph.groups[s.dst].size
                kind, p0, nch = kinds[s.name], 0, 0
                if kind in (KIND_PLANES, KIND_LUT):
                    if isinstance(s, PackedSynapseGroup) and not s.decoded:    # from the file's codes
                        plus, minus, _, _ = s.bit_planes()
                    else:
                        plus, minus = planes_from_csr(s.shape, s.indptr, s.indices, s.values)
                    if kind == KIND_LUT:
                        blk = LT.lut_from_planes(plus, minus, s.shape[1]).ravel()
                        self.lw[lw_off:lw_off + blk.size] = blk
                        entry = (kind, dst_base, lw_off, s.shape[1])
                        lw_off += blk.size
                    else:
                        self.pw[pw_off:pw_off + plus.size] = plus.ravel()
                        self.pw[pw_off + plus.size:pw_off + 2 * plus.size] = minus.ravel()
                        entry = (kind, dst_base, pw_off, s.shape[1])
                        pw_off += plus.size + minus.size
                    del plus, minus
                    nch = -(-graph.groups[s.src].out_bits // 8)
                    self.max_plane_bits = max(self.max_plane_bits, 8 * nch)
                elif kind == KIND_INT8:
                    blk = np.zeros(s.shape, np.int8)
                    blk[np.repeat(np.arange(s.shape[0]), s.row_counts()), s.indices] = s.values
                    w8.append(blk.ravel())
                    entry = (kind, dst_base, w_off, s.shape[1])
                    w_off += blk.size
                else:
                    ptrs.append(s.indptr[1:].astype(np.int64) + nnz_off)   # ptr[p0 + r] .. ptr[p0 + r + 1]
                    p0 = ptr_off
                    ptr_off += s.shape[0]
                    inds.append(s.indices.astype(np.int64))
                    vals.append(s.values.astype(np.int64))
                    entry = (kind, dst_base, 0, s.shape[1])
                    nnz_off += s.nnz
                for lo, hi in merged_ranges(cm.slices[s.dst]):
                    rows.append((*entry, lo, hi, p0, s.shape[0], nch))
            g_syn[k, 1] = len(rows)
        # CSR pointers: ptrs[0] is the leading 0; each synapse appended its row ends shifted by nnz_off,
        # so entry p0 + r is the start of row r and p0 + r + 1 its end (the previous synapse's last end
        # equals this synapse's start).
        self.ptr = np.concatenate(ptrs)
        self.ind = np.concatenate(inds) if inds else np.zeros(1, np.int64)
        self.val = np.concatenate(vals) if vals else np.zeros(1, np.int64)
        self.w8 = np.concatenate(w8) if w8 else np.zeros(1, np.int8)
        self.syn = np.asarray(rows, np.int64).reshape(-1, 9)
        self.g_syn = g_syn

    def _warm_up(self) -> None:
        """Compile (or load) the token driver now, on a scratch copy of the state: the tokens/s a caller
        measures from its first step never include compilation."""
        env, self.env = self.env, self.env0.copy()
        try:
            self._run_token()
        finally:
            self.env = env

    def _run_token(self) -> int:
        """The driver on the current slots: -1, or its error code."""
        bad = self._token(self.order, self.progs, self.g_out, self.g_size, self.g_ports, self.g_slices,
                          self.slices, self.env, self.tables, _RT, self.g_syn, self.syn, self.w8, self.ptr,
                          self.ind, self.val, self.pw, self.planes, self.lw, self.ltab, self.msg16, self.outbuf,
                          self.acc32)
        if self._unmarked:
            jitcache.mark_ready(self._driver_module)
            self._unmarked = False
        return bad

    def weight_bytes(self) -> int:
        """Bytes of synaptic arrays one token reads (weights, index lists, row pointers): the bandwidth bound."""
        return self.w8.nbytes + self.pw.nbytes + self.lw.nbytes + self.ind.nbytes + self.val.nbytes + self.ptr.nbytes

    def reset(self) -> None:
        """Back to the initial state (parameters loaded, registers and ports zero)."""
        self.env = self.env0.copy()

    def read(self, group: str, name: str) -> np.ndarray:
        """A copy of one slot (register, port or temporary) of a group, for states and tests."""
        grp = self.g.groups[group]
        b = self.base[group] + self.slot[group][name] * grp.size
        return self.env[b:b + grp.size].copy()

    def step(self, token: int) -> dict[str, np.ndarray]:
        """Run one token; returns the graph outputs (e.g. {'logits': ...})."""
        for table, b, n in self.host:
            if not 0 <= token < table.shape[0]:
                raise ValueError(f"token {token} outside the input table [0, {table.shape[0]})")
            self.env[b:b + n] += table[token]
        self.threads.begin()
        try:
            bad = self._run_token()
        finally:
            self.threads.end()
        if bad >= 0:
            names, G = list(self.index), len(self.index)
            if bad >= G:
                grp = self.g.groups[names[bad - G]]
                raise ValueError(f"group {names[bad - G]}: a message does not fit the {8 * -(-grp.out_bits // 8)}-bit "
                                 f"planes (or lookup tables) of its declared out_bits {grp.out_bits} (the graph's ranges are wrong)")
            raise ValueError(f"group {names[bad]}: a lut input is outside its table's domain")
        return {name: self.read(grp, self.g.groups[grp].output) for name, grp in self.out_name.items()}


def run_tokens(graph: Graph, tokens, output: str = "logits", progress=None) -> np.ndarray:
    """One output of the graph for every token of a sequence, from a fresh state: shape [len, size]."""
    fe = FastEngine(graph)
    rows = []
    for t, tok in enumerate(tokens):
        rows.append(fe.step(int(tok))[output])
        if progress:
            progress(t + 1)
    return np.stack(rows).astype(np.int64)
