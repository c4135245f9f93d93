"""The formats the readers learnt in issue 14: MPII's pose-hg-train ``.h5`` (told apart by content),
MPI-INF-3DHP's training set (official ``S<n>/Seq<m>/annot.mat`` with frames or videos, and mmpose's
train npz), the error that names the accepted formats, and missing files counted without OpenCV
noise. The official layouts are written here in small files; the MPII rows come from the fixture
JSON when shared/fixtures is there. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from data_prep import writer
from data_prep.readers import common, mpi3dhp, mpii
from data_prep.records import PersonSample, Quarantined
from pose3d import skeleton

THORAX = skeleton.THORAX


def _read_all(module, tasks):
    return [record for task in tasks for record in module.read_task(task)]


def _split(records):
    return (
        [r for r in records if isinstance(r, PersonSample)],
        [r for r in records if isinstance(r, Quarantined)],
    )


# --- MPII: pose-hg-train .h5 ------------------------------------------------------------------


def _write_hg_h5(path: Path, rows: list[dict], normalize: np.ndarray, names_as_codes: bool = False) -> None:
    """pose-hg-train's annotation layout from HRNet-JSON rows: 1-based px, (0, 0) = unannotated."""
    vis = np.array([r["joints_vis"] for r in rows], np.float64)
    part = np.where(vis[..., None] > 0, np.array([r["joints"] for r in rows], np.float64), 0.0)
    names = [r["image"].encode() for r in rows]
    with h5py.File(path, "w") as f:
        if names_as_codes:  # the Torch-era layout: NUL-padded character codes
            codes = np.zeros((len(names), 16), np.uint8)
            for i, name in enumerate(names):
                codes[i, : len(name)] = np.frombuffer(name, np.uint8)
            f["imgname"] = codes
        else:
            f["imgname"] = np.array(names, dtype=object)
        f["part"], f["visible"] = part, vis
        f["center"] = np.array([r["center"] for r in rows], np.float64)
        f["scale"] = np.array([r["scale"] for r in rows], np.float64)
        f["normalize"] = normalize
        f["index"], f["person"] = np.arange(len(rows)), np.zeros(len(rows), int)  # ignored extras


def test_mpii_h5_reads_like_the_json(fixtures_dir: Path, tmp_path: Path):
    """The fixture's 5 validation rows as pose-hg-train's valid.h5: the same people as from the
    JSON, plus the head size from ``normalize``; found as annot/valid.h5 and by content."""
    rows = json.loads((fixtures_dir / "mpii" / "test_mpii.json").read_text())
    root = tmp_path / "mpii"
    (root / "annot").mkdir(parents=True)
    (root / "annot" / "valid.json").write_text(json.dumps(rows))
    normalize = np.array([41.0, 35.5, 60.25, 28.0, 52.0])
    _write_hg_h5(root / "annot" / "valid.h5", rows, normalize)
    images = str(fixtures_dir / "mpii")

    from_json, _ = _split(_read_all(mpii, mpii.list_tasks(str(root), "val", images=images)))
    tasks = mpii.list_tasks(str(root), "val", layout="h5", images=images)
    assert tasks[0].payload["layout"] == "h5" and tasks[0].payload["annotation"].endswith("annot/valid.h5")
    from_h5, quarantined = _split(_read_all(mpii, tasks))
    assert not quarantined and len(from_h5) == 5
    for a, b, size in zip(from_h5, from_json, normalize, strict=True):
        assert (a.key, a.source_path) == (b.key, b.source_path)
        np.testing.assert_array_equal(a.visible, b.visible)
        np.testing.assert_array_equal(a.joints_2d, b.joints_2d)  # 1-based -> 0-based, 0 where absent
        np.testing.assert_array_equal(a.center, b.center)
        assert a.box_size == pytest.approx(b.box_size)
        x1, y1, x2, y2 = a.head_box
        assert 0.6 * np.hypot(x2 - x1, y2 - y1) == pytest.approx(size)  # PCKh's normalizer
        np.testing.assert_allclose([(x1 + x2) / 2, (y1 + y2) / 2], a.joints_2d[[8, 9]].mean(axis=0))
    assert not from_h5[2].visible[0] and not from_h5[2].visible[5]  # ankles unannotated in row 2

    # Content decides, not the suffix: the same HDF5 named .mat, imgname as character codes, and an
    # annotated joint whose is_visible flag is 0 (occluded) stays annotated.
    rows[0]["joints_vis"][3] = 1
    _write_hg_h5(root / "odd_name.mat", rows, normalize, names_as_codes=True)
    with h5py.File(root / "odd_name.mat", "r+") as f:
        f["visible"][0, 3] = 0
    people = mpii.load_people(str(root), "val", annotation="odd_name.mat")
    assert [p.image for p in people] == [r["image"] for r in rows]
    assert (
        people[0].annotated[3]
        and people[0].joints[3].tolist() == (np.array(rows[0]["joints"][3]) - 1).tolist()
    )


