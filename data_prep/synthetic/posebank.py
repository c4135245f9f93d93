"""The pose bank: a few hundred diverse, real human poses as unit bone directions.

Derived from CMU motion capture: clip 01_01 (BVH, jumps and turns) and subject 11's trial 01
(ASF/AMC, soccer kicks; ``asfamc``); CMU's terms allow shipping derived poses. Human3.6M's motion is
research-only, so it never enters the shipped bank. The poses are grouped into clusters
(``pose_clusters``), from which the lab and the wild sets draw differently: the pose gap
(``PoseGap``, docs/synthetic.md).

A pose is stored as the 14 bone directions of ``pose3d.skeleton.BONES`` (unit vectors from
``BONES[b][0]`` to ``BONES[b][1]``) in the *body frame*: x = the subject's left (the horizontal
direction from the right hip to the left hip), y = up (gravity), z = x × y = the way the pelvis
faces. The heading (rotation about the vertical) is removed, pitch and roll are kept, so a bent-over
pose stays bent over. Four auxiliary directions dress the body: each foot (ankle → toe), the face
(the head's forward axis) and the chest (pelvis → top of the thoracic spine, which bends the torso).

Rebuild the shipped asset (deterministic; ``data_prep/assets/README.md``), FIXTURES being the
real-data fixtures folder: ``python -m data_prep.synthetic.posebank --bvh
$FIXTURES/mocap/cmu_01_01.bvh --asf $FIXTURES/mocap/cmu_11.asf --amc $FIXTURES/mocap/cmu_11_01.amc``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.synthetic import asfamc
from data_prep.synthetic.bvh import forward_kinematics, read_bvh
from pose3d import skeleton

ASSET_PATH = Path(__file__).resolve().parents[1] / "assets" / "pose_bank.npz"
AUX_NAMES: tuple[str, ...] = ("r_foot", "l_foot", "face", "chest")
AUX_INDEX = {name: i for i, name in enumerate(AUX_NAMES)}
NUM_BONES = len(skeleton.BONES)

#: CMU BVH node for each directly mapped joint (pelvis and thorax are midpoints, below).
CMU_JOINTS: dict[str, str] = {
    "r_ankle": "RightFoot", "r_knee": "RightLeg", "r_hip": "RightUpLeg",
    "l_hip": "LeftUpLeg", "l_knee": "LeftLeg", "l_ankle": "LeftFoot",
    "upper_neck": "Head", "head_top": "Head_end",
    "r_wrist": "RightHand", "r_elbow": "RightForeArm", "r_shoulder": "RightArm",
    "l_shoulder": "LeftArm", "l_elbow": "LeftForeArm", "l_wrist": "LeftHand",
}  # fmt: skip
CMU_MIDPOINTS: dict[str, tuple[str, str]] = {
    "pelvis": ("RightUpLeg", "LeftUpLeg"),
    "thorax": ("RightArm", "LeftArm"),
}
#: The auxiliary directions from CMU nodes: (from, to) positions, or the head's local +z axis.
CMU_FEET = {"r_foot": ("RightFoot", "RightToeBase"), "l_foot": ("LeftFoot", "LeftToeBase")}
CMU_CHEST_TOP = "Spine1"
CMU_HEAD = "Head"
MIRROR_X = np.array([-1.0, 1.0, 1.0])


# --- the kinematic tree of the 16 joints ------------------------------------------------------
def _traversal() -> list[tuple[int, int, int, float]]:
    """(bone, from joint, to joint, sign) in an order that places every joint after its parent,
    starting at the pelvis; sign is +1 when the bone's stored direction points from -> to."""
    placed = {skeleton.ROOT}
    order = []
    while len(order) < NUM_BONES:
        for b, (p, c) in enumerate(skeleton.BONES):
            if any(o[0] == b for o in order):
                continue
            if p in placed and c not in placed:
                order.append((b, p, c, 1.0))
                placed.add(c)
            elif c in placed and p not in placed:
                order.append((b, c, p, -1.0))
                placed.add(p)
    return order


TRAVERSAL = _traversal()
_SHOULDERS = (skeleton.JOINT_INDEX["r_shoulder"], skeleton.JOINT_INDEX["l_shoulder"])


