"""Human3.6M reader: mmpose's preprocessed images + npz, or the official videos + CDF poses.

Splits (subjects; ``subjects=`` overrides, e.g. ``"S9,S11"`` or ``["S1"]``): train S1, S5, S6, S7,
S8; test S9, S11. ``layout="auto"`` picks "video" when ``<root>/S*/MyPoseFeatures`` exists, else
"npz". Joints: mmpose's 17 (``skeleton.H36M17``) or the raw 32 (``skeleton.H36M32``) mapped to the
16; the thorax is the 3D midpoint of the shoulders and its 2D the projection of that point with
the camera, distortion included (docs/conventions.md, Joint mappings). Pixels are 0-based with
pixel centres at integers.
``PersonSample.frame`` is the 0-based video frame index; ``key`` is ``f"{frame:06d}"`` and the task
id ``<subject>_<Action>[_<n>].<camera>`` in both layouts, so one frame has one row id either way.
``action`` is the canonical action (one of ``ACTIONS``; "TakingPhoto" -> "Photo", "WalkingDog" ->
"WalkDog"), ``subaction`` the trial suffix of the file name ("" or "1", "2").

Layout "npz" (mmpose's preprocessed release; the fixture ``h36m/``)::

    <root>/
      <annotation>.npz    option npz=PATH, else the first that exists of
                          annotation_body3d/fps10/h36m_<split>.npz, h36m_<split>.npz, or the only
                          *.npz directly in <root>
      <cameras file>      see "Cameras" below
      [images/]<imgname>  the image root is <root>/images when that folder exists, else <root>
                          (option images=DIR)

  imgname ``S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg``: subject, the video's
  base name with spaces as "_", the camera id and the 1-based frame number (000001 is the video's
  first frame, so ``frame = number - 1``). npz arrays (N people):

    imgname (N,) str         image path relative to the image root
    center  (N, 2) float     person box centre, px
    scale   (N,) float       person box side / 200 px
    part    (N, 17, 3) float  px x, y and visibility (> 0 visible), mmpose's H36M-17 order
    S       (N, 17, 4) float  camera-frame x, y, z in METRES and visibility (N, 17, 3 also read)

  Each sequence (one image folder) is one task. mmpose's npz is already sub-sampled, so every row
  is read (``every`` does not apply).

Layout "video" (the official release)::

    <root>/<subject>/Videos/<Action>[ <n>].<camera>.mp4
    <root>/<subject>/MyPoseFeatures/D3_Positions_mono/<Action>[ <n>].<camera>.cdf
    <root>/<subject>/MyPoseFeatures/D2_Positions/<Action>[ <n>].<camera>.cdf     (optional)
    <root>/<cameras file>                                                        see below

  e.g. ``S1/Videos/Directions 1.54138969.mp4``. CDF variable ``Pose``: D3_Positions_mono
  (1, F, 96) float, 32 joints x (x, y, z) in camera mm, joint j in columns 3j..3j+2;
  D2_Positions (1, F, 64) float, 32 joints x (x, y) px. Any leading shape reshaping to (F, 96) /
  (F, 64) is accepted. One task per D3 pose file (names starting "_ALL" are skipped: they are not
  sequences); its video is decoded sequentially with OpenCV and every ``every``-th pose frame
  (default 5: 50 -> 10 fps, frames 0, 5, 10, ...) becomes a sample. Without a D2 file the 2D
  labels are the projection of the 3D with the camera. Frames the video cannot deliver (missing or
  unreadable video, video shorter than the poses) are quarantined ("bad video").

Cameras (option cameras=PATH, else the first that exists of cameras.json, cameras.pkl,
annotation_body3d/cameras.json, annotation_body3d/cameras.pkl, cameras.h5):

  - ``cameras.json`` (mmpose's cameras.pkl dumped to JSON, the fixture): an object keyed
    ``"S1_54138969"`` with ``R`` (3x3), ``T`` (3x1, METRES), ``f`` (2x1 px), ``c`` (2x1 px),
    ``k`` (3x1 radial), ``p`` (2x1 tangential), and optionally ``w``, ``h``, ``name``, ``id``.
    ``R`` is camera-to-world and ``T`` the camera centre in world coordinates:
    x_cam = R^T (x_world - T) (``geometry.world_to_camera``).
  - ``cameras.pkl`` (mmpose): the same dict pickled; keys ``("S1", "54138969")`` or
    ``"S1_54138969"``, values arrays or lists. Read with a restricted unpickler: only plain values
    and numpy arrays load, anything else is refused by name.
  - ``cameras.h5`` (3d-pose-baseline): groups ``subject{n}/camera{k}`` (k = 1..4 for cameras
    54138969, 55011271, 58860488, 60457274), datasets ``R`` (3, 3), ``T`` (3, 1) world mm, ``f``
    (2, 1), ``c`` (2, 1), ``k`` (3, 1), ``p`` (2, 1), ``Name`` (uint8 character codes of the camera
    id; when absent the order above names the camera). 3d-pose-baseline transposes the stored ``R``
    on loading into its world-to-camera rotation and computes R (x - T), so the stored ``R`` (as
    h5py returns it) is the camera-to-world rotation of ``geometry.world_to_camera`` as is, and
    ``T`` the camera centre.

Only the intrinsics enter the samples (the poses are already in camera coordinates); the
extrinsics are read and converted (``H36MCamera``) for other users.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.readers import common
from data_prep.records import Camera, PersonSample, Quarantined, SourceTask
from pose3d import geometry, skeleton

log = logging.getLogger(__name__)

DATASET = "h36m"
SPLIT_SUBJECTS = {"train": ("S1", "S5", "S6", "S7", "S8"), "test": ("S9", "S11")}
CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
#: The 15 actions of the per-action tables.
ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
)  # fmt: skip
_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
DEFAULT_EVERY = 5
_CAMERA_FILES = (
    "cameras.json",
    "cameras.pkl",
    "annotation_body3d/cameras.json",
    "annotation_body3d/cameras.pkl",
    "cameras.h5",
)
_IMGNAME = re.compile(r"^(S\d+)_(.+)\.(\d+)_(\d+)\.[A-Za-z]+$")

#: What ``pose3d prep h36m --help`` shows of the raw folder it expects.
RAW_LAYOUT = (
    "raw layout (--raw DIR; the official release, or mmpose's preprocessed npz + images):\n"
    "  official: DIR/S<n>/Videos/<Action>[ <trial>].<camera>.mp4\n"
    "            DIR/S<n>/MyPoseFeatures/D3_Positions_mono/<Action>[ <trial>].<camera>.cdf  (camera mm)\n"
    "            DIR/S<n>/MyPoseFeatures/D2_Positions/<same name>.cdf                    (optional, px)\n"
    "  mmpose:   DIR/annotation_body3d/fps10/h36m_<split>.npz (or DIR/h36m_<split>.npz; -O npz=FILE)\n"
    "            DIR/images/S<n>/<seq>/<seq>_<frame:06d>.jpg, <seq> = S<n>_<Action>[_<trial>].<camera>\n"
    "            (-O images=FOLDER; frame numbers 1-based)\n"
    "  cameras:  DIR/cameras.json (mmpose's cameras.pkl as JSON), DIR/cameras.pkl,\n"
    "            DIR/annotation_body3d/cameras.{json,pkl}, DIR/cameras.h5 (3d-pose-baseline);\n"
    "            -O cameras=FILE\n"
    "Splits by subject: train S1, S5-S8, test S9, S11 (-O subjects=S9,S11). Videos: every 5th frame "
    "(-O every=N, 50 -> 10 fps). The raw 32 (or mmpose's 17) joints -> the 16; thorax derived in 3D."
)


@dataclass(frozen=True)
class H36MCamera:
    """One calibrated camera: intrinsics (px) and extrinsics in ``geometry``'s convention."""

    intrinsics: Camera
    r_c2w: np.ndarray  # (3, 3) camera-to-world rotation
    t_mm: np.ndarray  # (3,) camera centre, world mm


