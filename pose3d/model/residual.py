"""The pre-activation bottleneck residual block, the building brick of every part of the network."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """BN-ReLU-conv1x1(out/2)-BN-ReLU-conv3x3(out/2)-BN-ReLU-conv1x1(out), plus a skip
    (docs/design.md, Network).

    The skip is the identity when ``in_channels == out_channels`` and a 1x1 conv otherwise. Convs
    keep their bias, as in the authors' code (so parameter counts match theirs). Spatial size is kept.
    (B, in, H, W) -> (B, out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"Residual: out_channels must be even (bottleneck is out/2), got {out_channels}")
        mid = out_channels // 2
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, kernel_size=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel_size=3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, kernel_size=1),
        )
        self.skip: nn.Module = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The skip reads x before the branch's in-place ReLU: the first BN's output is a new tensor,
        # so x itself is never modified.
        return self.branch(x) + self.skip(x)


def residual_chain(channels: int, count: int) -> nn.Sequential:
    """``count`` Residual(channels, channels) blocks in a row (an empty chain is the identity)."""
    return nn.Sequential(*(Residual(channels, channels) for _ in range(count)))
