"""Evaluation metrics (pure numpy, vectorized over the batch; docs/conventions.md, Evaluation).

Every per-sample metric returns one value per row, so that per-action or per-group tables are a
separate step (``per_group_mean``, ``per_action_table``). Joints follow ``pose3d.skeleton``'s 16-joint
MPII order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pose3d import geometry, skeleton
from pose3d.skeleton import ROOT, SCORED_14, THORAX, UPPER_NECK

# --- 3D joint errors --------------------------------------------------------------------------


def _mean_joint_distance(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred and gt must both be (B, J, D); got {pred.shape} and {gt.shape}")
    return pred, gt


def paper_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The paper's Human3.6M MPJPE (docs/conventions.md, MPJPE and PA-MPJPE), per sample.

    pred (B, 16, 3) in any unit (e.g. output px from ``decode.to_3d_px``); gt (B, 16, 3) mm.
    The prediction is scaled about its root so its 14 bone lengths sum to the canonical sum
    (mm), translated so its root sits on the ground-truth root; then the thorax of both is set to
    the midpoint of pelvis and upper neck (Human3.6M has no MPII thorax) and the joint distances
    are averaged over all 16 joints. Returns (B,) mm.
    """
    pred, gt = _check_pair(pred, gt)
    if pred.shape[1:] != (skeleton.NUM_JOINTS, 3):
        raise ValueError(f"paper_mpjpe needs (B, 16, 3) poses, got {pred.shape}")
    pred = geometry.rescale_to_canonical(pred)
    pred = pred - pred[:, ROOT : ROOT + 1] + gt[:, ROOT : ROOT + 1]
    pred, gt = pred.copy(), gt.copy()
    for pose in (pred, gt):
        pose[:, THORAX] = (pose[:, ROOT] + pose[:, UPPER_NECK]) / 2
    return _mean_joint_distance(pred, gt)


def mpjpe(pred: np.ndarray, gt: np.ndarray, *, rescale: bool = False, root: int = ROOT) -> np.ndarray:
    """Mean per-joint position error, per sample.

    pred, gt (B, J, 3) in the same unit (mm for the reported numbers). Plain form: both poses
    root-aligned at joint ``root``, then the Euclidean joint distances averaged over the J joints.
    ``rescale=True`` gives the paper's protocol instead (``paper_mpjpe``: J must be 16, pred may be
    in any unit, the canonical rescale brings it to mm). Returns (B,) in gt's unit.
    """
    if rescale:
        if root != ROOT:
            raise ValueError("the paper's protocol aligns at the pelvis; root cannot be changed")
        return paper_mpjpe(pred, gt)
    pred, gt = _check_pair(pred, gt)
    return _mean_joint_distance(geometry.root_align(pred, root), geometry.root_align(gt, root))


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """MPJPE after similarity (Procrustes) alignment of each prediction to its ground truth.

    pred, gt (B, J, 3), same unit. Rotation (no reflection), uniform scale and translation are
    fitted per sample (``geometry.procrustes_align``). Returns (B,) in gt's unit.
    """
    pred, gt = _check_pair(pred, gt)
    return _mean_joint_distance(geometry.procrustes_align(pred, gt), gt)


# --- per-group and per-action tables ----------------------------------------------------------


@dataclass(frozen=True)
class GroupMeans:
    """Means of per-sample values by group.

    ``means[label]`` the mean over that group's samples, ``counts[label]`` its size (labels in
    sorted order); ``overall`` the mean over all samples; ``mean_of_groups`` the unweighted mean
    of the group means (how the paper's per-action table averages).
    """

    means: dict[str, float]
    counts: dict[str, int]
    overall: float
    mean_of_groups: float


