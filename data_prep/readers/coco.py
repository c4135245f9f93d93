"""COCO keypoints reader: the official ``person_keypoints_{train,val}2017.json`` + images (also
mmpose's ``data/coco`` layout, which uses the same files), as a 2D-only source.

Layout (``<root>`` is ``--raw``)::

    <root>/annotations/person_keypoints_<split>2017.json   or option annotation=PATH
    <root>/<split>2017/<file_name>                          or <root>/images/<split>2017/,
                                                            <root>/images/, <root>; option images=DIR

Splits "train" and "val" (COCO's test-dev keypoints are not public). With ``annotation=`` the file
is read whatever the split; the split only names the output.

Format: a JSON object with ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations``
(``id``, ``image_id``, ``category_id``, ``keypoints`` 51 numbers = 17 x (x, y, v), ``bbox`` [x, y, w, h],
``area``, ``iscrowd``) and ``categories`` (the person category lists COCO's 17 ``keypoints`` names in
their usual order; any other order is refused). Annotations of other categories are not people
and are ignored. Anything else (a list, a detection-results file, MPII's JSON) is refused with an
error naming the file and the accepted format.

Joints (docs/conventions.md, COCO): COCO's 17 map to the 16 through ``skeleton.COCO17`` (ankles,
knees, hips, wrists, elbows, shoulders); nose, eyes and ears have no place in the 16 and are used
only for the nominal head-box position. The **pelvis** is the 2D midpoint of the two hips when both
are labelled (there is no 3D label to derive it in); thorax, upper neck and head top are never
visible on a COCO row. ``v = 0`` (unlabelled) is not visible; ``v = 1`` (labelled, hidden) and
``v = 2`` (labelled, visible) both count as annotated, as MPII's annotated-but-occluded joints do
(PCKh scores every annotated joint). Keypoints are pixel indices, i.e. pixel centres at integers:
the project's convention, no shift. COCO boxes are continuous coordinates with the image's left
edge at x = 0: they are moved by -0.5 px into the project's pixels.

Person box: the centre of COCO's ``bbox``, side ``box_margin`` x its longer side (default 1.0). The
bbox already encloses the whole outline (head top, hands, feet); on the fixture's 12 labelled
people its longer side is 1.01-1.32 x (median 1.22) the keypoints' extent, which is what the other
readers' boxes give (1.2 x the joints' extent, ``common.JOINT_BOX_MARGIN``), so people come out the
same size in the crops without a further margin.

Skipped people, quarantined with a reason whose category the writer counts (checked in this order):

- "bad annotation": no usable bbox (w or h not positive), an ``image_id`` missing from ``images``;
  "wrong joint count": ``keypoints`` without 51 numbers;
- "crowd": ``iscrowd = 1`` (a region of several people, no keypoints);
- "tiny person": ``area`` (the segmentation's, else w x h of the bbox) below ``min_area`` px²,
  default 32² = 1024, COCO's own boundary of "small" objects. COCO's keypoint evaluation scores
  only medium and large people, and small people mostly carry no keypoints (num_keypoints 0); a
  person of under ~45 px on the long side would be blown up ~6x to the 256 px network input;
- "too few annotated joints": fewer than ``min_joints`` (default 4) visible joints **among the 16**
  (the derived pelvis included; face keypoints do not count: they supervise nothing). Four, as for
  MPII: the fewest that still give two bones of one geometric-loss group some supervision;
- "missing image", "truncated image", "undecodable image" (``common.read_image``) and
  "image size mismatch" (the decoded image is not the ``width`` x ``height`` the file states).

Head size for PCKh (docs/conventions.md, COCO): COCO has no head box, so a nominal one is derived
from the shoulders (r, l) and hips (r, l), all four labelled:
``head_size = max(0.56 x shoulder width, 0.42 x torso length)`` px, torso length = distance between
the shoulders' and the hips' midpoints. The two factors were fitted on the 2857 people of MPII's
validation set (``mpii_val_official_struct.mat``) that have a head box and all four joints: the
median of true / derived is 1.00, the median error 13 %, 78 % are within ±25 % and 96 % within ±50 %
(5th-95th percentile of true / derived 0.76-1.42). The maximum of the two guards against
foreshortening: a person seen side-on has narrow shoulders but a full torso, one bending towards
the camera the reverse. Limits: calibrated on MPII's labels, whose hips and shoulders are placed
by another annotation protocol than COCO's (unmeasured: no COCO head boxes exist); a lying or
strongly foreshortened person is over- or under-estimated. Without all four joints the head size
is NaN (``head_box`` None): PCKh leaves such rows out and counts them. The stored ``head_box`` is a
square of side ``head_size / (0.6 x sqrt 2)`` (so 0.6 x its diagonal is the head size) centred on
the mean of the labelled face keypoints, else on the shoulders' midpoint: only its size means
anything.

Keys ``f"{image_id:012d}_{annotation_id}"``. Tasks: chunks of ``chunk_size`` images (default 1000)
in image-id order, people of an image in annotation-id order, ids ``"<first>-<last+1>"`` (indices
into the sorted images that have person annotations, zero-padded); an image is decoded once for all
its people. The annotation file is parsed once per process and file version.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.readers import common
from data_prep.records import PersonSample, Quarantined, SourceTask
from pose3d import skeleton

DATASET = "coco"
DEFAULT_MIN_JOINTS = 4
#: COCO's "small" objects are below 32² px² (its evaluation's area ranges).
DEFAULT_MIN_AREA = 32.0**2
DEFAULT_BOX_MARGIN = 1.0
DEFAULT_CHUNK = 1000  # images per task
SPLITS = ("train", "val")
#: COCO's 17 keypoint names, in its order (``skeleton.COCO17`` maps this order).
KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
FACE = np.arange(5)  # nose, eyes, ears
COCO_L_HIP, COCO_R_HIP = 11, 12

#: Head size per shoulder width and per torso length (module docstring; fitted on MPII validation).
HEAD_PER_SHOULDER_WIDTH = 0.56
HEAD_PER_TORSO_LENGTH = 0.42
#: PCKh's normalizer is 0.6 x the head-box diagonal (docs/conventions.md, PCKh).
HEAD_SIZE_PER_DIAGONAL = 0.6

# Quarantine categories of this reader (the others come from ``common``).
CROWD = "crowd"
TINY_PERSON = "tiny person"
IMAGE_SIZE_MISMATCH = "image size mismatch"

#: What ``pose3d prep coco --help`` shows of the raw folder it expects.
RAW_LAYOUT = (
    "raw layout (--raw DIR; the official release, also mmpose's data/coco):\n"
    "  DIR/annotations/person_keypoints_<split>2017.json   (-O annotation=FILE for another file)\n"
    "  DIR/<split>2017/<file_name>     (else DIR/images/<split>2017/, DIR/images/, DIR; -O images=FOLDER)\n"
    "COCO's 17 keypoints -> the 16 joints: pelvis = midpoint of the hips when both are labelled; thorax, "
    "upper neck and head top never visible; v=1 and v=2 both count as annotated. Skipped and counted by "
    "reason: crowd (iscrowd=1), tiny person (area < min_area px^2), too few annotated joints (< min_joints "
    "of the 16). Head size for PCKh derived from shoulders and hips (docs/conventions.md, COCO)."
)

ACCEPTED_FORMAT = (
    "a COCO keypoints JSON: an object with 'images', 'annotations' and 'categories', the person "
    "category listing COCO's 17 'keypoints' (the official annotations/person_keypoints_{train,val}2017"
    ".json; mmpose's data/coco layout uses the same files)"
)
_ANNOTATION_FILES = {split: (f"annotations/person_keypoints_{split}2017.json",) for split in SPLITS}
_IMAGE_DIRS = {split: (f"{split}2017", f"images/{split}2017", "images") for split in SPLITS}

_J = skeleton.NUM_JOINTS
_R_SHO, _L_SHO = skeleton.JOINT_INDEX["r_shoulder"], skeleton.JOINT_INDEX["l_shoulder"]
_R_HIP, _L_HIP = skeleton.JOINT_INDEX["r_hip"], skeleton.JOINT_INDEX["l_hip"]


class CocoFormatError(ValueError):
    """A file that is not a COCO keypoints annotation; the message names it and the accepted format."""


@dataclass(frozen=True)
class CocoPeople:
    """Every person annotation of one file, sorted by (image id, annotation id).

    image_ids, ann_ids (N,) int64; keypoints (N, 17, 3) float64 (x, y px; v); bbox (N, 4) float64
    COCO's x, y, w, h (continuous px, NaN when absent); area (N,) px²; iscrowd (N,) bool;
    problems: N entries, a quarantine reason found while parsing or None. images: image id ->
    (file_name, width, height) (None for an id the annotations name but ``images`` lacks);
    image_order (M,) the image ids that have people, ascending; starts (M + 1,) offsets of each
    image's people into the arrays.
    """

    path: str
    image_ids: np.ndarray
    ann_ids: np.ndarray
    keypoints: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    problems: tuple[str | None, ...]
    images: dict[int, tuple[str, int, int] | None]
    image_order: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return len(self.ann_ids)


def _refuse(path: str | Path, why: str) -> CocoFormatError:
    return CocoFormatError(
        f"coco: {path} is not a COCO keypoints annotation ({why}); expected {ACCEPTED_FORMAT}"
    )


def _person_category(data: dict[str, Any], path: str | Path) -> int:
    """The id of the category whose keypoints are COCO's 17 (checked by name and order)."""
    for n, category in enumerate(data.get("categories") or []):
        names = category.get("keypoints") if isinstance(category, dict) else None
        if not names:
            continue
        if tuple(names) != KEYPOINT_NAMES:
            raise _refuse(path, f"categories[{n}].keypoints is {names!r}, not COCO's 17 in their order")
        return int(category["id"])
    raise _refuse(path, "no category lists 'keypoints'")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _integer(value: Any, default: int) -> int:
    """An id as int; ``default`` when it is absent or not a whole number."""
    number = _number(value)
    return int(number) if np.isfinite(number) and number == int(number) else default


