"""The shard writer: a Ray Data job that turns a reader's tasks into Parquet shards.

``ray.data.from_items(tasks)`` -> ``map_batches(batch_size=1)``: each call runs one task from start to
end (read -> validate -> crop -> JPEG) and returns a one-row summary. Output layout under ``OUT``
(a local path or an object-store URI; written through pyarrow filesystems)::

    OUT/<dataset>/<split>/<task_id>-<k:05d>.parquet   the shards (see "Packing")
    OUT/<dataset>/_done/<split>/<task_id>.json        done-marker of the shards named after it, written last
    OUT/<dataset>/_quarantine/<split>/<task_id>.jsonl records that could not become rows
    OUT/<dataset>/_tmp/                               staging; never read
    OUT/<dataset>/_prep.json                          the parameters the shards were made with
    OUT/<dataset>/prep_summary.json, quarantine.jsonl the run's summary and the merged quarantine

Packing (``--shard-rows N``): a task that yields N rows or more writes shards of its own (N rows
each, the last one fewer) and commits them itself. A smaller task hands its rows back to the job's
driver (``_Packer``), which packs whole small tasks, in task order within each dataset/split, into
shards of at most N rows: one shard, named after its first task, and one marker (also named after
that task) listing every task the shard holds. Row counts are known only once a task has run, so
packs form as results arrive, not before dispatch; a task's rows are never split between shards,
so each task is done, or not, as a whole.

Atomic: shards are staged under ``_tmp``, then moved into place, then the marker is written; shard
readers skip ``_``-prefixed folders, so a crash leaves nothing half-written that they would take.
Resumable: a task is done when a marker records it; a re-run skips done tasks and redoes the others
from scratch (the shards named after them and their quarantine files are removed first: a shard
whose marker was never written is named after a task that is not done). Deterministic: the same
input gives byte-identical shards (fixed JPEG and Parquet parameters, no timestamps; packs follow
task order, so a resumed run cuts the same packs as an uninterrupted one).

Markers and quarantine files live per split because a task id is unique only within its split;
quarantine files stay per task whether or not the task's rows were packed.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import pickle
import re
import time
import traceback
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data_prep import crop
from data_prep.records import PersonSample, Quarantined, SourceTask
from pose3d import schema, storage
from pose3d.infra.stall import StallWatchdog

log = logging.getLogger(__name__)

#: Fault injection for tests: crash the job once this many tasks are done (see ``process_task``).
CRASH_ENV = "POSE3D_PREP_CRASH_AFTER_TASKS"

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@,-]*$")
_SHARD_NAME = re.compile(r"^(?P<task>.+)-(?P<k>\d{5})\.parquet$")
_STRING_COLUMNS = [n for n, (t, _) in schema.COLUMNS.items() if str(t) == "string"]

ReadTask = Callable[[SourceTask], Iterable[PersonSample | Quarantined]]
ListTasks = Callable[..., list[SourceTask]]
ReaderSpec = str | ModuleType | tuple[ListTasks, ReadTask]


class InjectedCrash(RuntimeError):
    """Raised by the fault injection; deliberately not quarantined: it fails the whole job."""


class ReaderUnavailable(ImportError):
    """The named reader module is not installed (yet)."""


class PrepMismatch(ValueError):
    """The output folder holds shards made with other parameters."""


@dataclass(frozen=True)
class WriterConfig:
    """Crop/encode parameters and the shard size. Output-defining: stored in ``_prep.json``."""

    crop_size: int = schema.DEFAULT_CROP_SIZE
    jpeg_quality: int = 90
    shard_rows: int = 1000

    def __post_init__(self) -> None:
        self.crop_config()  # validates
        if self.shard_rows < 1:
            raise ValueError(f"shard_rows must be positive, got {self.shard_rows}")

    def crop_config(self) -> crop.CropConfig:
        return crop.CropConfig(self.crop_size, self.jpeg_quality)


@dataclass
class TaskResult:
    """What one task did (the job's per-task summary row)."""

    position: int
    dataset: str
    split: str
    task_id: str
    rows: int = 0
    shards: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failed: bool = False
    error: str = ""
    seconds: float = 0.0
    #: A small task's rows, left to the packer (``process_task(pack=True)``): an Arrow IPC stream,
    #: b"" for no rows; None when the task wrote its own shards or failed.
    pending: bytes | None = None


# --- the output layout -------------------------------------------------------------------------


class Layout:
    """Paths of one output root (``OUT``), within its pyarrow filesystem."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.fs, self.root = storage.resolve(out)

    def dataset_dir(self, dataset: str) -> str:
        return f"{self.root}/{dataset}"

    def split_dir(self, dataset: str, split: str) -> str:
        return f"{self.root}/{dataset}/{split}"

    def shard(self, task: SourceTask, k: int) -> str:
        return self.shard_path(task.dataset, task.split, task.task_id, k)

    def shard_path(self, dataset: str, split: str, task_id: str, k: int) -> str:
        return f"{self.split_dir(dataset, split)}/{task_id}-{k:05d}.parquet"

    def done_dir(self, dataset: str, split: str) -> str:
        return f"{self.root}/{dataset}/_done/{split}"

    def marker(self, task: SourceTask) -> str:
        return self.marker_path(task.dataset, task.split, task.task_id)

    def marker_path(self, dataset: str, split: str, task_id: str) -> str:
        return f"{self.done_dir(dataset, split)}/{task_id}.json"

    def quarantine_dir(self, dataset: str, split: str) -> str:
        return f"{self.root}/{dataset}/_quarantine/{split}"

    def quarantine(self, task: SourceTask) -> str:
        return f"{self.quarantine_dir(task.dataset, task.split)}/{task.task_id}.jsonl"

    def tmp_dir(self, dataset: str) -> str:
        return f"{self.root}/{dataset}/_tmp"

    def params(self, dataset: str) -> str:
        return f"{self.root}/{dataset}/_prep.json"

    def summary(self, dataset: str) -> str:
        return f"{self.root}/{dataset}/prep_summary.json"

    def merged_quarantine(self, dataset: str) -> str:
        return f"{self.root}/{dataset}/quarantine.jsonl"

    def list_files(self, folder: str, recursive: bool = False) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(folder, allow_not_found=True, recursive=recursive)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def put(self, path: str, data: bytes, staging: str) -> None:
        """Write ``data`` to ``path`` atomically: into ``staging`` first, then moved into place."""
        self.fs.create_dir(staging, recursive=True)
        tmp = f"{staging}/{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as stream:
            stream.write(data)
        self.move(tmp, path)

    def move(self, src: str, dst: str) -> None:
        self.fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        self.fs.move(src, dst)

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_text(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        with self.fs.open_input_stream(path) as stream:
            return stream.read().decode()

    def remove_dir(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(path)


# --- one task (runs inside a Ray Data task; also callable directly) --------------------------


def _rows_table(rows: list[dict[str, Any]], task: SourceTask) -> pa.Table:
    return schema.rows_to_table(crop.rows_to_columns(rows), task.dataset, task.split)


def _write_table(layout: Layout, table: pa.Table, path: str) -> None:
    # Fixed parameters (and no timestamps in Parquet) make the bytes reproducible. JPEG bytes do not
    # compress, the labels do. One row group per shard.
    pq.write_table(
        table,
        path,
        filesystem=layout.fs,
        compression={name: ("none" if name == "image_jpeg" else "zstd") for name in schema.COLUMNS},
        use_dictionary=_STRING_COLUMNS,
        row_group_size=max(1, len(table)),
        write_statistics=False,
    )


def _table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue().to_pybytes()


def _ipc_to_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _quarantine_entry(
    task: SourceTask, source_path: str, key: str, reason: str, **extra: str
) -> dict[str, str]:
    return {
        "dataset": task.dataset,
        "split": task.split,
        "task_id": task.task_id,
        "source_path": source_path,
        "key": key,
        "reason": reason,
        **extra,
    }


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


def _jsonl(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode()


def _wait_and_crash(layout: Layout, task: SourceTask, crash_after: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    done_root = f"{layout.dataset_dir(task.dataset)}/_done"
    while time.monotonic() < deadline:
        infos = [i for i in layout.list_files(done_root, recursive=True) if i.base_name.endswith(".json")]
        # Count tasks, not files: a packed shard's one marker records several.
        done = sum(len(_tasks_of(i.base_name, json.loads(layout.read_text(i.path) or "{}"))) for i in infos)
        if done >= crash_after:
            break
        time.sleep(0.05)
    raise InjectedCrash(
        f"{CRASH_ENV}={crash_after}: crashing in task {task.task_id} before its shards are moved"
    )


def process_task(
    task: SourceTask,
    read_task: ReadTask,
    out: str,
    config: WriterConfig,
    *,
    position: int = 0,
    crash_after: int | None = None,
    pack: bool = False,
) -> TaskResult:
    """Run one task: read, validate, crop, encode, write its shards, quarantine file and marker.

    With ``pack``, a task that yields fewer than ``config.shard_rows`` rows writes only its
    quarantine file and returns its rows in ``TaskResult.pending`` for the packer (``_Packer``),
    which writes its shard and marker; a larger task commits itself either way.

    Never raises for bad data: a record that cannot become a row is quarantined; a task that raises
    is quarantined as a whole (``task failed``), its staged files removed, and left without a
    marker so the next run retries it. With ``crash_after`` (fault injection), a task that commits
    itself at ``position >= crash_after`` stages its shards, waits until ``crash_after`` tasks of its
    dataset are marked done, then raises InjectedCrash (packed tasks: see ``_Packer``).
    """
    import cv2

    cv2.setNumThreads(1)  # one Ray task per CPU already
    start = time.perf_counter()
    layout = Layout(out)
    result = TaskResult(position, task.dataset, task.split, task.task_id)
    staging = f"{layout.tmp_dir(task.dataset)}/{uuid.uuid4().hex}"
    crop_config = config.crop_config()
    quarantine: list[dict[str, str]] = []
    staged: list[tuple[str, str]] = []  # (staging path, final path)
    try:
        layout.fs.create_dir(staging, recursive=True)
        rows: list[dict[str, Any]] = []
        keys: set[str] = set()

        def flush() -> None:
            final = layout.shard(task, len(staged))
            tmp = f"{staging}/{final.rsplit('/', 1)[1]}"
            _write_table(layout, _rows_table(rows, task), tmp)
            staged.append((tmp, final))
            result.rows += len(rows)
            rows.clear()

        for record in read_task(task):
            if isinstance(record, Quarantined):
                quarantine.append(_quarantine_entry(task, record.source_path, record.key, record.reason))
                continue
            if not isinstance(record, PersonSample):
                raise TypeError(f"read_task yielded {type(record).__name__}, not PersonSample or Quarantined")
            if record.key in keys:
                reason = f"{crop.DUPLICATE_KEY}: {record.key!r} appears twice in the task"
                quarantine.append(_quarantine_entry(task, record.source_path, record.key, reason))
                continue
            keys.add(record.key)
            row = crop.make_row(record, task, crop_config)
            if isinstance(row, str):
                quarantine.append(_quarantine_entry(task, record.source_path, record.key, row))
                continue
            rows.append(row)
            if len(rows) == config.shard_rows:
                flush()
        # Fewer rows than one shard holds (nothing flushed): the packer places them.
        small = pack and not staged
        if rows and not small:
            flush()
        if crash_after is not None and position >= crash_after and not small:
            _wait_and_crash(layout, task, crash_after)
        # Before any shard holding the task's rows is in place (here or by the packer): a marker
        # implies its tasks' quarantine files are complete.
        if quarantine:
            layout.put(layout.quarantine(task), _jsonl(quarantine), staging)
        result.quarantined = len(quarantine)
        result.reasons = dict(sorted(Counter(crop.reason_category(q["reason"]) for q in quarantine).items()))
        if small:
            result.rows = len(rows)
            result.pending = _table_to_ipc(_rows_table(rows, task)) if rows else b""
        else:
            for tmp, final in staged:
                layout.move(tmp, final)
            result.shards = len(staged)
            marker = {
                "dataset": task.dataset,
                "split": task.split,
                "task_id": task.task_id,
                "rows": result.rows,
                "shards": [final.rsplit("/", 1)[1] for _, final in staged],
                "quarantined": result.quarantined,
                "reasons": result.reasons,
            }
            layout.put(layout.marker(task), _json(marker), staging)
    except InjectedCrash:
        raise  # like a hard crash: leaves its staging behind for the next run to clear
    except Exception as err:  # noqa: BLE001 - a task's failure must not end the job
        result = _fail_task(layout, task, position, staged, err)
    layout.remove_dir(staging)
    result.seconds = time.perf_counter() - start
    return result


def _fail_task(
    layout: Layout, task: SourceTask, position: int, staged: list[tuple[str, str]], err: Exception
) -> TaskResult:
    """Quarantine a whole task: remove what it moved into place, report the traceback summary."""
    for _, final in staged:
        if layout.exists(final):
            layout.fs.delete_file(final)
    frames = traceback.extract_tb(err.__traceback__)[-3:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in reversed(frames))
    reason = f"{crop.TASK_FAILED}: {type(err).__name__}: {err}"
    entry = _quarantine_entry(task, "", "", reason, traceback=where)
    try:
        layout.put(layout.quarantine(task), _jsonl([entry]), layout.tmp_dir(task.dataset) + "/failed")
    except Exception:  # noqa: BLE001 - the summary row still reports the failure
        log.exception("could not write the quarantine file of failed task %s", task.task_id)
    return TaskResult(
        position,
        task.dataset,
        task.split,
        task.task_id,
        quarantined=1,
        reasons={crop.TASK_FAILED: 1},
        failed=True,
        error=reason,
    )


# --- readers -----------------------------------------------------------------------------------


def resolve_reader(reader: ReaderSpec) -> tuple[ListTasks, ReadTask, str]:
    """A reader name (``schema.READERS``), module name, module, or (list_tasks, read_task) pair ->
    (list_tasks, read_task, description). Raises ReaderUnavailable when the module is missing."""
    if isinstance(reader, tuple):
        list_tasks, read_task = reader
        return list_tasks, read_task, f"{list_tasks.__module__}.{list_tasks.__qualname__}"
    if isinstance(reader, str):
        module_name = schema.READERS.get(reader, reader)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                raise ReaderUnavailable(f"reader module {module_name!r} is not available ({err})") from err
            raise
    else:
        module = reader
    for name in ("list_tasks", "read_task"):
        if not callable(getattr(module, name, None)):
            raise ReaderUnavailable(f"module {module.__name__!r} has no {name}() (see data_prep/records.py)")
    return module.list_tasks, module.read_task, module.__name__


def _worker_reader(reader: ReaderSpec) -> ReaderSpec:
    """What to ship to the workers: a module travels by name, a callable pair as itself."""
    return reader.__name__ if isinstance(reader, ModuleType) else reader


def _process_batch(
    batch: dict[str, np.ndarray],
    *,
    reader: ReaderSpec,
    out: str,
    config: WriterConfig,
    crash_after: int | None,
) -> dict[str, np.ndarray]:
    """map_batches function: one task per batch (batch_size=1) -> its one summary row (with a small
    task's rows for the packer)."""
    _, read_task, _ = resolve_reader(reader)
    results = [
        process_task(
            pickle.loads(blob), read_task, out, config, position=int(pos), crash_after=crash_after, pack=True
        )
        for blob, pos in zip(batch["task"], batch["position"], strict=True)
    ]
    return {
        "position": np.array([r.position for r in results], np.int64),
        "dataset": np.array([r.dataset for r in results], object),
        "split": np.array([r.split for r in results], object),
        "task_id": np.array([r.task_id for r in results], object),
        "rows": np.array([r.rows for r in results], np.int64),
        "shards": np.array([r.shards for r in results], np.int64),
        "quarantined": np.array([r.quarantined for r in results], np.int64),
        "reasons": np.array([json.dumps(r.reasons) for r in results], object),
        "failed": np.array([r.failed for r in results], bool),
        "error": np.array([r.error for r in results], object),
        "seconds": np.array([r.seconds for r in results], np.float64),
        "packed": np.array([r.pending is not None for r in results], bool),
        "pending": np.array([r.pending or b"" for r in results], object),
    }


# --- done-markers and the packer -------------------------------------------------------------


def _tasks_of(marker_name: str, marker: dict[str, Any]) -> list[str]:
    """The tasks a done-marker records: a packed shard's list, else the task it is named after."""
    listed = marker.get("tasks")
    if isinstance(listed, list):
        return [str(t["task_id"]) for t in listed]
    return [marker_name.removesuffix(".json")]


def _read_markers(layout: Layout, dataset: str, split: str) -> dict[str, dict[str, Any]]:
    """The done-markers of one split, by file name, read in parallel (object stores are slow per file)."""
    infos = [i for i in layout.list_files(layout.done_dir(dataset, split)) if i.base_name.endswith(".json")]
    if not infos:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(infos))) as pool:
        texts = list(pool.map(lambda info: layout.read_text(info.path) or "{}", infos))
    return {info.base_name: json.loads(text) for info, text in zip(infos, texts, strict=True)}


