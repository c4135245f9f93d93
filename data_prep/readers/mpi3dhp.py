"""MPI-INF-3DHP reader: the official test set (``TS<n>/annot_data.mat``) and training set
(``S<n>/Seq<m>/annot.mat``) with their images or videos, or mmpose's npz of either.

Splits: "test" (6 sequences TS1..TS6, 2929 valid frames) and "train" (subjects S1..S8, sequences
Seq1, Seq2, 14 cameras each). Joints: the test set's 17 (``skeleton.MPI3DHP17``: head_top, neck,
r_sho, r_elb, r_wri, l_sho, l_elb, l_wri, r_hip, r_knee, r_ank, l_hip, l_knee, l_ank, pelvis,
spine, head) mapped to the 16; the training set's 28 joints are first cut to those 17
(``JOINTS_17_OF_28``, 0-based indices into the official 28-joint order), so both splits go through
one mapping. The thorax is the 3D midpoint of the shoulders; its 2D is the pinhole projection (no
distortion) of the midpoint of the ``annot3`` shoulders, the metric annotation that ``annot2`` is
the projection of, whichever 3D annotation the row holds (docs/conventions.md, Joint mappings and
3DHP ground truth). 2D labels are used as the files give them, in both splits.

Test rows: ``subject`` is the sequence ("TS1"), ``group`` its evaluation group (``GROUPS``),
``action`` the activity name (``ACTIVITIES``; "" when unknown), ``frame`` the 0-based frame index
(image ``img_000001.jpg`` is frame 0), ``key`` ``f"{frame:06d}"``, the task id the sequence: one
frame has one row id in both layouts. Training rows: ``subject`` "S1", ``subaction`` the sequence
("Seq1"), ``camera_id`` the camera ("0"), no group or action, ``frame`` 0-based, ``key``
``f"{frame:06d}"``, task id ``"S1_Seq1_Cam0"`` in both layouts. ``annotation_3d`` records which
3D annotation the sample holds (docs/conventions.md, 3DHP ground truth). Box: the joints' bounding
square x 1.2 (official layouts; mmpose's own margin) or mmpose's centre/scale (npz).

Training frames: every ``every``-th frame (default 10: consecutive frames at 25-50 fps are nearly
the same pose; frames 0, 10, 20, ...), of the cameras ``train_cameras`` (default 0, 1, 2, 4, 5, 6,
7, 8: the cameras mmpose's converter keeps; that 3 and 9..13 are the overhead views is
unverified), subjects ``subjects`` (default S1..S8), in both layouts, so both give the same rows. The
test split reads every valid frame (``every`` does not apply).

Layout "official", test (the released test set)::

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

Layout "official", train (the released training set)::

    <root>/S<n>/Seq<m>/annot.mat                  n = 1..8, m = 1, 2
    <root>/S<n>/Seq<m>/camera.calibration
    <root>/S<n>/Seq<m>/imageSequence/video_<k>.avi             k = camera 0..13
      or <root>/S<n>/Seq<m>/imageSequence/img_<k>_<frame:06d>.jpg  extracted frames, 1-based numbers

  ``annot.mat`` (MATLAB 5, read with scipy; a v7.3 file with h5py): cell arrays of one cell per
  camera (14 x 1), row f of a cell is frame f (0-based):

    annot2       {k}: F x 56   28 joints x (x, y) px, joint j in columns 2j, 2j+1
    annot3       {k}: F x 84   28 joints x (x, y, z) camera mm
    univ_annot3  {k}: F x 84   the same, height-normalized (the default 3D annotation, as for test)

  (``frames`` and ``cameras`` are not needed: cell k is camera k.) Every joint is annotated
  (motion capture), so all are visible. ``camera.calibration`` ("Skeletool Camera Calibration File
  V1.0"): per camera a ``name k`` line, then ``size W H`` and ``intrinsic`` with 16 numbers, the
  row-major 4 x 4 matrix [fx 0 cx 0; 0 fy cy 0; ...] in px; the extrinsics are not needed (the
  poses are already in camera coordinates) and ``radial 0`` means no distortion. Images: the
  extracted frame when the first sampled one exists, else the video, decoded sequentially with
  OpenCV (frames the video cannot deliver are quarantined, "bad video").

Layout "npz" (mmpose's preprocessed sets; the fixture ``mpi_inf_3dhp/`` holds the test one)::

    <root>/<annotation>.npz   option npz=PATH, else for test annotations/mpi_inf_3dhp_test_valid.npz,
                              mpi_inf_3dhp_test_valid.npz; for train annotations/mpi_inf_3dhp_train.npz,
                              mpi_inf_3dhp_train.npz; else the only *.npz in <root>
    <root>/[images/]TS<n>_<frame:06d>.jpg           test images, 1-based frame numbers
    <root>/[images/]S<n>_Seq<m>_Cam<k>_<frame:06d>.jpg  training images, 1-based frame numbers
    <root>/cameras_test.json  (or the calibration files, as above); cameras_train.json / .pkl

  npz arrays: ``imgname`` (N,) str ``"TS1_002001.jpg"`` or ``"S1_Seq1_Cam0_000001.jpg"``;
  ``center`` (N, 2) px; ``scale`` (N,) box side / 200 px; ``part`` (N, 17, 3) px + visibility;
  ``S`` (N, 17, 4) camera METRES (from ``annot3``) + visibility. ``annotation_3d`` = "annot3". A
  split reads the rows whose image names are its own; a file with none is refused, naming the
  names it holds. Test activities come from ``<root>/TS<n>/annot_data.mat`` when that file is
  there, else they are "". Training intrinsics come from mmpose's ``cameras_train.json`` / ``.pkl``
  (keys ``"S1_Seq1_Cam0"``; ``annotations/`` also searched) or the sequence's
  ``<root>/S<n>/Seq<m>/camera.calibration``; without either they are fitted to the task's own
  labels (least squares of x = fx X / Z + cx, y = fy Y / Z + cy over its joints: ``part`` is the
  pinhole projection of ``S``, so the fit reproduces it; mmpose made its test cameras so).

``layout="auto"``, per split: "official" when ``<root>/TS*/annot_data.mat`` (test) or
``<root>/S*/Seq*/annot.mat`` (train) exists, else "npz".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
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
_NPZ_NAMES = {
    "test": ("annotations/mpi_inf_3dhp_test_valid.npz", "mpi_inf_3dhp_test_valid.npz"),
    "train": ("annotations/mpi_inf_3dhp_train.npz", "mpi_inf_3dhp_train.npz"),
}
_NPZ_IMGNAME = re.compile(r"(TS\d+)_(\d+)\.[A-Za-z]+$")
_NPZ_TRAIN_IMGNAME = re.compile(r"(S\d+)_(Seq\d+)_Cam(\d+)_(\d+)\.[A-Za-z]+$")
#: What each split's npz image names look like (for the error when a file holds none).
_NPZ_NAME_FORMS = {"test": "TS<n>_<frame>.jpg", "train": "S<n>_Seq<m>_Cam<k>_<frame>.jpg"}

SPLITS = ("test", "train")
TRAIN_SUBJECTS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")
NUM_TRAIN_CAMERAS = 14
#: The training cameras mmpose's converter keeps; 3 and 9..13 are left out by default.
DEFAULT_TRAIN_CAMERAS = "0,1,2,4,5,6,7,8"
DEFAULT_EVERY = 10
#: The test set's 17 joints among the training annotation's 28 (0-based, in ``MPI3DHP17`` order).
#: The 28: spine3, spine4, spine2, spine, pelvis, neck, head, head_top, l_clavicle, l_shoulder,
#: l_elbow, l_wrist, l_hand, r_clavicle, r_shoulder, r_elbow, r_wrist, r_hand, l_hip, l_knee,
#: l_ankle, l_foot, l_toe, r_hip, r_knee, r_ankle, r_foot, r_toe.
JOINTS_17_OF_28 = np.array([7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6])
_TRAIN_CAMERA_FILES = (
    "cameras_train.json",
    "cameras_train.pkl",
    "annotations/cameras_train.json",
    "annotations/cameras_train.pkl",
)

#: What ``pose3d prep 3dhp --help`` shows of the raw folder it expects.
RAW_LAYOUT = (
    "raw layout (--raw DIR; --split test and/or train, each read from its official layout or mmpose's npz):\n"
    "  test, official:  DIR/TS<n>/annot_data.mat, DIR/TS<n>/imageSequence/img_<frame:06d>.jpg,\n"
    "                   intrinsics DIR/cameras_test.json or ts1-4cameras.calib, ts5-6cameras.calib\n"
    "  train, official: DIR/S<n>/Seq<m>/annot.mat, DIR/S<n>/Seq<m>/camera.calibration,\n"
    "                   DIR/S<n>/Seq<m>/imageSequence/video_<k>.avi (or extracted img_<k>_<frame:06d>.jpg)\n"
    "  npz (mmpose):    DIR/annotations/mpi_inf_3dhp_{test_valid,train}.npz (-O npz=FILE),\n"
    "                   DIR/images/TS<n>_<frame:06d>.jpg, DIR/images/S<n>_Seq<m>_Cam<k>_<frame:06d>.jpg,\n"
    "                   DIR/cameras_test.json, DIR/cameras_train.json (or .pkl)\n"
    "Frame numbers in file names are 1-based. The test set's 17 joints (the training set's 28 cut to "
    "them) -> the 16; thorax derived in 3D. Train: every 10th frame (-O every=N) of cameras "
    "0,1,2,4,5,6,7,8 (-O train_cameras=...). 3D labels: univ_annot3 (-O annotation_3d=annot3)."
)


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
        return load_camera_table(path)
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


def load_camera_table(path: str | Path) -> dict[str, dict[str, Any]]:
    """mmpose's cameras_test / cameras_train (``.json``, or ``.pkl`` through the restricted
    unpickler): ``{key: {"f": [[fx], [fy]], "c": [[cx], [cy]], ...}}`` -> ``{key: {"camera": payload}}``."""
    path = Path(path)
    if path.suffix == ".pkl":
        raw = common.load_plain_pickle(path)
    else:
        try:
            with open(path) as f:
                raw = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"3dhp: {path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"3dhp: {path}: expected an object of cameras by key, got a {type(raw).__name__}")
    out = {}
    for key, entry in raw.items():
        try:
            f, c = (np.asarray(entry[name], np.float64).reshape(2) for name in ("f", "c"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"3dhp: {path}: camera {key!r} lacks f and c as 2 numbers each ({err})") from err
        out[str(key)] = {"camera": common.camera_to_payload(Camera(f, c))}
    return out


def parse_train_calibration(path: str | Path) -> dict[int, Camera]:
    """The pinhole intrinsics (px) of each camera of a training sequence's ``camera.calibration``
    (module docstring): camera index -> Camera. Raises ValueError naming the file and the camera
    when an ``intrinsic`` line does not hold 16 numbers."""
    cameras: dict[int, Camera] = {}
    current = None
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        words = line.split()
        if len(words) >= 2 and words[0] == "name":
            current = int(words[1]) if words[1].isdigit() else None
        elif words and words[0] == "intrinsic" and current is not None:
            where = f"3dhp: {path} line {number}: camera {current}"
            try:
                values = np.asarray([float(w) for w in words[1:]], np.float64)
            except ValueError as err:
                raise ValueError(f"{where} intrinsic: {err}") from None
            if values.size != 16:
                raise ValueError(f"{where} intrinsic has {values.size} numbers, not 16")
            k = values.reshape(4, 4)
            cameras[current] = Camera(np.array([k[0, 0], k[1, 1]]), np.array([k[0, 2], k[1, 2]]))
    return cameras


def fit_pinhole(joints_2d: np.ndarray, joints_3d: np.ndarray) -> Camera | None:
    """Pinhole intrinsics fitted to labels: least squares of x = fx X/Z + cx and y = fy Y/Z + cy.

    joints_2d (..., 2) px; joints_3d (..., 3) camera mm (any unit: only X/Z, Y/Z enter). Points
    with a non-finite value or Z <= 0 are left out. Returns None with fewer than 3 usable points or
    a degenerate spread (every point on one ray).
    """
    xy = np.asarray(joints_2d, np.float64).reshape(-1, 2)
    xyz = np.asarray(joints_3d, np.float64).reshape(-1, 3)
    use = np.all(np.isfinite(xy), axis=1) & np.all(np.isfinite(xyz), axis=1) & (xyz[:, 2] > 0)
    if use.sum() < 3:
        return None
    ray = xyz[use, :2] / xyz[use, 2:]
    f, c = np.zeros(2), np.zeros(2)
    for axis in (0, 1):
        design = np.stack([ray[:, axis], np.ones(len(ray))], axis=1)
        solution, _, rank, _ = np.linalg.lstsq(design, xy[use, axis], rcond=None)
        if rank < 2:
            return None
        f[axis], c[axis] = solution
    return Camera(f, c)


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


# --- annot.mat (training set) --------------------------------------------------------------

_TRAIN_VARIABLES = ("annot2", "annot3", "univ_annot3")
_TRAIN_COORDS = {"annot2": 2, "annot3": 3, "univ_annot3": 3}


# One file per process: a sequence's annot.mat holds 14 cameras x up to ~13000 frames (a few hundred
# MB as float64), and its tasks (one per camera) are listed one after another.
@common.cached_by_file(maxsize=1)
def load_train_annot(path: str) -> dict[str, list[np.ndarray]]:
    """The cell arrays of a training ``annot.mat``: variable -> one (F, 28, C) float64 array per
    camera (cell k = camera k). Raises ValueError naming the file and the variable when a cell does
    not hold 28 joints x C numbers per row."""
    kind = common.sniff_format(path)
    cells: dict[str, list[np.ndarray]] = {}
    if kind in ("mat73", "hdf5"):  # v7.3: each cell is an object reference, axes reversed
        import h5py

        with h5py.File(path, "r") as f:
            for name in _TRAIN_VARIABLES:
                if name in f:
                    cells[name] = [np.asarray(f[ref]).T for ref in np.asarray(f[name]).ravel()]
    elif kind == "mat":
        import scipy.io

        mat = scipy.io.loadmat(path)
        for name in _TRAIN_VARIABLES:
            if name in mat:
                cells[name] = [np.asarray(cell) for cell in np.asarray(mat[name], dtype=object).ravel()]
    else:
        raise ValueError(f"3dhp: {path} is not a MATLAB file ({common.describe_start(path)})")
    out = {}
    for name, arrays in cells.items():
        coords = _TRAIN_COORDS[name]
        for k, array in enumerate(arrays):
            if array.ndim != 2 or array.shape[1] != 28 * coords:
                expected = f"expected (frames, {28 * coords}): 28 joints x {coords}"
                raise ValueError(f"3dhp: {path}: {name}{{{k + 1}}} has shape {array.shape}, {expected}")
        out[name] = [a.astype(np.float64).reshape(len(a), 28, coords) for a in arrays]
    if "annot2" not in out or "annot3" not in out:
        raise ValueError(
            f"3dhp: {path} lacks annot2 or annot3 (it holds {', '.join(out) or 'neither'}); "
            "expected the training set's annot.mat"
        )
    return out


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
    subjects: Any = None,
    train_cameras: Any = DEFAULT_TRAIN_CAMERAS,
    every: int = DEFAULT_EVERY,
) -> list[SourceTask]:
    """Test: one task per sequence (TS1..TS6 present); train: one per subject, sequence and camera
    (``"S1_Seq1_Cam0"``); in that order.

    Raises FileNotFoundError or ValueError for an unknown split or layout, a missing annotation, or
    an npz that holds no image of the split.
    """
    if split not in SPLITS:
        raise ValueError(f"3dhp: unknown split {split!r} ({', '.join(SPLITS)})")
    if annotation_3d not in ("univ_annot3", "annot3"):
        raise ValueError(f"3dhp: annotation_3d must be univ_annot3 or annot3, not {annotation_3d!r}")
    root = Path(raw_root)
    if not root.is_dir():
        raise FileNotFoundError(f"3dhp: raw root {raw_root} is not a folder")
    official = "TS<n>/annot_data.mat" if split == "test" else "S<n>/Seq<m>/annot.mat"
    guessed = layout == "auto"
    if guessed:
        layout = "official" if any(root.glob(official.replace("<n>", "*").replace("<m>", "*"))) else "npz"
    if layout not in ("official", "npz"):
        raise ValueError(f"3dhp: unknown layout {layout!r} (auto, official, npz)")
    try:
        return _split_tasks(
            root,
            split,
            layout,
            annotation_3d,
            cameras,
            npz,
            images,
            sequences,
            subjects,
            train_cameras,
            every,
        )
    except FileNotFoundError as err:
        if not guessed or layout != "npz":
            raise
        where = f"nor the official {split} layout (<root>/{official})"
        raise FileNotFoundError(f"{err}; {where}; pose3d prep 3dhp --help shows both") from err


def _split_tasks(
    root: Path,
    split: str,
    layout: str,
    annotation_3d: str,
    cameras: str | None,
    npz: str | None,
    images: str | None,
    sequences: Any,
    subjects: Any,
    train_cameras: Any,
    every: int,
) -> list[SourceTask]:
    if split == "train":
        every = int(every)
        if every < 1:
            raise ValueError(f"3dhp: every must be >= 1, got {every}")
        names = [str(train_cameras)] if isinstance(train_cameras, int) else common.list_option(train_cameras)
        wanted_cameras = [int(c) for c in names or [] if c.isdigit()]
        if (
            not wanted_cameras
            or len(wanted_cameras) != len(names or [])
            or max(wanted_cameras) >= NUM_TRAIN_CAMERAS
        ):
            raise ValueError(f"3dhp: train_cameras must name cameras 0..13, got {train_cameras!r}")
        wanted_subjects = common.list_option(subjects) or list(TRAIN_SUBJECTS)
        if layout == "official":
            return _train_official_tasks(root, wanted_subjects, wanted_cameras, every, annotation_3d, cameras)
        return _npz_tasks(root, split, wanted_subjects, npz, images, cameras, wanted_cameras, every)
    wanted = common.list_option(sequences) or list(SEQUENCES)
    if layout == "official":
        return _test_official_tasks(root, wanted, annotation_3d, cameras)
    return _npz_tasks(root, split, wanted, npz, images, cameras)


def _test_official_tasks(
    root: Path, wanted: list[str], annotation_3d: str, cameras: str | None
) -> list[SourceTask]:
    cams = find_cameras(root, cameras)
    tasks = []
    for seq in wanted:
        annot = root / seq / "annot_data.mat"
        if annot.exists():
            payload = {
                "layout": "official",
                "annot": str(annot),
                "annotation_3d": annotation_3d,
                "camera": cams.get(seq),
            }
            tasks.append(SourceTask(DATASET, "test", seq, str(root), payload))
    if not tasks:
        raise FileNotFoundError(f"3dhp: no <root>/TS<n>/annot_data.mat in {root} for {wanted}")
    return tasks


def _train_official_tasks(
    root: Path,
    subjects: list[str],
    cameras: list[int],
    every: int,
    annotation_3d: str,
    cameras_file: str | None,
) -> list[SourceTask]:
    table = load_camera_table(common.resolve(root, cameras_file)) if cameras_file else {}
    tasks = []
    for subject in subjects:
        for annot in sorted((root / subject).glob("Seq*/annot.mat")):
            seq_dir = annot.parent
            calibration = seq_dir / "camera.calibration"
            calibrated = parse_train_calibration(calibration) if calibration.is_file() else {}
            for cam in cameras:
                task_id = f"{subject}_{seq_dir.name}_Cam{cam}"
                camera = calibrated.get(cam)
                entry = table.get(task_id)
                payload = {
                    "layout": "train_official",
                    "annot": str(annot),
                    "annotation_3d": annotation_3d,
                    "camera_index": cam,
                    "every": every,
                    "images": str(seq_dir / "imageSequence"),
                    "camera": entry["camera"] if entry else common.camera_to_payload(camera),
                    "subject": subject,
                    "subaction": seq_dir.name,
                }
                tasks.append(SourceTask(DATASET, "train", task_id, str(root), payload))
    if not tasks:
        raise FileNotFoundError(f"3dhp: no <root>/S<n>/Seq<m>/annot.mat in {root} for {subjects}")
    return tasks


def _npz_groups(
    names: np.ndarray, split: str, wanted: list[str], cameras: Sequence[int] | None, every: int
) -> tuple[dict[str, list[tuple[int, int]]], list[int], int]:
    """Rows of an npz by task id: {task: [(frame, row), ...]}, the rows whose names do not parse,
    and how many parsed as this split's names at all (before the subject/camera/frame filters)."""
    pattern = _NPZ_IMGNAME if split == "test" else _NPZ_TRAIN_IMGNAME
    groups: dict[str, list[tuple[int, int]]] = {}
    unparsed, matched = [], 0
    for row, name in enumerate(names):
        match = pattern.search(str(name))
        if match is None:
            unparsed.append(row)
            continue
        matched += 1
        if split == "test":
            seq, number = match.group(1), int(match.group(2))
            if seq in wanted:
                groups.setdefault(seq, []).append((number - 1, row))
            continue
        subject, seq, cam, number = match.group(1), match.group(2), int(match.group(3)), int(match.group(4))
        if subject in wanted and cam in (cameras or ()) and (number - 1) % every == 0:
            groups.setdefault(f"{subject}_{seq}_Cam{cam}", []).append((number - 1, row))
    return groups, unparsed, matched


