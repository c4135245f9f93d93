"""A small ASF/AMC reader and vectorized forward kinematics (CMU motion capture's native format).

ASF (the skeleton): ``:units`` (``length`` is a scale: 1 file unit = 1/length inch; ``angle`` deg
or rad), ``:root`` (``order`` of the root's 6 AMC values, ``axis`` the Euler order of its
orientation, ``position``, ``orientation``), ``:bonedata`` (``begin`` ... ``end`` blocks: ``name``,
a unit ``direction`` and a ``length`` in the rest pose, world axes; ``axis`` 3 angles + an Euler
order giving the bone's local frame C; optional ``dof`` (rx ry rz, a subset) and ``limits``) and
``:hierarchy`` (``begin`` ... ``end``: lines ``parent child child ...``).

AMC (the motion): header lines (``#`` comments, ``:FULLY-SPECIFIED``, ``:DEGREES``), then frames:
a line holding the frame number, then one line per bone with dofs, ``name v1 v2 ...`` (the root
first, its 6 values in the ASF ``order``). Angles are Euler angles in the order of the bone's
``axis`` (CMU: XYZ, i.e. R = Rz(z) @ Ry(y) @ Rx(x) on column vectors).

Forward kinematics (the CMU/Acclaim convention): a bone's global rotation is
``M = M_parent @ C @ R(amc) @ C^-1`` and its end point is ``start + length * M @ direction``; the
root's rotation is ``C_root @ R(root values) @ C_root^-1`` and its position the AMC translation.
Malformed input raises ``ValueError`` naming the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_AXES = "xyz"


@dataclass
class AsfBone:
    """One ASF bone: ``direction`` (3,) unit vector and ``length`` in file units (rest pose, world
    axes); ``axis`` (3,) degrees and its Euler ``order`` (e.g. "XYZ"); ``dof`` e.g. ("rx", "rz");
    ``parent`` the parent's name ("root" for the root's children)."""

    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray
    order: str
    dof: tuple[str, ...] = ()
    parent: str = ""


@dataclass
class AsfSkeleton:
    """bones in an order that places every bone after its parent; ``length_unit_m`` metres per file
    unit; the root's AMC value order (e.g. ("TX", ..., "RZ")), orientation (3,) degrees and order."""

    bones: list[AsfBone]
    length_unit_m: float
    root_order: tuple[str, ...]
    root_axis: str
    root_position: np.ndarray
    root_orientation: np.ndarray
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {b.name: i for i, b in enumerate(self.bones)}


