"""Tests of pose3d.losses against hand computations and an independent per-sample reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pose3d.losses import (
    LossWeights,
    bone_ratio_loss,
    depth_loss,
    heatmap_loss,
    joints_for_geometric_loss,
    pose_loss,
)

NAN = float("nan")
# The authors' weights and groups, written from docs/conventions.md (Geometric loss), not imported, as
# (parent, child, weight).
W_LOWER_LEG = 1.0085885
W_LOWER_ARM = 1.1375361
PAPER_GROUPS = (
    ((0, 1, W_LOWER_LEG), (1, 2, 1.0), (3, 4, 1.0), (4, 5, W_LOWER_LEG)),  # legs
    ((10, 11, W_LOWER_ARM), (11, 12, 1.0), (13, 14, 1.0), (14, 15, W_LOWER_ARM)),  # arms
    ((2, 6, 1.0), (3, 6, 1.0)),  # hips
    ((12, 8, 1.0), (13, 8, 1.0)),  # shoulders
)


def reference_bone_ratio(joints: np.ndarray, rows: np.ndarray, visible: np.ndarray) -> float:
    """Eq. 3 sample by sample, bone by bone, in plain Python."""
    total = 0.0
    for b in range(joints.shape[0]):
        if not rows[b]:
            continue
        for group in PAPER_GROUPS:
            values = []
            for a, c, w in group:
                if visible[b, a] and visible[b, c]:
                    d = [float(joints[b, c, k] - joints[b, a, k]) for k in range(3)]
                    values.append(w * math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2))
            if len(values) >= 2:
                mean = sum(values) / len(values)
                total += sum((v - mean) ** 2 for v in values) / len(values)
    return total / joints.shape[0]


# --- heatmap_loss and depth_loss ----------------------------------------------------------------
def test_heatmap_loss_hand_case():
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0, 0, 0] = 1.0
    stack1 = torch.zeros(2, 2, 2, 2)  # misses the one peak: squared error 1 over 16 cells
    stack2 = target.clone()
    stack2[1, 1] = 2.0  # four cells off by 2: squared error 16 over 16 cells
    assert heatmap_loss([stack1], target).item() == pytest.approx(1 / 16)
    assert heatmap_loss([stack1, stack2], target).item() == pytest.approx(1 / 16 + 1.0)


def test_heatmap_loss_leaves_out_the_maps_of_joints_a_row_does_not_have():
    target = torch.zeros(2, 2, 2, 2)
    pred = torch.ones(2, 2, 2, 2, requires_grad=True)  # every cell off by 1: 16 over 16 cells
    every = torch.ones(2, 2, dtype=torch.bool)
    assert heatmap_loss([pred], target, every).item() == heatmap_loss([pred], target).item() == 1.0
    labelled = torch.tensor([[True, False], [True, True]])  # row 0 lacks joint 1 (as COCO its head top)
    loss = heatmap_loss([pred, pred], target, labelled)
    assert loss.item() == pytest.approx(2 * 12 / 16)  # the divisor stays B·J·H·W, as without a mask
    loss.backward()
    assert (pred.grad[0, 1] == 0).all() and (pred.grad[0, 0] != 0).all() and (pred.grad[1] != 0).all()


def test_depth_loss_hand_case_ignores_nan_rows():
    pred = torch.zeros(3, 16, requires_grad=True)
    target = torch.zeros(3, 16)
    target[0, :4] = 1.0  # row 0: 4 joints off by 1 -> mean 4/16
    target[1] = NAN  # row 1 is 2D-only: no depth labels
    target[2, 7] = -2.0  # row 2: one joint off by 2 -> mean 4/16
    rows = torch.tensor([True, False, True])
    loss = depth_loss(pred, target, rows)
    assert loss.item() == pytest.approx((0.25 + 0.25) / 3)  # summed over 3D rows, divided by B = 3
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[1], torch.zeros(16))
    # d/dpred of (pred - t)^2 / 16 / 3 = 2 (pred - t) / 48
    assert pred.grad[0, 0].item() == pytest.approx(-2 / 48)
    assert pred.grad[2, 7].item() == pytest.approx(4 / 48)


def test_depth_loss_no_rows_is_exactly_zero():
    pred = torch.randn(4, 16, requires_grad=True)
    target = torch.full((4, 16), NAN)
    loss = depth_loss(pred, target, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(4, 16))


# --- bone_ratio_loss ----------------------------------------------------------------------------
def _hand_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    joints = torch.full((3, 16, 3), NAN, dtype=torch.float64)
    visible = torch.zeros(3, 16, dtype=torch.bool)
    # Row 0: everything visible but the left wrist.
    row0 = {
        6: (0, 0, 0),  # pelvis
        2: (-3, 4, 0),  # r_hip: |(-3, 4, 0)| = 5
        3: (1, 0, 0),  # l_hip: 1
        1: (-3, 8, 0),  # r_knee: upper leg 4
        0: (-3, 12, 0),  # r_ankle: lower leg 4
        4: (1, 4, 0),  # l_knee: upper leg 4
        5: (1, 4, 4),  # l_ankle: lower leg 4
        8: (0, -10, 0),  # upper_neck
        7: (0, -9, 0),  # thorax (in no group)
        9: (0, -12, 0),  # head_top (in no group)
        12: (-2, -10, 0),  # r_shoulder: 2
        13: (0, -10, 4),  # l_shoulder: 4
        11: (-2, -7, 0),  # r_elbow: upper arm 3
        10: (-2, -7, 2),  # r_wrist: lower arm 2
        14: (0, -10, 7),  # l_elbow: upper arm 3
    }
    for j, p in row0.items():
        joints[0, j] = torch.tensor(p, dtype=torch.float64)
        visible[0, j] = True
    joints[0, 15] = torch.tensor([50.0, 50.0, 50.0])  # l_wrist, invisible: a wild value
    # Row 1: only the pelvis, both hips and the right knee are visible.
    for j, p in {6: (0, 0, 0), 2: (0, 0, 2), 3: (6, 0, 0), 1: (0, 5, 2)}.items():
        joints[1, j] = torch.tensor(p, dtype=torch.float64)
        visible[1, j] = True
    # Row 2: not selected, all NaN though "visible".
    visible[2] = True
    rows = torch.tensor([True, True, False])
    return joints, rows, visible


def test_bone_ratio_loss_hand_case():
    joints, rows, visible = _hand_batch()
    # Row 0:
    #   hips 5, 1: mean 3, variance (2² + 2²) / 2 = 4
    #   shoulders 2, 4: mean 3, variance 1
    #   legs 4w, 4, 4, 4w (w = lower-leg weight): deviations ±2(w - 1), variance 4 (w - 1)²
    #   arms 2v, 3, 3 (v = lower-arm weight; the left lower arm has an invisible end): a set
    #   {a, b, b} has variance (2/9)(a - b)²
    row0 = 4.0 + 1.0 + 4 * (W_LOWER_LEG - 1) ** 2 + (2 / 9) * (2 * W_LOWER_ARM - 3) ** 2
    # Row 1: hips 2, 6: variance 4; legs have one valid bone (r upper leg): 0; the rest none.
    row1 = 4.0
    expected = (row0 + row1) / 3  # row 2 is not selected but counts in B
    assert expected == pytest.approx(3.039026, rel=1e-6)  # (5 + 2.9505e-4 + 0.116782 + 4) / 3
    loss = bone_ratio_loss(joints, rows, visible)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(reference_bone_ratio(joints.numpy(), rows.numpy(), visible.numpy()))


def test_bone_ratio_loss_matches_reference_on_random_batch():
    g = torch.Generator().manual_seed(0)
    joints = torch.randn(12, 16, 3, generator=g, dtype=torch.float64)
    visible = torch.rand(12, 16, generator=g) > 0.2
    rows = torch.rand(12, generator=g) > 0.3
    expected = reference_bone_ratio(joints.numpy(), rows.numpy(), visible.numpy())
    assert expected > 0
    assert bone_ratio_loss(joints, rows, visible).item() == pytest.approx(expected, rel=1e-12)
    all_visible = np.ones((12, 16), dtype=bool)
    assert bone_ratio_loss(joints, rows).item() == pytest.approx(
        reference_bone_ratio(joints.numpy(), rows.numpy(), all_visible), rel=1e-12
    )


def test_bone_ratio_loss_gradcheck():
    g = torch.Generator().manual_seed(1)
    joints = torch.randn(4, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([True, False, True, True])
    visible = torch.ones(4, 16, dtype=torch.bool)
    visible[0, 15] = False
    visible[2, [1, 12]] = False
    assert torch.autograd.gradcheck(lambda j: bone_ratio_loss(j, rows, visible), (joints,))


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _canonical_ratio_pose(rng: np.random.Generator) -> np.ndarray:
    """A random pose whose weighted lengths are equal within every group (lengths ∝ 1/weight)."""
    hip, leg, shoulder, arm = 1.3, 4.4, 2.2, 2.8  # a different length per group
    p = np.zeros((16, 3))
    p[2] = p[6] + hip * _unit(rng)
    p[3] = p[6] + hip * _unit(rng)
    p[1] = p[2] + leg * _unit(rng)
    p[0] = p[1] + leg / W_LOWER_LEG * _unit(rng)
    p[4] = p[3] + leg * _unit(rng)
    p[5] = p[4] + leg / W_LOWER_LEG * _unit(rng)
    p[8] = p[6] + 5.0 * _unit(rng)
    p[7] = p[8] + 0.7 * _unit(rng)
    p[9] = p[8] + 1.1 * _unit(rng)
    p[12] = p[8] + shoulder * _unit(rng)
    p[13] = p[8] + shoulder * _unit(rng)
    p[11] = p[12] + arm * _unit(rng)
    p[10] = p[11] + arm / W_LOWER_ARM * _unit(rng)
    p[14] = p[13] + arm * _unit(rng)
    p[15] = p[14] + arm / W_LOWER_ARM * _unit(rng)
    return p + rng.normal(size=3)  # anywhere in space


@pytest.mark.parametrize("scale", [0.01, 1.0, 1000.0])
def test_bone_ratio_loss_zero_for_canonical_ratios(scale):
    rng = np.random.default_rng(2)
    poses = np.stack([_canonical_ratio_pose(rng) for _ in range(5)]) * scale
    rows = torch.ones(5, dtype=torch.bool)
    loss = bone_ratio_loss(torch.from_numpy(poses), rows).item()
    assert abs(loss) <= 1e-12 * scale**2  # weighted lengths are ~1-5 at scale 1
    # The same poses with one lower leg 10 % longer are penalized.
    bent = poses.copy()
    bent[:, 0] = bent[:, 1] + 1.1 * (bent[:, 0] - bent[:, 1])
    assert bone_ratio_loss(torch.from_numpy(bent), rows).item() > 1e-4 * scale**2


def test_bone_ratio_loss_no_gradient_to_2d_or_unselected_rows():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(6, 16, 2, generator=g, requires_grad=True)
    depth = torch.randn(6, 16, generator=g, requires_grad=True)
    rows = torch.tensor([True, False, True, False, False, True])
    loss = bone_ratio_loss(joints_for_geometric_loss(xy, depth), rows)
    loss.backward()
    assert xy.grad is None
    assert torch.equal(depth.grad[~rows], torch.zeros(3, 16))
    assert (depth.grad[rows].abs().sum(dim=-1) > 0).all()


def test_bone_ratio_loss_ignores_invisible_joints():
    joints, rows, visible = _hand_batch()
    joints = joints.clone().requires_grad_(True)
    base = bone_ratio_loss(joints, rows, visible)
    base.backward()
    # Row 0's left wrist and row 1's invisible joints get no gradient ...
    assert torch.equal(joints.grad[0, 15], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(joints.grad[1][~visible[1]], torch.zeros(12, 3, dtype=torch.float64))
    assert torch.equal(joints.grad[2], torch.zeros(16, 3, dtype=torch.float64))
    # ... and moving them (even to NaN) changes nothing.
    moved = joints.detach().clone()
    moved[0, 15] = torch.tensor([-7.0, 3.0, 0.5])
    moved[1, 10] = NAN
    assert bone_ratio_loss(moved, rows, visible).item() == base.item()
    # A visible joint does count (the test can fail).
    moved[0, 10] += 1.0
    assert bone_ratio_loss(moved, rows, visible).item() != base.item()


def test_bone_ratio_loss_degenerate_inputs_are_finite():
    joints = torch.zeros(3, 16, 3, requires_grad=True)  # every bone has zero length
    loss = bone_ratio_loss(joints, torch.tensor([True, True, False]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(joints.grad).all()
    # One zero-length bone among normal ones: finite gradient.
    joints2 = torch.randn(2, 16, 3, dtype=torch.float64)
    joints2[:, 1] = joints2[:, 0]
    joints2.requires_grad_(True)
    bone_ratio_loss(joints2, torch.tensor([True, True])).backward()
    assert torch.isfinite(joints2.grad).all()


def test_bone_ratio_loss_no_rows_is_exactly_zero():
    joints = torch.full((3, 16, 3), NAN, requires_grad=True)
    loss = bone_ratio_loss(joints, torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(joints.grad, torch.zeros(3, 16, 3))


# --- pose_loss --------------------------------------------------------------------------------
def _mixed_batch(has_3d: list[bool], seed: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = len(has_3d)
    has = torch.tensor(has_3d)
    depth_target = torch.rand(b, 16, generator=g) * 2 - 1
    depth_target[~has] = NAN  # 2D-only rows have no depth labels
    visible = torch.ones(b, 16, dtype=torch.bool)
    visible[-1, 5] = False
    return dict(
        heatmap_target=torch.rand(b, 16, 8, 8, generator=g),
        depth_target=depth_target,
        has_3d=has,
        visible=visible,
        joints_2d_norm=torch.rand(b, 16, 2, generator=g) * 2 - 1,
    )


def _outputs(b: int, seed: int = 5) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    stacks = [torch.rand(b, 16, 8, 8, generator=g, requires_grad=True) for _ in range(2)]
    return stacks, torch.randn(b, 16, generator=g, requires_grad=True)


def test_pose_loss_depth_term_never_reaches_2d_rows():
    batch = _mixed_batch([True, True, False, False])
    stacks, depth = _outputs(4)
    total, terms = pose_loss(stacks, depth, weights=LossWeights(reg=0.1, geo=0.0), **batch)
    total.backward()
    assert torch.isfinite(total)
    assert torch.equal(depth.grad[2:], torch.zeros(2, 16))
    assert (depth.grad[:2].abs().sum(dim=-1) > 0).all()
    expected_depth = depth_loss(depth[:2], batch["depth_target"][:2], torch.ones(2, dtype=torch.bool)) / 2
    assert terms["depth"].item() == pytest.approx(expected_depth.item())  # 2 rows summed, / B = 4


@pytest.mark.parametrize("geo_rows", ["2d", "all"])
def test_pose_loss_geometric_term_rows(geo_rows):
    batch = _mixed_batch([True, True, False, False])
    stacks, depth = _outputs(4)
    total, terms = pose_loss(stacks, depth, weights=LossWeights(reg=0.0, geo=1.0, geo_rows=geo_rows), **batch)
    total.backward()
    assert terms["geo_2d"].item() > 0 and terms["geo_3d"].item() > 0
    assert (depth.grad[2:].abs().sum(dim=-1) > 0).all()
    if geo_rows == "2d":
        assert torch.equal(depth.grad[:2], torch.zeros(2, 16))
        assert terms["geo"].item() == terms["geo_2d"].item()
    else:
        assert (depth.grad[:2].abs().sum(dim=-1) > 0).all()
        assert terms["geo"].item() == pytest.approx(terms["geo_2d"].item() + terms["geo_3d"].item())
    assert batch["joints_2d_norm"].grad is None


def test_pose_loss_total_is_weighted_sum():
    batch = _mixed_batch([True, False, True, False, False])
    stacks, depth = _outputs(5)
    weights = LossWeights(reg=0.1, geo=0.01)
    total, terms = pose_loss(stacks, depth, weights=weights, **batch)
    heat = sum(((s - batch["heatmap_target"]) ** 2).mean() for s in stacks)
    assert terms["heatmap"].item() == pytest.approx(heat.item())
    expected = terms["heatmap"] + 0.1 * terms["depth"] + 0.01 * terms["geo_2d"]
    assert total.item() == pytest.approx(expected.item())
    assert terms["total"].item() == total.item()


@pytest.mark.parametrize("has_3d", [[False, False, False], [True, True, True]])
@pytest.mark.parametrize("geo_rows", ["2d", "all"])
def test_pose_loss_single_kind_batches_are_finite(has_3d, geo_rows):
    batch = _mixed_batch(has_3d)
    stacks, depth = _outputs(3)
    total, terms = pose_loss(
        stacks, depth, weights=LossWeights(reg=0.1, geo=0.01, geo_rows=geo_rows), **batch
    )
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(s.grad).all() for s in stacks)
    assert torch.isfinite(depth.grad).all()
    if not any(has_3d):
        assert terms["depth"].item() == 0.0 and terms["geo_3d"].item() == 0.0
    else:
        assert terms["geo_2d"].item() == 0.0
        if geo_rows == "2d":
            assert terms["geo"].item() == 0.0


def test_pose_loss_without_depth_is_the_heatmap_loss():
    batch = _mixed_batch([True, False])
    stacks, _ = _outputs(2)
    total, terms = pose_loss(stacks, None, weights=LossWeights(reg=0.1, geo=0.01), **batch)
    assert total.item() == pytest.approx(heatmap_loss(stacks, batch["heatmap_target"]).item())
    assert set(terms) == {"heatmap", "total"}


def test_loss_weights_rejects_unknown_rows():
    with pytest.raises(ValueError, match="geo_rows"):
        LossWeights(reg=0.1, geo=0.01, geo_rows="3d")