def _npz_tasks(
    root: Path,
    split: str,
    wanted: list[str],
    npz: str | None,
    images: str | None,
    cameras: str | None,
    train_cameras: Sequence[int] | None = None,
    every: int = 1,
) -> list[SourceTask]:
    try:
        npz_path = common.find_annotation("3dhp", root, npz, _NPZ_NAMES[split])
    except FileNotFoundError as err:
        other = "train" if split == "test" else "test"
        there = common.first_existing(root, _NPZ_NAMES[other]) if npz is None else None
        if there is None:
            raise
        raise FileNotFoundError(f"{err} ({there.relative_to(root)} is there: --split {other})") from err
    image_root = common.image_root(root, images)
    names = common.load_npz(str(npz_path))["imgname"]
    groups, unparsed, matched = _npz_groups(names, split, wanted, train_cameras, every)
    if matched == 0 and len(names):
        other = "train" if split == "test" else "test"
        hint = (
            f" (they are {other} names: --split {other})" if _npz_groups(names, other, [], (), 1)[2] else ""
        )
        raise ValueError(
            f"3dhp: {npz_path} holds no {split} rows: its {len(names)} image names look like "
            f"{str(names[0])!r}{hint}, a {split} name is {_NPZ_NAME_FORMS[split]}"
        )
    if split == "test":
        cams = find_cameras(root, cameras)
    else:
        path = common.resolve(root, cameras) if cameras else common.first_existing(root, _TRAIN_CAMERA_FILES)
        cams = load_camera_table(path) if path is not None else {}
    order = sorted(groups, key=lambda t: [int(n) for n in re.findall(r"\d+", t)])
    tasks = []
    for task_id in order:
        frames = sorted(groups[task_id])
        payload: dict[str, Any] = {
            "layout": "npz",
            "npz": str(npz_path),
            "images": str(image_root),
            "rows": [r for _, r in frames],
            "frames": [f for f, _ in frames],
        }
        if split == "test":
            annot = root / task_id / "annot_data.mat"
            payload["camera"] = cams.get(task_id)
            payload["annot"] = str(annot) if annot.exists() else None
        else:
            subject, seq, cam = task_id.split("_")
            payload.update(subject=subject, subaction=seq, camera_id=cam.removeprefix("Cam"))
            payload["camera"] = cams.get(task_id) or _calibration_entry(root / subject / seq, cam)
        tasks.append(SourceTask(DATASET, split, task_id, str(root), payload))
    if unparsed:
        payload = {"layout": "npz", "npz": str(npz_path), "images": str(image_root), "rows": unparsed}
        payload.update(unparsed=True, name_form=_NPZ_NAME_FORMS[split])
        tasks.append(SourceTask(DATASET, split, "unparsed_image_names", str(root), payload))
    return tasks


