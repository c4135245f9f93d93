"""MPII Human Pose reader: the official MATLAB annotation, pose-hg-train's HDF5 or the HRNet/mmpose JSON.

Splits: "train" and "val" (MPII's test labels are not public). "val" is the common validation set
of 2958 people (Tompson et al.; the paper's "2957 images"), "train" the other annotated people of
the training images. Joints: MPII's own 16 in the project's order (ids 0..15, ``skeleton.MPII16``);
``visible`` means annotated (MPII's ``is_visible`` occlusion flag is not used: PCKh scores every
annotated joint). Unannotated joints are (0, 0) and not visible. MPII coordinates are 1-based
MATLAB pixels; every coordinate (joints, centre, head box) is shifted by -1 into the project's
0-based pixels (pixel centres at integers). Images: ``<root>/images/<name>`` (option images=DIR;
when ``<root>/images`` does not exist, ``<root>/<name>``). No camera (2D only).

Person box: centre = ``objpos`` / ``center``, side = ``scale * 200`` px, the MPII convention. With
``hourglass_box=True`` the stacked-hourglass framing is used instead (centre moved down by
15 * scale px, side x 1.25). A person without centre/scale gets the joints' bounding square x 1.2.
Head box (``.mat``): x1, y1, x2, y2 px; head size = 0.6 x its diagonal (docs/conventions.md, PCKh). The
``.h5`` gives the head size itself (``normalize``): its head box is a nominal square of that size
(below). The JSON has none: ``head_box`` None (NaN in the shard).

People with fewer than ``min_joints`` annotated joints (default 4) are quarantined with reason
"too few annotated joints: n < 4". Four is the smallest count that still gives two bones of one
geometric-loss group, or a limb and its neighbour, some supervision; it drops none of the 2958
validation people (the fewest annotated there is 5), only nearly empty training labels.

Layout "mat" (``scipy.io.loadmat(struct_as_record=False, squeeze_me=True)``; squeezing turns a
one-element struct array into the struct itself and an empty field into an empty array, both
handled). Two kinds of file, told apart by their variables:

  - the full release ``mpii_human_pose_v1_u12_1.mat``: variable ``RELEASE`` with
    ``annolist`` (n_images,) struct, ``img_train`` (n_images,) 0/1, ``single_person`` (n_images,)
    cell, ``act``, ``video_list`` (the last three unused). ``annolist(i).image.name`` is the image
    file name; ``annolist(i).annorect(j)`` a person (below). "train" = the people with
    ``annopoints`` of images with ``img_train == 1``, minus the validation people when a validation
    list is found (``val_annotation=``, else the default names below; ``exclude_val=False`` keeps
    them). Keys ``f"{i:05d}_{j:02d}"`` (1-based image and person indices).
  - a per-person list such as the common validation set (the fixture
    ``mpii_val_official_struct.mat``): variable ``annolist`` (n,) struct, each with ``annorect``
    (its person or people) and optionally ``image.name``; optionally ``RELEASE_img_index`` (n,)
    and ``RELEASE_person_index`` (n,), 1-based indices of that person in the full release. Every
    person of the list is read (whatever the split). An entry without ``image.name`` gets its image
    name from the full release (``release=``, else the default names below) through
    ``RELEASE_img_index``, else from ``image_names=`` (a text file with one name per annolist entry,
    blank = unknown, or a JSON list of names or of objects with ``"image"``); a person whose image
    name stays unknown is quarantined ("no image name"). Keys ``f"{img:05d}_{person:02d}"`` from
    the RELEASE indices when present (the same person has the same key as in the full release),
    else ``f"e{entry:05d}_{j:02d}"``.

  A person ``annorect(j)``: ``x1, y1, x2, y2`` head box; ``annopoints.point`` (k,) struct with
  ``id`` (0..15, any order), ``x``, ``y`` (px, 1-based), ``is_visible`` (may be empty; unused);
  ``scale`` (box side / 200 px); ``objpos.x``, ``objpos.y`` (px, 1-based). Missing fields or
  points, a single point (squeezed to a struct) and empty values are all accepted; a point with an
  id outside 0..15 or a repeated id quarantines its person ("bad annotation").

  Default file names under <root>: full release ``mpii_human_pose_v1_u12_1.mat`` or
  ``mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat``; validation list
  ``mpii_val_official_struct.mat`` or ``detections.mat``. "train" reads the release, "val" the
  list; ``annotation=PATH`` names the file to read.

Layout "json" (HRNet / mmpose; ``annot/{train,valid}.json`` or ``annotations/mpii_{train,val}.json``
under <root>, or ``annotation=PATH``): a list of people, each ``{"image": name, "joints": 16x2 px
(1-based, unannotated = -1), "joints_vis": 16 (1 = annotated), "center": [x, y] px (1-based, -1 =
unknown), "scale": box side / 200}``. Keys ``f"{row:05d}"``.

Layout "h5" (pose-hg-train, the stacked-hourglass code: ``annot/train.h5``, ``annot/valid.h5``
under <root>, or ``annotation=PATH``). HDF5 datasets, one row per person (N):

    imgname    (N,) bytes      image file name (also read: (N, L) uint8 character codes, NUL-padded)
    part       (N, 16, 2)      joints, 1-based px; (0, 0) = not annotated
    visible    (N, 16)         MPII's is_visible flag (unused, as for the .mat)
    center     (N, 2)          objpos, 1-based px (-1 = unknown)
    scale      (N,)            person height / 200 (box side = scale x 200 px)
    normalize  (N,)            head size, px: 0.6 x the head box's diagonal (optional)

  Other datasets (index, person, torsoangle, ...) are ignored. A joint is annotated when its
  coordinates are not (0, 0) (pose-hg-train's converter writes (0, 0) and visible 0 for an
  unannotated joint, but visible 0 also for an annotated, occluded one). The stored head box is a
  square whose 0.6 x diagonal is ``normalize``, centred between upper neck and head top (else on
  the person): only its size means anything. Keys ``f"{row:05d}"``, as the JSON's.

The format of a file is found from its content (HDF5 signature, MATLAB header, JSON), never from
its suffix alone; anything else is refused with an error naming the file, what it starts with and
the formats above. ``layout=`` (auto, mat, h5, json) only narrows the default files looked for;
a file whose content is another format is refused. Without ``annotation=`` the first default file
found is read: .mat names first, then JSON, then HDF5. Tasks are chunks of ``chunk_size`` people
(default 1000), ids ``"<first>-<last+1>"`` (indices into the annotation's people, zero-padded).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.readers import common
from data_prep.records import PersonSample, Quarantined, SourceTask
from pose3d import skeleton

DATASET = "mpii"
DEFAULT_MIN_JOINTS = 4
DEFAULT_CHUNK = 1000
_J = skeleton.NUM_JOINTS
RELEASE_FILES = ("mpii_human_pose_v1_u12_1.mat", "mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat")
VAL_LIST_FILES = ("mpii_val_official_struct.mat", "detections.mat")
JSON_FILES = {
    "train": ("annotations/mpii_train.json", "annot/train.json"),
    "val": ("annotations/mpii_val.json", "annot/valid.json"),
}
H5_FILES = {"train": ("annot/train.h5", "train.h5"), "val": ("annot/valid.h5", "valid.h5")}
LAYOUTS = ("mat", "json", "h5")
#: What an unreadable annotation file is compared with in the error a user sees.
ACCEPTED_FORMATS = (
    "the official MATLAB .mat (the release mpii_human_pose_v1_u12_1.mat or a per-person list such as "
    "mpii_val_official_struct.mat), pose-hg-train's HDF5 annot/{train,valid}.h5 (datasets imgname, part, "
    "center, scale[, visible, normalize]) or the HRNet/mmpose JSON annot/{train,valid}.json (a list of "
    "{image, joints, joints_vis, center, scale})"
)
#: What ``pose3d prep mpii --help`` shows of the raw folder it expects.
RAW_LAYOUT = (
    "raw layout (--raw DIR; one annotation file per split, its format found from its content):\n"
    "  DIR/mpii_human_pose_v1_u12_1.mat   train: the official release (or in mpii_human_pose_v1_u12_2/)\n"
    "  DIR/mpii_val_official_struct.mat   val: the common 2958-person validation list (or detections.mat)\n"
    "  DIR/annot/{train,valid}.json       HRNet (or DIR/annotations/mpii_{train,val}.json, mmpose)\n"
    "  DIR/annot/{train,valid}.h5         pose-hg-train: imgname, part, visible, center, scale, normalize\n"
    "  DIR/images/<image name>            the images (else DIR/<image name>; -O images=FOLDER)\n"
    "-O annotation=FILE reads FILE (.mat, .h5 or .json, told apart by content) for the split asked for. "
    "Joints are MPII's 16 as annotated (1-based MATLAB px, shifted by -1); people with fewer than "
    "min_joints annotated joints are skipped and counted."
)


@dataclass
class MpiiPerson:
    """One annotated person, in 0-based px (module docstring)."""

    key: str
    image: str | None  # file name under the image root; None when unknown
    joints: np.ndarray  # (16, 2) px, (0, 0) where not annotated
    annotated: np.ndarray  # (16,) bool
    center: np.ndarray | None = None  # (2,) px
    scale: float | None = None  # box side / 200 px
    head_box: np.ndarray | None = None  # (4,) px x1, y1, x2, y2
    problem: str | None = None  # a quarantine reason found while parsing

    @property
    def head_size(self) -> float:
        """0.6 x the head-box diagonal, px (NaN without a head box)."""
        if self.head_box is None:
            return float("nan")
        x1, y1, x2, y2 = self.head_box
        return 0.6 * float(np.hypot(x2 - x1, y2 - y1))


# --- MATLAB struct access (after squeeze_me) --------------------------------------------------


def _items(value: Any) -> list[Any]:
    """A squeezed MATLAB struct array or cell as a list: empty -> [], one struct -> [it]."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel()) if value.dtype == object else ([] if value.size == 0 else [value])
    return [value]


