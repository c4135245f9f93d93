"""Elastic training on a real 2-node local cluster (issue 15): a run with ``--workers 1:2`` loses its
second node mid-run, continues on one worker from its last checkpoint, grows back to two when the
node returns, keeps the exact global batch and mix throughout, and finishes its steps.

The test prints the run's timeline (seconds since submission, global step, workers, event). It runs
with ``make test-elastic``, not ``make test``: about 8 minutes on 2 cores, where each step takes ~2 s
(Ray Data's split coordinators spin, issue 13), and a node restarted under that load has failed to
start (its raylet timed out waiting for its dashboard agent) in 2 of 4 runs."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from pose3d.infra.local_cluster import LocalCluster
from tests.cluster_fixture import POSE3D_BIN, REPO_ROOT, start_local_cluster, stop_and_check
from tests.shard_factory import write_shard_set

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.elastic]

PROGRESS = re.compile(r"\(global (\d+)/(\d+)\).* (\d+) workers?\b")
CHECKPOINT = re.compile(r"checkpoint at global step (\d+)")
CHECKPOINT_EVERY = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # 12 logical CPUs a node and 7 a worker: one worker per node (scaling.torch_threads=1 keeps it to
    # one thread), and 5 CPUs a node for Ray Data: its actor and read task per set fit on one node.
    started = start_local_cluster(tmp_path_factory.mktemp("ray-elastic"), cpus_per_node=12)
    try:
        yield started
    finally:
        stop_and_check(started)


class _JobLog:
    """The submitted job's output, read in a thread: progress (step, workers) and checkpoints seen."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.t0 = proc, time.monotonic()
        self.lines: list[str] = []
        self.progress: list[tuple[float, int, int]] = []  # (t, global step, workers)
        self.checkpoints: list[tuple[float, int]] = []
        self.total = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t = time.monotonic() - self.t0
            self.lines.append(line)
            if m := PROGRESS.search(line):
                self.progress.append((t, int(m[1]), int(m[3])))
                self.total = int(m[2])
            if m := CHECKPOINT.search(line):
                self.checkpoints.append((t, int(m[1])))

    def wait_for(self, what: str, test, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if test():
                return time.monotonic() - self.t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"waited for {what}; the job's last lines:\n" + "".join(self.lines[-40:]))


def test_a_lost_node_shrinks_the_run_and_its_return_grows_it(cluster, tmp_path):
    # One pass of 1024 rows a set outlasts the run (4 rows a set a step): a new pass restarts Ray
    # Data's actors, seconds without a step, which would blur the timeline.
    lab = write_shard_set(tmp_path / "lab", 1024, has_3d=True, shards=8, seed=0)
    wild = write_shard_set(tmp_path / "wild", 1024, has_3d=False, shards=8, seed=1, dataset="synthetic_wild")
    storage = tmp_path / "runs"  # one machine: a local path is shared storage for both nodes
    args = [
        "train", "--config", "demo", "--name", "elastic", "--storage", str(storage), "--workers", "1:2",
        "scaling.cpus_per_worker=7", "scaling.torch_threads=1", "scaling.resize_interval_s=5",
        "run.max_failures=-1",
        f"data.set_3d={lab}", f"data.set_2d={wild}", "data.val_3d=", "data.batch_size=8",
        "data.preprocess_actors=1", "model.num_features=16", "run.keep_checkpoints=3",
        "train.stages.1.steps=2", "train.stages.2.steps=2", "train.stages.3.steps=140",
        "train.log_every=1", f"train.checkpoint_every={CHECKPOINT_EVERY}",
    ]  # fmt: skip
    submit = [str(POSE3D_BIN), "submit", "--address", cluster.dashboard_url, "--env",
              "RAY_DATA_DISABLE_PROGRESS_BARS=1", "--", *args]  # fmt: skip
    proc = subprocess.Popen(
        submit, cwd=REPO_ROOT, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log = _JobLog(proc)
    timeline: list[tuple[float, int, int, str]] = []
    try:
        # 1. Two workers, past a checkpoint: then the second node is lost.
        log.wait_for(
            "a checkpoint on 2 workers",
            lambda: any(w == 2 for _, _, w in log.progress) and any(s >= 10 for _, s in log.checkpoints),
            600,
        )
        step_at_kill = log.progress[-1][1]
        announced = max(s for _, s in log.checkpoints)
        timeline.append((log.progress[-1][0], step_at_kill, 2, "training on 2 workers"))
        t_kill = time.monotonic() - log.t0
        cluster.kill_node("node2")
        timeline.append(
            (t_kill, step_at_kill, 2, f"node2 killed (last checkpoint announced: step {announced})")
        )

        # 2. Training goes on with one worker; then the node comes back.
        t_one = log.wait_for("training on 1 worker", lambda: any(w == 1 for _, _, w in log.progress), 600)
        first_one = next(p for p in log.progress if p[2] == 1)
        timeline.append((first_one[0], first_one[1], 1, "training again, on 1 worker"))
        cluster.restart_node("node2")
        t_back = time.monotonic() - log.t0
        timeline.append((t_back, log.progress[-1][1], 1, "node2 back in the cluster"))

        # 3. Back to two workers; the run finishes its steps.
        log.wait_for(
            "training on 2 workers again", lambda: any(w == 2 and t > t_back for t, _, w in log.progress), 600
        )
        first_two = next(p for p in log.progress if p[2] == 2 and p[0] > t_back)
        timeline.append((first_two[0], first_two[1], 2, "training again, on 2 workers"))
        returncode = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    timeline.append((time.monotonic() - log.t0, log.progress[-1][1], log.progress[-1][2], "run finished"))
    print("\nelastic run timeline (s since submit, global step, workers, event):")
    for t, step, workers, event in timeline:
        print(f"  {t:7.1f}  step {step:4d}  {workers} worker(s)  {event}")

    assert returncode == 0, "".join(log.lines[-60:])
    assert log.progress[-1][1] == log.total  # every configured step trained
    # The restart on one worker resumed from the last checkpoint: at most one interval of steps lost.
    resumed = [int(m[1]) for m in map(re.compile(r"resumed from checkpoint at global step (\d+)").search,
                                       log.lines) if m]  # fmt: skip
    assert resumed, "no resume in the job log"
    assert announced <= resumed[0] <= step_at_kill and step_at_kill - resumed[0] <= CHECKPOINT_EVERY
    assert first_one[1] == resumed[0] + 1
    assert t_one > t_kill and first_two[0] > t_back

    # Every step's batch held the global size and mix, whatever the workers (TensorBoard, rank 0).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(storage / "elastic" / "tensorboard"))
    events.Reload()
    scalar = lambda tag: {e.step: e.value for e in events.Scalars(tag)}  # noqa: E731
    sizes, rows, rows_3d = scalar("world_size"), scalar("global_batch_rows"), scalar("global_3d_rows")
    assert set(sizes) == set(range(1, log.total + 1))
    assert set(sizes.values()) == {1.0, 2.0}
    nodes = scalar("nodes")  # two workers ran on two nodes (one worker fills a node's CPUs)
    assert all(nodes[step] == sizes[step] for step in sizes)
    assert set(rows.values()) == {8.0} and set(rows_3d.values()) == {4.0}  # demo: half 2D, stage 1 both
