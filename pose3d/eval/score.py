"""The one scorer: a prediction set (``pose3d.eval.predict``) -> per-row scores (``score_prediction_set``)
-> summaries (``Scores.summary``, ``summarize``). Every metric is ``pose3d.metrics``'s.

Validation inside training (``pose3d.train.validate``), ``pose3d demo``, the ablation preset
(``evaluate_checkpoint``) and ``pose3d eval`` (``pose3d.eval.report``'s tables) all score here, so
they give the same numbers for the same rows. Also the mean-pose baseline, scored the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pose3d import decode, geometry, metrics, skeleton
from pose3d.eval.predict import load_rows, predict_in_memory
from pose3d.model.io import load_model
from pose3d.schema import EVAL_KIND

#: 2D PCK normalizer where a row has no head size: this fraction of the person box (about a head).
PCK_BOX_FRACTION = 0.1
#: 2D PCK threshold, a fraction of the normalizer (head size or ``PCK_BOX_FRACTION`` of the box).
PCK2D_THRESHOLD = 0.5


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
        """Metric -> mean over the rows that have it (NaN when none has)."""
        return {
            f"{prefix}{k}": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for k, v in vars(self).items()
        }

    def select(self, rows: np.ndarray) -> Scores:
        """The scores of some rows: ``rows`` a (N,) bool mask or indices."""
        return Scores(*(v[rows] for v in vars(self).values()))


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


def known_scale(pred_mm: np.ndarray, gt_mm: np.ndarray) -> np.ndarray:
    """Scale each prediction (B, 16, 3) to its ground truth's (B, 16, 3) mm bone-length sum ("global
    scale known"). Returns (B, 16, 3) mm, root-aligned."""
    return geometry.rescale_to_canonical(pred_mm, 1.0) * skeleton.bone_lengths(gt_mm).sum(-1)[:, None, None]


def pose_scores(
    pred: np.ndarray, pred_mm: np.ndarray, gt: np.ndarray, shift_pelvis_hips: float | None = None
) -> dict[str, np.ndarray]:
    """The 3D scores of predicted poses against ground truth gt (B, 16, 3) mm, each (B,).

    pred (B, 16, 3) any unit (the paper's MPJPE rescales it: output px for the network); pred_mm
    (B, 16, 3) mm the same pose at the canonical scale. mpjpe: the paper's protocol; pa_mpjpe;
    mpjpe_plain (root-aligned, scale known, 16 joints), pck3d and auc3d (scale known;
    ``shift_pelvis_hips``: the 3DHP pelvis correction of ``metrics.pck3d``, None for off).
    """
    known = known_scale(pred_mm, gt)
    return {
        "mpjpe": metrics.paper_mpjpe(pred, gt),
        "pa_mpjpe": metrics.pa_mpjpe(pred_mm, gt),
        "mpjpe_plain": metrics.mpjpe(known, gt),
        "pck3d": metrics.pck3d(known, gt, shift_pelvis_hips=shift_pelvis_hips),
        "auc3d": metrics.auc3d(known, gt, shift_pelvis_hips=shift_pelvis_hips),
    }


def pck2d_normalizer(head_size_out: np.ndarray, output_size: int) -> np.ndarray:
    """Per-row 2D PCK normalizer (N,) output px: the head size, or ``PCK_BOX_FRACTION`` of the person
    box (the output map's side at identity augmentation) where a row has none."""
    return np.where(np.isfinite(head_size_out), head_size_out, PCK_BOX_FRACTION * output_size)


def score_prediction_set(
    preds: Mapping[str, np.ndarray],
    input_size: int,
    output_size: int,
    shift_pelvis_hips: float | None = None,
) -> RowScores:
    """Per-row scores of a prediction set (``pose3d.eval.predict.add_predictions`` rows).

    3D scores on rows with 3D labels (NaN elsewhere), 2D PCK on every row with a visible joint.
    ``shift_pelvis_hips`` applies to the 3DPCK/AUC of rows of 3DHP-kind datasets only
    (``schema.EVAL_KIND``). ``input_size``/``output_size``: the network's, px.
    """
    joints = np.asarray(preds["pred_joints"]).astype(np.float64)
    depth = np.asarray(preds["pred_depth"]).astype(np.float64)
    n = len(joints)
    has_3d = np.asarray(preds["has_3d"]).astype(bool)
    values = {k: np.full(n, np.nan) for k in ("mpjpe", "pa_mpjpe", "pck3d", "auc3d", "mpjpe_plain")}
    if has_3d.any():
        gt = np.asarray(preds["joints_3d"])[has_3d].astype(np.float64)
        pred_px = decode.to_3d_px(joints[has_3d], depth[has_3d], output_size)
        pred_mm = decode.to_3d_mm(joints[has_3d], depth[has_3d], output_size)
        for k, v in pose_scores(pred_px, pred_mm, gt).items():
            values[k][has_3d] = v
        if shift_pelvis_hips is not None:
            kinds = np.array([EVAL_KIND.get(d, "other") for d in np.asarray(preds["dataset"]).astype(str)])
            shifted = (kinds == "3dhp")[has_3d]
            if shifted.any():
                known = known_scale(pred_mm[shifted], gt[shifted])
                rows = np.flatnonzero(has_3d)[shifted]
                values["pck3d"][rows] = metrics.pck3d(known, gt[shifted], shift_pelvis_hips=shift_pelvis_hips)
                values["auc3d"][rows] = metrics.auc3d(known, gt[shifted], shift_pelvis_hips=shift_pelvis_hips)
    norm = pck2d_normalizer(np.asarray(preds["head_size_out"]), output_size)
    pck2d = metrics.pck2d(
        joints, np.asarray(preds["joints_out"]), np.asarray(preds["visible"]), norm, PCK2D_THRESHOLD
    )
    scores = Scores(
        values["mpjpe"], values["pa_mpjpe"], values["pck3d"], values["auc3d"], pck2d, values["mpjpe_plain"]
    )
    pred_mm_all = decode.to_3d_mm(joints, depth, output_size)
    known_all = np.full_like(pred_mm_all, np.nan)
    if has_3d.any():
        known_all[has_3d] = known_scale(
            pred_mm_all[has_3d], np.asarray(preds["joints_3d"])[has_3d].astype(np.float64)
        )
    pred_px_all = decode.to_3d_px(joints, depth, output_size) * (input_size / output_size)
    return RowScores(scores, pred_mm_all, known_all, pred_px_all)