def _field(struct: Any, name: str) -> Any:
    """A struct field, or None when absent or empty."""
    value = getattr(struct, name, None)
    if isinstance(value, np.ndarray) and value.size == 0:
        return None
    return value


def _number(value: Any) -> float | None:
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype.kind not in "iufb" or array.size != 1:
        return None
    return float(array.ravel()[0])


def _image_name(entry: Any) -> str | None:
    image = _field(entry, "image")
    name = _field(image, "name") if image is not None else None
    return str(name) if isinstance(name, str | np.str_) and str(name) else None


def _parse_rect(rect: Any, key: str, image: str | None) -> MpiiPerson:
    joints, annotated = np.zeros((_J, 2)), np.zeros(_J, dtype=bool)
    problem = None
    annopoints = _field(rect, "annopoints")
    for point in _items(_field(annopoints, "point") if annopoints is not None else None):
        jid, x, y = _number(_field(point, "id")), _number(_field(point, "x")), _number(_field(point, "y"))
        if jid is None or x is None or y is None:
            continue
        if jid != int(jid) or not 0 <= jid < _J:
            problem = f"{common.BAD_ANNOTATION}: joint id {jid:g} outside 0..{_J - 1}"
            continue
        if annotated[int(jid)]:
            problem = f"{common.BAD_ANNOTATION}: joint id {int(jid)} given twice"
        joints[int(jid)] = (x - 1.0, y - 1.0)
        annotated[int(jid)] = True
    corners = [_number(_field(rect, name)) for name in ("x1", "y1", "x2", "y2")]
    head_box = None if any(c is None for c in corners) else np.asarray(corners, np.float64) - 1.0
    objpos, scale = _field(rect, "objpos"), _number(_field(rect, "scale"))
    center = None
    if objpos is not None:
        cx, cy = _number(_field(objpos, "x")), _number(_field(objpos, "y"))
        center = None if cx is None or cy is None else np.array([cx - 1.0, cy - 1.0])
    return MpiiPerson(key, image, joints, annotated, center, scale, head_box, problem)


