"""Evaluation on shard sets: predictions, the paper's metrics, and the mean-pose baseline.

Runs without Ray (in-memory, for validation inside training and for ``make demo``). ``pose3d eval``
builds on the same pieces: ``prepare_rows`` (shard rows -> network input + labels) and
``add_predictions`` (the network, optionally with the flip test) run inside Ray Data
(``pose3d.eval.batch``) or in memory (``predict_in_memory``); ``score_prediction_set`` gives per-row
scores that ``pose3d.eval.report`` aggregates into the paper's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pose3d import decode, geometry, metrics, skeleton
from pose3d.data.augment import identity_augmentation, make_batch
from pose3d.schema import CROP_MARGIN

#: Columns evaluation reads from shards.
EVAL_COLUMNS = (
    "image_jpeg", "crop_size", "joints_2d", "visible", "joints_3d", "has_3d", "head_size",
    "dataset", "subject", "action", "group", "row_id", "annotation_3d",
)  # fmt: skip
#: String columns a prediction set carries through from the shards, one entry per row.
LABEL_COLUMNS = ("row_id", "dataset", "subject", "action", "group", "annotation_3d")
#: How each dataset is scored (SPEC "Evaluation"): "h36m" per-action MPJPE tables, "mpii" PCKh per
#: joint, "3dhp" 3DPCK/AUC per group (the synthetic sets stand in for the real ones, DECISIONS 11).
DATASET_KIND: dict[str, str] = {
    "h36m": "h36m", "synthetic_lab": "h36m",
    "mpii": "mpii", "synthetic_wild": "mpii",
    "3dhp": "3dhp", "synthetic_wild_test": "3dhp",
}  # fmt: skip
#: 2D PCK normalizer where a row has no head size: this fraction of the person box (about a head).
PCK_BOX_FRACTION = 0.1


def load_rows(path: str, columns: tuple[str, ...], max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Shard rows in memory; with ``max_rows``, that many spread evenly over the whole set (so a
    small validation set still covers every subject and action)."""
    from pose3d.data.shards import load_shards_numpy

    rows = load_shards_numpy(path, columns)
    keep = select_rows(len(rows[columns[0]]), max_rows)
    return rows if keep is None else {k: v[keep] for k, v in rows.items()}


def select_rows(n: int, max_rows: int | None) -> np.ndarray | None:
    """Indices of ``max_rows`` of ``n`` rows spread evenly (first and last included), or None for
    all of them. The one rule for every evaluation path, so they score the same rows."""
    if not max_rows or n <= max_rows:
        return None
    return np.linspace(0, n - 1, max_rows).round().astype(int)


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
def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    autocast: Any = None,
    flip_test: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the network. images (N, 3, S, S) uint8 RGB. Returns 2D joints (N, 16, 2) output px from
    the last stack's heatmaps and normalized depth (N, 16).

    ``flip_test``: each image and its mirror go through the network together; the mirror's heatmaps
    and depths are flipped back (``flip_back``) and averaged with the image's before decoding."""
    was_training = model.training
    model.eval()
    joints, depth = [], []
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
            j2d, _ = decode.heatmaps_to_joints(maps.cpu().numpy())
            joints.append(j2d)
            depth.append(dep.cpu().numpy())
    finally:
        model.train(was_training)
    if not joints:  # no images (an empty Ray Data block)
        return np.zeros((0, skeleton.NUM_JOINTS, 2)), np.zeros((0, skeleton.NUM_JOINTS), np.float32)
    return np.concatenate(joints), np.concatenate(depth)


