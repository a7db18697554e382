"""Interpreting one neuron program: the shared inner loop of the numpy executors."""
from __future__ import annotations

import numpy as np

from mflc.ir.graph import NeuronGroup
from mflc.ir.ops import OPS


def run_program(grp: NeuronGroup, ports: dict[str, np.ndarray], regs: dict[str, np.ndarray],
                params: dict[str, np.ndarray] | None = None, env: dict | None = None) -> np.ndarray:
    """Run ``grp``'s program on its port values; updates ``regs`` in place and returns the output.
    ``env``: a dict that is left holding every value the program saw and computed (a trace reads the
    temporaries of fused programs from it)."""
    env = {} if env is None else env
    env.update(grp.params if params is None else params)
    env.update(regs)
    env.update(ports)
    for ins in grp.program:
        spec = OPS[ins.op]
        env[ins.out] = np.asarray(spec.fn([env[a] for a in ins.args], ins.imm_dict, grp.tables), dtype=np.int64)
        if ins.out in regs:
            regs[ins.out] = env[ins.out]
    out = env[grp.output]
    lim = 1 << (grp.out_bits - 1)
    if out.size and (out.min() < -lim or out.max() >= lim):
        raise OverflowError(f"group {grp.name}: output outside its {grp.out_bits}-bit message width")
    return out
