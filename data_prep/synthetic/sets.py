"""The synthetic sets: what each frame shows and how it is filmed.

- **lab** (Human3.6M-like): a grey studio room, 4 fixed cameras on the corners of the capture
  area at about 5 m (Human3.6M's camera ids and intrinsics scaled to the image size, with a mild
  Human3.6M-model lens distortion that the rendering follows exactly), 7 subjects of fixed
  appearance and proportions (S1, S5, S6, S7, S8 train; S9, S11 test), 15 action names x one or
  two trials. Every pose is filmed by all 4 cameras.
- **wild** (MPII-like): one person per image, random camera distance, height, roll and focal
  length, random image shape, cluttered 2D textures, outdoor ground and sky or a cluttered room,
  random clothing and light, occluding objects; ~10 % of the images are the validation split.
- **wild test** (3DHP-like): 6 sequences TS1..TS6, each one subject and one fixed camera: TS1-2 a
  green-screen studio, TS3-4 a cluttered studio, TS5-6 outdoors (wide images). Activities 1..7.
  Its bodies are normalized to the canonical bone-length sum, so their ``univ_annot3`` equals
  ``annot3``.
- **coco** (COCO-like street set, opt-in; dataset ``synthetic_coco``, 2D only): a different look
  from the wild set on purpose, so that two 2D sources differ as COCO and MPII do:

  ======================= ===================================== ===================================
  what                    wild                                  coco (street)
  ======================= ===================================== ===================================
  frame                   longer side = image size               1.28 x image size (640 px at 500),
                                                                mostly landscape
  people per image        one, filling 40-130 % of the height    2-4 near (3-11 m), 0-2 far
                                                                (14-35 m), a packed crowd of 6-10
                                                                far off in every third image
  camera                  2.5-9 m away, any direction            in the street: eye level (1.3-1.8 m)
                                                                or from above (3-8 m, 10-30° down),
                                                                50-75° field of view
  scenery                 clutter, ground and sky, or a room     a street canyon: asphalt, lane
                                                                markings, kerbs, paving, facades
                                                                with window grids, shop fronts and
                                                                signs, overcast sky, haze
  clothing                any colour, sleeves often short        80 % dark or muted (black, grey,
                                                                navy, denim, olive, beige), long
                                                                sleeves and trousers mostly
  light                   random direction and tint              overcast (flat, cool, 60 %) or
                                                                evening (low, warm key light)
  occlusion               random objects over the person         other people, now and then a pole
                                                                or sign
  labels                  MPII's 16 joints, head box             COCO's 17 keypoints, v = 2 seen,
                                                                v = 1 hidden, v = 0 outside the
                                                                image or a face point turned away;
                                                                no keypoints below 32² px² of
                                                                visible area; crowds as one
                                                                ``iscrowd`` region
  ======================= ===================================== ===================================

  ~10 % of the images are the validation split. The COCO reader skips the crowds, the small people
  and those with too few joints, as it does on real COCO.

Poses: the pose bank (``posebank``) with a random heading, mirroring and small joint-angle noise,
and a pose gap (``posebank.PoseGap``; docs/synthetic.md): the lab draws only from the bank's most
ordinary pose clusters, the wild, wild-test and street sets from all of them plus poses composed
from the bank (limbs of different frames, mirrored, within the bank's joint limits).
Every random choice of a frame comes from a generator seeded by (seed, set, frame index), so a
frame does not depend on how the work is split between processes.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from data_prep.synthetic import backgrounds, posebank, render, scene
from data_prep.synthetic.body import (
    COCO_DEPTH_TOLERANCE_MM,
    Appearance,
    BodyShape,
    PosedBody,
    pose_body,
    stand_on_floor,
)
from data_prep.synthetic.render import ViewCamera
from pose3d import skeleton

LAB_TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
LAB_TEST_SUBJECTS = ("S9", "S11")
LAB_SUBJECTS = LAB_TRAIN_SUBJECTS + LAB_TEST_SUBJECTS
#: Human3.6M's camera ids, in its order.
LAB_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
#: Human3.6M's 15 actions (the names its file names use, mmpose spelling).
LAB_ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
)  # fmt: skip
#: Human3.6M samples every 5th frame of its 50 fps videos; the lab set numbers its frames alike.
LAB_FRAME_STEP = 5
TEST_SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
TEST_GROUPS = {"TS1": "studio_gs", "TS2": "studio_gs", "TS3": "studio_nogs", "TS4": "studio_nogs",
               "TS5": "outdoor", "TS6": "outdoor"}  # fmt: skip
NUM_ACTIVITIES = 7
INVALID_EVERY = 20  # frame 7 of every 20 of a test sequence is marked invalid
WILD_VAL_EVERY = 10  # every 10th wild image is in the validation split
DEFAULT_GAP = posebank.PoseGap()


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator determined by the seed and the keys (strings hashed with CRC-32)."""
    ints = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence([seed, *ints]))