def _error(path: str | Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {message}")


def _floats(path: str | Path, line: int, words: list[str], count: int, what: str) -> np.ndarray:
    if len(words) < count:
        raise _error(path, line, f"{what} needs {count} numbers, got {len(words)}")
    try:
        return np.array([float(w) for w in words[:count]])
    except ValueError:
        raise _error(path, line, f"{what}: not a number in {' '.join(words[:count])!r}") from None


def read_asf(path: str | Path) -> AsfSkeleton:
    """Parse an ASF skeleton (module docstring). Angles come out in degrees."""
    lines = Path(path).read_text().splitlines()
    section = ""
    length_scale, to_degrees = 1.0, 1.0
    root_order: tuple[str, ...] = ("TX", "TY", "TZ", "RX", "RY", "RZ")
    root_axis, root_pos, root_orient = "XYZ", np.zeros(3), np.zeros(3)
    bones: dict[str, AsfBone] = {}
    current: dict | None = None
    begin_line = 0
    parents: dict[str, str] = {}
    for n, raw in enumerate(lines, start=1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        key = words[0]
        if key.startswith(":"):
            section = key[1:].lower()
            continue
        if section == "units":
            if key == "length":
                length_scale = float(_floats(path, n, words[1:], 1, "length")[0])
            elif key == "angle":
                if words[1:2] not in (["deg"], ["rad"]):
                    raise _error(path, n, f"angle unit must be deg or rad, not {' '.join(words[1:])!r}")
                to_degrees = 1.0 if words[1] == "deg" else 180.0 / np.pi
        elif section == "root":
            if key == "order":
                root_order = tuple(w.upper() for w in words[1:])
                if sorted(root_order) != ["RX", "RY", "RZ", "TX", "TY", "TZ"]:
                    raise _error(
                        path, n, f"root order must list TX TY TZ RX RY RZ, got {' '.join(words[1:])}"
                    )
            elif key == "axis":
                root_axis = words[1].upper() if len(words) > 1 else ""
                if sorted(root_axis) != ["X", "Y", "Z"]:
                    raise _error(path, n, f"root axis must be an order of XYZ, got {root_axis!r}")
            elif key == "position":
                root_pos = _floats(path, n, words[1:], 3, "root position")
            elif key == "orientation":
                root_orient = _floats(path, n, words[1:], 3, "root orientation") * to_degrees
        elif section == "bonedata":
            if key == "begin":
                if current is not None:
                    raise _error(path, n, f"'begin' inside the bone block opened on line {begin_line}")
                current, begin_line = {"dof": ()}, n
            elif key == "end":
                if current is None:
                    raise _error(path, n, "'end' without 'begin'")
                missing = [k for k in ("name", "direction", "length", "axis") if k not in current]
                if missing:
                    raise _error(path, begin_line, f"bone block lacks {', '.join(missing)}")
                d = current["direction"]
                norm = float(np.linalg.norm(d))
                if norm == 0:
                    raise _error(path, begin_line, f"bone {current['name']}: zero direction")
                bones[current["name"]] = AsfBone(
                    current["name"], d / norm, current["length"], current["axis"], current["order"],
                    current["dof"],
                )  # fmt: skip
                current = None
            elif current is None:
                raise _error(path, n, f"{key!r} outside a bone block")
            elif key == "name":
                current["name"] = words[1]
            elif key == "direction":
                current["direction"] = _floats(path, n, words[1:], 3, "direction")
            elif key == "length":
                current["length"] = float(_floats(path, n, words[1:], 1, "length")[0])
            elif key == "axis":
                current["axis"] = _floats(path, n, words[1:], 3, "axis") * to_degrees
                order = words[4].upper() if len(words) > 4 else ""
                if sorted(order) != ["X", "Y", "Z"]:
                    raise _error(path, n, f"axis order must be an order of XYZ, got {order!r}")
                current["order"] = order
            elif key == "dof":
                dof = tuple(w.lower() for w in words[1:])
                if not dof or any(d not in ("rx", "ry", "rz") for d in dof) or len(set(dof)) != len(dof):
                    raise _error(path, n, f"dof must be distinct rx/ry/rz, got {' '.join(words[1:])!r}")
                current["dof"] = dof
        elif section == "hierarchy":
            if key in ("begin", "end"):
                continue
            for child in words[1:]:
                if child in parents:
                    raise _error(path, n, f"bone {child} has two parents ({parents[child]}, {key})")
                parents[child] = key
    if current is not None:
        raise _error(path, begin_line, "bone block never ends")
    if not bones:
        raise ValueError(f"{path}: no :bonedata bones")
    for name in bones:
        if name not in parents:
            raise ValueError(f"{path}: bone {name} is not in the :hierarchy")
    for child, parent in parents.items():
        if child not in bones:
            raise ValueError(f"{path}: :hierarchy names {child}, which has no bonedata")
        if parent != "root" and parent not in bones:
            raise ValueError(f"{path}: :hierarchy names parent {parent}, which has no bonedata")
        bones[child].parent = parent
    ordered: list[AsfBone] = []
    placed = {"root"}
    while len(ordered) < len(bones):
        ready = [b for b in bones.values() if b.name not in placed and b.parent in placed]
        if not ready:
            raise ValueError(f"{path}: the :hierarchy has a cycle")
        for b in ready:
            ordered.append(b)
            placed.add(b.name)
    return AsfSkeleton(ordered, 0.0254 / length_scale, root_order, root_axis, root_pos, root_orient)


@dataclass
class AmcMotion:
    """root (F, 6) values in the ASF root order; bones: name -> (F, len(dof)) degrees;
    frame_numbers (F,) as written in the file."""

    root: np.ndarray
    bones: dict[str, np.ndarray]
    frame_numbers: np.ndarray


def read_amc(path: str | Path, skeleton: AsfSkeleton) -> AmcMotion:
    """Parse an AMC motion for ``skeleton``: every frame must give every bone with dofs (and the
    root) once, with exactly its number of values."""
    expected = {"root": 6, **{b.name: len(b.dof) for b in skeleton.bones if b.dof}}
    lines = Path(path).read_text().splitlines()
    values: dict[str, list[list[str]]] = {name: [] for name in expected}
    where: dict[str, list[int]] = {name: [] for name in expected}
    numbers: list[int] = []
    seen: set[str] = set()
    frame_line = 0

    def close_frame(at: int) -> None:
        if numbers and seen != set(expected):
            missing = sorted(set(expected) - seen)
            raise _error(path, frame_line, f"frame {numbers[-1]} lacks {', '.join(missing)} (ends line {at})")

    for n, raw in enumerate(lines, start=1):
        words = raw.split()
        if not words or words[0].startswith(("#", ":")):
            if numbers and words and words[0].startswith(":"):
                raise _error(path, n, f"header line {words[0]!r} after the first frame")
            continue
        if len(words) == 1 and words[0].lstrip("-").isdigit():
            close_frame(n - 1)
            numbers.append(int(words[0]))
            seen, frame_line = set(), n
            continue
        name = words[0]
        if not numbers:
            raise _error(path, n, f"bone line {name!r} before the first frame number")
        if name not in expected:
            raise _error(path, n, f"unknown bone {name!r} (not a bone with dofs of the skeleton)")
        if name in seen:
            raise _error(path, n, f"bone {name} twice in frame {numbers[-1]}")
        if len(words) - 1 != expected[name]:
            raise _error(path, n, f"bone {name} needs {expected[name]} values, got {len(words) - 1}")
        seen.add(name)
        values[name].append(words[1:])
        where[name].append(n)
    close_frame(len(lines))
    if not numbers:
        raise ValueError(f"{path}: no frames")
    arrays = {}
    for name, rows in values.items():
        try:
            arrays[name] = np.array(rows, dtype=np.float64).reshape(len(rows), expected[name])
        except ValueError:
            for row, n in zip(rows, where[name], strict=True):
                _floats(path, n, row, len(row), f"bone {name}")
            raise
    return AmcMotion(arrays.pop("root"), arrays, np.array(numbers))


def euler_matrices(angles_deg: np.ndarray, order: str) -> np.ndarray:
    """Rotations (..., 3, 3) from Euler angles (..., 3) degrees given per axis x, y, z, applied in
    ``order`` (e.g. "XYZ": first about x, so R = Rz @ Ry @ Rx on column vectors)."""
    a = np.deg2rad(np.asarray(angles_deg, np.float64))
    out = np.broadcast_to(np.eye(3), (*a.shape[:-1], 3, 3)).copy()
    for axis in order.upper():
        i = "XYZ".index(axis)
        c, s = np.cos(a[..., i]), np.sin(a[..., i])
        r = np.zeros((*a.shape[:-1], 3, 3))
        j, k = (i + 1) % 3, (i + 2) % 3
        r[..., i, i] = 1.0
        r[..., j, j], r[..., j, k], r[..., k, j], r[..., k, k] = c, -s, s, c
        out = r @ out
    return out


def forward_kinematics(
    skeleton: AsfSkeleton, motion: AmcMotion, frames: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Global end points and rotations of every bone, vectorized over frames.

    Returns ({name: (F, 3) end point, file units, "root": the root position},
    {name: (F, 3, 3) global rotation (column vectors), "root": the root's}).
    """
    sel = slice(None) if frames is None else np.asarray(frames)
    root = motion.root[sel]
    f = root.shape[0]
    order = [o.upper() for o in skeleton.root_order]
    trans = np.stack([root[:, order.index(f"T{a}")] for a in "XYZ"], axis=-1)
    rot_xyz = np.stack([root[:, order.index(f"R{a}")] for a in "XYZ"], axis=-1)
    c = euler_matrices(skeleton.root_orientation, skeleton.root_axis)
    rotations = {"root": c @ euler_matrices(rot_xyz, skeleton.root_axis) @ c.T}
    positions = {"root": skeleton.root_position + trans}
    for bone in skeleton.bones:
        c = euler_matrices(bone.axis, bone.order)
        angles = np.zeros((f, 3))
        if bone.dof:
            values = motion.bones[bone.name][sel]
            for k, d in enumerate(bone.dof):
                angles[:, _AXES.index(d[1])] = values[:, k]
        local = c @ euler_matrices(angles, bone.order) @ c.T
        m = rotations[bone.parent] @ local
        rotations[bone.name] = m
        positions[bone.name] = positions[bone.parent] + bone.length * (m @ bone.direction)
    return positions, rotations
