"""Evaluation on shard sets: predictions, the paper's metrics, and the mean-pose baseline.

Runs without Ray (in-memory, for validation inside training and for ``make demo``); the batch
inference with Ray Data of the search-and-evaluation issue builds on ``predict``/``score``.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pose3d import decode, geometry, metrics, skeleton
from pose3d.data.augment import identity_augmentation, make_batch
from pose3d.data.schema import CROP_MARGIN

#: Columns evaluation reads from shards.
EVAL_COLUMNS = (
    "image_jpeg", "crop_size", "joints_2d", "visible", "joints_3d", "has_3d", "head_size",
    "dataset", "subject", "action", "group",
)  # fmt: skip
#: 2D PCK normalizer where a row has no head size: this fraction of the person box (about a head).
PCK_BOX_FRACTION = 0.1


def load_rows(path: str, columns: tuple[str, ...], max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Shard rows in memory; with ``max_rows``, that many spread evenly over the whole set (so a
    small validation set still covers every subject and action)."""
    from pose3d.data.pipeline import load_shards_numpy

    rows = load_shards_numpy(path, columns)
    n = len(rows[columns[0]])
    if max_rows and n > max_rows:
        keep = np.linspace(0, n - 1, max_rows).round().astype(int)
        rows = {k: v[keep] for k, v in rows.items()}
    return rows


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    autocast: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the network. images (N, 3, S, S) uint8 RGB. Returns 2D joints (N, 16, 2) output px from
    the last stack's heatmaps and normalized depth (N, 16)."""
    was_training = model.training
    model.eval()
    joints, depth = [], []
    try:
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i : i + batch_size]).to(device).float().div_(255.0)
            with autocast or nullcontext():
                out = model(x)
            j2d, _ = decode.heatmaps_to_joints(out.heatmaps[-1].float().cpu().numpy())
            joints.append(j2d)
            depth.append(out.depth.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(joints), np.concatenate(depth)


@dataclass
class Scores:
    """Per-row scores; NaN where a row lacks the labels a score needs."""

    mpjpe: np.ndarray  # (N,) mm, the paper's protocol (canonical rescale)
    pa_mpjpe: np.ndarray  # (N,) mm
    pck3d: np.ndarray  # (N,) fraction of 14 joints within 150 mm, scale known
    auc3d: np.ndarray  # (N,) area under 3DPCK over 0..150 mm
    pck2d: np.ndarray  # (N,) fraction of visible joints within 0.5 head (or PCK_BOX_FRACTION box)

    def summary(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for k, v in vars(self).items()
        }


def _known_scale(pred_mm: np.ndarray, gt_mm: np.ndarray) -> np.ndarray:
    """Scale each prediction to its ground truth's bone-length sum ("global scale known")."""
    return geometry.rescale_to_canonical(pred_mm, 1.0) * skeleton.bone_lengths(gt_mm).sum(-1)[:, None, None]


def score(
    joints_out: np.ndarray,
    depth: np.ndarray,
    batch: dict[str, np.ndarray],
    head_size_out: np.ndarray,
    output_size: int,
) -> Scores:
    """Score predictions against a ``make_batch`` batch (identity augmentation).

    joints_out (N, 16, 2) and depth (N, 16) as ``predict`` returns; head_size_out (N,) output px
    (NaN where unknown). 3D scores on rows with 3D labels, 2D PCK on every row.
    """
    n = len(joints_out)
    has_3d = batch["has_3d"].astype(bool)
    nan = np.full(n, np.nan)
    mpjpe, pa, pck, auc = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    if has_3d.any():
        gt = batch["joints_3d"][has_3d].astype(np.float64)
        pred_px = decode.to_3d_px(joints_out[has_3d], depth[has_3d], output_size)
        mpjpe[has_3d] = metrics.paper_mpjpe(pred_px, gt)
        pred_mm = decode.to_3d_mm(joints_out[has_3d], depth[has_3d], output_size)
        pa[has_3d] = metrics.pa_mpjpe(pred_mm, gt)
        known = _known_scale(pred_mm, gt)
        pck[has_3d] = metrics.pck3d(known, gt)
        auc[has_3d] = metrics.auc3d(known, gt)
    norm = np.where(np.isfinite(head_size_out), head_size_out, PCK_BOX_FRACTION * output_size)
    dist = np.linalg.norm(joints_out - batch["joints_out"], axis=-1)
    vis = batch["visible"].astype(bool)
    correct = (dist <= 0.5 * norm[:, None]) & vis
    with np.errstate(invalid="ignore"):
        pck2d = np.where(vis.any(-1), correct.sum(-1) / vis.sum(-1), np.nan)
    return Scores(mpjpe, pa, pck, auc, pck2d)


def head_size_in_output(rows: dict[str, np.ndarray], output_size: int) -> np.ndarray:
    """Stored head sizes (crop px) -> output px at identity augmentation."""
    crop = np.asarray(rows["crop_size"], np.float64)
    return np.asarray(rows["head_size"], np.float64) * output_size * CROP_MARGIN / crop


class Validator:
    """A fixed held-out set in memory (rank 0 of training): preprocessed once, scored on demand."""

    def __init__(self, path: str, max_rows: int, input_size: int, output_size: int) -> None:
        rows = load_rows(path, EVAL_COLUMNS, max_rows or None)
        n = len(rows["image_jpeg"])
        if n == 0:
            raise ValueError(f"{path}: no validation rows")
        self.output_size = output_size
        self.batch = make_batch(rows, input_size, output_size, identity_augmentation(n))
        self.head = head_size_in_output(rows, output_size)

    def __call__(
        self, model: torch.nn.Module, device: torch.device, autocast: Any = None
    ) -> dict[str, float]:
        joints, depth = predict(model, self.batch["image"], device, autocast=autocast)
        s = score(joints, depth, self.batch, self.head, self.output_size)
        return {"val_mpjpe": float(np.nanmean(s.mpjpe)), "val_pa_mpjpe": float(np.nanmean(s.pa_mpjpe)),
                "val_pck2d": float(np.nanmean(s.pck2d))}  # fmt: skip


def mean_pose(path: str, max_rows: int = 2000) -> np.ndarray:
    """The mean root-aligned 3D pose (16, 3) mm of a shard set's 3D rows (the baseline predictor)."""
    rows = load_rows(path, ("joints_3d", "has_3d"), max_rows)
    j3d = np.asarray(rows["joints_3d"], np.float64).reshape(-1, skeleton.NUM_JOINTS, 3)
    j3d = j3d[np.asarray(rows["has_3d"], bool)]
    if not len(j3d):
        raise ValueError(f"{path}: no rows with 3D labels for a mean pose")
    return geometry.root_align(j3d).mean(0)


def baseline_scores(mean: np.ndarray, batch: dict[str, np.ndarray]) -> dict[str, float]:
    """The mean-pose baseline: the same pose predicted for every row, scored like the model."""
    has_3d = batch["has_3d"].astype(bool)
    gt = batch["joints_3d"][has_3d].astype(np.float64)
    pred = np.broadcast_to(mean, gt.shape)
    known = _known_scale(pred, gt)
    return {
        "mpjpe": float(metrics.paper_mpjpe(pred, gt).mean()),
        "pa_mpjpe": float(metrics.pa_mpjpe(pred, gt).mean()),
        "pck3d": float(metrics.pck3d(known, gt).mean()),
        "auc3d": float(metrics.auc3d(known, gt).mean()),
    }


def evaluate_checkpoint(
    checkpoint: str,
    data: str,
    *,
    max_rows: int | None = None,
    baseline_from: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a checkpoint on a shard set (in memory); with ``baseline_from`` (3D training shards),
    also the mean-pose baseline. Returns {"model": {...}, "baseline": {...}, "rows": N, "groups"}."""
    from pose3d.train.checkpoint import load_model

    model = load_model(checkpoint, map_location=device)
    cfg = model.config
    rows = load_rows(data, EVAL_COLUMNS, max_rows)
    n = len(rows["image_jpeg"])
    batch = make_batch(rows, cfg.input_size, cfg.output_size, identity_augmentation(n))
    joints, depth = predict(model, batch["image"], device)
    s = score(joints, depth, batch, head_size_in_output(rows, cfg.output_size), cfg.output_size)
    result: dict[str, Any] = {"rows": n, "model": s.summary()}
    groups = np.asarray(rows["group"]).astype(str)
    if (groups != "").any():
        result["groups"] = {
            g: Scores(*(v[groups == g] for v in vars(s).values())).summary()
            for g in sorted(set(groups) - {""})
        }
    if baseline_from:
        result["baseline"] = baseline_scores(mean_pose(baseline_from), batch)
    return result