def test_mpii_h5_problems_name_file_and_field(tmp_path: Path):
    root = tmp_path
    with h5py.File(root / "no_part.h5", "w") as f:
        f["imgname"], f["center"], f["scale"] = np.array([b"a.jpg"], object), np.ones((1, 2)), np.ones(1)
    with pytest.raises(ValueError, match=r"no_part\.h5 is HDF5 but lacks the dataset\(s\) part"):
        mpii.load_people(str(root), "train", annotation="no_part.h5")
    with h5py.File(root / "bad_shape.h5", "w") as f:
        f["imgname"], f["center"], f["scale"] = np.array([b"a.jpg"], object), np.ones((1, 2)), np.ones(1)
        f["part"] = np.ones((1, 14, 2))
    with pytest.raises(ValueError, match=r"bad_shape\.h5: dataset part is float64 \(1, 14, 2\), expected"):
        mpii.load_people(str(root), "train", annotation="bad_shape.h5")
    with pytest.raises(ValueError, match=r"holds HDF5, not the json layout asked for"):
        mpii.load_people(str(root), "train", annotation="bad_shape.h5", layout="json")


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"image,x,y\na.jpg,1,2\n", "it starts with b'image,x,y"),
        (b"", "it is empty"),
        (b"MATLAB 7.3 MAT-file" + b" " * 493 + common.HDF5_SIGNATURE, "MATLAB v7.3 (HDF5) .mat"),
        (b'{"images": [], "annotations": []}', "a JSON object with keys ['annotations', 'images']"),
    ],
)
def test_mpii_unknown_format_names_the_accepted_ones(tmp_path: Path, content: bytes, found: str):
    (tmp_path / "labels.mat").write_bytes(content)
    with pytest.raises(ValueError) as err:
        mpii.list_tasks(str(tmp_path), "train", annotation="labels.mat")
    message = str(err.value)
    assert str(tmp_path / "labels.mat") in message and found in message
    for accepted in (
        "mpii_human_pose_v1_u12_1.mat",
        "pose-hg-train",
        "annot/{train,valid}.h5",
        "HRNet/mmpose",
    ):
        assert accepted in message


