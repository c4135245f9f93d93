"""The COCO keypoints reader (issue 16): on small COCO files written here (mapping, pelvis rule,
skips counted by reason, head size, person box, bad images, unknown formats, layouts), on the real
sample in shared/fixtures/coco, and through ``pose3d prep coco``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import crop, writer
from data_prep.readers import coco
from data_prep.records import PersonSample, Quarantined
from pose3d import geometry, skeleton
from pose3d.data.shards import load_shards_numpy

J = skeleton.JOINT_INDEX
K = {name: i for i, name in enumerate(coco.KEYPOINT_NAMES)}
REPO = Path(__file__).resolve().parents[2]
POSE3D = Path(sys.executable).parent / "pose3d"
CATEGORY = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(coco.KEYPOINT_NAMES)}

#: A standing person facing the camera (the subject's right on the image's left), px.
STANDING = {
    "nose": (100, 40, 2), "left_eye": (104, 36, 2), "right_eye": (96, 36, 2), "left_ear": (110, 38, 1),
    "right_ear": (90, 38, 2), "left_shoulder": (125, 70, 2), "right_shoulder": (75, 70, 2),
    "left_elbow": (130, 110, 2), "right_elbow": (70, 110, 1), "left_wrist": (132, 150, 2),
    "right_wrist": (68, 150, 2), "left_hip": (115, 160, 2), "right_hip": (85, 160, 1),
    "left_knee": (116, 220, 2), "right_knee": (84, 220, 2), "left_ankle": (117, 280, 1),
    "right_ankle": (83, 280, 2),
}  # fmt: skip


def _keypoints(points: dict[str, tuple[float, float, int]]) -> list[float]:
    flat = np.zeros((17, 3))
    for name, value in points.items():
        flat[K[name]] = value
    return flat.ravel().tolist()


def _person(ann_id: int, image_id: int, points: dict, bbox=(60, 20, 80, 280), **extra) -> dict:
    ann = {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "keypoints": _keypoints(points),
        "num_keypoints": sum(v > 0 for _, _, v in points.values()), "bbox": list(bbox) if bbox else None,
        "area": 0.55 * bbox[2] * bbox[3] if bbox else None, "segmentation": [],
    }  # fmt: skip
    ann.update(extra)
    return {k: v for k, v in ann.items() if v is not None}


def _jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())


def _write(root: Path, images: list[dict], annotations: list[dict], split: str = "val", **top) -> Path:
    """The official layout: annotations/person_keypoints_<split>2017.json, images in <split>2017/."""
    path = root / "annotations" / f"person_keypoints_{split}2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "info": {},
        "licenses": [],
        "categories": [CATEGORY],
        "images": images,
        "annotations": annotations,
    }
    path.write_text(json.dumps({**data, **top}))
    for n, image in enumerate(images):
        _jpeg(root / f"{split}2017" / image["file_name"], image["width"], image["height"], n)
    return path


def _read(root: Path, split: str = "val", **options) -> list[PersonSample | Quarantined]:
    return [r for task in coco.list_tasks(str(root), split, **options) for r in coco.read_task(task)]


def _counts(records) -> tuple[list[PersonSample], Counter]:
    samples = [r for r in records if isinstance(r, PersonSample)]
    reasons = Counter(crop.reason_category(r.reason) for r in records if isinstance(r, Quarantined))
    return samples, reasons


# --- the 16 joints, the head size, the box ----------------------------------------------------


def test_keypoints_map_into_the_16_with_the_pelvis_from_both_hips() -> None:
    full = np.asarray(_keypoints(STANDING)).reshape(1, 17, 3)
    one_hip = full.copy()
    one_hip[0, K["right_hip"]] = 0  # unlabelled
    joints, visible = coco.map_keypoints(np.concatenate([full, one_hip]))
    assert joints.shape == (2, 16, 2) and visible.shape == (2, 16)
    ours = np.array([i for i, s in enumerate(skeleton.COCO17.source) if s >= 0])
    src = np.array([skeleton.COCO17.source[i] for i in ours])
    assert len(ours) == 12  # ankles, knees, hips, wrists, elbows, shoulders
    np.testing.assert_array_equal(joints[0, ours], full[0, src, :2])
    # v = 1 (labelled but hidden) counts as annotated, like v = 2.
    assert full[0, K["right_hip"], 2] == 1 and visible[0, J["r_hip"]] and visible[0, J["r_elbow"]]
    assert visible[0, ours].all()
    # The pelvis: the hips' midpoint when both are labelled, else not visible (and (0, 0)).
    np.testing.assert_array_equal(joints[0, J["pelvis"]], [100, 160])
    assert visible[0, J["pelvis"]] and not visible[1, J["pelvis"]] and not visible[1, J["r_hip"]]
    np.testing.assert_array_equal(joints[1, [J["pelvis"], J["r_hip"]]], 0.0)
    # COCO has no thorax, upper neck or head top.
    for name in ("thorax", "upper_neck", "head_top"):
        assert not visible[:, J[name]].any()
    assert visible[0].sum() == 13 and visible[1].sum() == 11


def test_head_size_rule_and_nominal_head_box() -> None:
    joints = np.zeros((4, 16, 2))
    visible = np.zeros((4, 16), bool)
    visible[:, [J["r_shoulder"], J["l_shoulder"], J["r_hip"], J["l_hip"]]] = True
    # 0: shoulders 100 px apart, torso 200 px: the torso rules (0.42 x 200 = 84 > 0.56 x 100).
    # 1: seen side-on, shoulders 10 px apart: still 84. 2: bent towards the camera, torso 100 px,
    # shoulders 200 px: 0.56 x 200 = 112. 3: no left hip: NaN.
    for n, (half_width, torso) in enumerate([(50, 200), (5, 200), (100, 100), (50, 200)]):
        joints[n, J["r_shoulder"]], joints[n, J["l_shoulder"]] = (
            (300 - half_width, 100),
            (300 + half_width, 100),
        )
        joints[n, J["r_hip"]], joints[n, J["l_hip"]] = (290, 100 + torso), (310, 100 + torso)
    visible[3, J["l_hip"]] = False
    sizes = coco.head_sizes(joints, visible)
    np.testing.assert_allclose(sizes[:3], [84.0, 84.0, 112.0])
    assert np.isnan(sizes[3])
    keypoints = np.zeros((4, 17, 3))
    keypoints[0, [K["nose"], K["left_ear"]]] = [(300, 60, 2), (310, 50, 1)]  # face mean (305, 55)
    boxes = coco.head_boxes(keypoints, joints, sizes)
    diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(0.6 * diag[:3], sizes[:3])  # PCKh's normalizer is 0.6 x the diagonal
    np.testing.assert_allclose((boxes[0, :2] + boxes[0, 2:]) / 2, [305, 55])  # on the face
    np.testing.assert_allclose((boxes[1, :2] + boxes[1, 2:]) / 2, [300, 100])  # no face: the shoulders
    assert np.isnan(boxes[3]).all()


def test_person_box_is_coco_bbox_centre_and_longer_side() -> None:
    centre, side = coco.person_boxes(np.array([[10.0, 20.0, 40.0, 100.0], [0.0, 0.0, 30.0, 10.0]]))
    # COCO boxes are continuous px (image edge at 0); the project's pixel centres sit at integers.
    np.testing.assert_allclose(centre, [[29.5, 69.5], [14.5, 4.5]])
    np.testing.assert_allclose(side, [100.0, 30.0])
    _, wider = coco.person_boxes(np.array([[10.0, 20.0, 40.0, 100.0]]), margin=1.25)
    np.testing.assert_allclose(wider, [125.0])


# --- the reader on files written here ---------------------------------------------------------


def _scene(root: Path) -> Path:
    images = [
        {"id": 7, "file_name": "000000000007.jpg", "width": 320, "height": 300},
        {"id": 3, "file_name": "000000000003.jpg", "width": 200, "height": 320},
    ]
    few = {k: STANDING[k] for k in ("left_knee", "right_knee", "left_ankle")}
    face = {k: STANDING[k] for k in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")}
    annotations = [
        _person(31, 7, {}, bbox=(150, 10, 160, 120), iscrowd=1, num_keypoints=0),  # crowd
        _person(30, 7, STANDING),
        _person(32, 7, STANDING, bbox=(5, 5, 20, 40)),  # area 440 px²: tiny
        _person(34, 7, face),  # 0 of the 16
        _person(33, 7, few),  # 3 of the 16
        _person(40, 3, STANDING, area=None),  # no area: the bbox's w x h (22400 px²)
        {"id": 99, "image_id": 7, "category_id": 2, "bbox": [0, 0, 5, 5]},  # not a person: ignored
    ]
    return _write(root, images, annotations)


def test_reader_maps_counts_skips_and_writes_rows(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _scene(root)
    records = _read(root)
    samples, reasons = _counts(records)
    # Image id order (3 before 7), annotation id order within an image; keys image id + annotation id.
    assert [r.key for r in records] == ["000000000003_40"] + [
        f"000000000007_{a}" for a in (31, 32, 33, 34, 30)
    ]
    assert reasons == {"crowd": 1, "tiny person": 1, "too few annotated joints": 2}
    by_key = {r.key: r for r in records}
    assert by_key["000000000007_34"].reason == "too few annotated joints: 0 < 4 (among the 16)"
    assert by_key["000000000007_33"].reason == "too few annotated joints: 3 < 4 (among the 16)"
    assert by_key["000000000007_32"].reason == "tiny person: area 440 px² < 1024"
    person = by_key["000000000007_30"]
    expected, vis = coco.map_keypoints(np.asarray(_keypoints(STANDING)).reshape(1, 17, 3))
    np.testing.assert_array_equal(person.joints_2d, expected[0])
    np.testing.assert_array_equal(person.visible, vis[0])
    np.testing.assert_allclose(person.center, [99.5, 159.5])
    assert person.box_size == 280.0 and person.joints_3d is None
    assert person.source_path == "val2017/000000000007.jpg" and person.image.shape == (300, 320, 3)
    head = coco.head_sizes(expected, vis)[0]  # shoulders 50 px apart, torso 90 px: 0.42 x 90
    assert head == pytest.approx(0.42 * 90)
    assert 0.6 * np.hypot(*(person.head_box[2:] - person.head_box[:2])) == pytest.approx(head)
    # Through the writer (no Ray): the skipped people counted by reason, the rows' labels in the crop.
    tasks = coco.list_tasks(str(root), "val")
    out = tmp_path / "out"
    result = writer.process_task(tasks[0], coco.read_task, str(out), writer.WriterConfig(crop_size=96))
    assert not result.failed and result.rows == 2
    assert result.reasons == {"crowd": 1, "tiny person": 1, "too few annotated joints": 2}
    rows = load_shards_numpy(str(out))
    order = np.argsort(rows["row_id"])
    assert [rows["row_id"][i] for i in order] == [
        "coco/val/0-2/000000000003_40",
        "coco/val/0-2/000000000007_30",
    ]
    back = geometry.apply_affine(
        rows["joints_2d"].astype(np.float64), rows["crop_to_image"].reshape(-1, 2, 3)
    )
    i = order[1]
    np.testing.assert_allclose(back[i][vis[0]], expected[0][vis[0]], atol=0.01)
    np.testing.assert_array_equal(rows["visible"][i], vis[0])
    scale = 96 / (280 * 1.5)  # crop px per source px
    assert rows["head_size"][i] == pytest.approx(head * scale, rel=1e-5)


def test_bad_annotations_and_images_are_quarantined_by_reason(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    images = [
        {"id": 1, "file_name": "missing.jpg", "width": 200, "height": 320},
        {"id": 2, "file_name": "truncated.jpg", "width": 200, "height": 320},
        {"id": 3, "file_name": "garbage.jpg", "width": 200, "height": 320},
        {"id": 4, "file_name": "resized.jpg", "width": 200, "height": 320},
        {"id": 5, "file_name": "good.jpg", "width": 200, "height": 320},
    ]
    annotations = [
        _person(10, 1, STANDING), _person(11, 1, STANDING),  # both people of a missing image
        _person(20, 2, STANDING), _person(30, 3, STANDING), _person(40, 4, STANDING),
        _person(50, 5, STANDING, keypoints=[1.0] * 50),  # one value short
        _person(51, 5, STANDING, bbox=(10, 10, 0, 50)),  # zero width
        _person(52, 5, STANDING, bbox=None),  # no bbox
        _person(60, 6, STANDING),  # image 6 is not in "images"
        _person(53, 5, STANDING),
    ]  # fmt: skip
    _write(root, images, annotations)
    (root / "val2017" / "missing.jpg").unlink()
    data = (root / "val2017" / "truncated.jpg").read_bytes()
    (root / "val2017" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "val2017" / "garbage.jpg").write_bytes(b"not a jpeg at all")
    _jpeg(root / "val2017" / "resized.jpg", 100, 160)
    samples, reasons = _counts(_read(root))
    assert [s.key for s in samples] == ["000000000005_53"]
    assert reasons == {
        "missing image": 2, "truncated image": 1, "undecodable image": 1, "image size mismatch": 1,
        "wrong joint count": 1, "bad annotation": 3,
    }  # fmt: skip
    text = {r.key: r.reason for r in _read(root) if isinstance(r, Quarantined)}
    assert text["000000000001_10"] == "missing image: val2017/missing.jpg"
    assert text["000000000004_40"] == (
        "image size mismatch: val2017/resized.jpg is 100x160, the annotation says 200x320"
    )
    assert "keypoints has 50 values, expected 51" in text["000000000005_50"]
    assert "bbox [10, 10, 0, 50]" in text["000000000005_51"] and "bbox None" in text["000000000005_52"]
    assert text["000000000006_60"] == "bad annotation: image_id 6 is not in 'images'"


def test_unknown_formats_name_the_accepted_one(tmp_path: Path) -> None:
    detections = tmp_path / "det.json"
    detections.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9, "category_id": 1}]))
    mpii_json = tmp_path / "mpii.json"
    mpii_json.write_text(json.dumps([{"image": "a.jpg", "joints": [[1, 1]] * 16, "joints_vis": [1] * 16}]))
    no_annotations = tmp_path / "captions.json"
    no_annotations.write_text(json.dumps({"images": []}))
    reordered = tmp_path / "reordered.json"
    names = list(coco.KEYPOINT_NAMES)
    names[1], names[2] = names[2], names[1]
    reordered.write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{**CATEGORY, "keypoints": names}]})
    )
    for path, why in (
        (detections, "detection-results file"),
        (mpii_json, "a list, not an object"),
        (no_annotations, "no 'annotations' list"),
        (reordered, "categories[0].keypoints"),
    ):
        with pytest.raises(coco.CocoFormatError) as err:
            coco.list_tasks(str(tmp_path), "val", annotation=path.name)
        message = str(err.value)
        assert str(path) in message and why in message
        assert "person_keypoints_{train,val}2017.json" in message and "mmpose" in message
    with pytest.raises(FileNotFoundError, match=r"annotations/person_keypoints_val2017.json.*annotation="):
        coco.list_tasks(str(tmp_path), "val")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        coco.list_tasks(str(tmp_path), "test", annotation=detections.name)


def test_tasks_chunk_images_in_id_order_whatever_the_file_order(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 320} for i in (9, 2, 5)]
    people = [_person(a, i, STANDING) for a, i in ((7, 5), (3, 9), (8, 2), (1, 5))]
    _write(root, images, people)
    one = coco.list_tasks(str(root), "val", chunk_size=1)
    assert [t.task_id for t in one] == ["0-1", "1-2", "2-3"]
    keys = [r.key for t in one for r in coco.read_task(t)]
    assert keys == ["000000000002_8", "000000000005_1", "000000000005_7", "000000000009_3"]
    assert [r.key for r in _read(root)] == keys
    with pytest.raises(ValueError, match="chunk_size"):
        coco.list_tasks(str(root), "val", chunk_size=0)


def test_image_folders_of_the_layouts(tmp_path: Path) -> None:
    # mmpose-style images/<split>2017/, found without options.
    root = tmp_path / "mm"
    _write(
        root,
        [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 320}],
        [_person(1, 1, STANDING)],
        "train",
    )
    (root / "images").mkdir()
    (root / "train2017").rename(root / "images" / "train2017")
    samples, _ = _counts(_read(root, "train"))
    assert [s.source_path for s in samples] == ["images/train2017/a.jpg"]
    # A flat folder (the annotation and the images side by side), as the real sample is.
    flat = tmp_path / "flat"
    flat.mkdir()
    (root / "annotations" / "person_keypoints_train2017.json").rename(flat / "keypoints.json")
    (root / "images" / "train2017" / "a.jpg").rename(flat / "a.jpg")
    samples, _ = _counts(_read(flat, "val", annotation="keypoints.json"))
    assert [s.source_path for s in samples] == ["a.jpg"]
    # images= names the folder, relative to the root.
    (flat / "pictures").mkdir()
    (flat / "a.jpg").rename(flat / "pictures" / "a.jpg")
    samples, _ = _counts(_read(flat, "val", annotation=str(flat / "keypoints.json"), images="pictures"))
    assert [s.source_path for s in samples] == ["pictures/a.jpg"]


def test_prep_coco_help_shows_the_raw_layout() -> None:
    res = subprocess.run(
        [str(POSE3D), "prep", "coco", "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    for text in (
        "person_keypoints_<split>2017.json",
        "<split>2017/<file_name>",
        "annotation=None",
        "min_area=1024.0",
    ):
        assert text in res.stdout


# --- the real sample (shared/fixtures/coco: 4 val2017 images, 14 people) -----------------------


@pytest.fixture()
def coco_dir(fixtures_dir: Path) -> Path:
    root = fixtures_dir / "coco"
    if not (root / "test_coco.json").is_file():
        pytest.skip(f"COCO fixture not found at {root}")
    return root


def test_coco_fixture_rows_and_skips(coco_dir: Path, tmp_path: Path) -> None:
    labels = json.loads((coco_dir / "test_coco.json").read_text())
    tasks = coco.list_tasks(str(coco_dir), "val", annotation="test_coco.json")
    assert [t.task_id for t in tasks] == ["0-4"]
    records = [r for r in coco.read_task(tasks[0])]
    samples, reasons = _counts(records)
    assert len(records) == len(labels["annotations"]) == 14
    # The two people without keypoints are also COCO-small (area 491 and 286 px²).
    assert reasons == {"tiny person": 2}
    assert sorted(r.key for r in records if isinstance(r, Quarantined)) == [
        "000000040083_1202706",
        "000000196141_508900",
    ]
    result = writer.process_task(tasks[0], coco.read_task, str(tmp_path), writer.WriterConfig())
    assert not result.failed and result.rows == 12 and result.reasons == {"tiny person": 2}
    rows = load_shards_numpy(str(tmp_path))
    by_id = {a["id"]: a for a in labels["annotations"]}
    back = geometry.apply_affine(
        rows["joints_2d"].astype(np.float64), rows["crop_to_image"].reshape(-1, 2, 3)
    )
    for n, row_id in enumerate(rows["row_id"]):
        ann = by_id[int(row_id.rsplit("_", 1)[1])]
        kp = np.asarray(ann["keypoints"], np.float64).reshape(1, 17, 3)
        joints, visible = coco.map_keypoints(kp)
        np.testing.assert_array_equal(rows["visible"][n], visible[0])
        assert np.abs(back[n][visible[0]] - joints[0][visible[0]]).max() < 0.01
        assert not rows["visible"][n][[J["thorax"], J["upper_neck"], J["head_top"]]].any()
        has_torso = visible[0][[J["r_shoulder"], J["l_shoulder"], J["r_hip"], J["l_hip"]]].all()
        assert np.isfinite(rows["head_size"][n]) == has_torso
    assert np.isfinite(rows["head_size"]).all()  # every labelled person here has both shoulders and hips
    assert (rows["dataset"] == "coco").all() and not rows["has_3d"].any()


@pytest.mark.slow
def test_prep_coco_command_on_the_fixture(coco_dir: Path, tmp_path: Path) -> None:
    """``pose3d prep coco`` (its own Ray) on the real sample: the summary counts rows and skips."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": str(REPO),
        "RAY_TMPDIR": tempfile.mkdtemp(prefix="p3d-"),  # short: Ray's socket paths must fit in 107 bytes
    }
    args = ["prep", "coco", "--raw", str(coco_dir), "--out", str(out), "--split", "val"]
    res = subprocess.run(
        [str(POSE3D), *args, "-O", "annotation=test_coco.json", "--num-cpus", "4"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert any(line.split() == ["coco", "val", "1/1", "12", "1"] for line in res.stdout.splitlines()), (
        res.stdout
    )
    assert "coco: 2 quarantined (tiny person 2)" in res.stdout
    summary = json.loads((out / "coco" / "prep_summary.json").read_text())
    assert summary["quarantined"] == {"tiny person": 2} and summary["splits"]["val"]["rows"] == 12