def _calibration_entry(seq_dir: Path, cam: str) -> dict[str, Any] | None:
    """A training camera's intrinsics from its sequence's ``camera.calibration``, when present."""
    path = seq_dir / "camera.calibration"
    camera = parse_train_calibration(path).get(int(cam.removeprefix("Cam"))) if path.is_file() else None
    return {"camera": common.camera_to_payload(camera)} if camera is not None else None


# --- reading ----------------------------------------------------------------------------------


def read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """Every valid (test) or sampled (train) frame of one task, in frame order."""
    layout = task.payload["layout"]
    if layout == "official":
        yield from _read_official(task)
    elif layout == "train_official":
        yield from _read_train_official(task)
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
        # The derived thorax is projected from the metric annot3, which annot2 is the projection of.
        metric_all = frames_joints(annot["annot3"], 3) if "annot3" in annot else j3d_all
    except ValueError as err:
        for key in keys:
            yield Quarantined(annot_rel, key, f"{common.WRONG_JOINT_COUNT}: {err}")
        return
    n_labelled = min(len(j2d_all), len(j3d_all), len(metric_all))
    labelled = frames < n_labelled
    for f, key in zip(frames[~labelled], np.asarray(keys)[~labelled], strict=True):
        yield Quarantined(annot_rel, str(key), f"{common.BAD_ANNOTATION}: valid frame {f} has no joints")
    frames, keys = frames[labelled], [k for k, ok in zip(keys, labelled, strict=True) if ok]
    actions = _activities(annot, frames)
    visible = np.ones(17, dtype=bool)
    image_dir = Path(task.raw_root) / seq / "imageSequence"
    for i, frame in enumerate(frames):
        path = image_dir / f"img_{frame + 1:06d}.jpg"
        yield _sample(
            task,
            path,
            keys[i],
            int(frame),
            j2d_all[frame],
            visible,
            j3d_all[frame],
            None,
            which,
            actions[i],
            metric_all[frame],
        )


