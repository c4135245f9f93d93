"""A real search on synthetic shards, through the command line: stage 1 once, 4 trials (Optuna +
ASHA, 2 at a time) interrupted with Ctrl-C after the first finished trial, ``--resume`` finishing
it without re-running finished trials, then ``pose3d best`` and the best checkpoint scored.

ASHA's choice is made certain without knowing which setting learns better in a few steps: every
training row is the same image and augmentation is off, so training is deterministic and two
trials with the same knobs report identical validation MPJPE. The trials are two pairs of twins
(lr 1e-3, lr 1e-6) started pair by pair. Whichever setting is worse at the first rung (step 2),
its twin of the second pair reaches that rung after both settings of the first pair were recorded
there: below their median, ASHA (reduction factor 2) must stop it. The rung at step 4 is not made
certain (batch-norm statistics move even at lr 1e-6, so either setting may lead there): which trials
complete varies, but the first to reach that rung always does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pose3d.schema import rows_to_table
from tests.shard_factory import make_rows, write_shard_set

pytestmark = pytest.mark.slow

SPACE = """\
seed: 0
asha: {grace_steps: 2, reduction_factor: 2}
trial_overrides: [train.val_every=2, train.checkpoint_every=2, train.log_every=2, run.keep_checkpoints=4]
start_points: [{lr: 1.0e-3}, {lr: 1.0e-6}, {lr: 1.0e-3}, {lr: 1.0e-6}]
params:
  lr:
    distribution: loguniform
    low: 1.0e-6
    high: 1.0e-3
    keys: {train.stages.2.lr: 1.0, train.stages.3.lr: 1.0}
"""
NO_AUGMENTATION = [
    "data.augment.scale=0", "data.augment.rotation_deg=0", "data.augment.rotation_prob=0",
    "data.augment.flip=false", "data.augment.color_jitter=0",
]  # fmt: skip


def _copies(folder: Path, n: int, *, has_3d: bool, seed: int, dataset: str) -> Path:
    """A shard set of ``n`` copies of one row (two files): every batch is the same."""
    folder.mkdir(parents=True)
    one = make_rows(1, has_3d=has_3d, seed=seed, dataset=dataset)
    rows = {
        k: [v[0]] * n if isinstance(v, list) else np.repeat(np.asarray(v)[:1], n, axis=0)
        for k, v in one.items()
    }
    rows["row_id"] = [f"{dataset}/train/{seed}/copy{i}" for i in range(n)]
    for k in range(2):
        part = {key: value[k * n // 2 : (k + 1) * n // 2] for key, value in rows.items()}
        pq.write_table(rows_to_table(part, dataset, "train"), folder / f"part-{k:05d}.parquet")
    return folder


def _run_cli(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    # Its own local Ray: no cluster address, and no State API address an earlier test's Ray named.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    with open(log, "a") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from pose3d.cli.main import main; sys.exit(main())", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, so a hung search can be stopped whole
        )


def _stop_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def _statuses(experiment: Path) -> dict[str, tuple[str, int]]:
    """trial id -> (status, last reported global step) from the experiment's saved state."""
    from ray.tune import ExperimentAnalysis

    if not list(experiment.glob("experiment_state-*.json")):
        return {}
    try:
        trials = ExperimentAnalysis(str(experiment)).trials
    except Exception:  # the state file is being rewritten; try again
        return {}
    return {t.trial_id: (str(t.status), int((t.last_result or {}).get("global_step", 0))) for t in trials}


def _validated(experiment: Path, trial_id: str) -> dict[int, float]:
    """global step -> validation MPJPE of a trial, from its Train run's TensorBoard events (every
    attempt's). Not from its checkpoints: a trial interrupted right after a checkpoint may resume
    from a folder Ray Train never registered, which is then removed (train.loop); nor from Tune's
    result log, which starts over for a trial resumed after the interruption."""
    from pose3d.train.tensorboard import read_scalars

    return read_scalars(str(experiment / "runs" / f"trial-{trial_id}" / "tensorboard"), ("val_mpjpe",))[
        "val_mpjpe"
    ]


def _trace(experiment: Path, trial_id: str) -> tuple[bytes, list[str]]:
    """What a trial left: Tune's result log and its Train run's checkpoint folders."""
    run = experiment / "runs" / f"trial-{trial_id}"
    return (
        (experiment / f"trial-{trial_id}" / "result.json").read_bytes(),
        sorted(p.name for p in run.glob("checkpoint_*")),
    )


