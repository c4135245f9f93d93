"""The depth regressor ("half hourglass"; docs/design.md, Network), fed by the last stack's merged
features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose3d.model.hourglass import FeatureMerge
from pose3d.model.residual import residual_chain

#: Number of [residuals, max-pool 2] steps: the output map shrinks by 2**4 = 16 before the linear layer.
DEPTH_DOWNSAMPLINGS = 4


class DepthRegressor(nn.Module):
    """Last stack's x + conv1x1(ll) + conv1x1(heatmaps) -> 4 x [``num_reg_modules`` residuals,
    max-pool 2] -> linear ((O/16)^2 * C -> J) normalized depths.

    The merge of the last stack lives here (not in the 2D module) because only the regressor reads
    it, so a stage without depth leaves no 2D parameter without a gradient.
    Inputs x, ll (B, C, O, O), heatmaps (B, J, O, O); returns (B, J) depth in the normalized output
    frame ([-1, 1] over the output map, root at 0; docs/conventions.md, Targets).
    """

    def __init__(self, channels: int, num_joints: int, num_reg_modules: int, output_size: int) -> None:
        super().__init__()
        if output_size % 2**DEPTH_DOWNSAMPLINGS:
            raise ValueError(f"DepthRegressor: output_size must be divisible by 16, got {output_size}")
        self.merge = FeatureMerge(channels, num_joints)
        self.blocks = nn.ModuleList(
            residual_chain(channels, num_reg_modules) for _ in range(DEPTH_DOWNSAMPLINGS)
        )
        side = output_size // 2**DEPTH_DOWNSAMPLINGS
        self.linear = nn.Linear(side * side * channels, num_joints)

    def forward(self, x: torch.Tensor, ll: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        x = self.merge(x, ll, heatmaps)
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
        # flatten (a reshape), not view: a channels_last tensor is not contiguous in NCHW order.
        return self.linear(torch.flatten(x, 1))
