"""Rank 0's TensorBoard event files, in the run's folder STORAGE/NAME/tensorboard, so that
``tensorboard --logdir STORAGE`` shows every run (and a search's trials) side by side
(docs/design.md, Watching a run).

TensorBoard's writer wants a local folder: with remote storage (s3://, gs://) the events are
written locally and copied up at every checkpoint and at the end (``pose3d.storage.LocalMirror``).

May import: ``pose3d.storage``, torch's TensorBoard writer, TensorBoard's event reader.
"""

from __future__ import annotations

from typing import Any

from pose3d import storage

#: Metrics not written as scalars: the x axis itself, and Ray Train's checkpoint ranking.
SKIPPED = ("global_step", "checkpoint_score")


def folder(storage_path: str, run_name: str) -> str:
    """The TensorBoard folder of the run ``run_name`` under ``storage_path`` (local or URI)."""
    return storage.join(storage_path, run_name, "tensorboard")


def read_scalars(target: str, tags: tuple[str, ...] | None = None) -> dict[str, dict[int, float]]:
    """tag -> {global step: value} of the scalars in the local TensorBoard folder ``target``
    (``folder``), every tag or only ``tags``, over all its event files (a resumed run's too; a
    step written twice keeps the later value). Values are float32, as TensorBoard stores them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(target))
    acc.Reload()
    wanted = acc.Tags()["scalars"] if tags is None else tags
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in wanted}


class TensorBoard:
    """Scalar metrics of a run as TensorBoard events in ``target`` (a local folder or a URI)."""

    def __init__(self, target: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.mirror = storage.LocalMirror(target)
        self.writer = SummaryWriter(self.mirror.local)

    def write(self, metrics: dict[str, Any], step: int) -> None:
        """Every number in ``metrics`` (but SKIPPED) as a scalar at global step ``step``."""
        for k, v in metrics.items():
            if isinstance(v, int | float) and k not in SKIPPED:
                self.writer.add_scalar(k, v, step)

    def sync(self) -> None:
        """Flush the events and, with remote storage, copy them up."""
        self.writer.flush()
        self.mirror.sync()

    def close(self) -> None:
        self.sync()
        self.writer.close()
