"""``pose3d train`` as a user runs it: a run starved of CPUs is explained, not silent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.shard_factory import write_shard_set

POSE3D = str(Path(sys.executable).with_name("pose3d"))

pytestmark = pytest.mark.slow


def test_a_run_starved_of_cpus_says_what_waits_and_what_to_change(tmp_path):
    lab = write_shard_set(tmp_path / "lab", 16, has_3d=True, seed=0)
    wild = write_shard_set(tmp_path / "wild", 16, has_3d=False, seed=1, dataset="synthetic_wild")
    # The one training worker takes every CPU of the local Ray: the preprocessing actors never start.
    args = [
        POSE3D, "train", "--config", "demo", "--num-cpus", "3",
        f"data.set_3d={lab}", f"data.set_2d={wild}", f"run.storage_path={tmp_path / 'runs'}",
        "scaling.cpus_per_worker=3", "train.stall_warn_s=10", "model.num_features=16",
    ]  # fmt: skip
    ray_tmp = tempfile.mkdtemp(prefix="p3d-")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    seen, deadline = [], time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "no training step for" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    warning = next((line for line in seen if "no training step for" in line), None)
    assert warning is not None, "".join(seen[-30:])
    assert "cannot start yet (MapWorker(MapBatches(BatchPreprocessor))" in warning
    assert "0 of 3 CPUs free" in warning and "lower data.preprocess_actors" in warning