def per_group_mean(values: np.ndarray, groups: np.ndarray) -> GroupMeans:
    """Group per-sample values: values (B,) float, groups (B,) labels (any hashable numpy dtype).

    NaN values propagate into their group's mean (a NaN is a bug upstream, not something to hide).
    """
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups)
    if values.ndim != 1 or groups.shape != values.shape:
        raise ValueError(f"values and groups must both be (B,); got {values.shape} and {groups.shape}")
    if values.size == 0:
        raise ValueError("no samples to average")
    labels, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(labels))
    means = np.bincount(inverse, weights=values, minlength=len(labels)) / counts
    return GroupMeans(
        means={str(k): float(m) for k, m in zip(labels, means, strict=True)},
        counts={str(k): int(c) for k, c in zip(labels, counts, strict=True)},
        overall=float(values.mean()),
        mean_of_groups=float(means.mean()),
    )


#: Human3.6M's 15 actions in the order of the paper's table.
H36M_ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Posing", "Purchases", "Sitting",
    "SittingDown", "Smoking", "Photo", "Waiting", "Walking", "WalkDog", "WalkTogether",
)  # fmt: skip
# Lower-case spellings found in Human3.6M's file names (and the exp-map files) -> table name.
_ACTION_ALIASES: dict[str, str] = {a.lower(): a for a in H36M_ACTIONS} | {
    "direction": "Directions",
    "takingphoto": "Photo",
    "walkingdog": "WalkDog",
    "walkingtogether": "WalkTogether",
}
_SUBJECT_PREFIX = re.compile(r"^s\d+[ _]")
_CAMERA_SUFFIX = re.compile(r"\.\d+$")
_TAKE_SUFFIX = re.compile(r"[ _\-]*\d*$")


def normalize_action(name: str) -> str:
    """Human3.6M sequence or action name -> one of ``H36M_ACTIONS``.

    Accepts "WalkDog_1", "TakingPhoto 1", "Walking 1", "S8_WalkDog_1.55011271", "walkingdog", ...
    Raises ValueError for a name that is none of the 15 actions.
    """
    key = name.strip().lower()
    key = _CAMERA_SUFFIX.sub("", _SUBJECT_PREFIX.sub("", key))
    key = _TAKE_SUFFIX.sub("", key).replace(" ", "").replace("_", "")
    if key not in _ACTION_ALIASES:
        raise ValueError(f"{name!r} is not one of Human3.6M's actions {H36M_ACTIONS}")
    return _ACTION_ALIASES[key]


@dataclass(frozen=True)
class ActionTable:
    """A per-action table in ``H36M_ACTIONS`` order.

    ``means[action]`` (NaN for an action with no samples), ``counts[action]``; ``average`` the
    mean of the action means over the actions present (the paper's "Average" when all 15 are);
    ``overall`` the mean over samples; ``missing`` the actions with no samples.
    """

    means: dict[str, float]
    counts: dict[str, int]
    average: float
    overall: float
    missing: tuple[str, ...]


def per_action_table(values: np.ndarray, actions: np.ndarray) -> ActionTable:
    """Per-sample values (B,) and Human3.6M action or sequence names (B,) -> ``ActionTable``."""
    actions = np.asarray(actions)
    names, inverse = np.unique(actions, return_inverse=True)
    # Normalize each distinct name once, then spread back to the samples.
    base = np.array([normalize_action(str(n)) for n in names], dtype=object)
    grouped = per_group_mean(values, base[inverse].astype(str))
    means = {a: grouped.means.get(a, float("nan")) for a in H36M_ACTIONS}
    counts = {a: grouped.counts.get(a, 0) for a in H36M_ACTIONS}
    return ActionTable(
        means=means,
        counts=counts,
        average=grouped.mean_of_groups,
        overall=grouped.overall,
        missing=tuple(a for a in H36M_ACTIONS if counts[a] == 0),
    )