def test_search_stops_resumes_and_its_best_checkpoint_evaluates(tmp_path, capsys):
    from pose3d.cli.main import main
    from pose3d.eval.score import evaluate_checkpoint
    from pose3d.model.io import load_model
    from pose3d.model.net import PoseNet
    from tune import best

    shards = tmp_path / "shards"
    lab = _copies(shards / "lab", 32, has_3d=True, seed=0, dataset="synthetic_lab")
    wild = _copies(shards / "wild", 32, has_3d=False, seed=1, dataset="synthetic_wild")
    val = write_shard_set(shards / "val", 16, has_3d=True, seed=2, split="test")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    storage, experiment, log = tmp_path / "runs", tmp_path / "runs" / "s", tmp_path / "tune.log"
    overrides = [
        f"data.set_3d={lab}", f"data.set_2d={wild}", f"data.val_3d={val}", "model.num_features=16",
        "data.batch_size=8", "data.val_rows=16", "train.stages.1.steps=2", "train.stages.2.steps=4",
        "train.stages.3.steps=4", "model.input_size=64", "model.output_size=16", "data.preprocess_actors=1",
        "data.epochs_per_pass=1", *NO_AUGMENTATION,
    ]  # fmt: skip
    # 12 logical CPUs: two trials at once, each with its Train worker, Ray Data actors and read
    # tasks (6 CPUs a trial by derive_concurrency; fewer can starve a pipeline for good).
    common = ["--storage", str(storage), "--name", "s", "--num-cpus", "12"]

    # 1. The search, interrupted (SIGINT, as Ctrl-C) once its saved state shows a finished trial.
    proc = _run_cli(
        ["tune", "--config", "demo", "--search", str(space), "--samples", "4", "--concurrency", "2",
         *common, *overrides],
        log, tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 1200
        while proc.poll() is None and time.monotonic() < deadline:
            if any(status == "TERMINATED" for status, _ in _statuses(experiment).values()):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(2)
        rc = proc.wait(timeout=600)
    finally:
        _stop_if_running(proc)  # timed out: its Ray must not outlive the test
    assert rc == 130, f"expected an interrupted search (exit 130), got {rc}:\n{_tail(log)}"
    assert "pose3d tune --resume" in log.read_text()
    before = _statuses(experiment)
    finished = {tid for tid, (status, _) in before.items() if status == "TERMINATED"}
    assert finished and len(finished) < 4, before
    traces = {tid: _trace(experiment, tid) for tid in finished}
    assert (experiment / "pose3d_search.json").is_file()
    assert len(list((experiment / "runs" / "stage1").glob("checkpoint_*"))) >= 1

    # 2. --resume finishes the search; the trials finished before are not run again.
    resumed = _run_cli(["tune", "--resume", *common], log, tmp_path)
    try:
        rc = resumed.wait(timeout=1200)
    finally:
        _stop_if_running(resumed)
    assert rc == 0, _tail(log)
    after = _statuses(experiment)
    assert len(after) == 4 and all(status == "TERMINATED" for status, _ in after.values()), after
    assert set(before) <= set(after)
    for tid in finished:
        assert _trace(experiment, tid) == traces[tid], f"finished trial {tid} ran again"
    assert len(list((experiment / "runs" / "stage1").glob("checkpoint_*"))) >= 1  # stage 1 not redone

    # 3. Twins reported the same MPJPE; ASHA stopped the twin of the setting worse at step 2.
    trials = best.collect(str(experiment))
    step2 = {t.trial_id: _validated(experiment, t.trial_id)[2] for t in trials}
    groups = {lr: [t for t in trials if t.params["lr"] == lr] for lr in (1e-3, 1e-6)}
    assert [len(g) for g in groups.values()] == [2, 2]
    for g in groups.values():
        assert step2[g[0].trial_id] == step2[g[1].trial_id], "training is not deterministic"
    worse, better = sorted(groups.values(), key=lambda g: -step2[g[0].trial_id])
    assert step2[worse[0].trial_id] != step2[better[0].trial_id]
    states = [(t.params["lr"], t.state(), t.steps_done) for t in trials]
    # Stopped at step 2; or, when the search was interrupted between the trial's step-2 checkpoint
    # and Tune seeing that result, stopped by the replayed step-2 result at its first step after
    # resuming (tune/asha.py).
    said = log.read_text()
    replayed = [t for t in worse if f"trial {t.trial_id} stops: a result replayed on resume" in said]
    assert any(t.stopped_early and (t.steps_done == 2 or t in replayed) for t in worse), states
    assert not any(t.steps_done == 2 for t in better)
    assert any(t.state() == "completed" and t.steps_done == 8 for t in trials), (states, after)
    assert all(t.steps_planned == 8 for t in trials)
    assert [t.score for t in trials] == sorted(t.score for t in trials)
    # Every trial's TensorBoard events sit under the experiment, so one logdir shows the search.
    assert all(any((experiment / "runs" / f"trial-{t.trial_id}" / "tensorboard").iterdir()) for t in trials)

    # 4. pose3d best lists and exports the best; its checkpoint loads and scores as it validated.
    export = tmp_path / "best"
    capsys.readouterr()
    assert main(["best", str(experiment), "--top", "2", "--export", str(export)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [row.split(" | ")[1] for row in table[2:]] == [trials[0].trial_id, trials[1].trial_id]
    assert len(table) == 4
    folders = sorted(export.glob("rank*"))
    assert [f.name for f in folders] == [f"rank{k + 1}-trial-{trials[k].trial_id}" for k in (0, 1)]
    top = folders[0]
    assert (top / "config.yaml").is_file() and (top / "metrics.json").is_file()
    assert isinstance(load_model(top / "checkpoint"), PoseNet)
    scores = evaluate_checkpoint(str(top / "checkpoint"), str(val))
    assert scores["rows"] == 16
    # The same 16 validation rows, the same weights: the MPJPE it reported when it was saved.
    assert scores["model"]["mpjpe"] == pytest.approx(trials[0].best_metrics["val_mpjpe"], abs=0.01)
