"""A small BVH reader and vectorized forward kinematics (one of the pose bank's two input formats).

BVH: a ``HIERARCHY`` of joints, each with an ``OFFSET`` from its parent (in the rest pose) and a
``CHANNELS`` list (the root has 3 positions + 3 rotations, the others 3 rotations), ``End Site``
leaves with an offset only, then ``MOTION``: one line of channel values per frame, joints in the
order they appear. Rotations are Euler angles in degrees, composed in the listed channel order:
"Zrotation Yrotation Xrotation" means R_local = Rz(z) @ Ry(y) @ Rx(x) acting on column vectors,
the convention of the CMU conversions (and of Blender/MotionBuilder exports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class BvhJoint:
    """One node; ``channels`` is empty for an end site (named ``<parent>_end``)."""

    name: str
    parent: int  # index into BvhClip.joints, -1 for the root
    offset: np.ndarray  # (3,) rest-pose offset from the parent, file units
    channels: tuple[str, ...]


@dataclass
class BvhClip:
    joints: list[BvhJoint]
    motion: np.ndarray  # (F, C) channel values, file order
    frame_time: float  # seconds

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    def index(self, name: str) -> int:
        return self.names.index(name)


def read_bvh(path: str | Path) -> BvhClip:
    """Parse a BVH file (hierarchy and motion)."""
    tokens = Path(path).read_text().split()
    pos = 0

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expect(word: str) -> None:
        got = take()
        if got != word:
            raise ValueError(f"{path}: expected {word!r}, got {got!r} at token {pos}")

    joints: list[BvhJoint] = []
    expect("HIERARCHY")
    stack: list[int] = []
    while True:
        word = take()
        if word in ("ROOT", "JOINT"):
            name = take()
            expect("{")
            expect("OFFSET")
            offset = np.array([float(take()) for _ in range(3)])
            expect("CHANNELS")
            n = int(take())
            channels = tuple(take() for _ in range(n))
            joints.append(BvhJoint(name, stack[-1] if stack else -1, offset, channels))
            stack.append(len(joints) - 1)
        elif word == "End":
            expect("Site")
            expect("{")
            expect("OFFSET")
            offset = np.array([float(take()) for _ in range(3)])
            expect("}")
            joints.append(BvhJoint(f"{joints[stack[-1]].name}_end", stack[-1], offset, ()))
        elif word == "}":
            stack.pop()
            if not stack:
                break
        else:
            raise ValueError(f"{path}: unexpected token {word!r} in the hierarchy")
    expect("MOTION")
    expect("Frames:")
    num_frames = int(take())
    expect("Frame")
    expect("Time:")
    frame_time = float(take())
    num_channels = sum(len(j.channels) for j in joints)
    values = np.array(tokens[pos : pos + num_frames * num_channels], dtype=np.float64)
    if values.size != num_frames * num_channels:
        raise ValueError(f"{path}: {values.size} motion values, expected {num_frames} x {num_channels}")
    return BvhClip(joints, values.reshape(num_frames, num_channels), frame_time)


def _axis_rotations(axis: str, degrees: np.ndarray) -> np.ndarray:
    """(F,) angles -> (F, 3, 3) rotations about one coordinate axis (column-vector convention)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    out = np.zeros((len(a), 3, 3))
    i = "XYZ".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    out[:, i, i] = 1.0
    out[:, j, j], out[:, j, k] = c, -s
    out[:, k, j], out[:, k, k] = s, c
    return out


def forward_kinematics(clip: BvhClip, frames: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Global joint positions and rotations of every node, vectorized over frames.

    Returns positions (F, N, 3) in file units and rotations (F, N, 3, 3) (local-to-world, column
    vectors), for the N nodes of ``clip.joints`` (end sites included, with their parent's rotation).
    """
    motion = clip.motion if frames is None else clip.motion[np.asarray(frames)]
    f = motion.shape[0]
    n = len(clip.joints)
    positions = np.zeros((f, n, 3))
    rotations = np.zeros((f, n, 3, 3))
    col = 0
    for i, joint in enumerate(clip.joints):  # parents always precede their children in a BVH
        local_r = np.broadcast_to(np.eye(3), (f, 3, 3)).copy()
        local_t = np.zeros((f, 3))
        for name in joint.channels:
            values = motion[:, col]
            col += 1
            if name.endswith("position"):
                local_t[:, "XYZ".index(name[0])] = values
            else:
                local_r = local_r @ _axis_rotations(name[0], values)
        if joint.parent < 0:
            positions[:, i] = joint.offset + local_t
            rotations[:, i] = local_r
        else:
            parent_r = rotations[:, joint.parent]
            positions[:, i] = positions[:, joint.parent] + parent_r @ joint.offset
            rotations[:, i] = parent_r @ local_r
    return positions, rotations