def joints_from_directions(directions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Forward kinematics of the 16 joints from bone directions.

    directions (..., 14, 3) unit vectors; lengths (..., 14) or (14,), any unit.
    Returns (..., 16, 3) with the pelvis at the origin and the thorax at the shoulders' midpoint.
    """
    directions = np.asarray(directions, np.float64)
    vectors = directions * np.asarray(lengths, np.float64)[..., None]
    joints = np.zeros((*directions.shape[:-2], skeleton.NUM_JOINTS, 3))
    for b, src, dst, sign in TRAVERSAL:
        joints[..., dst, :] = joints[..., src, :] + sign * vectors[..., b, :]
    joints[..., skeleton.THORAX, :] = joints[..., _SHOULDERS, :].mean(axis=-2)
    return joints


def bone_directions(joints: np.ndarray) -> np.ndarray:
    """Unit bone directions (..., 14, 3) of joints (..., 16, 3)."""
    joints = np.asarray(joints, np.float64)
    v = joints[..., skeleton.BONE_ARRAY[:, 1], :] - joints[..., skeleton.BONE_ARRAY[:, 0], :]
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def body_frame(joints_world: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Rotations (..., 3, 3) whose rows are the body-frame axes (x left, y up, z forward) in world
    coordinates: ``v_body = R @ v_world``. joints_world (..., 16, 3); up (3,) the world's up axis."""
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    hips = (
        joints_world[..., skeleton.JOINT_INDEX["l_hip"], :]
        - joints_world[..., skeleton.JOINT_INDEX["r_hip"], :]
    )
    x = hips - (hips @ up)[..., None] * up
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.broadcast_to(up, x.shape)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-2)


# --- the bank ---------------------------------------------------------------------------------
@dataclass
class PoseBank:
    """A bank of P poses.

    bone_dirs (P, 14, 3) and aux_dirs (P, 4, 3) unit vectors in the body frame; source_frames (P,)
    the frame of each pose in its clip; source_clips (P,) the index of its clip in ``sources`` (file
    names); clusters (P,) the pose cluster of each pose (``pose_clusters``; -1 when not clustered).
    """

    bone_dirs: np.ndarray
    aux_dirs: np.ndarray
    source_frames: np.ndarray
    source_clips: np.ndarray
    sources: tuple[str, ...]
    clusters: np.ndarray

    def __len__(self) -> int:
        return len(self.bone_dirs)

    @property
    def source(self) -> str:
        return "CMU mocap " + " + ".join(self.sources)

    @property
    def num_clusters(self) -> int:
        return int(self.clusters.max()) + 1 if len(self.clusters) else 0

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            bone_dirs=self.bone_dirs.astype(np.float32),
            aux_dirs=self.aux_dirs.astype(np.float32),
            source_frames=self.source_frames.astype(np.int32),
            source_clips=self.source_clips.astype(np.int32),
            sources=np.array(self.sources),
            clusters=self.clusters.astype(np.int32),
            bone_names=np.array(skeleton.BONE_NAMES),
            aux_names=np.array(AUX_NAMES),
            frame=np.array("body frame: x = subject's left, y = up, z = forward (x cross y)"),
        )

    @staticmethod
    def load(path: str | Path = ASSET_PATH) -> PoseBank:
        with np.load(path) as z:
            if tuple(z["bone_names"]) != skeleton.BONE_NAMES or tuple(z["aux_names"]) != AUX_NAMES:
                raise ValueError(f"{path}: pose bank for another bone order; rebuild it")
            if "clusters" not in z.files:
                raise ValueError(f"{path}: pose bank without pose clusters (an older asset); rebuild it")
            return PoseBank(
                z["bone_dirs"].astype(np.float64),
                z["aux_dirs"].astype(np.float64),
                z["source_frames"].astype(np.int64),
                z["source_clips"].astype(np.int64),
                tuple(str(x) for x in z["sources"]),
                z["clusters"].astype(np.int64),
            )


#: The ASF/AMC bone whose end point is each directly mapped joint (CMU subject 11 and the like).
ASF_JOINTS: dict[str, str] = {
    "r_ankle": "rtibia", "r_knee": "rfemur", "r_hip": "rhipjoint",
    "l_hip": "lhipjoint", "l_knee": "lfemur", "l_ankle": "ltibia",
    "upper_neck": "upperneck", "head_top": "head",
    "r_wrist": "rradius", "r_elbow": "rhumerus", "r_shoulder": "rclavicle",
    "l_shoulder": "lclavicle", "l_elbow": "lhumerus", "l_wrist": "lradius",
}  # fmt: skip
ASF_TOES = {"r_foot": "rfoot", "l_foot": "lfoot"}  # ankle -> the foot bone's end
ASF_CHEST_TOP = "upperback"  # the BVH conversions' Spine1 sits at its end
ASF_HEAD = "head"


