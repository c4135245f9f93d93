"""``pose3d eval`` runs as a user runs it (the console script in a subprocess)
on a small untrained network and shard sets of the three kinds: the Ray Data path and the in-memory
path give the same report; the report has its sections and figures; errors exit 2 naming the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pose3d.model.net import ModelConfig, PoseNet
from pose3d.schema import rows_to_table
from pose3d.train.checkpoint import save_checkpoint
from tests.shard_factory import make_rows, write_shard_set

POSE3D = Path(sys.executable).parent / "pose3d"
ROWS = {"synthetic_lab": 12, "synthetic_wild": 8, "synthetic_wild_test": 10}
WILD_WITH_HEAD = 6  # the other wild rows have no head box


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([str(POSE3D), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("evalcli")
    torch.manual_seed(0)
    cfg = ModelConfig(
        num_stacks=1, num_modules=1, num_features=16, num_reg_modules=1, input_size=128, output_size=32
    )
    ckpt = save_checkpoint(root / "ckpt", PoseNet(cfg), cfg)
    lab = write_shard_set(root / "lab", ROWS["synthetic_lab"], has_3d=True, seed=0, split="test")
    test = write_shard_set(
        root / "wild_test",
        ROWS["synthetic_wild_test"],
        has_3d=True,
        seed=2,
        dataset="synthetic_wild_test",
        split="test",
    )
    wild = make_rows(ROWS["synthetic_wild"], has_3d=False, seed=1, dataset="synthetic_wild", split="val")
    head = np.full(ROWS["synthetic_wild"], np.nan, np.float32)
    head[:WILD_WITH_HEAD] = 9.0  # crop px
    wild["head_size"] = head
    (root / "wild").mkdir()
    pq.write_table(rows_to_table(wild, "synthetic_wild", "val"), root / "wild" / "part-00000.parquet")
    return {
        "ckpt": str(ckpt),
        "lab": str(lab),
        "wild": str(root / "wild"),
        "test": str(test),
        "root": str(root),
    }


def _png_ok(path: Path, min_bytes: int = 8000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes, path
    img = cv2.imread(str(path))
    assert img is not None and img.std() > 5, path  # not a blank canvas


def _numbers(tree, prefix=""):
    """Flatten the numeric leaves of a JSON tree: path -> value."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}/{i}").items()}
    return {prefix: tree} if isinstance(tree, int | float) and not isinstance(tree, bool) else {}


@pytest.mark.slow
def test_eval_ray_data_matches_in_memory_and_writes_the_report(setup, tmp_path):
    data = [setup["lab"], setup["wild"], setup["test"]]
    common = [
        "--checkpoint",
        setup["ckpt"],
        "--data",
        *data,
        "--flip-test",
        "--grid",
        "4",
        "--max-rows",
        "25",
    ]
    ray_run = _run("eval", *common, "--out", str(tmp_path / "ray"), "--num-cpus", "4", "--batch-size", "4")
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    assert "rows/s" in ray_run.stderr
    mem_run = _run("eval", *common, "--out", str(tmp_path / "mem"), "--in-memory")
    assert mem_run.returncode == 0, mem_run.stderr[-3000:]

    rep = json.loads((tmp_path / "ray" / "report.json").read_text())
    mem = json.loads((tmp_path / "mem" / "report.json").read_text())
    assert rep["rows"] == mem["rows"] == 25  # the same evenly spread rows on both paths
    assert rep["options"]["flip_test"] is True
    # Same rows, same functions: the same numbers (up to float noise of different batchings).
    a, b = _numbers(rep["datasets"]), _numbers(mem["datasets"])
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key

    sets = rep["datasets"]
    assert list(sets) == ["synthetic_lab", "synthetic_wild", "synthetic_wild_test"]
    assert sum(s["rows"] for s in sets.values()) == 25
    lab, wild, test = sets["synthetic_lab"], sets["synthetic_wild"], sets["synthetic_wild_test"]
    assert set(lab["actions"]["means"]) == {"mpjpe", "mpjpe_plain", "pa_mpjpe"}
    assert {a for a, n in lab["actions"]["counts"].items() if n} == {"Walking", "Sitting"}
    assert wild["pckh"]["rows"] + wild["pckh"]["excluded_no_head_size"] == wild["rows"]
    assert wild["pckh"]["excluded_no_head_size"] >= 1
    assert test["groups"]["groups"] == ["studio_gs", "outdoor"]
    assert set(test["groups"]["means"]) == {"pck3d", "auc3d", "mpjpe"}
    assert any("univ_annot3" in note for note in test["notes"])  # the factory writes annot3
    for section in sets.values():
        assert "pred_px" in section["bone_symmetry"]

    md = (tmp_path / "ray" / "report.md").read_text()
    for heading in (
        "## Overview",
        "### Per action",
        "### PCKh per joint",
        "### Per group",
        "### Bone symmetry",
    ):
        assert heading in md
    assert "| Directions | Discussion | Eating |" in md and "| Studio GS | Outdoor | All |" in md
    for name in (
        "actions_synthetic_lab",
        "pckh_synthetic_wild",
        "groups_synthetic_wild_test",
        "samples_synthetic_lab",
        "samples_synthetic_wild",
        "samples_synthetic_wild_test",
    ):
        _png_ok(tmp_path / "ray" / f"{name}.png")
        assert f"({name}.png)" in md


def test_bad_inputs_exit_2_naming_them(setup, tmp_path):
    missing = str(tmp_path / "no_such_checkpoint")
    run = _run("eval", "--checkpoint", missing, "--data", setup["lab"], "--out", str(tmp_path / "r"))
    assert run.returncode == 2 and missing in run.stderr and "Traceback" not in run.stderr
    no_data = str(tmp_path / "no_such_shards")
    run = _run("eval", "--checkpoint", setup["ckpt"], "--data", no_data, "--out", str(tmp_path / "r"))
    assert run.returncode == 2 and no_data in run.stderr and "Traceback" not in run.stderr
