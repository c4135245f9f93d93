"""Writers of the raw dataset formats the readers (``data_prep.readers``) take.

- Human3.6M, mmpose's preprocessed layout (``h36m_npz``): ``images/<S>/<S>_<Action>_<trial>.<cam>/
  <S>_<Action>_<trial>.<cam>_<frame+1:06d>.jpg``, ``annotation_body3d/fps10/h36m_{train,test}.npz``
  (``imgname``, ``center``, ``scale`` = box / 200, ``part`` (N, 17, 3) px + visibility, ``S``
  (N, 17, 4) camera METRES + visibility; mmpose's 17 joints) and ``annotation_body3d/cameras.json``
  (mmpose's cameras.pkl as JSON: R camera-to-world, T camera centre in metres, f, c, k, p, w, h).
- Human3.6M, the official layout (``h36m_video``): ``<S>/Videos/<Action> <trial>.<cam>.mp4`` and
  ``<S>/MyPoseFeatures/D3_Positions_mono|D2_Positions/<Action> <trial>.<cam>.cdf`` (variable
  ``Pose``, one record (F, 96) camera mm / (F, 64) px, the raw 32 joints). Each rendered frame is
  held for ``LAB_FRAME_STEP`` video frames, so the reader's default every-5th-frame sampling
  reads each rendered pose once, at the frame number the npz layout gives it.
- MPII (``mpii``): ``images/<name>.jpg``; the full release ``mpii_human_pose_v1_u12_1.mat``
  (``RELEASE``: annolist(i).image.name, annorect (head box x1..y2, annopoints.point {x, y, id,
  is_visible}, scale, objpos), img_train, single_person, act, version, video_list), the validation
  list ``mpii_val_official_struct.mat`` (annolist of one person each without image names,
  RELEASE_img_index, RELEASE_person_index: like the common validation file) and the HRNet JSON
  ``annot/{train,valid}.json``. MATLAB pixels are 1-based: written as 0-based px + 1.
- MPI-INF-3DHP test set (``mpi3dhp``): ``TS<n>/imageSequence/img_<frame+1:06d>.jpg``,
  ``TS<n>/annot_data.mat`` as MATLAB v7.3 (HDF5 with MATLAB's 512-byte header) holding
  ``annot2`` (F, 1, 17, 2) px, ``annot3`` and ``univ_annot3`` (F, 1, 17, 3) camera mm,
  ``valid_frame`` and ``activity_annotation`` (F, 1) (h5py's view of MATLAB's 2 x 17 x 1 x F and
  1 x F), and ``cameras_test.json`` (f, c, w, h per sequence). ``univ_annot3`` is ``annot3``
  scaled about the pelvis to the canonical bone-length sum (``geometry.rescale_to_canonical``'s rule);
  the wild-test bodies are made at that size, so the two agree.

- COCO keypoints (``coco``, the street set): ``<split>2017/<image id:012d>.jpg`` and
  ``annotations/person_keypoints_{train,val}2017.json`` (``images``, ``annotations`` with 17
  keypoints as x, y, v, ``num_keypoints``, ``bbox`` x, y, w, h, ``area``, ``iscrowd``,
  ``segmentation``: outer-contour polygons, an uncompressed column-major RLE for a crowd;
  ``categories``: COCO's person category). Keypoints are 0-based pixel indices (COCO's own
  convention, the project's); boxes, polygons and areas are continuous px with the image's edge at 0,
  taken from the pixels that show the person.

Person boxes (Human3.6M ``center``/``scale``, MPII ``objpos``/``scale``): the middle of the
joints' bounding rectangle and 1.2 x its larger side (mmpose's margin; ``readers.common``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pose3d import skeleton

BOX_MARGIN = 1.2
SCALE_UNIT_PX = 200.0


def person_box(joints_2d: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (2,) px, side px) of the square box around joints (J, 2): 1.2 x their extent."""
    lo, hi = joints_2d.min(axis=0), joints_2d.max(axis=0)
    return (lo + hi) / 2, float(BOX_MARGIN * np.max(hi - lo))


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def _column(v: np.ndarray) -> list[list[float]]:
    return [[float(x)] for x in np.asarray(v, np.float64).ravel()]


