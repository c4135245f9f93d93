"""The pose gap, measured: how far in-the-wild poses lie from a lab's poses, on the real fixtures and
on the synthetic sets (docs/synthetic.md, The pose gap).

A pose's *distance to a set* is the distance to its nearest pose of the set after a similarity
alignment (rotation, uniform scale, translation) over the 14 scored joints (``skeleton.SCORED_14``:
pelvis and thorax, defined differently by every dataset, left out), in the reference's unit (mm):

- 3D: the mean per-joint distance (PA-MPJPE) to the nearest reference pose;
- 2D: the per-joint RMS distance to the nearest of the reference poses projected orthographically
  from ``VIEWS`` (12 headings x 3 elevations), aligned in the image plane (closed form, complex
  numbers), for datasets with 2D labels only (MPII).

The *gap ratio* of a wild set is its median distance to the lab's reference poses over the median
distance of held-out lab poses to the same reference. Real data (research-only fixtures, read, never
shipped): the reference is Human3.6M S1's exp-map mocap (the first half of each of its 6 clips at
5 Hz); held-out lab poses are the second halves (the same actions at other moments, as Human3.6M's
test subjects perform the training subjects' actions) and the three frames of other subjects
(S5, S7, S8); the wild poses are MPII's validation people with all joints annotated (2D) and the two
3DHP test frames (3D). Synthetic: the same figures for the generator's lab, wild and wild-test pose
distributions (``posebank.sample_poses`` under a ``PoseGap``).

Run: ``python -m data_prep.synthetic.posegap --fixtures DIR [--grid]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.synthetic import posebank
from pose3d import geometry, skeleton

#: Orthographic views for the 2D distance: (heading, elevation) in degrees.
VIEWS: tuple[tuple[float, float], ...] = tuple(
    (float(a), float(e)) for e in (-10.0, 10.0, 30.0) for a in range(0, 360, 30)
)
SCORED = skeleton.SCORED_14
#: Lab pose shares of the ``--grid`` table: each selects a different set of clusters of the bank.
GRID_LAB_SHARES = (0.15, 0.4, 0.6, 0.7, 1.0)
#: Human3.6M exp-map frames per second and the measurement's sampling step (50 Hz / 10 = 5 Hz).
H36M_EXPMAP_STEP = 10

# Human3.6M's 32-joint mocap skeleton (parents and offsets in mm), the standard exp-map forward
# kinematics (docs/conventions.md, Joint mappings).
_PARENTS = (
    -1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14,
    12, 16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30,
)  # fmt: skip
_OFFSETS = np.array([
    [0, 0, 0], [-132.948591, 0, 0], [0, -442.894612, 0], [0, -454.206447, 0], [0, 0, 162.767078],
    [0, 0, 74.999437], [132.948826, 0, 0], [0, -442.894413, 0], [0, -454.206590, 0], [0, 0, 162.767426],
    [0, 0, 74.999948], [0, 0.1, 0], [0, 233.383263, 0], [0, 257.077681, 0], [0, 121.134938, 0],
    [0, 115.002227, 0], [0, 257.077681, 0], [0, 151.034226, 0], [0, 278.882773, 0], [0, 251.733451, 0],
    [0, 0, 0], [0, 0, 99.999627], [0, 100.000188, 0], [0, 0, 0], [0, 257.077681, 0], [0, 151.031437, 0],
    [0, 278.892924, 0], [0, 251.728680, 0], [0, 0, 0], [0, 0, 99.999888], [0, 137.499922, 0], [0, 0, 0],
])  # fmt: skip


def _rodrigues(r: np.ndarray) -> np.ndarray:
    """(N, 3) axis-angle (rad) -> (N, 3, 3) rotations."""
    theta = np.linalg.norm(r, axis=-1)[:, None, None]
    axis = r / np.maximum(theta[:, 0], 1e-12)
    k = np.zeros((len(r), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - np.swapaxes(k, 1, 2)
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def h36m_expmap_positions(rows: np.ndarray) -> np.ndarray:
    """(N, 99) Human3.6M exp-map rows -> (N, 32, 3) mm of its 32-joint mocap skeleton (y up),
    row-vector kinematics: R_i = E_i R_parent, p_i = o_i R_parent + p_parent."""
    n = len(rows)
    rot: list[np.ndarray] = [np.eye(3)] * 32
    pos = np.zeros((n, 32, 3))
    for i, parent in enumerate(_PARENTS):  # per joint of the chain, every frame at once
        e = _rodrigues(rows[:, 3 + 3 * i : 6 + 3 * i])
        if parent < 0:
            rot[i], pos[:, i] = e, rows[:, :3] + _OFFSETS[i]
        else:
            pos[:, i] = np.einsum("j,njk->nk", _OFFSETS[i], rot[parent]) + pos[:, parent]
            rot[i] = e @ rot[parent]
    return pos


def h36m_expmap_joints(rows: np.ndarray) -> np.ndarray:
    """(N, 99) Human3.6M exp-map rows -> (N, 16, 3) mm (y up): ``h36m_expmap_positions`` mapped by
    ``skeleton.H36M32``."""
    return skeleton.H36M32.apply(h36m_expmap_positions(rows))[0]


# --- distances -----------------------------------------------------------------------------------


def _shape_descriptor(x: np.ndarray) -> np.ndarray:
    """(N, J, 3) -> (N, J(J-1)/2): the pairwise joint distances over their RMS, which a similarity
    transform leaves unchanged (a cheap stand-in for the aligned distance, to pick candidates)."""
    i, j = np.triu_indices(x.shape[1], 1)
    d = np.linalg.norm(x[:, i] - x[:, j], axis=-1)
    return d / np.sqrt(np.mean(d**2, axis=1, keepdims=True))


def nearest_3d(
    queries: np.ndarray, reference: np.ndarray, candidates: int = 128, chunk: int = 16
) -> np.ndarray:
    """(Q,) distance (reference unit) of each query pose (Q, 16, 3) to its nearest reference pose
    (R, 16, 3): the smallest mean per-joint distance over the 14 scored joints after a similarity
    alignment of the query onto the reference pose (``geometry.procrustes_align``), searched among
    the ``candidates`` reference poses nearest by ``_shape_descriptor`` (all when R is smaller)."""
    q = np.asarray(queries, np.float64)[:, SCORED]
    r = np.asarray(reference, np.float64)[:, SCORED]
    k = min(candidates, len(r))
    dq, dr = _shape_descriptor(q), _shape_descriptor(r)
    cost = np.sum(dq**2, axis=1)[:, None] + np.sum(dr**2, axis=1)[None] - 2.0 * dq @ dr.T
    pick = (
        np.argpartition(cost, k - 1, axis=1)[:, :k] if k < len(r) else np.tile(np.arange(len(r)), (len(q), 1))
    )
    out = np.empty(len(q))
    for i in range(0, len(q), chunk):
        cand = r[pick[i : i + chunk]]  # (c, k, 14, 3)
        block = np.broadcast_to(q[i : i + chunk, None], cand.shape)
        aligned = geometry.procrustes_align(block, cand)
        out[i : i + chunk] = np.linalg.norm(aligned - cand, axis=-1).mean(axis=-1).min(axis=1)
    return out


def project_views(joints: np.ndarray, views: tuple[tuple[float, float], ...] = VIEWS) -> np.ndarray:
    """Orthographic projections (N * V, 16, 2) of poses (N, 16, 3) (y up) seen from each view
    (heading about y, then elevation), image x right and y up, same unit."""
    out = []
    for heading, elevation in views:
        a, e = np.deg2rad(heading), np.deg2rad(elevation)
        yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        pitch = np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
        out.append((joints @ (pitch @ yaw).T)[..., :2])
    return np.concatenate(out)


def project_random_views(joints: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each pose (N, 16, 3) (y up) projected orthographically from its own random view (heading
    uniform, elevation uniform in -10..30 degrees), as ``project_views``. Returns (N, 16, 2)."""
    a = np.deg2rad(rng.uniform(0.0, 360.0, len(joints)))
    e = np.deg2rad(rng.uniform(-10.0, 30.0, len(joints)))
    x = np.cos(a)[:, None] * joints[..., 0] + np.sin(a)[:, None] * joints[..., 2]
    z = -np.sin(a)[:, None] * joints[..., 0] + np.cos(a)[:, None] * joints[..., 2]
    y = np.cos(e)[:, None] * joints[..., 1] - np.sin(e)[:, None] * z
    return np.stack([x, y], axis=-1)


