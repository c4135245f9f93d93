"""The synthetic raw tree as one reader for the shard writer (``pose3d.schema.READERS``).

It runs the real readers on the sub-trees ``generate`` writes and labels their tasks with the
synthetic dataset names, so the shards land in ``synthetic_lab`` / ``synthetic_wild`` /
``synthetic_wild_test`` / ``synthetic_coco``:

=====  ==================  =============  =====================  ================
split  lab (h36m reader)   wild (mpii)    wild test (mpi3dhp)    coco (coco)
=====  ==================  =============  =====================  ================
train  S1, S5, S6, S7, S8  train          -                      train
val    -                   val            -                      val
test   S9, S11             -              TS1..TS6               -
=====  ==================  =============  =====================  ================

The street set ("coco") is opt-in: it is read only when ``sets`` names it (``DEFAULT_SETS`` leaves
it out, so a tree without it reads as before).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.readers import common
from data_prep.records import PersonSample, Quarantined, SourceTask

#: set name -> (dataset name, sub-folder, reader module, splits it has)
SETS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "lab": ("synthetic_lab", "h36m", "data_prep.readers.h36m", ("train", "test")),
    "wild": ("synthetic_wild", "mpii", "data_prep.readers.mpii", ("train", "val")),
    "wild_test": ("synthetic_wild_test", "3dhp", "data_prep.readers.mpi3dhp", ("test",)),
    "coco": ("synthetic_coco", "coco", "data_prep.readers.coco", ("train", "val")),
}
#: The sets read when ``sets`` is not given.
DEFAULT_SETS = ("lab", "wild", "wild_test")
_WRAPPED = "synthetic_inner"


def list_tasks(raw_root: str, split: str, sets: Any = None, **options: Any) -> list[SourceTask]:
    """The tasks of every synthetic set that has ``split`` (``sets``: a subset of "lab", "wild",
    "wild_test", "coco", as a list or comma-separated; default ``DEFAULT_SETS``; ``options`` go to
    every inner reader that takes them, e.g. ``layout``). Raises FileNotFoundError when a wanted
    sub-tree is missing."""
    chosen = common.list_option(sets) or list(DEFAULT_SETS)
    unknown = set(chosen) - set(SETS)
    if unknown:
        raise ValueError(f"synthetic: unknown sets {sorted(unknown)} ({', '.join(SETS)})")
    tasks = []
    for name in chosen:
        dataset, folder, module_name, splits = SETS[name]
        if split not in splits:
            continue
        root = Path(raw_root) / folder
        if not root.is_dir():
            raise FileNotFoundError(f"synthetic: {root} is missing; run data_prep.synthetic.generate first")
        module = importlib.import_module(module_name)
        accepted = inspect.signature(module.list_tasks).parameters
        wanted = {k: v for k, v in options.items() if k in accepted}
        for inner in interleave_subjects(module.list_tasks(str(root), split, **wanted)):
            payload = {_WRAPPED: {"module": module_name, "dataset": inner.dataset, "raw_root": inner.raw_root,
                                  "payload": inner.payload}}  # fmt: skip
            tasks.append(SourceTask(dataset, split, inner.task_id, raw_root, payload))
    return tasks


def interleave_subjects(tasks: list[SourceTask]) -> list[SourceTask]:
    """``tasks`` taken one subject at a time, in turn (each subject's tasks keep their order;
    tasks without a ``subject`` in their payload form one group).

    Why: the writer packs small tasks, in task order, into shards of ``--shard-rows`` rows
    (data_prep/writer.py), and the synthetic lab set's tasks are a few frames each, listed subject
    by subject, so its ~1,000 training rows would become one or two shards of one or two subjects
    each; a file shuffle over two files and a 256-row buffer then give batches of about 3.5 of the
    5 subjects instead of 4.9. Interleaved, every packed shard holds every subject. Real datasets
    (minutes of video per task) write many shards per subject, where the file shuffle mixes them."""
    groups: dict[Any, list[SourceTask]] = {}
    for task in tasks:
        groups.setdefault(task.payload.get("subject"), []).append(task)
    rounds = max((len(g) for g in groups.values()), default=0)
    return [g[i] for i in range(rounds) for g in groups.values() if i < len(g)]


def read_task(task: SourceTask) -> Iterator[PersonSample | Quarantined]:
    """The inner reader's samples of the task, as they are."""
    wrapped = task.payload[_WRAPPED]
    inner = SourceTask(wrapped["dataset"], task.split, task.task_id, wrapped["raw_root"], wrapped["payload"])
    yield from importlib.import_module(wrapped["module"]).read_task(inner)
