"""skeleton.py: joint order, bones, groups, canonical skeleton and mappings
(docs/conventions.md, Joints and skeleton, Canonical skeleton and Joint mappings), with the Human3.6M exp-map
mocap as real data."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.synthetic.posegap import h36m_expmap_positions as _forward_kinematics
from pose3d import skeleton
from pose3d.skeleton import JOINT_INDEX as J
from pose3d.skeleton import JOINT_NAMES

# Written out by name from the bone list in docs/conventions.md (Joints and skeleton).
EXPECTED_BONES = {
    "r_lower_leg": {"r_ankle", "r_knee"},
    "r_upper_leg": {"r_knee", "r_hip"},
    "r_hip": {"r_hip", "pelvis"},
    "l_hip": {"pelvis", "l_hip"},
    "l_upper_leg": {"l_hip", "l_knee"},
    "l_lower_leg": {"l_knee", "l_ankle"},
    "r_lower_arm": {"r_wrist", "r_elbow"},
    "r_upper_arm": {"r_elbow", "r_shoulder"},
    "r_shoulder": {"r_shoulder", "upper_neck"},
    "l_shoulder": {"upper_neck", "l_shoulder"},
    "l_upper_arm": {"l_shoulder", "l_elbow"},
    "l_lower_arm": {"l_elbow", "l_wrist"},
    "spine": {"pelvis", "upper_neck"},
    "head": {"upper_neck", "head_top"},
}


def test_joint_order_is_mpii():
    assert JOINT_NAMES[:8] == ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax")
    assert JOINT_NAMES[8:] == (
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    )  # fmt: skip
    assert skeleton.ROOT == 6 and skeleton.THORAX == 7 and skeleton.UPPER_NECK == 8
    assert sorted(JOINT_NAMES[i] for i in skeleton.SCORED_14) == sorted(
        set(JOINT_NAMES) - {"pelvis", "thorax"}
    )


def test_bones_connect_the_right_joints():
    assert len(skeleton.BONES) == len(skeleton.BONE_NAMES) == 14
    for name, (a, b) in zip(skeleton.BONE_NAMES, skeleton.BONES, strict=True):
        assert {JOINT_NAMES[a], JOINT_NAMES[b]} == EXPECTED_BONES[name], name
    assert set(skeleton.BONE_NAMES) == set(EXPECTED_BONES)
    # The thorax is on no bone (it is derived or replaced in evaluation).
    assert skeleton.THORAX not in skeleton.BONE_ARRAY


def _swap_side(name: str) -> str:
    if name.startswith("r_"):
        return "l_" + name[2:]
    if name.startswith("l_"):
        return "r_" + name[2:]
    return name


def test_flip_permutation_is_an_involution_swapping_sides():
    perm = skeleton.FLIP_PERMUTATION
    np.testing.assert_array_equal(perm[perm], np.arange(16))
    for i, name in enumerate(JOINT_NAMES):
        assert JOINT_NAMES[perm[i]] == _swap_side(name)
    # Flipping maps each bone onto its mirror bone.
    bone_of = {frozenset(b): n for n, b in zip(skeleton.BONE_NAMES, skeleton.BONES, strict=True)}
    for name, (a, b) in zip(skeleton.BONE_NAMES, skeleton.BONES, strict=True):
        assert bone_of[frozenset((perm[a], perm[b]))] == _swap_side(name)


def test_groups_hold_the_bones_spec_lists():
    expected = {
        "legs": {"r_lower_leg", "r_upper_leg", "l_upper_leg", "l_lower_leg"},
        "arms": {"r_lower_arm", "r_upper_arm", "l_upper_arm", "l_lower_arm"},
        "hips": {"r_hip", "l_hip"},
        "shoulders": {"r_shoulder", "l_shoulder"},
    }
    weights = {
        "lower_leg": 1.0085885,
        "upper_leg": 1.0,
        "lower_arm": 1.1375361,
        "upper_arm": 1.0,
        "hip": 1.0,
        "shoulder": 1.0,
    }
    assert {
        g: {skeleton.BONE_NAMES[b] for b in bones} for g, bones in skeleton.BONE_GROUPS.items()
    } == expected
    assert skeleton.GROUP_NAMES == tuple(expected)
    for g, name in enumerate(skeleton.GROUP_NAMES):
        valid = skeleton.GROUP_SLOT_VALID[g]
        assert valid.sum() == len(expected[name]) and valid[: valid.sum()].all()  # padding at the end
        slots = [skeleton.BONE_NAMES[b] for b in skeleton.GROUP_BONE_INDEX[g][valid]]
        assert set(slots) == expected[name]
        for bone, w in zip(slots, skeleton.GROUP_BONE_WEIGHT[g][valid], strict=True):
            assert w == weights[bone[2:]], bone
        assert np.all(skeleton.GROUP_BONE_WEIGHT[g][~valid] == 0)
    # Torso bones are left out on purpose.
    grouped = set(skeleton.GROUP_BONE_INDEX[skeleton.GROUP_SLOT_VALID])
    assert skeleton.BONE_INDEX["spine"] not in grouped and skeleton.BONE_INDEX["head"] not in grouped


def test_canonical_lengths():
    lengths = dict(zip(skeleton.BONE_NAMES, skeleton.CANONICAL_BONE_LENGTHS_MM, strict=True))
    assert skeleton.CANONICAL_BONE_LENGTHS_MM.sum() == pytest.approx(4296.99233, abs=1e-9)
    for name, value in lengths.items():
        assert value > 0
        if name.startswith("r_"):
            assert value == pytest.approx(lengths["l_" + name[2:]], abs=1e-12)
    # The mean lengths of docs/conventions.md (Canonical skeleton) scaled by the canonical sum over
    # their own sum (4248.5 from the rounded means; 4248.6 is the unrounded sum), e.g. lower leg
    # 454.2 / 4248.5 * 4296.99233.
    spec_sum = 2 * (454.2 + 442.9 + 132.9 + 251.7 + 278.9) + 209.7 + 229.8 + 572.8 + 115.0
    assert lengths["r_lower_leg"] == pytest.approx(454.2 * 4296.99233 / spec_sum, rel=1e-9)
    assert lengths["spine"] == pytest.approx(572.8 * 4296.99233 / spec_sum, rel=1e-9)
    # The canonical pose has exactly these bones.
    np.testing.assert_allclose(
        skeleton.bone_lengths(skeleton.canonical_pose_mm()), skeleton.CANONICAL_BONE_LENGTHS_MM
    )


# --- mappings ---------------------------------------------------------------------------------


def test_mapping_availability():
    all16 = np.ones(16, bool)
    for m in (skeleton.H36M17, skeleton.H36M32, skeleton.MPI3DHP17, skeleton.MPI3DHP28):
        np.testing.assert_array_equal(m.available, all16, err_msg=m.name)
        np.testing.assert_array_equal(m.direct, np.arange(16) != skeleton.THORAX, err_msg=m.name)
        assert m.derived.keys() == {skeleton.THORAX}
    np.testing.assert_array_equal(skeleton.MPII16.direct, all16)
    masked = {"pelvis", "thorax", "upper_neck", "head_top"}
    np.testing.assert_array_equal(skeleton.COCO17.available, [n not in masked for n in JOINT_NAMES])


def test_coco17_masks_missing_joints():
    rng = np.random.default_rng(0)
    coco = rng.uniform(1, 100, (3, 17, 2))
    joints, vis = skeleton.COCO17.apply(coco)
    missing = [J[n] for n in ("pelvis", "thorax", "upper_neck", "head_top")]
    assert not vis[:, missing].any() and vis.sum() == 3 * 12
    assert np.all(joints[:, missing] == 0)
    # COCO: 5 l_shoulder, 6 r_shoulder, 15 l_ankle, 16 r_ankle.
    np.testing.assert_array_equal(joints[:, J["l_shoulder"]], coco[:, 5])
    np.testing.assert_array_equal(joints[:, J["r_ankle"]], coco[:, 16])


def test_derived_thorax_and_its_visibility():
    src = np.random.default_rng(1).normal(size=(2, 17, 3))
    vis = np.ones((2, 17), bool)
    vis[1, 11] = False  # mmpose H36M: 11 l_shoulder, 14 r_shoulder
    joints, v = skeleton.H36M17.apply(src, vis)
    np.testing.assert_allclose(joints[:, skeleton.THORAX], (src[:, 11] + src[:, 14]) / 2)
    assert v[0, skeleton.THORAX] and not v[1, skeleton.THORAX]
    assert not v[1, J["l_shoulder"]] and v[1, J["r_shoulder"]]


def test_h36m32_agrees_with_h36m17_through_the_standard_subset():
    subset = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(4, 32, 3))
    vis = rng.random((4, 32)) < 0.8
    j32, v32 = skeleton.H36M32.apply(raw, vis)
    j17, v17 = skeleton.H36M17.apply(raw[:, subset], vis[:, subset])
    np.testing.assert_array_equal(j32, j17)
    np.testing.assert_array_equal(v32, v17)


def test_3dhp28_agrees_with_3dhp17():
    # The official test set's 17 joints are these of the 28 (head_top, neck, r_sho, r_elb, r_wri,
    # l_sho, l_elb, l_wri, r_hip, r_knee, r_ank, l_hip, l_knee, l_ank, pelvis, spine, head).
    subset = [7, 5, 14, 15, 16, 9, 10, 11, 23, 24, 25, 18, 19, 20, 4, 3, 6]
    raw = np.random.default_rng(3).normal(size=(2, 28, 3))
    np.testing.assert_array_equal(
        skeleton.MPI3DHP28.apply(raw)[0], skeleton.MPI3DHP17.apply(raw[:, subset])[0]
    )


def test_apply_rejects_wrong_joint_count():
    with pytest.raises(ValueError, match="h36m17"):
        skeleton.H36M17.apply(np.zeros((2, 16, 3)))


# --- real data: forward kinematics of the Human3.6M exp-map mocap (docs/conventions.md, Joint mappings) ---

# The forward kinematics is data_prep.synthetic.posegap's (the pose-gap measurement reads the
# fixture's exp-map with it); these tests check it against the spec's bone lengths.


def test_expmap_forward_kinematics_gives_spec_bone_lengths(fixtures_dir):
    rows = np.loadtxt(fixtures_dir / "mocap" / "h36m_expmap_S1" / "walking_1.txt", delimiter=",")
    assert rows.shape[1] == 99
    joints, vis = skeleton.H36M32.apply(_forward_kinematics(rows[::500]))
    assert vis.all()
    lengths = skeleton.bone_lengths(joints)  # (N, 14) mm
    bi = skeleton.BONE_INDEX
    # Bones that are a single offset of the 32-joint skeleton have exactly its length in every frame.
    exact = {
        "r_lower_leg": 454.206447, "l_lower_leg": 454.206590, "r_upper_leg": 442.894612,
        "l_upper_leg": 442.894413, "r_hip": 132.948591, "l_hip": 132.948826, "r_lower_arm": 251.728680,
        "l_lower_arm": 251.733451, "r_upper_arm": 278.892924, "l_upper_arm": 278.882773, "head": 115.002227,
    }  # fmt: skip
    for name, value in exact.items():
        np.testing.assert_allclose(lengths[:, bi[name]], value, rtol=1e-9, err_msg=name)
    # Shoulders and spine span several moving joints; their spread is +-20-26 mm
    # (docs/conventions.md, Canonical skeleton).
    assert np.all(np.abs(lengths[:, bi["r_shoulder"]] - 209.7) < 80)
    assert np.all(np.abs(lengths[:, bi["spine"]] - 572.8) < 80)
    # The spine chain (0 -> 11 -> 12 -> 13 -> 14) cannot be longer than its offsets laid end to end.
    assert np.all(lengths[:, bi["spine"]] <= 0.1 + 233.383263 + 257.077681 + 121.134938 + 1e-6)
    # Left and right agree between arms and legs: hip axis and shoulder axis point the same way.
    hip_axis = joints[:, J["l_hip"]] - joints[:, J["r_hip"]]
    shoulder_axis = joints[:, J["l_shoulder"]] - joints[:, J["r_shoulder"]]
    assert np.all(np.sum(hip_axis * shoulder_axis, -1) > 0)
    # The head top is above the upper neck, which is above the pelvis (y up in the mocap).
    assert np.all(joints[:, J["head_top"], 1] > joints[:, J["upper_neck"], 1])
    assert np.all(joints[:, J["upper_neck"], 1] > joints[:, J["pelvis"], 1] + 400)


def _every_tenth_frame(path) -> np.ndarray:
    lines = path.read_text().splitlines()[::10]
    return np.array([[float(v) for v in line.split(",")] for line in lines])


def test_expmap_mean_bone_lengths_match_spec(fixtures_dir):
    """The mean 16-joint bone lengths of docs/conventions.md (Canonical skeleton): every 10th frame
    of the 6 S1 files, 1298 frames."""
    files = sorted((fixtures_dir / "mocap" / "h36m_expmap_S1").glob("*.txt"))
    assert len(files) == 6
    frames = np.concatenate([_every_tenth_frame(f) for f in files])
    assert len(frames) == 1298
    joints, _ = skeleton.H36M32.apply(_forward_kinematics(frames))
    mean = dict(zip(skeleton.BONE_NAMES, skeleton.bone_lengths(joints).mean(0), strict=True))
    spec = {
        "r_shoulder": 209.7,
        "l_shoulder": 229.8,
        "spine": 572.8,
        "r_lower_leg": 454.2,
        "r_upper_arm": 278.9,
    }
    for name, value in spec.items():
        assert mean[name] == pytest.approx(value, abs=0.051), name  # docs/conventions.md rounds to 0.1 mm
    assert sum(mean.values()) == pytest.approx(4248.6, abs=0.051)
