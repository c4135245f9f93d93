"""Synthetic bodies: proportions, appearance, a posed skeleton and its volumes.

A body's bones are the canonical ones (``skeleton.CANONICAL_BONE_LENGTHS_MM``) times a global
scale and a per-bone factor of a few per cent, left and right alike (docs/conventions.md,
Synthetic data), so the geometric prior of the bone-ratio loss holds for it as it does for real
people. The volumes are capsules (limbs, neck, shoulders, feet) and ellipsoids (head, chest, belly,
pelvis, hands), with thicknesses that scale with the body.

Besides the 16 joints a posed body gives the other joint sets the raw formats need: mmpose's
Human3.6M 17 and 3DHP 17 orders and Human3.6M's raw 32-joint skeleton (``h36m17``, ``mpi3dhp17``,
``h36m32``; see those functions for how the extra joints are placed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.synthetic import posebank
from data_prep.synthetic.render import Capsule, Ellipsoid, Primitive
from pose3d import skeleton

J = skeleton.JOINT_INDEX
B = skeleton.BONE_INDEX

PART_NAMES: tuple[str, ...] = (
    "skin", "hair", "top", "sleeve_upper", "sleeve_lower", "trousers", "trousers_lower", "shoes",
)  # fmt: skip
PART = {name: i for i, name in enumerate(PART_NAMES)}

#: Mean limb radii of the canonical body (mm).
RADIUS_MM = {
    "upper_arm": 46.0, "lower_arm": 37.0, "hand": 44.0, "thigh": 70.0, "shin": 50.0, "foot": 42.0,
    "neck": 48.0, "shoulder": 58.0,
}  # fmt: skip
FOOT_LENGTH_MM = 150.0  # ankle to the ball of the foot
#: How far in front of the skeleton a visible surface may lie, per joint (mm), for self-occlusion.
JOINT_DEPTH_TOLERANCE_MM = np.array(
    [75, 90, 150, 150, 90, 75, 170, 150, 80, 40, 70, 75, 100, 100, 75, 70], dtype=np.float64
)


#: COCO's face keypoints as directions in the head's axes (left, up, forward), each placed where
#: that direction leaves the head ellipsoid: nose, left eye, right eye, left ear, right ear.
COCO_FACE_DIRECTIONS = np.array(
    [[0.0, -0.2, 1.0], [0.35, 0.1, 0.9], [-0.35, 0.1, 0.9], [1.0, 0.05, -0.05], [-1.0, 0.05, -0.05]]
)
#: How far in front of a COCO face keypoint the seen surface may lie and still show it (mm): the
#: points lie on the head's surface.
COCO_FACE_DEPTH_TOLERANCE_MM = 25.0
_COCO_BODY_JOINTS = (
    "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
    "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)  # fmt: skip
#: (17,) visibility depth tolerance per COCO keypoint (mm): the face's, then the 16 joints'.
COCO_DEPTH_TOLERANCE_MM = np.concatenate(
    [np.full(5, COCO_FACE_DEPTH_TOLERANCE_MM), JOINT_DEPTH_TOLERANCE_MM[[J[n] for n in _COCO_BODY_JOINTS]]]
)


@dataclass(frozen=True)
class BodyShape:
    """bone_lengths (14,) mm; thickness: a factor on every radius; scale: the global size."""

    bone_lengths: np.ndarray
    thickness: float = 1.0
    scale: float = 1.0

    @staticmethod
    def random(rng: np.random.Generator, bone_sigma: float = 0.03, scale_sigma: float = 0.03) -> BodyShape:
        """Canonical proportions x N(1, bone_sigma) per bone (left = right) x a global N(1, scale_sigma),
        each factor clipped at 2.5 sigma: about ±4 % per bone overall."""
        names = [n.removeprefix("r_").removeprefix("l_") for n in skeleton.BONE_NAMES]
        kinds = sorted(set(names))
        factor = dict(
            zip(
                kinds,
                1 + np.clip(rng.normal(0, bone_sigma, len(kinds)), -2.5 * bone_sigma, 2.5 * bone_sigma),
                strict=True,
            )
        )
        scale = float(1 + np.clip(rng.normal(0, scale_sigma), -2.5 * scale_sigma, 2.5 * scale_sigma))
        lengths = skeleton.CANONICAL_BONE_LENGTHS_MM * np.array([factor[n] for n in names]) * scale
        thickness = float(np.clip(rng.normal(1.0, 0.08), 0.85, 1.2))
        return BodyShape(lengths, thickness, scale)


@dataclass(frozen=True)
class Appearance:
    """BGR albedos in [0, 1] per part (``PART_NAMES``)."""

    albedo: np.ndarray  # (len(PART_NAMES), 3)

    @staticmethod
    def random(rng: np.random.Generator) -> Appearance:
        """Random clothing colours; skin and hair from natural ranges; sleeves and trousers long or short."""
        tone = rng.uniform(0.25, 0.95)
        skin = np.array([0.45, 0.58, 0.8]) * tone + np.array([0.05, 0.05, 0.08])
        hair = np.array([0.06, 0.08, 0.1]) + rng.uniform(0, 0.35) * np.array([0.4, 0.6, 0.8])

        def cloth() -> np.ndarray:
            c = rng.uniform(0.05, 0.95, 3)
            return c if rng.random() < 0.7 else np.full(3, rng.uniform(0.05, 0.9))  # some greys

        top, trousers, shoes = cloth(), cloth(), cloth() * 0.6
        sleeves = rng.random()
        upper = top if sleeves < 0.8 else skin
        lower = top if sleeves < 0.45 else skin
        lower_leg = trousers if rng.random() < 0.8 else skin
        return Appearance(np.stack([skin, hair, top, upper, lower, trousers, lower_leg, shoes]).clip(0, 1))


@dataclass
class PosedBody:
    """A body in some frame (body frame, world or camera), mm.

    joints (16, 3); aux_dirs (4, 3) unit ``posebank.AUX_NAMES`` directions in the same frame; shape.
    """

    joints: np.ndarray
    aux_dirs: np.ndarray
    shape: BodyShape

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> PosedBody:
        """x -> rotation @ x + translation (directions rotated only)."""
        return PosedBody(self.joints @ rotation.T + translation, self.aux_dirs @ rotation.T, self.shape)

    # --- the extra joints of the raw formats -------------------------------------------------
    def _aux(self, name: str) -> np.ndarray:
        return self.aux_dirs[posebank.AUX_INDEX[name]]

    def neck_base(self) -> np.ndarray:
        """Where the neck meets the shoulders (Human3.6M's "Neck", mmpose's H36M "thorax"): the
        shoulders' midpoint, like the 16-joint thorax."""
        return self.joints[J["thorax"]]

    def mid_spine(self) -> np.ndarray:
        """Human3.6M's "Spine1" (mmpose's "spine"): 45 % of the way up the torso, along the chest
        direction (so the torso's bend shows)."""
        height = np.linalg.norm(self.neck_base() - self.joints[J["pelvis"]])
        return self.joints[J["pelvis"]] + self._aux("chest") * 0.45 * height

    def head_centre(self) -> np.ndarray:
        """3DHP's "head": halfway between the upper neck and the head top."""
        return (self.joints[J["upper_neck"]] + self.joints[J["head_top"]]) / 2

    def toe(self, side: str) -> np.ndarray:
        return self.joints[J[f"{side}_ankle"]] + self._aux(f"{side}_foot") * FOOT_LENGTH_MM * self.shape.scale

    def h36m17(self) -> np.ndarray:
        """(17, 3) in mmpose's Human3.6M order (``skeleton.H36M17``)."""
        j = self.joints
        return np.stack([
            j[J["pelvis"]], j[J["r_hip"]], j[J["r_knee"]], j[J["r_ankle"]],
            j[J["l_hip"]], j[J["l_knee"]], j[J["l_ankle"]],
            self.mid_spine(), self.neck_base(), j[J["upper_neck"]], j[J["head_top"]],
            j[J["l_shoulder"]], j[J["l_elbow"]], j[J["l_wrist"]],
            j[J["r_shoulder"]], j[J["r_elbow"]], j[J["r_wrist"]],
        ])  # fmt: skip

    def mpi3dhp17(self) -> np.ndarray:
        """(17, 3) in mmpose's 3DHP order (``skeleton.MPI3DHP17``); its "neck" is the upper neck."""
        j = self.joints
        return np.stack([
            j[J["head_top"]], j[J["upper_neck"]],
            j[J["r_shoulder"]], j[J["r_elbow"]], j[J["r_wrist"]],
            j[J["l_shoulder"]], j[J["l_elbow"]], j[J["l_wrist"]],
            j[J["r_hip"]], j[J["r_knee"]], j[J["r_ankle"]],
            j[J["l_hip"]], j[J["l_knee"]], j[J["l_ankle"]],
            j[J["pelvis"]], self.mid_spine(), self.head_centre(),
        ])  # fmt: skip

    def h36m32(self) -> np.ndarray:
        """(32, 3) in Human3.6M's raw mocap order (docs/conventions.md, Joint mappings).

        The joints ``skeleton.H36M32`` maps are the body's own; the others are placed plausibly:
        toes along the feet, the spine joints on the torso, the clavicle joints at the neck base,
        hand ends along the forearms (thumbs beside them).
        """
        j = self.joints
        out = np.zeros((32, 3))
        out[0] = j[J["pelvis"]]
        for base, side in ((1, "r"), (6, "l")):
            out[base], out[base + 1], out[base + 2] = (
                j[J[f"{side}_hip"]],
                j[J[f"{side}_knee"]],
                j[J[f"{side}_ankle"]],
            )
            toe = self.toe(side)
            out[base + 3] = toe
            out[base + 4] = toe + self._aux(f"{side}_foot") * 0.5 * FOOT_LENGTH_MM * self.shape.scale
        out[11] = j[J["pelvis"]] + self._aux("chest") * 0.1
        out[12], out[13] = self.mid_spine(), self.neck_base()
        out[14], out[15] = j[J["upper_neck"]], j[J["head_top"]]
        for base, side in ((16, "l"), (24, "r")):
            forearm = j[J[f"{side}_wrist"]] - j[J[f"{side}_elbow"]]
            forearm /= max(np.linalg.norm(forearm), 1e-9)
            out[base] = self.neck_base()
            out[base + 1], out[base + 2], out[base + 3] = (
                j[J[f"{side}_shoulder"]],
                j[J[f"{side}_elbow"]],
                j[J[f"{side}_wrist"]],
            )
            out[base + 4] = out[base + 3]
            lateral = np.cross(forearm, self._aux("face"))
            out[base + 5] = out[base + 3] + 60.0 * forearm + 40.0 * lateral
            out[base + 6] = out[base + 3] + 100.0 * forearm
            out[base + 7] = out[base + 6]
        return out

    def head_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The head ellipsoid: centre (3,) mm, axes (3, 3) unit rows (the subject's left, up along
        the head, the facing direction), radii (3,) mm. From the head top down to the chin (0.75 head
        bones below the upper neck), a little forward of the neck."""
        j = self.joints
        upper_neck, top = j[J["upper_neck"]], j[J["head_top"]]
        shoulders = j[J["l_shoulder"]] - j[J["r_shoulder"]]
        head_len = np.linalg.norm(top - upper_neck)
        head_up = _unit(top - upper_neck)
        face = self._aux("face") - (self._aux("face") @ head_up) * head_up
        face = _unit(face) if np.linalg.norm(face) > 1e-6 else _unit(np.cross(shoulders, head_up))
        centre = top - 0.875 * head_len * head_up + 0.1 * head_len * face
        axes = np.stack([_unit(np.cross(head_up, face)), head_up, face])
        radii = np.array([0.68, 0.875, 0.8]) * head_len
        return centre, axes, radii

    def coco17(self) -> np.ndarray:
        """(17, 3) in COCO's keypoint order (nose, l_eye, r_eye, l_ear, r_ear, l_sho, r_sho, l_elb,
        r_elb, l_wri, r_wri, l_hip, r_hip, l_knee, r_knee, l_ank, r_ank). Body joints are the 16's;
        the face points lie on the head ellipsoid's surface (``COCO_FACE_DIRECTIONS``)."""
        centre, axes, radii = self.head_frame()
        # A surface point along a direction u given in the head's axes: t u with |t u / radii| = 1.
        u = COCO_FACE_DIRECTIONS
        t = 1.0 / np.linalg.norm(u / radii, axis=-1)
        face = centre + (u * t[:, None]) @ axes
        body = self.joints[[J[n] for n in _COCO_BODY_JOINTS]]
        return np.concatenate([face, body])

    # --- volumes ------------------------------------------------------------------------------
    def primitives(self, up: np.ndarray) -> list[Primitive]:
        """The body's volumes in this frame; ``up`` (3,) is the world's up direction here."""
        j, s = self.joints, self.shape
        r = {k: v * s.thickness * s.scale for k, v in RADIUS_MM.items()}
        pelvis, neck, upper_neck = j[J["pelvis"]], self.neck_base(), j[J["upper_neck"]]
        torso_up = _unit(neck - pelvis)
        torso_len = np.linalg.norm(neck - pelvis)
        shoulders = j[J["l_shoulder"]] - j[J["r_shoulder"]]
        hips = j[J["l_hip"]] - j[J["r_hip"]]
        chest_mid = pelvis + self._aux("chest") * 0.45 * torso_len
        girth = s.thickness * s.scale
        hip_half, shoulder_half = np.linalg.norm(hips) / 2, np.linalg.norm(shoulders) / 2
        prims: list[Primitive] = [
            _ellipsoid(pelvis + 0.06 * torso_len * torso_up, hips, torso_up,
                       (hip_half + 75 * girth, 0.24 * torso_len, 105 * girth), PART["trousers"]),
            _ellipsoid((chest_mid + pelvis) / 2 + 0.1 * torso_len * torso_up, hips + shoulders,
                       chest_mid - pelvis, (150 * girth, 0.26 * torso_len, 100 * girth), PART["top"]),
            _ellipsoid((chest_mid + neck) / 2 - 0.02 * torso_len * torso_up, shoulders, neck - chest_mid,
                       (shoulder_half + 15 * girth, 0.33 * torso_len, 110 * girth), PART["top"]),
            Capsule(j[J["r_shoulder"]], j[J["l_shoulder"]], r["shoulder"], PART["top"]),
            Capsule(neck, upper_neck, r["neck"], PART["skin"]),
        ]  # fmt: skip
        centre, axes, radii = self.head_frame()
        head_up, face = axes[1], axes[2]
        # Hair: the back and the top of the head; face and sides are skin.
        hair_dir = _unit(face - 0.9 * head_up)
        prims.append(Ellipsoid(centre, axes, radii, PART["skin"], PART["hair"], hair_dir, -0.25))
        for side in ("r", "l"):
            sho, elb, wri = j[J[f"{side}_shoulder"]], j[J[f"{side}_elbow"]], j[J[f"{side}_wrist"]]
            hip, knee, ank = j[J[f"{side}_hip"]], j[J[f"{side}_knee"]], j[J[f"{side}_ankle"]]
            hand_dir = _unit(wri - elb)
            heel = ank - 0.25 * r["foot"] * self._aux(f"{side}_foot")
            prims += [
                Capsule(sho, elb, r["upper_arm"], PART["sleeve_upper"]),
                Capsule(elb, wri, r["lower_arm"], PART["sleeve_lower"]),
                Ellipsoid(wri + hand_dir * 1.6 * r["hand"], _frame(hand_dir, up),
                          np.array([0.75, 1.55, 0.45]) * r["hand"], PART["skin"]),
                Capsule(hip, knee, r["thigh"], PART["trousers"]),
                Capsule(knee, ank, r["shin"], PART["trousers_lower"]),
                Capsule(heel, self.toe(side), r["foot"], PART["shoes"]),
            ]  # fmt: skip
        return prims


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Orthonormal rows (primary-ish lateral, primary, normal): row 1 is ``primary``; row 0 is
    ``secondary`` made orthogonal to it (any perpendicular when they are parallel)."""
    y = _unit(primary)
    x = secondary - (secondary @ y) * y
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(y, [1.0, 0.0, 0.0]) if abs(y[0]) < 0.9 else np.cross(y, [0.0, 1.0, 0.0])
    x = _unit(x)
    return np.stack([x, y, np.cross(x, y)])


def _ellipsoid(
    centre: np.ndarray, lateral: np.ndarray, vertical: np.ndarray, radii: tuple, part: int
) -> Ellipsoid:
    """An ellipsoid whose second axis is ``vertical`` and first is ``lateral`` made orthogonal."""
    rows = _frame(vertical, lateral)
    return Ellipsoid(centre, rows, np.asarray(radii, np.float64), part)


def pose_body(bone_dirs: np.ndarray, aux_dirs: np.ndarray, shape: BodyShape) -> PosedBody:
    """A body in the body frame (x left, y up, z forward; pelvis at the origin) from one pose."""
    joints = posebank.joints_from_directions(bone_dirs, shape.bone_lengths)
    return PosedBody(joints, aux_dirs.copy(), shape)


#: Body frame (x left, y up, z forward) -> a z-up world (x, y horizontal): y_body -> z_world.
BODY_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def stand_on_floor(body: PosedBody, ground_xy: np.ndarray) -> PosedBody:
    """The body (in the body frame) moved into the z-up world, its lowest foot point on z = 0 and
    its pelvis above ``ground_xy`` (2,) mm."""
    world = body.transformed(BODY_TO_ZUP, np.zeros(3))
    r_foot = RADIUS_MM["foot"] * body.shape.thickness * body.shape.scale
    lowest = min(
        world.joints[J["r_ankle"], 2], world.joints[J["l_ankle"], 2], world.toe("r")[2], world.toe("l")[2]
    )
    shift = np.array([ground_xy[0], ground_xy[1], -(lowest - r_foot)])
    return world.transformed(np.eye(3), shift)