# --- Human3.6M ---------------------------------------------------------------------------------


@dataclass
class LabRecord:
    """One lab image: names and labels (17 = mmpose's order, 32 = the raw mocap order)."""

    subject: str
    action: str
    trial: str
    camera_id: str
    frame: int  # 0-based video frame
    j17_px: np.ndarray  # (17, 2)
    j17_cam: np.ndarray  # (17, 3) mm
    j32_px: np.ndarray  # (32, 2)
    j32_cam: np.ndarray  # (32, 3) mm

    @property
    def sequence(self) -> str:
        return f"{self.subject}_{self.action}_{self.trial}.{self.camera_id}"

    @property
    def imgname(self) -> str:
        return f"{self.subject}/{self.sequence}/{self.sequence}_{self.frame + 1:06d}.jpg"


def h36m_image_path(root: Path, record: LabRecord) -> Path:
    return root / "images" / record.imgname


def write_h36m_cameras(root: Path, subjects: list[str], camera_ids: list[str], cameras: list) -> Path:
    """``annotation_body3d/cameras.json``: one entry per subject and camera (the same studio
    cameras for every subject). cameras: ``render.ViewCamera`` (world mm)."""
    table = {}
    for subject in subjects:
        for i, (cid, cam) in enumerate(zip(camera_ids, cameras, strict=True)):
            intr = cam.intrinsics
            table[f"{subject}_{cid}"] = {
                "R": np.asarray(cam.r_c2w).tolist(),
                "T": _column(np.asarray(cam.t_c2w) / 1000.0),
                "f": _column(intr.f),
                "c": _column(intr.c),
                "k": _column(intr.k),
                "p": _column(intr.p),
                "w": int(cam.width),
                "h": int(cam.height),
                "name": f"camera{i + 1}",
                "id": cid,
            }
    path = root / "annotation_body3d" / "cameras.json"
    _write_json(path, table)
    return path


def write_h36m_npz(root: Path, split: str, records: list[LabRecord]) -> Path:
    """``annotation_body3d/fps10/h36m_<split>.npz`` for the records (in their order)."""
    n = len(records)
    part = np.ones((n, 17, 3))
    s3d = np.ones((n, 17, 4))
    center, scale = np.zeros((n, 2)), np.zeros(n)
    for i, r in enumerate(records):
        part[i, :, :2] = r.j17_px
        s3d[i, :, :3] = r.j17_cam / 1000.0
        c, side = person_box(r.j17_px)
        center[i], scale[i] = c, side / SCALE_UNIT_PX
    path = root / "annotation_body3d" / "fps10" / f"h36m_{split}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        imgname=np.array([r.imgname for r in records], dtype=str),
        center=center,
        scale=scale,
        part=part,
        S=s3d,
    )
    return path


def write_cdf_pose(path: Path, pose: np.ndarray) -> None:
    """A Human3.6M-style CDF: variable ``Pose``, one record of shape (F, D) float64."""
    from cdflib.cdfwrite import CDF

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    cdf = CDF(str(path), cdf_spec={"Majority": "Row_major"})
    try:
        spec = {
            "Variable": "Pose",
            "Data_Type": CDF.CDF_DOUBLE,
            "Num_Elements": 1,
            "Rec_Vary": True,
            "Dim_Sizes": list(pose.shape),
        }
        cdf.write_var(spec, var_data=np.asarray(pose, np.float64)[None])
    finally:
        cdf.close()


