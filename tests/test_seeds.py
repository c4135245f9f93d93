"""Random numbers keyed by the run's seed and a row's identity (pose3d.seeds)."""

import numpy as np
from scipy import stats

from pose3d import seeds


def test_a_rows_key_does_not_depend_on_its_batch():
    ids = ["synthetic_lab/train/S1/0001", "a", "ü-row", "synthetic_wild/train/x/12"]
    together = seeds.row_keys(ids)
    alone = np.concatenate([seeds.row_keys([i]) for i in ids])  # narrower byte arrays, other padding
    np.testing.assert_array_equal(together, alone)
    assert len(set(together.tolist())) == len(ids)
    # FNV-1a of "a" (the published test vector).
    assert seeds.row_keys(["a"])[0] == 0xAF63DC4C8601EC8C


def test_derive_depends_on_every_part_and_its_order():
    keys = {int(seeds.derive(*parts)) for parts in [(0,), (1,), (0, 1), (1, 0), (0, 0), (0, 1, 2)]}
    assert len(keys) == 6
    assert int(seeds.derive(7, 3)) == int(seeds.derive(7, 3))
    per_row = seeds.derive(7, 3, np.arange(5, dtype=np.uint64))
    assert per_row.shape == (5,) and int(per_row[2]) == int(seeds.derive(7, 3, 2))
    assert 0 <= seeds.derive_int(2**70, -1) < 2**63


def test_uniforms_are_uniform_and_a_function_of_the_key():
    keys = seeds.derive(0, np.arange(20000, dtype=np.uint64))
    u = seeds.uniforms(keys, 3)
    assert u.shape == (20000, 3) and u.min() >= 0 and u.max() < 1
    for column in u.T:
        assert stats.kstest(column, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # a row's numbers look independent
    np.testing.assert_array_equal(seeds.uniforms(keys[5:6], 3), u[5:6])
