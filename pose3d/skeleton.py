"""The one definition of the 16-joint skeleton (MPII order) and of every mapping into it.

Everything that needs the joint order, the bones, the geometric-loss groups or the canonical
skeleton imports it from here (docs/conventions.md, Joints and skeleton, Canonical skeleton and
Joint mappings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_JOINTS = 16

JOINT_NAMES: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)  # fmt: skip
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}
ROOT = JOINT_INDEX["pelvis"]
THORAX = JOINT_INDEX["thorax"]
UPPER_NECK = JOINT_INDEX["upper_neck"]

#: The 14 bones as (parent, child) joint indices.
BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5),
    (10, 11), (11, 12), (12, 8), (8, 13), (13, 14), (14, 15),
    (6, 8), (8, 9),
)  # fmt: skip
BONE_NAMES: tuple[str, ...] = (
    "r_lower_leg", "r_upper_leg", "r_hip", "l_hip", "l_upper_leg", "l_lower_leg",
    "r_lower_arm", "r_upper_arm", "r_shoulder", "l_shoulder", "l_upper_arm", "l_lower_arm",
    "spine", "head",
)  # fmt: skip
BONE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BONE_NAMES)}
BONE_ARRAY = np.asarray(BONES, dtype=np.int64)  # (14, 2)

#: Left/right pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
#: FLIP_PERMUTATION[i] is the joint that joint i becomes after a horizontal flip.
FLIP_PERMUTATION = np.arange(NUM_JOINTS)
for _a, _b in FLIP_PAIRS:
    FLIP_PERMUTATION[_a], FLIP_PERMUTATION[_b] = _b, _a
del _a, _b

# --- The geometric loss (paper Eq. 3; docs/conventions.md, Geometric loss) -------------------------------
#: Group name -> bones (indices into BONES). Torso bones are left out on purpose (paper).
BONE_GROUPS: dict[str, tuple[int, ...]] = {
    "legs": (BONE_INDEX["r_lower_leg"], BONE_INDEX["r_upper_leg"],
             BONE_INDEX["l_upper_leg"], BONE_INDEX["l_lower_leg"]),
    "arms": (BONE_INDEX["r_lower_arm"], BONE_INDEX["r_upper_arm"],
             BONE_INDEX["l_upper_arm"], BONE_INDEX["l_lower_arm"]),
    "hips": (BONE_INDEX["r_hip"], BONE_INDEX["l_hip"]),
    "shoulders": (BONE_INDEX["r_shoulder"], BONE_INDEX["l_shoulder"]),
}  # fmt: skip
#: The authors' per-bone weights (from their code; docs/conventions.md, Geometric loss): a bone's
#: length times its weight is the same for every bone of a group on their canonical skeleton.
_BONE_WEIGHT_BY_NAME = {
    "r_lower_leg": 1.0085885, "l_lower_leg": 1.0085885, "r_upper_leg": 1.0, "l_upper_leg": 1.0,
    "r_lower_arm": 1.1375361, "l_lower_arm": 1.1375361, "r_upper_arm": 1.0, "l_upper_arm": 1.0,
    "r_hip": 1.0, "l_hip": 1.0, "r_shoulder": 1.0, "l_shoulder": 1.0,
}  # fmt: skip
GROUP_NAMES: tuple[str, ...] = tuple(BONE_GROUPS)
_MAX_GROUP = max(len(b) for b in BONE_GROUPS.values())
#: (4, 4) bone index per group slot, padded with 0 where GROUP_SLOT_VALID is False.
GROUP_BONE_INDEX = np.zeros((len(BONE_GROUPS), _MAX_GROUP), dtype=np.int64)
#: (4, 4) whether a group slot holds a bone.
GROUP_SLOT_VALID = np.zeros((len(BONE_GROUPS), _MAX_GROUP), dtype=bool)
#: (4, 4) the authors' weight of the bone in each slot (0 in padding).
GROUP_BONE_WEIGHT = np.zeros((len(BONE_GROUPS), _MAX_GROUP), dtype=np.float64)
for _g, _bones in enumerate(BONE_GROUPS.values()):
    for _s, _bone in enumerate(_bones):
        GROUP_BONE_INDEX[_g, _s] = _bone
        GROUP_SLOT_VALID[_g, _s] = True
        GROUP_BONE_WEIGHT[_g, _s] = _BONE_WEIGHT_BY_NAME[BONE_NAMES[_bone]]
del _g, _bones, _s, _bone

# --- The canonical skeleton (docs/conventions.md, Canonical skeleton) ---------------------------------
#: The canonical bone-length sum of the 14 bones (mm), from the authors' code.
CANONICAL_BONE_SUM_MM = 4296.99233
# The mean 16-joint bone lengths of the Human3.6M S1 mocap (mm), left and right made equal
# (docs/conventions.md, Canonical skeleton).
_MEAN_BONE_LENGTH_MM = {
    "lower_leg": 454.2, "upper_leg": 442.9, "hip": 132.9, "lower_arm": 251.7, "upper_arm": 278.9,
    "shoulder": (209.7 + 229.8) / 2, "spine": 572.8, "head": 115.0,
}  # fmt: skip


def _canonical_lengths() -> np.ndarray:
    raw = np.array([_MEAN_BONE_LENGTH_MM[n.removeprefix("r_").removeprefix("l_")] for n in BONE_NAMES])
    return raw * (CANONICAL_BONE_SUM_MM / raw.sum())


#: (14,) canonical bone lengths in mm, summing to CANONICAL_BONE_SUM_MM.
CANONICAL_BONE_LENGTHS_MM: np.ndarray = _canonical_lengths()
CANONICAL_BONE_LENGTHS_MM.setflags(write=False)


def canonical_pose_mm() -> np.ndarray:
    """A standing pose of the canonical skeleton, (16, 3) mm, camera-style axes (x right of the
    image, y down, z away from the camera), root at the origin, facing the camera."""
    L = dict(zip(BONE_NAMES, CANONICAL_BONE_LENGTHS_MM, strict=True))
    p = np.zeros((NUM_JOINTS, 3))
    j = JOINT_INDEX
    # The subject's right is the image's left when facing the camera.
    p[j["r_hip"]] = (-L["r_hip"], 0, 0)
    p[j["l_hip"]] = (L["l_hip"], 0, 0)
    p[j["r_knee"]] = p[j["r_hip"]] + (0, L["r_upper_leg"], 0)
    p[j["l_knee"]] = p[j["l_hip"]] + (0, L["l_upper_leg"], 0)
    p[j["r_ankle"]] = p[j["r_knee"]] + (0, L["r_lower_leg"], 0)
    p[j["l_ankle"]] = p[j["l_knee"]] + (0, L["l_lower_leg"], 0)
    p[j["upper_neck"]] = (0, -L["spine"], 0)
    p[j["head_top"]] = p[j["upper_neck"]] + (0, -L["head"], 0)
    p[j["r_shoulder"]] = p[j["upper_neck"]] + (-L["r_shoulder"], 0, 0)
    p[j["l_shoulder"]] = p[j["upper_neck"]] + (L["l_shoulder"], 0, 0)
    p[j["r_elbow"]] = p[j["r_shoulder"]] + (0, L["r_upper_arm"], 0)
    p[j["l_elbow"]] = p[j["l_shoulder"]] + (0, L["l_upper_arm"], 0)
    p[j["r_wrist"]] = p[j["r_elbow"]] + (0, L["r_lower_arm"], 0)
    p[j["l_wrist"]] = p[j["l_elbow"]] + (0, L["l_lower_arm"], 0)
    p[j["thorax"]] = (p[j["r_shoulder"]] + p[j["l_shoulder"]]) / 2
    return p


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Bone lengths of poses: joints (..., 16, D) -> (..., 14), same units."""
    joints = np.asarray(joints)
    return np.linalg.norm(joints[..., BONE_ARRAY[:, 1], :] - joints[..., BONE_ARRAY[:, 0], :], axis=-1)


