"""Training targets from labels, vectorized over a batch (docs/conventions.md, Targets).

Coordinates follow ``pose3d.geometry``'s pixel convention; every size here is the output map's.
Pure numpy, except ``render_heatmaps_torch``, which draws the heatmaps on the training worker's
device from the same formula as the numpy ``render_heatmaps`` (``_gaussian_maps``).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from pose3d import skeleton

if TYPE_CHECKING:
    import torch

#: Heatmap Gaussian σ in output pixels, at any output size (docs/conventions.md, Targets).
HEATMAP_SIGMA = 1.0


def inside_map(joints_out: Any, out_size: int) -> Any:
    """Whether each joint lies on the output map, [-0.5, out_size - 0.5] on both axes (edges
    included). joints_out (..., 2) output px, numpy or torch; returns (...) bool of the same kind."""
    return ((joints_out >= -0.5) & (joints_out <= out_size - 0.5)).all(-1)


def _gaussian_maps(xp: ModuleType, grid: Any, joints_out: Any, keep: Any, sigma: float) -> Any:
    """The one definition of the heatmap target, for numpy and torch alike (``xp``: the module).

    grid (O,) float32 pixel centres 0..O-1; joints_out (B, J, 2) float32 output px; keep (B, J)
    bool. Returns (B, J, O, O) float32: exp(-((x - jx)² + (y - jy)²) / 2σ²) where ``keep``, else 0.
    """
    # Separable: two (B, J, O) factors and one outer product, not O² exponentials per map. The
    # factors are selected, not multiplied by a mask, so a NaN joint cannot reach a zero map.
    keep = keep[..., None]
    gx = xp.where(keep, xp.exp(-((grid - joints_out[..., 0:1]) ** 2) / (2 * sigma**2)), 0.0)  # (B, J, O)
    gy = xp.where(keep, xp.exp(-((grid - joints_out[..., 1:2]) ** 2) / (2 * sigma**2)), 0.0)  # (B, J, O)
    return gy[..., :, None] * gx[..., None, :]  # (B, J, O, O): row y, column x


def render_heatmaps(
    joints_out: np.ndarray, visible: np.ndarray, out_size: int, sigma: float = HEATMAP_SIGMA
) -> np.ndarray:
    """Gaussian heatmaps, peak 1 at each visible joint inside the map; zero maps otherwise.

    joints_out (B, J, 2) output px; visible (B, J) bool. Returns (B, J, out_size, out_size) float32.
    Training draws the same maps on its device (``render_heatmaps_torch``).
    """
    joints = np.asarray(joints_out, np.float32)
    keep = np.asarray(visible, bool) & inside_map(joints, out_size)
    return _gaussian_maps(np, np.arange(out_size, dtype=np.float32), joints, keep, sigma)


def render_heatmaps_torch(
    joints_out: torch.Tensor, visible: torch.Tensor, out_size: int, sigma: float = HEATMAP_SIGMA
) -> torch.Tensor:
    """``render_heatmaps`` in torch, on the device of ``joints_out`` (the training step's targets).

    joints_out (B, J, 2) output px, any float dtype; visible (B, J) bool. Returns
    (B, J, out_size, out_size) float32, equal to ``render_heatmaps`` within float rounding.
    """
    # Imported here: the CPU preprocessing actors use this module without torch.
    import torch

    joints = joints_out.to(torch.float32)
    keep = visible.to(torch.bool) & inside_map(joints, out_size)
    grid = torch.arange(out_size, dtype=torch.float32, device=joints.device)
    return _gaussian_maps(torch, grid, joints, keep, sigma)


def pixels_per_mm(joints_2d: np.ndarray, joints_3d: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Scale that makes the 3D pose's xy bone lengths match the image's (the authors' depth scale).

    joints_2d (B, 16, 2) px; joints_3d (B, 16, 3) mm; visible (B, 16) bool. Bones with an
    unannotated end are left out. Returns (B,) px per mm (NaN where no bone is usable).
    """
    joints_2d, joints_3d = np.asarray(joints_2d, np.float64), np.asarray(joints_3d, np.float64)
    b = skeleton.BONE_ARRAY
    valid = np.asarray(visible, bool)[:, b[:, 0]] & np.asarray(visible, bool)[:, b[:, 1]]
    len2d = np.linalg.norm(joints_2d[:, b[:, 1]] - joints_2d[:, b[:, 0]], axis=-1)
    len3d = np.linalg.norm(joints_3d[:, b[:, 1], :2] - joints_3d[:, b[:, 0], :2], axis=-1)
    s2, s3 = (len2d * valid).sum(-1), (len3d * valid).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s3 > 0, s2 / s3, np.nan)


def depth_targets(joints_3d: np.ndarray, px_per_mm: np.ndarray, out_size: int) -> np.ndarray:
    """Normalized depth targets (B, 16) in [-1, 1] over the output map (docs/conventions.md, Targets).

    joints_3d (B, 16, 3) camera mm; px_per_mm (B,) from ``pixels_per_mm`` (output px). The root
    sits at the map's centre depth: z_px = (z - z_root) * s + out/2, z_norm = z_px / out * 2 - 1.
    """
    rel = joints_3d[..., 2] - joints_3d[..., skeleton.ROOT : skeleton.ROOT + 1, 2]
    return (rel * px_per_mm[:, None] * 2.0 / out_size).astype(np.float32)


def normalize_xy(xy_out: np.ndarray, out_size: int) -> np.ndarray:
    """Output px (..., 2) -> the network's normalized frame [-1, 1] (the geometric loss's units)."""
    return np.asarray(xy_out) * (2.0 / out_size) - 1.0
