"""Issue 3: the real fixtures (Human3.6M npz + JPEGs, MPII JSON and official .mat + JPEGs, 3DHP npz +
JPEGs) converted to shards whose crop-space joints map back to the original labels within 0.5 px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_prep import writer
from data_prep.readers import h36m, mpi3dhp, mpii
from pose3d import geometry, skeleton
from pose3d.data.shards import load_shards_numpy


def _convert(module, tasks, out: Path) -> dict[str, np.ndarray]:
    config = writer.WriterConfig()
    for position, task in enumerate(tasks):
        result = writer.process_task(task, module.read_task, str(out), config, position=position)
        assert not result.failed and result.quarantined == 0, result
    return load_shards_numpy(str(out))


def _back_to_image(rows: dict[str, np.ndarray]) -> np.ndarray:
    """Crop-space joints (N, 16, 2) -> original-image px through the stored crop_to_image affine."""
    return geometry.apply_affine(
        rows["joints_2d"].astype(np.float64), rows["crop_to_image"].reshape(-1, 2, 3)
    )


def _direct(mapping: skeleton.JointMapping) -> tuple[np.ndarray, np.ndarray]:
    ours = np.array([i for i, s in enumerate(mapping.source) if s >= 0])
    return ours, np.array([mapping.source[i] for i in ours])


def test_h36m_fixture_shards_map_back(fixtures_dir: Path, tmp_path: Path):
    root = fixtures_dir / "h36m"
    data = np.load(root / "test_h36m_body3d.npz")
    rows = _convert(h36m, h36m.list_tasks(str(root), "train"), tmp_path)
    assert len(rows["row_id"]) == 4 and rows["has_3d"].all()
    order = np.argsort(rows["frame"])  # npz rows: frames 0, 25, 395, 2060 in task order
    back = _back_to_image(rows)
    ours, src = _direct(skeleton.H36M17)
    expected = data["part"][:, src, :2]
    frames = np.array([0, 2060, 395, 25])
    for npz_row, frame in enumerate(frames):
        row = order[np.searchsorted(rows["frame"][order], frame)]
        err = np.abs(back[row, ours] - expected[npz_row]).max()
        assert err < 0.5, f"frame {frame}: {err:.3f} px"
        np.testing.assert_allclose(
            rows["joints_3d"][row, ours], data["S"][npz_row, src, :3] * 1000, atol=0.01
        )


def test_mpii_fixture_shards_map_back(fixtures_dir: Path, tmp_path: Path):
    root = fixtures_dir / "mpii"
    labels = json.loads((root / "test_mpii.json").read_text())
    rows = _convert(mpii, mpii.list_tasks(str(root), "val", annotation="test_mpii.json"), tmp_path / "json")
    assert len(rows["row_id"]) == 5 and not rows["has_3d"].any()
    back = _back_to_image(rows)
    by_image = {Path(p).name: i for i, p in enumerate(rows["source_path"])}
    for label in labels:
        i = by_image[label["image"]]
        joints = np.asarray(label["joints"], np.float64) - 1.0  # 1-based MATLAB px -> ours
        vis = np.asarray(label["joints_vis"], bool) & rows["visible"][i]
        assert vis.sum() >= 8
        err = np.abs(back[i, vis] - joints[vis]).max()
        assert err < 0.5, f"{label['image']}: {err:.3f} px"

    # The official nested .mat: its first five people are the JSON's five (names given by a list).
    names = tmp_path / "names.txt"
    names.write_text("\n".join(r["image"] for r in labels) + "\n" * 2954)
    tasks = mpii.list_tasks(
        str(root), "val", annotation="mpii_val_official_struct.mat", image_names=str(names)
    )
    config = writer.WriterConfig()
    result = writer.process_task(tasks[0], mpii.read_task, str(tmp_path / "mat"), config)
    mat_rows = load_shards_numpy(str(tmp_path / "mat"))
    assert len(mat_rows["row_id"]) == 5 and result.rows == 5
    mat_back = _back_to_image(mat_rows)
    for i, label in enumerate(labels):
        joints = np.asarray(label["joints"], np.float64) - 1.0
        vis = np.asarray(label["joints_vis"], bool) & mat_rows["visible"][i]
        assert np.abs(mat_back[i, vis] - joints[vis]).max() < 0.5
    assert np.isfinite(mat_rows["head_size"]).all() and (mat_rows["head_size"] > 0).all()


def test_3dhp_fixture_shards_map_back(fixtures_dir: Path, tmp_path: Path):
    root = fixtures_dir / "mpi_inf_3dhp"
    data = np.load(root / "test_3dhp_test.npz")
    rows = _convert(mpi3dhp, mpi3dhp.list_tasks(str(root), "test"), tmp_path)
    assert len(rows["row_id"]) == 2 and rows["has_3d"].all()
    back = _back_to_image(rows)
    ours, src = _direct(skeleton.MPI3DHP17)
    order = np.argsort(rows["subject"])  # TS1, TS2 as in the npz
    for npz_row, row in enumerate(order):
        vis = rows["visible"][row, ours]
        err = np.abs(back[row, ours][vis] - data["part"][npz_row, src, :2][vis]).max()
        assert err < 0.5, f"{rows['subject'][row]}: {err:.3f} px"
    assert set(rows["annotation_3d"]) == {"annot3"}