# --- names ------------------------------------------------------------------------------------


def split_action(name: str) -> tuple[str, str]:
    """A sequence's action part, as in file names ("Directions 1", "Directions_1", "SittingDown")
    -> (canonical action, trial suffix)."""
    match = re.fullmatch(r"(.*?)[ _](\d+)", name)
    action, sub = (match.group(1), match.group(2)) if match else (name, "")
    return _ACTION_ALIASES.get(action, action), sub


def _subjects(split: str, subjects: Any) -> list[str]:
    chosen = common.list_option(subjects)
    if chosen is None:
        if split not in SPLIT_SUBJECTS:
            raise ValueError(f"h36m: unknown split {split!r} (train, test), or give subjects=")
        return list(SPLIT_SUBJECTS[split])
    return [s if s.upper().startswith("S") else f"S{s}" for s in chosen]


# --- cameras ----------------------------------------------------------------------------------


def _camera_from_mapping(entry: dict[str, Any], t_scale: float) -> H36MCamera:
    def vec(name: str, n: int) -> np.ndarray:
        return np.asarray(entry[name], np.float64).reshape(n)

    intrinsics = Camera(vec("f", 2), vec("c", 2), vec("k", 3), vec("p", 2))
    r = np.asarray(entry["R"], np.float64).reshape(3, 3)
    return H36MCamera(intrinsics, r, vec("T", 3) * t_scale)