@dataclass
class _OpenPack:
    tasks: list[TaskResult] = field(default_factory=list)
    rows: int = 0


class _Packer:
    """Packs the rows of small tasks into shards, in the job's driver (module docstring, "Packing").

    Results arrive in any order; each dataset/split takes its small tasks in task order (a result
    waits here until the earlier tasks of its split are in), so the packs do not depend on the
    scheduling, and a resumed run, whose first open pack starts where the last committed one ended,
    cuts the same packs as an uninterrupted run. A pack is committed when the next small task would
    take it past ``shard_rows`` rows, when it reaches them, and at ``finish``: its shard is staged,
    moved into place, then recorded by one marker listing its tasks (the commit point).

    Fault injection: with ``crash_after``, a commit before the final ones (``finish``) that leaves at
    least that many of the run's tasks done raises InjectedCrash after writing its marker.
    """

    def __init__(
        self, layout: Layout, config: WriterConfig, todo: Sequence[SourceTask], crash_after: int | None
    ) -> None:
        self.layout = layout
        self.shard_rows = config.shard_rows
        self.crash_after = crash_after
        self._order: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        for position, task in enumerate(todo):
            self._order[(task.dataset, task.split)].append(position)
        self._waiting: dict[int, TaskResult] = {}
        self._open: dict[tuple[str, str], _OpenPack] = defaultdict(_OpenPack)
        self.tasks_done = 0  # this run's tasks that a marker records (as far as the packer knows)
        self.tasks_packed = 0
        self.shards = 0  # packed shards written

    def add(self, result: TaskResult) -> None:
        """Take one task's result; commit every pack it completes."""
        key = (result.dataset, result.split)
        self._waiting[result.position] = result
        order = self._order[key]
        while order and order[0] in self._waiting:
            ready = self._waiting.pop(order.popleft())
            if ready.pending is None:  # committed itself, or failed
                self.tasks_done += not ready.failed
                continue
            pack = self._open[key]
            if pack.tasks and pack.rows + ready.rows > self.shard_rows:
                self._commit(key)
                pack = self._open[key]
            pack.tasks.append(ready)
            pack.rows += ready.rows
            if pack.rows >= self.shard_rows:
                self._commit(key)

    def finish(self) -> None:
        """Commit the packs still open: the last, partial one of each split."""
        unplaced = sum(len(order) for order in self._order.values())
        if unplaced:  # a result missing from the job holds back the small tasks after it
            log.warning("%d task(s) of this run are not packed; a re-run does them", unplaced)
        for key in sorted(self._open):
            if self._open[key].tasks:
                self._commit(key, last=True)

    def _commit(self, key: tuple[str, str], last: bool = False) -> None:
        dataset, split = key
        pack = self._open.pop(key)
        first = pack.tasks[0].task_id
        staging = f"{self.layout.tmp_dir(dataset)}/{uuid.uuid4().hex}"
        self.layout.fs.create_dir(staging, recursive=True)
        names = []
        if pack.rows:
            final = self.layout.shard_path(dataset, split, first, 0)
            name = final.rsplit("/", 1)[1]
            tables = [_ipc_to_table(r.pending) for r in pack.tasks if r.pending]
            # One chunk per column, so the bytes do not depend on how the rows were split into tasks.
            _write_table(self.layout, pa.concat_tables(tables).combine_chunks(), f"{staging}/{name}")
            self.layout.move(f"{staging}/{name}", final)
            names.append(name)
        reasons: Counter[str] = Counter()
        for r in pack.tasks:
            reasons.update(r.reasons)
        marker = {
            "dataset": dataset,
            "split": split,
            "task_id": first,
            "rows": pack.rows,
            "shards": names,
            "quarantined": sum(r.quarantined for r in pack.tasks),
            "reasons": dict(sorted(reasons.items())),
            "tasks": [
                {"task_id": r.task_id, "rows": r.rows, "quarantined": r.quarantined, "reasons": r.reasons}
                for r in pack.tasks
            ],
        }
        self.layout.put(self.layout.marker_path(dataset, split, first), _json(marker), staging)
        self.layout.remove_dir(staging)
        self.shards += len(names)
        self.tasks_packed += len(pack.tasks)
        self.tasks_done += len(pack.tasks)
        if self.crash_after is not None and self.tasks_done >= self.crash_after and not last:
            where = f"{dataset}/{split}/{first}"
            raise InjectedCrash(f"{CRASH_ENV}={self.crash_after}: crashing after the packed shard of {where}")