@functools.lru_cache(maxsize=1)
def pose_bank() -> posebank.PoseBank:
    return posebank.load_bank()


@functools.lru_cache(maxsize=8)
def lab_pose_pool(lab_pose_share: float) -> np.ndarray:
    """Bank indices the lab draws from (``posebank.lab_pool``)."""
    return posebank.lab_pool(pose_bank(), lab_pose_share)


@functools.lru_cache(maxsize=1)
def joint_limits() -> posebank.JointLimits:
    return posebank.JointLimits.from_bank(pose_bank())


def random_pose(
    rng: np.random.Generator,
    shape: BodyShape,
    ground_xy: np.ndarray,
    gap: posebank.PoseGap,
    kind: str,
) -> PosedBody:
    """A pose for set ``kind`` ("lab": from the lab clusters; "wild": from the whole bank or, with
    ``gap.composed_share``, composed), augmented, on this body shape, standing on the floor at
    ``ground_xy`` (mm)."""
    if kind == "lab":
        dirs, aux, _ = posebank.sample_poses(pose_bank(), rng, 1, pool=lab_pose_pool(gap.lab_pose_share))
    else:
        dirs, aux, _ = posebank.sample_poses(
            pose_bank(), rng, 1, composed_share=gap.composed_share, limits=joint_limits()
        )
    return stand_on_floor(pose_body(dirs[0], aux[0], shape), ground_xy)


def canonical_sum_shape(rng: np.random.Generator) -> BodyShape:
    """A random shape rescaled so its 14 bones sum to the canonical sum (universal height)."""
    shape = BodyShape.random(rng)
    factor = skeleton.CANONICAL_BONE_SUM_MM / shape.bone_lengths.sum()
    return BodyShape(shape.bone_lengths * factor, shape.thickness, shape.scale * factor)


# --- lab -------------------------------------------------------------------------------------


@dataclass
class LabStudio:
    cameras: list[ViewCamera]
    rays: list[np.ndarray]
    backgrounds: list[np.ndarray]  # (H, W, 3) float32
    floor_xy: list[np.ndarray]  # (H, W, 2) float32
    subjects: dict[str, tuple[BodyShape, Appearance]]
    lighting: scene.Lighting


def lab_camera(index: int, image_size: int, seed: int) -> ViewCamera:
    """Camera ``index`` of the studio: on a corner of the capture area, about 5 m from its centre,
    Human3.6M's focal length (1145 px at 1000 px) scaled to the image, a slightly off-centre
    principal point and mild distortion (Human3.6M's model, about half its strength)."""
    rng = rng_for(seed, "lab camera", index)
    s = image_size / 1000.0
    azimuth = np.deg2rad(45 + 90 * index + rng.uniform(-8, 8))
    radius = rng.uniform(4700, 5400)
    eye = np.array([radius * np.cos(azimuth), radius * np.sin(azimuth), rng.uniform(1300, 1750)])
    target = np.array([rng.uniform(-200, 200), rng.uniform(-200, 200), rng.uniform(850, 1050)])
    return scene.make_camera(
        eye,
        target,
        image_size,
        image_size,
        1145.0 * s * rng.uniform(0.995, 1.005),
        principal_offset=tuple(rng.uniform(-8, 8, 2) * s),
        k=np.array([rng.uniform(-0.11, -0.09), rng.uniform(0.08, 0.12), rng.uniform(-0.004, 0.0)]),
        p=rng.uniform(-1e-3, 1e-3, 2),
        aspect=rng.uniform(0.998, 1.002),
    )


