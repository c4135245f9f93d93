"""Network outputs -> joints: heatmaps to 2D (sub-pixel) and 2D + normalized depth to 3D.

Works on numpy arrays or torch tensors converted by the caller; pixel convention of
``pose3d.geometry`` (pixel centres at integers), so no +0.5 of the authors' 1-based code is needed.
"""

from __future__ import annotations

import numpy as np

from pose3d import geometry, skeleton


def heatmaps_to_joints(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax with a quarter-pixel shift toward the higher neighbour, per axis (docs/conventions.md,
    Decoding).

    heatmaps (B, J, H, W). Returns joints (B, J, 2) in output px (x, y) and the peak values (B, J).
    """
    hm = np.asarray(heatmaps, np.float32)
    b, j, h, w = hm.shape
    flat = hm.reshape(b, j, h * w)
    idx = flat.argmax(-1)
    peak = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    y, x = np.divmod(idx, w)
    bi, ji = np.meshgrid(np.arange(b), np.arange(j), indexing="ij")
    xl, xr = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
    yu, yd = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
    dx = np.sign(hm[bi, ji, y, xr] - hm[bi, ji, y, xl]) * ((x > 0) & (x < w - 1))
    dy = np.sign(hm[bi, ji, yd, x] - hm[bi, ji, yu, x]) * ((y > 0) & (y < h - 1))
    joints = np.stack([x + 0.25 * dx, y + 0.25 * dy], axis=-1).astype(np.float64)
    return joints, peak


def depth_to_px(depth_norm: np.ndarray, out_size: int) -> np.ndarray:
    """Normalized depth (..., 16) in [-1, 1] -> output px: (ŷ + 1) / 2 · out_size."""
    return (np.asarray(depth_norm, np.float64) + 1.0) / 2.0 * out_size


def to_3d_px(joints_out: np.ndarray, depth_norm: np.ndarray, out_size: int) -> np.ndarray:
    """2D output px (B, 16, 2) + normalized depth (B, 16) -> (B, 16, 3) in output px units."""
    return np.concatenate(
        [np.asarray(joints_out, np.float64), depth_to_px(depth_norm, out_size)[..., None]], -1
    )


def to_3d_mm(
    joints_out: np.ndarray,
    depth_norm: np.ndarray,
    out_size: int,
    root_mm: np.ndarray | None = None,
    bone_sum_mm: float = skeleton.CANONICAL_BONE_SUM_MM,
) -> np.ndarray:
    """2D + depth -> 3D in mm, as the paper's evaluation: the pose in output px is scaled so its
    14 bone lengths sum to ``bone_sum_mm``, then its root is moved to ``root_mm`` (B, 3) (or the
    origin). Returns (B, 16, 3) mm."""
    pose = geometry.rescale_to_canonical(to_3d_px(joints_out, depth_norm, out_size), bone_sum_mm)
    pose = geometry.root_align(pose)
    return pose if root_mm is None else pose + np.asarray(root_mm, np.float64)[:, None, :]
