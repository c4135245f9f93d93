"""Issue 4's integration test: a job submitted to a real 2-node cluster (`ray start`) trains with 2
workers on different nodes through all three stages and writes checkpoints to the storage path."""

from __future__ import annotations

import pytest
import yaml

from tests.cluster_fixture import local_cluster, run_submit  # noqa: F401  (the fixture)
from tests.shard_factory import write_shard_set

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_submitted_training_job_spans_two_nodes(local_cluster, tmp_path):  # noqa: F811
    lab = write_shard_set(tmp_path / "lab", 48, has_3d=True, seed=0)
    wild = write_shard_set(tmp_path / "wild", 48, has_3d=False, seed=1, dataset="synthetic_wild")
    val = write_shard_set(tmp_path / "val", 16, has_3d=True, seed=2, split="test")
    storage = tmp_path / "runs"  # one machine: a local path is shared storage for both nodes
    args = [
        "train", "--config", "demo", "--name", "two-nodes", "--storage", str(storage), "--workers", "2",
        "scaling.placement_strategy=STRICT_SPREAD", "scaling.cpus_per_worker=1",
        f"data.set_3d={lab}", f"data.set_2d={wild}", f"data.val_3d={val}", "data.val_rows=16",
        "data.batch_size=8", "model.num_features=16", "run.keep_checkpoints=10",
        "train.stages.1.steps=2", "train.stages.2.steps=2", "train.stages.3.steps=2",
        "train.log_every=1", "train.checkpoint_every=2",
    ]  # fmt: skip
    done = run_submit(local_cluster, args, submit_options=["--env", "RAY_DATA_DISABLE_PROGRESS_BARS=1"])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "SUCCEEDED" in done.stderr + done.stdout
    assert "[stage 3/3] step 2/2" in done.stdout  # the job's log was streamed back
    # Ray Train's per-report INFO lines are held back (run.ray_train_log_level); rank 0 names each
    # checkpoint it saved.
    assert "Reporting training result" not in done.stdout
    assert "checkpoint at global step 6: " in done.stdout

    checkpoints = sorted(p for p in (storage / "two-nodes").glob("checkpoint_*") if p.is_dir())
    assert checkpoints
    stages = set()
    for ckpt in checkpoints:
        metrics = yaml.safe_load((ckpt / "metrics.yaml").read_text())
        assert metrics["nodes"] == 2  # the two workers ran on different nodes
        stages.add(int(metrics["stage"]))
        assert (ckpt / "model.pt").is_file() and (ckpt / "config.yaml").is_file()
    assert stages == {1, 2, 3}


STATE_API_PROBE = """
import json, os, ray
from pose3d.infra.ray_session import init_ray

init_ray(num_cpus=2)

@ray.remote
def probe():
    from ray.util.state import list_actors
    list_actors(limit=1)  # auto-detection would see two Ray instances here and raise
    return os.environ.get("RAY_API_SERVER_ADDRESS")

print(json.dumps({"inside": ray.get(probe.remote()), "driver": os.environ["RAY_API_SERVER_ADDRESS"]}))
ray.shutdown()
"""


def test_local_ray_names_its_state_api_beside_another_instance(local_cluster):  # noqa: F811
    """Train's placement-group cleaner queries the State API from inside Ray; with another Ray on
    the machine (this module's cluster) it must still find the local instance's own dashboard."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    done = subprocess.run(
        [sys.executable, "-c", STATE_API_PROBE], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["inside"] == seen["driver"]
    assert seen["driver"].startswith("http://127.0.0.1:")
    assert local_cluster.dashboard_url.rstrip("/") != seen["driver"]