@functools.lru_cache(maxsize=2)
def lab_studio(seed: int, image_size: int) -> LabStudio:
    cameras = [lab_camera(i, image_size, seed) for i in range(len(LAB_CAMERA_IDS))]
    rays = [render.ray_directions(c) for c in cameras]
    bgs, floors = [], []
    for i, (cam, r) in enumerate(zip(cameras, rays, strict=True)):
        image, floor = backgrounds.room(cam, r, rng_for(seed, "lab background", i))
        bgs.append(image)
        floors.append(floor)
    subjects = {}
    for name in LAB_SUBJECTS:
        rng = rng_for(seed, "lab subject", name)
        subjects[name] = (BodyShape.random(rng), Appearance.random(rng))
    return LabStudio(cameras, rays, bgs, floors, subjects, scene.Lighting(np.array([0.35, -0.45, 0.82])))


def lab_sequences(trials: int) -> list[tuple[str, str, str]]:
    """(subject, action, trial) of every lab sequence, interleaved so that poses dealt out in
    turn reach every subject and action early (a tiny set still has train and test subjects)."""
    return [(s, a, str(t)) for t in range(1, trials + 1) for a in LAB_ACTIONS for s in LAB_SUBJECTS]


@dataclass
class LabFrame:
    subject: str
    action: str
    trial: str
    frame: int  # 0-based video frame
    shots: list[scene.Shot]  # one per camera, in LAB_CAMERA_IDS order