# --- MPII PCKh --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCKhResult:
    """PCKh of a set of people, as fractions in [0, 1].

    ``per_joint`` (16,): correct / visible per joint; NaN for pelvis and thorax (not scored) and for
    joints never visible. ``mean``: the common mean of ``per_joint`` over the 14 scored joints (those
    ever visible). ``total``: the official evaluation's pooled figure, correct / visible over all
    14 scored joints together. ``correct`` (B, 16) bool per joint and row (False where invisible).
    """

    per_joint: np.ndarray
    mean: float
    total: float
    correct: np.ndarray


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    head_size: np.ndarray,
    threshold: float = 0.5,
) -> PCKhResult:
    """PCKh (MPII; docs/conventions.md, PCKh).

    pred, gt (B, 16, 2) px; visible (B, 16) bool (annotated joints); head_size (B,) the normalizer
    itself, 0.6 x head-box diagonal, in the same px. A joint is correct when
    distance / head_size <= threshold (``<=``, as the official MATLAB evaluation). Raises ValueError
    naming the row and joint when a row with a visible scored joint has a NaN or non-positive
    head size.
    """
    pred, gt = _check_pair(pred, gt)
    visible = np.asarray(visible, bool)
    head_size = np.asarray(head_size, np.float64)
    if pred.shape[1:] != (skeleton.NUM_JOINTS, 2) or visible.shape != pred.shape[:2]:
        raise ValueError(
            f"pckh needs (B, 16, 2) joints and (B, 16) visible; got {pred.shape}, {visible.shape}"
        )
    if head_size.shape != pred.shape[:1]:
        raise ValueError(f"head_size must be (B,) = {pred.shape[:1]}, got {head_size.shape}")
    scored = np.zeros(skeleton.NUM_JOINTS, bool)
    scored[SCORED_14] = True
    bad = (visible & scored) & ~(head_size > 0)[:, None]  # NaN > 0 is False, so NaN is caught
    if bad.any():
        row, joint = np.argwhere(bad)[0]
        raise ValueError(
            f"row {row}: head size {head_size[row]} is not a positive number, but joint "
            f"{skeleton.JOINT_NAMES[joint]} is visible"
        )
    safe_size = np.where(head_size > 0, head_size, 1.0)
    normalized = np.linalg.norm(pred - gt, axis=-1) / safe_size[:, None]
    correct = visible & (normalized <= threshold)
    n_visible = visible.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(n_visible > 0, correct.sum(0) / n_visible, np.nan)
    per_joint[~scored] = np.nan
    scored_seen = scored & (n_visible > 0)
    mean = float(per_joint[scored_seen].mean()) if scored_seen.any() else float("nan")
    pooled_visible = n_visible[scored].sum()
    total = float(correct[:, scored].sum() / pooled_visible) if pooled_visible else float("nan")
    return PCKhResult(per_joint=per_joint, mean=mean, total=total, correct=correct)


# --- 3DPCK and AUC (MPI-INF-3DHP) -------------------------------------------------------------

#: The 3DPCK/AUC thresholds (mm): 0..150 in 31 steps.
AUC_THRESHOLDS_MM = np.linspace(0.0, 150.0, 31)


def _scored_3d_errors(
    pred: np.ndarray, gt: np.ndarray, joints: np.ndarray, shift_pelvis_hips: float | None
) -> np.ndarray:
    """Root-aligned joint errors (B, len(joints)) after the optional pelvis/hip shift."""
    pred, gt = _check_pair(pred, gt)
    if shift_pelvis_hips is not None:
        # 3DHP's pelvis sits higher than the Human3.6M/MPII one the network learnt: move the predicted
        # pelvis and hips toward the upper neck by a fraction of pelvis->neck, then root-align at the
        # moved pelvis, so the predicted pose is expressed in 3DHP's convention.
        pred = pred.copy()
        up = shift_pelvis_hips * (pred[:, UPPER_NECK] - pred[:, ROOT])  # (B, 3)
        moved = [ROOT, skeleton.JOINT_INDEX["r_hip"], skeleton.JOINT_INDEX["l_hip"]]
        pred[:, moved] += up[:, None, :]
    err = np.linalg.norm(geometry.root_align(pred) - geometry.root_align(gt), axis=-1)
    return err[:, np.asarray(joints)]