def write_h36m_video(root: Path, records: list[LabRecord], hold: int) -> list[Path]:
    """The official layout for every sequence of ``records``, from the already written JPEGs
    (``h36m_image_path``): an MP4 (each image held ``hold`` frames) and its D3/D2 CDF poses."""
    import cv2

    by_seq: dict[str, list[LabRecord]] = {}
    for r in records:
        by_seq.setdefault(r.sequence, []).append(r)
    written = []
    for seq_records in by_seq.values():
        seq_records.sort(key=lambda r: r.frame)
        first = seq_records[0]
        name = f"{first.action} {first.trial}.{first.camera_id}"
        n_frames = seq_records[-1].frame + hold
        d3 = np.zeros((n_frames, 96))
        d2 = np.zeros((n_frames, 64))
        video = root / first.subject / "Videos" / f"{name}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        writer = None
        position = 0
        try:
            for r in seq_records:
                image = cv2.imread(str(h36m_image_path(root, r)), cv2.IMREAD_COLOR)
                if writer is None:
                    h, w = image.shape[:2]
                    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 50.0, (w, h))
                # Frames between the rendered ones repeat the previous one (image and pose).
                while position < r.frame + hold:
                    writer.write(image)
                    d3[position] = r.j32_cam.ravel()
                    d2[position] = r.j32_px.ravel()
                    position += 1
        finally:
            if writer is not None:
                writer.release()
        features = root / first.subject / "MyPoseFeatures"
        write_cdf_pose(features / "D3_Positions_mono" / f"{name}.cdf", d3)
        write_cdf_pose(features / "D2_Positions" / f"{name}.cdf", d2)
        written.append(video)
    return written


# --- MPII ----------------------------------------------------------------------------------------


@dataclass
class WildRecord:
    """One wild image (one person): 0-based px labels."""

    name: str
    split: str
    joints_2d: np.ndarray  # (16, 2)
    annotated: np.ndarray  # (16,) inside the image
    visible: np.ndarray  # (16,) not occluded (MPII's is_visible)
    head_box: np.ndarray  # (4,) x1, y1, x2, y2
    width: int
    height: int

    def box(self) -> tuple[np.ndarray, float]:
        """objpos and side: from all 16 joints (as an annotator sees the whole person), the centre
        kept inside the image."""
        centre, side = person_box(self.joints_2d)
        return np.clip(centre, 0, [self.width - 1, self.height - 1]), side


