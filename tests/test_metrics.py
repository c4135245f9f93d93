"""Metrics against hand-computed cases (docs/conventions.md, Evaluation and PCKh)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose3d import geometry, metrics, skeleton
from pose3d.skeleton import JOINT_INDEX as J


def _random_pose(rng: np.random.Generator, b: int = 3) -> np.ndarray:
    return rng.normal(scale=300.0, size=(b, 16, 3))


# --- MPJPE, PA-MPJPE --------------------------------------------------------------------------


def test_procrustes_recovers_known_similarity():
    rng = np.random.default_rng(0)
    gt = _random_pose(rng)
    rot = Rotation.from_rotvec([0.3, -1.2, 0.7]).as_matrix()
    scale, shift = 0.37, np.array([120.0, -40.0, 2500.0])
    pred = scale * gt @ rot.T + shift  # a similarity transform of the ground truth
    aligned = geometry.procrustes_align(pred, gt)
    np.testing.assert_allclose(aligned, gt, atol=1e-8)
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), 0.0, atol=1e-8)
    assert np.all(metrics.mpjpe(pred, gt) > 50.0)  # the unaligned error is large


def test_procrustes_does_not_reflect():
    rng = np.random.default_rng(1)
    gt = _random_pose(rng, b=2)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection: no rotation reaches it
    aligned = geometry.procrustes_align(mirrored, gt)
    # The fitted linear map from the centred input to the centred output must be a proper rotation
    # times a positive scale (determinant > 0), so the mirrored pose cannot be undone.
    for a, m in zip(aligned, mirrored, strict=True):
        lin, *_ = np.linalg.lstsq(m - m.mean(0), a - a.mean(0), rcond=None)
        assert np.linalg.det(lin) > 0
    assert np.all(metrics.pa_mpjpe(mirrored, gt) > 10.0)


def test_mpjpe_one_joint_off_by_345():
    gt = np.zeros((2, 16, 3))
    gt[:, :, 0] = np.arange(16) * 100.0
    pred = gt.copy()
    pred[0, J["l_wrist"]] += (3.0, 4.0, 0.0)  # 5 mm off on one of 16 joints
    pred[1] += (50.0, -20.0, 7.0)  # a pure translation: root alignment removes it
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), [5.0 / 16.0, 0.0], atol=1e-12)


def test_mpjpe_root_offset_moves_every_other_joint():
    gt = np.zeros((1, 16, 3))
    pred = gt.copy()
    pred[0, J["pelvis"]] = (0.0, 0.0, 16.0)  # the root moves: after alignment 15 joints are 16 off
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), [15.0])


def test_paper_mpjpe_scale_and_translation_invariant():
    gt = skeleton.canonical_pose_mm()[None] + np.array([100.0, 200.0, 5000.0])
    gt[0, J["thorax"]] += (30.0, 0.0, 0.0)  # the protocol replaces both thoraxes
    pred = 0.031 * skeleton.canonical_pose_mm()[None] + np.array([32.0, 32.0, 32.0])  # "output px"
    pred[0, J["thorax"]] = (-999.0, 5.0, 3.0)
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, rescale=True), [0.0], atol=1e-9)
    np.testing.assert_allclose(metrics.paper_mpjpe(pred, gt), [0.0], atol=1e-9)


def test_paper_mpjpe_hand_case():
    # gt: the canonical pose (bone sum S, root at the origin). pred: the same pose with the head
    # bone lengthened by S (head top moved up by S), so pred's bone sum is 2S and the protocol
    # scales it by 1/2 about the root. Every joint p then lands at p/2 (error |p|/2), except the
    # head top: gt at y = -(spine + head), pred at y = -(spine + head + S)/2.
    s_sum = skeleton.CANONICAL_BONE_SUM_MM
    spine = skeleton.CANONICAL_BONE_LENGTHS_MM[skeleton.BONE_INDEX["spine"]]
    head = skeleton.CANONICAL_BONE_LENGTHS_MM[skeleton.BONE_INDEX["head"]]
    gt = skeleton.canonical_pose_mm()
    pred = gt.copy()
    pred[J["head_top"], 1] -= s_sum
    pred = 3.0 * pred + 7.0  # units and position of the prediction do not matter
    gt_eval = gt.copy()
    gt_eval[J["thorax"]] = gt[J["upper_neck"]] / 2  # pelvis at the origin
    expected = np.linalg.norm(gt_eval, axis=-1) / 2
    expected[J["head_top"]] = abs(s_sum - spine - head) / 2
    got = metrics.mpjpe(pred[None], gt[None], rescale=True)
    np.testing.assert_allclose(got, [expected.mean()], rtol=1e-12)


def test_mpjpe_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        metrics.mpjpe(np.zeros((2, 16, 3)), np.zeros((2, 17, 3)))


# --- per-group and per-action tables ----------------------------------------------------------


def test_per_group_mean_hand_case():
    got = metrics.per_group_mean(np.array([1.0, 2.0, 3.0, 10.0]), np.array(["a", "a", "a", "b"]))
    assert got.means == {"a": 2.0, "b": 10.0}
    assert got.counts == {"a": 3, "b": 1}
    assert got.overall == 4.0  # 16 / 4
    assert got.mean_of_groups == 6.0  # (2 + 10) / 2


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("WalkDog_1", "WalkDog"),
        ("TakingPhoto 1", "Photo"),
        ("Photo", "Photo"),
        ("Walking 1", "Walking"),
        ("WalkTogether 2", "WalkTogether"),
        ("SittingDown", "SittingDown"),
        ("Sitting 1", "Sitting"),
        ("S8_WalkDog_1.55011271", "WalkDog"),
        ("walkingdog", "WalkDog"),
        ("Directions", "Directions"),
    ],
)
def test_normalize_action(name, action):
    assert metrics.normalize_action(name) == action


def test_normalize_action_rejects_unknown():
    with pytest.raises(ValueError, match="Dancing"):
        metrics.normalize_action("Dancing 1")


def test_per_action_table_hand_case():
    values = np.array([10.0, 20.0, 30.0, 40.0, 60.0])
    actions = np.array(["Walking 1", "WalkDog_1", "Walking_2", "TakingPhoto 1", "WalkDog"])
    table = metrics.per_action_table(values, actions)
    assert list(table.means) == list(metrics.H36M_ACTIONS)
    assert len(metrics.H36M_ACTIONS) == 15
    assert table.means["Walking"] == 20.0
    assert table.means["WalkDog"] == 40.0
    assert table.means["Photo"] == 40.0
    assert math.isnan(table.means["Eating"])
    assert table.counts["Walking"] == 2 and table.counts["Eating"] == 0
    assert table.average == pytest.approx((20.0 + 40.0 + 40.0) / 3)  # mean of the action means
    assert table.overall == pytest.approx(160.0 / 5)  # mean over samples
    assert len(table.missing) == 12 and "Eating" in table.missing


# --- PCKh -------------------------------------------------------------------------------------


def test_pckh_threshold_boundary_counts():
    gt = np.zeros((1, 16, 2))
    pred = gt.copy()
    pred[0, J["r_ankle"]] = (3.0, 4.0)  # distance 5 = 0.5 x head size 10: correct (<=)
    pred[0, J["l_ankle"]] = (3.0, 4.0001)  # just above: wrong
    visible = np.ones((1, 16), bool)
    res = metrics.pckh(pred, gt, visible, np.array([10.0]))
    assert res.correct[0, J["r_ankle"]]
    assert not res.correct[0, J["l_ankle"]]
    assert res.per_joint[J["r_ankle"]] == 1.0 and res.per_joint[J["l_ankle"]] == 0.0
    assert np.isnan(res.per_joint[J["pelvis"]]) and np.isnan(res.per_joint[J["thorax"]])
    assert res.mean == pytest.approx(13 / 14)
    assert res.total == pytest.approx(13 / 14)


def test_pckh_mean_and_total_differ_with_unequal_visibility():
    # Row 0: every joint visible, all wrong except r_ankle. Row 1: only r_ankle visible, correct.
    # l_wrist is never visible. Per joint: r_ankle 2/2, 12 others 0/1, l_wrist NaN.
    gt = np.zeros((2, 16, 2))
    pred = np.full((2, 16, 2), 100.0)
    pred[:, J["r_ankle"]] = 0.0
    visible = np.zeros((2, 16), bool)
    visible[0] = True
    visible[1, J["r_ankle"]] = True
    visible[:, J["l_wrist"]] = False
    res = metrics.pckh(pred, gt, visible, np.array([10.0, 10.0]))
    assert np.isnan(res.per_joint[J["l_wrist"]])
    assert res.mean == pytest.approx(1 / 13)  # common mean over the 13 joints ever visible
    assert res.total == pytest.approx(2 / 14)  # pooled: 2 correct of 2 + 12 visible


def test_pckh_refuses_nan_head_size_naming_row_and_joint():
    gt = np.zeros((3, 16, 2))
    visible = np.zeros((3, 16), bool)
    visible[0, :] = True
    visible[2, J["l_knee"]] = True
    with pytest.raises(ValueError, match=r"row 2.*l_knee"):
        metrics.pckh(gt, gt, visible, np.array([10.0, np.nan, np.nan]))
    with pytest.raises(ValueError, match=r"row 2.*l_knee"):
        metrics.pckh(gt, gt, visible, np.array([10.0, 5.0, 0.0]))
    # Row 1 has no visible joint, so its missing head box does not matter.
    res = metrics.pckh(gt, gt, visible, np.array([10.0, np.nan, 4.0]))
    assert res.total == 1.0


# --- 3DPCK, AUC -------------------------------------------------------------------------------


def _pose_pair_with_errors(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gt with integer coordinates and pelvis at the origin; pred = gt with the 14 scored joints
    moved along x by ``errors`` (mm), so the root-aligned errors are exactly ``errors``."""
    gt = np.arange(48, dtype=np.float64).reshape(1, 16, 3) * 10.0
    gt -= gt[:, J["pelvis"] : J["pelvis"] + 1]
    pred = gt.copy()
    pred[0, skeleton.SCORED_14, 0] += errors
    return pred + np.array([500.0, -300.0, 4000.0]), gt  # plus a translation alignment removes


