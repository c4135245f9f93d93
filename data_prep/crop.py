"""One person sample -> one shard row: validate, crop, JPEG-encode (pure numpy/OpenCV, no Ray).

``make_row`` either returns the row's column values or the reason the sample must be quarantined.
Reasons start with a short category followed by ``": "`` and the details; the writer counts
quarantined records by that category (readers' ``Quarantined.reason`` follows the same rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from data_prep.records import Camera, PersonSample, SourceTask
from pose3d import geometry, schema, skeleton
from pose3d.image import encode_jpeg, warp_crop

#: Quarantine categories the writer itself produces.
BAD_IMAGE = "bad image"
WRONG_JOINT_COUNT = "wrong joint count"
NON_FINITE_LABEL = "non-finite label"
BAD_BOX = "bad box"
OUTSIDE_IMAGE = "person outside the image"
DUPLICATE_KEY = "duplicate key"
TASK_FAILED = "task failed"

_J = skeleton.NUM_JOINTS


@dataclass(frozen=True)
class CropConfig:
    """How rows are cut and encoded. Part of the output's identity: a re-run must use the same."""

    crop_size: int = schema.DEFAULT_CROP_SIZE
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be at least 8 px, got {self.crop_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


def reason_category(reason: str) -> str:
    """The counting key of a quarantine reason: the text before the first ``": "``."""
    return reason.split(": ", 1)[0].strip()


def validate_sample(sample: PersonSample) -> str | None:
    """The quarantine reason for a sample that cannot become a row, or None when it is fine."""
    image = sample.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        return f"{BAD_IMAGE}: expected (H, W, 3) uint8, got {desc}"
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        return f"{BAD_IMAGE}: empty image {w}x{h}"
    joints_2d, visible = np.asarray(sample.joints_2d), np.asarray(sample.visible)
    if joints_2d.shape != (_J, 2) or visible.shape != (_J,):
        return (
            f"{WRONG_JOINT_COUNT}: joints_2d {joints_2d.shape}, visible {visible.shape}, expected ({_J}, 2)"
        )
    if sample.joints_3d is not None and np.shape(sample.joints_3d) != (_J, 3):
        return f"{WRONG_JOINT_COUNT}: joints_3d {np.shape(sample.joints_3d)}, expected ({_J}, 3)"
    center = np.asarray(sample.center, np.float64)
    if center.shape != (2,) or not np.all(np.isfinite(center)):
        return f"{BAD_BOX}: centre {sample.center!r}"
    if not (np.isfinite(sample.box_size) and sample.box_size > 0):
        return f"{BAD_BOX}: box size {sample.box_size!r}"
    visible = visible.astype(bool)
    bad_2d = visible & ~np.all(np.isfinite(joints_2d), axis=-1)
    if bad_2d.any():
        names = ", ".join(skeleton.JOINT_NAMES[i] for i in np.flatnonzero(bad_2d))
        return f"{NON_FINITE_LABEL}: joints_2d of visible {names}"
    if sample.joints_3d is not None and not np.all(np.isfinite(sample.joints_3d)):
        names = ", ".join(
            skeleton.JOINT_NAMES[i] for i in np.flatnonzero(~np.all(np.isfinite(sample.joints_3d), axis=-1))
        )
        return f"{NON_FINITE_LABEL}: joints_3d of {names}"
    if sample.head_box is not None:
        head = np.asarray(sample.head_box, np.float64)
        all_nan = head.shape == (4,) and np.all(np.isnan(head))
        if not all_nan and (head.shape != (4,) or not np.all(np.isfinite(head))):
            return f"{NON_FINITE_LABEL}: head_box {sample.head_box!r}"
    if not _inside(center[None], w, h)[0]:
        return f"{OUTSIDE_IMAGE}: box centre ({center[0]:.1f}, {center[1]:.1f}) outside the {w}x{h} image"
    if not np.any(visible & _inside(joints_2d, w, h)):
        return f"{OUTSIDE_IMAGE}: no visible joint inside the {w}x{h} image"
    return None


def _inside(xy: np.ndarray, w: int, h: int) -> np.ndarray:
    """(N, 2) px -> (N,) inside the image [-0.5, w - 0.5] x [-0.5, h - 0.5] (NaN -> False)."""
    with np.errstate(invalid="ignore"):
        return (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)


def make_row(sample: PersonSample, task: SourceTask, config: CropConfig) -> dict[str, Any] | str:
    """The shard row (column -> value; fixed-size columns as arrays of their row shape) of one valid
    sample, or the quarantine reason (str).

    Crop: the square of side ``box_size * schema.CROP_MARGIN`` around ``center`` becomes ``crop_size`` px.
    joints_2d are mapped into the crop; ``visible`` becomes "annotated and inside the source
    image"; a non-visible joint without coordinates gets (0, 0) so downstream maths stays finite.
    """
    reason = validate_sample(sample)
    if reason is not None:
        return reason
    h, w = sample.image.shape[:2]
    affine = geometry.crop_affine(
        np.asarray(sample.center, np.float64), sample.box_size * schema.CROP_MARGIN, config.crop_size
    )
    scale = config.crop_size / (sample.box_size * schema.CROP_MARGIN)  # crop px per source px
    joints_src = np.asarray(sample.joints_2d, np.float64)
    finite = np.all(np.isfinite(joints_src), axis=-1)
    visible = np.asarray(sample.visible, bool) & _inside(joints_src, w, h)
    joints_crop = np.where(
        finite[:, None], geometry.apply_affine(np.where(finite[:, None], joints_src, 0.0), affine), 0.0
    )
    crop = warp_crop(sample.image, affine, config.crop_size)

    head_box = np.full(4, np.nan) if sample.head_box is None else np.asarray(sample.head_box, np.float64)
    head_size = 0.6 * np.hypot(head_box[2] - head_box[0], head_box[3] - head_box[1]) * scale
    has_3d = sample.joints_3d is not None
    camera = sample.camera if sample.camera is not None else Camera.unknown()
    return {
        "row_id": f"{task.dataset}/{task.split}/{task.task_id}/{sample.key}",
        "image_jpeg": encode_jpeg(crop, config.jpeg_quality),
        "crop_size": config.crop_size,
        "joints_2d": joints_crop,
        "visible": visible,
        "joints_3d": np.asarray(sample.joints_3d, np.float64) if has_3d else np.full((_J, 3), np.nan),
        "has_3d": has_3d,
        "crop_to_image": geometry.invert_affine(affine),
        "camera_f": np.asarray(camera.f, np.float64),
        "camera_c": np.asarray(camera.c, np.float64),
        "camera_k": np.asarray(camera.k, np.float64),
        "camera_p": np.asarray(camera.p, np.float64),
        "head_size": float(head_size),
        "head_box": head_box,
        "dataset": task.dataset,
        "split": task.split,
        "subject": sample.subject,
        "action": sample.action,
        "subaction": sample.subaction,
        "camera": sample.camera_id,
        "group": sample.group,
        "frame": int(sample.frame),
        "source_path": sample.source_path,
        "annotation_3d": sample.annotation_3d,
    }


def rows_to_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Row dicts -> column dict for ``schema.rows_to_table`` (fixed-size columns stacked (N, ...))."""
    columns: dict[str, Any] = {}
    for name in schema.COLUMNS:
        values = [row[name] for row in rows]
        columns[name] = np.stack(values) if isinstance(values[0], np.ndarray) else values
    return columns