def pck3d(
    pred: np.ndarray,
    gt: np.ndarray,
    threshold: float = 150.0,
    joints: np.ndarray = SCORED_14,
    *,
    shift_pelvis_hips: float | None = None,
) -> np.ndarray:
    """3D PCK per sample: the fraction of ``joints`` within ``threshold`` mm (``<=``) after both
    poses are root-aligned at the pelvis.

    pred, gt (B, 16, 3) mm. ``shift_pelvis_hips``: None (default, off) or a fraction f; the
    predicted pelvis and both hips are first moved by f x (upper_neck - pelvis) of the prediction
    (the paper's 3DHP correction, f = 0.2 unverified; docs/conventions.md, 3DHP ground truth), and
    the root alignment uses that moved pelvis. Returns (B,) in [0, 1].
    """
    err = _scored_3d_errors(pred, gt, joints, shift_pelvis_hips)
    return (err <= threshold).mean(axis=-1)


def auc3d(
    pred: np.ndarray,
    gt: np.ndarray,
    thresholds: np.ndarray = AUC_THRESHOLDS_MM,
    joints: np.ndarray = SCORED_14,
    *,
    shift_pelvis_hips: float | None = None,
) -> np.ndarray:
    """Area under the 3DPCK curve per sample: the mean of ``pck3d`` over ``thresholds`` (mm).

    pred, gt (B, 16, 3) mm; same alignment and options as ``pck3d``. Returns (B,) in [0, 1].
    """
    err = _scored_3d_errors(pred, gt, joints, shift_pelvis_hips)  # (B, K)
    thresholds = np.asarray(thresholds, np.float64)
    return (err[:, :, None] <= thresholds).mean(axis=(1, 2))


# --- bone symmetry ----------------------------------------------------------------------------

#: Limb -> (right bone, left bone) names in ``skeleton.BONE_NAMES``.
SYMMETRY_LIMBS: dict[str, tuple[str, str]] = {
    "upper_arm": ("r_upper_arm", "l_upper_arm"),
    "lower_arm": ("r_lower_arm", "l_lower_arm"),
    "upper_leg": ("r_upper_leg", "l_upper_leg"),
    "lower_leg": ("r_lower_leg", "l_lower_leg"),
}


def bone_symmetry(joints: np.ndarray) -> dict[str, np.ndarray]:
    """Left/right bone-length difference |l - r| of each limb, per sample.

    joints (B, 16, D), D = 2 or 3, any unit (mm for 3DHP, px for MPII in the paper). Returns
    limb name -> (B,) in the joints' unit, for upper arm, lower arm, upper leg, lower leg.
    """
    lengths = skeleton.bone_lengths(np.asarray(joints, np.float64))  # (B, 14)
    bi = skeleton.BONE_INDEX
    return {
        limb: np.abs(lengths[:, bi[left]] - lengths[:, bi[right]])
        for limb, (right, left) in SYMMETRY_LIMBS.items()
    }


# --- 2D PCK with a per-row normalizer ---------------------------------------------------------


def pck2d(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    normalizer: np.ndarray,
    threshold: float = 0.5,
) -> np.ndarray:
    """2D PCK per sample: the fraction of visible joints (all 16) within ``threshold`` x the row's
    normalizer (``<=``).

    pred, gt (B, J, 2) px; visible (B, J) bool; normalizer (B,) px (a head size, or a fraction of the
    person box where a row has none). Unlike ``pckh`` the normalizer is not checked: each row gets
    its own. Returns (B,) in [0, 1]; NaN for a row with no visible joint.
    """
    dist = np.linalg.norm(np.asarray(pred) - np.asarray(gt), axis=-1)
    vis = np.asarray(visible).astype(bool)
    correct = (dist <= threshold * np.asarray(normalizer)[:, None]) & vis
    with np.errstate(invalid="ignore"):
        return np.where(vis.any(-1), correct.sum(-1) / vis.sum(-1), np.nan)