def lab_frame(
    seed: int, image_size: int, index: int, trials: int, gap: posebank.PoseGap = DEFAULT_GAP
) -> LabFrame:
    """Pose ``index`` of the lab set, filmed by the 4 cameras."""
    studio = lab_studio(seed, image_size)
    sequences = lab_sequences(trials)
    subject, action, trial = sequences[index % len(sequences)]
    frame = LAB_FRAME_STEP * (index // len(sequences))
    rng = rng_for(seed, "lab frame", index)
    shape, appearance = studio.subjects[subject]
    body = random_pose(rng, shape, rng.uniform(-700, 700, 2), gap, "lab")
    shots = []
    for cam, rays, bg, floor in zip(
        studio.cameras, studio.rays, studio.backgrounds, studio.floor_xy, strict=True
    ):
        background = bg * backgrounds.floor_shadow(floor, body.joints[skeleton.ROOT, :2])
        shots.append(
            scene.render_shot(
                body, cam, rays, background, appearance.albedo, studio.lighting, rng, noise_sigma=2.0
            )
        )
    return LabFrame(subject, action, trial, frame, shots)


# --- wild ------------------------------------------------------------------------------------

_ASPECTS = ((1.0, 1.0), (4 / 3, 1.0), (1.0, 4 / 3), (16 / 9, 1.0), (3 / 2, 1.0))


def wild_image(seed: int, image_size: int, index: int, gap: posebank.PoseGap = DEFAULT_GAP) -> scene.Shot:
    """Wild image ``index``: a random person, camera, background, light and occluders."""
    rng = rng_for(seed, "wild", index)
    aspect = _ASPECTS[int(rng.integers(0, len(_ASPECTS)))]
    longest = max(aspect)
    width, height = int(round(image_size * aspect[0] / longest)), int(round(image_size * aspect[1] / longest))
    shape, appearance = BodyShape.random(rng, bone_sigma=0.03, scale_sigma=0.05), Appearance.random(rng)
    body = random_pose(rng, shape, np.zeros(2), gap, "wild")
    lo, hi = body.joints.min(axis=0), body.joints.max(axis=0)
    centre = (lo + hi) / 2
    extent = max(hi[2] - lo[2] + 150.0, 600.0)  # its height, head included
    distance = rng.uniform(2500, 9000)
    elevation = np.deg2rad(rng.uniform(-8, 35))
    azimuth = rng.uniform(0, 2 * np.pi)
    eye = centre + distance * np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )
    eye[2] = max(eye[2], 300.0)
    fill = rng.uniform(0.4, 0.9) if rng.random() < 0.9 else rng.uniform(0.9, 1.3)  # some cut off
    focal = fill * height * np.linalg.norm(eye - centre) / extent
    # Aim off the person so they are not always centred (more so when they fill the frame).
    aim = centre + rng.uniform(-0.25, 0.25, 3) * extent * np.array([1.0, 1.0, 0.6])
    camera = scene.make_camera(eye, aim, width, height, focal, roll_deg=rng.normal(0, 5))
    rays = render.ray_directions(camera)
    kind = rng.random()
    ground_xy = body.joints[skeleton.ROOT, :2]
    if kind < 0.45:
        background = backgrounds.clutter(rng, height, width)
    else:
        # Ray-cast scenery at half resolution (4x cheaper), then upsampled: a slightly soft background.
        small = scene.scaled_camera(camera, 0.5)
        small_rays = render.ray_directions(small)
        if kind < 0.75:
            background, floor = backgrounds.sky_and_ground(
                small, small_rays, rng, backgrounds.ground_texture(rng)
            )
            background = background * backgrounds.floor_shadow(floor, ground_xy, strength=0.35)
        else:
            half = np.linalg.norm(eye[:2]) + rng.uniform(1500, 4000)
            ceiling = max(eye[2] + 800, rng.uniform(2600, 4000))
            wall, floor_colour = (
                backgrounds.random_colour(rng, 0.3, 0.9),
                backgrounds.random_colour(rng, 0.15, 0.6),
            )
            background, floor = backgrounds.room(
                small, small_rays, rng, half_size_mm=half, ceiling_mm=ceiling, wall=wall, floor=floor_colour,
                tiles_mm=rng.uniform(300, 1000), wall_texture=backgrounds.clutter(rng, 256, 512),
            )  # fmt: skip
            background = background * backgrounds.floor_shadow(floor, ground_xy)
        background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    light_elev, light_az = np.deg2rad(rng.uniform(20, 80)), rng.uniform(0, 2 * np.pi)
    lighting = scene.Lighting(
        np.array(
            [np.cos(light_elev) * np.cos(light_az), np.cos(light_elev) * np.sin(light_az), np.sin(light_elev)]
        ),
        ambient=rng.uniform(0.25, 0.5),
        key_strength=rng.uniform(0.5, 0.9),
        tint=rng.uniform(0.85, 1.15, 3),
    )
    occluders = 0 if rng.random() < 0.6 else int(rng.integers(1, 3))
    return scene.render_shot(
        body, camera, rays, background, appearance.albedo, lighting, rng,
        occluders=occluders, noise_sigma=rng.uniform(1.0, 5.0), blur_sigma=rng.uniform(0.5, 1.0),
    )  # fmt: skip


def wild_split(index: int) -> str:
    return "val" if index % WILD_VAL_EVERY == WILD_VAL_EVERY - 1 else "train"


# --- wild test -------------------------------------------------------------------------------


@dataclass
class TestSequence:
    name: str
    camera: ViewCamera
    rays: np.ndarray
    background: np.ndarray
    floor_xy: np.ndarray
    shape: BodyShape
    appearance: Appearance
    lighting: scene.Lighting
    occluder_prob: float


