"""data_prep.readers.common: camera pickles load through a restricted unpickler."""

from __future__ import annotations

import collections
import json
import os
import pickle

import numpy as np
import pytest

from data_prep.readers import common, h36m, mpi3dhp


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_values_and_numpy_arrays_load(tmp_path):
    value = collections.OrderedDict(
        a=np.arange(6, dtype=np.float64).reshape(2, 3), b=[1, 2.5, "x", (True, None)], c=np.float32(3.0)
    )
    path = tmp_path / "cameras.pkl"
    path.write_bytes(pickle.dumps(value))
    loaded = common.load_plain_pickle(path)
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["b"] == value["b"] and loaded["c"] == 3.0


def test_a_crafted_camera_pickle_is_refused_by_name_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "cameras.pkl"
    path.write_bytes(pickle.dumps({("S1", "54138969"): {"R": _RunsCode(str(marker))}}))
    with pytest.raises(common.UnsafePickleError, match=r"names (posix|os)\.system") as err:
        h36m.load_cameras(path)
    assert str(path) in str(err.value)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "cameras_test.pkl").write_bytes(pickle.dumps({"TS1": {"f": _RunsCode(str(marker))}}))
    with pytest.raises(common.UnsafePickleError, match="refused"):
        mpi3dhp.find_cameras(tmp_path / "raw", "cameras_test.pkl")
    assert not marker.exists()
    json.dumps(str(err.value))  # a one-line message, printable as is
