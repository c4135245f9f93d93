"""The network of Zhou et al. 2017: stacked hourglass 2D module + depth regressor (SPEC "Network")."""

from pose3d.model.depth import DepthRegressor
from pose3d.model.hourglass import FeatureMerge, Hourglass, HourglassStack
from pose3d.model.net import ModelConfig, PoseNet, PoseOutput, Stem, count_parameters
from pose3d.model.residual import Residual

__all__ = [
    "DepthRegressor",
    "FeatureMerge",
    "Hourglass",
    "HourglassStack",
    "ModelConfig",
    "PoseNet",
    "PoseOutput",
    "Residual",
    "Stem",
    "count_parameters",
]
