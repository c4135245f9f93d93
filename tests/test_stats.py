"""Spreads over seeds: mean, standard deviation, t-interval, paired differences (pose3d.stats)."""

import math

import numpy as np
import pytest

from pose3d.stats import paired_difference, spread


def test_spread_is_the_t_interval_of_the_textbook():
    s = spread([10.0, 12.0, 14.0])
    assert (s.mean, s.std, s.n) == (12.0, 2.0, 3)
    # t(0.975, 2) = 4.3027: half-width 4.3027 x 2 / sqrt(3)
    assert s.half_width == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    assert s.format() == "12.0 ± 5.0"
    assert s.excludes_zero() and s.low == pytest.approx(12 - s.half_width)


def test_one_run_has_no_interval_and_nan_runs_do_not_count():
    one = spread([5.0, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.half_width)
    assert one.format() == "5.0 (n=1)" and not one.excludes_zero()
    assert spread([]).n == 0


def test_pairing_by_seed_removes_the_shared_part():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 20, 8)  # what a seed does to both configurations
    a = {seed: 100 + shared[seed] + rng.normal(0, 1) for seed in range(8)}
    b = {seed: 103 + shared[seed] + rng.normal(0, 1) for seed in range(8)}
    paired = paired_difference(a, b)
    unpaired = spread(list(a.values())).half_width + spread(list(b.values())).half_width
    assert paired.n == 8 and paired.excludes_zero() and paired.high < 0
    assert paired.half_width < unpaired / 5
    assert paired_difference(a, {0: 1.0, 99: 2.0}).n == 1  # only the seeds both have
