"""The seeds of a run's random streams, each derived from ``train.seed`` and what the stream is,
so the streams are independent of each other and the same in every run with that seed
(docs/conventions.md, Seeds). Initial weights use ``train.seed`` itself (``torch.manual_seed``)."""

from __future__ import annotations

from pose3d import seeds
from pose3d.train.config import SOURCE_SIDES

# What a seed is for: the first part after the run's seed and the side, so no two streams share one.
_FILE_ORDER, _AUGMENTATION, _LOCAL_SHUFFLE = 1, 2, 3


def _side(side: str) -> int:
    return SOURCE_SIDES.index(side)


def file_order_seed(seed: int, side: str, source: int, repeat: int) -> int:
    """Seed of a source's file order (``pose3d.data.passes.PassSeededFileShuffle``, which adds the
    pass); ``repeat``: which of the source's ``data.epochs_per_pass`` reads within a pass."""
    return seeds.derive_int(seed, _side(side), _FILE_ORDER, source, repeat)


def augmentation_seed(seed: int, side: str) -> int:
    """Seed of a side's augmentation (``BatchPreprocessor``, which adds pass, source, repeat, row)."""
    return seeds.derive_int(seed, _side(side), _AUGMENTATION)


def local_shuffle_seed(seed: int, side: str, pass_index: int, rank: int) -> int:
    """Seed of a worker's local shuffle buffer for one pass of a side (below 2^32, as Ray wants)."""
    return seeds.derive_int(seed, _side(side), _LOCAL_SHUFFLE, pass_index, rank) % (2**32)