def test_image_size(name: str, image_size: int) -> tuple[int, int]:
    """(width, height): TS1-4 square (3DHP's 2048 x 2048), TS5-6 wide (its 1920 x 1080)."""
    if name in ("TS5", "TS6"):
        return int(round(image_size * 4 / 3)), int(round(image_size * 3 / 4))
    return image_size, image_size


@functools.lru_cache(maxsize=6)
def test_sequence(seed: int, image_size: int, name: str) -> TestSequence:
    rng = rng_for(seed, "test sequence", name)
    width, height = test_image_size(name, image_size)
    outdoor = TEST_GROUPS[name] == "outdoor"
    # 3DHP's test cameras (f ~ 0.73 x width for TS1-4, 0.88 x width for TS5-6), principal point
    # slightly off-centre like theirs.
    focal = width * (0.88 if outdoor else 0.733) * rng.uniform(0.99, 1.01)
    distance = rng.uniform(3800, 4600) if outdoor else rng.uniform(3300, 4000)
    azimuth = rng.uniform(0, 2 * np.pi)
    eye = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), rng.uniform(900, 1500)])
    camera = scene.make_camera(
        eye, np.array([0.0, 0.0, rng.uniform(800, 1000)]), width, height, focal,
        principal_offset=(rng.uniform(-0.03, 0.0) * width, rng.uniform(0.0, 0.03) * height),
        roll_deg=rng.normal(0, 1.5),
    )  # fmt: skip
    rays = render.ray_directions(camera)
    group = TEST_GROUPS[name]
    if group == "studio_gs":
        green = (rng.uniform(0.15, 0.3), rng.uniform(0.55, 0.7), rng.uniform(0.15, 0.3))
        background, floor = backgrounds.room(
            camera, rays, rng, wall=green, floor=tuple(0.8 * np.array(green)), tiles_mm=1e6
        )
    elif group == "studio_nogs":
        background, floor = backgrounds.room(
            camera, rays, rng, wall=backgrounds.random_colour(rng, 0.4, 0.8), floor=(0.35, 0.38, 0.42),
            wall_texture=backgrounds.clutter(rng, 256, 768, shapes=40),
        )  # fmt: skip
    else:
        background, floor = backgrounds.sky_and_ground(camera, rays, rng, backgrounds.ground_texture(rng))
        band = backgrounds.clutter(rng, height, width, shapes=30)  # buildings, trees, cars near the horizon
        sky = np.isnan(floor[..., 0])
        rows = np.flatnonzero(sky.any(axis=1))
        if len(rows):
            top = max(0, rows.max() - int(rng.uniform(0.15, 0.35) * height))
            background[top : rows.max() + 1] = np.where(
                sky[top : rows.max() + 1, :, None],
                band[top : rows.max() + 1],
                background[top : rows.max() + 1],
            )
    shape = canonical_sum_shape(rng)
    light = scene.Lighting(
        np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 0.8]),
        ambient=0.4,
        tint=rng.uniform(0.9, 1.1, 3),
    )
    return TestSequence(
        name,
        camera,
        rays,
        background,
        floor,
        shape,
        Appearance.random(rng),
        light,
        0.0 if group == "studio_gs" else 0.2,
    )


def test_frames_per_sequence(total: int) -> list[int]:
    """How many frames each of TS1..TS6 gets (as even as possible)."""
    n = len(TEST_SEQUENCES)
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


@dataclass
class TestFrame:
    sequence: str
    frame: int  # 0-based
    activity: int  # 1..7
    valid: bool
    shot: scene.Shot


def wild_test_frame(
    seed: int,
    image_size: int,
    sequence: str,
    frame: int,
    frames_in_sequence: int,
    gap: posebank.PoseGap = DEFAULT_GAP,
) -> TestFrame:
    ts = test_sequence(seed, image_size, sequence)
    rng = rng_for(seed, "test frame", sequence, frame)
    body = random_pose(rng, ts.shape, rng.uniform(-600, 600, 2), gap, "wild")
    background = ts.background * backgrounds.floor_shadow(ts.floor_xy, body.joints[skeleton.ROOT, :2])
    occluders = 1 if rng.random() < ts.occluder_prob else 0
    shot = scene.render_shot(body, ts.camera, ts.rays, background, ts.appearance.albedo, ts.lighting, rng,
                             occluders=occluders, noise_sigma=2.5, blur_sigma=0.7)  # fmt: skip
    activity = 1 + (frame * NUM_ACTIVITIES) // max(frames_in_sequence, 1)
    valid = frame % INVALID_EVERY != 7  # like 3DHP, a few frames (5 %) are marked invalid
    return TestFrame(sequence, frame, activity, valid, shot)


