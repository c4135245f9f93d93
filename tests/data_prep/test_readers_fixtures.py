"""The dataset readers (issue 3) on the real samples of shared/fixtures, and on small files written
here in the official layouts that have no fixture (H36M videos + CDF, 3DHP annot_data.mat, the
full MPII release .mat)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from data_prep.readers import common, h36m, mpi3dhp, mpii
from data_prep.records import PersonSample, Quarantined
from pose3d import geometry, skeleton

THORAX = skeleton.THORAX


def _read_all(module, tasks):
    return [record for task in tasks for record in module.read_task(task)]


def _split(records):
    samples = [r for r in records if isinstance(r, PersonSample)]
    quarantined = [r for r in records if isinstance(r, Quarantined)]
    return samples, quarantined


def _direct(mapping: skeleton.JointMapping) -> tuple[np.ndarray, np.ndarray]:
    """(16-joint indices, source indices) of the directly mapped joints."""
    ours = np.array([i for i, s in enumerate(mapping.source) if s >= 0])
    return ours, np.array([mapping.source[i] for i in ours])


# --- Human3.6M: mmpose npz layout (fixture) ---------------------------------------------------


def test_h36m_npz_fixture(fixtures_dir: Path, caplog):
    root = fixtures_dir / "h36m"
    data = np.load(root / "test_h36m_body3d.npz")
    cameras = json.loads((root / "cameras.json").read_text())
    tasks = h36m.list_tasks(str(root), "train")
    assert [t.task_id for t in tasks] == [
        "S1_Directions_1.54138969",
        "S5_SittingDown.54138969",
        "S7_Greeting.55011271",
        "S8_WalkDog_1.55011271",
    ]
    samples, quarantined = _split(_read_all(h36m, tasks))
    assert not quarantined and len(samples) == 4
    ours, src = _direct(skeleton.H36M17)
    for row, s in enumerate(samples):  # the npz rows are in task order
        part, s3d = data["part"][row], data["S"][row]
        np.testing.assert_array_equal(s.joints_2d[ours], part[src, :2])
        np.testing.assert_allclose(s.joints_3d[ours], s3d[src, :3] * 1000.0, rtol=0, atol=1e-9)
        # thorax: the shoulders' (11 l, 14 r) 3D midpoint in mm, its 2D the distorted projection
        np.testing.assert_allclose(s.joints_3d[THORAX], (s3d[11, :3] + s3d[14, :3]) * 500.0, atol=1e-9)
        cam = cameras[f"{s.subject}_{s.camera_id}"]
        thorax_2d = geometry.project(
            s.joints_3d[None, THORAX], *(np.ravel(cam[k]) for k in ("f", "c", "k", "p"))
        )[0]
        np.testing.assert_allclose(s.joints_2d[THORAX], thorax_2d, atol=1e-9)
        # and it lies between the shoulders' labelled 2D (distortion moves it a little, not far)
        assert np.linalg.norm(s.joints_2d[THORAX] - (part[11, :2] + part[14, :2]) / 2) < 2.0
        assert s.visible.all()
        np.testing.assert_allclose(s.center, data["center"][row])
        assert s.box_size == pytest.approx(data["scale"][row] * 200.0)
        assert s.image.shape == ((1000, 1000, 3) if s.subject == "S8" else (1002, 1000, 3))
        np.testing.assert_allclose(s.camera.f, np.ravel(cam["f"]))
    assert [s.frame for s in samples] == [0, 2060, 395, 25]  # file numbers are 1-based
    assert [(s.action, s.subaction) for s in samples] == [
        ("Directions", "1"),
        ("SittingDown", ""),
        ("Greeting", ""),
        ("WalkDog", "1"),
    ]
    assert samples[0].source_path == "S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg"
    with caplog.at_level("WARNING", logger="data_prep.readers.h36m"):
        assert h36m.list_tasks(str(root), "test") == []  # S9 and S11 are not in the fixture
    assert "no test data of subject(s) S9, S11" in caplog.text and "-O subjects=" in caplog.text
    assert [t.task_id for t in h36m.list_tasks(str(root), "train", subjects="S7")] == ["S7_Greeting.55011271"]


def test_h36m_cameras_pkl_equals_json(fixtures_dir: Path, tmp_path: Path):
    raw = json.loads((fixtures_dir / "h36m" / "cameras.json").read_text())
    as_pkl = {
        tuple(k.split("_")): {n: np.asarray(v) for n, v in e.items() if n in "RTfckp"} for k, e in raw.items()
    }
    (tmp_path / "cameras.pkl").write_bytes(pickle.dumps(as_pkl))
    from_json = h36m.load_cameras(fixtures_dir / "h36m" / "cameras.json")
    from_pkl = h36m.load_cameras(tmp_path / "cameras.pkl")
    assert len(from_json) == 44 and from_json.keys() == from_pkl.keys()
    cam = from_pkl[("S1", "54138969")]
    np.testing.assert_allclose(cam.t_mm, np.ravel(raw["S1_54138969"]["T"]) * 1000.0)
    np.testing.assert_allclose(cam.intrinsics.k, np.ravel(raw["S1_54138969"]["k"]))


def _copy_h36m(fixtures_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "h36m"
    shutil.copytree(fixtures_dir / "h36m", root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_h36m_corrupt_and_missing_image_quarantined(fixtures_dir: Path, tmp_path: Path):
    root = _copy_h36m(fixtures_dir, tmp_path)
    bad = root / "S5/S5_SittingDown.54138969/S5_SittingDown.54138969_002061.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")
    (root / "S7/S7_Greeting.55011271/S7_Greeting.55011271_000396.jpg").unlink()
    cut = root / "S8/S8_WalkDog_1.55011271/S8_WalkDog_1.55011271_000026.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])  # OpenCV would decode a third, grey the rest
    samples, quarantined = _split(_read_all(h36m, h36m.list_tasks(str(root), "train")))
    assert [s.subject for s in samples] == ["S1"]
    assert [(q.key, q.reason.split(":")[0]) for q in quarantined] == [
        ("002060", common.UNDECODABLE_IMAGE),
        ("000395", common.MISSING_IMAGE),
        ("000025", common.TRUNCATED_IMAGE),
    ]
    assert "missing" in quarantined[1].reason


def test_h36m_wrong_joint_count_quarantined(fixtures_dir: Path, tmp_path: Path):
    root = _copy_h36m(fixtures_dir, tmp_path)
    data = dict(np.load(root / "test_h36m_body3d.npz"))
    data["part"] = data["part"][:, :16]
    np.savez(root / "test_h36m_body3d.npz", **data)
    samples, quarantined = _split(_read_all(h36m, h36m.list_tasks(str(root), "train")))
    assert not samples and len(quarantined) == 4
    assert all(q.reason.startswith(common.WRONG_JOINT_COUNT + ": ") for q in quarantined)


# --- Human3.6M: official video + CDF layout (written here) ------------------------------------

F_PX, C_PX = np.array([500.0, 510.0]), np.array([32.0, 24.0])


def _write_cdf(path: Path, pose: np.ndarray) -> None:
    from cdflib.cdfwrite import CDF

    path.parent.mkdir(parents=True, exist_ok=True)
    data = pose.reshape(1, len(pose), -1)
    writer = CDF(str(path), delete=True)
    spec = {
        "Variable": "Pose",
        "Data_Type": CDF.CDF_FLOAT,
        "Num_Elements": 1,
        "Rec_Vary": True,
        "Dim_Sizes": list(data.shape[1:]),
    }
    writer.write_var(spec, var_attrs={}, var_data=data.astype(np.float32))
    writer.close()


def _write_video(path: Path, n_frames: int) -> None:
    """Frame i is uniformly grey at level 20 * i + 10, so a sample shows which frame it got."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 50, (64, 48))
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((48, 64, 3), 20 * i + 10, np.uint8))
    writer.release()


