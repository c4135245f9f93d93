"""geometry.py: the pixel convention, crop affines, cameras; checked by hand and on real data."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose3d import geometry, skeleton

# --- pixel convention and crop affines --------------------------------------------------------

CENTER = np.array([120.3, 80.7])
BOX = 50.0
S = 64


def test_crop_affine_maps_centre_and_corners():
    a = geometry.crop_affine(CENTER, BOX, S)
    half = BOX / 2
    src = np.array(
        [CENTER, CENTER - half, CENTER + half, CENTER + (half, -half)]  # centre, top-left, ...
    )
    expected = np.array([[31.5, 31.5], [-0.5, -0.5], [63.5, 63.5], [63.5, -0.5]])  # (S-1)/2, -0.5, S-0.5
    np.testing.assert_allclose(geometry.apply_affine(src, a), expected, atol=1e-12)


def test_crop_affine_rotation_turns_content_counter_clockwise():
    a = geometry.crop_affine(CENTER, BOX, S, rotation_deg=90.0)
    k = 10.0 * S / BOX
    # Turned counter-clockwise as seen (y down): right of the centre goes to the top, below the
    # centre goes to the right.
    pts = np.array([CENTER + (10.0, 0.0), CENTER + (0.0, 10.0)])
    np.testing.assert_allclose(
        geometry.apply_affine(pts, a), [[31.5, 31.5 - k], [31.5 + k, 31.5]], atol=1e-12
    )
    # 30 degrees: the point right of the centre goes up-right, at (cos 30, -sin 30) of its distance.
    a30 = geometry.crop_affine(CENTER, BOX, S, rotation_deg=30.0)
    np.testing.assert_allclose(
        geometry.apply_affine(pts[:1], a30), [[31.5 + k * np.sqrt(3) / 2, 31.5 - k / 2]], atol=1e-12
    )


def test_crop_affine_flip_mirrors_horizontally():
    a = geometry.crop_affine(CENTER, BOX, S, flip=True)
    pts = np.array([CENTER + (10.0, 0.0), CENTER + (0.0, 10.0), CENTER - BOX / 2])
    expected = np.array([[31.5 - 10.0 * S / BOX, 31.5], [31.5, 31.5 + 10.0 * S / BOX], [63.5, -0.5]])
    np.testing.assert_allclose(geometry.apply_affine(pts, a), expected, atol=1e-12)


def test_crop_affine_batched_matches_unbatched():
    centres = np.array([[10.0, 20.0], [30.5, -4.0]])
    batched = geometry.crop_affine(
        centres, np.array([40.0, 80.0]), S, np.array([0.0, 30.0]), np.array([False, True])
    )
    assert batched.shape == (2, 2, 3)
    np.testing.assert_allclose(batched[1], geometry.crop_affine(centres[1], 80.0, S, 30.0, True))


def test_invert_and_compose_round_trip():
    rng = np.random.default_rng(0)
    a = geometry.crop_affine(
        rng.uniform(0, 500, (4, 2)), rng.uniform(50, 300, 4), S, rng.uniform(-30, 30, 4), rng.random(4) < 0.5
    )
    b = geometry.crop_affine(
        rng.uniform(0, 500, (4, 2)), rng.uniform(50, 300, 4), 256, rng.uniform(-30, 30, 4)
    )
    pts = rng.uniform(0, 500, (4, 7, 2))
    identity = np.broadcast_to(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (4, 2, 3))
    np.testing.assert_allclose(geometry.compose_affine(geometry.invert_affine(a), a), identity, atol=1e-12)
    np.testing.assert_allclose(geometry.compose_affine(a, geometry.invert_affine(a)), identity, atol=1e-12)
    np.testing.assert_allclose(
        geometry.apply_affine(geometry.apply_affine(pts, a), geometry.invert_affine(a)), pts, atol=1e-9
    )
    np.testing.assert_allclose(
        geometry.apply_affine(pts, geometry.compose_affine(b, a)),
        geometry.apply_affine(geometry.apply_affine(pts, a), b),
        atol=1e-9,
    )


@pytest.mark.parametrize(
    ("box", "rotation", "flip"), [(64.0, 90.0, True), (32.0, 0.0, False), (32.0, 180.0, True)]
)
def test_warp_affine_moves_a_bright_pixel_where_apply_affine_says(box, rotation, flip):
    x, y = 97, 61
    image = np.zeros((150, 200), np.float32)
    image[y, x] = 255.0
    # Choose the box centre so the pixel lands on an output pixel centre: with scale S / box and a
    # multiple of 90 degrees, the pixel maps to (S-1)/2 +- scale * (offset from the centre).
    scale = S / box
    offset = 10.25 if scale == 2 else 10.5
    centre = np.array([x - offset, y + offset])
    a = geometry.crop_affine(centre, box, S, rotation, flip)
    dst = cv2.warpAffine(image, a, (S, S), flags=cv2.INTER_LINEAR)
    where = geometry.apply_affine(np.array([[x, y]], np.float64), a)[0]
    np.testing.assert_allclose(where, np.round(where), atol=1e-9)  # an exact pixel centre
    col, row = np.round(where).astype(int)
    assert dst[row, col] == pytest.approx(255.0, abs=1e-3)
    assert np.unravel_index(np.argmax(dst), dst.shape) == (row, col)
    if scale == 2:  # a neighbour samples the source half a pixel away: bilinear gives half
        assert dst[row, col + 1] == pytest.approx(127.5, abs=1e-3)


def test_input_to_output_px():
    stride = 4.0
    j = np.arange(64, dtype=np.float64)
    # Output pixel j covers input pixels 4j .. 4j+3; its centre is their mean, 4j + 1.5.
    input_centres = np.stack([4 * j + k for k in range(4)], -1).mean(-1)
    np.testing.assert_allclose(geometry.input_to_output_px(input_centres, stride), j)
    np.testing.assert_allclose(geometry.output_to_input_px(j, stride), input_centres)
    # The map's edges coincide: input -0.5 and 255.5 are output -0.5 and 63.5.
    np.testing.assert_allclose(geometry.input_to_output_px(np.array([-0.5, 255.5]), stride), [-0.5, 63.5])
    pts = np.random.default_rng(0).uniform(-10, 300, (5, 16, 2))
    np.testing.assert_allclose(
        geometry.output_to_input_px(geometry.input_to_output_px(pts, stride), stride), pts
    )


# --- cameras ----------------------------------------------------------------------------------


def test_world_camera_round_trip_and_hand_case():
    rng = np.random.default_rng(0)
    r = Rotation.random(3, random_state=1).as_matrix()
    t = rng.normal(size=(3, 3)) * 1000
    x = rng.normal(size=(3, 16, 3)) * 1000
    np.testing.assert_allclose(
        geometry.camera_to_world(geometry.world_to_camera(x, r, t), r, t), x, atol=1e-9
    )
    # R = identity: the camera frame is the world frame shifted to the camera centre T.
    np.testing.assert_allclose(
        geometry.world_to_camera(np.array([[1.0, 2.0, 3.0]]), np.eye(3), np.array([1.0, 1.0, 1.0])),
        [[0.0, 1.0, 2.0]],
    )
    # A camera turned 90 degrees about z (camera x = world y): R's columns are the camera axes in world.
    r90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        geometry.world_to_camera(np.array([[0.0, 5.0, 0.0]]), r90, np.zeros(3)), [[5.0, 0.0, 0.0]], atol=1e-12
    )


def test_project_pinhole_hand_case():
    x = np.array([[[1.0, 2.0, 4.0], [-2.0, 0.0, 8.0]]])
    f, c = np.array([100.0, 200.0]), np.array([10.0, 20.0])
    expected = [[[100 * 0.25 + 10, 200 * 0.5 + 20], [100 * -0.25 + 10, 20.0]]]
    np.testing.assert_allclose(geometry.project(x, f, c), expected)
    np.testing.assert_allclose(geometry.project(x, f, c, np.zeros(3), np.zeros(2)), expected)


def test_project_distortion_hand_case():
    # u = (0.1, 0.2): r2 = 0.05. k = (0.1, 0, 0): radial 1.005. p = (0.01, 0.02):
    # tangential p1 v + p2 u = 0.002 + 0.002 = 0.004; u' = u * 1.009 + (p2, p1) * r2.
    x = np.array([[[0.1, 0.2, 1.0]]])
    got = geometry.project(
        x, np.array([1.0, 1.0]), np.zeros(2), np.array([0.1, 0.0, 0.0]), np.array([0.01, 0.02])
    )
    np.testing.assert_allclose(got, [[[0.1 * 1.009 + 0.02 * 0.05, 0.2 * 1.009 + 0.01 * 0.05]]], rtol=1e-12)


def test_rescale_to_canonical_bone_sum():
    rng = np.random.default_rng(0)
    poses = rng.normal(size=(4, 16, 3)) * 37.0
    out = geometry.rescale_to_canonical(poses)
    np.testing.assert_allclose(skeleton.bone_lengths(out).sum(-1), skeleton.CANONICAL_BONE_SUM_MM)
    np.testing.assert_allclose(out[:, skeleton.ROOT], poses[:, skeleton.ROOT])  # scaled about the root
    # The same pose at any scale gives the same result.
    # Scaling a pose about the origin by 9 moves its root to 9 r; the rescaled shape is the same.
    root = poses[:, None, skeleton.ROOT]
    np.testing.assert_allclose(geometry.rescale_to_canonical(poses * 9.0), out + 8.0 * root, atol=1e-9)


# --- real data: Human3.6M (mmpose's npz and COCO json, cameras.pkl dumped as JSON) -------------


def _h36m_camera(cameras: dict, image_name: str) -> dict:
    """Camera of an H36M image 'S7_Greeting.55011271_000396.jpg' -> R, T, f, c, k, p as arrays."""
    base = image_name.split("/")[-1]
    subject, camera_id = base.split("_")[0], base.split(".")[1].split("_")[0]
    cam = cameras[f"{subject}_{camera_id}"]
    return {key: np.asarray(cam[key], np.float64) for key in ("R", "T", "f", "c", "k", "p")}


@pytest.fixture(scope="module")
def h36m(fixtures_dir):
    npz = np.load(fixtures_dir / "h36m" / "test_h36m_body3d.npz")
    cameras = json.loads((fixtures_dir / "h36m" / "cameras.json").read_text())
    cams = [_h36m_camera(cameras, str(n)) for n in npz["imgname"]]
    return npz, cams


def test_h36m_projection_reproduces_2d_labels(h36m):
    npz, cams = h36m
    direct = skeleton.H36M17.direct
    for i, cam in enumerate(cams):
        joints_3d, vis3 = skeleton.H36M17.apply(npz["S"][i, :, :3])  # metres, camera coordinates
        joints_2d, vis2 = skeleton.H36M17.apply(npz["part"][i, :, :2])
        assert vis3.all() and vis2.all()
        projected = geometry.project(joints_3d, cam["f"], cam["c"], cam["k"], cam["p"])
        err = np.linalg.norm(projected - joints_2d, axis=-1)
        assert err[direct].max() < 0.01, f"{npz['imgname'][i]}: {err}"
        # The pinhole alone is more than a pixel off somewhere: the distortion matters.
        pinhole = geometry.project(joints_3d, cam["f"], cam["c"])
        assert np.linalg.norm(pinhole - joints_2d, axis=-1)[direct].max() > 1.0


def test_h36m_derived_thorax_is_the_projection_of_the_3d_midpoint(h36m):
    npz, cams = h36m
    thorax, l_sho, r_sho = skeleton.THORAX, 11, 14  # mmpose's shoulders
    for i, cam in enumerate(cams):
        s = npz["S"][i, :, :3]
        joints_3d, _ = skeleton.H36M17.apply(s)
        np.testing.assert_allclose(joints_3d[thorax], (s[l_sho] + s[r_sho]) / 2)
        thorax_2d = geometry.project(joints_3d[None, thorax], cam["f"], cam["c"], cam["k"], cam["p"])[0]
        mid_2d = (npz["part"][i, l_sho, :2] + npz["part"][i, r_sho, :2]) / 2
        # Perspective and distortion put the projected midpoint a fraction of a pixel away from the
        # 2D midpoint: why derived joints are projected instead of averaged from labels
        # (docs/conventions.md, Joint mappings).
        assert 0.1 < np.linalg.norm(thorax_2d - mid_2d) < 1.0


def test_h36m_world_to_camera_reproduces_npz(fixtures_dir, h36m):
    npz, _ = h36m
    cameras = json.loads((fixtures_dir / "h36m" / "cameras.json").read_text())
    coco = json.loads((fixtures_dir / "h36m" / "h36m_coco.json").read_text())
    file_names = {im["id"]: im["file_name"] for im in coco["images"]}
    npz_index = {str(n).split("/")[-1]: i for i, n in enumerate(npz["imgname"])}
    assert len(coco["annotations"]) == len(npz_index) == 4
    for ann in coco["annotations"]:
        name = file_names[ann["image_id"]]
        cam = _h36m_camera(cameras, name)
        world = np.asarray(ann["keypoints_3d"], np.float64).reshape(17, 4)[:, :3]
        cam_xyz = geometry.world_to_camera(world, cam["R"], cam["T"].ravel())
        np.testing.assert_allclose(cam_xyz, npz["S"][npz_index[name], :, :3], atol=1e-6)  # metres


# --- real data: MPI-INF-3DHP test set (mmpose's npz, cameras_test.pkl as JSON) -----------------


def test_3dhp_projection_and_mapping(fixtures_dir):
    npz = np.load(fixtures_dir / "mpi_inf_3dhp" / "test_3dhp_test.npz")
    cameras = json.loads((fixtures_dir / "mpi_inf_3dhp" / "cameras_test.json").read_text())
    mapping = skeleton.MPI3DHP17
    hips = [skeleton.JOINT_INDEX["r_hip"], skeleton.JOINT_INDEX["l_hip"]]
    not_hips = mapping.direct.copy()
    not_hips[hips] = False
    for i, name in enumerate(npz["imgname"]):
        cam = cameras[str(name).split("_")[0]]
        f, c = np.ravel(cam["f"]), np.ravel(cam["c"])
        s, part = npz["S"][i, :, :3], npz["part"][i, :, :2]
        joints_3d, _ = mapping.apply(s)
        joints_2d, _ = mapping.apply(part)
        assert mapping.available.all()
        # The mapped joints' 2D are the source's 2D labels.
        np.testing.assert_array_equal(
            joints_2d[mapping.direct], part[np.asarray(mapping.source)[mapping.direct]]
        )
        err = np.linalg.norm(geometry.project(joints_3d, f, c) - joints_2d, axis=-1)
        # With the per-sequence intrinsics of cameras_test.json: within 0.25 px (observed <= 0.16).
        # The labels were made with slightly different intrinsics: a per-frame fit of f and c to
        # these joints leaves <= 0.006 px, the labels' rounding to 6 significant digits.
        assert err[not_hips].max() < 0.25, f"{name}: {err}"
        uv = joints_3d[not_hips, :2] / joints_3d[not_hips, 2:]
        for axis in range(2):
            design = np.stack([uv[:, axis], np.ones(len(uv))], -1)
            fit, *_ = np.linalg.lstsq(design, joints_2d[not_hips, axis], rcond=None)
            assert np.abs(design @ fit - joints_2d[not_hips, axis]).max() < 0.01
        # The hips' 2D labels are NOT projections of their 3D (up to 2 px off): in 2D they are placed
        # symmetrically about the pelvis label, while in 3D the pelvis is the hips' midpoint.
        assert err[hips].max() < 2.5
        np.testing.assert_allclose(part[8] + part[11], 2 * part[14], atol=1e-9)
        np.testing.assert_allclose(s[8] + s[11], 2 * s[14], atol=1e-6)