# --- coco (street) -----------------------------------------------------------------------------

COCO_VAL_EVERY = 10  # every 10th street image is in the validation split
#: The street frames' longer side per ``image_size`` (640 px at the small preset's 500).
COCO_FRAME_SCALE = 1.28
_COCO_ASPECTS = ((4 / 3, 1.0), (4 / 3, 1.0), (3 / 2, 1.0), (16 / 9, 1.0), (3 / 4, 1.0))
#: Like COCO's annotators, the synthetic one gives people whose visible area is below COCO's
#: "small" boundary (32² px²) no keypoints.
COCO_MIN_LABELLED_AREA = 32**2
#: Every third street image has a crowd (a packed group annotated as one iscrowd region).
COCO_CROWD_EVERY = 3
#: Urban clothing colours (BGR): black, charcoal, grey, navy, denim, brown, olive, beige, white.
_URBAN_CLOTH = np.array(
    [[0.06, 0.06, 0.07], [0.2, 0.2, 0.21], [0.45, 0.45, 0.46], [0.3, 0.12, 0.08], [0.55, 0.38, 0.25],
     [0.15, 0.25, 0.35], [0.2, 0.35, 0.3], [0.55, 0.7, 0.78], [0.85, 0.86, 0.88]],
)  # fmt: skip


def coco_split(index: int) -> str:
    return "val" if index % COCO_VAL_EVERY == COCO_VAL_EVERY - 1 else "train"


def urban_appearance(rng: np.random.Generator) -> Appearance:
    """Street clothing: mostly dark and muted colours from ``_URBAN_CLOTH`` (jackets, jeans), a
    bright top now and then; long sleeves and trousers far more often than in the wild set."""
    base = Appearance.random(rng)  # skin and hair tones as elsewhere

    def cloth() -> np.ndarray:
        if rng.random() < 0.8:
            return np.clip(
                _URBAN_CLOTH[int(rng.integers(0, len(_URBAN_CLOTH)))] * rng.uniform(0.85, 1.15, 3), 0, 1
            )
        return rng.uniform(0.1, 0.95, 3)

    albedo = base.albedo.copy()
    skin = albedo[0]
    top, trousers = cloth(), cloth()
    albedo[2] = top
    albedo[3] = top if rng.random() < 0.92 else skin
    albedo[4] = top if rng.random() < 0.8 else skin
    albedo[5] = trousers
    albedo[6] = trousers if rng.random() < 0.93 else skin
    albedo[7] = cloth() * 0.5
    return Appearance(albedo.clip(0, 1))


@dataclass
class CocoPerson:
    """One annotation of a street image.

    keypoints (17, 3): x, y px (0-based, pixel centres at integers) and COCO's v (0 unlabelled,
    1 labelled but hidden, 2 visible), all 0 for a crowd or a small person; mask (H, W) bool, the
    pixels that show the person (or the crowd); iscrowd; joints_2d (16, 2) px, the 16 joints'
    projection (the truth; NaN for a crowd)."""

    keypoints: np.ndarray
    mask: np.ndarray
    iscrowd: bool
    joints_2d: np.ndarray


@dataclass
class CocoScene:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    people: list[CocoPerson]