def _read_npz(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    p = task.payload
    data = common.load_npz(p["npz"])
    rows = np.asarray(p["rows"], dtype=np.int64)
    names = [str(data["imgname"][r]) for r in rows]
    if p.get("unparsed"):
        form = p.get("name_form", _NPZ_NAME_FORMS["test"])
        for name in names:
            yield Quarantined(
                name, Path(name).stem, f"{common.BAD_ANNOTATION}: image name {name!r} is not {form}"
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
    j2d_all, vis_all, j3d_all = part[..., :2], part[..., 2] > 0, s3d[..., :3] * 1000.0
    if task.split == "train" and p["camera"] is None:
        fitted = fit_pinhole(j2d_all, j3d_all)
        p = {**p, "camera": {"camera": common.camera_to_payload(fitted)} if fitted is not None else None}
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
        frame = int(p["frames"][i])
        yield _sample(
            task,
            path,
            keys[i],
            frame,
            j2d_all[i],
            vis_all[i],
            j3d_all[i],
            box_i,
            "annot3",
            actions[i],
            None,
            p,
        )


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
    joints_3d_metric: np.ndarray | None = None,
    payload: dict[str, Any] | None = None,
) -> PersonSample | Quarantined:
    """One frame of a test or npz task: source joints (17, 2) px and (17, 3) mm (the row's 3D
    annotation; ``joints_3d_metric`` the annot3 the thorax is projected from, default the same)
    -> the sample. The camera may need the image's size, so it is read first."""
    p = payload if payload is not None else task.payload
    source = common.relative_to_root(path, task.raw_root)
    image, reason = common.read_image(path, source)
    if image is None:
        return Quarantined(source, key, reason)
    camera = _camera_for(p["camera"], image)
    if camera is None:
        where = (
            "cameras_test.json or .calib"
            if task.split == "test"
            else "cameras_train.json or camera.calibration"
        )
        return Quarantined(source, key, f"{common.NO_CAMERA}: no intrinsics for {task.task_id} ({where})")
    metric = None if joints_3d_metric is None else joints_3d_metric[None]
    j2d, vis, j3d = map_17(joints_2d[None], visible[None], joints_3d[None], camera, metric)
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
        subject=p.get("subject", task.task_id),
        action=action,
        subaction=p.get("subaction", ""),
        camera_id=p.get("camera_id", ""),
        group=GROUPS.get(task.task_id, ""),
        frame=frame,
        annotation_3d=annotation_3d,
    )


