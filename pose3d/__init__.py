"""pose3d: weakly-supervised 3D human pose estimation (Zhou et al., ICCV 2017) trained on Ray."""

__version__ = "0.1.0"