def _write_cameras_h5(path: Path, subject: int, r_w2c: np.ndarray, t_mm: np.ndarray) -> None:
    """3d-pose-baseline's layout: the stored R is what its loader transposes into world-to-camera."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, camera_id in enumerate(h36m.CAMERA_IDS, start=1):
            g = f.create_group(f"subject{subject}/camera{k}")
            g["R"], g["T"] = r_w2c.T, t_mm.reshape(3, 1)
            g["f"], g["c"] = F_PX.reshape(2, 1), C_PX.reshape(2, 1)
            g["k"], g["p"] = np.zeros((3, 1)), np.zeros((2, 1))
            g["Name"] = np.frombuffer(camera_id.encode(), np.uint8)


def _poses_32(n_frames: int) -> np.ndarray:
    """(F, 32, 3) camera mm: a body 4.5 m away whose joint j sits at (10 j - 150, 7 j - 100) + drift."""
    j = np.arange(32)
    base = np.stack([10.0 * j - 150.0, 7.0 * j - 100.0, 4500.0 + 5.0 * j], axis=-1)
    return base[None] + np.arange(n_frames)[:, None, None] * np.array([3.0, -2.0, 10.0])


def test_h36m_video_layout(tmp_path: Path):
    root = tmp_path / "h36m_raw"
    _write_cameras_h5(root / "cameras.h5", 9, np.eye(3), np.zeros(3))
    feats = root / "S9" / "MyPoseFeatures"
    poses = _poses_32(6)
    pinhole = poses[..., :2] / poses[..., 2:] * F_PX + C_PX
    d2 = pinhole + 0.25  # differs from the projection, so the test sees which one the reader used
    _write_cdf(feats / "D3_Positions_mono" / "Directions 1.54138969.cdf", poses.reshape(6, 96))
    _write_cdf(feats / "D2_Positions" / "Directions 1.54138969.cdf", d2.reshape(6, 64))
    _write_video(root / "S9" / "Videos" / "Directions 1.54138969.mp4", 6)
    # a video shorter than its poses, and poses without a video
    _write_cdf(feats / "D3_Positions_mono" / "TakingPhoto.55011271.cdf", poses.reshape(6, 96))
    _write_video(root / "S9" / "Videos" / "TakingPhoto.55011271.mp4", 3)
    _write_cdf(feats / "D3_Positions_mono" / "Waiting.58860488.cdf", poses[:4].reshape(4, 96))
    _write_cdf(feats / "D3_Positions_mono" / "_ALL.54138969.cdf", poses.reshape(6, 96))

    assert h36m.list_tasks(str(root), "train") == []
    tasks = h36m.list_tasks(str(root), "test", every=2)
    assert [t.task_id for t in tasks] == [
        "S9_Directions_1.54138969",
        "S9_TakingPhoto.55011271",
        "S9_Waiting.58860488",
    ]

    samples, quarantined = _split(list(h36m.read_task(tasks[0])))
    assert not quarantined and [s.frame for s in samples] == [0, 2, 4]
    for s in samples:
        f = s.frame
        assert abs(float(s.image.mean()) - (20 * f + 10)) < 4  # the right video frame
        assert s.image.shape == (48, 64, 3)
        # 16 <- 32: r_ankle 3, r_knee 2, r_hip 1, l_hip 6, ..., pelvis 0, upper_neck 14, head_top 15
        np.testing.assert_allclose(s.joints_3d[0], poses[f, 3], atol=1e-3)  # float32 in the CDF
        np.testing.assert_allclose(s.joints_3d[9], poses[f, 15], atol=1e-3)
        np.testing.assert_allclose(s.joints_2d[0], d2[f, 3], atol=1e-3)
        np.testing.assert_allclose(s.joints_2d[15], d2[f, 19], atol=1e-3)
        thorax = (poses[f, 17] + poses[f, 25]) / 2
        np.testing.assert_allclose(s.joints_3d[THORAX], thorax, atol=1e-3)
        np.testing.assert_allclose(s.joints_2d[THORAX], thorax[:2] / thorax[2] * F_PX + C_PX, atol=1e-3)
        assert (s.subject, s.action, s.subaction, s.camera_id, s.key) == (
            "S9",
            "Directions",
            "1",
            "54138969",
            f"{f:06d}",
        )
        assert s.source_path == "S9/Videos/Directions 1.54138969.mp4"
        np.testing.assert_array_equal(s.camera.f, F_PX)

    samples, quarantined = _split(list(h36m.read_task(tasks[1])))
    assert [s.frame for s in samples] == [0, 2] and samples[0].action == "Photo"  # TakingPhoto -> Photo
    assert [q.key for q in quarantined] == ["000004"] and quarantined[0].reason.startswith(common.BAD_VIDEO)
    # no D2 file: the 2D is the projection of the 3D
    np.testing.assert_allclose(samples[1].joints_2d[0], pinhole[2, 3], atol=1e-3)

    samples, quarantined = _split(list(h36m.read_task(tasks[2])))
    assert not samples and [q.key for q in quarantined] == ["000000", "000002"]
    assert all("missing" in q.reason for q in quarantined)


def test_h36m_cameras_h5_convention(tmp_path: Path):
    """Stored R = (world-to-camera R)^T, so x_cam = R_w2c (x - T) = geometry.world_to_camera(x, R, T)."""
    r_w2c = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    t_mm = np.array([100.0, 200.0, 300.0])
    _write_cameras_h5(tmp_path / "cameras.h5", 11, r_w2c, t_mm)
    cams = h36m.load_cameras(tmp_path / "cameras.h5")
    assert sorted(cams) == [("S11", c) for c in sorted(h36m.CAMERA_IDS)]
    cam = cams[("S11", "55011271")]
    x_world = np.array([[1100.0, 2200.0, 3300.0]])
    # by hand: x - T = (1000, 2000, 3000); R_w2c maps (a, b, c) -> (-b, a, c)
    np.testing.assert_allclose(
        geometry.world_to_camera(x_world, cam.r_c2w, cam.t_mm), [[-2000.0, 1000.0, 3000.0]]
    )


# --- MPII -------------------------------------------------------------------------------------


def test_mpii_official_mat_fixture(fixtures_dir: Path, tmp_path: Path):
    root = fixtures_dir / "mpii"
    people = mpii.load_people(str(root), "val", annotation="mpii_val_official_struct.mat")
    assert len(people) == 2958
    head = np.array([p.head_size for p in people])
    assert np.all(np.isfinite(head)) and np.all(head > 0)
    assert all(p.problem is None and p.annotated.sum() >= 5 for p in people)
    first = people[0]
    assert first.key == "00007_01"  # RELEASE image 7, person 1
    # the file's point with id 6 (pelvis) is at MATLAB (974, 446); head box (914, 79, 1031, 237)
    np.testing.assert_array_equal(first.joints[6], [973.0, 445.0])
    np.testing.assert_array_equal(first.head_box, [913.0, 78.0, 1030.0, 236.0])
    assert first.head_size == pytest.approx(0.6 * np.hypot(117.0, 158.0))
    # the cut-down file has no image names: the first five come from a names list here
    rows = json.loads((root / "test_mpii.json").read_text())
    names = [r["image"] for r in rows] + [""] * (len(people) - len(rows))
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    tasks = mpii.list_tasks(
        str(root), "val", annotation="mpii_val_official_struct.mat", image_names=str(tmp_path / "names.txt")
    )
    samples, quarantined = _split(_read_all(mpii, tasks))
    assert len(samples) == 5 and len(quarantined) == 2953
    assert all(q.reason.startswith(common.NO_IMAGE_NAME + ": ") for q in quarantined)
    assert "-O release=FILE" in quarantined[0].reason and "-O image_names=FILE" in quarantined[0].reason
    assert [s.source_path for s in samples] == names[:5]
    assert samples[0].box_size == pytest.approx(4.718487893382794 * 200)
    np.testing.assert_array_equal(samples[0].center, [965.0, 339.0])


def test_mpii_json_matches_mat(fixtures_dir: Path, tmp_path: Path):
    root = fixtures_dir / "mpii"
    rows = json.loads((root / "test_mpii.json").read_text())
    (tmp_path / "names.txt").write_text("\n".join(r["image"] for r in rows) + "\n" * 2954)
    mat_tasks = mpii.list_tasks(
        str(root), "val", annotation="mpii_val_official_struct.mat", image_names=str(tmp_path / "names.txt")
    )
    from_mat, _ = _split(_read_all(mpii, mat_tasks[:1]))
    from_json, quarantined = _split(
        _read_all(mpii, mpii.list_tasks(str(root), "val", annotation="test_mpii.json"))
    )
    assert not quarantined and len(from_json) == 5
    for row, a, b in zip(rows, from_json, from_mat[:5], strict=True):
        vis = np.asarray(row["joints_vis"]) > 0
        np.testing.assert_array_equal(a.visible, vis)
        np.testing.assert_array_equal(a.joints_2d[vis], np.asarray(row["joints"])[vis] - 1.0)
        np.testing.assert_array_equal(a.joints_2d[~vis], 0.0)
        np.testing.assert_array_equal(a.visible, b.visible)
        np.testing.assert_allclose(a.joints_2d, b.joints_2d, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.center, b.center, rtol=0, atol=1e-6)
        assert a.box_size == pytest.approx(b.box_size, abs=1e-4)  # the JSON's scale is float32
        assert a.head_box is None and b.head_box is not None
        assert a.image.shape == b.image.shape and a.source_path == row["image"]
    assert not from_json[2].visible[0] and not from_json[2].visible[5]  # ankles unannotated in row 2


def test_mpii_json_bad_rows_quarantined(fixtures_dir: Path, tmp_path: Path):
    root = tmp_path / "mpii"
    root.mkdir()
    rows = json.loads((fixtures_dir / "mpii" / "test_mpii.json").read_text())[:4]
    for row in rows:
        shutil.copy(fixtures_dir / "mpii" / row["image"], root / row["image"])
    rows[0]["joints"] = rows[0]["joints"][:15]  # wrong joint count
    rows[1]["joints_vis"] = [1, 1, 1] + [0] * 13  # three annotated joints
    (root / rows[2]["image"]).write_bytes(b"corrupt")  # unreadable image
    (root / "valid.json").write_text(json.dumps(rows))
    records = _read_all(mpii, mpii.list_tasks(str(root), "val", annotation="valid.json"))
    assert [type(r).__name__ for r in records] == [
        "Quarantined",
        "Quarantined",
        "Quarantined",
        "PersonSample",
    ]
    assert records[0].reason.startswith(common.WRONG_JOINT_COUNT + ": ")
    assert records[1].reason == f"{common.TOO_FEW_JOINTS}: 3 < 4"
    assert records[2].reason.startswith(common.UNDECODABLE_IMAGE + ": ")
    kept = _read_all(mpii, mpii.list_tasks(str(root), "val", annotation="valid.json", min_joints=3))
    assert isinstance(kept[1], PersonSample)
    (root / "valid.json").write_text(json.dumps(rows[1:]))  # rewritten in place: read again, not cached
    assert len(_read_all(mpii, mpii.list_tasks(str(root), "val", annotation="valid.json"))) == 3


def _struct_array(records: list[dict]) -> np.ndarray:
    """A MATLAB 1 x n struct array for scipy.io.savemat."""
    out = np.empty((1, len(records)), dtype=[(name, object) for name in records[0]])
    for i, record in enumerate(records):
        for name, value in record.items():
            out[0, i][name] = value
    return out


EMPTY = np.zeros((0, 0))


def _rect(points: list[tuple[int, float, float]], head=(11, 21, 31, 51), objpos=(50, 60), scale=1.5) -> dict:
    points = [{"id": i, "x": x, "y": y, "is_visible": EMPTY} for i, x, y in points]
    return {
        "x1": head[0], "y1": head[1], "x2": head[2], "y2": head[3],
        "annopoints": {"point": _struct_array(points)} if points else EMPTY,
        "scale": scale if scale is not None else EMPTY,
        "objpos": {"x": objpos[0], "y": objpos[1]} if objpos is not None else EMPTY,
    }  # fmt: skip


def test_mpii_full_release_mat(tmp_path: Path):
    """A tiny full release: shuffled ids, a single point, empty fields, one-person images, test images."""
    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        cv2.imwrite(str(root / "images" / name), np.zeros((120, 100, 3), np.uint8))
    ids = [5, 0, 15, 3, 9, 8, 1, 2, 4, 6, 7, 10, 11, 12, 13, 14]  # any order
    full = [(i, 10.0 + i, 20.0 + 2 * i) for i in ids]
    image_a = [_rect(full), _rect([(9, 40.0, 30.0)]), _rect([])]  # 16 points, a single point, none
    # b: one person (squeezed to a struct), no objpos/scale: box from the joints
    image_b = [
        _rect([(0, 11, 31), (1, 21, 41), (2, 31, 61), (3, 41, 51), (4, 51, 71)], objpos=None, scale=None)
    ]
    annolist = _struct_array(
        [
            {"image": {"name": "a.jpg"}, "annorect": _struct_array(image_a)},
            {"image": {"name": "b.jpg"}, "annorect": _struct_array(image_b)},
            {"image": {"name": "c.jpg"}, "annorect": _struct_array([_rect(full)])},  # a test image
        ]
    )
    single_person = np.empty((3, 1), object)
    single_person[:, 0] = [EMPTY, 1, 1]
    release = {"annolist": annolist, "img_train": np.array([[1, 1, 0]]), "single_person": single_person}
    scipy.io.savemat(root / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": release})

    people = mpii.load_people(str(root), "train")
    assert [p.key for p in people] == ["00001_01", "00001_02", "00002_01"]
    samples, quarantined = _split(_read_all(mpii, mpii.list_tasks(str(root), "train", chunk_size=2)))
    assert [q.reason for q in quarantined] == [f"{common.TOO_FEW_JOINTS}: 1 < 4"]  # the single point
    a, b = samples
    for i in range(16):  # joint i at MATLAB (10 + i, 20 + 2 i) -> 0-based
        np.testing.assert_array_equal(a.joints_2d[i], [9.0 + i, 19.0 + 2 * i])
    np.testing.assert_array_equal(a.head_box, [10.0, 20.0, 30.0, 50.0])
    np.testing.assert_array_equal(a.center, [49.0, 59.0])
    assert a.box_size == pytest.approx(300.0) and a.source_path == "images/a.jpg"
    # b: joints 0-4 at 0-based x 10..50, y 30..70 -> box centre (30, 50), side 1.2 x 40
    assert b.visible.tolist() == [True] * 5 + [False] * 11
    np.testing.assert_allclose(b.center, [30.0, 50.0])
    assert b.box_size == pytest.approx(48.0)
    # the stacked-hourglass framing: centre 15 x scale px lower, side x 1.25
    hourglass = _read_all(mpii, mpii.list_tasks(str(root), "train", hourglass_box="true"))[0]
    np.testing.assert_array_equal(hourglass.center, [49.0, 59.0 + 22.5])
    assert hourglass.box_size == pytest.approx(375.0)

    # the validation list names RELEASE image 2, person 1: it leaves train and forms val
    val_entry = _struct_array([{"annorect": _rect([(0, 11, 31), (1, 21, 41), (2, 31, 61), (3, 41, 51)])}])
    scipy.io.savemat(
        root / "mpii_val_official_struct.mat",
        {
            "annolist": val_entry,
            "RELEASE_img_index": np.array([[2]]),
            "RELEASE_person_index": np.array([[1]]),
        },
    )
    assert [p.key for p in mpii.load_people(str(root), "train")] == ["00001_01", "00001_02"]
    assert len(mpii.load_people(str(root), "train", exclude_val="false")) == 3
    (val,) = _read_all(mpii, mpii.list_tasks(str(root), "val"))
    assert isinstance(val, PersonSample) and val.key == "00002_01" and val.source_path == "images/b.jpg"


# --- MPI-INF-3DHP -----------------------------------------------------------------------------


def test_3dhp_npz_fixture(fixtures_dir: Path):
    root = fixtures_dir / "mpi_inf_3dhp"
    data = np.load(root / "test_3dhp_test.npz")
    cams = json.loads((root / "cameras_test.json").read_text())
    tasks = mpi3dhp.list_tasks(str(root), "test")
    assert [t.task_id for t in tasks] == ["TS1", "TS2"]
    samples, quarantined = _split(_read_all(mpi3dhp, tasks))
    assert not quarantined and len(samples) == 2
    ours, src = _direct(skeleton.MPI3DHP17)
    for row, s in enumerate(samples):
        part, s3d = data["part"][row], data["S"][row]
        np.testing.assert_array_equal(s.joints_2d[ours], part[src, :2])
        np.testing.assert_allclose(s.joints_3d[ours], s3d[src, :3] * 1000.0, atol=1e-9)
        thorax = (s3d[2, :3] + s3d[5, :3]) * 500.0  # shoulders 2 (right) and 5 (left)
        np.testing.assert_allclose(s.joints_3d[THORAX], thorax, atol=1e-9)
        f, c = np.ravel(cams[s.subject]["f"]), np.ravel(cams[s.subject]["c"])
        np.testing.assert_allclose(s.joints_2d[THORAX], thorax[:2] / thorax[2] * f + c, atol=1e-9)
        assert (s.group, s.annotation_3d, s.image.shape) == ("studio_gs", "annot3", (2048, 2048, 3))
        assert s.box_size == pytest.approx(data["scale"][row] * 200.0)
    assert [(s.subject, s.frame, s.key) for s in samples] == [
        ("TS1", 2000, "002000"),
        ("TS2", 1849, "001849"),
    ]


def test_3dhp_frames_joints_orientations():
    j = np.arange(4 * 17 * 2, dtype=float).reshape(4, 17, 2)  # (F, 17, C) as meant
    np.testing.assert_array_equal(mpi3dhp.frames_joints(j[:, None], 2), j)  # h5py (F, 1, 17, C)
    np.testing.assert_array_equal(mpi3dhp.frames_joints(j.transpose(2, 1, 0)[:, :, None], 2), j)  # MATLAB
    with pytest.raises(ValueError):
        mpi3dhp.frames_joints(np.zeros((4, 1, 16, 2)), 2)


def test_3dhp_17_of_28_agrees_with_the_28_joint_mapping():
    """Two tables over the official 28 joints: the reader's test-set 17 (``JOINTS_17_OF_28``) and
    the skeleton's 28 -> 16 mapping. Going 28 -> 17 -> 16 must pick the same joints as 28 -> 16."""
    poses28 = np.random.default_rng(0).normal(size=(3, 28, 3))
    via17, vis17 = skeleton.MPI3DHP17.apply(poses28[:, mpi3dhp.JOINTS_17_OF_28])
    direct, vis28 = skeleton.MPI3DHP28.apply(poses28)
    np.testing.assert_array_equal(via17, direct)
    np.testing.assert_array_equal(vis17, vis28)