def _key(key: Any) -> tuple[str, str]:
    if isinstance(key, tuple | list) and len(key) == 2:
        return str(key[0]), str(key[1])
    subject, _, camera = str(key).partition("_")
    return subject, camera


def load_cameras(path: str | Path) -> dict[tuple[str, str], H36MCamera]:
    """Read a cameras file (JSON, pickle or 3d-pose-baseline HDF5; module docstring) ->
    {(subject "S1", camera id "54138969"): H36MCamera} with T in mm."""
    path = Path(path)
    if path.suffix == ".h5":
        return _load_cameras_h5(path)
    if path.suffix == ".pkl":
        raw = common.load_plain_pickle(path)
    else:
        with open(path) as f:
            raw = json.load(f)
    return {_key(k): _camera_from_mapping(v, 1000.0) for k, v in raw.items()}


def _load_cameras_h5(path: Path) -> dict[tuple[str, str], H36MCamera]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for subject_group in f:
            match = re.fullmatch(r"subject(\d+)", subject_group)
            if not match:
                continue
            for camera_group in f[subject_group]:
                cam_match = re.fullmatch(r"camera(\d+)", camera_group)
                if not cam_match:
                    continue
                g = f[subject_group][camera_group]
                entry = {name: g[name][()] for name in ("R", "T", "f", "c", "k", "p")}
                if "Name" in g:
                    raw = np.asarray(g["Name"][()]).ravel()
                    name = (
                        raw.tobytes().decode() if raw.dtype.kind == "S" else "".join(chr(int(c)) for c in raw)
                    )
                else:
                    name = CAMERA_IDS[int(cam_match.group(1)) - 1]
                out[(f"S{match.group(1)}", name.strip())] = _camera_from_mapping(entry, 1.0)
    return out


def find_cameras_file(raw_root: str | Path, cameras: str | None = None) -> Path:
    if cameras is not None:
        path = common.resolve(raw_root, cameras)
        if not path.exists():
            raise FileNotFoundError(f"h36m: cameras file {path} not found")
        return path
    path = common.first_existing(raw_root, _CAMERA_FILES)
    if path is None:
        raise FileNotFoundError(
            f"h36m: no cameras file in {raw_root} (tried {', '.join(_CAMERA_FILES)}); give cameras="
        )
    return path