def test_pck3d_at_150():
    errors = np.array([0, 50, 100, 149.9, 150, 150.1, 200, 300, 10, 20, 30, 400, 500, 600])
    pred, gt = _pose_pair_with_errors(errors)
    # <= 150: 0, 50, 100, 149.9, 150, 10, 20, 30 -> 8 of 14.
    np.testing.assert_allclose(metrics.pck3d(pred, gt), [8 / 14])
    np.testing.assert_allclose(metrics.pck3d(pred, gt, threshold=100.0), [6 / 14])


def test_auc3d_of_evenly_spaced_errors():
    # Errors 10k + 2.5 (k = 0..13) against thresholds 5i (i = 0..30): joint k is within the
    # thresholds i >= 2k + 1, i.e. 30 - 2k of the 31. AUC = sum_k (30 - 2k) / (31 * 14) = 238 / 434.
    pred, gt = _pose_pair_with_errors(10.0 * np.arange(14) + 2.5)
    np.testing.assert_allclose(metrics.auc3d(pred, gt), [238 / 434])
    # Errors exactly 10k sit on thresholds, which count (<=): 31 - 2k each, AUC = 252 / 434.
    pred, gt = _pose_pair_with_errors(10.0 * np.arange(14))
    np.testing.assert_allclose(metrics.auc3d(pred, gt), [252 / 434])


