"""The synthetic generator: BVH kinematics, the pose bank, bodies, ray-cast rendering, and the raw
trees it writes as the real readers read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.readers import h36m, mpi3dhp, mpii
from data_prep.records import Camera, PersonSample
from data_prep.synthetic import bvh, posebank, render, scene, sets
from data_prep.synthetic import generator as gen
from data_prep.synthetic import reader as synthetic_reader
from data_prep.synthetic.body import PART, BodyShape, pose_body, stand_on_floor
from pose3d import skeleton

J = skeleton.JOINT_INDEX


# --- BVH and the pose bank -------------------------------------------------------------------

_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Leg
  {
    OFFSET 0 1 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 0 2 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.01
1 2 3 0 0 0 0 0 0
1 2 3 90 0 90 0 0 90
"""


def test_bvh_forward_kinematics_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "t.bvh"
    path.write_text(_BVH)
    clip = bvh.read_bvh(path)
    assert clip.names == ["Hips", "Leg", "Leg_end"]
    pos, _ = bvh.forward_kinematics(clip)
    # Frame 0: rest pose, root translated to (1, 2, 3).
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [1, 3, 3], [1, 5, 3]], atol=1e-12)
    # Frame 1: root R = Rz(90) Rx(90) (channel order Z, Y, X): (0, 1, 0) -Rx-> (0, 0, 1) -Rz-> (0, 0, 1).
    # The leg adds Rx(90): the end offset (0, 2, 0) -> Rx: (0, 0, 2) -> Rx: (0, -2, 0) -> Rz: (2, 0, 0).
    np.testing.assert_allclose(pos[1], [[1, 2, 3], [1, 2, 4], [3, 2, 4]], atol=1e-12)


def _signed_knee_flexion(joints: np.ndarray, side: str) -> np.ndarray:
    """Degrees; positive when the shin folds backwards (a knee's only way), body frame x left."""
    thigh = joints[:, J[f"{side}_knee"]] - joints[:, J[f"{side}_hip"]]
    shin = joints[:, J[f"{side}_ankle"]] - joints[:, J[f"{side}_knee"]]
    axis = joints[:, J["l_hip"]] - joints[:, J["r_hip"]]
    cos = np.sum(thigh * shin, axis=-1) / np.linalg.norm(thigh, axis=-1) / np.linalg.norm(shin, axis=-1)
    sign = np.sign(np.sum(np.cross(thigh, shin) * axis, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1))) * np.where(sign == 0, 1, sign)


def test_knee_flexion_helper_by_hand() -> None:
    joints = np.zeros((2, 16, 3))
    joints[:, J["r_hip"]], joints[:, J["l_hip"]] = (-100, 0, 0), (100, 0, 0)
    joints[:, J["r_knee"]] = (-100, -400, 0)
    joints[0, J["r_ankle"]] = (-100, -400, -400)  # shin backwards: flexed 90 degrees
    joints[1, J["r_ankle"]] = (-100, -800, 100)  # shin forwards: hyperextended by atan(1/4)
    np.testing.assert_allclose(
        _signed_knee_flexion(joints, "r"), [90.0, -np.degrees(np.arctan(0.25))], atol=1e-9
    )