def parse_annotation(path: str | Path) -> CocoPeople:
    """Parse a COCO keypoints file (module docstring). Raises CocoFormatError for another format and
    OSError / json.JSONDecodeError when it cannot be read; a bad single annotation becomes a problem
    of that person instead."""
    if common.sniff_format(path) != "json":
        raise _refuse(path, common.describe_start(path))
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _refuse(path, f"not valid JSON: {err}") from None
    if isinstance(data, list):
        hint = (
            "a list: a detection-results file (image_id, bbox, score) or an MPII JSON"
            if data and isinstance(data[0], dict) and "score" in data[0]
            else "a list, not an object"
        )
        raise _refuse(path, hint)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise _refuse(path, "no 'annotations' list")
    if not isinstance(data.get("images"), list):
        raise _refuse(path, "no 'images' list")
    person = _person_category(data, path)
    images: dict[int, tuple[str, int, int] | None] = {}
    for n, image in enumerate(data["images"]):
        try:
            images[int(image["id"])] = (str(image["file_name"]), int(image["width"]), int(image["height"]))
        except (KeyError, TypeError, ValueError) as err:
            raise _refuse(
                path, f"images[{n}] lacks a usable id, file_name, width or height ({err!r})"
            ) from err
    people = [a for a in data["annotations"] if isinstance(a, dict) and a.get("category_id") == person]
    n = len(people)
    image_ids = np.zeros(n, np.int64)
    ann_ids = np.zeros(n, np.int64)
    keypoints = np.zeros((n, NUM_KEYPOINTS, 3))
    bbox = np.full((n, 4), np.nan)
    area = np.full(n, np.nan)
    iscrowd = np.zeros(n, bool)
    problems: list[str | None] = [None] * n
    # One pass over the annotations (a Python loop over people, not joints): COCO train has 262k.
    for i, ann in enumerate(people):
        image_ids[i] = _integer(ann.get("image_id"), -1)
        ann_ids[i] = _integer(ann.get("id"), -1 - i)  # negative: never a real COCO id
        kp = np.asarray(ann.get("keypoints", []), np.float64).ravel()
        if kp.size == NUM_KEYPOINTS * 3:
            keypoints[i] = kp.reshape(NUM_KEYPOINTS, 3)
        else:
            problems[i] = (
                f"{common.WRONG_JOINT_COUNT}: keypoints has {kp.size} values, expected 51 (17 x (x, y, v))"
            )
        box = np.asarray(ann.get("bbox", []), np.float64).ravel()
        if box.size == 4:
            bbox[i] = box
        if problems[i] is None and not (
            box.size == 4 and np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0
        ):
            problems[i] = (
                f"{common.BAD_ANNOTATION}: bbox {ann.get('bbox')!r} is not [x, y, w, h] with w, h > 0"
            )
        area[i] = _number(ann.get("area"))
        iscrowd[i] = bool(_number(ann.get("iscrowd", 0)) == 1)
        if problems[i] is None and image_ids[i] not in images:
            problems[i] = f"{common.BAD_ANNOTATION}: image_id {image_ids[i]} is not in 'images'"
    order = np.lexsort((ann_ids, image_ids))
    image_ids, ann_ids = image_ids[order], ann_ids[order]
    image_order, starts = np.unique(image_ids, return_index=True)
    for image_id in image_order:
        images.setdefault(int(image_id), None)
    return CocoPeople(
        path=str(path),
        image_ids=image_ids,
        ann_ids=ann_ids,
        keypoints=keypoints[order],
        bbox=bbox[order],
        area=area[order],
        iscrowd=iscrowd[order],
        problems=tuple(problems[k] for k in order),
        images=images,
        image_order=image_order,
        starts=np.append(starts, n).astype(np.int64),
    )