@common.cached_by_file(maxsize=4)
def _loadmat(path: str) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (ValueError, TypeError, NotImplementedError, OSError) as err:  # scipy's words lack the file
        raise ValueError(
            f"mpii: {path}: not a readable MATLAB file ({err}); expected {ACCEPTED_FORMATS}"
        ) from err


def release_image_names(path: str | Path) -> list[str | None]:
    """The full release's image names, in annolist order (index i = RELEASE image i + 1)."""
    mat = _loadmat(str(path))
    if "RELEASE" not in mat:
        raise ValueError(f"mpii: {path} is not the full release (no RELEASE variable)")
    return [_image_name(entry) for entry in _items(mat["RELEASE"].annolist)]


def parse_release(path: str | Path, exclude: Collection[tuple[int, int]] = ()) -> list[MpiiPerson]:
    """The annotated people of the training images of the full release, minus ``exclude``
    ((image, person) 1-based pairs)."""
    release = _loadmat(str(path))["RELEASE"]
    exclude = set(exclude)
    annolist = _items(release.annolist)
    img_train = np.asarray(release.img_train).ravel()
    people = []
    for i, entry in enumerate(annolist):
        if img_train[i] != 1:
            continue
        name = _image_name(entry)
        for j, rect in enumerate(_items(_field(entry, "annorect"))):
            if _field(rect, "annopoints") is None or (i + 1, j + 1) in exclude:
                continue
            people.append(_parse_rect(rect, f"{i + 1:05d}_{j + 1:02d}", name))
    return people