# --- the job -------------------------------------------------------------------------------------


def ensure_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join ``address`` (or RAY_ADDRESS), else start Ray in-process with at least 4 logical CPUs
    (default: the machine's cores) so Ray Data is never starved; nothing when Ray is running."""
    from pose3d.infra.ray_session import init_ray

    init_ray(address=address, num_cpus=max(4, num_cpus or os.cpu_count() or 1))


@dataclass
class DatasetSummary:
    """The state of one output dataset after a run (written as ``prep_summary.json``)."""

    dataset: str
    params: dict[str, Any]
    splits: dict[str, dict[str, int]]
    quarantined: dict[str, int]
    failed_tasks: list[str]
    last_run: dict[str, Any]  # the run that wrote this summary (all its datasets together)
    #: split -> quarantine category -> count, and the first record's source path of each.
    quarantined_by_split: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine_examples: dict[str, dict[str, str]] = field(default_factory=dict)
    quarantine_report: str = ""  # where the merged quarantine.jsonl is (a path or URI)

    @property
    def complete(self) -> bool:
        return all(s["tasks_done"] == s["tasks"] for s in self.splits.values())

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["complete"] = self.complete
        out["quarantined_total"] = sum(self.quarantined.values())
        return out


@dataclass
class PrepResult:
    """What ``run_prep`` did: one summary per dataset, the tasks that failed, timings."""

    datasets: dict[str, DatasetSummary]
    tasks_total: int
    tasks_run: int
    rows_written: int
    job_seconds: float  # the Ray job alone
    seconds: float  # wall time, listing and summaries included
    failed: list[TaskResult]

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.job_seconds if self.job_seconds > 0 else 0.0


def effective_options(list_tasks: ListTasks, options: dict[str, Any]) -> dict[str, Any]:
    """The reader options with the defaults of ``list_tasks`` filled in, so that giving an option its
    default value does not count as a change of parameters (``_prep.json``)."""
    import inspect

    try:
        bound = inspect.signature(list_tasks).bind_partial("", "", **options)
    except TypeError as err:
        raise ValueError(f"reader options {sorted(options)}: {err}") from err
    bound.apply_defaults()
    params = list(inspect.signature(list_tasks).parameters.values())
    out: dict[str, Any] = {}
    for param in params[2:]:
        value = bound.arguments.get(param.name)
        if param.kind == param.VAR_KEYWORD:
            out.update(value or {})
        elif param.kind != param.VAR_POSITIONAL:
            out[param.name] = value
    return out


def list_all_tasks(
    list_tasks: ListTasks, raw_root: str, splits: Sequence[str], options: dict[str, Any]
) -> list[SourceTask]:
    """The reader's tasks for every split, checked: known dataset and split, safe unique ids."""
    tasks: list[SourceTask] = []
    seen: set[tuple[str, str, str]] = set()
    for split in splits:
        split_tasks = list(list_tasks(raw_root, split, **options))
        if not split_tasks:
            log.warning("the reader listed no tasks for split %r under %s", split, raw_root)
        for task in split_tasks:
            if task.dataset not in schema.DATASETS or task.split not in schema.SPLITS:
                raise ValueError(
                    f"task {task.task_id!r}: unknown dataset/split {task.dataset!r}/{task.split!r}"
                )
            if not _TASK_ID.match(task.task_id):
                raise ValueError(
                    f"task id {task.task_id!r} is not a safe file name ([A-Za-z0-9._+=@,-], no leading _ .)"
                )
            ident = (task.dataset, task.split, task.task_id)
            if ident in seen:
                raise ValueError(f"task id {task.task_id!r} appears twice in {task.dataset}/{task.split}")
            seen.add(ident)
            tasks.append(task)
    return tasks


def _check_params(
    layout: Layout, dataset: str, params: dict[str, Any], option_defaults: dict[str, Any] | None = None
) -> None:
    """Refuse to mix shards made with other parameters; record them on the first run.

    A reader option the recorded parameters lack (added to the reader since) counts as no change
    while it has its default (``option_defaults``), so a reader's new options do not refuse the
    resume of a run prepared before them."""
    path = layout.params(dataset)
    text = layout.read_text(path)
    if text is None:
        layout.put(path, json.dumps(params, sort_keys=True, indent=1).encode(), layout.tmp_dir(dataset))
        return
    before = json.loads(text)
    now = dict(params)
    if isinstance(before.get("reader_options"), dict) and isinstance(now.get("reader_options"), dict):
        defaults = option_defaults or {}
        now["reader_options"] = {
            k: v
            for k, v in now["reader_options"].items()
            if k in before["reader_options"] or k not in defaults or v != defaults[k]
        }
    diff = {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}
    if diff:
        details = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
        where = storage.to_uri(layout.fs, path)
        raise PrepMismatch(
            f"{where}: shards were made with other parameters ({details}); "
            "use the same ones or another output folder"
        )


def _clean_unfinished(layout: Layout, todo: list[SourceTask]) -> None:
    """Remove what earlier, interrupted runs left of the tasks about to run (and all staging)."""
    by_folder: dict[tuple[str, str], set[str]] = defaultdict(set)
    for task in todo:
        by_folder[(task.dataset, task.split)].add(task.task_id)
    for (dataset, split), ids in by_folder.items():
        for info in layout.list_files(layout.split_dir(dataset, split)):
            match = _SHARD_NAME.match(info.base_name)
            if match and match["task"] in ids:
                layout.fs.delete_file(info.path)
        for info in layout.list_files(layout.quarantine_dir(dataset, split)):
            if info.base_name.removesuffix(".jsonl") in ids:
                layout.fs.delete_file(info.path)
    for dataset in {t.dataset for t in todo}:
        layout.fs.delete_dir_contents(layout.tmp_dir(dataset), missing_dir_ok=True)


def _summarize(
    layout: Layout, dataset: str, tasks: list[SourceTask], params: dict[str, Any], run: dict[str, Any]
) -> DatasetSummary:
    """Build the dataset's summary from its markers and quarantine files; write it and the merged
    quarantine report (sorted by split and task, so it does not depend on the run history)."""
    splits: dict[str, dict[str, int]] = {}
    for split in sorted({t.split for t in tasks}, key=schema.SPLITS.index):
        listed = {t.task_id for t in tasks if t.split == split}
        done: set[str] = set()
        rows = shards = 0
        for name, marker in _read_markers(layout, dataset, split).items():
            rows += marker.get("rows", 0)
            shards += len(marker.get("shards", []))
            done.update(_tasks_of(name, marker))
        tasks_done = len(done & listed)
        splits[split] = {"tasks": len(listed), "tasks_done": tasks_done, "rows": rows, "shards": shards}
    entries: list[tuple[str, str, bytes]] = []
    for split in splits:
        for info in layout.list_files(layout.quarantine_dir(dataset, split)):
            if info.base_name.endswith(".jsonl"):
                with layout.fs.open_input_stream(info.path) as stream:
                    entries.append((split, info.base_name, stream.read()))
    merged = b"".join(data for _, _, data in sorted(entries))
    reasons: Counter[str] = Counter()
    by_split: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, dict[str, str]] = defaultdict(dict)
    failed: list[str] = []
    for line in merged.decode().splitlines():
        entry = json.loads(line)
        category = crop.reason_category(entry["reason"])
        reasons[category] += 1
        by_split[entry["split"]][category] += 1
        examples[entry["split"]].setdefault(category, entry.get("source_path", ""))
        if category == crop.TASK_FAILED:
            failed.append(f"{entry['split']}/{entry['task_id']}")
    summary = DatasetSummary(
        dataset,
        params,
        splits,
        dict(sorted(reasons.items())),
        failed,
        run,
        quarantined_by_split={split: dict(sorted(c.items())) for split, c in sorted(by_split.items())},
        quarantine_examples={split: dict(sorted(e.items())) for split, e in sorted(examples.items())},
        quarantine_report=storage.to_uri(layout.fs, layout.merged_quarantine(dataset)),
    )
    staging = layout.tmp_dir(dataset)
    layout.put(layout.merged_quarantine(dataset), merged, staging)
    layout.put(
        layout.summary(dataset), json.dumps(summary.to_json(), indent=1, sort_keys=True).encode(), staging
    )
    layout.fs.delete_dir_contents(staging, missing_dir_ok=True)
    return summary


