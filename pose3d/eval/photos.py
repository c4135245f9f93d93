"""``pose3d predict`` on many images: which files (``list_images``), what their outputs are called
(``output_names``), where the people are (``load_person_boxes``: COCO detections or COCO keypoint
annotations), and the three per-image steps that run on numpy batches of image rows, in this
process (``predict_photos``) or as Ray Data tasks and actors (``pose3d.eval.batch.predict_photos_ray``):

1. ``read_and_crop`` (CPU): read each image, crop every person box to the network's input;
2. ``predict_people_batch`` (the model): all crops of the batch through the network together,
   joints back into each image's pixels, 3D in mm (``pose3d.eval.predict``);
3. ``write_outputs`` (CPU): OUT/<name>.json and OUT/<name>.png per image, and a summary row.

An image row (the input of step 1) holds: ``path`` (str, what to read), ``image`` (str, the path as
the user named it), ``name`` (str, the output stem), ``boxes_json`` (str: {"boxes": [[x1, y1, x2,
y2], ...], "scores": [score or null, ...]} in image px, corner coordinates; "" for the whole image)
and ``boxes_from`` (str, where the boxes came from). Per-person columns are ragged: one (K, ...)
array per image.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose3d import skeleton, storage
from pose3d.eval.predict import (
    PeoplePrediction,
    check_boxes,
    crop_people,
    outputs_to_image,
    predict_outputs,
)

#: File endings a folder or a glob contributes (a file named on the command line is read whatever
#: its ending).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The COCO category of people; detections and annotations of other categories are left out.
PERSON_CATEGORY = 1

# --- which images -------------------------------------------------------------------------------


@dataclass
class ImageListing:
    """``list_images``'s answer: the images in order (as the user named them, or under the folder
    or glob that named them) and the arguments that gave none, with why."""

    images: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _folder_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files and folders left out), sorted."""
    found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(p for p in found if not _is_hidden(p, folder))


