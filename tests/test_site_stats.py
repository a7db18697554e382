"""The site statistics: the grid rounding they measure and the figures they report on known inputs."""
import numpy as np

from mflc.compiler.model.site_stats import quantize_on_grid


def test_grid_rounds_and_saturates():
    q = quantize_on_grid(np.array([0.26, -0.26, 10.0, -10.0, 0.124]), 0.25, 4)
    assert np.array_equal(q, np.array([0.25, -0.25, 1.75, -2.0, 0.0]))


def test_gaussian_sqnr_matches_theory():
    """A uniform quantizer's noise is step²/12; a Gaussian with the scale set at 4 sigma over 8 bits
    has SQNR 10 log10(12 sigma² / step²) ~ 40.9 dB."""
    v = np.random.default_rng(0).standard_normal(200_000)
    step = 4.0 / 127
    q = quantize_on_grid(v, step, 8)
    clip = np.abs(v) > 4.0 + step / 2
    sqnr = 10 * np.log10(np.mean(v[~clip] ** 2) / np.mean((v - q)[~clip] ** 2))
    assert abs(sqnr - 10 * np.log10(12 / step ** 2)) < 0.2
