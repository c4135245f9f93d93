"""targets.py and decode.py: render -> decode round trips and the depth scale (docs/conventions.md,
Pixel convention and Targets)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose3d import decode, geometry, skeleton, targets


@pytest.mark.parametrize("out_size", [64, 32])
def test_render_then_decode_within_a_quarter_pixel(out_size):
    rng = np.random.default_rng(out_size)
    # Away from the border, where the decoder has both neighbours to compare.
    joints = rng.uniform(1.0, out_size - 2.0, (8, 16, 2))
    hm = targets.render_heatmaps(joints, np.ones((8, 16), bool), out_size)
    assert hm.shape == (8, 16, out_size, out_size) and hm.dtype == np.float32
    decoded, peak = decode.heatmaps_to_joints(hm)
    # The argmax is the nearest pixel centre (offset d in [-0.5, 0.5]); the quarter shift toward the
    # higher neighbour leaves |d -+ 0.25| <= 0.25 per axis (float32 ties may add ~1e-6).
    assert np.abs(decoded - joints).max() <= 0.25 + 1e-5
    np.testing.assert_array_equal(
        np.abs(decoded - np.round(joints)), np.where(np.round(joints) == joints, 0, 0.25)
    )
    # Peak value of a unit Gaussian sampled at most half a pixel off per axis.
    assert np.all(peak >= np.exp(-0.25) - 1e-6) and np.all(peak <= 1.0)


def test_render_peak_and_shape():
    hm = targets.render_heatmaps(np.array([[[10.0, 20.0]]]), np.ones((1, 1), bool), 32)
    assert hm[0, 0, 20, 10] == 1.0  # row y, column x
    assert hm[0, 0, 20, 11] == pytest.approx(np.exp(-0.5))  # sigma = 1 output pixel
    assert hm[0, 0, 22, 10] == pytest.approx(np.exp(-2.0))


def test_invisible_or_outside_joints_give_zero_maps():
    joints = np.array([[[10.0, 10.0], [10.0, 10.0], [40.0, 10.0], [-0.6, 5.0]]])
    visible = np.array([[True, False, True, True]])
    hm = targets.render_heatmaps(joints, visible, 32)
    assert hm[0, 0].max() == 1.0
    assert not hm[0, 1].any() and not hm[0, 2].any() and not hm[0, 3].any()


def test_pixels_per_mm_and_depth_targets_hand_case():
    # A pose parallel to the image plane at Z = 5 m, seen by a pinhole with f = 1000 px:
    # every bone projects at f / Z = 0.2 px per mm.
    pose = skeleton.canonical_pose_mm()[None] + np.array([0.0, 0.0, 5000.0])
    f, c = np.array([1000.0, 1000.0]), np.array([31.5, 31.5])
    joints_2d = geometry.project(pose, f, c)
    visible = np.ones((1, 16), bool)
    np.testing.assert_allclose(targets.pixels_per_mm(joints_2d, pose, visible), [0.2], rtol=1e-12)
    # A joint with no label does not count: corrupt it and hide it.
    corrupted = joints_2d.copy()
    corrupted[0, skeleton.JOINT_INDEX["l_wrist"]] += 50.0
    hidden = visible.copy()
    hidden[0, skeleton.JOINT_INDEX["l_wrist"]] = False
    np.testing.assert_allclose(targets.pixels_per_mm(corrupted, pose, hidden), [0.2], rtol=1e-12)
    assert np.isnan(targets.pixels_per_mm(joints_2d, pose, np.zeros((1, 16), bool)))[0]
    # Depth: 160 mm behind the root at 0.2 px/mm is 32 px, half the 64-px map: z_norm = +1.
    deep = pose.copy()
    deep[0, skeleton.JOINT_INDEX["head_top"], 2] += 160.0
    deep[0, skeleton.JOINT_INDEX["r_wrist"], 2] -= 80.0
    z = targets.depth_targets(deep, np.array([0.2]), 64)
    assert z[0, skeleton.JOINT_INDEX["head_top"]] == pytest.approx(1.0)
    assert z[0, skeleton.JOINT_INDEX["r_wrist"]] == pytest.approx(-0.5)
    assert z[0, skeleton.ROOT] == 0.0
    np.testing.assert_allclose(decode.depth_to_px(z, 64)[0, [skeleton.ROOT, 9]], [32.0, 64.0], rtol=1e-6)


def _turned_pose(deg: float) -> np.ndarray:
    """The canonical pose turned about the vertical axis and bent a little, (16, 3) mm, root at 0."""
    pose = skeleton.canonical_pose_mm() @ Rotation.from_euler("y", deg, degrees=True).as_matrix().T
    j = skeleton.JOINT_INDEX
    pose[j["r_wrist"]] += (0.0, -150.0, -200.0)  # an arm reaching toward the camera
    pose[j["l_knee"]] += (0.0, -60.0, 150.0)
    return pose


def test_to_3d_mm_inverts_orthographic_targets_exactly():
    # Orthographic camera: 2D = s * xy + offset exactly, so 2D + depth targets give the pose back
    # up to scale, which the canonical rescale removes.
    pose = _turned_pose(35.0)[None] + np.array([100.0, -50.0, 4000.0])
    joints_out = pose[..., :2] * 0.013 + 30.0  # output px
    visible = np.ones((1, 16), bool)
    s = targets.pixels_per_mm(joints_out, pose, visible)
    np.testing.assert_allclose(s, [0.013])
    depth = targets.depth_targets(pose, s, 64)
    got = decode.to_3d_mm(joints_out, depth, 64)
    expected = geometry.root_align(geometry.rescale_to_canonical(pose))
    np.testing.assert_allclose(got, expected, atol=1e-3)  # depth targets are float32
    root = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(
        decode.to_3d_mm(joints_out, depth, 64, root_mm=root), expected + root[:, None], atol=1e-3
    )


@pytest.mark.parametrize("distance_mm", [5000.0, 20000.0])
def test_to_3d_mm_recovers_a_perspective_pose_up_to_the_orthographic_error(distance_mm):
    # A real camera: the targets assume one scale (weak perspective), the image has f / z_j per joint.
    pose = _turned_pose(35.0)[None] + np.array([0.0, 0.0, distance_mm])
    f = 1000.0 * distance_mm / 5000.0  # the person fills a similar crop at any distance
    joints_out = geometry.project(pose, np.array([f, f]), np.array([31.5, 31.5])) * 0.1
    s = targets.pixels_per_mm(joints_out, pose, np.ones((1, 16), bool))
    depth = targets.depth_targets(pose, s, 64)
    got = decode.to_3d_mm(joints_out, depth, 64)
    expected = geometry.root_align(geometry.rescale_to_canonical(pose))
    # First-order perspective error of a joint at xy (from the optical axis, through the root) and
    # depth dz from the root: f xy / (Z + dz) - f xy / Z ~ -f xy dz / Z^2, i.e. |xy| |dz| / Z in mm at
    # the root's scale. Twice the largest such term bounds it after the scale fit and rescale.
    rel = pose[0] - pose[0, skeleton.ROOT]
    bound = 2.0 * np.max(np.linalg.norm(rel[:, :2], axis=-1)) * np.max(np.abs(rel[:, 2])) / distance_mm
    err = np.linalg.norm(got - expected, axis=-1)
    assert err.max() < bound, (err.max(), bound)
    assert err.max() > 0.05 * bound  # the approximation error is real, not hidden by the check