def test_pck3d_pelvis_hip_shift():
    # pred: pelvis at the origin, upper neck 500 mm above. gt: the same pose with its pelvis and
    # hips 0.2 of the way (100 mm) up toward the neck, as 3DHP's pelvis sits higher.
    pred = np.arange(48, dtype=np.float64).reshape(1, 16, 3) * 10.0
    pred[0, J["pelvis"]] = 0.0
    pred[0, J["upper_neck"]] = (0.0, -500.0, 0.0)
    gt = pred.copy()
    moved = [J["pelvis"], J["r_hip"], J["l_hip"]]
    gt[0, moved] += (0.0, -100.0, 0.0)
    pred_before = pred.copy()
    # Without the shift, root alignment at different pelvises puts the 12 non-hip scored joints
    # 100 mm off; only the two hips (moved with the pelvis) agree.
    np.testing.assert_allclose(metrics.pck3d(pred, gt, threshold=50.0), [2 / 14])
    np.testing.assert_allclose(metrics.pck3d(pred, gt, threshold=50.0, shift_pelvis_hips=0.2), [1.0])
    np.testing.assert_allclose(metrics.auc3d(pred, gt, shift_pelvis_hips=0.2), [1.0])
    np.testing.assert_array_equal(pred, pred_before)  # the input is not modified


# --- bone symmetry ----------------------------------------------------------------------------


def test_bone_symmetry_hand_case():
    pose = skeleton.canonical_pose_mm()  # left/right symmetric, arms and legs along +y
    sym = metrics.bone_symmetry(pose[None])
    for limb in ("upper_arm", "lower_arm", "upper_leg", "lower_leg"):
        np.testing.assert_allclose(sym[limb], [0.0], atol=1e-9)
    pose[J["l_elbow"], 1] += 3.0  # left upper arm +3
    pose[J["l_wrist"], 1] += 3.0 + 7.0  # left lower arm +7 (its elbow end moved by 3 too)
    pose[J["r_ankle"], 1] += 5.0  # right lower leg +5
    for d in (3, 2):  # the metric works on 3D (mm) and on 2D (px) joints
        sym = metrics.bone_symmetry(pose[None, :, :d])
        np.testing.assert_allclose(sym["upper_arm"], [3.0], atol=1e-9)
        np.testing.assert_allclose(sym["lower_arm"], [7.0], atol=1e-9)
        np.testing.assert_allclose(sym["upper_leg"], [0.0], atol=1e-9)
        np.testing.assert_allclose(sym["lower_leg"], [5.0], atol=1e-9)


def test_pa_mpjpe_scores_a_diverged_prediction_nan_and_the_rest_normally():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(3, 16, 3)) * 100
    pred = gt + rng.normal(size=gt.shape)
    pred[1, 4, 2] = np.nan
    pred[2, 0, 0] = np.inf
    expected = metrics.pa_mpjpe(pred[:1], gt[:1])
    got = metrics.pa_mpjpe(pred, gt)
    assert np.isnan(got[1:]).all()
    np.testing.assert_allclose(got[0], expected[0])
