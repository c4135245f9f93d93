"""A real 2-node local Ray cluster for tests, and a way to submit pose3d jobs to it as a user would.

    from tests.cluster_fixture import local_cluster, run_submit  # noqa: F401  (the fixture)

    @pytest.mark.cluster
    @pytest.mark.slow
    def test_x(local_cluster):
        done = run_submit(local_cluster, ["train", "--config", "demo", "--workers", "2", ...])
        assert done.returncode == 0, done.stderr

The cluster: a head and one worker node, each ``ray start --block`` with 4 logical CPUs and a 200 MB
object store, their own ports, temp dirs and auth token; node ``i`` has the resource ``node{i}: 1``.
``local_cluster.address`` (GCS), ``.dashboard_url`` (Jobs API), ``.token``, ``.env()`` (for
subprocesses: token auth, RAY_ADDRESS, RAY_API_SERVER_ADDRESS, PATH with the venv). Teardown
stops exactly its processes and fails the test if one survives.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pose3d.infra.local_cluster import LocalCluster, is_running

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The project's ``pose3d`` command (same environment as the test run and the cluster nodes).
POSE3D_BIN = Path(sys.executable).parent / "pose3d"


def start_local_cluster(directory: Path, num_nodes: int = 2, cpus_per_node: int = 4) -> LocalCluster:
    cluster = LocalCluster(directory, num_nodes=num_nodes, cpus_per_node=cpus_per_node, object_store_mb=200)
    # ~12 s on an idle 2-core machine; generous for one loaded by other work.
    return cluster.start(timeout_s=240.0)


def stop_and_check(cluster: LocalCluster) -> None:
    """Stop the cluster; fail if any process it ran is still running afterwards."""
    if cluster.state is None:
        return
    seen = cluster.pids()
    seen |= cluster.stop()
    survivors = sorted(p for p in seen if is_running(p))
    assert not survivors, f"local cluster processes survived stop: {survivors}"


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A started 2-node cluster shared by the tests of one module."""
    cluster = start_local_cluster(tmp_path_factory.mktemp("ray-cluster"))
    try:
        yield cluster
    finally:
        stop_and_check(cluster)


def run_submit(
    cluster: LocalCluster,
    pose3d_args: list[str],
    submit_options: list[str] | None = None,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
) -> subprocess.CompletedProcess:
    """``pose3d submit [options] -- ARGS`` against ``cluster`` in a subprocess, as a user runs it
    (from the checkout, so the working dir is uploaded). Returns the finished process (text)."""
    cmd = [str(POSE3D_BIN), "submit", "--address", cluster.dashboard_url, *(submit_options or [])]
    return subprocess.run(
        [*cmd, "--", *pose3d_args],
        cwd=cwd,
        env=cluster.env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