def _struct_array(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A (1, n) MATLAB struct array for ``scipy.io.savemat`` (missing fields are empty)."""
    out = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            out[0, i][f] = row.get(f, np.zeros((0, 0)))
    return out


def _annorect(r: WildRecord) -> dict:
    """A person as MATLAB's ``annorect``: 1-based px."""
    points = [
        {"x": float(r.joints_2d[j, 0] + 1), "y": float(r.joints_2d[j, 1] + 1), "id": np.uint8(j),
         "is_visible": np.uint8(r.visible[j])}
        for j in np.flatnonzero(r.annotated)
    ]  # fmt: skip
    centre, side = r.box()
    return {
        "x1": float(r.head_box[0] + 1), "y1": float(r.head_box[1] + 1),
        "x2": float(r.head_box[2] + 1), "y2": float(r.head_box[3] + 1),
        "annopoints": {"point": _struct_array(points, ("x", "y", "id", "is_visible"))},
        "scale": side / SCALE_UNIT_PX,
        "objpos": {"x": float(centre[0] + 1), "y": float(centre[1] + 1)},
    }  # fmt: skip


def write_mpii(root: Path, records: list[WildRecord]) -> list[Path]:
    """The MPII annotation files for ``records`` (module docstring); images are written apart."""
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    rect_fields = ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos")
    annolist = [
        {"image": {"name": r.name}, "annorect": _struct_array([_annorect(r)], rect_fields),
         "frame_sec": np.zeros((0, 0)), "vididx": np.zeros((0, 0))}
        for r in records
    ]  # fmt: skip
    n = len(records)
    act = _struct_array([{"cat_name": "synthetic", "act_name": "posing", "act_id": 1} for _ in records],
                        ("cat_name", "act_name", "act_id"))  # fmt: skip
    single = np.empty((n, 1), dtype=object)
    for i in range(n):
        single[i, 0] = np.array([[1]], dtype=np.uint8)
    release = {
        "annolist": _struct_array(annolist, ("image", "annorect", "frame_sec", "vididx")),
        "img_train": np.ones((1, n), dtype=np.uint8),
        "version": "synthetic-1",
        "single_person": single,
        "act": act.T,
        "video_list": np.empty((1, 0), dtype=object),
    }
    release_path = root / "mpii_human_pose_v1_u12_1.mat"
    scipy.io.savemat(release_path, {"RELEASE": release}, do_compression=True, oned_as="row")
    val = [(i, r) for i, r in enumerate(records) if r.split == "val"]
    val_path = root / "mpii_val_official_struct.mat"
    scipy.io.savemat(
        val_path,
        {
            "annolist": _struct_array(
                [{"annorect": _struct_array([_annorect(r)], rect_fields)} for _, r in val], ("annorect",)
            ),
            "RELEASE_img_index": np.array([[i + 1 for i, _ in val]], dtype=np.uint16),
            "RELEASE_person_index": np.ones((1, len(val)), dtype=np.uint8),
        },
        do_compression=True,
    )
    paths = [release_path, val_path]
    for split, name in (("train", "train.json"), ("val", "valid.json")):
        rows = []
        for r in records:
            if r.split != split:
                continue
            centre, side = r.box()
            rows.append({
                "image": r.name,
                "joints": np.where(r.annotated[:, None], r.joints_2d + 1, -1.0).round(4).tolist(),
                "joints_vis": r.annotated.astype(int).tolist(),
                "center": (centre + 1).round(4).tolist(),
                "scale": round(side / SCALE_UNIT_PX, 6),
            })  # fmt: skip
        path = root / "annot" / name
        _write_json(path, rows)
        paths.append(path)
    return paths


# --- MPI-INF-3DHP -------------------------------------------------------------------------------


@dataclass
class TestRecord:
    sequence: str
    frame: int  # 0-based
    activity: int
    valid: bool
    j17_px: np.ndarray  # (17, 2)
    j17_cam: np.ndarray  # (17, 3) mm


def mpi3dhp_image_path(root: Path, sequence: str, frame: int) -> Path:
    return root / sequence / "imageSequence" / f"img_{frame + 1:06d}.jpg"


def _matlab_v73_header() -> bytes:
    """MATLAB's 512-byte v7.3 MAT-file header (text, subsystem offset, version 0x0200, 'IM')."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 HDF5 schema 1.00 ."
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM" + b"\x00" * 384


def write_annot_data(path: Path, records: list[TestRecord]) -> None:
    """One sequence's ``annot_data.mat`` (records in frame order, frames 0..F-1)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: r.frame)
    if [r.frame for r in records] != list(range(len(records))):
        raise ValueError(f"{path}: frames must be 0..F-1")
    j2 = np.stack([r.j17_px for r in records])[:, None]
    j3 = np.stack([r.j17_cam for r in records])[:, None]
    # univ_annot3: all 17 joints scaled about the pelvis by the factor that brings the 16-joint
    # bone sum to the canonical one (geometry.rescale_to_canonical's rule).
    mapped, _ = skeleton.MPI3DHP17.apply(j3[:, 0])
    ratio = skeleton.CANONICAL_BONE_SUM_MM / skeleton.bone_lengths(mapped).sum(axis=-1)
    pelvis = j3[:, :, 14:15]
    univ = (j3 - pelvis) * ratio[:, None, None, None] + pelvis
    columns = {
        "annot2": j2,
        "annot3": j3,
        "univ_annot3": univ,
        "valid_frame": np.array([[float(r.valid)] for r in records]),
        "activity_annotation": np.array([[float(r.activity)] for r in records]),
    }
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in columns.items():
            ds = f.create_dataset(name, data=np.asarray(value, np.float64))
            ds.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(_matlab_v73_header())


def write_3dhp_cameras(root: Path, cameras: dict[str, object]) -> Path:
    """``cameras_test.json``: {"TS1": {"f": [[fx], [fy]], "c": [[cx], [cy]], "w", "h", "name"}}."""
    table = {}
    for i, (name, cam) in enumerate(cameras.items()):
        table[name] = {
            "f": _column(cam.intrinsics.f),
            "c": _column(cam.intrinsics.c),
            "w": int(cam.width),
            "h": int(cam.height),
            "name": f"test_cam_{i + 1}",
        }
    path = root / "cameras_test.json"
    _write_json(path, table)
    return path


# --- COCO keypoints ------------------------------------------------------------------------------

#: COCO's person category as its keypoint files give it (names and the 1-based limb pairs).
COCO_CATEGORY = {
    "supercategory": "person",
    "id": 1,
    "name": "person",
    "keypoints": [
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
        "right_knee", "left_ankle", "right_ankle",
    ],
    "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                 [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]],
}  # fmt: skip


@dataclass
class CocoAnnotation:
    """One person (or crowd) of a COCO image: keypoints (17, 3) x, y 0-based px (pixel centres at
    integers, COCO's own) and v; bbox COCO's x, y, w, h (continuous px, the image's left edge at
    0); area px²; segmentation polygons or, for a crowd, an uncompressed RLE."""

    id: int
    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: bool
    segmentation: list[list[float]] | dict


@dataclass
class CocoImageRecord:
    id: int
    file_name: str
    split: str
    width: int
    height: int
    annotations: list[CocoAnnotation]


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """COCO's bbox of a mask (H, W) bool: the extent of its pixels in continuous px (pixel column
    c spans [c, c + 1))."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons [x1, y1, x2, y2, ...] (continuous px) of a mask's outer contours (3+ points);
    a mask too thin for one (a pixel or a line) gets its box as the polygon."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) >= 3:  # pixel centres (integer indices) -> continuous px: +0.5
            polygons.append([round(float(v) + 0.5, 2) for v in contour.reshape(-1)])
    if not polygons:
        x, y, w, h = mask_bbox(mask)
        polygons.append([x, y, x + w, y, x + w, y + h, x, y + h])
    return polygons


def mask_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a mask (H, W) bool: run lengths over the column-major pixels,
    starting with a run of zeros (maybe empty)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def write_coco(root: Path, records: list[CocoImageRecord]) -> list[Path]:
    """``annotations/person_keypoints_<split>2017.json`` for the records (images are written
    apart, under ``<split>2017/``); ids as given. Both splits are written, empty or not."""
    paths = []
    for split in ("train", "val"):
        chosen = [r for r in records if r.split == split]
        annotations = []
        for r in chosen:
            for a in r.annotations:
                kp = np.asarray(a.keypoints, np.float64)
                flat = np.concatenate([kp[:, :2].round(2), kp[:, 2:3]], axis=-1).ravel().tolist()
                annotations.append({
                    "id": a.id, "image_id": r.id, "category_id": 1, "iscrowd": int(a.iscrowd),
                    "keypoints": [int(v) if k % 3 == 2 else v for k, v in enumerate(flat)],
                    "num_keypoints": int((kp[:, 2] > 0).sum()), "bbox": [round(v, 2) for v in a.bbox],
                    "area": float(a.area), "segmentation": a.segmentation,
                })  # fmt: skip
        data = {
            "info": {"description": "pose3d synthetic street set (COCO keypoints format)", "version": "1"},
            "licenses": [],
            "categories": [COCO_CATEGORY],
            "images": [
                {"id": r.id, "file_name": r.file_name, "width": r.width, "height": r.height} for r in chosen
            ],
            "annotations": annotations,
        }
        path = root / "annotations" / f"person_keypoints_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))
        paths.append(path)
    return paths