def _crash_after_from_env() -> int | None:
    value = os.environ.get(CRASH_ENV, "").strip()
    return int(value) if value else None


def run_prep(
    reader: ReaderSpec,
    raw_root: str,
    out: str,
    splits: Sequence[str],
    *,
    reader_options: dict[str, Any] | None = None,
    config: WriterConfig | None = None,
    crash_after_tasks: int | None = None,
    progress_bars: bool = False,
    stall_warn_s: float = 300.0,
    num_cpus: int | None = None,
    address: str | None = None,
) -> PrepResult:
    """Prepare the shards of ``reader``'s tasks for ``splits`` under ``out`` (a Ray Data job).

    Lists the reader's tasks first, so a missing or unreadable annotation fails before Ray starts;
    then starts Ray when there is work and none is running (``ensure_ray(num_cpus, address)``).
    Skips tasks already marked done. Logs a
    line per finished task and returns the summaries (also written to ``prep_summary.json``).
    ``crash_after_tasks`` (or the env var ``POSE3D_PREP_CRASH_AFTER_TASKS``) injects a crash for
    tests. Raises PrepMismatch when ``out`` holds shards made with other parameters. When no task
    finishes for ``stall_warn_s`` seconds (0: never), a warning names what Ray waits for.
    """
    import ray
    import ray.data

    config = config or WriterConfig()
    crash_after = crash_after_tasks if crash_after_tasks is not None else _crash_after_from_env()
    list_tasks, _, reader_name = resolve_reader(reader)
    options = effective_options(list_tasks, reader_options or {})
    defaults = json.loads(json.dumps(effective_options(list_tasks, {}), sort_keys=True, default=repr))
    start = time.perf_counter()
    tasks = list_all_tasks(list_tasks, raw_root, splits, options)
    if not tasks:
        raise ValueError(
            f"the reader {reader_name} found nothing to do under {raw_root} for splits {list(splits)}"
        )
    layout = Layout(out)
    params = {
        **dataclasses.asdict(config),
        "schema_version": schema.SCHEMA_VERSION,
        "reader_options": json.loads(json.dumps(options, sort_keys=True, default=repr)),
    }
    datasets = sorted({t.dataset for t in tasks})
    for dataset in datasets:
        _check_params(layout, dataset, params, defaults)
    done = {
        (d, s, task_id)
        for d, s in {(t.dataset, t.split) for t in tasks}
        for name, marker in _read_markers(layout, d, s).items()
        for task_id in _tasks_of(name, marker)
    }
    todo = [t for t in tasks if (t.dataset, t.split, t.task_id) not in done]
    log.info(
        "%s: %d tasks in %s, %d already done; writing %s",
        reader_name,
        len(tasks),
        "/".join(splits),
        len(tasks) - len(todo),
        out,
    )
    _clean_unfinished(layout, todo)

    results: list[TaskResult] = []
    job_start = time.perf_counter()
    if todo:
        ensure_ray(num_cpus=num_cpus, address=address)
        context = ray.data.DataContext.get_current()
        bars_before = context.enable_progress_bars
        context.enable_progress_bars = progress_bars
        try:
            items = [{"position": i, "task": pickle.dumps(t)} for i, t in enumerate(todo)]
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _process_batch,
                batch_size=1,
                num_cpus=1,
                fn_kwargs={
                    "reader": _worker_reader(reader),
                    "out": out,
                    "config": config,
                    "crash_after": crash_after,
                },
            )
            hint = (
                "Each task takes 1 CPU: give Ray more CPUs (--num-cpus) or free those other jobs hold; "
                "--stall-warn-s sets when this warning comes"
            )
            packer = _Packer(layout, config, todo, crash_after)
            with StallWatchdog(stall_warn_s, "prep task finished", hint) as watchdog:
                rows = iter(ds.iter_rows())
                try:
                    for row in rows:
                        watchdog.beat()
                        result = _log_result(row, len(results) + 1, len(todo), results, job_start)
                        packer.add(result)
                        results.append(dataclasses.replace(result, pending=None))  # the packer holds the rows
                finally:
                    # Closing the iterator shuts the job down at once when the loop stops early, so no
                    # task of a crashed run keeps writing while the next one starts.
                    close = getattr(rows, "close", None)
                    if close is not None:
                        close()
                packer.finish()
            if packer.tasks_packed:
                log.info(
                    "packed %d small task(s) into %d shard(s) of up to %d rows",
                    packer.tasks_packed,
                    packer.shards,
                    config.shard_rows,
                )
        finally:
            context.enable_progress_bars = bars_before
    job_seconds = time.perf_counter() - job_start
    rows_written = sum(r.rows for r in results)
    run = {
        "tasks_listed": len(tasks),
        "tasks_run": len(todo),
        "tasks_skipped": len(tasks) - len(todo),
        "rows": rows_written,
        "seconds": round(job_seconds, 3),
        "rows_per_s": round(rows_written / job_seconds, 2) if job_seconds > 0 else 0.0,
    }
    summaries = {
        d: _summarize(layout, d, [t for t in tasks if t.dataset == d], params, run) for d in datasets
    }
    failed = [r for r in results if r.failed]
    return PrepResult(
        summaries, len(tasks), len(todo), rows_written, job_seconds, time.perf_counter() - start, failed
    )