def list_indices(path: str | Path) -> list[tuple[int, int]] | None:
    """(RELEASE image, person) 1-based index pairs of a per-person list, or None without them."""
    mat = _loadmat(str(path))
    if "RELEASE_img_index" not in mat or "RELEASE_person_index" not in mat:
        return None
    imgs = np.atleast_1d(mat["RELEASE_img_index"]).ravel()
    persons = np.atleast_1d(mat["RELEASE_person_index"]).ravel()
    return [(int(a), int(b)) for a, b in zip(imgs, persons, strict=True)]


def parse_list(
    path: str | Path, release_names: list[str | None] | None = None, names: list[str | None] | None = None
) -> list[MpiiPerson]:
    """Every person of a per-person list file (module docstring), image names resolved from the
    entries, else ``release_names`` through RELEASE_img_index, else ``names`` (one per entry)."""
    mat = _loadmat(str(path))
    if "annolist" not in mat:
        raise ValueError(f"mpii: {path} has neither RELEASE nor annolist")
    annolist = _items(mat["annolist"])
    indices = list_indices(path)
    if indices is not None and len(indices) != len(annolist):
        indices = None  # not one person per entry: the indices cannot be matched
    if names is not None and len(names) != len(annolist):
        raise ValueError(f"mpii: image_names lists {len(names)} names, {path} has {len(annolist)} entries")
    people = []
    for n, entry in enumerate(annolist):
        name = _image_name(entry)
        if name is None and indices is not None and release_names is not None:
            img = indices[n][0]
            name = release_names[img - 1] if 1 <= img <= len(release_names) else None
        if name is None and names is not None:
            name = names[n]
        rects = _items(_field(entry, "annorect"))
        for j, rect in enumerate(rects):
            key = (
                f"{indices[n][0]:05d}_{indices[n][1]:02d}"
                if indices and len(rects) == 1
                else f"e{n:05d}_{j + 1:02d}"
            )
            people.append(_parse_rect(rect, key, name))
    return people


def parse_json(path: str | Path) -> list[MpiiPerson]:
    """People of an HRNet/mmpose MPII JSON (module docstring), converted to 0-based px."""
    try:
        with open(path) as f:
            rows = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"mpii: {path}: not valid JSON ({err}); expected {ACCEPTED_FORMATS}") from err
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        found = f"a JSON object with keys {sorted(rows)[:6]}" if isinstance(rows, dict) else "a JSON list"
        raise ValueError(
            f"mpii: {path} is {found}, not a list of people {{image, joints, joints_vis, center, scale}}; "
            f"expected {ACCEPTED_FORMATS}"
        )
    people = []
    for n, row in enumerate(rows):
        joints = np.asarray(row.get("joints", []), np.float64)
        vis = np.asarray(row.get("joints_vis", []), np.float64)
        key, image = f"{n:05d}", row.get("image") or None
        if joints.shape != (_J, 2) or vis.shape != (_J,):
            shapes = f"joints {joints.shape}, joints_vis {vis.shape}"
            problem = f"{common.WRONG_JOINT_COUNT}: {shapes}, expected ({_J}, 2) and ({_J},)"
            people.append(MpiiPerson(key, image, np.zeros((_J, 2)), np.zeros(_J, bool), problem=problem))
            continue
        annotated = vis > 0
        joints = np.where(annotated[:, None], joints - 1.0, 0.0)
        center = np.asarray(row.get("center", [-1, -1]), np.float64)
        scale = _number(row.get("scale"))
        center = None if center.shape != (2,) or np.all(center == -1) else center - 1.0
        people.append(MpiiPerson(key, image, joints, annotated, center, scale))
    return people


