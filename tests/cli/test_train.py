"""``pose3d train`` as a user runs it: a run starved of CPUs is explained, and a run stopped by Ctrl-C
or SIGKILL resumes from the checkpoint it announced, leaving no Ray process and no stray folder."""

from __future__ import annotations

import os
import re
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
        f"data.set_3d={lab}", f"data.set_2d={wild}", "data.val_3d=", f"run.storage_path={tmp_path / 'runs'}",
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
            # The watchdog repeats every stall_warn_s: on a slow day the first warning may come
            # before Ray Data asked for the actor; what waits is named from then on.
            if "no training step for" in line and "cannot start yet" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    warning = next(
        (line for line in seen if "no training step for" in line and "cannot start yet" in line), None
    )
    assert warning is not None, "".join(seen[-30:])
    # The preprocessing actor (Ray fuses the source-tagging map into it) is named as what waits.
    assert re.search(r"cannot start yet \(MapWorker\(.*BatchPreprocessor\)", warning), warning
    assert "0 of 3 CPUs free" in warning and "lower data.preprocess_actors" in warning


def _ray_processes_of(marker: str) -> list[int]:
    """PIDs of live processes whose command line holds ``marker`` (this test's Ray temp folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def _read_until(proc: subprocess.Popen, text: str, lines: list[str], timeout_s: float = 240) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False
        lines.append(line)
        if text in line:
            return True
    return False


def _orphans(run_dir: Path) -> list[str]:
    import json

    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    registered = {r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]}
    return sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir() and p.name not in registered)


def _wait_for_no_ray_processes(ray_tmp: str) -> None:
    deadline = time.monotonic() + 20  # the reaper stops what the driver left within seconds
    while _ray_processes_of(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_processes_of(ray_tmp) == []


def test_a_stopped_run_resumes_from_what_it_announced(tmp_path):
    """One run stopped twice, each time resumed by the same command: Ctrl-C (SIGINT) says where it
    stopped and where the re-run resumes; then SIGKILL of the resumed run's whole process group.
    After each stop no Ray process of the run is left; the third start finishes from the last
    checkpoint it announced, and no unregistered checkpoint folder remains."""
    lab = write_shard_set(tmp_path / "lab", 16, has_3d=True, seed=0)
    wild = write_shard_set(tmp_path / "wild", 16, has_3d=False, seed=1, dataset="synthetic_wild")
    ray_tmp = tempfile.mkdtemp(prefix="p3d-")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    args = [
        POSE3D, "train", "--config", "demo", "--num-cpus", "8",
        f"data.set_3d={lab}", f"data.set_2d={wild}", "data.val_3d=", f"run.storage_path={tmp_path / 'runs'}",
        "run.name=r",
        "model.num_features=16", "data.batch_size=8", "train.stages.1.steps=4", "train.stages.2.steps=8",
        "train.stages.3.steps=0", "train.checkpoint_every=3", "train.log_every=1", "run.keep_checkpoints=2",
    ]  # fmt: skip
    lines: list[str] = []
    # 1. Ctrl-C after the checkpoint of step 3.
    proc = _start(args, env)
    try:
        assert _read_until(proc, "checkpoint at global step 3", lines), "".join(lines[-30:])
        os.kill(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal reaches the driver
        out, _ = proc.communicate(timeout=60)
        lines.append(out)
        assert proc.returncode == 130, "".join(lines[-30:])
        said = r"interrupted after step (\d+) \(SIGINT\); the same command resumes from step (\d+)"
        match = re.search(said, out)
        assert match and int(match.group(1)) >= int(match.group(2)) >= 3, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    _wait_for_no_ray_processes(ray_tmp)
    # 2. The same command resumes; its whole process group is killed after the checkpoint of step 9.
    lines.clear()
    proc = _start(args, env)
    try:
        assert _read_until(proc, "checkpoint at global step 9", lines), "".join(lines[-30:])
        resumed = re.search(r"resumed from checkpoint at global step (\d+)", "".join(lines))
        assert resumed and int(resumed.group(1)) >= 3, "".join(lines[-30:])
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its process group
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    _wait_for_no_ray_processes(ray_tmp)
    # 3. Once more: it resumes from the checkpoint of step 9 (or later) and finishes.
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    resumed = re.search(r"resumed from checkpoint at global step (\d+)", output)
    assert resumed and int(resumed.group(1)) >= 9, output[-3000:]
    assert "global_step=12" in output
    assert _orphans(tmp_path / "runs" / "r") == []