CALIB = """tc camera calibration v0.3
camera\t0\tcam_test
\tframe\t0
\t\tsensorSize\t10\t10\t# in mm
\t\tfocalLength\t5.0\t# in mm
\t\tpixelAspect\t1.1
\t\tcenterOffset\t0.5\t-0.5\t# in mm (positive values move right and down)
\t\tdistortionModel\tOpenCV
\t\tdistortion\t\t0.0 0.0 0.0 0.0 0.0
"""


def _poses_17(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    j = np.arange(17)
    p3 = np.stack([20.0 * j - 170.0, 30.0 * j - 250.0, 3000.0 + 10.0 * j], axis=-1)
    p3 = p3[None] + np.arange(n_frames)[:, None, None] * np.array([5.0, 0.0, 20.0])
    return p3, p3[..., :2] / p3[..., 2:] * 50.0 + 50.0 + np.array([1.0, 2.0])  # 2D need not match


def test_3dhp_official_layout(tmp_path: Path):
    root = tmp_path / "3dhp"
    (root / "TS1" / "imageSequence").mkdir(parents=True)
    (root / "TS5" / "imageSequence").mkdir(parents=True)
    (root / "ts1-4cameras.calib").write_text(CALIB)
    (root / "ts5-6cameras.calib").write_text(CALIB)
    p3, p2 = _poses_17(5)
    valid = np.array([0, 1, 1, 0, 1])
    activity = np.array([1, 2, 5, 7, 7])
    with h5py.File(root / "TS1" / "annot_data.mat", "w") as f:  # v7.3 as h5py sees it
        f["annot2"], f["annot3"], f["univ_annot3"] = p2[:, None], (p3 + 1000.0)[:, None], p3[:, None]
        f["valid_frame"], f["activity_annotation"] = valid[:, None], activity[:, None]
    for frame in (1, 2, 4):  # 1-based img_000002, img_000003, img_000005
        cv2.imwrite(
            str(root / "TS1" / "imageSequence" / f"img_{frame + 1:06d}.jpg"),
            np.zeros((100, 100, 3), np.uint8),
        )
    (root / "TS1" / "imageSequence" / "img_000005.jpg").write_bytes(b"broken")
    # TS5: a pre-7.3 .mat in MATLAB's own orientation, without univ_annot3
    scipy.io.savemat(
        root / "TS5" / "annot_data.mat",
        {"annot2": p2[:2].transpose(2, 1, 0)[:, :, None], "annot3": p3[:2].transpose(2, 1, 0)[:, :, None],
         "valid_frame": np.array([[1, 1]]), "activity_annotation": np.array([[6, 6]])},
    )  # fmt: skip
    cv2.imwrite(str(root / "TS5" / "imageSequence" / "img_000001.jpg"), np.zeros((100, 100, 3), np.uint8))

    tasks = mpi3dhp.list_tasks(str(root), "test")
    assert [t.task_id for t in tasks] == ["TS1", "TS5"]
    samples, quarantined = _split(list(mpi3dhp.read_task(tasks[0])))
    assert [s.frame for s in samples] == [1, 2] and [q.key for q in quarantined] == ["000004"]
    assert quarantined[0].reason.startswith(common.UNDECODABLE_IMAGE)
    # intrinsics by hand for a 100 x 100 image: fx = 5 / 10 * 100, fy = 1.1 fx, c = 50 + (5, -5)
    f, c = np.array([50.0, 55.0]), np.array([55.0, 45.0])
    for s in samples:
        n = s.frame
        np.testing.assert_allclose(s.camera.f, f)
        np.testing.assert_allclose(s.camera.c, c)
        np.testing.assert_array_equal(s.joints_3d[0], p3[n, 10])  # r_ankle <- 10, from univ_annot3
        np.testing.assert_array_equal(s.joints_2d[9], p2[n, 0])  # head_top <- 0
        np.testing.assert_array_equal(s.joints_2d[6], p2[n, 14])  # pelvis <- 14
        thorax = (p3[n, 2] + p3[n, 5]) / 2
        np.testing.assert_allclose(s.joints_3d[THORAX], thorax, atol=1e-9)  # the kept univ_annot3
        # its 2D: the projection of the annot3 thorax (annot2 is annot3's projection, not univ's)
        metric = thorax + 1000.0
        np.testing.assert_allclose(s.joints_2d[THORAX], metric[:2] / metric[2] * f + c, atol=1e-9)
        assert (s.subject, s.group, s.annotation_3d) == ("TS1", "studio_gs", "univ_annot3")
        assert s.source_path == f"TS1/imageSequence/img_{n + 1:06d}.jpg"
    assert [s.action for s in samples] == ["Exercise", "On the Floor"]

    samples, quarantined = _split(list(mpi3dhp.read_task(tasks[1])))
    assert [s.frame for s in samples] == [0] and samples[0].annotation_3d == "annot3"
    assert samples[0].group == "outdoor" and samples[0].action == "Sports"
    np.testing.assert_array_equal(samples[0].joints_3d[0], p3[0, 10])
    assert [q.reason.split(":")[0] for q in quarantined] == [common.MISSING_IMAGE]  # img_000002 missing
    tasks = mpi3dhp.list_tasks(str(root), "test", annotation_3d="annot3", sequences="TS1")
    s = next(r for r in mpi3dhp.read_task(tasks[0]) if isinstance(r, PersonSample))
    np.testing.assert_array_equal(s.joints_3d[0], p3[1, 10] + 1000.0)