@functools.lru_cache(maxsize=2)
def _parse_cached(path: str, _stamp: tuple) -> CocoPeople:
    return parse_annotation(path)


def load_people(path: str | Path) -> CocoPeople:
    """``parse_annotation``, once per process and file version (every task of a worker shares it)."""
    return _parse_cached(str(path), common.file_stamp(path))


# --- the 16 joints, the head size, the box (vectorized over people) ----------------------------


def map_keypoints(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO keypoints (N, 17, 3) (x, y px; v) -> joints (N, 16, 2) px and visible (N, 16) bool.

    Annotated = v > 0 (v = 1 and v = 2 alike). The pelvis is the hips' 2D midpoint where both hips
    are annotated; thorax, upper neck and head top are never visible. Joints that are not visible
    hold (0, 0).
    """
    keypoints = np.asarray(keypoints, np.float64)
    labelled = keypoints[..., 2] > 0
    joints, visible = skeleton.COCO17.apply(keypoints[..., :2], labelled)
    both_hips = labelled[..., COCO_L_HIP] & labelled[..., COCO_R_HIP]
    joints[..., skeleton.ROOT, :] = (keypoints[..., COCO_L_HIP, :2] + keypoints[..., COCO_R_HIP, :2]) / 2
    visible[..., skeleton.ROOT] = both_hips
    joints = np.where(visible[..., None], joints, 0.0)
    return joints, visible


def head_sizes(joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The derived head size (module docstring): joints (N, 16, 2) px, visible (N, 16) -> (N,) px,
    ``max(0.56 x shoulder width, 0.42 x torso length)``; NaN unless both shoulders and both hips
    are visible, or when the result is not positive."""
    joints = np.asarray(joints, np.float64)
    shoulders = joints[..., _R_SHO, :] - joints[..., _L_SHO, :]
    torso = (
        joints[..., _R_SHO, :] + joints[..., _L_SHO, :] - joints[..., _R_HIP, :] - joints[..., _L_HIP, :]
    ) / 2
    size = np.maximum(
        HEAD_PER_SHOULDER_WIDTH * np.linalg.norm(shoulders, axis=-1),
        HEAD_PER_TORSO_LENGTH * np.linalg.norm(torso, axis=-1),
    )
    known = np.asarray(visible, bool)[..., [_R_SHO, _L_SHO, _R_HIP, _L_HIP]].all(axis=-1) & (size > 0)
    return np.where(known, size, np.nan)


def head_boxes(keypoints: np.ndarray, joints: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Nominal head boxes (N, 4) px x1, y1, x2, y2 whose 0.6 x diagonal is ``sizes`` (N,): centred on
    the mean of the labelled face keypoints (keypoints (N, 17, 3)), else on the shoulders' midpoint
    (joints (N, 16, 2)). NaN where the size is NaN."""
    keypoints = np.asarray(keypoints, np.float64)
    face = keypoints[:, FACE]
    labelled = face[..., 2] > 0
    count = labelled.sum(axis=-1)
    face_mean = np.where(labelled[..., None], face[..., :2], 0.0).sum(axis=-2) / np.maximum(count, 1)[:, None]
    shoulders_mid = (joints[:, _R_SHO] + joints[:, _L_SHO]) / 2
    centre = np.where((count > 0)[:, None], face_mean, shoulders_mid)
    half = np.asarray(sizes, np.float64) / (HEAD_SIZE_PER_DIAGONAL * np.sqrt(2.0)) / 2
    return np.concatenate([centre - half[:, None], centre + half[:, None]], axis=-1)


def person_boxes(bbox: np.ndarray, margin: float = DEFAULT_BOX_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """COCO bboxes (N, 4) x, y, w, h (continuous px, image edge at 0) -> centres (N, 2) in the
    project's px (edge at -0.5) and square sides (N,) px = ``margin`` x the longer side."""
    bbox = np.asarray(bbox, np.float64)
    centre = bbox[:, :2] + bbox[:, 2:] / 2 - 0.5
    return centre, margin * bbox[:, 2:].max(axis=-1)


def skip_reasons(
    people: CocoPeople, visible: np.ndarray, sl: slice, min_joints: int, min_area: float
) -> list[str | None]:
    """The quarantine reason of each person in ``sl`` (module docstring, in its order), or None.
    visible (n, 16) are that slice's mapped joints."""
    problems = people.problems[sl]
    crowd = people.iscrowd[sl]
    box_area = people.bbox[sl, 2] * people.bbox[sl, 3]
    area = np.where(np.isfinite(people.area[sl]), people.area[sl], box_area)
    count = np.asarray(visible, bool).sum(axis=-1)
    reasons: list[str | None] = []
    for k, problem in enumerate(problems):
        if problem is not None:
            reasons.append(problem)
        elif crowd[k]:
            reasons.append(f"{CROWD}: iscrowd = 1 (a region of several people, no keypoints)")
        elif not area[k] >= min_area:
            reasons.append(f"{TINY_PERSON}: area {area[k]:.0f} px² < {min_area:g}")
        elif count[k] < min_joints:
            reasons.append(f"{common.TOO_FEW_JOINTS}: {count[k]} < {min_joints} (among the 16)")
        else:
            reasons.append(None)
    return reasons


# --- tasks -------------------------------------------------------------------------------------


def find_annotation(raw_root: str | Path, split: str, annotation: str | None = None) -> Path:
    """The annotation file of a split: ``annotation`` (relative to the root, or absolute) when given,
    else ``annotations/person_keypoints_<split>2017.json``. Raises FileNotFoundError naming what
    was looked for, ValueError for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"coco: unknown split {split!r} (train, val; COCO's test-dev labels are not public)")
    if annotation is not None:
        path = common.resolve(raw_root, annotation)
        if not path.is_file():
            raise FileNotFoundError(f"coco: annotation {path} not found")
        return path
    path = common.first_existing(raw_root, _ANNOTATION_FILES[split])
    if path is None:
        raise FileNotFoundError(
            f"coco: no {split} annotation in {raw_root} (tried {', '.join(_ANNOTATION_FILES[split])}); "
            "give -O annotation=PATH"
        )
    return path


def find_images(raw_root: str | Path, split: str, images: str | None = None) -> Path:
    """The folder ``file_name`` is relative to: ``images`` when given, else the first of
    ``<split>2017``, ``images/<split>2017``, ``images`` that exists, else the root."""
    if images:
        return common.resolve(raw_root, images)
    found = common.first_existing(raw_root, _IMAGE_DIRS.get(split, ()))
    return found if found is not None and found.is_dir() else Path(raw_root)


def list_tasks(
    raw_root: str,
    split: str,
    annotation: str | None = None,
    images: str | None = None,
    min_joints: int = DEFAULT_MIN_JOINTS,
    min_area: float = DEFAULT_MIN_AREA,
    box_margin: float = DEFAULT_BOX_MARGIN,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[SourceTask]:
    """Chunks of ``chunk_size`` images, in image-id order (module docstring).

    Raises FileNotFoundError when the annotation is missing, CocoFormatError (a ValueError) when it
    is not a COCO keypoints file, ValueError for a bad option.
    """
    path = find_annotation(raw_root, split, annotation)
    people = load_people(path)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"coco: chunk_size must be >= 1, got {chunk_size}")
    if not float(box_margin) > 0:
        raise ValueError(f"coco: box_margin must be > 0, got {box_margin}")
    n_images = len(people.image_order)
    width = len(str(n_images))
    payload = {
        "annotation": str(path),
        "images": str(find_images(raw_root, split, images)),
        "min_joints": int(min_joints),
        "min_area": float(min_area),
        "box_margin": float(box_margin),
    }
    tasks = []
    for start in range(0, n_images, chunk_size):
        stop = min(start + chunk_size, n_images)
        tasks.append(
            SourceTask(
                DATASET,
                split,
                f"{start:0{width}d}-{stop:0{width}d}",
                raw_root,
                {**payload, "start": start, "stop": stop},
            )
        )
    return tasks


def read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """The people of one chunk of images: image by image, each decoded once."""
    p = task.payload
    people = load_people(p["annotation"])
    first, last = int(people.starts[p["start"]]), int(people.starts[p["stop"]])
    sl = slice(first, last)
    joints, visible = map_keypoints(people.keypoints[sl])
    sizes = head_sizes(joints, visible)
    heads = head_boxes(people.keypoints[sl], joints, sizes)
    centres, sides = person_boxes(people.bbox[sl], p["box_margin"])
    reasons = skip_reasons(people, visible, sl, p["min_joints"], p["min_area"])
    image_root = Path(p["images"])
    for m in range(p["start"], p["stop"]):
        lo, hi = int(people.starts[m]) - first, int(people.starts[m + 1]) - first
        image_id = int(people.image_order[m])
        info = people.images.get(image_id)
        keys = [f"{image_id:012d}_{people.ann_ids[first + k]}" for k in range(lo, hi)]
        source = info[0] if info is not None else ""
        wanted = [k for k in range(lo, hi) if reasons[k] is None]
        for k in range(lo, hi):
            if reasons[k] is not None:
                yield Quarantined(source, keys[k - lo], reasons[k])
        if not wanted or info is None:  # (an unknown image_id is a problem: nobody is wanted)
            continue  # nobody to crop: the image is not even opened
        name, width, height = info
        path = image_root / name
        source = common.relative_to_root(path, task.raw_root)
        image, reason = common.read_image(path, source)
        if image is None or image.shape[:2] != (height, width):
            if image is not None:
                shape = f"{image.shape[1]}x{image.shape[0]}"
                reason = f"{IMAGE_SIZE_MISMATCH}: {source} is {shape}, the annotation says {width}x{height}"
            for k in wanted:
                yield Quarantined(source, keys[k - lo], reason or "")
            continue
        for k in wanted:
            yield PersonSample(
                image=image,
                joints_2d=joints[k],
                visible=visible[k],
                center=centres[k],
                box_size=float(sides[k]),
                source_path=source,
                key=keys[k - lo],
                head_box=None if np.isnan(sizes[k]) else heads[k],
            )