def summarize(scores: Scores, groups: np.ndarray | None = None) -> dict[str, Any]:
    """{"model": ``scores.summary()``} and, when some row has a group ('' = none), "groups": group ->
    the summary of its rows, groups sorted."""
    result: dict[str, Any] = {"model": scores.summary()}
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        if (groups != "").any():
            result["groups"] = {g: scores.select(groups == g).summary() for g in sorted(set(groups) - {""})}
    return result


def symmetry_table(
    pred_px: np.ndarray | None, pred_mm: np.ndarray | None = None, gt_mm: np.ndarray | None = None
) -> dict[str, Any]:
    """Mean |left - right| bone length per limb (``metrics.bone_symmetry``).

    pred_px (B, 16, 3) network-input px (2D with depth in the same scale); pred_mm (B', 16, 3) mm at
    the true scale and gt_mm (B', 16, 3) its ground truth, or None. Returns {"limbs", and for each
    given input "pred_px" / "pred_mm" / "gt_mm": {limb: mean}}.
    """
    out: dict[str, Any] = {"limbs": list(metrics.SYMMETRY_LIMBS)}
    for name, joints in (("pred_px", pred_px), ("pred_mm", pred_mm), ("gt_mm", gt_mm)):
        if joints is not None and len(joints):
            means = {limb: float(v.mean()) for limb, v in metrics.bone_symmetry(joints).items()}
            out[name] = {limb: (None if np.isnan(m) else m) for limb, m in means.items()}  # JSON: no NaN
    return out


# --- the mean-pose baseline ------------------------------------------------------------------------


def mean_pose(path: str | Sequence[str], max_rows: int = 2000) -> np.ndarray:
    """The mean root-aligned 3D pose (16, 3) mm of a shard set's 3D rows (the baseline predictor)."""
    rows = load_rows(path, ("joints_3d", "has_3d"), max_rows)
    j3d = np.asarray(rows["joints_3d"], np.float64).reshape(-1, skeleton.NUM_JOINTS, 3)
    j3d = j3d[np.asarray(rows["has_3d"], bool)]
    if not len(j3d):
        raise ValueError(f"{path}: no rows with 3D labels for a mean pose")
    return geometry.root_align(j3d).mean(0)


def baseline_scores(mean: np.ndarray, preds: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The mean-pose baseline: the pose ``mean`` (16, 3) mm predicted for every 3D row of a prediction
    set (or any rows with has_3d and joints_3d), scored like the model. Returns metric -> mean."""
    has_3d = np.asarray(preds["has_3d"]).astype(bool)
    gt = np.asarray(preds["joints_3d"])[has_3d].astype(np.float64)
    pred = np.broadcast_to(mean, gt.shape)
    s = pose_scores(pred, pred, gt)
    return {k: float(s[k].mean()) for k in ("mpjpe", "pa_mpjpe", "pck3d", "auc3d")}


# --- a checkpoint on a shard set, in memory -------------------------------------------------------


def evaluate_checkpoint(
    checkpoint: str,
    data: str | Sequence[str],
    *,
    max_rows: int | None = None,
    baseline_from: str | Sequence[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a checkpoint on a shard set without Ray (``predict_in_memory``, then the scorer); with
    ``baseline_from`` (3D training shards), also the mean-pose baseline. Returns {"rows": N,
    "model": summary, "groups": group -> summary (when the rows have groups), "bone_symmetry":
    ``symmetry_table`` (px for every row, mm for the 3D rows), "baseline": summary}."""
    model = load_model(checkpoint, map_location=device)
    cfg = model.config
    preds = predict_in_memory(model, data, max_rows=max_rows, device=device)
    rs = score_prediction_set(preds, cfg.input_size, cfg.output_size)
    result: dict[str, Any] = {"rows": len(preds["row_id"]), **summarize(rs.scores, preds["group"])}
    has_3d = np.asarray(preds["has_3d"]).astype(bool)
    gt = np.asarray(preds["joints_3d"], np.float64)[has_3d]
    result["bone_symmetry"] = symmetry_table(rs.pred_px, rs.pred_known_mm[has_3d], gt)
    if baseline_from:
        result["baseline"] = baseline_scores(mean_pose(baseline_from), preds)
    return result