def _log_result(
    row: dict[str, Any], n: int, total: int, earlier: list[TaskResult], job_start: float
) -> TaskResult:
    result = TaskResult(
        position=int(row["position"]),
        dataset=str(row["dataset"]),
        split=str(row["split"]),
        task_id=str(row["task_id"]),
        rows=int(row["rows"]),
        shards=int(row["shards"]),
        quarantined=int(row["quarantined"]),
        reasons=json.loads(row["reasons"]),
        failed=bool(row["failed"]),
        error=str(row["error"]),
        seconds=float(row["seconds"]),
        pending=bytes(row["pending"]) if row["packed"] else None,
    )
    rows_total = sum(r.rows for r in earlier) + result.rows
    elapsed = time.perf_counter() - job_start
    status = (
        f"FAILED ({result.error})"
        if result.failed
        else f"{result.rows} rows, {result.quarantined} quarantined"
    )
    # A line per failed task, else about every 5 % of the job: enough to see it move.
    if not (result.failed or n in (1, total) or n % max(1, total // 20) == 0):
        return result
    log.info(
        "task %d/%d %s/%s/%s: %s, %.1f s | %d rows, %.1f rows/s",
        n,
        total,
        result.dataset,
        result.split,
        result.task_id,
        status,
        result.seconds,
        rows_total,
        rows_total / max(elapsed, 1e-9),
    )
    return result


def empty_splits(result: PrepResult, splits: Sequence[str], raw_root: str) -> list[str]:
    """Why each requested split has no rows, one sentence per dataset and split (empty when every
    split has rows): how many records were quarantined, by reason, with the first record's file,
    and where the full report is. A split the reader listed no task for is named too."""
    problems = []
    for split in splits:
        listed = [s for s in result.datasets.values() if split in s.splits]
        if not listed:
            problems.append(f"{split}: the reader found nothing to read under {raw_root}")
        for summary in listed:
            if summary.splits[split]["rows"] > 0:
                continue
            counts = summary.quarantined_by_split.get(split, {})
            examples = summary.quarantine_examples.get(split, {})
            total = sum(counts.values())
            if not total:
                problems.append(f"{summary.dataset}/{split}: its tasks yielded no records")
                continue
            parts = []
            for category, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                example = examples.get(category, "")
                first = (
                    os.path.join(raw_root, example) if example and not example.startswith("/") else example
                )
                parts.append(f"{category} {n}" + (f" (first: {first})" if first else ""))
            problems.append(
                f"{summary.dataset}/{split}: 0 of {total} rows: {', '.join(parts)}; "
                f"every record is listed in {summary.quarantine_report}"
            )
    return problems


def iter_summary_lines(result: PrepResult) -> Iterator[str]:
    """Human-readable end-of-run summary: rows per split, quarantined by reason, speed."""
    yield f"{'dataset':<22} {'split':<6} {'tasks':>11} {'rows':>9} {'shards':>7}"
    for name, summary in result.datasets.items():
        for split, s in summary.splits.items():
            tasks = f"{s['tasks_done']}/{s['tasks']}"
            yield f"{name:<22} {split:<6} {tasks:>11} {s['rows']:>9} {s['shards']:>7}"
        total = sum(summary.quarantined.values())
        reasons = ", ".join(f"{k} {v}" for k, v in summary.quarantined.items())
        yield f"{name}: {total} quarantined" + (f" ({reasons})" if reasons else "")
        if total:
            yield f"{name}: quarantine report (each record, its file and reason): {summary.quarantine_report}"
    yield (
        f"this run: {result.tasks_run} of {result.tasks_total} tasks, {result.rows_written} rows, "
        f"{result.rows_per_s:.1f} rows/s, wall {result.seconds:.1f} s"
    )
    for r in result.failed:
        yield f"failed: {r.dataset}/{r.split}/{r.task_id}: {r.error}"
