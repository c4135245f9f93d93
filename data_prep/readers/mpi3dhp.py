"""MPI-INF-3DHP test-set reader: the official ``annot_data.mat`` + image sequences, or mmpose's npz.

Split: "test" only (6 sequences TS1..TS6, 2929 valid frames). Joints: the test set's 17
(``skeleton.MPI3DHP17``: head_top, neck, r_sho, r_elb, r_wri, l_sho, l_elb, l_wri, r_hip, r_knee,
r_ank, l_hip, l_knee, l_ank, pelvis, spine, head) mapped to the 16; the thorax is the 3D midpoint
of the shoulders and its 2D the pinhole projection of that point with the sequence's intrinsics
(no distortion; docs/conventions.md, Joint mappings). ``subject`` is the sequence ("TS1"),
``group`` its evaluation group (``GROUPS``), ``action`` the activity name (``ACTIVITIES``; "" when
unknown), ``frame`` the 0-based frame index (image ``img_000001.jpg`` is frame 0), ``key``
``f"{frame:06d}"``, the task id the sequence: one frame has one row id in both layouts.
``annotation_3d`` records which 3D annotation the sample holds (docs/conventions.md, 3DHP ground
truth). Box: the joints' bounding square x 1.2 (official layout; mmpose's own margin) or mmpose's
centre/scale (npz).

Layout "official" (the released test set)::

    <root>/TS<n>/annot_data.mat                   n = 1..6
    <root>/TS<n>/imageSequence/img_<frame:06d>.jpg  1-based frame numbers

  ``annot_data.mat`` is MATLAB v7.3 (HDF5, read with h5py; a pre-7.3 file is read with scipy).
  Variables, in MATLAB's order (h5py sees every axis reversed):

    annot2               MATLAB 2 x 17 x 1 x F   -> h5py (F, 1, 17, 2)  px
    annot3               MATLAB 3 x 17 x 1 x F   -> h5py (F, 1, 17, 3)  camera mm
    univ_annot3          MATLAB 3 x 17 x 1 x F   -> h5py (F, 1, 17, 3)  camera mm, height-normalized
    valid_frame          MATLAB 1 x F (or F x 1)  1 = a valid frame
    activity_annotation  MATLAB 1 x F (or F x 1)  activity code 1..7

  Either orientation is accepted, with or without the singleton axis: the joint axis (17) and the
  coordinate axis (2 or 3) are found by position. Only valid frames are read. The 3D annotation is
  ``univ_annot3`` (the official ground truth; option ``annotation_3d="annot3"``), falling back to
  ``annot3`` when a file lacks it (recorded per sample).

  Intrinsics (option cameras=PATH, else the first found): ``cameras_test.json`` (mmpose's
  cameras_test.pkl as JSON: ``{"TS1": {"f": [[fx], [fy]], "c": [[cx], [cy]], "w": .., "h": ..}, ..}``;
  a ``.pkl`` of the same dict is read too), else the official calibration files
  ``ts1-4cameras.calib`` (TS1-TS4) and ``ts5-6cameras.calib`` (TS5, TS6), in ``<root>`` or
  ``<root>/test_util/camera_calibration``. From a calibration file ("tc camera calibration v0.3":
  ``sensorSize`` sx sy mm, ``focalLength`` F mm, ``pixelAspect`` y/x, ``centerOffset`` ox oy mm) and
  the image's size W x H px: fx = F / sx * W, fy = fx * pixelAspect, cx = W / 2 + ox / sx * W,
  cy = H / 2 + oy / sy * H. For TS1 and TS6 these agree with cameras_test.json to 0.2 px; its
  per-sequence values differ by up to 4 px for TS2 (one calibration serves TS1-TS4), and on the
  fixture frame of TS2 they reproduce mmpose's 2D labels to 0.2 px where the calibration is 5 px off,
  hence the order. The calibration's OpenCV distortion coefficients (TS5, TS6) are not applied, as
  in mmpose (which keeps f and c only).

Layout "npz" (mmpose's preprocessed test set; the fixture ``mpi_inf_3dhp/``)::

    <root>/<annotation>.npz   option npz=PATH, else annotations/mpi_inf_3dhp_test_valid.npz,
                              mpi_inf_3dhp_test_valid.npz, or the only *.npz in <root>
    <root>/[images/]TS<n>_<frame:06d>.jpg   1-based frame numbers (image root option images=DIR)
    <root>/cameras_test.json  (or the calibration files, as above)

  npz arrays: ``imgname`` (N,) str ``"TS1_002001.jpg"``; ``center`` (N, 2) px; ``scale`` (N,) box
  side / 200 px; ``part`` (N, 17, 3) px + visibility; ``S`` (N, 17, 4) camera METRES (from
  ``annot3``) + visibility. ``annotation_3d`` = "annot3". The activity comes from
  ``<root>/TS<n>/annot_data.mat`` when that file is there, else it is "".

``layout="auto"``: "official" when ``<root>/TS*/annot_data.mat`` exists, else "npz".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.readers import common
from data_prep.records import Camera, PersonSample, Quarantined, SourceTask
from pose3d import skeleton

DATASET = "3dhp"
SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
GROUPS = {
    "TS1": "studio_gs", "TS2": "studio_gs", "TS3": "studio_nogs", "TS4": "studio_nogs",
    "TS5": "outdoor", "TS6": "outdoor",
}  # fmt: skip
ACTIVITIES = {
    1: "Standing/Walking", 2: "Exercise", 3: "Sitting", 4: "Reaching/Crouching", 5: "On the Floor",
    6: "Sports", 7: "Miscellaneous",
}  # fmt: skip
_CAMERA_JSON = (
    "cameras_test.json",
    "cameras_test.pkl",
    "annotations/cameras_test.json",
    "annotations/cameras_test.pkl",
)
_CALIB_DIRS = (".", "test_util/camera_calibration")
_NPZ_NAMES = ("annotations/mpi_inf_3dhp_test_valid.npz", "mpi_inf_3dhp_test_valid.npz")
_NPZ_IMGNAME = re.compile(r"(TS\d+)_(\d+)\.[A-Za-z]+$")


# --- cameras ----------------------------------------------------------------------------------


def parse_calib(path: str | Path) -> dict[str, float]:
    """A "tc camera calibration" file's first camera's intrinsics in mm: sensor_x, sensor_y,
    focal, aspect (y / x), offset_x, offset_y."""
    values: dict[str, list[float]] = {}
    for line in Path(path).read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] in ("sensorSize", "focalLength", "pixelAspect", "centerOffset"):
            if words[0] in values:
                break  # a second camera follows: the test set's files hold one
            values[words[0]] = [float(w) for w in words[1:]]
    missing = {"sensorSize", "focalLength", "pixelAspect", "centerOffset"} - set(values)
    if missing:
        raise ValueError(f"3dhp: {path} lacks {sorted(missing)}")
    return {
        "sensor_x": values["sensorSize"][0],
        "sensor_y": values["sensorSize"][1],
        "focal": values["focalLength"][0],
        "aspect": values["pixelAspect"][0],
        "offset_x": values["centerOffset"][0],
        "offset_y": values["centerOffset"][1],
    }


def calib_camera(calib: dict[str, float], width: int, height: int) -> Camera:
    """Pinhole intrinsics (px) of a calibration (``parse_calib``) for a W x H image."""
    fx = calib["focal"] / calib["sensor_x"] * width
    cx = width / 2 + calib["offset_x"] / calib["sensor_x"] * width
    cy = height / 2 + calib["offset_y"] / calib["sensor_y"] * height
    return Camera(np.array([fx, fx * calib["aspect"]]), np.array([cx, cy]))


def find_cameras(raw_root: str | Path, cameras: str | None = None) -> dict[str, dict[str, Any]]:
    """Per sequence: ``{"camera": payload}`` (fixed intrinsics) or ``{"calib": parse_calib(..)}``
    (intrinsics from the image size). Sequences without any are left out."""
    root = Path(raw_root)
    path = common.resolve(root, cameras) if cameras else common.first_existing(root, _CAMERA_JSON)
    if cameras and not path.exists():
        raise FileNotFoundError(f"3dhp: cameras file {path} not found")
    if path is not None and path.suffix in (".json", ".pkl"):
        if path.suffix == ".pkl":
            raw = common.load_plain_pickle(path)
        else:
            with open(path) as f:
                raw = json.load(f)
        out = {}
        for seq, entry in raw.items():
            camera = Camera(
                np.asarray(entry["f"], np.float64).reshape(2), np.asarray(entry["c"], np.float64).reshape(2)
            )
            out[str(seq)] = {"camera": common.camera_to_payload(camera)}
        return out
    calib_files = [path] if path is not None else []
    for folder in _CALIB_DIRS:
        calib_files += sorted((root / folder).glob("ts*cameras.calib"))
    out = {}
    for calib_path in calib_files:
        match = re.search(r"ts(\d)-(\d)cameras", calib_path.name)
        if not match:
            continue
        calib = parse_calib(calib_path)
        for n in range(int(match.group(1)), int(match.group(2)) + 1):
            out.setdefault(f"TS{n}", {"calib": calib})
    return out


def _camera_for(entry: dict[str, Any] | None, image: np.ndarray) -> Camera | None:
    if entry is None:
        return None
    if "camera" in entry:
        return common.camera_from_payload(entry["camera"])
    return calib_camera(entry["calib"], image.shape[1], image.shape[0])


# --- annot_data.mat ---------------------------------------------------------------------------


def frames_joints(array: np.ndarray, coords: int) -> np.ndarray:
    """A MATLAB joint array in either orientation -> (F, 17, coords).

    Accepts h5py's (F, 1, 17, C) / (F, 17, C) and MATLAB's (C, 17, 1, F) / (C, 17, F).
    Raises ValueError for any other shape.
    """
    a = np.asarray(array, np.float64)
    if a.ndim >= 2 and a.shape[-1] == coords and a.shape[-2] == 17:
        return a.reshape(-1, 17, coords)
    if a.ndim >= 2 and a.shape[0] == coords and a.shape[1] == 17:
        return a.reshape(coords, 17, -1).transpose(2, 1, 0)
    raise ValueError(f"shape {a.shape} is not 17 joints x {coords} coordinates per frame")


@common.cached_by_file(maxsize=2)
def load_annot(path: str) -> dict[str, np.ndarray]:
    """The variables of an ``annot_data.mat`` as arrays in the file's own orientation."""
    names = ("annot2", "annot3", "univ_annot3", "valid_frame", "activity_annotation")
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return {name: np.asarray(f[name]) for name in names if name in f}
    except OSError:  # not HDF5: a pre-7.3 MATLAB file
        import scipy.io

        mat = scipy.io.loadmat(path)
        return {name: np.asarray(mat[name]) for name in names if name in mat}


