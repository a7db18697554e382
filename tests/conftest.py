import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from mflc.compiler.model.config import preset
from mflc.compiler.model.quantize import quantize

from util import random_weights

# Tables in CLI tests must not depend on the width of whatever terminal (or none) runs pytest: rich reads
# COLUMNS when mflc.cli creates its consoles, which happens after this file is imported.
os.environ["COLUMNS"] = "200"
# Kernels generated per neuron program are cached on disk (simulator/jitcache.py): the tests keep theirs in the
# checkout (reused across local runs, empty on CI's clean clone), never in the user's own cache.
os.environ.setdefault("MFLC_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "mflc-tests"))

# Property tests check integers, not speed: a busy machine (CI beside other work, Numba compiling on first
# use) must not fail an example for taking longer than hypothesis' default 200 ms deadline.
settings.register_profile("mflc", deadline=None)
settings.load_profile("mflc")


@pytest.fixture(scope="session")
def tiny_model():
    cfg = preset("tiny")
    return cfg, random_weights(cfg, 0)


@pytest.fixture(scope="session")
def tiny_qm(tiny_model):
    cfg, w = tiny_model
    rng = np.random.default_rng(0)
    return quantize(cfg, w, [rng.integers(0, cfg.vocab_size, 128)])