def test_pose_bank_is_unit_distinct_and_humanly_plausible() -> None:
    bank = posebank.load_bank()
    np.testing.assert_allclose(np.linalg.norm(bank.bone_dirs, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(bank.aux_dirs, axis=-1), 1.0, atol=1e-5)
    joints = posebank.joints_from_directions(bank.bone_dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)
    # More than 100 poses, each at least 10 mm (mean per joint) from every other.
    dist = np.linalg.norm(joints[:, None] - joints[None], axis=-1).mean(axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert len(bank) > 100 and dist.min() > 10.0
    for side in ("r", "l"):
        flexion = _signed_knee_flexion(joints, side)
        assert flexion.min() > -10.0, "a knee bends forwards"
        assert flexion.max() < 160.0
        upper = joints[:, J[f"{side}_elbow"]] - joints[:, J[f"{side}_shoulder"]]
        lower = joints[:, J[f"{side}_wrist"]] - joints[:, J[f"{side}_elbow"]]
        cos = np.sum(upper * lower, axis=-1) / np.linalg.norm(upper, axis=-1) / np.linalg.norm(lower, axis=-1)
        assert np.degrees(np.arccos(cos)).max() < 165.0, "an elbow folds flat"
    # Upright and facing forward in the body frame (x left, y up, z forward): head above the
    # pelvis, the face and the feet pointing forward on average.
    assert np.all(joints[:, J["head_top"], 1] - joints[:, J["pelvis"], 1] > 400.0)
    assert np.all(joints[:, J["r_hip"], 0] < 0) and np.all(joints[:, J["l_hip"], 0] > 0)
    assert bank.aux_dirs[:, posebank.AUX_INDEX["face"], 2].mean() > 0.7
    assert bank.aux_dirs[:, posebank.AUX_INDEX["r_foot"], 2].mean() > 0.7


def test_pose_bank_rebuilds_from_the_fixture_identically(fixtures_dir: Path) -> None:
    mocap = fixtures_dir / "mocap"
    clip, asf, amc = mocap / "cmu_01_01.bvh", mocap / "cmu_11.asf", mocap / "cmu_11_01.amc"
    if not (clip.exists() and amc.exists()):
        pytest.skip(f"mocap fixtures not found in {mocap}")
    shipped = posebank.load_bank()
    rebuilt = posebank.build_pose_bank(clip, count=len(shipped), asf_amc=(asf, amc))
    assert rebuilt.sources == shipped.sources == ("cmu_01_01.bvh", "cmu_11_01.amc")
    np.testing.assert_array_equal(rebuilt.source_clips, shipped.source_clips)
    np.testing.assert_array_equal(rebuilt.source_frames, shipped.source_frames)
    np.testing.assert_allclose(rebuilt.bone_dirs, shipped.bone_dirs, atol=1e-6)  # float32 on disk
    np.testing.assert_allclose(rebuilt.aux_dirs, shipped.aux_dirs, atol=1e-6)
    np.testing.assert_array_equal(rebuilt.clusters, shipped.clusters)
    assert 50 < np.sum(shipped.source_clips == 1) < 200  # subject 11's kicks are in it


def test_mirror_swaps_sides_and_is_an_involution() -> None:
    bank = posebank.load_bank()
    dirs, aux = bank.bone_dirs[:5], bank.aux_dirs[:5]
    m_dirs, m_aux = posebank.mirror(dirs, aux)
    joints = posebank.joints_from_directions(dirs, np.ones(14))
    mirrored = posebank.joints_from_directions(m_dirs, np.ones(14))
    np.testing.assert_allclose(mirrored[:, J["l_wrist"]], joints[:, J["r_wrist"]] * [-1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(
        m_aux[:, posebank.AUX_INDEX["l_foot"]], aux[:, posebank.AUX_INDEX["r_foot"]] * [-1, 1, 1]
    )
    back, back_aux = posebank.mirror(m_dirs, m_aux)
    np.testing.assert_allclose(back, dirs, atol=1e-6)
    np.testing.assert_allclose(back_aux, aux, atol=1e-12)


def test_sample_poses_turn_about_the_vertical_only_without_noise() -> None:
    bank = posebank.load_bank()
    rng = np.random.default_rng(3)
    dirs, aux, index = posebank.sample_poses(
        bank, rng, 20, mirror_prob=0.0, bone_noise_deg=0.0, arm_noise_deg=0.0
    )
    np.testing.assert_allclose(dirs[..., 1], bank.bone_dirs[index][..., 1], atol=1e-12)  # heights kept
    horizontal = np.linalg.norm(bank.bone_dirs[index][..., [0, 2]], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(dirs[..., [0, 2]], axis=-1), horizontal, atol=1e-12)
    noisy, _, _ = posebank.sample_poses(bank, np.random.default_rng(3), 20)
    np.testing.assert_allclose(np.linalg.norm(noisy, axis=-1), 1.0, atol=1e-12)


# --- bodies ----------------------------------------------------------------------------------


def test_body_proportions_stay_near_canonical_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    shapes = [BodyShape.random(rng) for _ in range(300)]
    ratios = np.stack([s.bone_lengths for s in shapes]) / skeleton.CANONICAL_BONE_LENGTHS_MM
    b = skeleton.BONE_INDEX
    np.testing.assert_array_equal(ratios[:, b["r_upper_leg"]], ratios[:, b["l_upper_leg"]])
    np.testing.assert_array_equal(ratios[:, b["r_lower_arm"]], ratios[:, b["l_lower_arm"]])
    # Per bone: 3 % x a 3 % global size, each clipped at 2.5 sigma -> within (1.075)^2 - 1 = 15.6 %.
    assert np.all(np.abs(ratios - 1) < 0.156)
    assert np.all(np.abs(ratios.mean(axis=0) - 1) < 0.01)
    assert 0.03 < np.std(ratios[:, b["r_upper_leg"]]) < 0.055
    # Posing keeps the lengths exactly.
    bank = posebank.load_bank()
    body = pose_body(bank.bone_dirs[7], bank.aux_dirs[7], shapes[0])
    np.testing.assert_allclose(skeleton.bone_lengths(body.joints), shapes[0].bone_lengths, atol=1e-9)
    on_floor = stand_on_floor(body, np.array([100.0, -50.0]))
    np.testing.assert_allclose(on_floor.joints[J["pelvis"], :2], [100.0, -50.0], atol=1e-9)
    assert on_floor.joints[:, 2].min() > 0  # every joint above the floor (z up)


def test_wild_test_bodies_have_the_canonical_bone_sum() -> None:
    shape = sets.canonical_sum_shape(np.random.default_rng(5))
    assert shape.bone_lengths.sum() == pytest.approx(skeleton.CANONICAL_BONE_SUM_MM, rel=1e-12)


# --- rendering -------------------------------------------------------------------------------


def _front_camera(size: int = 101, focal: float = 500.0, k: np.ndarray | None = None) -> render.ViewCamera:
    c = (size - 1) / 2
    intr = Camera(np.array([focal, focal]), np.array([c, c]), np.zeros(3) if k is None else k, np.zeros(2))
    return render.ViewCamera(intr, size, size, np.eye(3), np.zeros(3))


def test_nearer_limb_hides_the_farther_whatever_the_order() -> None:
    camera = _front_camera()
    rays = render.ray_directions(camera)
    front = render.Capsule(
        np.array([-300.0, 0, 3000]), np.array([300.0, 0, 3000]), 50.0, part=1
    )  # horizontal
    back = render.Capsule(np.array([0.0, -300, 4000]), np.array([0.0, 300, 4000]), 80.0, part=2)  # vertical
    for prims in ([front, back], [back, front]):
        g = render.rasterize(prims, camera, rays)
        # The centre pixel's ray is the optical axis: it meets the front capsule's surface at z = 3000 - 50.
        assert g.part[50, 50] == 1
        assert g.depth[50, 50] == pytest.approx(2950.0, abs=1e-3)
        np.testing.assert_allclose(g.normal[50, 50], [0, 0, -1], atol=1e-6)
        # 30 px above the centre the horizontal front limb (50 mm = 8.3 px thick) is gone: the back
        # one shows, its surface on that ray at distance sqrt(x^2 + y^2 + z^2) with z = 4000 - 80.
        assert g.part[20, 50] == 2
        y = -30 / 500 * 3920.0
        assert g.depth[20, 50] == pytest.approx(np.hypot(y, 3920.0), rel=1e-3)
        assert g.part[5, 5] == -1 and np.isinf(g.depth[5, 5])


def test_ellipsoid_hit_and_hair_side() -> None:
    camera = _front_camera()
    rays = render.ray_directions(camera)
    head = render.Ellipsoid(np.array([0.0, 0, 2000]), np.eye(3), np.array([100.0, 150, 100]), part=3,
                            alt_part=4, alt_dir=np.array([0.0, 1.0, 0.0]), alt_threshold=0.0)  # fmt: skip
    g = render.rasterize([head], camera, rays)
    assert g.depth[50, 50] == pytest.approx(1900.0, abs=1e-3)
    # Its silhouette: 150 mm tall half-axis at 2 m with f = 500 -> 37.5 px; 100 mm wide -> 25 px.
    rows = np.flatnonzero((g.part >= 0).any(axis=1))
    cols = np.flatnonzero((g.part >= 0).any(axis=0))
    assert (
        abs((rows.max() - rows.min() + 1) / 2 - 37.5) <= 1.5
        and abs((cols.max() - cols.min() + 1) / 2 - 25) <= 1.5
    )
    # Normals pointing away from alt_dir (+y, image down), i.e. up, get the alternative part.
    assert g.part[30, 50] == 4 and g.part[70, 50] == 3


def test_rays_follow_the_distortion_that_project_models() -> None:
    camera = sets.lab_camera(0, 500, seed=0)
    assert np.any(camera.intrinsics.k != 0)
    rays = render.ray_directions(camera)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-1500, 1500, (50, 2)), rng.uniform(3000, 6000, 50)])
    px = camera.project(points)
    inside = np.all((px > 1) & (px < 498), axis=1)
    # The ray at the (interpolated) pixel of a projected point passes through the point.
    x, y = px[inside, 0], px[inside, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    ray = ((1 - fx) * (1 - fy) * rays[y0, x0] + fx * (1 - fy) * rays[y0, x0 + 1]
           + (1 - fx) * fy * rays[y0 + 1, x0] + fx * fy * rays[y0 + 1, x0 + 1])  # fmt: skip
    ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
    unit = points[inside] / np.linalg.norm(points[inside], axis=-1, keepdims=True)
    assert np.degrees(np.arccos(np.clip(np.sum(ray * unit, axis=-1), -1, 1))).max() < 0.01
    # A pinhole would be off by pixels in the corners.
    assert np.abs(px - scene.make_camera(camera.t_c2w, camera.t_c2w + camera.r_c2w[:, 2], 500, 500,
                                         camera.intrinsics.f[0]).project(points)).max() > 1.0  # fmt: skip


def test_rendered_body_carries_signal_at_its_joints() -> None:
    rng = np.random.default_rng(1)
    bank = posebank.load_bank()
    i = int(np.argmin(np.linalg.norm(bank.bone_dirs - bank.bone_dirs.mean(axis=0), axis=-1).mean(axis=-1)))
    body = stand_on_floor(  # the most ordinary pose of the bank (nearest the mean bone directions)
        pose_body(bank.bone_dirs[i], bank.aux_dirs[i], BodyShape.random(rng)), np.zeros(2)
    )
    camera = scene.make_camera(np.array([0.0, -3500.0, 1200.0]), np.array([0.0, 0.0, 900.0]), 200, 200, 180.0)
    rays = render.ray_directions(camera)
    grey = np.full((200, 200, 3), 0.5, np.float32)
    albedo = np.tile(np.array([[0.9, 0.2, 0.1]]), (len(PART), 1))  # a saturated blue person
    shot = scene.render_shot(body, camera, rays, grey, albedo, scene.Lighting(np.array([0, -1.0, 1.0])), rng,
                             noise_sigma=0.0, blur_sigma=0.0)  # fmt: skip
    assert shot.image.std() > 10
    assert shot.in_image.all() and shot.visible.sum() >= 10
    # The head top lies on the outline by definition: its nearest pixel shows the background for
    # about 4 poses in 10 of the bank (measured), so it is left out here.
    inner = shot.visible & (np.arange(skeleton.NUM_JOINTS) != J["head_top"])
    ij = np.rint(shot.joints_2d[inner]).astype(int)
    pixels = shot.image[ij[:, 1], ij[:, 0]].astype(float)
    # At every other visible joint the image shows the body (blue > red), not the grey background.
    assert np.all(pixels[:, 0] > pixels[:, 2] + 20)
    assert np.all(shot.gbuf.part[ij[:, 1], ij[:, 0]] >= 0)
    # The head box holds the head top and the upper neck's surroundings.
    x1, y1, x2, y2 = shot.head_box
    head_top = shot.joints_2d[J["head_top"]]
    assert x1 - 1 <= head_top[0] <= x2 + 1 and y1 - 1 <= head_top[1] <= y2 + 1


def test_frames_are_deterministic_per_seed() -> None:
    a = sets.wild_image(0, 160, 4)
    b = sets.wild_image(0, 160, 4)
    c = sets.wild_image(1, 160, 4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.joints_2d, b.joints_2d)
    assert a.image.shape != c.image.shape or np.abs(a.image.astype(int) - c.image).mean() > 5


# --- the raw trees, read by the real readers ----------------------------------------------------


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_raw")
    preset = dict(gen.SIZES["tiny"])
    trials = preset.pop("lab_trials")
    gen.generate(str(root), **preset, lab_trials=trials, h36m_layout="both", num_workers=1, progress=None)
    return root


def _read(module, root: Path, split: str, **options) -> tuple[list, list]:
    samples, quarantined = [], []
    for task in module.list_tasks(str(root), split, **options):
        for record in module.read_task(task):
            (samples if isinstance(record, PersonSample) else quarantined).append((task, record))
    return samples, quarantined


@pytest.mark.parametrize("layout", ["npz", "video"])
def test_h36m_reader_reads_the_lab_set(raw_tree: Path, layout: str) -> None:
    truth = np.load(raw_tree / "synthetic_labels.npz")
    index = {k: i for i, k in enumerate(truth["lab_keys"])}
    seen = 0
    for split, subjects in (("train", sets.LAB_TRAIN_SUBJECTS), ("test", sets.LAB_TEST_SUBJECTS)):
        samples, quarantined = _read(h36m, raw_tree / "h36m", split, layout=layout)
        assert not quarantined and samples
        for task, s in samples:
            i = index[f"{task.task_id}/{s.key}"]
            assert s.subject in subjects and s.action in h36m.ACTIONS and s.frame % 5 == 0
            np.testing.assert_allclose(s.joints_2d, truth["lab_joints_2d"][i], atol=0.5)
            np.testing.assert_allclose(s.joints_3d, truth["lab_joints_3d"][i], atol=0.01)
            assert s.visible.all() and s.image.shape == (320, 320, 3)
            assert s.camera.k[0] != 0  # the lab cameras' distortion reaches the samples
        seen += len(samples)
    assert seen == len(truth["lab_keys"]) == gen.SIZES["tiny"]["lab_frames"]
    cams = json.loads((raw_tree / "h36m" / "annotation_body3d" / "cameras.json").read_text())
    assert len(cams) == len(sets.LAB_SUBJECTS) * 4


@pytest.mark.parametrize("layout", ["mat", "json"])
def test_mpii_reader_reads_the_wild_set(raw_tree: Path, layout: str) -> None:
    truth = np.load(raw_tree / "synthetic_labels.npz")
    index = {k: i for i, k in enumerate(truth["wild_keys"])}
    total = 0
    for split in ("train", "val"):
        samples, quarantined = _read(mpii, raw_tree / "mpii", split, layout=layout)
        for _, q in quarantined:  # only people with too few joints inside the image
            assert q.reason.startswith("too few annotated joints")
        for _, s in samples:
            i = index[Path(s.source_path).name]
            assert sets.wild_split(i) == split
            annotated = truth["wild_annotated"][i]
            np.testing.assert_array_equal(s.visible, annotated)
            np.testing.assert_allclose(
                s.joints_2d[annotated], truth["wild_joints_2d"][i][annotated], atol=0.5
            )
            if layout == "mat":
                np.testing.assert_allclose(s.head_box, truth["wild_head_box"][i], atol=0.5)
            assert s.joints_3d is None
        total += len(samples) + len(quarantined)
    assert total == gen.SIZES["tiny"]["wild_images"]


def test_mpi3dhp_reader_reads_the_wild_test_set(raw_tree: Path) -> None:
    truth = np.load(raw_tree / "synthetic_labels.npz")
    index = {k: i for i, k in enumerate(truth["test_keys"])}
    samples, quarantined = _read(mpi3dhp, raw_tree / "3dhp", "test")
    assert not quarantined
    assert len(samples) == truth["test_valid"].sum() < len(truth["test_keys"])  # invalid frames skipped
    for task, s in samples:
        i = index[f"{task.task_id}/{s.key}"]
        np.testing.assert_allclose(s.joints_2d, truth["test_joints_2d"][i], atol=0.5)
        np.testing.assert_allclose(s.joints_3d, truth["test_joints_3d"][i], atol=0.01)
        assert s.annotation_3d == "univ_annot3"
        assert s.group == sets.TEST_GROUPS[s.subject] and s.action in mpi3dhp.ACTIVITIES.values()
    assert {s.group for _, s in samples} == {"studio_gs", "studio_nogs", "outdoor"}
    wide = [s for _, s in samples if s.subject == "TS5"][0]
    assert wide.image.shape[1] > wide.image.shape[0]


def test_synthetic_reader_feeds_the_writer(raw_tree: Path, tmp_path: Path) -> None:
    from data_prep import writer

    tasks = {split: synthetic_reader.list_tasks(str(raw_tree), split) for split in ("train", "val", "test")}
    assert {t.dataset for t in tasks["train"]} == {"synthetic_lab", "synthetic_wild"}
    assert {t.dataset for t in tasks["val"]} == {"synthetic_wild"}
    assert {t.dataset for t in tasks["test"]} == {"synthetic_lab", "synthetic_wild_test"}
    task = next(t for t in tasks["test"] if t.dataset == "synthetic_wild_test")
    result = writer.process_task(
        task, synthetic_reader.read_task, str(tmp_path), writer.WriterConfig(crop_size=64)
    )
    assert not result.failed and result.rows > 0
    assert len(list((tmp_path / "synthetic_wild_test" / "test").glob("*.parquet"))) == result.shards == 1


def test_lab_tasks_take_the_subjects_in_turn_so_every_packed_shard_holds_them_all(raw_tree: Path) -> None:
    from data_prep.readers import h36m

    inner = h36m.list_tasks(str(raw_tree / "h36m"), "train")
    tasks = [t for t in synthetic_reader.list_tasks(str(raw_tree), "train") if t.dataset == "synthetic_lab"]
    assert sorted(t.task_id for t in tasks) == sorted(t.task_id for t in inner)  # the same tasks
    subjects = [t.payload["synthetic_inner"]["payload"]["subject"] for t in tasks]
    n = len(set(subjects))
    assert n >= 2 and [s for s in subjects if s == subjects[0]] != subjects[:n]
    rounds = len(subjects) // n  # every full round of n tasks holds n subjects
    assert all(len(set(subjects[i * n : (i + 1) * n])) == n for i in range(rounds))
    for x in set(subjects):
        mine = [t.task_id for t, s in zip(tasks, subjects, strict=True) if s == x]
        assert mine == [t.task_id for t in inner if t.payload["subject"] == x]  # in their order


def test_generation_does_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    counts = {"lab_frames": 8, "wild_images": 5, "wild_test_frames": 6, "image_size": 96}
    infos = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        infos[workers] = gen.generate(str(root), **counts, num_workers=workers, progress=None)
    a, b = tmp_path / "w1", tmp_path / "w2"
    for name in ("synthetic_labels.npz", "h36m/annotation_body3d/fps10/h36m_train.npz"):
        with np.load(a / name) as x, np.load(b / name) as y:
            assert x.files == y.files
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key])
    lab_image = "h36m/images/S5/S5_Directions_1.58860488/S5_Directions_1.58860488_000001.jpg"
    for name in (
        "3dhp/TS3/annot_data.mat",
        "mpii/images/000000003.jpg",
        "3dhp/TS1/imageSequence/img_000001.jpg",
        lab_image,
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert infos[2]["workers"] == 2


@pytest.mark.slow
def test_prepare_writes_the_three_shard_sets(tmp_path: Path) -> None:
    import ray

    from data_prep.synthetic import prepare

    started_here = not ray.is_initialized()
    try:
        result = prepare(str(tmp_path / "shards"), size="tiny", num_cpus=2, progress=None, crop_size=64)
    finally:
        if started_here:
            ray.shutdown()
    truth = np.load(tmp_path / "shards" / "raw" / "synthetic_labels.npz")
    summaries = result["prep"].datasets
    lab_test = sum(k.split("_", 1)[0] in sets.LAB_TEST_SUBJECTS for k in truth["lab_keys"])
    assert summaries["synthetic_lab"].splits["test"]["rows"] == lab_test
    assert summaries["synthetic_lab"].splits["train"]["rows"] == len(truth["lab_keys"]) - lab_test
    assert summaries["synthetic_wild_test"].splits["test"]["rows"] == truth["test_valid"].sum()
    wild = summaries["synthetic_wild"]
    assert wild.splits["train"]["rows"] + wild.splits["val"]["rows"] + sum(wild.quarantined.values()) == 30
    assert set(wild.quarantined) <= {"too few annotated joints"}
    assert not result["prep"].failed


# --- the street (COCO-like) set, read by the COCO reader ------------------------------------------


@pytest.fixture(scope="module")
def street_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_street")
    gen.generate(str(root), lab_frames=0, wild_images=0, wild_test_frames=0, image_size=320, coco_images=10,
                 num_workers=1, progress=None)  # fmt: skip
    return root


def test_street_set_is_read_back_by_the_coco_reader(street_tree: Path) -> None:
    from collections import Counter

    truth = np.load(street_tree / "synthetic_labels.npz")
    index = {k: i for i, k in enumerate(truth["coco_keys"])}
    reasons: Counter[str] = Counter()
    samples = []
    for split in ("train", "val"):
        tasks = synthetic_reader.list_tasks(str(street_tree), split, sets="coco")
        assert tasks and {t.dataset for t in tasks} == {"synthetic_coco"}
        for task in tasks:
            for record in synthetic_reader.read_task(task):
                if isinstance(record, PersonSample):
                    samples.append(record)
                else:
                    reasons[record.reason.split(":")[0]] += 1
    # Several people per image, some skipped as COCO's would be: crowds (images 3, 6, 9) and people too
    # small to carry keypoints.
    assert len(samples) >= 8 and reasons["crowd"] >= 2 and reasons["tiny person"] >= 5
    assert set(reasons) <= {"crowd", "tiny person", "too few annotated joints"}
    assert len(samples) + sum(reasons.values()) > 2 * 10
    for s in samples:
        t16 = truth["coco_joints_2d"][index[s.key]]
        # COCO's visibility pattern: no thorax, upper neck or head top; the pelvis iff both hips.
        assert not s.visible[[J["thorax"], J["upper_neck"], J["head_top"]]].any()
        assert s.visible[J["pelvis"]] == (s.visible[J["r_hip"]] and s.visible[J["l_hip"]])
        direct = s.visible.copy()
        direct[J["pelvis"]] = False
        np.testing.assert_allclose(s.joints_2d[direct], t16[direct], atol=0.01)  # written to 0.01 px
        if s.visible[J["pelvis"]]:  # the hips' 2D midpoint vs the projected 3D pelvis
            assert np.linalg.norm(s.joints_2d[J["pelvis"]] - t16[J["pelvis"]]) < 1.0
        assert s.joints_3d is None and max(s.image.shape[:2]) == round(320 * sets.COCO_FRAME_SCALE)
    # The files are COCO's: a crowd is an uncompressed RLE over the whole image, others polygons.
    data = json.loads((street_tree / "coco" / "annotations" / "person_keypoints_train2017.json").read_text())
    sizes = {i["id"]: (i["height"], i["width"]) for i in data["images"]}
    for ann in data["annotations"]:
        kp = np.asarray(ann["keypoints"]).reshape(17, 3)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) and set(kp[:, 2]) <= {0, 1, 2}
        if ann["iscrowd"]:
            rle = ann["segmentation"]
            assert rle["size"] == list(sizes[ann["image_id"]]) and ann["num_keypoints"] == 0
            assert sum(rle["counts"]) == np.prod(rle["size"]) and sum(rle["counts"][1::2]) == ann["area"]
        else:
            assert ann["segmentation"] and all(len(p) >= 6 for p in ann["segmentation"])
    # Opt-in: the default sets of the synthetic reader leave the street set out.
    assert "synthetic_coco" not in {t.dataset for t in synthetic_reader.list_tasks(str(street_tree), "train")}