def nearest_2d(queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(Q,) distance (template unit) of each 2D query pose (Q, 16, 2) to its nearest template
    (T, 16, 2): the smallest per-joint RMS distance over the 14 scored joints after the best 2D
    similarity alignment of the query onto the template (closed form: with centred complex
    coordinates q, t the residual is |t|^2 - |q^H t|^2 / |q|^2)."""

    def centred(x: np.ndarray) -> np.ndarray:
        z = x[:, SCORED, 0] + 1j * x[:, SCORED, 1]
        return z - z.mean(axis=1, keepdims=True)

    q, t = centred(np.asarray(queries, np.float64)), centred(np.asarray(templates, np.float64))
    qq = np.sum(np.abs(q) ** 2, axis=1)
    tt = np.sum(np.abs(t) ** 2, axis=1)
    out = np.empty(len(q))
    for i in range(0, len(q), 256):
        cross = np.abs(q[i : i + 256].conj() @ t.T) ** 2  # (c, T)
        residual = tt[None] - cross / qq[i : i + 256, None]
        out[i : i + 256] = np.sqrt(np.maximum(residual.min(axis=1), 0.0) / len(SCORED))
    return out


# --- the real fixtures ---------------------------------------------------------------------------


@dataclass
class RealPoses:
    """The fixtures' poses in the 16 joints: reference and held-out Human3.6M S1 mocap (mm, y up),
    other-subject Human3.6M frames (3D mm and 2D px), 3DHP test frames (3D mm, 2D px) and MPII
    validation people with every joint annotated (2D px)."""

    reference: np.ndarray  # (R, 16, 3)
    held_out: np.ndarray  # (H, 16, 3)
    h36m_other_3d: np.ndarray  # (S, 16, 3)
    h36m_other_2d: np.ndarray  # (S, 16, 2)
    mpi3dhp_3d: np.ndarray  # (T, 16, 3)
    mpi3dhp_2d: np.ndarray  # (T, 16, 2)
    mpii_2d: np.ndarray  # (M, 16, 2)


def load_real(fixtures: str | Path) -> RealPoses:
    """Read the real-data fixtures folder (mocap/h36m_expmap_S1, h36m/test_h36m_body3d.npz,
    mpi_inf_3dhp/test_3dhp_test.npz, mpii/mpii_val_official_struct.mat)."""
    from data_prep.readers import mpii

    root = Path(fixtures)
    reference, held_out = [], []
    for path in sorted((root / "mocap" / "h36m_expmap_S1").glob("*.txt")):
        rows = np.loadtxt(path, delimiter=",")[::H36M_EXPMAP_STEP]
        joints = h36m_expmap_joints(rows)
        half = len(joints) // 2
        reference.append(joints[:half])
        held_out.append(joints[half:])
    if not reference:
        raise FileNotFoundError(f"{root / 'mocap' / 'h36m_expmap_S1'}: no exp-map clips")
    with np.load(root / "h36m" / "test_h36m_body3d.npz") as z:
        other = np.array([not str(n).startswith("S1/") for n in z["imgname"]])  # S1 is the reference
        h36m_3d = skeleton.H36M17.apply(z["S"][other, :, :3] * 1000.0)[0]
        h36m_2d = skeleton.H36M17.apply(z["part"][other, :, :2])[0]
    with np.load(root / "mpi_inf_3dhp" / "test_3dhp_test.npz") as z:
        hp_3d = skeleton.MPI3DHP17.apply(z["S"][..., :3] * 1000.0)[0]
        hp_2d = skeleton.MPI3DHP17.apply(z["part"][..., :2])[0]
    people = mpii.parse_list(root / "mpii" / "mpii_val_official_struct.mat")
    full = [p.joints for p in people if p.annotated.all()]

    def flip_y(x: np.ndarray) -> np.ndarray:  # camera and image coordinates have y down; mocap y up
        return x * np.array([1.0, -1.0, *([1.0] if x.shape[-1] == 3 else [])])

    def camera_to_y_up(x: np.ndarray) -> np.ndarray:  # x right, y down, z forward -> y up
        return x * np.array([1.0, -1.0, -1.0])

    return RealPoses(
        np.concatenate(reference), np.concatenate(held_out), camera_to_y_up(h36m_3d), flip_y(h36m_2d),
        camera_to_y_up(hp_3d), flip_y(hp_2d), flip_y(np.array(full)),
    )  # fmt: skip


@dataclass
class GapFigures:
    """Median distances (mm in the reference's scale) and their counts, per query set and kind
    ("3d", "2d"), and the gap ratios: a wild set's median over the held-out lab median."""

    medians: dict[str, float]
    counts: dict[str, int]
    ratio_2d: float
    ratio_3d: float
    reference_size: int = 0


def _figures(
    reference: np.ndarray,
    held: dict[str, np.ndarray],
    wild: dict[str, np.ndarray],
    rng: np.random.Generator,
    with_3d: bool = True,
) -> GapFigures:
    """Distances of every query set to ``reference`` (R, 16, 3). ``held`` / ``wild``: name -> 3D poses
    (N, 16, 3) or 2D poses (N, 16, 2); 3D sets are also measured in 2D, each pose seen from one random
    view (``with_3d`` False: in 2D only, the cheap part; ratio_3d is then NaN). The first 3D and
    first 2D set of ``held`` and of ``wild`` make the ratios."""
    templates = project_views(reference)
    medians, counts = {}, {}
    for name, poses in {**held, **wild}.items():
        if poses.shape[-1] == 3:
            if with_3d:
                medians[f"{name} 3d"] = float(np.median(nearest_3d(poses, reference)))
                counts[f"{name} 3d"] = len(poses)
            seen = project_random_views(poses, rng)
        else:
            seen = poses
        medians[f"{name} 2d"] = float(np.median(nearest_2d(seen, templates)))
        counts[f"{name} 2d"] = len(poses)

    def first(sets: dict[str, np.ndarray], kind: str) -> str:
        return next(n for n, p in sets.items() if kind == "2d" or p.shape[-1] == 3) + f" {kind}"

    ratio_3d = medians[first(wild, "3d")] / medians[first(held, "3d")] if with_3d else float("nan")
    ratio_2d = medians[first(wild, "2d")] / medians[first(held, "2d")]
    return GapFigures(medians, counts, ratio_2d, ratio_3d, len(reference))


def measure_real(fixtures: str | Path, seed: int = 0) -> GapFigures:
    """The real pose gap on the fixtures (module docstring): ratio_2d = MPII's median 2D distance
    to Human3.6M S1 over S1's held-out one; ratio_3d = 3DHP's (2 poses) over S1's held-out one."""
    real = load_real(fixtures)
    held = {"H36M S1 held-out": real.held_out, "H36M S5/S7/S8": real.h36m_other_3d}
    wild = {"MPII val": real.mpii_2d, "3DHP test": real.mpi3dhp_3d}
    return _figures(real.reference, held, wild, np.random.default_rng(seed))


def synthetic_poses(kind: str, gap: posebank.PoseGap, n: int, seed: int) -> np.ndarray:
    """``n`` poses (n, 16, 3) mm, y up, canonical skeleton, as the generator draws them for ``kind``
    ("lab" or "wild"; wild-test and street draw as wild) under ``gap``."""
    bank = posebank.load_bank()
    rng = np.random.default_rng(seed)
    if kind == "lab":
        pool, share, limits = posebank.lab_pool(bank, gap.lab_pose_share), 0.0, None
    else:
        pool, share, limits = None, gap.composed_share, posebank.JointLimits.from_bank(bank)
    dirs, _, _ = posebank.sample_poses(bank, rng, n, pool=pool, composed_share=share, limits=limits)
    return posebank.joints_from_directions(dirs, skeleton.CANONICAL_BONE_LENGTHS_MM)


def measure_synthetic(
    gap: posebank.PoseGap, reference_size: int, n: int = 400, seed: int = 0, with_3d: bool = True
) -> GapFigures:
    """The same figures for the synthetic sets: ``reference_size`` lab draws (as many as the real
    reference holds) as the reference, ``n`` further lab draws as held-out, ``n`` wild draws
    (``with_3d`` False: 2D figures only)."""
    reference = synthetic_poses("lab", gap, reference_size, seed)
    held = {"lab held-out": synthetic_poses("lab", gap, n, seed + 1)}
    wild = {"wild": synthetic_poses("wild", gap, n, seed + 2)}
    return _figures(reference, held, wild, np.random.default_rng(seed), with_3d)


def _print(title: str, figures: GapFigures) -> None:
    print(title)
    for name, value in figures.medians.items():
        print(f"  {name:<26} n={figures.counts[name]:<5} median distance {value:6.1f} mm")
    print(f"  gap ratio 2d {figures.ratio_2d:.2f}, 3d {figures.ratio_3d:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fixtures",
        required=True,
        metavar="DIR",
        help="the real-data fixtures folder (mocap/h36m_expmap_S1, h36m, mpi_inf_3dhp, mpii)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--grid", action="store_true", help="also measure the synthetic sets over a grid of the two knobs"
    )
    args = parser.parse_args(argv)
    if not Path(args.fixtures).is_dir():
        print(f"fixtures not found at {args.fixtures}", file=sys.stderr)
        return 1
    real = measure_real(args.fixtures, args.seed)
    _print(f"real fixtures ({args.fixtures}), reference: Human3.6M S1 exp-map at 5 Hz, first halves", real)
    size = real.reference_size
    default = posebank.PoseGap()
    _print(
        f"synthetic, defaults (lab pose share {default.lab_pose_share}, composed share "
        f"{default.composed_share}), reference: {size} lab draws",
        measure_synthetic(default, size, seed=args.seed),
    )
    if args.grid:
        print("synthetic gap ratio 2d (rows: lab pose share, columns: composed share)")
        shares = (0.0, 0.3, 0.6, 0.9)
        print("  lab \\ composed" + "".join(f"{c:>8}" for c in shares))
        best: tuple[float, float, float] = (np.inf, 0.0, 0.0)
        for lab in GRID_LAB_SHARES:
            cells = []
            for composed in shares:
                f = measure_synthetic(posebank.PoseGap(lab, composed), size, seed=args.seed, with_3d=False)
                cells.append(f"{f.ratio_2d:8.2f}")
                best = min(best, (abs(f.ratio_2d - real.ratio_2d), lab, composed))
            lab_poses = len(posebank.lab_pool(posebank.load_bank(), lab))
            print(f"  {lab:<5} ({lab_poses:>3} poses)" + "".join(cells))
        _print(
            f"closest to the real 2d ratio {real.ratio_2d:.2f}: lab pose share {best[1]}, "
            f"composed share {best[2]}",
            measure_synthetic(posebank.PoseGap(best[1], best[2]), size, seed=args.seed),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
