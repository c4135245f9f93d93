"""The synthetic pose gap: the ASF/AMC reader, pose clusters, the lab's clusters, composed poses
within the bank's joint limits, and the gap measured on the real fixtures (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.synthetic import asfamc, posebank, posegap
from pose3d import skeleton

# --- ASF/AMC ---------------------------------------------------------------------------------

_ASF = """# a two-bone leg
:version 1.10
:name test
:units
  mass 1.0
  length 0.45
  angle deg
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name thigh
     direction 0 -1 0
     length 2
     axis 0 0 0  XYZ
    dof rx
    limits (-160.0 20.0)
  end
  begin
     id 2
     name shin
     direction 0 -1 0
     length 3
     axis 0 0 90  XYZ
  end
:hierarchy
  begin
    root thigh
    thigh shin
  end
"""
_AMC = (  # CRLF line ends, as CMU writes them
    ":FULLY-SPECIFIED\r\n:DEGREES\r\n1\r\nroot 1 2 3 0 0 0\r\nthigh 0\r\n"
    "2\r\nroot 1 2 3 0 0 90\r\nthigh 90\r\n"
)


def _write(tmp_path: Path, asf: str = _ASF, amc: str = _AMC) -> tuple[Path, Path]:
    a, m = tmp_path / "t.asf", tmp_path / "t.amc"
    a.write_text(asf)
    m.write_bytes(amc.encode())
    return a, m


def test_asf_amc_forward_kinematics_by_hand(tmp_path: Path) -> None:
    a, m = _write(tmp_path)
    skel = asfamc.read_asf(a)
    assert [b.name for b in skel.bones] == ["thigh", "shin"]
    assert skel.length_unit_m == pytest.approx(0.0254 / 0.45)
    motion = asfamc.read_amc(m, skel)
    np.testing.assert_array_equal(motion.frame_numbers, [1, 2])
    assert motion.bones["thigh"].shape == (2, 1)
    pos, rot = asfamc.forward_kinematics(skel, motion)
    # Frame 1: rest pose at the root (1, 2, 3): the leg hangs straight down, 2 + 3 units.
    np.testing.assert_allclose(pos["thigh"][0], [1, 0, 3], atol=1e-12)
    np.testing.assert_allclose(pos["shin"][0], [1, -3, 3], atol=1e-12)
    # Frame 2: the root turns 90 degrees about z (R = Rz), the thigh 90 about x in its frame:
    # thigh end = Rz @ Rx @ (0, -2, 0) = Rz @ (0, 0, -2) = (0, 0, -2); the shin (no dofs) follows.
    np.testing.assert_allclose(pos["thigh"][1], [1, 2, 1], atol=1e-12)
    np.testing.assert_allclose(pos["shin"][1], [1, 2, -2], atol=1e-12)
    np.testing.assert_allclose(rot["shin"][1] @ rot["shin"][1].T, np.eye(3), atol=1e-12)


def test_asf_amc_reads_the_cmu_fixture(fixtures_dir: Path) -> None:
    asf, amc = fixtures_dir / "mocap" / "cmu_11.asf", fixtures_dir / "mocap" / "cmu_11_01.amc"
    if not amc.exists():
        pytest.skip(f"mocap fixture not found at {amc}")
    skel = asfamc.read_asf(asf)
    motion = asfamc.read_amc(amc, skel)
    assert len(skel.bones) == 30 and len(motion.frame_numbers) == 597
    np.testing.assert_array_equal(motion.frame_numbers, np.arange(1, 598))
    pos, _ = asfamc.forward_kinematics(skel, motion)
    for bone in skel.bones:  # every bone keeps its length in every frame
        lengths = np.linalg.norm(pos[bone.name] - pos[bone.parent], axis=-1)
        np.testing.assert_allclose(lengths, bone.length, rtol=1e-9, err_msg=bone.name)
    dirs, aux, frames = posebank.asf_amc_poses(asf, amc)
    assert dirs.shape == (597, 14, 3) and aux.shape == (597, 4, 3)
    angles = posebank.joint_angles(dirs)
    for side in ("r", "l"):  # knees bend backwards and not flat, elbows do not fold flat
        assert 0.0 <= angles[f"{side}_knee"].min() and angles[f"{side}_knee"].max() < 150.0
        assert angles[f"{side}_elbow"].max() < 165.0
    joints = posebank.joints_from_directions(dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)
    j = skeleton.JOINT_INDEX
    assert np.all(joints[:, j["head_top"], 1] - joints[:, j["pelvis"], 1] > 400.0)  # upright, y up
    assert aux[:, posebank.AUX_INDEX["r_foot"], 2].mean() > 0.7  # feet point forward


@pytest.mark.parametrize(
    ("asf_edit", "amc_edit", "message"),
    [
        (None, ("thigh 90", "thigh 90 5"), r"t\.amc, line 8: bone thigh needs 1 values, got 2"),
        (None, ("thigh 90", "knee 90"), r"t\.amc, line 8: unknown bone 'knee'"),
        (None, ("thigh 90", "thigh ninety"), r"t\.amc, line 8: bone thigh: not a number"),
        (None, ("thigh 0\r\n", ""), r"t\.amc, line 3: frame 1 lacks thigh"),
        (None, ("90\r\nthigh 90", "90\r\nroot 0 0 0 0 0 0\r\nthigh 90"), r"line 8: bone root twice"),
        (("length 3", "lenght 3"), None, r"t\.asf, line 23: bone block lacks length"),
        (("axis 0 0 90  XYZ", "axis 0 0 90  XYY"), None, r"t\.asf, line 28: axis order"),
        (("dof rx", "dof rx rw"), None, r"t\.asf, line 20: dof must be"),
        (("direction 0 -1 0\n     length 2", "direction 0 -1\n     length 2"), None, r"line 17: direction"),
        (("thigh shin", "shin thigh"), None, r"t\.asf: the :hierarchy has a cycle|two parents"),
    ],
)  # fmt: skip
def test_malformed_asf_amc_name_the_file_and_line(
    tmp_path: Path, asf_edit: tuple[str, str] | None, amc_edit: tuple[str, str] | None, message: str
) -> None:
    asf = _ASF.replace(*asf_edit) if asf_edit else _ASF
    amc = _AMC.replace(*amc_edit) if amc_edit else _AMC
    a, m = _write(tmp_path, asf, amc)
    with pytest.raises(ValueError, match=message):
        asfamc.read_amc(m, asfamc.read_asf(a))


# --- clusters, the lab's share, composed poses ----------------------------------------------------


def test_pose_clusters_are_deterministic_and_ordered_from_the_mean() -> None:
    bank = posebank.load_bank()
    joints = posebank.joints_from_directions(bank.bone_dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)
    a = posebank.pose_clusters(joints, 12, seed=0)
    np.testing.assert_array_equal(a, posebank.pose_clusters(joints, 12, seed=0))
    np.testing.assert_array_equal(a, bank.clusters)  # the shipped labels are these
    assert set(a.tolist()) == set(range(12))
    mean = joints.mean(axis=0)
    spread = [np.linalg.norm(joints[a == c].mean(axis=0) - mean, axis=-1).mean() for c in range(12)]
    assert spread == sorted(spread)  # cluster 0 the most ordinary


def test_lab_poses_come_only_from_the_lab_clusters() -> None:
    bank = posebank.load_bank()
    for share in (0.2, 0.5, 0.9):
        clusters = posebank.lab_clusters(bank, share)
        np.testing.assert_array_equal(clusters, np.arange(len(clusters)))  # a prefix
        pool = posebank.lab_pool(bank, share)
        assert len(pool) >= share * len(bank) and set(bank.clusters[pool]) == set(clusters.tolist())
        _, _, index = posebank.sample_poses(bank, np.random.default_rng(1), 500, pool=pool)
        assert np.isin(bank.clusters[index], clusters).all()
    assert len(posebank.lab_pool(bank, 1.0)) == len(bank)
    with pytest.raises(ValueError, match="lab pose share"):
        posebank.PoseGap(lab_pose_share=0.0)
    with pytest.raises(ValueError, match="composed share"):
        posebank.PoseGap(composed_share=1.5)


def test_composed_poses_respect_the_banks_joint_limits() -> None:
    bank = posebank.load_bank()
    limits = posebank.JointLimits.from_bank(bank)
    assert limits.within(bank.bone_dirs).all()
    for name in ("knee", "elbow", "hip_flexion", "hip_abduction", "shoulder"):  # mirror-symmetric
        assert limits.low[f"r_{name}"] == pytest.approx(limits.low[f"l_{name}"], abs=1e-3)
        assert limits.high[f"r_{name}"] == pytest.approx(limits.high[f"l_{name}"], abs=1e-3)
    dirs, aux, composed = posebank.compose_poses(bank, np.random.default_rng(0), 300, limits)
    assert composed.mean() > 0.9
    assert limits.within(dirs).all()
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(aux, axis=-1), 1.0, atol=1e-9)
    # New poses: most lie away from every bank pose (and its mirror image).
    both = np.concatenate([bank.bone_dirs, posebank.mirror(bank.bone_dirs, bank.aux_dirs)[0]])
    dist = np.linalg.norm(dirs[:, None] - both[None], axis=-1).mean(axis=-1).min(axis=1)
    assert np.mean(dist > 0.05) > 0.8
    # A pose outside the limits is refused: a knee bent forwards.
    bad = bank.bone_dirs[:1].copy()
    bad[0, skeleton.BONE_INDEX["r_lower_leg"]] = [0.0, -1.0, 0.0]  # ankle -> knee points down
    assert not limits.within(bad)[0]
    # Deterministic per generator state.
    again, _, _ = posebank.compose_poses(bank, np.random.default_rng(0), 300, limits)
    np.testing.assert_array_equal(dirs, again)


def test_wild_draws_compose_the_share_asked_for() -> None:
    bank = posebank.load_bank()
    limits = posebank.JointLimits.from_bank(bank)
    _, _, index = posebank.sample_poses(
        bank, np.random.default_rng(2), 2000, composed_share=0.3, limits=limits
    )
    assert abs(np.mean(index == -1) - 0.3) < 0.04
    _, _, index = posebank.sample_poses(bank, np.random.default_rng(2), 200)
    assert (index >= 0).all()


def test_cli_states_the_pose_gap_defaults() -> None:
    from pose3d.cli import prep

    assert prep._GAP_DEFAULTS == (posebank.LAB_POSE_SHARE, posebank.COMPOSED_SHARE)
    assert posebank.PoseGap() == posebank.PoseGap(*prep._GAP_DEFAULTS)


def test_generator_records_the_pose_gap() -> None:
    from data_prep.synthetic import generator

    params = generator._params(8, 5, 6, 96, 0, 1, "npz", 0, posebank.PoseGap(0.3, 0.6))
    assert params["pose_gap"]["lab_pose_share"] == 0.3 and params["pose_gap"]["composed_share"] == 0.6
    assert params["pose_gap"]["lab_clusters"][0] == 0 and 0 < params["pose_gap"]["lab_poses"] < 500


# --- the measurement --------------------------------------------------------------------------------


def test_nearest_distances_are_invariant_to_similarity_transforms() -> None:
    bank = posebank.load_bank()
    joints = posebank.joints_from_directions(bank.bone_dirs[:40], skeleton.CANONICAL_BONE_LENGTHS_MM)
    c, s = np.cos(0.7), np.sin(0.7)
    moved = 0.5 * joints @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T + 30.0
    np.testing.assert_allclose(posegap.nearest_3d(moved[:5], joints), 0.0, atol=1e-6)
    views = posegap.project_views(joints)
    assert views.shape == (40 * len(posegap.VIEWS), 16, 2)
    np.testing.assert_allclose(posegap.nearest_2d(2.0 * views[::97] + 5.0, views), 0.0, atol=1e-3)  # mm
    assert posegap.nearest_3d(joints[:5], joints[5:]).min() > 0


def test_the_gap_measured_on_the_fixtures(fixtures_dir: Path) -> None:
    """The figures docs/synthetic.md quotes: MPII's poses lie farther from Human3.6M S1's than S1's
    held-out poses do, in 2D; few poses hold 3D labels (3 other-subject H36M frames, 2 3DHP)."""
    if not (fixtures_dir / "mocap" / "h36m_expmap_S1").is_dir():
        pytest.skip("Human3.6M exp-map fixture not found")
    real = posegap.measure_real(fixtures_dir)
    assert real.counts == {
        "H36M S1 held-out 3d": 651, "H36M S1 held-out 2d": 651, "H36M S5/S7/S8 3d": 3,
        "H36M S5/S7/S8 2d": 3, "MPII val 2d": 2017, "3DHP test 3d": 2, "3DHP test 2d": 2,
    }  # fmt: skip
    assert real.reference_size == 647
    assert real.medians["H36M S1 held-out 3d"] == pytest.approx(62.1, abs=0.05)
    assert real.medians["MPII val 2d"] == pytest.approx(87.3, abs=0.05)
    assert real.ratio_2d == pytest.approx(1.59, abs=0.005)
    assert real.ratio_3d == pytest.approx(1.75, abs=0.005)