# --- tasks ------------------------------------------------------------------------------------


def list_tasks(
    raw_root: str,
    split: str,
    layout: str = "auto",
    subjects: Any = None,
    every: int = DEFAULT_EVERY,
    cameras: str | None = None,
    npz: str | None = None,
    images: str | None = None,
) -> list[SourceTask]:
    """One task per sequence (subject, action, trial, camera), sorted by task id.

    Raises FileNotFoundError or ValueError when the layout, its annotation or its cameras file
    cannot be found, or the split is unknown.
    """
    root = Path(raw_root)
    if not root.is_dir():
        raise FileNotFoundError(f"h36m: raw root {raw_root} is not a folder")
    wanted = _subjects(split, subjects)
    if layout == "auto":
        layout = "video" if any(root.glob("S*/MyPoseFeatures")) else "npz"
    if layout not in ("video", "npz"):
        raise ValueError(f"h36m: unknown layout {layout!r} (auto, video, npz)")
    camera_table = load_cameras(find_cameras_file(raw_root, cameras))
    if layout == "video":
        every = int(every)
        if every < 1:
            raise ValueError(f"h36m: every must be >= 1, got {every}")
        tasks = _video_tasks(root, split, wanted, every, camera_table)
    else:
        tasks = _npz_tasks(root, split, wanted, camera_table, npz, images)
    if not tasks:
        # The video layout's subjects are folders; the npz layout's are in its image names.
        present = sorted(d.name for d in root.glob("S*") if d.is_dir()) if layout == "video" else []
        log.warning(
            "h36m: no %s data of subject(s) %s under %s%s; -O subjects=S1,S5 (for example) picks others",
            split,
            ", ".join(wanted),
            root,
            f" (its subject folders: {', '.join(present)})" if present else "",
        )
    return sorted(tasks, key=lambda t: t.task_id)


def _video_tasks(
    root: Path, split: str, subjects: list[str], every: int, cams: dict[tuple[str, str], H36MCamera]
) -> list[SourceTask]:
    tasks = []
    for subject in subjects:
        features = root / subject / "MyPoseFeatures"
        for d3 in sorted((features / "D3_Positions_mono").glob("*.cdf")):
            stem = d3.stem
            if stem.startswith("_ALL") or "." not in stem:
                continue
            action_part, camera_id = stem.rsplit(".", 1)
            action, sub = split_action(action_part)
            d2 = features / "D2_Positions" / d3.name
            cam = cams.get((subject, camera_id))
            payload = {
                "layout": "video",
                "video": str(root / subject / "Videos" / f"{stem}.mp4"),
                "d3": str(d3),
                "d2": str(d2) if d2.exists() else None,
                "every": every,
                "camera": common.camera_to_payload(cam.intrinsics if cam else None),
                "subject": subject,
                "action": action,
                "subaction": sub,
                "camera_id": camera_id,
            }
            task_id = common.safe_id(f"{subject}_{stem}")
            tasks.append(SourceTask(DATASET, split, task_id, str(root), payload))
    return tasks


