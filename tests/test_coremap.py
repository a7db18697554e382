"""The shared core map: default labels number each chip's cores in order, and a map that leaves a
neuron or a group unplaced says which."""
import numpy as np
import pytest

from mflc.ir.coremap import CoreMap
from mflc.ir.errors import ConfigError


def test_default_labels_count_cores_per_chip():
    cm = CoreMap({"A": [(0, 3, 0), (3, 5, 2)], "B": [(0, 1, 1)]}, np.array([0, 1, 0]))
    assert cm.labels == [(0, 0), (1, 0), (0, 1)] and cm.n_cores == 3
    assert cm.core_of_neurons("A", 5).tolist() == [0, 0, 0, 2, 2]


def test_unplaced_neurons_and_groups_are_named():
    cm = CoreMap({"A": [(0, 3, 0)]}, np.array([0]))
    with pytest.raises(ConfigError, match=r"neurons of group A unplaced \(the first is neuron 3\)"):
        cm.core_of_neurons("A", 5)
    with pytest.raises(ConfigError, match="does not place group B"):
        cm.core_of_neurons("B", 1)


def test_labels_must_match_cores():
    with pytest.raises(ConfigError, match="1 core label.s. for 2 core"):
        CoreMap({}, np.array([0, 0]), [(0, 0)])
