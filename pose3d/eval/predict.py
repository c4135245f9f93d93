"""Running the network for evaluation: shard rows -> network input and labels (``prepare_rows``) ->
a prediction set (``add_predictions``), in memory (``predict_in_memory``) or inside Ray Data
(``pose3d.eval.batch``, the same functions in its tasks and actors); and one image -> its 2D and 3D
pose (``predict_image``), or the people in boxes of one image, their crops batched
(``predict_people``; ``pose3d.eval.photos`` runs it over many images for ``pose3d predict``).

A prediction set is a dict of per-row numpy arrays: ``prepare_rows``'s labels plus pred_joints
(n, 16, 2) output px and pred_depth (n, 16) normalized depth. ``pose3d.eval.score`` scores it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pose3d import decode, geometry, skeleton
from pose3d.data.augment import identity_augmentation, make_batch
from pose3d.data.shards import load_shards_numpy
from pose3d.image import warp_crop
from pose3d.schema import CROP_MARGIN

log = logging.getLogger("pose3d.eval")

#: Columns evaluation reads from shards.
EVAL_COLUMNS = (
    "image_jpeg", "crop_size", "joints_2d", "visible", "joints_3d", "has_3d", "head_size",
    "dataset", "subject", "action", "group", "row_id", "annotation_3d",
)  # fmt: skip
#: String columns a prediction set carries through from the shards, one entry per row.
LABEL_COLUMNS = ("row_id", "dataset", "subject", "action", "group", "annotation_3d")


# --- shard rows ----------------------------------------------------------------------------------


def select_rows(n: int, max_rows: int | None) -> np.ndarray | None:
    """Indices of ``max_rows`` of ``n`` rows spread evenly (first and last included), or None for
    all of them. The one rule for every evaluation path, so they score the same rows."""
    if not max_rows or n <= max_rows:
        return None
    return np.linspace(0, n - 1, max_rows).round().astype(int)


def load_rows(
    path: str | Sequence[str], columns: tuple[str, ...] = EVAL_COLUMNS, max_rows: int | None = None
) -> dict[str, np.ndarray]:
    """Shard rows in memory; with ``max_rows``, that many spread evenly over the whole set (so a
    small validation set still covers every subject and action)."""
    rows = load_shards_numpy(path, columns)
    keep = select_rows(len(rows[columns[0]]), max_rows)
    return rows if keep is None else {k: v[keep] for k, v in rows.items()}


def head_size_in_output(rows: dict[str, np.ndarray], output_size: int) -> np.ndarray:
    """Stored head sizes (crop px) -> output px at identity augmentation (NaN where unknown)."""
    crop = np.asarray(rows["crop_size"], np.float64)
    return np.asarray(rows["head_size"], np.float64) * output_size * CROP_MARGIN / crop


def prepare_rows(rows: dict[str, Any], input_size: int, output_size: int) -> dict[str, np.ndarray]:
    """Shard rows (columns as ``load_shards_numpy`` or a Ray Data numpy batch gives them) -> the
    network input and the labels scoring needs, at identity augmentation.

    Returns image (n, 3, S, S) uint8 RGB; joints_out (n, 16, 2) float32 ground-truth output px;
    visible (n, 16) bool; has_3d (n,) bool; joints_3d (n, 16, 3) float32 camera mm (NaN without 3D);
    head_size_out (n,) float32 output px (NaN without a head box); ``LABEL_COLUMNS`` as str arrays;
    decoded (n,) bool, False for a row whose image does not decode (``drop_undecoded`` removes them).
    """
    n = len(rows["image_jpeg"])
    batch = make_batch(rows, input_size, output_size, identity_augmentation(n))
    out = {k: batch[k] for k in ("image", "joints_out", "visible", "has_3d", "joints_3d", "decoded")}
    out["head_size_out"] = head_size_in_output(rows, output_size).astype(np.float32)
    for name in LABEL_COLUMNS:
        out[name] = np.asarray(rows[name]).astype(str)
    return out


# --- the network -----------------------------------------------------------------------------------


def flip_back(heatmaps: torch.Tensor, depth: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outputs for a horizontally mirrored image -> outputs for the image itself.

    heatmaps (B, J, O, O), depth (B, J) or None. Each map is mirrored back and the left/right joints
    swapped (``skeleton.FLIP_PERMUTATION``); depth only swaps joints (a mirror keeps z). Exact in
    the pixel convention of ``geometry``: input x -> S - 1 - x is output x -> O - 1 - x.
    """
    perm = torch.as_tensor(skeleton.FLIP_PERMUTATION, device=heatmaps.device)
    back = heatmaps.flip(-1).index_select(1, perm)
    return back, None if depth is None else depth.index_select(1, perm)