def map_17(
    joints_2d: np.ndarray,
    visible: np.ndarray,
    joints_3d: np.ndarray,
    camera: Camera,
    joints_3d_metric: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test set's 17 joints -> the 16 (``skeleton.MPI3DHP17``), for N frames of one camera.

    joints_2d (N, 17, 2) px; visible (N, 17) bool; joints_3d (N, 17, 3) mm, the 3D labels the rows
    keep; joints_3d_metric (N, 17, 3) mm, the annot3 whose projection annot2 is (default
    ``joints_3d``): the derived thorax's 2D is projected from it, so it sits in the image even when
    the kept labels are the height-normalized univ_annot3. Returns (N, 16, 2), (N, 16), (N, 16, 3).
    """
    metric = joints_3d if joints_3d_metric is None else joints_3d_metric
    j2d, vis, _ = common.map_joints(skeleton.MPI3DHP17, joints_2d, visible, np.asarray(metric), camera)
    j3d, _ = skeleton.MPI3DHP17.apply(np.asarray(joints_3d, np.float64), visible)
    return j2d, vis, j3d


def _read_train_official(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """Every ``every``-th frame of one camera of a training sequence (module docstring)."""
    p = task.payload
    cam = p["camera_index"]
    annot_rel = common.relative_to_root(p["annot"], task.raw_root)
    try:
        annot = load_train_annot(p["annot"])
    except Exception as err:  # an unreadable file is one quarantined record, never a crash
        yield Quarantined(annot_rel, "annotation", f"{common.BAD_ANNOTATION}: {err}")
        return
    which = p["annotation_3d"] if p["annotation_3d"] in annot else "annot3"
    if cam >= min(len(annot[name]) for name in ("annot2", "annot3", which)):
        reason = (
            f"{common.BAD_ANNOTATION}: {annot_rel} has {len(annot['annot2'])} camera cells, no camera {cam}"
        )
        yield Quarantined(annot_rel, "annotation", reason)
        return
    j2d28, metric28, label28 = annot["annot2"][cam], annot["annot3"][cam], annot[which][cam]
    n_frames = min(len(j2d28), len(metric28), len(label28))
    frames = np.arange(0, n_frames, p["every"])
    keys = [f"{f:06d}" for f in frames]
    pick = np.ix_(frames, JOINTS_17_OF_28)
    j2d17, metric17, label17 = j2d28[pick], metric28[pick], label28[pick]
    visible = np.ones(j2d17.shape[:2], dtype=bool)  # motion capture: every joint is annotated
    camera = common.camera_from_payload(p["camera"]) or fit_pinhole(j2d17, metric17)
    if camera is None:
        reason = f"{common.NO_CAMERA}: camera {cam} not in camera.calibration, too few joints to fit one"
        for key in keys:
            yield Quarantined(annot_rel, key, reason)
        return
    j2d, vis, j3d = map_17(j2d17, visible, label17, camera, metric17)
    center, side = common.box_from_joints(j2d, vis)
    meta = {"subject": p["subject"], "subaction": p["subaction"], "camera_id": str(cam)}
    for i, (frame, image, source, reason) in enumerate(_train_images(task, frames)):
        if image is None:
            yield Quarantined(source, keys[i], reason)
            continue
        yield PersonSample(
            image=image,
            joints_2d=j2d[i],
            visible=vis[i],
            center=center[i],
            box_size=float(side[i]),
            source_path=source,
            key=keys[i],
            joints_3d=j3d[i],
            camera=camera,
            frame=int(frame),
            annotation_3d=which,
            **meta,
        )


def _train_images(
    task: SourceTask, frames: np.ndarray
) -> Iterator[tuple[int, np.ndarray | None, str, str | None]]:
    """(frame, image or None, source path, quarantine reason or None) for each of ``frames``: the
    extracted ``img_<k>_<frame+1:06d>.jpg`` when the first one exists, else ``video_<k>.avi``."""
    p = task.payload
    folder, cam = Path(p["images"]), p["camera_index"]
    jpgs = [folder / f"img_{cam}_{f + 1:06d}.jpg" for f in frames]
    video = folder / f"video_{cam}.avi"
    if (len(jpgs) and jpgs[0].is_file()) or not video.is_file():
        for frame, path in zip(frames, jpgs, strict=True):
            source = common.relative_to_root(path, task.raw_root)
            image, reason = common.read_image(path, source)
            yield int(frame), image, source, reason
        return
    source = common.relative_to_root(video, task.raw_root)
    for f, image, reason in common.read_video_frames(video, frames, source):
        yield int(f), image, source, reason
