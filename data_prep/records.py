"""The contract between dataset readers and the shard writer.

A reader module (``data_prep.readers.<name>``) exposes:

- ``list_tasks(raw_root: str, split: str, **options) -> list[SourceTask]``: the units of parallel
  work (one video, one sequence, one chunk of an annotation file), in a deterministic order;
- ``read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]``: every person of that
  unit, in a deterministic order. A reader never raises for one bad record: it yields
  ``Quarantined`` with the reason, and the writer counts and reports it.

The writer crops, encodes and validates (non-finite labels, person outside the image) and writes
the shard rows (``pose3d.schema``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SourceTask:
    """One unit of work. ``task_id`` is unique within (dataset, split), stable across runs, and
    safe as a file name: the writer names its shards and its done-markers after it."""

    dataset: str
    split: str
    task_id: str
    raw_root: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Camera:
    """Intrinsics in px; distortion as Human3.6M (``pose3d.geometry.project``). NaN = unknown."""

    f: np.ndarray  # (2,)
    c: np.ndarray  # (2,)
    k: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,)
    p: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,)

    @staticmethod
    def unknown() -> Camera:
        return Camera(np.full(2, np.nan), np.full(2, np.nan), np.full(3, np.nan), np.full(2, np.nan))


@dataclass
class PersonSample:
    """One person in one source image, labels already mapped to the 16 joints (``skeleton``).

    image: (H, W, 3) uint8 BGR (OpenCV), the whole source image.
    joints_2d: (16, 2) source-image px (pixel centres at integers, 0-based).
    visible: (16,) bool, annotated.
    joints_3d: (16, 3) camera mm, or None (2D-only datasets).
    center: (2,) source px, person box centre; box_size: source px, side of the square person box.
    head_box: (4,) source px x1, y1, x2, y2, or None; head size = 0.6 x its diagonal.
    """

    image: np.ndarray
    joints_2d: np.ndarray
    visible: np.ndarray
    center: np.ndarray
    box_size: float
    source_path: str
    key: str  # unique within the task, stable: becomes part of row_id
    joints_3d: np.ndarray | None = None
    camera: Camera | None = None
    head_box: np.ndarray | None = None
    subject: str = ""
    action: str = ""
    subaction: str = ""
    camera_id: str = ""
    group: str = ""
    frame: int = -1
    annotation_3d: str = ""


@dataclass
class Quarantined:
    """A record that could not become a row, with the reason (goes to the quarantine report)."""

    source_path: str
    key: str
    reason: str