def _npz_tasks(
    root: Path,
    split: str,
    subjects: list[str],
    cams: dict[tuple[str, str], H36MCamera],
    npz: str | None,
    images: str | None,
) -> list[SourceTask]:
    candidates = (f"annotation_body3d/fps10/h36m_{split}.npz", f"h36m_{split}.npz")
    npz_path = common.find_annotation("h36m", root, npz, candidates)
    image_root = common.image_root(root, images)
    names = [str(n) for n in common.load_npz(str(npz_path))["imgname"]]
    groups: dict[str, list[tuple[int, int]]] = {}
    info: dict[str, dict[str, str]] = {}
    unparsed = []
    for row, name in enumerate(names):
        match = _IMGNAME.match(Path(name).name)
        if not match:
            unparsed.append(row)
            continue
        subject, action_part, camera_id, number = match.groups()
        if subject not in subjects:
            continue
        seq = f"{subject}_{action_part}.{camera_id}"
        groups.setdefault(seq, []).append((int(number) - 1, row))
        action, sub = split_action(action_part)
        info[seq] = {"subject": subject, "action": action, "subaction": sub, "camera_id": camera_id}
    tasks = []
    for seq, frames in groups.items():
        frames.sort()
        cam = cams.get((info[seq]["subject"], info[seq]["camera_id"]))
        payload = {
            "layout": "npz",
            "npz": str(npz_path),
            "images": str(image_root),
            "rows": [row for _, row in frames],
            "frames": [frame for frame, _ in frames],
            "camera": common.camera_to_payload(cam.intrinsics if cam else None),
            **info[seq],
        }
        tasks.append(SourceTask(DATASET, split, common.safe_id(seq), str(root), payload))
    if unparsed:
        payload = {
            "layout": "npz",
            "npz": str(npz_path),
            "images": str(image_root),
            "rows": unparsed,
            "unparsed": True,
        }
        tasks.append(SourceTask(DATASET, split, "unparsed_image_names", str(root), payload))
    return tasks


# --- reading ----------------------------------------------------------------------------------


def read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """Every sampled frame of one sequence, in frame order (module docstring)."""
    if task.payload["layout"] == "video":
        yield from _read_video(task)
    else:
        yield from _read_npz(task)