def list_images(inputs: Sequence[str], exclude: str | Path | None = None) -> ImageListing:
    """Files, folders (their image files, recursively) and glob patterns (``*``, ``?``, ``[...]``,
    ``**``; for patterns the shell did not expand) -> the images, in the order given, each once.

    Files under ``exclude`` (the output folder, when it lies inside an input folder) are left out.
    An argument that names nothing is reported in ``problems`` rather than raised, so the caller
    decides whether the run can go on.
    """
    listing = ImageListing()
    seen: set[Path] = set()
    skip_root = Path(exclude).resolve() if exclude is not None else None

    def add(path: Path) -> None:
        real = path.resolve()
        if real in seen or (skip_root is not None and real.is_relative_to(skip_root)):
            return
        seen.add(real)
        listing.images.append(path)

    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            found = _folder_images(path)
            if not found:
                listing.problems.append((arg, "no image files in this folder"))
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        elif any(ch in arg for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            found = [
                p
                for m in matches
                for p in (
                    _folder_images(m) if m.is_dir() else [m] if m.suffix.lower() in IMAGE_SUFFIXES else []
                )
            ]
            if not found:
                listing.problems.append((arg, "no image file matches this pattern"))
            for p in found:
                add(p)
        else:
            listing.problems.append((arg, "no such file or folder"))
    return listing


def output_names(images: Sequence[Path]) -> list[str]:
    """The output stem of each image: OUT/<stem>.json and OUT/<stem>.png.

    The file's stem, except where two images share one (case-insensitively, as some filesystems
    compare names): then each gets its path relative to the folder the colliding images share, with
    '/' written '__' (``a/img.jpg`` -> ``a__img``, ``b/img.jpg`` -> ``b__img``), plus its ending when
    only that differs (``img.jpg`` -> ``img_jpg``, ``img.png`` -> ``img_png``). A name still taken
    gets ``-2``, ``-3``...
    """
    stems = [p.stem for p in images]
    groups: dict[str, list[int]] = {}
    for i, stem in enumerate(stems):
        groups.setdefault(stem.casefold(), []).append(i)
    names = list(stems)
    for members in groups.values():
        if len(members) < 2:
            continue
        paths = [images[i].resolve() for i in members]
        common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        rel = ["__".join(p.relative_to(common).with_suffix("").parts) for p in paths]
        for k, i in enumerate(members):
            clash = sum(r.casefold() == rel[k].casefold() for r in rel) > 1
            names[i] = rel[k] + (f"_{paths[k].suffix.lstrip('.')}" if clash else "")
    taken: set[str] = set()
    for i, name in enumerate(names):
        unique, n = name, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{name}-{n}"
        taken.add(unique.casefold())
        names[i] = unique
    return names


# --- where the people are ------------------------------------------------------------------------


class BoxesFileError(ValueError):
    """A person-box file that cannot be used; the message names the file, the entry and the field."""


@dataclass
class PersonBoxes:
    """Person boxes from a COCO-format file, by image.

    ``by_key``: image key -> [(x1, y1, x2, y2, score)] in image px, corner coordinates, score NaN
    when the file gives none, all scores (the ``min_score`` filter applies in ``lookup``). Keys are
    ``id:<image_id>`` and ``file:<file name or stem as the entry gives it>``. ``id_by_file``: file
    name -> image id, from an ``images`` list.
    """

    source: str
    kind: str
    min_score: float
    by_key: dict[str, list[tuple[float, float, float, float, float]]]
    id_by_file: dict[str, str]

    def lookup(self, image: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
        """The boxes of ``image``: boxes (K, 4), scores (K,) (NaN: none given) and, when K is 0, why.

        Matched by the ``images`` list (file name -> id), else by an entry's own ``file_name`` (the
        file's name or stem), else by an id equal to the file's stem or to its number (COCO's
        000000000785.jpg is image 785)."""
        keys = []
        if image.name in self.id_by_file:
            keys.append(f"id:{self.id_by_file[image.name]}")
        keys += [f"file:{image.name}", f"file:{image.stem}", f"id:{image.stem}"]
        if image.stem.isdigit():
            keys.append(f"id:{int(image.stem)}")
        entries = next((self.by_key[k] for k in keys if k in self.by_key), [])
        name = Path(self.source).name
        if not entries:
            return np.zeros((0, 4)), np.zeros(0), f"no person box for it in {name}"
        arr = np.asarray(entries, np.float64)
        keep = ~(arr[:, 4] < self.min_score)  # NaN (no score) is kept
        if not keep.any():
            reason = f"no person box with score >= {self.min_score:g} in {name} (only lower ones)"
            return np.zeros((0, 4)), np.zeros(0), reason
        return arr[keep, :4], arr[keep, 4], None


def _bad(source: str, where: str, field_name: str, problem: str) -> BoxesFileError:
    return BoxesFileError(f"{source}: {where}, field '{field_name}': {problem}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _image_key(entry: Mapping[str, Any], source: str, where: str) -> str:
    if "image_id" in entry:
        value = entry["image_id"]
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            raise _bad(source, where, "image_id", f"expected an integer or a string, got {value!r}")
        return f"id:{value}"
    if "file_name" in entry:
        value = entry["file_name"]
        if not isinstance(value, str) or not value:
            raise _bad(source, where, "file_name", f"expected a file name, got {value!r}")
        return f"file:{Path(value).name}"
    raise BoxesFileError(f"{source}: {where}: no 'image_id' (nor 'file_name') to match it to an image")


def _parse_box(entry: Mapping[str, Any], source: str, where: str) -> tuple[float, float, float, float, float]:
    """(x1, y1, x2, y2, score) of one entry: bbox [x, y, w, h] (COCO: corner coordinates)."""
    bbox = entry.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise _bad(source, where, "bbox", f"expected [x, y, w, h], 4 numbers; got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0):
        raise _bad(source, where, "bbox", f"width and height must be positive; got {bbox!r}")
    score = entry.get("score")
    if score is not None and not _number(score):
        raise _bad(source, where, "score", f"expected a number, got {score!r}")
    return x, y, x + w, y + h, math.nan if score is None else float(score)


def _ids_by_file(images: Any, source: str) -> dict[str, str]:
    """A COCO ``images`` list -> file name -> image id."""
    if not isinstance(images, list):
        raise BoxesFileError(f"{source}: 'images' must be a list of {{id, file_name}}")
    out = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            raise BoxesFileError(f"{source}: images[{i}]: expected an object, got {type(img).__name__}")
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise _bad(
                source, f"images[{i}]", "file_name", f"expected a file name, got {img.get('file_name')!r}"
            )
        if isinstance(img.get("id"), bool) or not isinstance(img.get("id"), int | str):
            raise _bad(
                source, f"images[{i}]", "id", f"expected an integer or a string, got {img.get('id')!r}"
            )
        out[Path(img["file_name"]).name] = str(img["id"])
    return out


def _read_json(path: str) -> Any:
    try:
        text = storage.read_text(path)
    except (OSError, UnicodeDecodeError) as err:
        raise BoxesFileError(f"{path}: cannot read it ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BoxesFileError(f"{path}: not JSON ({err})") from None


def load_person_boxes(path: str, min_score: float = 0.5, image_ids: str | None = None) -> PersonBoxes:
    """Person boxes from ``path``: a COCO results list (detections: [{image_id, bbox [x, y, w, h],
    score, category_id}], as mmpose's test_coco_det_AP_H_56.json) or a COCO annotation file
    ({images, annotations}; its ``annotations``' bboxes, crowd regions left out). Entries of other
    categories than person (1) are left out; an entry may name its image by ``file_name`` instead
    of ``image_id``. ``image_ids``: a COCO annotation file whose ``images`` list maps file names to
    the ids (default: the boxes file's own list, if it has one). ``min_score`` applies at
    ``PersonBoxes.lookup``; entries without a score always pass.

    Raises BoxesFileError naming the file, the entry (its index) and the field.
    """
    data = _read_json(path)
    id_by_file: dict[str, str] = {}
    if isinstance(data, list):
        kind, entries, where = "detections", data, "entry {}"
    elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
        kind, entries, where = "keypoint annotations", data["annotations"], "annotations[{}]"
        if "images" in data:
            id_by_file = _ids_by_file(data["images"], path)
    else:
        raise BoxesFileError(
            f"{path}: expected a JSON list of detections ({{image_id, bbox, score, category_id}}) or a "
            "COCO annotation file with an 'annotations' list"
        )
    if image_ids is not None:
        listed = _read_json(image_ids)
        if not isinstance(listed, dict) or "images" not in listed:
            raise BoxesFileError(f"{image_ids}: expected a COCO annotation file with an 'images' list")
        id_by_file.update(_ids_by_file(listed["images"], image_ids))
    by_key: dict[str, list[tuple[float, float, float, float, float]]] = {}
    for i, entry in enumerate(entries):
        at = where.format(i)
        if not isinstance(entry, dict):
            raise BoxesFileError(f"{path}: {at}: expected an object, got {type(entry).__name__}")
        category = entry.get("category_id", PERSON_CATEGORY)
        if isinstance(category, bool) or not isinstance(category, int | str):
            raise _bad(path, at, "category_id", f"expected an integer, got {category!r}")
        if str(category) != str(PERSON_CATEGORY) or entry.get("iscrowd"):
            continue
        key = _image_key(entry, path, at)
        by_key.setdefault(key, []).append(_parse_box(entry, path, at))
    return PersonBoxes(path, kind, min_score, by_key, id_by_file)


# --- is it a person crop? ----------------------------------------------------------------------------

#: The whole-image rule (``full_frame_signs``): an image without a person box is taken for a full
#: frame, not a person crop, when it is wider than this many times its height (person crops are
#: tall or square)...
FULL_FRAME_MAX_ASPECT = 1.25
#: ...or the predicted skeleton spans less than this fraction of the image's longer side (the
#: training crops' person spans about 1 / 1.2 of the box the network sees, ~0.75 of its view)...
FULL_FRAME_MIN_SPAN = 0.4
#: ...or the median of the 16 joints' heatmap peaks is below this (the targets peak at 1: the
#: network finds no clear joints)...
FULL_FRAME_MIN_PEAK = 0.2
#: ...or, on an image more than ``FULL_FRAME_MAX_DOWNSCALE`` times the network's input on its longer
#: side, the skeleton runs edge to edge (spans more than ``FULL_FRAME_EDGE_SPAN`` of it). A trained
#: network, which only ever saw a person filling its view, draws one from ceiling to floor on a
#: whole frame, confidently: on the Human3.6M and MPI-INF-3DHP fixture frames (1000 and 2048 px)
#: a demo model's skeletons spanned 0.93-1.03 with median peaks 0.35-0.52, so the checks above
#: stayed silent. A crop keeps a margin around the person (the training crops' person spans ~0.75).
FULL_FRAME_MAX_DOWNSCALE = 2.0
FULL_FRAME_EDGE_SPAN = 0.9


def full_frame_signs(
    width: int,
    height: int,
    joints_2d: np.ndarray,
    joint_scores: np.ndarray,
    input_size: int | None = None,
) -> list[str]:
    """Why an image that went whole to the network does not look like a person crop (empty: it does).

    joints_2d (16, 2) the predicted joints, image px; joint_scores (16,) their heatmap peaks;
    input_size the network's input side, px (None: the edge-to-edge check is skipped).
    The rule: ``FULL_FRAME_MAX_ASPECT``, ``FULL_FRAME_MIN_SPAN``, ``FULL_FRAME_MIN_PEAK``,
    ``FULL_FRAME_MAX_DOWNSCALE`` with ``FULL_FRAME_EDGE_SPAN``."""
    signs = []
    if width > FULL_FRAME_MAX_ASPECT * height:
        signs.append(f"{width}x{height} px is wider than a person crop")
    span = float(np.ptp(np.asarray(joints_2d, np.float64), axis=0).max()) / max(width, height)
    if span < FULL_FRAME_MIN_SPAN:
        signs.append(f"the predicted skeleton spans {100 * span:.0f} % of the image")
    downscale = max(width, height) / input_size if input_size else 0.0
    if downscale > FULL_FRAME_MAX_DOWNSCALE and span > FULL_FRAME_EDGE_SPAN:
        signs.append(
            f"the predicted skeleton runs edge to edge ({100 * span:.0f} %) of a {width}x{height} px "
            f"image shrunk {downscale:.1f}x to the network's {input_size} px"
        )
    peak = float(np.median(joint_scores))
    if peak < FULL_FRAME_MIN_PEAK:
        signs.append(f"median joint confidence {peak:.2f} < {FULL_FRAME_MIN_PEAK}")
    return signs


# --- the per-image record ----------------------------------------------------------------------------

UNITS = {
    "box": "x1, y1, x2, y2 in image px, corner coordinates (the image spans [0, width] x [0, height])",
    "box_score": "the detector's score; null where the box has none",
    "joints_2d_px": "image px of the original image, pixel centres at integers",
    "joint_scores": "each joint's heatmap peak (the network's confidence; training targets peak at 1)",
    "joints_3d_mm": "mm relative to the pelvis, camera axes (x right, y down, z away from the camera), "
    "scaled so the 14 bones sum to the canonical skeleton's 4297 mm",
}


def people_record(
    image: str,
    width: int,
    height: int,
    people: PeoplePrediction,
    *,
    boxes_from: str,
    margin: float,
    flip_test: bool,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """OUT/<name>.json: every person of one image (joints rounded to 0.01 px, 0.1 mm, scores to
    0.001) with the joint names and units."""
    rows = []
    for k in range(len(people)):
        score = float(people.box_scores[k])
        rows.append(
            {
                "box": np.round(people.boxes[k], 2).tolist(),
                "box_score": None if math.isnan(score) else round(score, 5),
                "joints_2d_px": np.round(people.joints_2d[k], 2).tolist(),
                "joint_scores": np.round(np.asarray(people.joint_scores[k], np.float64), 3).tolist(),
                "joints_3d_mm": np.round(people.pose_mm[k], 1).tolist(),
            }
        )
    return {
        "image": image,
        "width": int(width),
        "height": int(height),
        "boxes_from": boxes_from,
        "margin": margin,
        "flip_test": flip_test,
        "joint_names": list(skeleton.JOINT_NAMES),
        "units": UNITS,
        "people": rows,
        "warnings": list(warnings),
    }


_ITEM = r'(?:-?[\d.eE+-]+|null|"\w*")'  # a number, null, or a plain word such as a joint name
_FLAT_LIST = re.compile(rf"\[\s*({_ITEM}(?:,\s*{_ITEM})*)\s*\]")


def record_json(record: Mapping[str, Any]) -> str:
    """A record as indented JSON with each list of numbers (or of plain words) on one line: a joint
    per line, not a number per line."""
    text = json.dumps(record, indent=2)
    return _FLAT_LIST.sub(lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


# --- the three steps on batches of image rows -----------------------------------------------------------


def _ragged(items: Sequence[np.ndarray]) -> np.ndarray:
    """Per-row arrays of different lengths as one object column (Ray Data stores them as
    variable-shaped tensors)."""
    out = np.empty(len(items), object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def read_image(path: str) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR (grey and 16-bit images converted, EXIF orientation applied), or None
    when the file is missing or not an image OpenCV reads."""
    import cv2

    if not os.path.isfile(path):
        return None
    return cv2.imread(path, cv2.IMREAD_COLOR)


def read_and_crop(batch: Mapping[str, np.ndarray], input_size: int, margin: float) -> dict[str, np.ndarray]:
    """Step 1: image rows -> the people's network inputs. Adds status ("ok" or "unreadable"),
    width, height, whole (no box given: the whole image is the person), and the ragged per-person
    columns boxes (K, 4), box_scores (K,), crops (K, 3, S, S) uint8 RGB, affines (K, 2, 3)."""
    n = len(batch["path"])
    status, width, height, whole = [], np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    boxes, scores, crops, affines = [], [], [], []
    for i in range(n):  # per-image file I/O and resampling; the math runs on all of an image's boxes
        image = read_image(str(batch["path"][i]))
        spec = str(batch["boxes_json"][i])
        if image is None:
            status.append("unreadable")
            b, s = np.zeros((0, 4)), np.zeros(0)
            c, a = np.zeros((0, 3, input_size, input_size), np.uint8), np.zeros((0, 2, 3))
        else:
            status.append("ok")
            height[i], width[i] = image.shape[:2]
            whole[i] = spec == ""
            if whole[i]:
                b, s = np.array([[0.0, 0.0, width[i], height[i]]]), np.full(1, np.nan)
            else:
                given = json.loads(spec)
                b = check_boxes(given["boxes"])
                s = np.array([np.nan if v is None else v for v in given["scores"]], np.float64)
            c, a = crop_people(image, b, margin, input_size)
        boxes.append(b)
        scores.append(s)
        crops.append(c)
        affines.append(a)
    out = {k: np.asarray(batch[k]) for k in ("path", "image", "name", "boxes_from")}
    out.update(status=np.array(status, dtype=str), width=width, height=height, whole=whole)
    out.update(
        boxes=_ragged(boxes), box_scores=_ragged(scores), crops=_ragged(crops), affines=_ragged(affines)
    )
    return out


def predict_people_batch(
    model: torch.nn.Module,
    batch: Mapping[str, np.ndarray],
    device: torch.device | str = "cpu",
    *,
    flip_test: bool = False,
    batch_size: int = 32,
    autocast: Any = None,
) -> dict[str, np.ndarray]:
    """Step 2: ``read_and_crop``'s rows -> the same without crops and affines, plus the ragged
    joints_2d (K, 16, 2) image px, joint_scores (K, 16) and pose_mm (K, 16, 3). The crops of all
    images of the batch go through the network ``batch_size`` at a time."""
    cfg = model.config
    crops = [np.asarray(c).reshape(-1, 3, cfg.input_size, cfg.input_size) for c in batch["crops"]]
    affines = [np.asarray(a, np.float64).reshape(-1, 2, 3) for a in batch["affines"]]
    counts = np.array([len(c) for c in crops], np.int64)
    all_crops = (
        np.concatenate(crops) if len(crops) else np.zeros((0, 3, cfg.input_size, cfg.input_size), np.uint8)
    )
    joints_out, peaks, depth = predict_outputs(model, all_crops, device, batch_size, autocast, flip_test)
    all_affines = np.concatenate(affines) if len(affines) else np.zeros((0, 2, 3))
    joints_img, pose_mm = outputs_to_image(joints_out, depth, all_affines, cfg.stride, cfg.output_size)
    split = np.cumsum(counts)[:-1]
    out = {k: v for k, v in batch.items() if k not in ("crops", "affines")}
    out["joints_2d"] = _ragged(np.split(joints_img, split))
    out["joint_scores"] = _ragged(np.split(peaks, split))
    out["pose_mm"] = _ragged(np.split(pose_mm, split))
    return out


#: Columns of ``write_outputs``'s summary rows.
SUMMARY_COLUMNS = ("image", "name", "status", "reason", "people", "signs", "outputs")


def write_outputs(
    batch: Mapping[str, np.ndarray],
    out: str,
    *,
    margin: float,
    flip_test: bool,
    figures: bool = True,
    input_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Step 3: ``predict_people_batch``'s rows -> OUT/<name>.json and (``figures``) OUT/<name>.png
    (``out`` local or a URI). Returns one summary row per image: image, name, status ("ok" or
    "skipped"), reason (why skipped), people, signs (``full_frame_signs`` joined by "; ", for
    whole images), outputs (the files written, joined by ", "). ``input_size``: the network's, px."""
    from pose3d.eval.report import people_figure_png

    rows: dict[str, list[Any]] = {k: [] for k in SUMMARY_COLUMNS}
    for i in range(len(batch["name"])):
        image, name = str(batch["image"][i]), str(batch["name"][i])
        rows["image"].append(image)
        rows["name"].append(name)
        if str(batch["status"][i]) != "ok":
            rows["status"].append("skipped")
            rows["reason"].append("not a readable image")
            rows["people"].append(0)
            rows["signs"].append("")
            rows["outputs"].append("")
            continue
        people = PeoplePrediction(
            np.asarray(batch["boxes"][i], np.float64).reshape(-1, 4),
            np.asarray(batch["joints_2d"][i], np.float64).reshape(-1, skeleton.NUM_JOINTS, 2),
            np.asarray(batch["joint_scores"][i], np.float32).reshape(-1, skeleton.NUM_JOINTS),
            np.asarray(batch["pose_mm"][i], np.float64).reshape(-1, skeleton.NUM_JOINTS, 3),
            np.asarray(batch["box_scores"][i], np.float64).reshape(-1),
        )
        width, height = int(batch["width"][i]), int(batch["height"][i])
        signs = (
            full_frame_signs(width, height, people.joints_2d[0], people.joint_scores[0], input_size)
            if bool(batch["whole"][i])
            else []
        )
        warnings = [f"no person box given and not like a person crop: {'; '.join(signs)}"] if signs else []
        record = people_record(
            image,
            width,
            height,
            people,
            boxes_from=str(batch["boxes_from"][i]),
            margin=margin,
            flip_test=flip_test,
            warnings=warnings,
        )
        written = [storage.join(out, f"{name}.json")]
        storage.write_text(written[0], record_json(record))
        if figures:
            bgr = read_image(str(batch["path"][i]))
            if bgr is not None:  # read a moment ago in step 1
                k = len(people)
                title = f"{name}\n{k} {'person' if k == 1 else 'people'}, boxes: {batch['boxes_from'][i]}"
                written.append(storage.join(out, f"{name}.png"))
                storage.write_bytes(written[1], people_figure_png(bgr, people, title))
        rows["status"].append("ok")
        rows["reason"].append("")
        rows["people"].append(len(people))
        rows["signs"].append("; ".join(signs))
        rows["outputs"].append(", ".join(written))
    return {
        k: np.array(v, dtype=np.int64) if k == "people" else np.array(v, dtype=object).astype(str)
        for k, v in rows.items()
    }


def image_rows(
    images: Sequence[Path],
    names: Sequence[str],
    boxes: Sequence[tuple[np.ndarray, np.ndarray] | None],
    boxes_from: str,
) -> list[dict[str, str]]:
    """The input rows of step 1: one per image; ``boxes`` per image ((K, 4) boxes, (K,) scores) or
    None for the whole image. Paths are made absolute (Ray workers run in other folders)."""
    rows = []
    for image, name, given in zip(images, names, boxes, strict=True):
        spec = ""
        if given is not None:
            b, s = given
            scores = [None if math.isnan(v) else float(v) for v in np.asarray(s, np.float64)]
            spec = json.dumps({"boxes": np.asarray(b, np.float64).tolist(), "scores": scores})
        row = {"path": storage.absolute(image), "image": str(image), "name": name, "boxes_json": spec}
        rows.append(row | {"boxes_from": boxes_from if given is not None else "whole image"})
    return rows


def predict_photos(
    model: torch.nn.Module,
    rows: Sequence[Mapping[str, str]],
    out: str,
    *,
    device: torch.device | str = "cpu",
    flip_test: bool = False,
    margin: float,
    batch_size: int = 32,
    figures: bool = True,
    autocast: Any = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The three steps in this process, ``batch_size`` images at a time (so at least that many crops
    per forward pass when every image has a person). Yields ``write_outputs``'s summary batches."""
    cfg = model.config
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = {k: np.array([r[k] for r in chunk], dtype=object).astype(str) for k in chunk[0]}
        batch = read_and_crop(batch, cfg.input_size, margin)
        batch = predict_people_batch(
            model, batch, device, flip_test=flip_test, batch_size=batch_size, autocast=autocast
        )
        yield write_outputs(
            batch, out, margin=margin, flip_test=flip_test, figures=figures, input_size=cfg.input_size
        )
