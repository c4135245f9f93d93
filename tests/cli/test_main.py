"""The installed ``pose3d`` console script, run as a user would."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.shard_factory import write_shard_set

POSE3D = str(Path(sys.executable).parent / "pose3d")


def run(*args, cwd=None):
    return subprocess.run([POSE3D, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    for command in ("prep", "train", "demo", "bench"):
        assert command in out.stdout


@pytest.mark.parametrize("command", [("train",), ("demo",), ("bench", "loss"), ("bench", "train")])
def test_subcommand_help(command):
    out = run(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: pose3d" in out.stdout


def test_train_resolves_packaged_configs_from_any_folder(tmp_path):
    out = run(
        "train",
        "--config",
        "paper",
        "--print-config",
        "train.stages.3.steps=5",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["train"]["stages"][2]["steps"] == 5 and cfg["scaling"]["num_workers"] == 2
    assert cfg["model"]["num_stacks"] == 2


def test_train_bad_input_is_one_clear_line(tmp_path):
    out = run("train", "--config", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2
    assert "missing.yaml" in out.stderr and "Traceback" not in out.stderr
    out = run("train", "--config", "demo", "data.ratio_2d=2")
    assert out.returncode == 2 and "data.ratio_2d" in out.stderr and "Traceback" not in out.stderr


def test_train_workers_takes_a_count_or_min_max():
    out = run("train", "--workers", "2:x", "--print-config")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    error = out.stderr.strip().splitlines()[-1]  # the usage above it names MIN:MAX too
    assert (
        error == "pose3d train: error: argument --workers: expected a count (4) or MIN:MAX (2:8), got '2:x'"
    )


def test_train_refuses_a_missing_shard_set_before_starting_ray(tmp_path):
    # The demo config's data.val_3d is the demo's own output: on a fresh clone it does not exist.
    lab = write_shard_set(tmp_path / "lab", 4, has_3d=True, seed=0)
    wild = write_shard_set(tmp_path / "wild", 4, has_3d=False, seed=1, dataset="synthetic_wild")
    missing = tmp_path / "no-such-val"
    out = run(
        "train", "--config", "demo", f"data.set_3d={lab}", f"data.set_2d={wild}", f"data.val_3d={missing}",
        f"run.storage_path={tmp_path / 'runs'}",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert f"data.val_3d: {missing}: no such file or folder" in out.stderr
    assert "Traceback" not in out.stderr and "starting a local Ray" not in out.stderr


def test_tune_vary_is_checked_before_anything_runs(tmp_path):
    out = run("tune", "--preset", "ablation", "--config", "demo", "--vary", "data.set_2d.1.path=a,b")
    assert out.returncode == 2 and "data.set_2d.1.path is not searchable" in out.stderr, out.stderr
    out = run("tune", "--preset", "ablation", "--config", "demo", "--vary", "data.set_2d.1.weight")
    assert out.returncode == 2 and "expected KEY=V1,V2" in out.stderr, out.stderr
    out = run("tune", "--config", "demo", "--search", "demo", "--vary", "data.set_2d.1.weight=0,1")
    assert out.returncode == 2 and "--vary belongs to --preset ablation" in out.stderr, out.stderr


def test_the_demo_table_names_the_training_seed():
    from pose3d.cli.demo import format_table

    summary = {"mpjpe": 150.0, "pa_mpjpe": 120.0, "pck3d": 0.5, "auc3d": 0.2, "pck2d": 0.6}
    ev = {"rows": 10, "model": summary, "baseline": summary}
    table = format_table(ev, {"total": 1.0}, seed=3)
    first = "Synthetic wild test set: 10 people; training seed 3 (train.seed=N for another)"
    assert table.splitlines()[0] == first
    assert "| MPJPE, paper protocol (mm) | 150.0 | 150.0 |" in table


def test_an_interrupted_run_names_the_later_of_its_last_progress_line_and_its_newest_checkpoint(
    tmp_path, monkeypatch
):
    """Ray may shut down with the progress line of a checkpointed step still on its way to the
    driver: the note then says the checkpoint's step, never a step before the one it resumes from."""
    from pose3d.cli import train as train_cli
    from pose3d.model.net import PoseNet
    from pose3d.train import checkpoint
    from pose3d.train.config import load_config

    cfg = load_config("demo", [f"run.storage_path={tmp_path}", "run.name=r", "model.num_features=8"])
    monkeypatch.setattr(train_cli.LAST_STEP, "step", None)
    assert train_cli._interrupted_note(cfg, "SIGINT") == (
        "interrupted (SIGINT); no checkpoint was written; the same command starts the run from step 0"
    )
    folder = tmp_path / "r" / "checkpoint_2026-01-01_00-00-04.000000"
    checkpoint.save_checkpoint(
        folder, PoseNet(cfg.model), cfg.model, stage=1, global_step=4, config={"run": {}}
    )
    for seen, said in ((3, 4), (5, 5)):
        monkeypatch.setattr(train_cli.LAST_STEP, "step", seen)
        assert train_cli._interrupted_note(cfg, "SIGINT") == (
            f"interrupted after step {said} (SIGINT); the same command resumes from step 4 ({folder})"
        )