def test_street_set_looks_unlike_the_wild_set() -> None:
    wild = [sets.wild_image(0, 240, i) for i in range(8)]
    street = [sets.coco_image(0, 240, i) for i in range(8)]
    # Larger frames, several people each, and the people smaller in them.
    assert max(s.image.shape[0] for s in wild) <= 240 < min(max(s.image.shape[:2]) for s in street)
    assert np.mean([len(s.people) for s in street]) >= 3
    wild_height = [np.ptp(s.joints_2d[:, 1]) / s.image.shape[0] for s in wild]
    street_height = [
        np.ptp(p.joints_2d[:, 1]) / s.image.shape[0] for s in street for p in s.people if not p.iscrowd
    ]
    assert np.median(street_height) < 0.5 * np.median(wild_height)
    # Muted street clothing: darker tops and trousers on average than the wild set's.
    rng = np.random.default_rng(0)
    urban = np.array([sets.urban_appearance(rng).albedo[[PART["top"], PART["trousers"]]] for _ in range(200)])
    anything = np.array(
        [sets.Appearance.random(rng).albedo[[PART["top"], PART["trousers"]]] for _ in range(200)]
    )
    assert urban.mean() < anything.mean() - 0.05  # 0.39 against 0.50


def test_street_set_does_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    counts = {"lab_frames": 0, "wild_images": 0, "wild_test_frames": 0, "coco_images": 10, "image_size": 96}
    for workers in (1, 2):
        gen.generate(str(tmp_path / f"w{workers}"), **counts, num_workers=workers, progress=None)
    a, b = tmp_path / "w1", tmp_path / "w2"
    annotations = [f"coco/annotations/person_keypoints_{split}2017.json" for split in ("train", "val")]
    for name in (*annotations, "coco/train2017/000000000003.jpg", "coco/val2017/000000000010.jpg"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_prepare_with_the_street_set_adds_a_third_source(tmp_path: Path) -> None:
    import ray

    from data_prep.synthetic import prepare

    started_here = not ray.is_initialized()
    try:
        result = prepare(
            str(tmp_path / "shards"), size="tiny", num_cpus=2, progress=None, crop_size=64, coco=True
        )
    finally:
        if started_here:
            ray.shutdown()
    summaries = result["prep"].datasets
    assert set(summaries) == {"synthetic_lab", "synthetic_wild", "synthetic_wild_test", "synthetic_coco"}
    street = summaries["synthetic_coco"]
    assert street.splits["train"]["rows"] > 0 and set(street.splits) == {"train", "val"}
    assert set(street.quarantined) <= {"crowd", "tiny person", "too few annotated joints"}
    assert not result["prep"].failed
    # The street set is prepared apart: the other sets keep the reader options of a run without it.
    params = {d: json.loads((tmp_path / "shards" / d / "_prep.json").read_text()) for d in summaries}
    assert params["synthetic_coco"]["reader_options"] == {"sets": "coco"}
    assert params["synthetic_lab"]["reader_options"] == {"sets": None}
