"""The pose bank: a few hundred diverse, real human poses as unit bone directions.

Derived from CMU motion capture (``shared/fixtures/mocap/cmu_01_01.bvh``; CMU's terms allow shipping
derived poses). Human3.6M's motion is research-only, so it never enters the shipped bank.

A pose is stored as the 14 bone directions of ``pose3d.skeleton.BONES`` (unit vectors from
``BONES[b][0]`` to ``BONES[b][1]``) in the *body frame*: x = the subject's left (the horizontal
direction from the right hip to the left hip), y = up (gravity), z = x × y = the way the pelvis
faces. The heading (rotation about the vertical) is removed, pitch and roll are kept, so a bent-over
pose stays bent over. Four auxiliary directions dress the body: each foot (ankle → toe), the face
(the head's forward axis) and the chest (pelvis → top of the thoracic spine, which bends the torso).

Rebuild the shipped asset (deterministic):
``python -m data_prep.synthetic.posebank --bvh ../shared/fixtures/mocap/cmu_01_01.bvh --out
data_prep/assets/pose_bank.npz``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """bone_dirs (P, 14, 3) and aux_dirs (P, 4, 3) unit vectors in the body frame; source_frames (P,)."""

    bone_dirs: np.ndarray
    aux_dirs: np.ndarray
    source_frames: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.bone_dirs)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            bone_dirs=self.bone_dirs.astype(np.float32),
            aux_dirs=self.aux_dirs.astype(np.float32),
            source_frames=self.source_frames.astype(np.int32),
            bone_names=np.array(skeleton.BONE_NAMES),
            aux_names=np.array(AUX_NAMES),
            source=np.array(self.source),
            frame=np.array("body frame: x = subject's left, y = up, z = forward (x cross y)"),
        )

    @staticmethod
    def load(path: str | Path = ASSET_PATH) -> PoseBank:
        with np.load(path) as z:
            if tuple(z["bone_names"]) != skeleton.BONE_NAMES or tuple(z["aux_names"]) != AUX_NAMES:
                raise ValueError(f"{path}: pose bank for another bone order; rebuild it")
            return PoseBank(
                z["bone_dirs"].astype(np.float64),
                z["aux_dirs"].astype(np.float64),
                z["source_frames"].astype(np.int64),
                str(z["source"]),
            )


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
    up = np.array([0.0, 1.0, 0.0])  # BVH convention (CMU): y up
    r_body = body_frame(joints, up)  # (F, 3, 3)

    def to_body(v: np.ndarray) -> np.ndarray:
        v = np.einsum("fij,fj->fi", r_body, v)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    pelvis = joints[:, skeleton.ROOT]
    aux = np.stack(
        [
            to_body(pos[:, idx(CMU_FEET["r_foot"][1])] - pos[:, idx(CMU_FEET["r_foot"][0])]),
            to_body(pos[:, idx(CMU_FEET["l_foot"][1])] - pos[:, idx(CMU_FEET["l_foot"][0])]),
            to_body(rot[:, idx(CMU_HEAD)] @ np.array([0.0, 0.0, 1.0])),  # CMU rest pose faces +z
            to_body(pos[:, idx(CMU_CHEST_TOP)] - pelvis),
        ],
        axis=1,
    )
    dirs = np.einsum("fij,fbj->fbi", r_body, bone_directions(joints))
    return dirs, aux, frames


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


def build_pose_bank(bvh_path: str | Path, count: int = 400) -> PoseBank:
    """The bank: ``count`` diverse poses of the clip (farthest-point sampling of the poses rebuilt on
    the canonical skeleton, so the choice reflects posture and not the actor's proportions)."""
    dirs, aux, frames = cmu_poses(bvh_path)
    canon = joints_from_directions(dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)
    keep = np.sort(farthest_point_sample(canon, count))
    return PoseBank(dirs[keep], aux[keep], frames[keep], source=f"CMU mocap {Path(bvh_path).name}")


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


def sample_poses(
    bank: PoseBank,
    rng: np.random.Generator,
    n: int,
    *,
    yaw: bool = True,
    mirror_prob: float = 0.5,
    bone_noise_deg: float = 3.0,
    arm_noise_deg: float = 8.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` augmented poses: a bank pose, mirrored with ``mirror_prob``, turned by a uniform
    heading about the vertical (when ``yaw``), limb bones tilted by ~``bone_noise_deg`` and each arm
    as a whole swung about its shoulder by ~``arm_noise_deg`` (small joint-angle noise).

    Returns bone directions (n, 14, 3), auxiliary directions (n, 4, 3) in the body frame (now
    including the heading) and the bank indices (n,).
    """
    index = rng.integers(0, len(bank), n)
    dirs, aux = bank.bone_dirs[index].copy(), bank.aux_dirs[index].copy()
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
        description="Build the synthetic generator's pose bank from a CMU BVH clip."
    )
    parser.add_argument(
        "--bvh", required=True, help="CMU BVH clip (e.g. shared/fixtures/mocap/cmu_01_01.bvh)"
    )
    parser.add_argument("--out", default=str(ASSET_PATH), help="output .npz (default: the shipped asset)")
    parser.add_argument("--count", type=int, default=400, help="number of poses to keep")
    args = parser.parse_args(argv)
    bank = build_pose_bank(args.bvh, args.count)
    bank.save(args.out)
    print(f"pose bank: {len(bank)} poses from {bank.source} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