@dataclass
class Scores:
    """Per-row scores; NaN where a row lacks the labels a score needs."""

    mpjpe: np.ndarray  # (N,) mm, the paper's protocol (canonical rescale)
    pa_mpjpe: np.ndarray  # (N,) mm
    pck3d: np.ndarray  # (N,) fraction of 14 joints within 150 mm, scale known
    auc3d: np.ndarray  # (N,) area under 3DPCK over 0..150 mm
    pck2d: np.ndarray  # (N,) fraction of visible joints within 0.5 head (or PCK_BOX_FRACTION box)
    mpjpe_plain: np.ndarray  # (N,) mm, root-aligned, scale known, 16 joints as predicted

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
    shift_pelvis_hips: float | None = None,
) -> Scores:
    """Score predictions against a ``make_batch`` batch (identity augmentation).

    joints_out (N, 16, 2) and depth (N, 16) as ``predict`` returns; head_size_out (N,) output px
    (NaN where unknown). 3D scores on rows with 3D labels, 2D PCK on every row.
    MPJPE: the paper's protocol (canonical rescale, thorax from pelvis and neck) and plain (root-aligned,
    scale known, the 16 joints as predicted). 3DPCK/AUC: scale known; ``shift_pelvis_hips`` is the
    3DHP pelvis correction of ``metrics.pck3d`` (None: off).
    """
    n = len(joints_out)
    has_3d = batch["has_3d"].astype(bool)
    nan = np.full(n, np.nan)
    mpjpe, pa, pck, auc, plain = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
    if has_3d.any():
        gt = batch["joints_3d"][has_3d].astype(np.float64)
        pred_px = decode.to_3d_px(joints_out[has_3d], depth[has_3d], output_size)
        mpjpe[has_3d] = metrics.paper_mpjpe(pred_px, gt)
        pred_mm = decode.to_3d_mm(joints_out[has_3d], depth[has_3d], output_size)
        pa[has_3d] = metrics.pa_mpjpe(pred_mm, gt)
        known = _known_scale(pred_mm, gt)
        plain[has_3d] = metrics.mpjpe(known, gt)
        pck[has_3d] = metrics.pck3d(known, gt, shift_pelvis_hips=shift_pelvis_hips)
        auc[has_3d] = metrics.auc3d(known, gt, shift_pelvis_hips=shift_pelvis_hips)
    norm = np.where(np.isfinite(head_size_out), head_size_out, PCK_BOX_FRACTION * output_size)
    dist = np.linalg.norm(joints_out - batch["joints_out"], axis=-1)
    vis = batch["visible"].astype(bool)
    correct = (dist <= 0.5 * norm[:, None]) & vis
    with np.errstate(invalid="ignore"):
        pck2d = np.where(vis.any(-1), correct.sum(-1) / vis.sum(-1), np.nan)
    return Scores(mpjpe, pa, pck, auc, pck2d, plain)


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


# --- prediction sets: what ``pose3d eval`` computes, in memory or inside Ray Data ------------------


def prepare_rows(rows: dict[str, Any], input_size: int, output_size: int) -> dict[str, np.ndarray]:
    """Shard rows (columns as ``load_shards_numpy`` or a Ray Data numpy batch gives them) -> the
    network input and the labels scoring needs, at identity augmentation.

    Returns image (n, 3, S, S) uint8 RGB; joints_out (n, 16, 2) float32 ground-truth output px;
    visible (n, 16) bool; has_3d (n,) bool; joints_3d (n, 16, 3) float32 camera mm (NaN without 3D);
    head_size_out (n,) float32 output px (NaN without a head box); ``LABEL_COLUMNS`` as str arrays.
    """
    n = len(rows["image_jpeg"])
    batch = make_batch(rows, input_size, output_size, identity_augmentation(n))
    out = {k: batch[k] for k in ("image", "joints_out", "visible", "has_3d", "joints_3d")}
    out["head_size_out"] = head_size_in_output(rows, output_size).astype(np.float32)
    for name in LABEL_COLUMNS:
        out[name] = np.asarray(rows[name]).astype(str)
    return out


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
    output px and pred_depth (n, 16) float32 normalized depth."""
    joints, depth = predict(model, prepared["image"], device, batch_size, autocast, flip_test)
    out = {k: v for k, v in prepared.items() if k != "image"}
    out["pred_joints"] = joints.astype(np.float32)
    out["pred_depth"] = depth.astype(np.float32)
    return out


def concat_prediction_sets(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join prediction sets (dicts of per-row arrays with the same keys) row-wise."""
    if not parts:
        raise ValueError("no predictions to join")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def predict_in_memory(
    model: torch.nn.Module,
    path: str,
    *,
    max_rows: int | None = None,
    flip_test: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    chunk_rows: int = 256,
    progress: Any = None,
) -> dict[str, np.ndarray]:
    """The prediction set of a shard set without Ray (small sets, tests): rows are decoded and run
    ``chunk_rows`` at a time so memory stays bounded. ``progress(rows_done, rows_total)`` is called
    per chunk."""
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
    return concat_prediction_sets(parts)