def test_sniff_format(tmp_path: Path):
    cases = {
        "a": common.HDF5_SIGNATURE + b"\0" * 8,
        "b": b"MATLAB 5.0 MAT-file, Platform: x",
        "c": b"  \n[1, 2]",
        "d": b"PK\x03\x04rest",
        "e": b"\0" * 512 + common.HDF5_SIGNATURE,  # after a user block
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert [common.sniff_format(tmp_path / n) for n in cases] == ["hdf5", "mat", "json", "npz", "hdf5"]


# --- MPI-INF-3DHP: the training set -------------------------------------------------------------

SIZE = (64, 48)  # image width, height
N_FRAMES = 25


def _train_camera(cam: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array([60.0 + cam, 61.0 + cam]), np.array([31.5 + cam, 23.0 - cam])


def _poses_28(cam: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """annot2 (F, 28, 2) px = the pinhole projection of annot3 (F, 28, 3) mm, and univ_annot3 =
    annot3 scaled by 0.9 about the pelvis (28-joint index 4), as the height normalization does."""
    j = np.arange(28)
    pose = np.stack([25.0 * (j % 7) - 75.0 + 10 * cam, 60.0 * (j // 2) - 800.0, 3500.0 + 5.0 * j], axis=-1)
    annot3 = pose[None] + np.arange(N_FRAMES)[:, None, None] * np.array([4.0, 0.0, 10.0])
    f, c = _train_camera(cam)
    annot2 = annot3[..., :2] / annot3[..., 2:] * f + c
    univ = annot3[:, 4:5] + 0.9 * (annot3 - annot3[:, 4:5])
    return annot2, annot3, univ


CALIBRATION_CAMERA = """name          {cam}
  sensor      10 10
  size        {w} {h}
  animated    0
  intrinsic   {fx} 0 {cx} 0 0 {fy} {cy} 0 0 0 1 0 0 0 0 1
  extrinsic   1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1
  radial      0
"""


def _write_train_sequence(seq_dir: Path) -> None:
    """S1/Seq1 in the official layout: annot.mat (14 camera cells), camera.calibration, camera 0 as
    extracted frames (frame 20's missing), camera 1 as a 15-frame MJPG video whose frame i is grey
    level 8 i."""
    (seq_dir / "imageSequence").mkdir(parents=True)
    cells = {name: np.empty((14, 1), dtype=object) for name in ("annot2", "annot3", "univ_annot3")}
    text = "Skeletool Camera Calibration File V1.0\n"
    for cam in range(14):
        annot2, annot3, univ = _poses_28(cam)
        cells["annot2"][cam, 0] = annot2.reshape(N_FRAMES, 56)
        cells["annot3"][cam, 0] = annot3.reshape(N_FRAMES, 84)
        cells["univ_annot3"][cam, 0] = univ.reshape(N_FRAMES, 84)
        (fx, fy), (cx, cy) = _train_camera(cam)
        text += CALIBRATION_CAMERA.format(cam=cam, w=SIZE[0], h=SIZE[1], fx=fx, fy=fy, cx=cx, cy=cy)
    frames = np.arange(N_FRAMES)[:, None]
    scipy.io.savemat(seq_dir / "annot.mat", {**cells, "frames": frames, "cameras": np.arange(14)[None]})
    (seq_dir / "camera.calibration").write_text(text)
    for frame in (0, 10):
        image = np.full((SIZE[1], SIZE[0], 3), 8 * frame, np.uint8)
        cv2.imwrite(str(seq_dir / "imageSequence" / f"img_0_{frame + 1:06d}.jpg"), image)
    video = cv2.VideoWriter(
        str(seq_dir / "imageSequence" / "video_1.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, SIZE
    )
    assert video.isOpened(), "OpenCV cannot write MJPG here"
    for frame in range(15):
        video.write(np.full((SIZE[1], SIZE[0], 3), 8 * frame, np.uint8))
    video.release()


def test_3dhp_train_official_layout(tmp_path: Path):
    root = tmp_path / "3dhp"
    _write_train_sequence(root / "S1" / "Seq1")
    tasks = mpi3dhp.list_tasks(str(root), "train", train_cameras="0,1,2")
    assert [t.task_id for t in tasks] == ["S1_Seq1_Cam0", "S1_Seq1_Cam1", "S1_Seq1_Cam2"]
    by_task = {t.task_id: _split(list(mpi3dhp.read_task(t))) for t in tasks}

    samples, quarantined = by_task["S1_Seq1_Cam0"]  # extracted frames; frame 20's file is missing
    assert [s.frame for s in samples] == [0, 10] and [q.key for q in quarantined] == ["000020"]
    assert quarantined[0].reason == f"{common.MISSING_IMAGE}: S1/Seq1/imageSequence/img_0_000021.jpg"
    annot2, annot3, univ = _poses_28(0)
    f, c = _train_camera(0)
    direct = skeleton.MPI3DHP28  # the 28-joint mapping: what the cut to 17 + MPI3DHP17 must equal
    ours = np.array([i for i, src in enumerate(direct.source) if src >= 0])
    for s in samples:
        n = s.frame
        assert (s.key, s.subject, s.subaction, s.camera_id) == (f"{n:06d}", "S1", "Seq1", "0")
        assert (s.source_path, s.annotation_3d) == (
            f"S1/Seq1/imageSequence/img_0_{n + 1:06d}.jpg",
            "univ_annot3",
        )
        np.testing.assert_allclose(s.camera.f, f)
        np.testing.assert_allclose(s.camera.c, c)
        src = np.array(direct.source)[ours]
        np.testing.assert_array_equal(s.joints_2d[ours], annot2[n, src])
        np.testing.assert_array_equal(s.joints_3d[ours], univ[n, src])
        np.testing.assert_allclose(s.joints_3d[THORAX], (univ[n, 9] + univ[n, 14]) / 2, atol=1e-9)
        thorax = (annot3[n, 9] + annot3[n, 14]) / 2  # 2D from annot3: it sits between the shoulders
        np.testing.assert_allclose(s.joints_2d[THORAX], thorax[:2] / thorax[2] * f + c, atol=1e-9)
        np.testing.assert_allclose(s.joints_2d[THORAX], (annot2[n, 9] + annot2[n, 14]) / 2, atol=0.05)
        assert s.visible.all() and abs(float(s.image.mean()) - 8 * n) < 2

    samples, quarantined = by_task["S1_Seq1_Cam1"]  # the video: 15 frames, so frame 20 is past its end
    assert [s.frame for s in samples] == [0, 10] and [s.camera_id for s in samples] == ["1", "1"]
    assert [abs(float(s.image.mean()) - 8 * s.frame) < 3 for s in samples] == [True, True]
    assert [s.source_path for s in samples] == ["S1/Seq1/imageSequence/video_1.avi"] * 2
    assert [q.reason.split(":")[0] for q in quarantined] == [common.BAD_VIDEO]
    np.testing.assert_allclose(samples[0].camera.f, _train_camera(1)[0])

    samples, quarantined = by_task["S1_Seq1_Cam2"]  # neither frames nor video
    assert not samples and {q.reason.split(":")[0] for q in quarantined} == {common.MISSING_IMAGE}

    # every, annotation_3d; and the rows become shard rows (the writer's checks, no Ray)
    (task,) = mpi3dhp.list_tasks(str(root), "train", train_cameras=[0], every=5, annotation_3d="annot3")
    samples, _ = _split(list(mpi3dhp.read_task(task)))
    assert [s.frame for s in samples] == [0, 10] and samples[0].annotation_3d == "annot3"
    np.testing.assert_array_equal(samples[0].joints_3d[0], annot3[0, 25])  # r_ankle
    result = writer.process_task(
        task, mpi3dhp.read_task, str(tmp_path / "out"), writer.WriterConfig(crop_size=32)
    )
    assert (result.rows, result.failed, result.reasons) == (2, False, {common.MISSING_IMAGE: 3})

    with pytest.raises(ValueError, match="train_cameras must name cameras 0..13"):
        mpi3dhp.list_tasks(str(root), "train", train_cameras="0,14")


def test_3dhp_train_annot_v73_equals_v5(tmp_path: Path):
    """A v7.3 annot.mat (HDF5, each camera cell an object reference, axes reversed) reads as the
    MATLAB 5 file does."""
    seq = tmp_path / "S1" / "Seq1"
    _write_train_sequence(seq)
    v5 = mpi3dhp.load_train_annot(str(seq / "annot.mat"))
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as f:
        for name in ("annot2", "annot3", "univ_annot3"):
            refs = []
            for cam, cell in enumerate(v5[name]):
                refs.append(f.create_dataset(f"#refs#/{name}{cam}", data=cell.reshape(len(cell), -1).T).ref)
            f.create_dataset(name, data=np.array([refs], dtype=h5py.ref_dtype))
    with open(tmp_path / "v73.mat", "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file")
    v73 = mpi3dhp.load_train_annot(str(tmp_path / "v73.mat"))
    for name in v5:
        assert len(v73[name]) == 14
        for a, b in zip(v5[name], v73[name], strict=True):
            np.testing.assert_array_equal(a, b)


def _write_train_npz(root: Path, frames: list[int], cams: tuple[int, ...] = (0, 8)) -> dict[str, np.ndarray]:
    """mmpose's train npz for S2/Seq1 (names S2_Seq1_Cam<k>_<frame+1:06d>.jpg) and its images."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    names, part, s3d = [], [], []
    for cam in cams:
        annot2, annot3, _ = _poses_28(cam)
        for frame in frames:
            names.append(f"S2_Seq1_Cam{cam}_{frame + 1:06d}.jpg")
            inside = np.ones((17, 1))
            part.append(np.concatenate([annot2[frame, mpi3dhp.JOINTS_17_OF_28], inside], axis=1))
            s3d.append(np.concatenate([annot3[frame, mpi3dhp.JOINTS_17_OF_28] / 1000.0, inside], axis=1))
            cv2.imwrite(str(root / "images" / names[-1]), np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    part, s3d = np.array(part), np.array(s3d)
    lo, hi = part[..., :2].min(axis=1), part[..., :2].max(axis=1)
    data = {
        "imgname": np.array(names),
        "center": (lo + hi) / 2,
        "scale": 1.2 * (hi - lo).max(axis=1) / 200,
        "part": part,
        "S": s3d,
    }
    np.savez(root / "annotations" / "mpi_inf_3dhp_train.npz", **data)
    return data


def test_3dhp_train_npz(tmp_path: Path):
    root = tmp_path / "3dhp"
    data = _write_train_npz(root, [0, 5, 10, 20])
    tasks = mpi3dhp.list_tasks(str(root), "train")  # every 10th frame: 0, 10, 20
    assert [t.task_id for t in tasks] == ["S2_Seq1_Cam0", "S2_Seq1_Cam8"]
    samples, quarantined = _split(_read_all(mpi3dhp, tasks))
    assert not quarantined and [s.frame for s in samples] == [0, 10, 20] * 2
    for s in samples:
        cam = int(s.camera_id)
        f, c = _train_camera(cam)
        # no camera file: the intrinsics are fitted to the task's own labels, and reproduce them
        np.testing.assert_allclose(s.camera.f, f, rtol=1e-9)
        np.testing.assert_allclose(s.camera.c, c, atol=1e-7)
        _, annot3, _ = _poses_28(cam)
        thorax = (annot3[s.frame, 9] + annot3[s.frame, 14]) / 2
        np.testing.assert_allclose(s.joints_3d[THORAX], thorax, atol=1e-9)
        np.testing.assert_allclose(s.joints_2d[THORAX], thorax[:2] / thorax[2] * f + c, atol=1e-6)
        assert (s.subject, s.subaction, s.key, s.annotation_3d) == ("S2", "Seq1", f"{s.frame:06d}", "annot3")
        assert s.source_path == f"images/S2_Seq1_Cam{cam}_{s.frame + 1:06d}.jpg"
    row = list(data["imgname"]).index("S2_Seq1_Cam8_000011.jpg")
    assert samples[4].box_size == pytest.approx(data["scale"][row] * 200)

    # mmpose's cameras_train.json wins over the fit
    cams = {"S2_Seq1_Cam0": {"f": [[100.0], [100.0]], "c": [[1.0], [2.0]], "w": 64, "h": 48}}
    (root / "cameras_train.json").write_text(json.dumps(cams))
    sample = next(mpi3dhp.read_task(mpi3dhp.list_tasks(str(root), "train", subjects="S2")[0]))
    np.testing.assert_array_equal(sample.camera.f, [100.0, 100.0])

    # the test split of a folder that holds only the training npz says so
    with pytest.raises(
        FileNotFoundError, match=r"annotations/mpi_inf_3dhp_train.npz is there: --split train"
    ):
        mpi3dhp.list_tasks(str(root), "test")
    names = r"'S2_Seq1_Cam0_000001.jpg' \(they are train names: --split train\)"
    with pytest.raises(ValueError, match=rf"holds no test rows: its 8 image names look like {names}"):
        mpi3dhp.list_tasks(str(root), "test", npz="annotations/mpi_inf_3dhp_train.npz")


def test_fit_pinhole_recovers_intrinsics():
    rng = np.random.default_rng(0)
    points = rng.uniform([-500, -800, 2500], [500, 800, 4500], size=(40, 3))
    f, c = np.array([1497.7, 1497.1]), np.array([1024.7, 1051.4])
    camera = mpi3dhp.fit_pinhole(points[:, :2] / points[:, 2:] * f + c, points)
    np.testing.assert_allclose(camera.f, f, rtol=1e-10)
    np.testing.assert_allclose(camera.c, c, atol=1e-7)
    assert mpi3dhp.fit_pinhole(np.zeros((2, 2)), points[:2]) is None  # too few points


# --- missing files: counted, named, and no OpenCV warning per file ------------------------------


def test_missing_images_and_videos_are_counted_quietly(tmp_path: Path, capfd):
    image, reason = common.read_image(tmp_path / "nope.jpg", "nope.jpg")
    assert image is None and reason == f"{common.MISSING_IMAGE}: nope.jpg"
    image, reason = common.read_image(tmp_path / "nope.jpg" / "deeper.jpg", "x")  # a file as a folder
    assert reason == f"{common.MISSING_IMAGE}: x"
    frames = list(common.read_video_frames(tmp_path / "video_0.avi", np.array([0, 10]), "video_0.avi"))
    assert [r for _, _, r in frames] == [f"{common.BAD_VIDEO}: missing video_0.avi"] * 2
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    frames = list(common.read_video_frames(tmp_path / "broken.avi", np.array([0]), "broken.avi"))
    assert frames[0][1] is None and frames[0][2].startswith(common.BAD_VIDEO)
    err = capfd.readouterr().err
    assert "WARN" not in err and "warning" not in err.lower(), err
