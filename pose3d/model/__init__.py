"""The network of Zhou et al. 2017: a stacked-hourglass 2D module and a depth regressor on its
features (``net.PoseNet``), and reading/writing it in a checkpoint folder (``io.load_model``).
"""

from pose3d.model.depth import DepthRegressor
from pose3d.model.hourglass import FeatureMerge, Hourglass, HourglassStack
from pose3d.model.io import load_model, save_model
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
    "load_model",
    "save_model",
]
