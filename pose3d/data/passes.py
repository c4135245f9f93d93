"""Which pass over a training set Ray Data is executing, and file orders seeded per pass.

Training reads each set in passes: every pass is a new execution of the same Ray Dataset (a new
epoch of its ``streaming_split``), and Ray Data counts the executions of a dataset in its
``DataContext`` (``_execution_idx``, 0 for the first; the count lives in the split coordinator and
reaches the tasks and actors of each execution). Ray's own file shuffle seeds each execution from
that count; here the pass number also offsets it by the passes a resumed run had already started,
so a resumed run reads its next passes in the order the uninterrupted run would have
(docs/conventions.md, Seeds). ``_execution_idx`` is private: ``tests/train/test_reproducible.py``
fails if a Ray upgrade stops counting executions this way.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.data import DataContext
from ray.data.datasource.file_based_datasource import FileShuffleConfig

from pose3d import seeds


def execution_index() -> int:
    """Ray Data's count of finished executions of the dataset being executed (0 outside one)."""
    return int(getattr(DataContext.get_current(), "_execution_idx", 0) or 0)


def current_pass(first_pass: int) -> int:
    """The pass being read: ``first_pass`` (the pass the dataset's first execution is) plus the
    executions before this one."""
    return first_pass + execution_index()


@dataclass
class PassSeededFileShuffle(FileShuffleConfig):
    """Ray Data's file shuffle with each pass's order a function of ``seed`` and the pass number
    (``first_pass`` + the execution index), so pass k has one order in every run with that seed."""

    first_pass: int = 0

    def get_seed(self, execution_idx: int = 0) -> int:
        return seeds.derive_int(int(self.seed or 0), self.first_pass + execution_idx) % (2**32)