_H5_REQUIRED = ("imgname", "part", "center", "scale")
#: Upper neck and head top: the nominal head box of an .h5 row is centred between them.
_HEAD_JOINTS = np.array([skeleton.JOINT_INDEX["upper_neck"], skeleton.JOINT_INDEX["head_top"]])


def _h5_image_names(values: np.ndarray, path: str | Path) -> list[str]:
    """``imgname`` as strings: bytes or str per row, or (N, L) character codes (NUL-padded)."""
    values = np.asarray(values)
    if values.ndim == 2 and values.dtype.kind in "iu":
        values = np.ascontiguousarray(values.astype(np.uint8)).view(f"S{values.shape[1]}").ravel()
    if values.ndim != 1:
        raise ValueError(f"mpii: {path}: imgname has shape {values.shape}, expected (N,) names")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _h5_array(data: dict[str, np.ndarray], name: str, shape: tuple[int, ...], path: str | Path) -> np.ndarray:
    """A dataset as float64 of exactly ``shape``, else ValueError naming the file and the field."""
    array = np.asarray(data[name])
    if array.shape != shape or array.dtype.kind not in "iufb":
        raise ValueError(
            f"mpii: {path}: dataset {name} is {array.dtype} {array.shape}, expected numbers of shape {shape}"
        )
    return array.astype(np.float64)