def _activities(annot: dict[str, np.ndarray], frames: np.ndarray) -> list[str]:
    codes = np.asarray(annot.get("activity_annotation", np.zeros(0))).ravel()
    return [ACTIVITIES.get(int(codes[f]), "") if f < len(codes) else "" for f in frames]


# --- tasks ------------------------------------------------------------------------------------


def list_tasks(
    raw_root: str,
    split: str = "test",
    layout: str = "auto",
    annotation_3d: str = "univ_annot3",
    cameras: str | None = None,
    npz: str | None = None,
    images: str | None = None,
    sequences: Any = None,
) -> list[SourceTask]:
    """One task per test sequence (TS1..TS6 present), in sequence order.

    Raises FileNotFoundError or ValueError for an unknown split or layout or a missing annotation.
    """
    if split != "test":
        raise ValueError(f"3dhp: only the test split is read, not {split!r}")
    if annotation_3d not in ("univ_annot3", "annot3"):
        raise ValueError(f"3dhp: annotation_3d must be univ_annot3 or annot3, not {annotation_3d!r}")
    root = Path(raw_root)
    if not root.is_dir():
        raise FileNotFoundError(f"3dhp: raw root {raw_root} is not a folder")
    wanted = common.list_option(sequences) or list(SEQUENCES)
    if layout == "auto":
        layout = "official" if any(root.glob("TS*/annot_data.mat")) else "npz"
    if layout not in ("official", "npz"):
        raise ValueError(f"3dhp: unknown layout {layout!r} (auto, official, npz)")
    cams = find_cameras(root, cameras)
    tasks = []
    if layout == "official":
        for seq in wanted:
            annot = root / seq / "annot_data.mat"
            if annot.exists():
                payload = {
                    "layout": "official",
                    "annot": str(annot),
                    "annotation_3d": annotation_3d,
                    "camera": cams.get(seq),
                }
                tasks.append(SourceTask(DATASET, split, seq, raw_root, payload))
        if not tasks:
            raise FileNotFoundError(f"3dhp: no <root>/TS<n>/annot_data.mat in {raw_root} for {wanted}")
        return tasks
    npz_path = common.find_annotation("3dhp", root, npz, _NPZ_NAMES)
    image_root = common.image_root(root, images)
    groups: dict[str, list[tuple[int, int]]] = {}
    unparsed = []
    for row, name in enumerate(common.load_npz(str(npz_path))["imgname"]):
        match = _NPZ_IMGNAME.search(str(name))
        if match is None:
            unparsed.append(row)
        elif match.group(1) in wanted:
            groups.setdefault(match.group(1), []).append((int(match.group(2)) - 1, row))
    for seq in sorted(groups, key=lambda s: int(s[2:])):
        frames = sorted(groups[seq])
        annot = root / seq / "annot_data.mat"
        payload = {
            "layout": "npz",
            "npz": str(npz_path),
            "images": str(image_root),
            "rows": [r for _, r in frames],
            "frames": [f for f, _ in frames],
            "camera": cams.get(seq),
            "annot": str(annot) if annot.exists() else None,
        }
        tasks.append(SourceTask(DATASET, split, seq, raw_root, payload))
    if unparsed:
        payload = {
            "layout": "npz",
            "npz": str(npz_path),
            "images": str(image_root),
            "rows": unparsed,
            "unparsed": True,
        }
        tasks.append(SourceTask(DATASET, split, "unparsed_image_names", raw_root, payload))
    return tasks