def _body_frame_poses(
    joints: np.ndarray, toes: dict[str, np.ndarray], head_rot: np.ndarray, chest_top: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bone directions (F, 14, 3) and auxiliary directions (F, 4, 3) in the body frame.

    joints (F, 16, 3) in a y-up world, any unit; toes {"r_foot", "l_foot"}: (F, 3) toe positions;
    head_rot (F, 3, 3) the head's global rotation (its rest pose faces +z); chest_top (F, 3).
    """
    r_body = body_frame(joints, np.array([0.0, 1.0, 0.0]))  # CMU (BVH and ASF): y up

    def to_body(v: np.ndarray) -> np.ndarray:
        v = np.einsum("fij,fj->fi", r_body, v)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    ankles = {"r_foot": skeleton.JOINT_INDEX["r_ankle"], "l_foot": skeleton.JOINT_INDEX["l_ankle"]}
    aux = np.stack(
        [
            to_body(toes["r_foot"] - joints[:, ankles["r_foot"]]),
            to_body(toes["l_foot"] - joints[:, ankles["l_foot"]]),
            to_body(head_rot @ np.array([0.0, 0.0, 1.0])),
            to_body(chest_top - joints[:, skeleton.ROOT]),
        ],
        axis=1,
    )
    return np.einsum("fij,fbj->fbi", r_body, bone_directions(joints)), aux


def cmu_poses(bvh_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every motion frame of a CMU BVH clip in the body frame.

    Returns bone directions (F, 14, 3), auxiliary directions (F, 4, 3) and the frame indices (F,).
    Frame 0 of the CMU conversions is the all-zero rest pose, not motion: it is left out.
    """
    clip = read_bvh(bvh_path)
    frames = np.arange(1, clip.motion.shape[0])
    pos, rot = forward_kinematics(clip, frames)
    idx = clip.index
    joints = np.zeros((len(frames), skeleton.NUM_JOINTS, 3))
    for name, node in CMU_JOINTS.items():
        joints[:, skeleton.JOINT_INDEX[name]] = pos[:, idx(node)]
    for name, (a, b) in CMU_MIDPOINTS.items():
        joints[:, skeleton.JOINT_INDEX[name]] = (pos[:, idx(a)] + pos[:, idx(b)]) / 2
    toes = {k: pos[:, idx(CMU_FEET[k][1])] for k in ("r_foot", "l_foot")}
    dirs, aux = _body_frame_poses(joints, toes, rot[:, idx(CMU_HEAD)], pos[:, idx(CMU_CHEST_TOP)])
    return dirs, aux, frames


def asf_amc_poses(asf_path: str | Path, amc_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every frame of a CMU ASF/AMC motion in the body frame (``asfamc``), as ``cmu_poses``.

    Returns bone directions (F, 14, 3), auxiliary directions (F, 4, 3) and the AMC frame numbers
    (F,). The AMC files hold motion only (no rest-pose frame), so every frame is kept.
    """
    skel = asfamc.read_asf(asf_path)
    motion = asfamc.read_amc(amc_path, skel)
    pos, rot = asfamc.forward_kinematics(skel, motion)
    joints = np.zeros((len(motion.frame_numbers), skeleton.NUM_JOINTS, 3))
    for name, bone in ASF_JOINTS.items():
        joints[:, skeleton.JOINT_INDEX[name]] = pos[bone]
    for mid, (a, b) in {"pelvis": ("r_hip", "l_hip"), "thorax": ("r_shoulder", "l_shoulder")}.items():
        joints[:, skeleton.JOINT_INDEX[mid]] = (
            joints[:, skeleton.JOINT_INDEX[a]] + joints[:, skeleton.JOINT_INDEX[b]]
        ) / 2
    toes = {k: pos[bone] for k, bone in ASF_TOES.items()}
    dirs, aux = _body_frame_poses(joints, toes, rot[ASF_HEAD], pos[ASF_CHEST_TOP])
    return dirs, aux, motion.frame_numbers


def farthest_point_sample(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` poses spread over the set: greedy farthest-point sampling under the mean
    per-joint distance, starting from the pose nearest the mean pose. points (F, J, 3)."""
    flat = points.reshape(len(points), -1, 3)
    count = min(count, len(flat))
    start = int(np.argmin(np.linalg.norm(flat - flat.mean(axis=0), axis=-1).mean(axis=-1)))
    chosen = [start]
    nearest = np.linalg.norm(flat - flat[start], axis=-1).mean(axis=-1)
    for _ in range(count - 1):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(flat - flat[nxt], axis=-1).mean(axis=-1))
    return np.array(chosen)


def build_pose_bank(
    bvh_path: str | Path,
    count: int = 500,
    *,
    asf_amc: tuple[str | Path, str | Path] | None = None,
    num_clusters: int = 12,
    seed: int = 0,
) -> PoseBank:
    """The bank: ``count`` diverse poses of the clips (farthest-point sampling over the union of
    their frames, on the canonical skeleton, so the choice reflects posture and not the actors'
    proportions), then grouped into ``num_clusters`` pose clusters (``pose_clusters``, ``seed``).

    bvh_path: a CMU BVH clip; asf_amc: optionally a CMU (ASF skeleton, AMC motion) pair.
    """
    parts = [cmu_poses(bvh_path)]
    names = [Path(bvh_path).name]
    if asf_amc is not None:
        parts.append(asf_amc_poses(*asf_amc))
        names.append(Path(asf_amc[1]).name)
    dirs = np.concatenate([p[0] for p in parts])
    aux = np.concatenate([p[1] for p in parts])
    frames = np.concatenate([p[2] for p in parts])
    clips = np.concatenate([np.full(len(p[2]), i) for i, p in enumerate(parts)])
    canon = joints_from_directions(dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)
    keep = np.sort(farthest_point_sample(canon, count))
    clusters = pose_clusters(canon[keep], num_clusters, seed=seed)
    return PoseBank(dirs[keep], aux[keep], frames[keep], clips[keep], tuple(names), clusters)


def pose_clusters(joints: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """k-means of poses (k-means++ start from ``seed``, Lloyd iterations until no label changes),
    deterministic per seed. joints (P, 16, 3) mm on one skeleton, pelvis at the origin.

    Returns labels (P,) in 0..k-1, numbered by the cluster's distance (mean per joint) from the
    mean pose: cluster 0 holds the most ordinary poses, cluster k-1 the most unusual.
    """
    x = np.asarray(joints, np.float64).reshape(len(joints), -1)
    k = min(k, len(x))
    rng = np.random.default_rng(seed)
    centres = [x[int(rng.integers(len(x)))]]
    d2 = np.sum((x - centres[0]) ** 2, axis=-1)
    for _ in range(k - 1):
        centres.append(x[int(rng.choice(len(x), p=d2 / d2.sum()))])
        d2 = np.minimum(d2, np.sum((x - centres[-1]) ** 2, axis=-1))
    c = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new = np.argmin(np.sum((x[:, None] - c[None]) ** 2, axis=-1), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        c = np.stack([x[labels == j].mean(axis=0) if np.any(labels == j) else c[j] for j in range(k)])
    spread = np.linalg.norm((c - x.mean(axis=0)).reshape(k, -1, 3), axis=-1).mean(axis=-1)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(spread, kind="stable")] = np.arange(k)
    return rank[labels]


# --- augmentation (at generation time) --------------------------------------------------------
_ARM_BONES = {
    "r": [skeleton.BONE_INDEX["r_upper_arm"], skeleton.BONE_INDEX["r_lower_arm"]],
    "l": [skeleton.BONE_INDEX["l_upper_arm"], skeleton.BONE_INDEX["l_lower_arm"]],
}
_LIMB_BONES = [
    skeleton.BONE_INDEX[n]
    for n in ("r_lower_leg", "r_upper_leg", "l_upper_leg", "l_lower_leg", "r_lower_arm", "r_upper_arm",
              "l_upper_arm", "l_lower_arm", "head")
]  # fmt: skip


def mirror(bone_dirs: np.ndarray, aux_dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left/right mirror image of poses: x -> -x with the left and right joints swapped.
    bone_dirs (..., 14, 3), aux_dirs (..., 4, 3)."""
    joints = joints_from_directions(bone_dirs, np.ones(NUM_BONES))
    mirrored = joints[..., skeleton.FLIP_PERMUTATION, :] * MIRROR_X
    aux = aux_dirs[..., [AUX_INDEX["l_foot"], AUX_INDEX["r_foot"], AUX_INDEX["face"], AUX_INDEX["chest"]], :]
    return bone_directions(mirrored), aux * MIRROR_X


def _small_rotations(rng: np.random.Generator, shape: tuple[int, ...], sigma_rad: float) -> np.ndarray:
    """Random rotations (*shape, 3, 3) with axis-angle components ~ N(0, sigma) (Rodrigues)."""
    w = rng.normal(0.0, sigma_rad, (*shape, 3))
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    k = np.zeros((*shape, 3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
    k = k - np.swapaxes(k, -1, -2)
    safe = np.where(theta > 1e-12, theta, 1.0)
    return np.eye(3) + np.sin(theta) / safe * k + (1 - np.cos(theta)) / safe**2 * (k @ k)


def yaw_rotations(yaw: np.ndarray) -> np.ndarray:
    """(N,) angles (rad) -> (N, 3, 3) rotations about the body frame's vertical (y) axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    r = np.zeros((len(yaw), 3, 3))
    r[:, 0, 0], r[:, 0, 2], r[:, 1, 1], r[:, 2, 0], r[:, 2, 2] = c, s, 1.0, -s, c
    return r


# --- the pose gap: lab clusters, composed poses, joint limits ---------------------------------
#: The defaults of the pose gap (docs/synthetic.md, The pose gap: set from ``python -m
#: data_prep.synthetic.posegap``): the lab draws from the most ordinary clusters holding about this
#: share of the bank; this share of the wild and wild-test poses is composed.
LAB_POSE_SHARE = 0.6
COMPOSED_SHARE = 0.9
LIMBS: dict[str, tuple[int, ...]] = {
    "r_arm": (skeleton.BONE_INDEX["r_upper_arm"], skeleton.BONE_INDEX["r_lower_arm"]),
    "l_arm": (skeleton.BONE_INDEX["l_upper_arm"], skeleton.BONE_INDEX["l_lower_arm"]),
    "r_leg": (skeleton.BONE_INDEX["r_upper_leg"], skeleton.BONE_INDEX["r_lower_leg"]),
    "l_leg": (skeleton.BONE_INDEX["l_upper_leg"], skeleton.BONE_INDEX["l_lower_leg"]),
}
#: The auxiliary direction that moves with each limb (the foot with its leg).
LIMB_AUX: dict[str, tuple[int, ...]] = {
    "r_arm": (), "l_arm": (), "r_leg": (AUX_INDEX["r_foot"],), "l_leg": (AUX_INDEX["l_foot"],)
}  # fmt: skip


def lab_clusters(bank: PoseBank, share: float) -> np.ndarray:
    """The lab's clusters: the most ordinary ones (clusters are numbered by their distance from the
    mean pose, ``pose_clusters``), as few as hold at least ``share`` of the bank's poses (at least
    one cluster; share 1 = all). Returns cluster ids (C,)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"lab pose share must be in (0, 1], not {share}")
    counts = np.bincount(bank.clusters, minlength=bank.num_clusters)
    cumulative = np.cumsum(counts) / counts.sum()
    m = int(np.searchsorted(cumulative, share - 1e-9)) + 1
    return np.arange(min(m, bank.num_clusters))


def lab_pool(bank: PoseBank, share: float) -> np.ndarray:
    """Bank indices (L,) of the poses in the lab clusters (``lab_clusters``), ascending."""
    return np.flatnonzero(np.isin(bank.clusters, lab_clusters(bank, share)))


def _limb_frames(bone_dirs: np.ndarray) -> dict[str, np.ndarray]:
    """Each limb's parent frame (..., 3, 3), rows = axes in the body frame (``v_local = R @ v``):
    arms hang from the chest (x = the shoulder line, right to left; y = the spine, pelvis to neck;
    z = x cross y), legs from the body frame itself (gravity and the hips' heading), so a standing
    leg stays standing under a bent torso. bone_dirs (..., 14, 3)."""
    spine = bone_dirs[..., skeleton.BONE_INDEX["spine"], :]
    # r_shoulder bone: r_shoulder -> upper_neck; l_shoulder bone: upper_neck -> l_shoulder.
    across = (
        bone_dirs[..., skeleton.BONE_INDEX["r_shoulder"], :]
        + bone_dirs[..., skeleton.BONE_INDEX["l_shoulder"], :]
    )
    x = across - np.sum(across * spine, axis=-1, keepdims=True) * spine
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    chest = np.stack([x, spine, np.cross(x, spine)], axis=-2)
    body = np.broadcast_to(np.eye(3), chest.shape)
    return {"r_arm": chest, "l_arm": chest, "r_leg": body, "l_leg": body}


#: +1 where a limb bone of ``skeleton.BONES`` already points away from the torso, -1 where it points
#: towards it (the right side's bones run from the wrist and the ankle inwards).
_OUTWARD_SIGN = {
    "r_upper_leg": -1.0, "r_lower_leg": -1.0, "l_upper_leg": 1.0, "l_lower_leg": 1.0,
    "r_upper_arm": -1.0, "r_lower_arm": -1.0, "l_upper_arm": 1.0, "l_lower_arm": 1.0,
}  # fmt: skip


def joint_angles(bone_dirs: np.ndarray) -> dict[str, np.ndarray]:
    """Angles (degrees, each (...,)) of poses' bone directions (..., 14, 3), body frame.

    ``{r,l}_knee`` and ``{r,l}_elbow``: flexion, 0 = straight; ``{r,l}_hip_flexion``: the thigh's
    forward swing about the hip line, relative to the torso (0 = along the spine's downward line,
    90 = thigh forward at right angles to the torso); ``{r,l}_hip_abduction``: the thigh's outward
    tilt from the torso's sagittal plane; ``{r,l}_shoulder``: the upper arm's elevation from the
    spine's downward line (0 = hanging, 180 = straight up).
    """
    d = np.asarray(bone_dirs, np.float64)
    bi = skeleton.BONE_INDEX
    spine = d[..., bi["spine"], :]
    hips = d[..., bi["r_hip"], :] + d[..., bi["l_hip"], :]  # r_hip -> pelvis, pelvis -> l_hip: both +x
    x = hips - np.sum(hips * spine, axis=-1, keepdims=True) * spine
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    z = np.cross(x, spine)

    def angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.degrees(np.arccos(np.clip(np.sum(u * v, axis=-1), -1.0, 1.0)))

    def outward(name: str) -> np.ndarray:  # the bone pointing away from the torso
        return d[..., bi[name], :] * _OUTWARD_SIGN[name]

    out = {}
    for side, lateral in (("r", -1.0), ("l", 1.0)):
        thigh, shin = outward(f"{side}_upper_leg"), outward(f"{side}_lower_leg")
        upper, lower = outward(f"{side}_upper_arm"), outward(f"{side}_lower_arm")
        out[f"{side}_knee"] = angle(thigh, shin)
        out[f"{side}_elbow"] = angle(upper, lower)
        out[f"{side}_hip_flexion"] = np.degrees(
            np.arctan2(np.sum(thigh * z, axis=-1), -np.sum(thigh * spine, axis=-1))
        )
        out[f"{side}_hip_abduction"] = np.degrees(
            np.arcsin(np.clip(lateral * np.sum(thigh * x, axis=-1), -1.0, 1.0))
        )
        out[f"{side}_shoulder"] = angle(upper, -spine)
    return out


#: The left/right joint pairs whose distance (canonical skeleton, mm) a composed pose keeps at
#: least at the bank's smallest: legs must not pass through each other.
SEPARATED_PAIRS = (("r_knee", "l_knee"), ("r_ankle", "l_ankle"))


@dataclass(frozen=True)
class JointLimits:
    """The range of every ``joint_angles`` angle observed in a bank and its mirror image (degrees),
    and the smallest observed distance of each ``SEPARATED_PAIRS`` pair (mm, canonical skeleton)."""

    low: dict[str, float]
    high: dict[str, float]
    min_separation: dict[str, float]

    @staticmethod
    def from_bank(bank: PoseBank) -> JointLimits:
        dirs = np.concatenate([bank.bone_dirs, mirror(bank.bone_dirs, bank.aux_dirs)[0]])
        angles = joint_angles(dirs)
        sep = _separations(dirs)
        return JointLimits(
            {k: float(v.min()) for k, v in angles.items()},
            {k: float(v.max()) for k, v in angles.items()},
            {k: float(v.min()) for k, v in sep.items()},
        )

    def within(self, bone_dirs: np.ndarray) -> np.ndarray:
        """(...,) bool: every angle within its observed range and every pair at least as far apart
        as observed. bone_dirs (..., 14, 3)."""
        ok = np.ones(np.shape(bone_dirs)[:-2], dtype=bool)
        for k, v in joint_angles(bone_dirs).items():
            ok &= (v >= self.low[k] - 1e-6) & (v <= self.high[k] + 1e-6)
        for k, v in _separations(bone_dirs).items():
            ok &= v >= self.min_separation[k] - 1e-6
        return ok


def _separations(bone_dirs: np.ndarray) -> dict[str, np.ndarray]:
    joints = joints_from_directions(bone_dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)
    j = skeleton.JOINT_INDEX
    return {
        f"{a}-{b}": np.linalg.norm(joints[..., j[a], :] - joints[..., j[b], :], axis=-1)
        for a, b in SEPARATED_PAIRS
    }


def compose_poses(
    bank: PoseBank,
    rng: np.random.Generator,
    n: int,
    limits: JointLimits,
    *,
    swap_prob: float = 0.5,
    tries: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` new poses composed from the bank: a base pose (its torso, head and face) with each
    limb, with probability ``swap_prob`` (at least one limb per pose), taken from another bank
    pose or from its mirror image (the other side's limb, mirrored), in the limb's parent frame
    (``_limb_frames``). A pose outside ``limits`` is drawn again (up to ``tries`` rounds, then the
    base pose is kept as it is).

    Returns bone directions (n, 14, 3), auxiliary directions (n, 4, 3) in the body frame and
    whether each pose is composed (n,) bool (False: the base pose, after ``tries`` failed rounds).
    """
    m_dirs, m_aux = mirror(bank.bone_dirs, bank.aux_dirs)
    donors_dirs = np.concatenate([bank.bone_dirs, m_dirs])
    donors_aux = np.concatenate([bank.aux_dirs, m_aux])
    donor_frames = _limb_frames(donors_dirs)
    out_dirs = np.zeros((n, NUM_BONES, 3))
    out_aux = np.zeros((n, len(AUX_NAMES), 3))
    composed = np.zeros(n, dtype=bool)
    todo = np.arange(n)
    for attempt in range(tries):
        k = len(todo)
        base = rng.integers(0, len(bank), k)
        dirs, aux = bank.bone_dirs[base].copy(), bank.aux_dirs[base].copy()
        base_frames = _limb_frames(dirs)
        swap = rng.random((k, len(LIMBS))) < swap_prob
        none = ~swap.any(axis=1)
        swap[none, rng.integers(0, len(LIMBS), int(none.sum()))] = True
        donor = rng.integers(0, len(donors_dirs), (k, len(LIMBS)))
        for li, (limb, bones) in enumerate(LIMBS.items()):
            rows = np.flatnonzero(swap[:, li])
            d = donor[rows, li]
            to_base = np.swapaxes(base_frames[limb][rows], -1, -2) @ donor_frames[limb][d]  # (r, 3, 3)
            dirs[rows[:, None], list(bones)] = np.einsum(
                "rij,rbj->rbi", to_base, donors_dirs[d][:, list(bones)]
            )
            if LIMB_AUX[limb]:
                aux[rows[:, None], list(LIMB_AUX[limb])] = np.einsum(
                    "rij,rbj->rbi", to_base, donors_aux[d][:, list(LIMB_AUX[limb])]
                )
        ok = limits.within(dirs)
        out_dirs[todo[ok]], out_aux[todo[ok]] = dirs[ok], aux[ok]
        composed[todo[ok]] = True
        if ok.all():
            break
        if attempt == tries - 1:
            out_dirs[todo[~ok]] = bank.bone_dirs[base[~ok]]
            out_aux[todo[~ok]] = bank.aux_dirs[base[~ok]]
        todo = todo[~ok]
    return out_dirs, out_aux, composed


@dataclass(frozen=True)
class PoseGap:
    """What each set's poses are drawn from (docs/synthetic.md, The pose gap).

    lab_pose_share: the lab (train and test subjects alike) draws only from the bank's most
    ordinary clusters holding about this share of the poses (``lab_clusters``; 1 = no gap);
    composed_share: this share of the wild, wild-test and street poses is composed
    (``compose_poses``), the rest drawn from the whole bank.
    """

    lab_pose_share: float = LAB_POSE_SHARE
    composed_share: float = COMPOSED_SHARE

    def __post_init__(self) -> None:
        if not 0.0 < self.lab_pose_share <= 1.0:
            raise ValueError(f"lab pose share must be in (0, 1], not {self.lab_pose_share}")
        if not 0.0 <= self.composed_share <= 1.0:
            raise ValueError(f"composed share must be in [0, 1], not {self.composed_share}")


def sample_poses(
    bank: PoseBank,
    rng: np.random.Generator,
    n: int,
    *,
    pool: np.ndarray | None = None,
    composed_share: float = 0.0,
    limits: JointLimits | None = None,
    yaw: bool = True,
    mirror_prob: float = 0.5,
    bone_noise_deg: float = 3.0,
    arm_noise_deg: float = 8.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` augmented poses: a bank pose (from ``pool``, bank indices, default all; or, with
    probability ``composed_share``, a pose composed from the whole bank within ``limits``,
    ``compose_poses``), mirrored with ``mirror_prob``, turned by a uniform heading about the
    vertical (when ``yaw``), limb bones tilted by ~``bone_noise_deg`` and each arm as a whole
    swung about its shoulder by ~``arm_noise_deg`` (small joint-angle noise).

    Returns bone directions (n, 14, 3), auxiliary directions (n, 4, 3) in the body frame (now
    including the heading) and the bank indices (n,) (-1 for a composed pose).
    """
    pool = np.arange(len(bank)) if pool is None else np.asarray(pool)
    index = pool[rng.integers(0, len(pool), n)]
    dirs, aux = bank.bone_dirs[index].copy(), bank.aux_dirs[index].copy()
    if composed_share > 0:
        new = rng.random(n) < composed_share
        if new.any():
            if limits is None:
                raise ValueError("composed poses need joint limits")
            dirs[new], aux[new], _ = compose_poses(bank, rng, int(new.sum()), limits)
            index[new] = -1
    flip = rng.random(n) < mirror_prob
    if flip.any():
        dirs[flip], aux[flip] = mirror(dirs[flip], aux[flip])
    limb_rot = _small_rotations(rng, (n, len(_LIMB_BONES)), np.deg2rad(bone_noise_deg))
    dirs[:, _LIMB_BONES] = np.einsum("nbij,nbj->nbi", limb_rot, dirs[:, _LIMB_BONES])
    for bones in _ARM_BONES.values():
        arm_rot = _small_rotations(rng, (n,), np.deg2rad(arm_noise_deg))
        dirs[:, bones] = np.einsum("nij,nbj->nbi", arm_rot, dirs[:, bones])
    if yaw:
        r = yaw_rotations(rng.uniform(-np.pi, np.pi, n))
        dirs = np.einsum("nij,nbj->nbi", r, dirs)
        aux = np.einsum("nij,nbj->nbi", r, aux)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return dirs, aux, index


def load_bank() -> PoseBank:
    """The shipped bank (``data_prep/assets/pose_bank.npz``)."""
    return PoseBank.load(ASSET_PATH)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the synthetic generator's pose bank from a CMU BVH clip and, optionally, a "
        "CMU ASF/AMC motion."
    )
    parser.add_argument("--bvh", required=True, help="CMU BVH clip (e.g. the fixtures' mocap/cmu_01_01.bvh)")
    parser.add_argument("--asf", default=None, help="CMU ASF skeleton (e.g. the fixtures' mocap/cmu_11.asf)")
    parser.add_argument("--amc", default=None, help="its AMC motion (e.g. the fixtures' mocap/cmu_11_01.amc)")
    parser.add_argument("--out", default=str(ASSET_PATH), help="output .npz (default: the shipped asset)")
    parser.add_argument("--count", type=int, default=500, help="number of poses to keep")
    parser.add_argument("--clusters", type=int, default=12, help="number of pose clusters (k-means)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means start")
    args = parser.parse_args(argv)
    if (args.asf is None) != (args.amc is None):
        parser.error("--asf and --amc go together")
    pair = (args.asf, args.amc) if args.asf else None
    bank = build_pose_bank(args.bvh, args.count, asf_amc=pair, num_clusters=args.clusters, seed=args.seed)
    bank.save(args.out)
    sizes = np.bincount(bank.clusters).tolist()
    print(f"pose bank: {len(bank)} poses from {bank.source}, clusters of {sizes} poses -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