def _place(
    rng: np.random.Generator, eye: np.ndarray, yaw: float, hfov: float, dist: tuple[float, float],
    spread: float, taken: list[np.ndarray], half_width: float, min_gap: float,
) -> np.ndarray | None:  # fmt: skip
    """A ground point (2,) mm in view (angle within ``spread`` x the half field of view) at a
    distance in ``dist``, inside the street and ``min_gap`` from every point in ``taken``; None
    after 20 tries."""
    for _ in range(20):
        a = yaw + rng.uniform(-spread, spread) * hfov / 2
        r = rng.uniform(*dist)
        xy = eye[:2] + r * np.array([np.cos(a), np.sin(a)])
        if abs(xy[1]) > half_width - 500:
            continue
        if all(np.linalg.norm(xy - q) >= min_gap for q in taken):
            return xy
    return None


def coco_image(seed: int, image_size: int, index: int, gap: posebank.PoseGap = DEFAULT_GAP) -> CocoScene:
    """Street image ``index`` (COCO-like): a street at eye level or from above, several people at
    3-35 m, some far and tiny, every ``COCO_CROWD_EVERY``-th image a packed crowd far off; urban
    clothing and overcast or evening light (module docstring)."""
    rng = rng_for(seed, "coco", index)
    aspect = _COCO_ASPECTS[int(rng.integers(0, len(_COCO_ASPECTS)))]
    longest = int(round(image_size * COCO_FRAME_SCALE))
    width = int(round(longest * aspect[0] / max(aspect)))
    height = int(round(longest * aspect[1] / max(aspect)))
    half_width = rng.uniform(7000, 14000)
    road_half = half_width - rng.uniform(2500, 4500)
    elevated = rng.random() < 0.3
    cam_h = rng.uniform(3000, 8000) if elevated else rng.uniform(1300, 1800)
    eye = np.array([0.0, rng.uniform(-1, 1) * (half_width - 1500), cam_h])
    yaw = rng.uniform(-0.9, 0.9) if rng.random() < 0.8 else rng.choice([-1, 1]) * rng.uniform(1.0, 1.9)
    pitch = -np.deg2rad(rng.uniform(10, 30) if elevated else rng.uniform(-4, 8))
    hfov = np.deg2rad(rng.uniform(50, 75))
    focal = (width / 2) / np.tan(hfov / 2)
    look = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    camera = scene.make_camera(eye, eye + 1000.0 * look, width, height, focal, roll_deg=rng.normal(0, 2))
    # People: 2-4 near, 0-2 far (most of them too small to label), a crowd every third image.
    taken: list[np.ndarray] = []
    groups: list[tuple[str, np.ndarray]] = []
    for kind, count, dist, spread in (
        ("near", int(rng.integers(2, 5)), (3000.0, 11000.0), 1.05),
        ("far", int(rng.integers(0, 3)), (14000.0, 35000.0), 0.9),
    ):
        for _ in range(count):
            xy = _place(rng, eye, yaw, hfov, dist, spread, taken, half_width, 700.0)
            if xy is not None:
                taken.append(xy)
                groups.append((kind, xy))
    if index % COCO_CROWD_EVERY == COCO_CROWD_EVERY - 1:
        centre = _place(rng, eye, yaw, hfov, (18000.0, 32000.0), 0.5, taken, half_width, 1500.0)
        if centre is not None:
            members: list[np.ndarray] = []
            for _ in range(int(rng.integers(6, 11))):
                xy = _place(
                    rng, np.r_[centre, 0.0], 0.0, 2 * np.pi, (0.0, 1800.0), 1.0, members, half_width, 450.0
                )
                if xy is not None:
                    members.append(xy)
                    groups.append(("crowd", xy))
    bodies, albedos = [], []
    for _, xy in groups:
        shape = BodyShape.random(rng, bone_sigma=0.03, scale_sigma=0.06)
        bodies.append(random_pose(rng, shape, xy, gap, "wild"))
        albedos.append(urban_appearance(rng).albedo)
    # The street, at half resolution (4x cheaper), with a contact shadow under everyone.
    small = scene.scaled_camera(camera, 0.5)
    background, floor = backgrounds.street(
        small, render.ray_directions(small), rng, half_width_mm=half_width, road_half_mm=road_half
    )
    for body in bodies:
        background = background * backgrounds.floor_shadow(
            floor, body.joints[skeleton.ROOT, :2], strength=0.3
        )
    background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.6:  # overcast: flat, cool light
        elev, tint = np.deg2rad(rng.uniform(55, 85)), rng.uniform([1.0, 0.97, 0.88], [1.1, 1.03, 0.98])
        ambient, key = rng.uniform(0.45, 0.6), rng.uniform(0.25, 0.45)
    else:  # evening: a low, warm key light
        elev, tint = np.deg2rad(rng.uniform(5, 25)), rng.uniform([0.75, 0.9, 1.05], [0.9, 1.0, 1.15])
        ambient, key = rng.uniform(0.3, 0.42), rng.uniform(0.5, 0.8)
    az = rng.uniform(0, 2 * np.pi)
    lighting = scene.Lighting(
        np.array([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)]),
        ambient=ambient, key_strength=key, tint=tint,
    )  # fmt: skip
    background = (background * (0.5 + 0.5 * tint)).astype(np.float32)  # the same light on the street
    rays = render.ray_directions(camera)
    # A pole, sign or bin in front of one of the near people now and then.
    near = [k for k, (kind, _) in enumerate(groups) if kind == "near"]
    occluder_box = None
    if near and rng.random() < 0.3:
        target = bodies[near[int(rng.integers(0, len(near)))]]
        px = camera.project(camera.world_to_camera(target.joints))
        occluder_box = np.concatenate([px.min(axis=0), px.max(axis=0)])
    shot = scene.render_group(
        bodies, camera, rays, background, albedos, lighting, rng,
        occluders=1 if occluder_box is not None else 0, occluder_box=occluder_box,
        noise_sigma=rng.uniform(1.5, 4.0), blur_sigma=rng.uniform(0.5, 0.9),
    )  # fmt: skip
    return CocoScene(shot.image, _coco_labels(shot, [kind for kind, _ in groups]))


