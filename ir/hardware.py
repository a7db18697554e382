"""The hardware figures of Loihi 2: the one place any of them is written.

``HardwareProfile`` holds every figure with its unit, source and confidence (``FIGURES`` collects them;
docs/layout.md prints the same table). Everything that depends on a figure reads it from a profile: the
IR validator (``ir_limits``: message, state, accumulator and weight widths, the synaptic delay), the op
library's default widths (``mflc.ir.fixedpoint.MSG_BITS_MAX`` ... are the default profile's values), the
partitioner, placer and layout checker and the cost model (``mflc.compiler.chip``), and the Lava back-end
(which checks that a profile asks for nothing Lava's fixed-point models cannot run). A user overrides any
figure with a JSON hardware profile (``load_profile``) or ``--hw FIGURE=VALUE`` (``resolve_profile``); the
overridden figure then carries that as its source.

The figures live in ir/ (which imports nothing else of ours) because the IR validator checks graphs
against them; the costing of a core's contents is the compiler's (``mflc.compiler.chip.hardware``, which
re-exports this module). The cost model's times and energies are ``CostParams`` constants of
``mflc.compiler.chip.costmodel``, written there only, with their own sources and ``--cost-params`` file.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import ConfigError
from .schema import read_json

# ---- sources ------------------------------------------------------------------------------------------
INTEL_BRIEF = ("Intel Labs, 'Taking neuromorphic computing to the next level with Loihi 2', technology brief "
               "(2021): 128 neurocores per chip, up to 1 M neurons (8,192 per core) and 120 M synapses per chip")
LOCAL_SRAM = ("Loihi 2 launch coverage of the Intel brief (e.g. fbhtechinfo.com, 2021): '128 Kbyte of local SRAM "
              "for each core, flexibly partitioned'; equal to Loihi 1's 16,384 x 64-bit synapse memory "
              "(nengo-loihi block.py); 120 M synapses/chip over 120-128 cores is ~1 M one-bit weights per core")
FLEX_192 = ("assumption: the project's reading of the Intel brief gives up to 192 KB of flexibly allocated memory "
            "per core (not found in the stored copies); 192 KB - 128 KB of synaptic memory = 64 KB for neuron "
            "state, i.e. 64 bits for each of 8,192 neurons")
OPEN_NEURO = "open-neuromorphic.org Loihi 2 page and secondary summaries: '120-128 neuro-cores per chip'"
DAVIES_2018 = ("M. Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), "
               "2018 (Loihi 1: 4,096 input axons and 4,096 output axons per core); Loihi 2's figures are not public")
AXONS = ("assumption scaled from " + DAVIES_2018 + ": Loihi 1 had 4,096 input and 4,096 output axons for 1,024 "
         "neurons per core (4 per neuron); at Loihi 2's 8,192 neurons per core the same ratio gives 32,768 (4,096 "
         "would not give every neuron of a full core even one route)")
PAPER = ("Abreu, Shrestha, Zhu, Eshraghian, arXiv:2503.18002: weights quantized to 8 bits on chip; Lava Dense "
         "num_weight_bits <= 8 (lava proc/dense)")
LAVA_STATE = "Lava fixed-point neuron models (proc/lif, proc/graded): 24-bit state words"
LAVA_ACC = "Lava Dense fixed point accumulates in int32"
LAVA_MSG = "Lava proc/graded, proc/prodneuron: 24-bit graded-spike payload"
DELAY = ("assumption: Loihi 2's synaptic delay is programmable per synapse but its largest value is not published; "
         "Lava's DelayDense takes up to 63 (LAVA_LIMITS); we assume 62 steps")
ESTIMATE_ROUTES = (DAVIES_2018 + " (constraint 3: 4,096 output axons per core). Only the stand-in placement of "
                   "estimates without a layout (costmodel.packed_core_map) uses it, as a cost assumption; the "
                   "compiler's layout checks max_axons_out")
ASSUMED = "assumption (no public figure)"
LAVA_MAPPER = ("lava-nc/lava src/lava/magma/compiler/subcompilers/constants.py (commit b6822fb): "
               "NUM_VIRTUAL_CORES_L3 = 120, which mapper.py uses for N3LogicalNeuroCore (the Loihi 2 neurocore); "
               "128 is NUM_VIRTUAL_CORES_L2 (Loihi 1) and the Intel brief's physical count")
LAVA_COST_DB = ("lava-dl tutorials/lava/lib/dl/netx/yolo_kp/run.ipynb (commit d825ac5), 'Per core utilization': "
                "a core of 3,584 neurons is 'Neurons 87.52%' (capacity ~4,096) and one neuron group 'NeuronGr "
                "12.50%' (8 groups per core)")
SYNMEM_UNITS = ("lava-dl netx oxford/run.ipynb and pilotnet_snn/benchmark.ipynb printed violations: "
                "self.cost_db.registers['SynMem']=12000 units per core")
SYNMEM_UNIT_BITS = ("assumption: the size of the compiler's SynMem unit is not published; 64 bits (Loihi 1's "
                    "synapse memory word, nengo-loihi block.py) makes 12,000 units 96 KiB of the 128-192 KiB a "
                    "core has. Core counts do not depend on it (costs and the limit scale together)")
SYNMEM_FIT = ("fitted by mflc.compiler.chip.calibration to the compiler's SynMem allocations of six published "
              "dense layers (Oxford 256->200 and 200->256; PilotNet SNN 2560->100, 100->50, 50->10, 10->1): "
              "units per input axon = ceil(axon + n * (synapse + weight_bit * w)) for n neurons of w-bit weights "
              "on the core, within 2.5 % of every layer")
SYNMEM_FIT_RANGE = ("the cheapest (low: 0.195 units per 2-bit synapse) and the dearest (high: 0.236) coefficient "
                    "sets within 5 % of all six layers (calibration.coefficient_range)")
RATIO_RULE = ("lava-dl netx oxford/run.ipynb, pilotnet_snn/benchmark.ipynb: a violation prints the whole layer's "
              "allocation on one core, and the layer then occupies ceil(allocation / limit) cores or a multiple of it "
              "(61,440 / 12,000 -> 12 cores = 2 x 6): the compiler splits a layer by the ratio, then splits again")
NARROW = ("Lava proc/dense: num_weight_bits is set per connection process (w_scale = 8 - num_weight_bits + "
          "weight_exp + isMixed()), and the sign mode (mixed, excitatory, inhibitory) per process: the synaptic "
          "memory of a group holds num_weight_bits per weight")

# ---- what Lava's fixed-point models run ----------------------------------------------------------------
# Fixed by Lava, not by a profile: its graded spikes carry 24 bits, its neuron state words are 24 bits, Dense
# and Sparse accumulate in int32, num_weight_bits is at most 8, DelayDense / DelaySparse take delays up to 63.
# The default profile's widths are these; the Lava back-end (mflc.simulator.lava_backend.lava_problems)
# refuses a profile that asks for more than any of them (a narrower figure is fine: a graph within it runs
# on Lava unchanged).
LAVA_LIMITS = dict(max_msg_bits=24, state_word_bits=24, accumulator_bits=32, weight_bits=8, max_synapse_delay=63)


def _fig(default, unit: str, source: str, confidence: str, note: str = "", low=None, high=None, range_note: str = "",
         group: str = ""):
    """A figure: its value, unit, source and confidence, and where it is uncertain the low and high values a
    range or a sensitivity study moves it to (``range_note`` says where those come from). Figures of one
    ``group`` move together: their low values form one consistent set, their high values another."""
    return field(default=default, metadata=dict(unit=unit, source=source, confidence=confidence, note=note,
                                                low=low, high=high, range_note=range_note, group=group))


@dataclass(frozen=True)
class HardwareProfile:
    """The figures of one Loihi 2 configuration. All sizes are integers; memory is counted in bits."""

    name: str = "loihi2-lava"
    neurons_per_core: int = _fig(4096, "neurons", LAVA_COST_DB, "medium",
                                 "Lava's cost database; the brief's 1 M neurons per chip / 128 cores is 8,192",
                                 low=4096, high=8192, range_note="cost database 4,096; Intel brief 8,192")
    neuron_groups_per_core: int = _fig(8, "neuron groups", LAVA_COST_DB, "medium",
                                       "distinct neuron groups (populations, one program each) on one core",
                                       low=8, high=32, range_note="cost database 8; 32 is an assumption")
    cores_per_chip: int = _fig(120, "cores", LAVA_MAPPER, "high",
                               "neurocores the compiler addresses; the chip has 128 physically",
                               low=120, high=128, range_note="Lava's mapper 120; Intel brief 128")
    synaptic_memory_bits: int = _fig(12000 * 64, "bits", SYNMEM_UNITS + "; x 64 bits per unit (" + SYNMEM_UNIT_BITS + ")",
                                     "medium", "loihi2-lava: 12,000 SynMem units of synmem_unit_bits each; "
                                     "loihi2-ideal: 128 KiB")
    synmem_model: int = _fig(1, "0 or 1", SYNMEM_FIT, "medium",
                             "1: synapses costed as Intel's compiler does (per input axon, calibrated units); "
                             "0: ideal packing of weight bits (dense or sparse, whichever is smaller)")
    synmem_unit_bits: int = _fig(64, "bits per SynMem unit", SYNMEM_UNIT_BITS, "low")
    synmem_axon_milli: int = _fig(0, "1/1000 SynMem unit per input axon list", SYNMEM_FIT, "low",
                                  "the list header an input axon's synapses on one core cost",
                                  low=410, high=0, range_note=SYNMEM_FIT_RANGE, group="synmem_fit")
    synmem_synapse_milli: int = _fig(187, "1/1000 SynMem unit per synapse", SYNMEM_FIT, "medium",
                                     "a stored synapse's cost independent of its weight width",
                                     low=153, high=212, range_note=SYNMEM_FIT_RANGE, group="synmem_fit")
    synmem_weight_bit_milli: int = _fig(17, "1/1000 SynMem unit per weight bit", SYNMEM_FIT, "medium",
                                        "what each bit of weight width adds to a synapse",
                                        low=21, high=12, range_note=SYNMEM_FIT_RANGE, group="synmem_fit")
    partition_rule: int = _fig(1, "0 or 1", RATIO_RULE, "medium",
                               "1: a group is split into ceil(usage / limit) equal pieces, and each piece again "
                               "while it does not fit (the compiler's rule); 0: the largest pieces that fit",
                               low=0, high=1, range_note="the largest pieces that fit (0); the compiler's rule (1)")
    neuron_memory_bits: int = _fig(64 * 1024 * 8, "bits", FLEX_192, "low", "64 KiB of neuron state per core",
                                   low=32 * 1024 * 8, high=128 * 1024 * 8, range_note="assumption: half and twice")
    program_memory_instr: int = _fig(1024, "microcode instructions", ASSUMED + ": neuron microcode store per core",
                                     "low", low=512, high=4096, range_note="assumption")
    microcode_per_op: int = _fig(8, "microcode instructions per IR op", ASSUMED
                                 + ": an op-library instruction (rescale, lut, rms_apply, ...) expands to <= 8 "
                                 "microcode instructions", "low", low=4, high=16, range_note="assumption")
    max_axons_in: int = _fig(32768, "input axons", AXONS, "low", "Loihi 1: 4,096",
                             low=4096, high=65536, range_note="Loihi 1's 4,096; twice the assumption")
    max_axons_out: int = _fig(32768, "routing entries", AXONS, "low",
                              "(neuron, destination core) pairs; Loihi 1: 4,096",
                              low=4096, high=65536, range_note="Loihi 1's 4,096; twice the assumption")
    weight_bits: int = _fig(LAVA_LIMITS["weight_bits"], "bits per weight", PAPER, "medium",
                            "the widest weight a synapse group stores; with narrow_weights each group is stored "
                            "at the narrowest width holding its values (ternary: 2), else every group at this")
    narrow_weights: int = _fig(1, "0 or 1", NARROW, "medium",
                               "1: each synapse group at its narrowest width <= weight_bits (Lava num_weight_bits); "
                               "0: every group at weight_bits. Setting weight_bits alone (--hw weight_bits=8, "
                               "a profile file) sets 0: that width is then the one stored")
    sparse_index_bits: int = _fig(13, "bits per sparse synapse index", ASSUMED
                                  + ": a neuron index within a core (log2 8192)", "low")
    row_overhead_bits: int = _fig(32, "bits per stored row", ASSUMED + ": one list header word per (row, synapse group)",
                                  "low")
    state_word_bits: int = _fig(LAVA_LIMITS["state_word_bits"], "bits", LAVA_STATE, "medium",
                                 "registers, parameters, tables and every instruction result")
    accumulator_bits: int = _fig(LAVA_LIMITS["accumulator_bits"], "bits per dendritic accumulator slot", LAVA_ACC,
                                  "medium", "bounds every synapse group's worst-case accumulation")
    neuron_overhead_bits: int = _fig(16, "bits per neuron", ASSUMED + ": per-neuron configuration (program pointer, "
                                     "flags)", "low")
    max_msg_bits: int = _fig(LAVA_LIMITS["max_msg_bits"], "bits", LAVA_MSG, "high",
                             "widest graded spike: bounds a message's and a partial sum's width")
    max_synapse_delay: int = _fig(62, "algorithmic steps", DELAY, "low", "largest delay of a synapse group")
    estimate_routes_per_core: int = _fig(4096, "routing entries", ESTIMATE_ROUTES, "low",
                                         "Loihi 1's figure; fan-out limit of estimates without a layout only")
    sources: dict = field(default_factory=dict, compare=False)   # figure -> (source, confidence) of overrides
    ranges: dict = field(default_factory=dict, compare=False)    # figure -> (low, high, note) where a profile differs

    def figure(self, key: str) -> dict:
        """One figure with its unit, source and confidence (a user override's source if it has one), for reports."""
        f = {x.name: x for x in fields(self)}[key]
        src, conf = self.sources.get(key, (f.metadata["source"], f.metadata["confidence"]))
        rng = self.ranges.get(key, (f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("range_note", "")))
        return dict(name=key, value=getattr(self, key), unit=f.metadata["unit"], source=src, confidence=conf,
                    note=f.metadata.get("note", ""), low=rng[0], high=rng[1], range_note=rng[2])

    def uncertain(self) -> list[tuple[str, list[str]]]:
        """The uncertain figures as (label, figures moved together), in table order: a figure with different
        low and high values alone, or a group (the calibration fit's coefficients) as one. Figures the
        profile does not use (the fit's coefficients under ideal packing) are left out."""
        unused = ({"synmem_axon_milli", "synmem_synapse_milli", "synmem_weight_bit_milli"} if not self.synmem_model
                  else set())
        out: list[tuple[str, list[str]]] = []
        meta = {x.name: x.metadata for x in fields(self)}
        for k in FIGURE_KEYS:
            f = self.figure(k)
            if k in unused or f["low"] is None or f["high"] is None or f["low"] == f["high"]:
                continue
            group = meta[k].get("group") or k
            for label, members in out:
                if label == group:
                    members.append(k)
                    break
            else:
                out.append((group, [k]))
        return out

    def figures(self) -> list[dict]:
        """Every figure of the profile in table order, for reports and `mflc hardware`."""
        return [self.figure(k) for k in FIGURE_KEYS]

    def to_dict(self) -> dict:
        """The profile as layout.json and build.json record it (values and overridden sources)."""
        return dict(name=self.name, **{k: getattr(self, k) for k in FIGURE_KEYS},
                    sources={k: list(v) for k, v in self.sources.items()})

    def ir_limits(self) -> dict[str, int]:
        """The figures the IR validator checks a graph against: ``mflc.ir.validate.problems(g, **hw.ir_limits())``."""
        return dict(msg_bits=self.max_msg_bits, state_bits=self.state_word_bits, acc_bits=self.accumulator_bits,
                    weight_bits=self.weight_bits, max_delay=self.max_synapse_delay)

    @classmethod
    def from_dict(cls, d: dict, source: str = "layout") -> "HardwareProfile":
        """A profile read back from a layout or build file, checked, errors naming ``source``. A file written
        before the synaptic-memory models existed (no ``synmem_model``) was costed by ideal packing."""
        old = isinstance(d, dict) and "synmem_model" not in d
        return _profile_from_mapping(d, source, base=PROFILES["loihi2-ideal"] if old else cls())


FIGURE_KEYS = tuple(f.name for f in fields(HardwareProfile) if "unit" in f.metadata)
FIGURES: dict[str, dict] = {k: HardwareProfile().figure(k) for k in FIGURE_KEYS}

IDEAL_SYNMEM = ("Intel brief, press: '128 Kbyte of local SRAM for each core, flexibly partitioned'; 192 KB of "
                "flexible memory per core (brief, as transcribed); 96 KiB = 12,000 compiler units of 64 bits")
_IDEAL = dict(name="loihi2-ideal", neurons_per_core=8192, synaptic_memory_bits=128 * 1024 * 8, synmem_model=0,
              partition_rule=0)
PROFILES: dict[str, HardwareProfile] = {
    # Intel's compiler as its published output shows it: the default (docs/layout.md says why)
    "loihi2-lava": HardwareProfile(),
    # every synaptic bit used, the chip's brief figures: the most a core could hold, not what a compiler packs
    "loihi2-ideal": HardwareProfile(
        **_IDEAL,
        sources={"neurons_per_core": (INTEL_BRIEF, "high"), "synaptic_memory_bits": (LOCAL_SRAM, "medium"),
                 "synmem_model": ("ideal packing of weight bits: the upper bound of what a core holds", "assumption"),
                 "partition_rule": ("the largest pieces that fit a core", "assumption")},
        ranges={"synaptic_memory_bits": (96 * 1024 * 8, 192 * 1024 * 8, IDEAL_SYNMEM)}),
}
DEFAULT_PROFILE = "loihi2-lava"
# names that earlier versions of mflc wrote into layouts and builds, and their profiles today
ALIASES = {"loihi2": DEFAULT_PROFILE, "loihi2_120": "loihi2-ideal"}
DEFAULT = PROFILES[DEFAULT_PROFILE]     # what every reader of a figure uses when it is given no profile


def profile_named(name: str) -> HardwareProfile | None:
    """A built-in profile by its name or an old alias; None when there is none of that name."""
    return PROFILES.get(ALIASES.get(name, name))


# ---- the width a synapse group's weights are stored at (compiler cost, Lava num_weight_bits) -------------
def weight_range(s) -> tuple[int, int] | None:
    """(min, max) of the group's weights ((0, 0) when it has none); a virtual group's ``meta["weight_range"]``,
    else [-1, 1] for a ternary one, [1, 1] for identity / reduce / broadcast ones (as the real ones), else
    None (unknown)."""
    if s.virtual:
        r = s.meta.get("weight_range")
        if r is not None:
            return int(r[0]), int(r[1])
        kind = s.meta.get("kind")
        if kind == "ternary":
            return -1, 1
        return (1, 1) if kind in ("identity", "reduce", "broadcast") else None     # weight-1 by construction
    return s.value_range()


def narrowest_weight_bits(lo: int, hi: int) -> int:
    """The narrowest weight width holding [lo, hi] exactly in Lava's sign modes, i.e. its ``num_weight_bits``:
    mixed signs need a signed width (as bits_for_range: {-1, 0, 1} -> 2, [-5, 5] -> 4); one sign stores the
    magnitude only (EXCITATORY / INHIBITORY: [0, 1] -> 1, [0, 5] -> 3); at least 1."""
    if lo < 0 < hi:
        b = 1
        while lo < -(1 << (b - 1)) or hi > (1 << (b - 1)) - 1:
            b += 1
        return b
    return max(1, max(abs(lo), abs(hi)).bit_length())


def weight_width(s, hw: "HardwareProfile") -> int:
    """Bits per stored weight of ``s`` (mflc.compiler.chip.hardware): its narrowest width, at most ``weight_bits``, or
    ``weight_bits`` when ``narrow_weights`` is 0 or the range of a virtual group is unknown."""
    if not hw.narrow_weights:
        return int(hw.weight_bits)
    r = weight_range(s)
    return int(hw.weight_bits) if r is None else min(int(hw.weight_bits), narrowest_weight_bits(*r))


# ---- profile files ----------------------------------------------------------------------------------------
_MIN = {"row_overhead_bits": 0, "neuron_overhead_bits": 0, "sparse_index_bits": 1, "max_synapse_delay": 0,
        "narrow_weights": 0, "synmem_model": 0, "partition_rule": 0, "synmem_axon_milli": 0,
        "synmem_weight_bit_milli": 0}
_MAX = {"narrow_weights": 1, "synmem_model": 1, "partition_rule": 1}


def _profile_from_mapping(raw, source: str, base: HardwareProfile) -> HardwareProfile:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a hardware profile must be a JSON object of figures, got {type(raw).__name__}")
    kw: dict = {}
    sources = dict(base.sources)
    for key, val in raw.items():
        if key in ("base", "sources", "ranges"):
            continue
        if key == "name":
            if not isinstance(val, str) or not val:
                raise ConfigError(f"{source}: 'name' must be a non-empty string, got {val!r}")
            kw["name"] = val
            continue
        if key not in FIGURE_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}; known figures: {', '.join(FIGURE_KEYS)} "
                              "(and 'name', 'base')")
        src, conf = f"hardware profile {source}", "user"
        if isinstance(val, dict):
            extra = set(val) - {"value", "source", "confidence"}
            if extra or "value" not in val:
                raise ConfigError(f"{source}: {key!r} as an object takes 'value' (required), 'source', 'confidence'; "
                                  f"got keys {sorted(val)}")
            src, conf = str(val.get("source", src)), str(val.get("confidence", conf))
            val = val["value"]
        lo = _MIN.get(key, 1)
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ConfigError(f"{source}: {key!r} must be an integer >= {lo}, got {val!r}")
        if key in _MAX and val > _MAX[key]:
            raise ConfigError(f"{source}: {key!r} must be an integer from {lo} to {_MAX[key]}, got {val!r}")
        kw[key] = val
        sources[key] = (src, conf)
    if "weight_bits" in kw and "narrow_weights" not in raw:
        # a width asked for is the width stored (--hw weight_bits=8 is the paper's 8-bit layout); a layout
        # file writes both figures, so its own setting is kept
        kw["narrow_weights"] = 0
        sources["narrow_weights"] = (f"hardware profile {source}: weight_bits given without narrow_weights", "user")
    if isinstance(raw.get("sources"), dict):        # as written by to_dict (layout files)
        for k, v in raw["sources"].items():
            if k in FIGURE_KEYS and isinstance(v, (list, tuple)) and len(v) == 2:
                sources[k] = (str(v[0]), str(v[1]))
    return replace(base, sources=sources, **kw)


