"""Small valid shard sets written straight through the schema (no Ray, no raw formats), for tests of
training and evaluation: a person-like set of dots at the canonical skeleton's joints, posed and
seen from random sides, so 2D and depth are both learnable."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from pose3d import skeleton
from pose3d.schema import CROP_MARGIN, rows_to_table


def make_rows(n: int, *, has_3d: bool, crop: int = 64, seed: int = 0, dataset: str = "synthetic_lab",
              split: str = "train") -> dict[str, object]:  # fmt: skip
    rng = np.random.default_rng(seed)
    base = skeleton.canonical_pose_mm()
    yaw = rng.uniform(-np.pi, np.pi, n)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1] = np.cos(yaw), np.sin(yaw), 1
    rot[:, 2, 0], rot[:, 2, 2] = -np.sin(yaw), np.cos(yaw)
    pose = base @ rot.transpose(0, 2, 1) + rng.normal(0, 30, (n, 16, 3))
    pose += np.array([0, 0, 4000.0])
    f = 1000.0
    uv = pose[..., :2] / pose[..., 2:3] * f
    centre = (uv.max(1) + uv.min(1)) / 2
    box = (uv.max(1) - uv.min(1)).max(-1) * 1.2
    scale = crop / CROP_MARGIN / box
    joints = (uv - centre[:, None]) * scale[:, None, None] + (crop - 1) / 2
    jpegs = []
    for j, p in zip(joints, pose, strict=True):
        img = np.full((crop, crop, 3), 40, np.uint8)
        for a, b in skeleton.BONES:
            cv2.line(
                img, tuple(np.round(j[a]).astype(int)), tuple(np.round(j[b]).astype(int)), (90, 90, 90), 1
            )
        for k in np.argsort(-p[:, 2]):  # far first; brightness encodes depth
            shade = int(np.clip(255 - (p[k, 2] - 3600) / 4, 60, 255))
            colour = (
                (shade, 80 + 10 * int(k), 255 - shade) if k % 2 else (255 - shade, shade, 60 + 10 * int(k))
            )
            cv2.circle(img, tuple(np.round(j[k]).astype(int)), 2, colour, -1)
        jpegs.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    nan2, nan3 = np.full((n, 2), np.nan), np.full((n, 3), np.nan)
    affine = np.zeros((n, 2, 3))
    affine[:, 0, 0] = affine[:, 1, 1] = 1 / scale
    affine[:, :, 2] = centre - (crop - 1) / 2 / scale[:, None]
    return {
        "row_id": [f"{dataset}/{split}/{seed}/{i}" for i in range(n)],
        "image_jpeg": jpegs,
        "crop_size": np.full(n, crop, np.int32),
        "joints_2d": joints,
        "visible": np.ones((n, 16), bool),
        "joints_3d": pose if has_3d else np.full((n, 16, 3), np.nan),
        "has_3d": np.full(n, has_3d),
        "crop_to_image": affine,
        "camera_f": np.full((n, 2), f),
        "camera_c": np.zeros((n, 2)),
        "camera_k": nan3,
        "camera_p": nan2,
        "head_size": np.full(n, np.nan, np.float32),
        "head_box": np.full((n, 4), np.nan),
        "dataset": [dataset] * n,
        "split": [split] * n,
        "subject": [f"S{i % 3}" for i in range(n)],
        "action": [("Walking", "Sitting")[i % 2] for i in range(n)],
        "subaction": [""] * n,
        "camera": [""] * n,
        "group": [
            ("studio_gs", "outdoor")[i % 2] if dataset == "synthetic_wild_test" else "" for i in range(n)
        ],
        "frame": np.arange(n),
        "source_path": [f"gen/{i}.jpg" for i in range(n)],
        "annotation_3d": ["annot3" if has_3d else ""] * n,
    }


def write_shard_set(folder: Path, n: int, *, has_3d: bool, shards: int = 2, seed: int = 0,
                    dataset: str = "synthetic_lab", split: str = "train",
                    corrupt_rows: tuple[int, ...] = ()) -> Path:  # fmt: skip
    """Write ``n`` rows as ``shards`` Parquet files under ``folder``; returns the folder. The rows at
    ``corrupt_rows`` get image bytes that do not decode."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = make_rows(n, has_3d=has_3d, seed=seed, dataset=dataset, split=split)
    for i in corrupt_rows:
        rows["image_jpeg"][i] = b"\xff\xd8\xff\xe0 not a JPEG"
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for k in range(shards):
        part = {key: value[bounds[k] : bounds[k + 1]] for key, value in rows.items()}
        pq.write_table(rows_to_table(part, dataset, split), folder / f"part-{k:05d}.parquet")
    return folder