# --- Mappings from other joint orders into the 16 joints --------------------------------------
@dataclass(frozen=True)
class JointMapping:
    """How one source joint order maps into the 16 joints.

    ``source[i]`` is the source index of joint i, or -1 when the source has no such joint.
    ``derived[i] = (a, b)`` makes joint i the midpoint of source joints a and b; a derived joint is
    computed in 3D and, where 2D is needed, projected, never averaged in 2D (docs/conventions.md,
    Joint mappings).
    """

    name: str
    num_source_joints: int
    source: tuple[int, ...]
    derived: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.source) != NUM_JOINTS:
            raise ValueError(f"{self.name}: source must list {NUM_JOINTS} entries")
        for i, s in enumerate(self.source):
            if s >= self.num_source_joints or (s < 0 and s != -1):
                raise ValueError(f"{self.name}: bad source index {s} for joint {JOINT_NAMES[i]}")
        for i in self.derived:
            if self.source[i] != -1:
                raise ValueError(f"{self.name}: {JOINT_NAMES[i]} is both mapped and derived")

    @property
    def available(self) -> np.ndarray:
        """(16,) bool: joints this source can supply (directly or derived)."""
        return np.array([s >= 0 or i in self.derived for i, s in enumerate(self.source)])

    @property
    def direct(self) -> np.ndarray:
        """(16,) bool: joints copied straight from a source joint."""
        return np.array([s >= 0 for s in self.source])

    def apply(self, joints: np.ndarray, visible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Map source joints into the 16.

        joints: (..., J, D) in any units; visible: (..., J) bool or None (all visible).
        Returns (..., 16, D) joints (0 where unavailable) and (..., 16) bool: available and visible
        (a derived joint is visible when both of its ends are).
        """
        joints = np.asarray(joints)
        if joints.shape[-2] != self.num_source_joints:
            raise ValueError(
                f"{self.name}: expected {self.num_source_joints} source joints, got shape {joints.shape}"
            )
        if visible is None:
            visible = np.ones(joints.shape[:-1], dtype=bool)
        visible = np.asarray(visible, dtype=bool)
        src = np.array([max(s, 0) for s in self.source])
        out = joints[..., src, :].astype(np.float64, copy=True)
        vis = visible[..., src] & self.direct
        for i, (a, b) in self.derived.items():
            out[..., i, :] = (joints[..., a, :] + joints[..., b, :]) / 2
            vis[..., i] = visible[..., a] & visible[..., b]
        out[..., ~self.available, :] = 0.0
        return out, vis


_D = -1  # marks a derived or missing joint in the tables below

#: mmpose's Human3.6M 17-joint order: pelvis, r_hip, r_knee, r_foot, l_hip, l_knee, l_foot, spine,
#: thorax, neck_base, head, l_shoulder, l_elbow, l_wrist, r_shoulder, r_elbow, r_wrist. Its
#: "thorax" (8) sits at the neck, its "neck_base" (9) at the MPII upper neck; the 16-joint thorax is
#: the shoulders' midpoint (the authors' code; docs/conventions.md, Joint mappings).
H36M17 = JointMapping(
    "h36m17", 17, (3, 2, 1, 4, 5, 6, 0, _D, 9, 10, 16, 15, 14, 11, 12, 13), derived={THORAX: (11, 14)}
)
#: Human3.6M's raw 32-joint mocap skeleton (its joints are listed in docs/conventions.md, Joint mappings).
H36M32 = JointMapping(
    "h36m32", 32, (3, 2, 1, 6, 7, 8, 0, _D, 14, 15, 27, 26, 25, 17, 18, 19), derived={THORAX: (17, 25)}
)
#: mmpose's MPI-INF-3DHP 17-joint order: head_top, neck, r_sho, r_elb, r_wri, l_sho, l_elb, l_wri,
#: r_hip, r_knee, r_ank, l_hip, l_knee, l_ank, pelvis, spine, head.
MPI3DHP17 = JointMapping(
    "3dhp17", 17, (10, 9, 8, 11, 12, 13, 14, _D, 1, 0, 4, 3, 2, 5, 6, 7), derived={THORAX: (2, 5)}
)
#: The official 3DHP 28-joint order (spine3, spine4, spine2, spine, pelvis, neck, head, head_top,
#: l_clavicle, l_shoulder, l_elbow, l_wrist, l_hand, r_clavicle, r_shoulder, r_elbow, r_wrist,
#: r_hand, l_hip, l_knee, l_ankle, l_foot, l_toe, r_hip, r_knee, r_ankle, r_foot, r_toe).
MPI3DHP28 = JointMapping(
    "3dhp28", 28, (25, 24, 23, 18, 19, 20, 4, _D, 5, 7, 16, 15, 14, 9, 10, 11), derived={THORAX: (9, 14)}
)
#: COCO-17: nose, l_eye, r_eye, l_ear, r_ear, l_sho, r_sho, l_elb, r_elb, l_wri, r_wri, l_hip,
#: r_hip, l_knee, r_knee, l_ank, r_ank. It has no pelvis, thorax, upper neck or head top: those
#: joints are masked out, never invented.
COCO17 = JointMapping("coco17", 17, (16, 14, 12, 11, 13, 15, _D, _D, _D, _D, 10, 8, 6, 5, 7, 9))
#: MPII's own 16 joints (identity).
MPII16 = JointMapping("mpii16", 16, tuple(range(16)))

MAPPINGS: dict[str, JointMapping] = {
    m.name: m for m in (H36M17, H36M32, MPI3DHP17, MPI3DHP28, COCO17, MPII16)
}

#: The 14 joints scored by MPII PCKh and by 3DHP's 3DPCK/AUC (pelvis and thorax left out).
SCORED_14 = np.array([i for i in range(NUM_JOINTS) if i not in (ROOT, THORAX)])