def _read_npz(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    p = task.payload
    data = common.load_npz(p["npz"])
    rows = np.asarray(p["rows"], dtype=np.int64)
    names = [str(data["imgname"][r]) for r in rows]
    if p.get("unparsed"):
        for name in names:
            reason = (
                f"{common.BAD_ANNOTATION}: image name {name!r} is not <subject>_<action>.<camera>_<frame>.jpg"
            )
            yield Quarantined(name, Path(name).stem, reason)
        return
    keys = [f"{frame:06d}" for frame in p["frames"]]
    part, s3d = np.asarray(data["part"])[rows], np.asarray(data["S"])[rows]
    problem = None
    if part.shape[1:] != (17, 3) or s3d.shape[1] != 17 or s3d.shape[2] not in (3, 4):
        problem = (
            f"{common.WRONG_JOINT_COUNT}: part {part.shape[1:]}, S {s3d.shape[1:]}, expected (17, 3), (17, 4)"
        )
    camera = common.camera_from_payload(p["camera"])
    if camera is None:
        problem = f"{common.NO_CAMERA}: no camera {p['subject']}_{p['camera_id']} in the cameras file"
    if problem is not None:
        for name, key in zip(names, keys, strict=True):
            yield Quarantined(name, key, problem)
        return
    visible = part[..., 2] > 0
    j2d, vis, j3d = common.map_joints(skeleton.H36M17, part[..., :2], visible, s3d[..., :3] * 1000.0, camera)
    if "center" in data and "scale" in data:
        center, box = common.box_from_center_scale(data["center"][rows], data["scale"][rows])
    else:
        center, box = common.box_from_joints(j2d, vis)
    for i, (name, key) in enumerate(zip(names, keys, strict=True)):
        path = Path(p["images"]) / name
        source = common.relative_to_root(path, task.raw_root)
        image, reason = common.read_image(path, source)
        if image is None:
            yield Quarantined(source, key, reason)
            continue
        yield PersonSample(
            image=image,
            joints_2d=j2d[i],
            visible=vis[i],
            center=center[i],
            box_size=float(box[i]),
            source_path=source,
            key=key,
            joints_3d=j3d[i],
            camera=camera,
            subject=p["subject"],
            action=p["action"],
            subaction=p["subaction"],
            camera_id=p["camera_id"],
            frame=int(p["frames"][i]),
        )


def read_cdf_pose(path: str | Path, values_per_frame: int) -> np.ndarray:
    """The ``Pose`` variable of a Human3.6M CDF as (F, values_per_frame) float64.

    Raises ValueError when its size is not a multiple of ``values_per_frame``; OSError (or the
    reader's own error) when the file cannot be read.
    """
    import cdflib

    pose = np.asarray(cdflib.CDF(str(path)).varget("Pose"), np.float64)
    if pose.shape[-1] != values_per_frame:
        raise ValueError(f"Pose has shape {pose.shape}, expected (..., {values_per_frame})")
    return pose.reshape(-1, values_per_frame)


def _read_video(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    p = task.payload
    video_rel = common.relative_to_root(p["video"], task.raw_root)
    try:
        pose3d = read_cdf_pose(p["d3"], 96)
    except Exception as err:  # any unreadable pose file is one quarantined record, never a crash
        kind = common.WRONG_JOINT_COUNT if isinstance(err, ValueError) else common.BAD_ANNOTATION
        reason = f"{kind}: {p['d3']}: {err}"
        yield Quarantined(video_rel, "poses", reason)
        return
    n_frames = len(pose3d)
    frames = np.arange(0, n_frames, p["every"])
    keys = [f"{f:06d}" for f in frames]
    camera = common.camera_from_payload(p["camera"])
    problem = None
    pose2d = None
    if camera is None:
        problem = f"{common.NO_CAMERA}: no camera {p['subject']}_{p['camera_id']} in the cameras file"
    elif p["d2"] is not None:
        try:
            pose2d = read_cdf_pose(p["d2"], 64)
        except Exception as err:  # as above
            kind = common.WRONG_JOINT_COUNT if isinstance(err, ValueError) else common.BAD_ANNOTATION
            problem = f"{kind}: {p['d2']}: {err}"
        else:
            if len(pose2d) != n_frames:
                problem = f"{common.BAD_ANNOTATION}: D2 has {len(pose2d)} frames, D3 has {n_frames}"
    if problem is not None:
        for key in keys:
            yield Quarantined(video_rel, key, problem)
        return

    j3d_src = pose3d[frames].reshape(-1, 32, 3)
    if pose2d is not None:
        j2d_src = pose2d[frames].reshape(-1, 32, 2)
    else:
        j2d_src = geometry.project(j3d_src.reshape(-1, 3), camera.f, camera.c, camera.k, camera.p).reshape(
            -1, 32, 2
        )
    visible = np.ones(j3d_src.shape[:2], dtype=bool)
    j2d, vis, j3d = common.map_joints(skeleton.H36M32, j2d_src, visible, j3d_src, camera)
    center, box = common.box_from_joints(j2d, vis)

    yield from _decode_frames(p, task, frames, keys, video_rel, j2d, vis, j3d, center, box, camera)


def _decode_frames(
    p: dict[str, Any],
    task: SourceTask,
    frames: np.ndarray,
    keys: list[str],
    video_rel: str,
    j2d: np.ndarray,
    vis: np.ndarray,
    j3d: np.ndarray,
    center: np.ndarray,
    box: np.ndarray,
    camera: Camera,
) -> Iterator[PersonSample | Quarantined]:
    """Decode the video sequentially; sample i is video frame ``frames[i]``."""
    decoded = common.read_video_frames(p["video"], frames, video_rel)
    for i, (frame, image, reason) in enumerate(decoded):
        if image is None:
            yield Quarantined(video_rel, keys[i], reason)
            continue
        yield PersonSample(
            image=image,
            joints_2d=j2d[i],
            visible=vis[i],
            center=center[i],
            box_size=float(box[i]),
            source_path=video_rel,
            key=keys[i],
            joints_3d=j3d[i],
            camera=camera,
            subject=p["subject"],
            action=p["action"],
            subaction=p["subaction"],
            camera_id=p["camera_id"],
            frame=frame,
        )
