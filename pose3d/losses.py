"""The training losses (docs/conventions.md, Loss contract and Geometric loss), vectorized and masked.

Every masked term selects rows with ``torch.where`` on sanitized inputs, never by multiplying with
a mask: a 2D-only row carries NaN depth targets, and ``0 * NaN`` would poison both the value and
the gradient. Terms that are restricted to some rows are summed over those rows and divided by the
whole batch size B, as the authors' code does, so λ_reg and λ_geo mean what they meant for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from pose3d import skeleton

GEO_ROWS_CHOICES: tuple[str, ...] = ("2d", "all")


def heatmap_loss(pred_stacks: Sequence[Tensor], target: Tensor, labelled: Tensor | None = None) -> Tensor:
    """The paper's Eq. 1 with intermediate supervision: the mean squared error over all maps of the
    batch, summed over the stacks (docs/conventions.md, Loss contract).

    pred_stacks: one (B, J, H, W) tensor per stack; target: (B, J, H, W). ``labelled``: (B, J) bool,
    the maps to supervise (None: all, the paper's loss); a left-out map, a joint its row's dataset
    never labels, adds nothing, and the divisor stays B·J·H·W. Returns a scalar.
    """
    if len(pred_stacks) == 0:
        raise ValueError("heatmap_loss needs at least one stack of heatmaps")
    if labelled is None:
        total = F.mse_loss(pred_stacks[0], target)
        for pred in pred_stacks[1:]:
            total = total + F.mse_loss(pred, target)
        return total
    keep = labelled.to(torch.bool)[:, :, None, None]
    total = pred_stacks[0].new_zeros(())
    for pred in pred_stacks:
        squared = torch.where(
            keep, (pred - target) ** 2, torch.zeros((), dtype=pred.dtype, device=pred.device)
        )
        total = total + squared.sum() / pred.numel()
    return total


def depth_loss(pred: Tensor, target: Tensor, rows: Tensor) -> Tensor:
    """The depth regression term of the paper's Eq. 2 (without λ_reg), as in the authors' code
    (docs/conventions.md, Loss contract).

    pred, target: (B, 16) normalized depth; rows: (B,) bool, the rows with 3D labels. Per row the
    mean over the joints of the squared error, summed over the selected rows, divided by B.
    Targets (and predictions) of unselected rows may be NaN; they reach neither the value nor the
    gradient. No selected row gives exactly 0.
    """
    keep = rows.to(torch.bool)[:, None]
    # Sanitize first: where() passes a zero gradient to the branch it drops, but the backward of
    # (pred - target)**2 would still compute 0 * NaN on a NaN target.
    pred_safe = torch.where(keep, pred, torch.zeros_like(pred))
    target_safe = torch.where(keep, target, torch.zeros_like(target))
    per_row = (pred_safe - target_safe).square().mean(dim=-1)  # (B,)
    return per_row.sum() / max(pred.shape[0], 1)


@lru_cache(maxsize=16)
def _group_tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The bone groups on ``device``: parent and child joint per group slot, flattened (16,); slot
    holds a bone (4, 4); the authors' weight (4, 4) float64 (cast by the caller)."""
    ends = skeleton.BONE_ARRAY[skeleton.GROUP_BONE_INDEX]  # (4, 4, 2)
    parent = torch.as_tensor(ends[..., 0].reshape(-1), device=device)
    child = torch.as_tensor(ends[..., 1].reshape(-1), device=device)
    slot = torch.as_tensor(skeleton.GROUP_SLOT_VALID, device=device)
    weight = torch.as_tensor(skeleton.GROUP_BONE_WEIGHT, device=device)
    return parent, child, slot, weight


def bone_ratio_per_row(joints: Tensor, visible: Tensor | None = None) -> Tensor:
    """The paper's Eq. 3 for each row: the sum over the four bone groups of the variance of the
    weighted bone lengths (length times the authors' weight) over the group's valid bones
    (docs/conventions.md, Geometric loss).

    joints: (B, 16, 3) in any units (the trainer passes the normalized output frame); visible:
    (B, 16) bool or None (all visible). A bone is valid when both of its ends are visible; a group
    with fewer than two valid bones contributes 0. Invisible joints may hold NaN. Returns (B,), in
    the joints' units squared.
    """
    parent, child, slot, weight = _group_tables(joints.device)
    if visible is None:
        visible = torch.ones(joints.shape[:2], dtype=torch.bool, device=joints.device)
    visible = visible.to(torch.bool)
    # Invisible joints never enter the arithmetic (see depth_loss on why not a multiplication).
    joints = torch.where(visible[..., None], joints, torch.zeros_like(joints))
    groups = slot.shape  # (4, 4)
    # index_select rather than advanced indexing: on CPU the latter (like sqrt) spins up the
    # thread pool even for these few elements, which costs milliseconds when the cores are busy.
    ends_visible = visible.index_select(1, parent) & visible.index_select(1, child)
    valid = ends_visible.unflatten(1, groups) & slot  # (B, 4, 4)
    bone = joints.index_select(1, child) - joints.index_select(1, parent)  # (B, 16, 3)
    # vector_norm's backward gives a zero gradient at zero length (not sqrt's infinite one), so
    # degenerate poses and the padding slots stay finite (tested).
    length = torch.linalg.vector_norm(bone, dim=-1).unflatten(1, groups)  # (B, 4, 4)
    value = torch.where(valid, length * weight.to(joints.dtype), 0.0)

    # A group with no valid bone gives 0 / 1 and one with a single bone a zero deviation: both
    # contribute exactly 0, as Eq. 3 wants for fewer than two bones.
    denom = valid.sum(dim=-1).clamp(min=1).to(joints.dtype)  # (B, 4)
    mean = value.sum(dim=-1) / denom
    deviation = torch.where(valid, value - mean[..., None], 0.0)
    variance = deviation.square().sum(dim=-1) / denom  # population variance, as in Eq. 3
    return variance.sum(dim=-1)


def bone_ratio_loss(joints: Tensor, rows: Tensor, visible: Tensor | None = None) -> Tensor:
    """The geometric term L_geo (paper Eq. 3; docs/conventions.md, Geometric loss), without λ_geo.

    joints: (B, 16, 3) (the trainer passes the normalized output frame: ground-truth xy, predicted
    z); rows: (B,) bool, the rows the term applies to; visible: (B, 16) bool or None. The per-row
    values of ``bone_ratio_per_row`` summed over the selected rows and divided by B. Unselected
    rows may hold NaN and get exactly zero gradient; no selected row gives exactly 0.
    """
    rows = rows.to(torch.bool)
    usable = rows[:, None].expand(joints.shape[:2])
    if visible is not None:
        usable = usable & visible.to(torch.bool)
    per_row = bone_ratio_per_row(joints, usable)
    return torch.where(rows, per_row, 0.0).sum() / max(joints.shape[0], 1)


def joints_for_geometric_loss(xy_gt_norm: Tensor, depth_pred: Tensor) -> Tensor:
    """The 3D joints the geometric loss sees: ground-truth 2D (detached: it carries no gradient)
    with the predicted depth (paper Eq. 3; docs/conventions.md, Geometric loss).

    xy_gt_norm: (B, 16, 2) normalized frame; depth_pred: (B, 16) normalized. Returns (B, 16, 3).
    """
    return torch.cat([xy_gt_norm.detach().to(depth_pred.dtype), depth_pred[..., None]], dim=-1)


@dataclass(frozen=True)
class LossWeights:
    """λ_reg, λ_geo (paper Eq. 2; docs/conventions.md, Loss contract) and the rows the geometric
    term applies to: ``"2d"`` the 2D-only rows (the paper's method), ``"all"`` every row (its 3D/w
    geo baseline; docs/conventions.md, Geometric loss)."""

    reg: float
    geo: float
    geo_rows: str = "2d"

    def __post_init__(self) -> None:
        if self.geo_rows not in GEO_ROWS_CHOICES:
            raise ValueError(f"geo_rows must be one of {GEO_ROWS_CHOICES}, got {self.geo_rows!r}")


def pose_loss(
    heatmap_stacks: Sequence[Tensor],
    depth_pred: Tensor | None,
    *,
    heatmap_target: Tensor,
    depth_target: Tensor,
    has_3d: Tensor,
    visible: Tensor,
    joints_2d_norm: Tensor,
    weights: LossWeights,
    labelled: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The whole training loss: L_2D (all rows) + λ_reg · L_dep (3D rows) + λ_geo · L_geo.

    heatmap_stacks: one (B, 16, H, W) per stack; depth_pred: (B, 16) normalized, or None for a
    network without the depth regressor (stage 1: only the heatmap term). Targets: heatmap_target
    (B, 16, H, W); depth_target (B, 16), NaN allowed in rows without 3D; has_3d (B,) bool; visible
    (B, 16) bool; joints_2d_norm (B, 16, 2) ground-truth 2D in the normalized frame; labelled (B, 16)
    bool or None, the heatmaps to supervise (``heatmap_loss``).

    Returns the total and its unweighted terms, detached, for logging: ``heatmap`` and ``total``
    always; with a depth prediction also ``depth``, ``geo`` (over the rows ``weights.geo_rows``
    selects), ``geo_2d`` and ``geo_3d`` (the geometric term on each kind of row alone, both divided
    by the whole B, so they add up to the term over all rows). The geometric term is computed even
    when λ_geo = 0, so stage 2 logs it too.
    """
    has_3d = has_3d.to(torch.bool)
    l_2d = heatmap_loss(heatmap_stacks, heatmap_target, labelled)
    total = l_2d
    terms = {"heatmap": l_2d.detach()}
    if depth_pred is not None:
        l_dep = depth_loss(depth_pred, depth_target, has_3d)
        joints = joints_for_geometric_loss(joints_2d_norm, depth_pred)
        geo_2d = bone_ratio_loss(joints, ~has_3d, visible)
        geo_3d = bone_ratio_loss(joints, has_3d, visible)
        l_geo = geo_2d if weights.geo_rows == "2d" else geo_2d + geo_3d
        total = total + weights.reg * l_dep + weights.geo * l_geo
        terms.update(depth=l_dep.detach(), geo=l_geo.detach(), geo_2d=geo_2d.detach(), geo_3d=geo_3d.detach())
    terms["total"] = total.detach()
    return total, terms
