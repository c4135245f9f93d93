"""``pose3d predict``'s pieces (``pose3d.eval.photos``, ``predict.predict_people``, the figure): image
listing and output names, COCO box files (the real fixture files and broken ones), the whole-image
rule, batched crops equal to one crop at a time, and the per-image JSON and figure."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose3d import skeleton
from pose3d.eval import photos
from pose3d.eval.predict import PeoplePrediction, predict_image, predict_people
from pose3d.model.net import ModelConfig, PoseNet
from pose3d.viz import draw3d

COCO_PEOPLE = {"000000000785": 1, "000000040083": 3, "000000196141": 5, "000000197388": 5}


@pytest.fixture(scope="module")
def model() -> PoseNet:
    torch.manual_seed(0)
    return PoseNet(ModelConfig.small()).eval()


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (120, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return path


def test_list_images_takes_files_folders_and_globs_once_each(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a / "x.jpg", a / "sub" / "y.png", a / ".hidden" / "z.jpg", a / "out" / "old.png", b / "x.jpg"):
        _image(p)
    (a / "notes.txt").write_text("not an image")
    listing = photos.list_images(
        [
            str(a),
            str(b / "*.jpg"),
            str(a / "sub" / "y.png"),
            str(tmp_path / "missing.jpg"),
            str(tmp_path / "no*.jpg"),
        ],
        exclude=a / "out",
    )
    assert listing.images == [
        a / "sub" / "y.png",
        a / "x.jpg",
        b / "x.jpg",
    ]  # y.png once; out/, .hidden/ left out
    assert [arg for arg, _ in listing.problems] == [str(tmp_path / "missing.jpg"), str(tmp_path / "no*.jpg")]
    assert "no such file" in listing.problems[0][1] and "matches" in listing.problems[1][1]


def test_output_names_never_collide():
    paths = [
        Path(p) for p in ("/d/a/img.jpg", "/d/b/img.jpg", "/d/c/pic.jpg", "/d/c/pic.png", "/d/c/solo.jpg")
    ]
    paths.append(Path("/d/c/a__img.jpg"))  # the name the first one gets
    names = photos.output_names(paths)
    assert names == ["a__img", "b__img", "pic_jpg", "pic_png", "solo", "a__img-2"]
    assert photos.output_names([Path("/x/Photo.JPG"), Path("/y/photo.jpg")]) == ["x__Photo", "y__photo"]


def _coco_images(fixtures_dir: Path) -> list[Path]:
    return sorted((fixtures_dir / "coco").glob("*.jpg"))


def test_boxes_from_coco_keypoint_annotations(fixtures_dir):
    found = photos.load_person_boxes(str(fixtures_dir / "coco" / "test_coco.json"))
    assert found.kind == "keypoint annotations"
    counts = {}
    for image in _coco_images(fixtures_dir):
        boxes, scores, why = found.lookup(image)
        assert why is None and np.isnan(scores).all()  # annotations carry no score
        counts[image.stem] = len(boxes)
    assert counts == COCO_PEOPLE
    boxes, _, _ = found.lookup(fixtures_dir / "coco" / "000000000785.jpg")
    np.testing.assert_allclose(
        boxes[0], [280.79, 44.73, 280.79 + 218.7, 44.73 + 346.68]
    )  # [x, y, w, h] -> corners


def test_boxes_from_coco_detections(fixtures_dir):
    det = str(fixtures_dir / "coco" / "test_coco_det_AP_H_56.json")
    by_stem = photos.load_person_boxes(det, min_score=0.5)  # ids matched to the numeric stems
    by_list = photos.load_person_boxes(det, 0.5, image_ids=str(fixtures_dir / "coco" / "test_coco.json"))
    assert by_stem.kind == "detections" and by_list.id_by_file
    for image in _coco_images(fixtures_dir):
        boxes, scores, why = by_stem.lookup(image)
        assert why is None and len(boxes) >= 1 and (scores >= 0.5).all()
        np.testing.assert_array_equal(boxes, by_list.lookup(image)[0])
    counts = [len(by_stem.lookup(p)[0]) for p in _coco_images(fixtures_dir)]
    assert counts == [1, 5, 6, 6]
    strict = photos.load_person_boxes(det, min_score=0.999995)
    boxes, _, why = strict.lookup(fixtures_dir / "coco" / "000000040083.jpg")
    assert len(boxes) == 0 and "score >= 0.999995" in why and "only lower" in why


def test_boxes_match_by_file_name_and_leave_out_crowds_and_other_categories(tmp_path):
    entries = [
        {"file_name": "dir/shot.jpg", "bbox": [1, 2, 30, 60]},  # no score: kept
        {"file_name": "shot.jpg", "bbox": [5, 5, 10, 10], "score": 0.2},  # below --min-score
        {"file_name": "shot.jpg", "bbox": [5, 5, 10, 10], "category_id": 3, "score": 0.9},  # a car
        {"image_id": "shot", "bbox": [0, 0, 9, 9], "score": 0.9},  # another key: the file-name entries win
    ]
    (tmp_path / "det.json").write_text(json.dumps(entries))
    found = photos.load_person_boxes(str(tmp_path / "det.json"))
    boxes, scores, why = found.lookup(tmp_path / "shot.jpg")
    np.testing.assert_array_equal(boxes, [[1, 2, 31, 62]])
    assert np.isnan(scores).all() and why is None
    assert "no person box for it" in found.lookup(tmp_path / "other.jpg")[2]
    coco = {
        "images": [{"id": 7, "file_name": "seven.png"}],
        "annotations": [
            {"image_id": 7, "bbox": [0, 0, 10, 20], "iscrowd": 0, "category_id": 1},
            {"image_id": 7, "bbox": [0, 0, 50, 50], "iscrowd": 1, "category_id": 1},
        ],
    }
    (tmp_path / "kp.json").write_text(json.dumps(coco))
    boxes, _, _ = photos.load_person_boxes(str(tmp_path / "kp.json")).lookup(tmp_path / "seven.png")
    np.testing.assert_array_equal(boxes, [[0, 0, 10, 20]])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([{"image_id": 1, "bbox": [0, 0, 5, 5]}, {"image_id": 1, "bbox": [0, 0, 5]}], ["entry 1", "'bbox'"]),
        ([{"image_id": 1, "bbox": [0, 0, 0, 5]}], ["entry 0", "'bbox'", "positive"]),
        ([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": "high"}], ["entry 0", "'score'"]),
        ([{"image_id": [1], "bbox": [0, 0, 5, 5]}], ["entry 0", "'image_id'"]),
        ([{"bbox": [0, 0, 5, 5]}], ["entry 0", "no 'image_id'"]),
        ({"annotations": [{"image_id": 1, "bbox": "x"}]}, ["annotations[0]", "'bbox'"]),
        ({"images": [{"id": 1}], "annotations": []}, ["images[0]", "'file_name'"]),
        ({"boxes": []}, ["expected a JSON list of detections"]),
        ("[{", ["not JSON"]),
    ],
)
def test_bad_boxes_files_name_the_file_entry_and_field(tmp_path, content, expected):
    path = tmp_path / "boxes.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(photos.BoxesFileError) as err:
        photos.load_person_boxes(str(path))
    assert str(path) in str(err.value)
    for text in expected:
        assert text in str(err.value)


def test_full_frame_rule():
    crop_joints = np.column_stack([np.linspace(20, 80, 16), np.linspace(10, 190, 16)])  # spans 180 of 200 px
    confident = np.full(16, 0.8)
    assert photos.full_frame_signs(100, 200, crop_joints, confident) == []
    assert "wider" in photos.full_frame_signs(400, 200, crop_joints, confident)[0]
    assert "spans 18 %" in photos.full_frame_signs(1000, 1000, crop_joints, confident)[0]
    assert "confidence 0.10" in photos.full_frame_signs(100, 200, crop_joints, np.full(16, 0.1))[0]
    # A trained network on a whole frame: a confident skeleton from ceiling to floor (as measured on
    # the Human3.6M fixture frames: span 0.93-0.98, median peak 0.39-0.52), caught when the image is
    # much larger than the network's input; a crop of the network's size with an edge-to-edge
    # skeleton, or a large image without one, is left alone.
    frame_joints = np.column_stack([np.linspace(300, 600, 16), np.linspace(20, 990, 16)])  # 97 %
    (sign,) = photos.full_frame_signs(1000, 1002, frame_joints, np.full(16, 0.45), input_size=256)
    assert "edge to edge (97 %)" in sign and "3.9x" in sign and "256 px" in sign
    assert photos.full_frame_signs(1000, 1002, frame_joints, np.full(16, 0.45)) == []  # size unknown
    assert photos.full_frame_signs(500, 501, frame_joints / 2, np.full(16, 0.45), input_size=256) == []
    tall_joints = np.column_stack([np.linspace(300, 600, 16), np.linspace(100, 800, 16)])  # 70 %
    assert photos.full_frame_signs(1000, 1002, tall_joints, np.full(16, 0.45), input_size=256) == []


def test_crops_of_an_image_go_through_together_as_one_at_a_time(model):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 110, 220], [150, 40, 230, 200], [200.5, 0, 319, 100]])
    together = predict_people(model, image, boxes, box_scores=np.array([0.9, 0.8, 0.7]), batch_size=2)
    assert together.joints_2d.shape == (3, 16, 2) and together.pose_mm.shape == (3, 16, 3)
    assert together.joint_scores.shape == (3, 16) and together.boxes.shape == (3, 4)
    for k, box in enumerate(boxes):
        alone = predict_image(model, image, box)
        np.testing.assert_allclose(together.joints_2d[k], alone.joints_2d, atol=1e-6)
        np.testing.assert_allclose(together.pose_mm[k], alone.pose_mm, atol=1e-3)
        np.testing.assert_allclose(together.joint_scores[k], alone.joint_scores, atol=1e-5)
        # Decoded joints lie on the output map, so within the square the network saw around the box.
        centre = (box[:2] + box[2:]) / 2 - 0.5
        half = (box[2:] - box[:2]).max() * 1.1 / 2
        assert np.all(np.abs(together.joints_2d[k] - centre) <= half + 1)
    np.testing.assert_allclose(together.pose_mm[:, skeleton.ROOT], 0, atol=1e-9)  # pelvis at the origin
    whole = predict_people(model, image)
    np.testing.assert_array_equal(whole.boxes, [[0, 0, 320, 240]])
    with pytest.raises(ValueError, match="x2 > x1"):
        predict_people(model, image, [[5, 5, 5, 10]])


def test_the_steps_write_json_and_figures_and_skip_unreadable_files(model, tmp_path):
    images = [_image(tmp_path / "in" / "two.jpg", 1, (160, 120)), _image(tmp_path / "in" / "whole.png", 2)]
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    images.append(tmp_path / "in" / "broken.jpg")
    boxes = [(np.array([[0, 0, 60, 110], [70, 5, 150, 115]]), np.array([0.9, np.nan])), None, None]
    rows = photos.image_rows(images, photos.output_names(images), boxes, "test boxes")
    out = str(tmp_path / "out")
    summary = list(photos.predict_photos(model, rows, out, margin=1.1, batch_size=2))
    got = {k: np.concatenate([b[k] for b in summary]) for k in summary[0]}
    assert list(got["status"]) == ["ok", "ok", "skipped"]
    assert list(got["people"]) == [2, 1, 0] and got["reason"][2] == "not a readable image"
    record = json.loads((tmp_path / "out" / "two.json").read_text())
    assert record["joint_names"] == list(skeleton.JOINT_NAMES) and set(record["units"]) >= {"joints_3d_mm"}
    assert record["boxes_from"] == "test boxes" and (record["width"], record["height"]) == (160, 120)
    first, second = record["people"]
    assert first["box"] == [0, 0, 60, 110] and first["box_score"] == 0.9 and second["box_score"] is None
    assert np.array(first["joints_2d_px"]).shape == (16, 2) and np.array(first["joints_3d_mm"]).shape == (
        16,
        3,
    )
    assert len(first["joint_scores"]) == 16
    whole = json.loads((tmp_path / "out" / "whole.json").read_text())
    assert whole["boxes_from"] == "whole image" and whole["people"][0]["box"] == [0, 0, 120, 90]
    assert whole["warnings"]  # an untrained network finds no clear joints
    for name in ("two", "whole"):
        figure = cv2.imread(str(tmp_path / "out" / f"{name}.png"))
        assert figure is not None and figure.std() > 5
    assert not (tmp_path / "out" / "broken.json").exists()


def test_3d_views_carry_mm_tick_values():
    poses = np.stack([skeleton.canonical_pose_mm()] * 3)
    fig = draw3d.people_figure(np.zeros((60, 40, 3), np.uint8), poses, ["a", "b", "c"], "title")
    png = draw3d.figure_bytes(fig)  # draws the figure, which sets the tick labels
    assert png[:4] == b"\x89PNG"
    views = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(views) == 3
    for ax in views:
        labels = {t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels() + ax.get_zticklabels()}
        assert {"-400", "0", "400"} <= labels
        assert "mm" in ax.get_xlabel() and "mm" in ax.get_zlabel()


def test_people_prediction_person_is_an_image_prediction():
    k = 2
    people = PeoplePrediction(
        np.array([[0, 0, 10, 20], [5, 5, 15, 25]], float),
        np.zeros((k, 16, 2)),
        np.ones((k, 16), np.float32),
        np.zeros((k, 16, 3)),
        np.array([0.5, np.nan]),
    )
    person = people.person(1)
    assert len(people) == 2 and person.box == (5.0, 5.0, 15.0, 25.0) and person.joint_scores.shape == (16,)