@torch.no_grad()
def predict_outputs(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    autocast: Any = None,
    flip_test: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the network. images (N, 3, S, S) uint8 RGB. Returns 2D joints (N, 16, 2) float64 output px
    (quarter-pixel steps) from the last stack's heatmaps, their heatmap peak values (N, 16) float32
    (the training targets peak at 1) and normalized depth (N, 16) float32.

    ``batch_size`` images go through the network together. ``flip_test``: each image and its mirror
    go through together; the mirror's heatmaps and depths are flipped back (``flip_back``) and
    averaged with the image's before decoding."""
    was_training = model.training
    model.eval()
    joints, peaks, depth = [], [], []
    try:
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i : i + batch_size]).to(device).float().div_(255.0)
            n = len(x)
            if flip_test:
                x = torch.cat([x, x.flip(-1)])
            with autocast or nullcontext():
                out = model(x)
            maps, dep = out.heatmaps[-1].float(), out.depth.float()
            if flip_test:
                maps_back, dep_back = flip_back(maps[n:], dep[n:])
                maps, dep = (maps[:n] + maps_back) / 2, (dep[:n] + dep_back) / 2
            j2d, peak = decode.heatmaps_to_joints(maps.cpu().numpy())
            joints.append(j2d)
            peaks.append(peak.astype(np.float32))
            depth.append(dep.cpu().numpy())
    finally:
        model.train(was_training)
    if not joints:  # no images (an empty Ray Data block, an image without people)
        j = skeleton.NUM_JOINTS
        return np.zeros((0, j, 2)), np.zeros((0, j), np.float32), np.zeros((0, j), np.float32)
    return np.concatenate(joints), np.concatenate(peaks), np.concatenate(depth)


def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    autocast: Any = None,
    flip_test: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``predict_outputs`` without the peak values: 2D joints (N, 16, 2) float64 output px and
    normalized depth (N, 16) float32."""
    joints, _, depth = predict_outputs(model, images, device, batch_size, autocast, flip_test)
    return joints, depth


def add_predictions(
    model: torch.nn.Module,
    prepared: dict[str, np.ndarray],
    device: torch.device | str = "cpu",
    *,
    flip_test: bool = False,
    batch_size: int = 32,
    autocast: Any = None,
) -> dict[str, np.ndarray]:
    """``prepare_rows``'s output -> the same without the image, plus pred_joints (n, 16, 2) float32
    output px and pred_depth (n, 16) float32 normalized depth (float32 is exact for the decoded
    quarter-pixel joints)."""
    joints, depth = predict(model, prepared["image"], device, batch_size, autocast, flip_test)
    out = {k: v for k, v in prepared.items() if k != "image"}
    out["pred_joints"] = joints.astype(np.float32)
    out["pred_depth"] = depth.astype(np.float32)
    return out


def drop_undecoded(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``prepare_rows``'s output or a prediction set without the rows whose image does not decode
    (and without the ``decoded`` column); each skipped row is named in the log, so one corrupt row
    never ends an evaluation."""
    decoded = np.asarray(rows["decoded"], bool)
    kept = {k: v for k, v in rows.items() if k != "decoded"}
    if decoded.all():
        return kept
    bad = np.flatnonzero(~decoded)
    for i in bad:
        log.warning("skipped row %s (%s): its image does not decode", rows["row_id"][i], rows["dataset"][i])
    log.warning("%d of %d rows skipped: their image does not decode", len(bad), len(decoded))
    return {k: v[decoded] for k, v in kept.items()}