@dataclass
class RowScores:
    """Per-row scores of a prediction set and the 3D poses they were computed from.

    scores: ``Scores`` (3DPCK/AUC with the 3DHP pelvis shift on 3DHP-kind rows when asked);
    pred_mm (N, 16, 3) mm, root-aligned at the canonical bone-length sum (the paper's scale);
    pred_known_mm (N, 16, 3) mm, root-aligned at the ground truth's bone-length sum (NaN without 3D);
    pred_px (N, 16, 3) px of the network input: 2D and depth in one pixel scale.
    """

    scores: Scores
    pred_mm: np.ndarray
    pred_known_mm: np.ndarray
    pred_px: np.ndarray


def score_prediction_set(
    preds: dict[str, np.ndarray], input_size: int, output_size: int, shift_pelvis_hips: float | None = None
) -> RowScores:
    """Per-row scores of a prediction set (``add_predictions`` rows). ``shift_pelvis_hips`` applies
    to rows of 3DHP-kind datasets only (``DATASET_KIND``)."""
    joints, depth = preds["pred_joints"].astype(np.float64), preds["pred_depth"].astype(np.float64)
    s = score(joints, depth, preds, preds["head_size_out"], output_size)
    if shift_pelvis_hips is not None:
        shifted = np.isin(preds["dataset"], [d for d, kind in DATASET_KIND.items() if kind == "3dhp"])
        if shifted.any():
            sub = {k: v[shifted] for k, v in preds.items()}
            head = sub["head_size_out"]
            s3 = score(joints[shifted], depth[shifted], sub, head, output_size, shift_pelvis_hips)
            s.pck3d[shifted], s.auc3d[shifted] = s3.pck3d, s3.auc3d
    pred_mm = decode.to_3d_mm(joints, depth, output_size)
    has_3d = preds["has_3d"].astype(bool)
    known = np.full_like(pred_mm, np.nan)
    if has_3d.any():
        known[has_3d] = _known_scale(pred_mm[has_3d], preds["joints_3d"][has_3d].astype(np.float64))
    pred_px = decode.to_3d_px(joints, depth, output_size) * (input_size / output_size)
    return RowScores(s, pred_mm, known, pred_px)


def load_rows_by_id(
    path: str | Sequence[str], row_ids: Sequence[str], columns: tuple[str, ...] = EVAL_COLUMNS
) -> dict[str, np.ndarray]:
    """The rows with these ``row_id`` values (in that order) from the shards under ``path``, read with
    a filter so only the matching rows are kept in memory (the images of a figure). Raises KeyError
    naming an id that is not there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pose3d.data.shards import column_to_numpy, list_shards, resolve

    wanted = list(dict.fromkeys(str(r) for r in row_ids))
    names = list(dict.fromkeys(("row_id", *columns)))
    tables = []
    for shard in list_shards(path):
        fs, inner = resolve(shard)
        tables.append(pq.read_table(inner, columns=names, filters=[("row_id", "in", wanted)], filesystem=fs))
    table = pa.concat_tables(tables)
    found = {rid: i for i, rid in enumerate(table.column("row_id").to_pylist())}
    missing = [r for r in wanted if r not in found]
    if missing:
        raise KeyError(f"{path}: no row with row_id {missing[0]!r}")
    order = [found[str(r)] for r in row_ids]
    return {name: column_to_numpy(name, table.column(name))[order] for name in columns}