def _coco_labels(shot: scene.GroupShot, kinds: list[str]) -> list[CocoPerson]:
    """The annotations of a rendered street image: one per seen person, one for the crowd."""
    h, w = shot.owner.shape
    people = []
    for k, body in enumerate(shot.bodies):
        mask = shot.owner == k
        area = int(mask.sum())
        if kinds[k] == "crowd" or area == 0:
            continue  # the crowd is annotated as a whole below; an unseen person not at all
        points = body.coco17()
        px = shot.camera.project(points)
        inside = np.all((px >= -0.5) & (px < np.array([w, h]) - 0.5), axis=-1)
        seen = render.visible_from_depth(shot.gbuf, px, points, COCO_DEPTH_TOLERANCE_MM) & inside
        ij = np.clip(np.rint(px).astype(int), 0, [w - 1, h - 1])
        seen &= ~shot.occluder[ij[:, 1], ij[:, 0]]
        v = np.where(seen, 2, np.where(inside, 1, 0))
        # Face points turned away (hidden by the person's own head) are left unlabelled, as COCO's
        # annotators mostly do; hidden body joints are labelled v = 1.
        own = shot.owner[ij[:, 1], ij[:, 0]] == k
        v[:5] = np.where(~seen[:5] & own[:5], 0, v[:5])
        if area < COCO_MIN_LABELLED_AREA:
            v[:] = 0
        keypoints = np.concatenate([np.where(v[:, None] > 0, px, 0.0), v[:, None]], axis=-1)
        people.append(CocoPerson(keypoints, mask, False, shot.camera.project(body.joints)))
    crowd = np.isin(shot.owner, [k for k, kind in enumerate(kinds) if kind == "crowd"])
    if crowd.any():
        nothing = np.zeros((17, 3))
        people.append(CocoPerson(nothing, crowd, True, np.full((skeleton.NUM_JOINTS, 2), np.nan)))
    return people