def concat_prediction_sets(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join prediction sets (dicts of per-row arrays with the same keys) row-wise."""
    if not parts:
        raise ValueError("no predictions to join")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def predict_in_memory(
    model: torch.nn.Module,
    path: str | Sequence[str],
    *,
    max_rows: int | None = None,
    flip_test: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    chunk_rows: int = 256,
    progress: Callable[[int, int], Any] | None = None,
) -> dict[str, np.ndarray]:
    """The prediction set of a shard set without Ray (small sets, the demo, tests): rows are decoded
    and run ``chunk_rows`` at a time so memory stays bounded. ``progress(rows_done, rows_total)`` is
    called per chunk."""
    cfg = model.config
    rows = load_rows(path, EVAL_COLUMNS, max_rows)
    n = len(rows["image_jpeg"])
    if n == 0:
        raise ValueError(f"{path}: no rows to evaluate")
    parts = []
    for start in range(0, n, chunk_rows):
        chunk = {k: v[start : start + chunk_rows] for k, v in rows.items()}
        prepared = prepare_rows(chunk, cfg.input_size, cfg.output_size)
        parts.append(add_predictions(model, prepared, device, flip_test=flip_test, batch_size=batch_size))
        if progress is not None:
            progress(min(start + chunk_rows, n), n)
    return drop_undecoded(concat_prediction_sets(parts))


# --- people in images (``pose3d predict``) -----------------------------------------------------------


#: The network sees the square of this many times a person box's longer side (about the training
#: crops' framing for a tight person box).
DEFAULT_MARGIN = 1.1


@dataclass
class ImagePrediction:
    """The pose of one person in an image.

    joints_2d (16, 2) image px, pixel centres at integers; pose_mm (16, 3) mm, root-relative camera
    axes at the canonical skeleton's scale; box (x1, y1, x2, y2) image px, corner coordinates;
    joint_scores (16,) the heatmap peak of each joint (the training targets peak at 1), or None.
    """

    joints_2d: np.ndarray
    pose_mm: np.ndarray
    box: tuple[float, float, float, float]
    joint_scores: np.ndarray | None = None


@dataclass
class PeoplePrediction:
    """The poses of K people in one image, as arrays (K may be 0).

    boxes (K, 4) x1, y1, x2, y2 image px, corner coordinates (pixel i spans [i, i + 1));
    joints_2d (K, 16, 2) image px, pixel centres at integers; joint_scores (K, 16) heatmap peaks;
    pose_mm (K, 16, 3) mm, root (pelvis) at the origin, camera axes (x right, y down, z away from
    the camera) at the canonical skeleton's scale; box_scores (K,) the detector's scores, NaN where
    a box has none.
    """

    boxes: np.ndarray
    joints_2d: np.ndarray
    joint_scores: np.ndarray
    pose_mm: np.ndarray
    box_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def person(self, k: int) -> ImagePrediction:
        """Person ``k`` as an ``ImagePrediction``."""
        box = tuple(float(v) for v in self.boxes[k])
        return ImagePrediction(self.joints_2d[k], self.pose_mm[k], box, self.joint_scores[k])  # type: ignore[arg-type]


def check_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Person boxes (K, 4) x1, y1, x2, y2 -> float64 (K, 4). Raises ValueError naming the first box
    that is not finite or has x2 <= x1 or y2 <= y1."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    bad = ~(np.isfinite(b).all(-1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
    if bad.any():
        x1, y1, x2, y2 = b[int(np.argmax(bad))]
        raise ValueError(f"box {x1:g} {y1:g} {x2:g} {y2:g}: needs finite x2 > x1 and y2 > y1")
    return b


def person_affines(boxes: np.ndarray, margin: float, input_size: int) -> np.ndarray:
    """Image px -> network input px for each box: the square of ``margin`` times the box's longer
    side around its centre. boxes (K, 4) corner coordinates. Returns (K, 2, 3)."""
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    # Corner coordinates -> pixel-centre coordinates (geometry's convention): the centre moves by -0.5.
    centre = (b[:, :2] + b[:, 2:]) / 2 - 0.5
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * margin
    return geometry.crop_affine(centre.reshape(-1, 2), side, input_size).reshape(-1, 2, 3)


def crop_people(
    image_bgr: np.ndarray, boxes: np.ndarray, margin: float, input_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The network inputs of the people in one image. image_bgr (H, W, 3) uint8 BGR; boxes (K, 4)
    image px, corner coordinates. Returns crops (K, 3, S, S) uint8 RGB and their affines (K, 2, 3)
    (image px -> input px); black outside the image."""
    affines = person_affines(boxes, margin, input_size)
    crops = np.zeros((len(affines), 3, input_size, input_size), np.uint8)
    for k, affine in enumerate(affines):  # one resampling per person (OpenCV; the math is batched)
        crops[k] = warp_crop(image_bgr, affine, input_size)[..., ::-1].transpose(2, 0, 1)
    return crops, affines


def outputs_to_image(
    joints_out: np.ndarray, depth: np.ndarray, affines: np.ndarray, stride: float, output_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Network outputs of K crops -> 2D joints in the original image and root-relative 3D in mm.

    joints_out (K, 16, 2) output px; depth (K, 16) normalized; affines (K, 2, 3) image px -> input
    px. Returns joints_2d (K, 16, 2) image px and pose_mm (K, 16, 3) (``decode.to_3d_mm``: scaled to
    the canonical bone-length sum, pelvis at the origin)."""
    joints_in = geometry.output_to_input_px(joints_out, stride)
    joints_img = geometry.apply_affine(joints_in, geometry.invert_affine(affines))
    return joints_img, decode.to_3d_mm(joints_out, depth, output_size)


def predict_people(
    model: torch.nn.Module,
    image_bgr: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
    margin: float = DEFAULT_MARGIN,
    *,
    box_scores: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    flip_test: bool = False,
    batch_size: int = 32,
    autocast: Any = None,
) -> PeoplePrediction:
    """The poses of the people in boxes (K, 4) (x1, y1, x2, y2 image px, corner coordinates; None:
    the whole image is one person) of one image (H, W, 3) uint8 BGR. All K crops go through the
    network ``batch_size`` at a time. Raises ValueError for an empty box or a non-positive margin."""
    h, w = image_bgr.shape[:2]
    b = check_boxes([[0.0, 0.0, float(w), float(h)]] if boxes is None else boxes)
    cfg = model.config
    crops, affines = crop_people(image_bgr, b, margin, cfg.input_size)
    joints_out, peaks, depth = predict_outputs(model, crops, device, batch_size, autocast, flip_test)
    joints_img, pose_mm = outputs_to_image(joints_out, depth, affines, cfg.stride, cfg.output_size)
    scores = np.full(len(b), np.nan) if box_scores is None else np.asarray(box_scores, np.float64)
    return PeoplePrediction(b, joints_img, peaks, pose_mm, scores)


def predict_image(
    model: torch.nn.Module,
    image_bgr: np.ndarray,
    box: Sequence[float] | None = None,
    margin: float = DEFAULT_MARGIN,
    *,
    device: torch.device | str = "cpu",
    flip_test: bool = False,
) -> ImagePrediction:
    """One image (H, W, 3) uint8 BGR -> the pose of one person. The network sees the square of
    ``margin`` times the longer side of ``box`` (x1, y1, x2, y2 image px, corner coordinates;
    default the whole image) around the box's centre. Raises ValueError for an empty box or a
    non-positive margin. (``predict_people`` for several people at once.)"""
    boxes = None if box is None else [list(box)]
    return predict_people(model, image_bgr, boxes, margin, device=device, flip_test=flip_test).person(0)


def image_prediction_record(
    result: ImagePrediction, image: str, margin: float, flip_test: bool
) -> dict[str, Any]:
    """One person's joints as JSON (rounded to 0.01 px and 0.1 mm) with their units."""
    record = {
        "image": image,
        "box": list(result.box),
        "margin": margin,
        "flip_test": flip_test,
        "joint_names": list(skeleton.JOINT_NAMES),
        "joints_2d_px": np.round(result.joints_2d, 2).tolist(),
        "joints_3d_mm": np.round(result.pose_mm, 1).tolist(),
        "units": {
            "joints_2d_px": "image px, pixel centres at integers",
            "joints_3d_mm": "root-relative camera axes at the canonical skeleton's scale",
        },
    }
    if result.joint_scores is not None:
        record["joint_scores"] = np.round(np.asarray(result.joint_scores, np.float64), 3).tolist()
    return record
