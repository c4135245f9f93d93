"""``pose3d predict`` as a user runs it, on a small untrained network: the real COCO frames with
their keypoint annotations and detections as boxes, full Human3.6M frames without boxes (the
warning), files that collide or do not read, errors that exit 2 naming the input, and the --ray path
(a subprocess, as a user starts it) giving the same joints as the in-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose3d.cli.main import main
from pose3d.model.io import save_model
from pose3d.model.net import ModelConfig, PoseNet

POSE3D = Path(sys.executable).parent / "pose3d"
COCO_PEOPLE = {"000000000785": 1, "000000040083": 3, "000000196141": 5, "000000197388": 5}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("predictcli") / "ckpt"
    save_model(folder, PoseNet(ModelConfig.small()), ModelConfig.small())
    return str(folder)


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def test_coco_frames_with_annotation_boxes_and_a_sheet(capsys, checkpoint, fixtures_dir, tmp_path):
    coco = fixtures_dir / "coco"
    code, out, err = _predict(
        capsys,
        str(coco),
        "--boxes",
        str(coco / "test_coco.json"),
        "--checkpoint",
        checkpoint,
        "--out",
        str(tmp_path / "out"),
        "--sheet",
        str(tmp_path / "sheet.png"),
    )
    assert code == 0, err
    records = _records(tmp_path / "out")
    assert {name: len(r["people"]) for name, r in records.items()} == COCO_PEOPLE
    for name, record in records.items():
        assert (tmp_path / "out" / f"{name}.png").is_file() and not record["warnings"]
        for person in record["people"]:
            x1, y1, x2, y2 = person["box"]
            side = max(x2 - x1, y2 - y1) * 1.1 / 2 + 1  # joints lie in the square the network saw
            joints = np.array(person["joints_2d_px"])
            assert np.all(np.abs(joints - [(x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5]) <= side)
    assert "4/4 images" in err and "4 images, 14 people" in err and "img/s" in err
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] > 1000 and sheet.std() > 5
    assert "contact sheet" in out


def test_coco_detections_with_a_score_threshold(capsys, checkpoint, fixtures_dir, tmp_path):
    coco = fixtures_dir / "coco"
    code, _, err = _predict(
        capsys,
        str(coco / "*.jpg"),  # a glob the shell did not expand
        "--boxes",
        str(coco / "test_coco_det_AP_H_56.json"),
        "--min-score",
        "0.9",
        "--checkpoint",
        checkpoint,
        "--out",
        str(tmp_path / "out"),
        "--json-only",
    )
    assert code == 0, err
    records = _records(tmp_path / "out")
    assert set(records) == set(COCO_PEOPLE) and not list((tmp_path / "out").glob("*.png"))
    scores = [p["box_score"] for r in records.values() for p in r["people"]]
    assert len(scores) >= 4 and min(scores) >= 0.9
    assert "detections, score >= 0.9" in records["000000000785"]["boxes_from"]


def test_full_frames_without_boxes_warn_naming_boxes(capsys, checkpoint, fixtures_dir, tmp_path):
    frames = sorted((fixtures_dir / "h36m").rglob("*.jpg"))[:2]
    code, _, err = _predict(
        capsys, *map(str, frames), "--checkpoint", checkpoint, "--out", str(tmp_path / "out"), "--json-only"
    )
    assert code == 0, err
    for frame in frames:
        assert f"{frame}: no person box given" in err
        record = json.loads((tmp_path / "out" / f"{frame.stem}.json").read_text())
        assert record["boxes_from"] == "whole image" and record["warnings"]
        assert record["people"][0]["box"] == [0, 0, record["width"], record["height"]]
    assert "--boxes FILE" in err and "2 images did not look like person crops" in err


def test_colliding_stems_and_unreadable_files(capsys, checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        cv2.imwrite(
            str(tmp_path / "in" / folder / "img.jpg"), rng.integers(0, 255, (80, 60, 3), dtype=np.uint8)
        )
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    code, _, err = _predict(
        capsys, str(tmp_path / "in"), "--checkpoint", checkpoint, "--out", str(tmp_path / "in" / "out")
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "in" / "out").iterdir()) == [
        "a__img.json",
        "a__img.png",
        "b__img.json",
        "b__img.png",
    ]
    assert f"skipped {tmp_path / 'in' / 'broken.jpg'}: not a readable image" in err
    assert "skipped 1: 1 x not a readable image" in err
    # Run again into the same folder: the outputs inside the input folder are not inputs.
    code, _, err = _predict(
        capsys, str(tmp_path / "in"), "--checkpoint", checkpoint, "--out", str(tmp_path / "in" / "out")
    )
    assert code == 0 and "2 images," in err


def test_one_box_for_one_image_with_flip_test(capsys, checkpoint, tmp_path):
    image = np.random.default_rng(5).integers(0, 255, (136, 136, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "person.jpg"), image)
    box = ["40", "10", "136", "106"]
    code, _, err = _predict(
        capsys, str(tmp_path / "person.jpg"), "--checkpoint", checkpoint, "--out", str(tmp_path / "out"),
        "--box", *box, "--flip-test",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "person.json").read_text())
    assert record["flip_test"] and record["boxes_from"] == "--box"
    joints = np.array(record["people"][0]["joints_2d_px"])
    assert joints.shape == (16, 2) and np.all(np.abs(joints - [87.5, 57.5]) <= 96 * 1.1 / 2 + 1)


def test_bad_inputs_exit_2_naming_them(capsys, checkpoint, fixtures_dir, tmp_path):
    image = str(fixtures_dir / "coco" / "000000000785.jpg")
    out = ["--out", str(tmp_path / "out")]
    missing = str(tmp_path / "no_such_checkpoint")
    code, _, err = _predict(capsys, image, "--checkpoint", missing, *out)
    assert code == 2 and missing in err
    code, _, err = _predict(
        capsys, str(tmp_path / "x.jpg"), str(tmp_path / "*.png"), "--checkpoint", checkpoint
    )
    assert code == 2 and "no images to predict" in err and "x.jpg" in err and "*.png" in err
    bad = tmp_path / "boxes.json"
    bad.write_text(json.dumps([{"image_id": 785, "bbox": [1, 2, 3, 4]}, {"image_id": 785, "bbox": [1, 2]}]))
    code, _, err = _predict(capsys, image, "--boxes", str(bad), "--checkpoint", checkpoint, *out)
    assert code == 2 and str(bad) in err and "entry 1" in err and "'bbox'" in err
    other = image.replace("000000000785", "000000040083")
    code, _, err = _predict(
        capsys, image, other, "--box", "0", "0", "9", "9", "--checkpoint", checkpoint, *out
    )
    assert code == 2 and "--box" in err and "2 images" in err
    code, _, err = _predict(capsys, image, "--checkpoint", checkpoint, "--out", str(tmp_path / "pred.png"))
    assert code == 2 and "names a folder" in err
    assert "Traceback" not in err


def test_help_explains_boxes_outputs_and_ray(capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--boxes", "image_id", "--min-score", "--box", "--sheet", "--ray", "--batch", "--device",
                   "joints_3d_mm", "a__img", "does not look like a person crop"):  # fmt: skip
        assert needle in text, needle


@pytest.mark.slow
def test_ray_path_writes_the_same_joints(capsys, checkpoint, fixtures_dir, tmp_path):
    coco = fixtures_dir / "coco"
    images = [str(coco / "000000000785.jpg"), str(coco / "000000040083.jpg")]
    common = ["--boxes", str(coco / "test_coco.json"), "--checkpoint", checkpoint, "--batch", "2"]
    code, _, err = _predict(capsys, *images, *common, "--out", str(tmp_path / "local"))
    assert code == 0, err
    env = dict(
        os.environ,
        RAY_TMPDIR=tempfile.mkdtemp(prefix="p3d-"),  # short: Ray's socket paths must fit in 107 bytes
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
        RAY_USAGE_STATS_ENABLED="0",
    )
    run = subprocess.run(
        [str(POSE3D), "predict", *images, *common, "--out", str(tmp_path / "ray"), "--ray", "--num-cpus", "4",
         "--sheet", str(tmp_path / "sheet.png")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on Ray Data" in run.stderr and "2 images, 4 people" in run.stderr
    local, ray = _records(tmp_path / "local"), _records(tmp_path / "ray")
    assert set(local) == set(ray) == {"000000000785", "000000040083"}
    for name in local:
        for a, b in zip(local[name]["people"], ray[name]["people"], strict=True):
            assert a["box"] == b["box"]
            np.testing.assert_allclose(a["joints_2d_px"], b["joints_2d_px"], atol=0.02)
            np.testing.assert_allclose(a["joints_3d_mm"], b["joints_3d_mm"], atol=0.2)
        assert (tmp_path / "ray" / f"{name}.png").is_file()
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None
