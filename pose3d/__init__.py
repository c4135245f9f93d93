"""pose3d: weakly-supervised 3D human pose estimation (Zhou et al., ICCV 2017) trained on Ray.

Parts, bottom to top (docs/design.md, Parts and layers): facts (``skeleton``, ``schema``,
``storage``), math (``geometry``, ``image``, ``targets``, ``decode``, ``losses``, ``metrics``),
``model``, ``data``, ``viz``, ``infra``, ``eval``, ``train``, and ``cli`` on top. A part imports only
parts below it; ``make test`` checks that with import-linter.
"""

__version__ = "0.1.0"