# --- reading ----------------------------------------------------------------------------------


def read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """Every valid frame of one sequence, in frame order."""
    if task.payload["layout"] == "official":
        yield from _read_official(task)
    else:
        yield from _read_npz(task)


def _read_official(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    p, seq = task.payload, task.task_id
    annot_rel = common.relative_to_root(p["annot"], task.raw_root)
    try:
        annot = load_annot(p["annot"])
    except Exception as err:  # an unreadable file is one quarantined record, never a crash
        yield Quarantined(annot_rel, "annotation", f"{common.BAD_ANNOTATION}: {err}")
        return
    if "valid_frame" not in annot:
        yield Quarantined(annot_rel, "annotation", f"{common.BAD_ANNOTATION}: no valid_frame variable")
        return
    which = p["annotation_3d"] if p["annotation_3d"] in annot else "annot3"
    valid = np.asarray(annot["valid_frame"]).ravel() > 0
    frames = np.flatnonzero(valid)
    keys = [f"{f:06d}" for f in frames]
    try:
        if "annot2" not in annot or which not in annot:
            raise ValueError(f"lacks annot2 or {which}")
        j2d_all, j3d_all = frames_joints(annot["annot2"], 2), frames_joints(annot[which], 3)
    except ValueError as err:
        for key in keys:
            yield Quarantined(annot_rel, key, f"{common.WRONG_JOINT_COUNT}: {err}")
        return
    n_labelled = min(len(j2d_all), len(j3d_all))
    labelled = frames < n_labelled
    for f, key in zip(frames[~labelled], np.asarray(keys)[~labelled], strict=True):
        yield Quarantined(annot_rel, str(key), f"{common.BAD_ANNOTATION}: valid frame {f} has no joints")
    frames, keys = frames[labelled], [k for k, ok in zip(keys, labelled, strict=True) if ok]
    actions = _activities(annot, frames)
    visible = np.ones((len(frames), 17), dtype=bool)
    image_dir = Path(task.raw_root) / seq / "imageSequence"
    for i, frame in enumerate(frames):
        path = image_dir / f"img_{frame + 1:06d}.jpg"
        yield _sample(
            task,
            path,
            keys[i],
            int(frame),
            j2d_all[frame],
            visible[i],
            j3d_all[frame],
            None,
            which,
            actions[i],
        )


def _read_npz(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    p = task.payload
    data = common.load_npz(p["npz"])
    rows = np.asarray(p["rows"], dtype=np.int64)
    names = [str(data["imgname"][r]) for r in rows]
    if p.get("unparsed"):
        for name in names:
            yield Quarantined(
                name,
                Path(name).stem,
                f"{common.BAD_ANNOTATION}: image name {name!r} is not TS<n>_<frame>.jpg",
            )
        return
    keys = [f"{f:06d}" for f in p["frames"]]
    part, s3d = np.asarray(data["part"])[rows], np.asarray(data["S"])[rows]
    if part.shape[1:] != (17, 3) or s3d.shape[1] != 17 or s3d.shape[2] not in (3, 4):
        reason = (
            f"{common.WRONG_JOINT_COUNT}: part {part.shape[1:]}, S {s3d.shape[1:]}, expected (17, 3), (17, 4)"
        )
        for name, key in zip(names, keys, strict=True):
            yield Quarantined(name, key, reason)
        return
    actions = [""] * len(rows)
    if p.get("annot"):
        try:
            actions = _activities(load_annot(p["annot"]), np.asarray(p["frames"]))
        except Exception:  # the activity is optional: an unreadable file leaves it unknown
            pass
    has_box = "center" in data and "scale" in data
    center, box = (
        common.box_from_center_scale(data["center"][rows], data["scale"][rows]) if has_box else (None, None)
    )
    for i, name in enumerate(names):
        box_i = (center[i], float(box[i])) if has_box else None
        path = Path(p["images"]) / name
        j2d, vis, j3d = part[i, :, :2], part[i, :, 2] > 0, s3d[i, :, :3] * 1000.0
        yield _sample(task, path, keys[i], int(p["frames"][i]), j2d, vis, j3d, box_i, "annot3", actions[i])


def _sample(
    task: SourceTask,
    path: Path,
    key: str,
    frame: int,
    joints_2d: np.ndarray,
    visible: np.ndarray,
    joints_3d: np.ndarray,
    box: tuple[np.ndarray, float] | None,
    annotation_3d: str,
    action: str,
) -> PersonSample | Quarantined:
    """One frame: source joints (17, 2) px and (17, 3) mm -> the sample (camera needs the image)."""
    seq = task.task_id
    source = common.relative_to_root(path, task.raw_root)
    image, reason = common.read_image(path, source)
    if image is None:
        return Quarantined(source, key, reason)
    camera = _camera_for(task.payload["camera"], image)
    if camera is None:
        return Quarantined(
            source, key, f"{common.NO_CAMERA}: no intrinsics for {seq} (cameras_test.json or .calib)"
        )
    j2d, vis, j3d = common.map_joints(
        skeleton.MPI3DHP17, joints_2d[None], visible[None], joints_3d[None], camera
    )
    center, side = box if box is not None else common.box_from_joints(j2d[0], vis[0])
    return PersonSample(
        image=image,
        joints_2d=j2d[0],
        visible=vis[0],
        center=np.asarray(center, np.float64),
        box_size=float(side),
        source_path=source,
        key=key,
        joints_3d=j3d[0],
        camera=camera,
        subject=seq,
        action=action,
        group=GROUPS.get(seq, ""),
        frame=frame,
        annotation_3d=annotation_3d,
    )