def load_profile(path) -> HardwareProfile:
    """A hardware profile from a JSON file: {"figure": value or {"value", "source", "confidence"}, ...},
    optionally "name" and "base" (a built-in profile to start from, default loihi2)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: hardware profile file not found (the built-in profiles: {', '.join(PROFILES)})")
    raw = read_json(p, ConfigError)
    base_name = raw.get("base", DEFAULT_PROFILE) if isinstance(raw, dict) else DEFAULT_PROFILE
    if profile_named(str(base_name)) is None:
        raise ConfigError(f"{p}: 'base' is {base_name!r}; choose one of {', '.join(PROFILES)}")
    hw = _profile_from_mapping(raw, str(p), profile_named(str(base_name)))
    if "name" not in raw:
        hw = replace(hw, name=f"{base_name} + {p.name}")
    return hw


def resolve_profile(spec, overrides: list[str] | None = None) -> HardwareProfile:
    """A built-in profile by name (loihi2-lava, loihi2-ideal), a JSON file, or the default when None; then
    ``overrides``, "figure=value" strings (the CLI's --hw), for what-if questions without a file."""
    if spec is None:
        hw = DEFAULT
    elif isinstance(spec, HardwareProfile):
        hw = spec
    elif profile_named(str(spec)) is not None:
        hw = profile_named(str(spec))
    elif not Path(str(spec)).suffix and not Path(str(spec)).exists():
        raise ConfigError(f"no hardware profile named {spec!r}: the built-in ones are {', '.join(PROFILES)} "
                          "(or give a JSON profile file, docs/layout.md)")
    else:
        hw = load_profile(spec)
    if not overrides:
        return hw
    raw: dict = {}
    for item in overrides:
        key, sep, val = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--hw {item!r}: expected FIGURE=VALUE, e.g. weight_bits=2")
        try:
            raw[key] = int(val)
        except ValueError:
            raise ConfigError(f"--hw {item!r}: VALUE must be an integer") from None
    out = _profile_from_mapping(raw, "--hw", hw)
    return replace(out, name=f"{hw.name} + " + ", ".join(f"{k}={v}" for k, v in raw.items()))


