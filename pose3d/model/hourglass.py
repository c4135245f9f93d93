"""The 2D module's parts: the recursive hourglass, one stack (hourglass -> heatmaps) and the
feature merge that feeds the next stack (docs/design.md, Network)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose3d.model.residual import residual_chain


class Hourglass(nn.Module):
    """Recursive hourglass of ``levels`` levels, ``num_modules`` residuals at each place.

    At each level: an upper branch (residuals at this resolution) and a lower branch (max-pool 2,
    residuals, the next level or, at the bottom, residuals, residuals, nearest upsample x2), added.
    (B, C, H, W) -> (B, C, H, W); H and W must be divisible by 2**levels.
    """

    def __init__(self, levels: int, channels: int, num_modules: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"Hourglass: levels must be >= 1, got {levels}")
        self.upper = residual_chain(channels, num_modules)
        self.down = residual_chain(channels, num_modules)
        self.inner: nn.Module = (
            Hourglass(levels - 1, channels, num_modules)
            if levels > 1
            else residual_chain(channels, num_modules)
        )
        self.up = residual_chain(channels, num_modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.upper(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class HourglassStack(nn.Module):
    """One stack: hourglass -> ``num_modules`` residuals -> 1x1 conv + BN + ReLU (ll) -> 1x1 conv to
    one heatmap per joint.

    (B, C, O, O) -> (ll (B, C, O, O), heatmaps (B, J, O, O)).
    """

    def __init__(self, channels: int, num_joints: int, num_modules: int, levels: int = 4) -> None:
        super().__init__()
        self.hourglass = Hourglass(levels, channels, num_modules)
        self.residuals = residual_chain(channels, num_modules)
        self.features = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.heatmaps = nn.Conv2d(channels, num_joints, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ll = self.features(self.residuals(self.hourglass(x)))
        return ll, self.heatmaps(ll)


class FeatureMerge(nn.Module):
    """x + conv1x1(ll) + conv1x1(heatmaps): a stack's input plus its features and its heatmaps mapped
    back to C channels. (B, C, O, O), (B, C, O, O), (B, J, O, O) -> (B, C, O, O)."""

    def __init__(self, channels: int, num_joints: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(channels, channels, kernel_size=1)
        self.heatmaps = nn.Conv2d(num_joints, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, ll: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        return x + self.features(ll) + self.heatmaps(heatmaps)
