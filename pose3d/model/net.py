"""The whole network: stem -> stacked hourglasses (2D heatmaps) -> depth regressor (docs/design.md,
Network)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pose3d import skeleton
from pose3d.model.depth import DEPTH_DOWNSAMPLINGS, DepthRegressor
from pose3d.model.hourglass import FeatureMerge, HourglassStack
from pose3d.model.residual import Residual

#: The stem's stride (conv 7x7 stride 2, then max-pool 2): input size / output size.
STEM_STRIDE = 4
#: Levels of every hourglass (64 -> 4 at the paper's output size).
HOURGLASS_LEVELS = 4


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes. Defaults are the paper's (docs/design.md, Network); ``small()`` is a CPU-friendly one.

    input_size, output_size: square input image and heatmap sides in px (input = 4 x output).
    num_features: F, channels of the stacks and the regressor. num_modules: residuals at each place
    of a stack; num_reg_modules: residuals before each of the regressor's 4 max-pools.
    """

    num_stacks: int = 2
    num_modules: int = 2
    num_features: int = 256
    num_reg_modules: int = 2
    input_size: int = 256
    output_size: int = 64
    num_joints: int = skeleton.NUM_JOINTS

    def __post_init__(self) -> None:
        for name in ("num_stacks", "num_modules", "num_features", "num_reg_modules", "num_joints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.num_features % 2:
            raise ValueError(
                f"ModelConfig.num_features must be even (bottleneck F/2), got {self.num_features}"
            )
        if self.input_size != STEM_STRIDE * self.output_size:
            raise ValueError(
                f"ModelConfig.input_size ({self.input_size}) must be {STEM_STRIDE} x output_size "
                f"({self.output_size}): the stem's stride is {STEM_STRIDE}"
            )
        divisor = 2 ** max(HOURGLASS_LEVELS, DEPTH_DOWNSAMPLINGS)
        if self.output_size < divisor or self.output_size % divisor:
            raise ValueError(
                f"ModelConfig.output_size ({self.output_size}) must be a positive multiple of {divisor}: "
                f"the hourglass and the depth regressor halve it {HOURGLASS_LEVELS} times"
            )

    @property
    def stride(self) -> int:
        """Input px per output px."""
        return self.input_size // self.output_size

    @classmethod
    def paper(cls) -> ModelConfig:
        """The paper's network: 2 stacks, 2 modules, F = 256, 256 -> 64."""
        return cls()

    @classmethod
    def small(cls) -> ModelConfig:
        """A CPU-friendly network for demos and tests: 1 stack, 1 module, F = 64, 128 -> 32."""
        return cls(
            num_stacks=1, num_modules=1, num_features=64, num_reg_modules=1, input_size=128, output_size=32
        )


class PoseOutput(NamedTuple):
    """What ``PoseNet`` returns, always float32 (also under autocast, so losses run in fp32).

    heatmaps: one (B, J, O, O) tensor per stack, last stack last (intermediate supervision uses all).
    depth: (B, J) normalized depth ([-1, 1] over the output map, root at 0), or None when the
    forward ran without the regressor.
    """

    heatmaps: list[torch.Tensor]
    depth: torch.Tensor | None


class Stem(nn.Module):
    """conv 7x7 s2 (3 -> 64) + BN + ReLU -> Residual(64, 128) -> max-pool 2 -> Residual(128, 128)
    -> Residual(128, F). (B, 3, I, I) -> (B, F, I/4, I/4)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.before_pool = Residual(64, 128)
        self.after_pool = nn.Sequential(Residual(128, 128), Residual(128, num_features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.after_pool(F.max_pool2d(self.before_pool(self.conv(images)), 2))


class PoseNet(nn.Module):
    """Stacked hourglass 2D module + depth regressor (Zhou et al. 2017).

    Submodules: ``stem``, ``stacks`` (one ``HourglassStack`` each), ``merges`` (the feature merge
    between consecutive stacks), ``depth_head`` (the regressor, including the merge after the last
    stack). ``hourglass_parameters()`` are stem + stacks + merges, ``depth_parameters()`` the
    regressor; together they are all the parameters, each once.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        f, j = config.num_features, config.num_joints
        self.stem = Stem(f)
        self.stacks = nn.ModuleList(
            HourglassStack(f, j, config.num_modules, HOURGLASS_LEVELS) for _ in range(config.num_stacks)
        )
        self.merges = nn.ModuleList(FeatureMerge(f, j) for _ in range(config.num_stacks - 1))
        self.depth_head = DepthRegressor(f, j, config.num_reg_modules, config.output_size)

    def hourglass_parameters(self) -> Iterator[nn.Parameter]:
        """The 2D module's parameters (what stage 1 trains)."""
        for module in (self.stem, self.stacks, self.merges):
            yield from module.parameters()

    def depth_parameters(self) -> Iterator[nn.Parameter]:
        """The depth regressor's parameters (idle in stage 1)."""
        return self.depth_head.parameters()

    def forward(self, images: torch.Tensor, with_depth: bool = True) -> PoseOutput:
        """images (B, 3, I, I) float RGB in [0, 1] (the authors' /256). ``with_depth=False`` skips
        the regressor (stage 1: every parameter that runs then gets a gradient from the heatmaps)."""
        size = self.config.input_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (size, size):
            raise ValueError(
                f"PoseNet expects images of shape (B, 3, {size}, {size}), got {tuple(images.shape)}"
            )
        x = self.stem(images)
        heatmaps: list[torch.Tensor] = []
        for i, stack in enumerate(self.stacks):
            ll, maps = stack(x)
            heatmaps.append(maps)
            if i < len(self.merges):
                x = self.merges[i](x, ll, maps)
        depth = self.depth_head(x, ll, maps).float() if with_depth else None
        return PoseOutput([m.float() for m in heatmaps], depth)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())