def parse_h5(path: str | Path) -> list[MpiiPerson]:
    """People of a pose-hg-train ``train.h5`` / ``valid.h5`` (module docstring), in 0-based px.

    Raises ValueError naming the file and the dataset when a required dataset is absent or has
    another shape than (N,), (N, 16, 2), (N, 2).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in _H5_REQUIRED if name not in f]
            if missing:
                raise ValueError(
                    f"mpii: {path} is HDF5 but lacks the dataset(s) {', '.join(missing)} "
                    f"(it holds {', '.join(sorted(f))}); expected {ACCEPTED_FORMATS}"
                )
            wanted = [n for n in (*_H5_REQUIRED, "normalize") if n in f]
            not_arrays = [n for n in wanted if not isinstance(f[n], h5py.Dataset)]
            if not_arrays:
                raise ValueError(f"mpii: {path}: {', '.join(not_arrays)} is a group, not an array")
            data = {name: f[name][()] for name in (*_H5_REQUIRED, "normalize") if name in f}
    except OSError as err:
        raise ValueError(f"mpii: {path}: cannot be read as HDF5 ({err})") from err
    names = _h5_image_names(data["imgname"], path)
    n = len(names)
    part = _h5_array(data, "part", (n, _J, 2), path)
    center = _h5_array(data, "center", (n, 2), path)
    scale = _h5_array(data, "scale", (n,), path)
    normalize = _h5_array(data, "normalize", (n,), path) if "normalize" in data else np.full(n, np.nan)

    annotated = np.all(np.isfinite(part), axis=-1) & np.any(part != 0, axis=-1)
    joints = np.where(annotated[..., None], part - 1.0, 0.0)
    has_center = np.all(np.isfinite(center), axis=-1) & np.any(center != -1, axis=-1)
    center = center - 1.0
    has_scale = np.isfinite(scale) & (scale > 0)
    # The nominal head box: centred on the annotated head joints, else on the person's centre.
    head = annotated[:, _HEAD_JOINTS]
    head_sum = np.where(head[..., None], joints[:, _HEAD_JOINTS], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        head_centre = np.where(head.any(axis=1)[:, None], head_sum / head.sum(axis=1)[:, None], center)
    half_side = normalize / (0.6 * np.sqrt(2.0)) / 2.0
    head_box = np.concatenate([head_centre - half_side[:, None], head_centre + half_side[:, None]], axis=1)
    has_head = np.all(np.isfinite(head_box), axis=1) & (normalize > 0)
    return [
        MpiiPerson(
            key=f"{row:05d}",
            image=names[row] or None,
            joints=joints[row],
            annotated=annotated[row],
            center=center[row] if has_center[row] else None,
            scale=float(scale[row]) if has_scale[row] else None,
            head_box=head_box[row] if has_head[row] else None,
        )
        for row in range(n)
    ]


def _read_names(path: Path) -> list[str | None]:
    if path.suffix == ".json":
        try:
            with open(path) as f:
                rows = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"mpii: {path}: not valid JSON ({err})") from None
        if not isinstance(rows, list):
            raise ValueError(f"mpii: {path}: expected a list of image names or rows")
        names = [row.get("image") if isinstance(row, dict) else row for row in rows]
    else:
        names = path.read_text().splitlines()
    return [(str(n).strip() or None) if n is not None else None for n in names]


# --- tasks ------------------------------------------------------------------------------------


#: What ``common.sniff_format`` finds -> the layout that reads it.
_LAYOUT_OF_CONTENT = {"mat": "mat", "hdf5": "h5", "json": "json"}
_CONTENT_NAMES = {"mat": "a MATLAB .mat", "h5": "HDF5", "json": "JSON"}


def annotation_layout(path: str | Path) -> str:
    """The layout that reads ``path`` ("mat", "h5" or "json"), from its content.

    Raises ValueError naming the file, what it starts with and the accepted formats otherwise
    (a MATLAB v7.3 file included: MPII's structs are read from v5-v7.2 files).
    """
    found = common.sniff_format(path)
    if found in _LAYOUT_OF_CONTENT:
        return _LAYOUT_OF_CONTENT[found]
    if found == "mat73":
        what = "a MATLAB v7.3 (HDF5) .mat, which this reader does not read (save it with -v7)"
    else:
        what = f"not an MPII annotation format ({common.describe_start(path)})"
    raise ValueError(f"mpii: {path} is {what}; expected {ACCEPTED_FORMATS}")


def _default_candidates(split: str, layout: str) -> tuple[str, ...]:
    """The default annotation files of a split, in the order they are looked for."""
    by_layout = {
        "mat": RELEASE_FILES if split == "train" else VAL_LIST_FILES,
        "json": JSON_FILES[split],
        "h5": H5_FILES[split],
    }
    return tuple(name for kind in LAYOUTS if layout in ("auto", kind) for name in by_layout[kind])


def _people_source(raw_root: str, split: str, options: dict[str, Any]) -> dict[str, Any]:
    """Which files to read for this split (resolved paths as strings, JSON-like)."""
    root = Path(raw_root)
    layout = options.get("layout", "auto")
    annotation = options.get("annotation")
    if split not in ("train", "val"):
        raise ValueError(f"mpii: unknown split {split!r} (train, val; the test labels are not public)")
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"mpii: unknown layout {layout!r} (auto, {', '.join(LAYOUTS)})")
    if annotation is not None:
        path = common.resolve(root, annotation)
        if not path.is_file():
            raise FileNotFoundError(f"mpii: annotation {path} not found")
    else:
        candidates = _default_candidates(split, layout)
        path = common.first_existing(root, candidates)
        if path is None:
            raise FileNotFoundError(
                f"mpii: no {split} annotation in {raw_root} (tried {', '.join(candidates)}); give annotation="
            )
    found = annotation_layout(path)
    if layout not in ("auto", found):
        raise ValueError(
            f"mpii: {path} holds {_CONTENT_NAMES[found]}, not the {layout} layout asked for; "
            f"drop layout= to read it as {found}"
        )
    layout = found
    source: dict[str, Any] = {
        "layout": layout,
        "annotation": str(path),
        "release": None,
        "exclude_from": None,
    }
    if layout == "mat" and "RELEASE" in _loadmat(str(path)):
        if split == "val":
            raise ValueError(f"mpii: {path} is the full release; the validation people come from a list file")
        if common.bool_option(options.get("exclude_val", True)):
            val = options.get("val_annotation")
            val_path = common.resolve(root, val) if val else common.first_existing(root, VAL_LIST_FILES)
            source["exclude_from"] = str(val_path) if val_path is not None and val_path.exists() else None
    elif layout == "mat":
        release = options.get("release")
        release_path = (
            common.resolve(root, release) if release else common.first_existing(root, RELEASE_FILES)
        )
        source["release"] = str(release_path) if release_path is not None and release_path.exists() else None
    names = options.get("image_names")
    source["image_names"] = str(common.resolve(root, names)) if names else None
    return source


_SOURCE_FILES = ("annotation", "release", "exclude_from", "image_names")


def _people(source: dict[str, Any]) -> list[MpiiPerson]:
    """The people a source (``_people_source``) names, parsed once per process and file version."""
    files = tuple(source[k] for k in _SOURCE_FILES)
    return _parse_people(source["layout"], files, common.file_stamp(*files))


@functools.lru_cache(maxsize=4)
def _parse_people(layout: str, files: tuple[str | None, ...], _stamps: tuple) -> list[MpiiPerson]:
    annotation, release, exclude_from, image_names = files
    if layout == "json":
        return parse_json(annotation)
    if layout == "h5":
        return parse_h5(annotation)
    if "RELEASE" in _loadmat(annotation):
        exclude = set(list_indices(exclude_from) or []) if exclude_from else set()
        return parse_release(annotation, exclude)
    release_names = release_image_names(release) if release else None
    names = _read_names(Path(image_names)) if image_names else None
    return parse_list(annotation, release_names, names)


def load_people(raw_root: str, split: str, **options: Any) -> list[MpiiPerson]:
    """All people of a split, as ``list_tasks`` would read them (no image loading)."""
    return _people(_people_source(raw_root, split, options))


def list_tasks(
    raw_root: str,
    split: str,
    layout: str = "auto",
    annotation: str | None = None,
    release: str | None = None,
    val_annotation: str | None = None,
    exclude_val: bool = True,
    image_names: str | None = None,
    images: str | None = None,
    min_joints: int = DEFAULT_MIN_JOINTS,
    hourglass_box: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[SourceTask]:
    """Chunks of ``chunk_size`` people in annotation order (module docstring).

    Raises FileNotFoundError or ValueError when the annotation cannot be found or read for the split.
    """
    options = {
        "layout": layout,
        "annotation": annotation,
        "release": release,
        "val_annotation": val_annotation,
        "exclude_val": exclude_val,
        "image_names": image_names,
    }
    source = _people_source(raw_root, split, options)
    people = _people(source)
    root = Path(raw_root)
    image_root = common.image_root(root, images)
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"mpii: chunk_size must be >= 1, got {chunk_size}")
    width = len(str(len(people)))
    tasks = []
    for start in range(0, len(people), chunk_size):
        stop = min(start + chunk_size, len(people))
        payload = {
            **source,
            "images": str(image_root),
            "start": start,
            "stop": stop,
            "min_joints": int(min_joints),
            "hourglass_box": common.bool_option(hourglass_box),
        }
        tasks.append(SourceTask(DATASET, split, f"{start:0{width}d}-{stop:0{width}d}", raw_root, payload))
    return tasks


def person_box(person: MpiiPerson, hourglass_box: bool = False) -> tuple[np.ndarray, float]:
    """The person's square box: (centre (2,) px, side px) (module docstring)."""
    if person.center is not None and person.scale is not None and person.scale > 0:
        center, side = common.box_from_center_scale(person.center, person.scale)
        if hourglass_box:
            center = center + np.array([0.0, 15.0 * person.scale])
            side = side * 1.25
        return center, float(side)
    center, side = common.box_from_joints(person.joints, person.annotated)
    return center, float(side)


def read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """The people of one chunk, in annotation order."""
    p = task.payload
    people = _people(p)
    for person in people[p["start"] : p["stop"]]:
        source = person.image or ""
        if person.problem is not None:
            yield Quarantined(source, person.key, person.problem)
            continue
        n = int(person.annotated.sum())
        if n < p["min_joints"]:
            yield Quarantined(source, person.key, f"{common.TOO_FEW_JOINTS}: {n} < {p['min_joints']}")
            continue
        if person.image is None:
            reason = (
                f"{common.NO_IMAGE_NAME}: the annotation gives none; give the full release's annotation "
                f"(-O release=FILE; looked for as {' or '.join(RELEASE_FILES)} in the raw folder) or a list "
                "of names, one line per annotation entry (-O image_names=FILE)"
            )
            yield Quarantined(source, person.key, reason)
            continue
        path = Path(p["images"]) / person.image
        source = common.relative_to_root(path, task.raw_root)
        image, reason = common.read_image(path, source)
        if image is None:
            yield Quarantined(source, person.key, reason)
            continue
        center, side = person_box(person, p["hourglass_box"])
        yield PersonSample(
            image=image,
            joints_2d=person.joints.copy(),
            visible=person.annotated.copy(),
            center=center,
            box_size=side,
            source_path=source,
            key=person.key,
            head_box=None if person.head_box is None else person.head_box.copy(),
        )
