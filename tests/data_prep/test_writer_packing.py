"""Packing small tasks into shards of ``shard_rows`` rows: the shards and their markers, task order
whatever the scheduling, per-task quarantine, and resume (after a crash between packs, and after a
crash between a packed shard's move and its marker) without lost or duplicated rows.

The fake reader makes its images in memory: tasks of 0 to 7 rows, one that fails, two that are
large enough for shards of their own, in two splits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from data_prep import writer
from data_prep.records import Camera, PersonSample, Quarantined, SourceTask
from pose3d.data import shards

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

SHARD_ROWS = 5
CONFIG = writer.WriterConfig(crop_size=32, jpeg_quality=90, shard_rows=SHARD_ROWS)
FAILS = -1
#: split -> (task id, good records, quarantined records); FAILS: raises after its first record.
PLAN = {
    "train": [("a", 3, 0), ("b", 2, 1), ("c", 0, 2), ("d", 4, 0), ("e", FAILS, 0), ("f", 7, 0),
              ("g", 1, 0), ("h", 2, 0), ("i", 5, 0), ("j", 2, 0), ("k", 3, 0), ("l", 1, 0)],
    "test": [("m", 2, 0), ("n", 2, 0), ("o", 4, 0)],
}  # fmt: skip
#: The shards this plan must give (name -> rows), worked out by hand: whole small tasks in order,
#: a pack closed when the next task would overflow it; f (7 rows) and i (5) have shards of their own.
SHARDS = {
    "train/a-00000.parquet": 5,  # a 3 + b 2
    "train/c-00000.parquet": 5,  # c 0 + d 4 + g 1 (e failed, f is large)
    "train/f-00000.parquet": 5,
    "train/f-00001.parquet": 2,
    "train/h-00000.parquet": 4,  # h 2 + j 2 (k 3 would make 7)
    "train/i-00000.parquet": 5,
    "train/k-00000.parquet": 4,  # k 3 + l 1, the split's last pack
    "test/m-00000.parquet": 4,  # m 2 + n 2
    "test/o-00000.parquet": 4,
}
PACKS = {"train/a": "ab", "train/c": "cdg", "train/h": "hj", "train/k": "kl", "test/m": "mn", "test/o": "o"}
TASKS_TOTAL = 15
ROWS = {f"h36m/{split}/{t}/r{n}" for split, plan in PLAN.items() for t, good, _ in plan for n in range(good)}


# --- the fake reader (module-level: the Ray workers import it) ---------------------------------


def list_tasks(raw_root: str, split: str) -> list[SourceTask]:
    return [SourceTask("h36m", split, t, raw_root, {"good": g, "bad": b}) for t, g, b in PLAN[split]]


def read_task(task: SourceTask):
    rng = np.random.default_rng(zlib.crc32(task.task_id.encode()))
    good, bad = task.payload["good"], task.payload["bad"]
    for n in range(3 if good == FAILS else good):
        if good == FAILS and n == 1:
            raise RuntimeError("fake reader exploded")
        image = np.full((48, 48, 3), 40 + 20 * n, np.uint8)
        image[20:28, 20:28] = 220
        yield PersonSample(
            image=image,
            joints_2d=24.0 + rng.uniform(-8, 8, (16, 2)),
            visible=np.ones(16, bool),
            center=np.array([24.0, 24.0]),
            box_size=20.0,
            source_path=f"{task.task_id}/{n}.png",
            key=f"r{n}",
            joints_3d=rng.normal(0, 300, (16, 3)),
            camera=Camera(np.array([500.0, 500.0]), np.array([24.0, 24.0])),
            frame=n,
        )
    for n in range(bad):
        yield Quarantined(f"{task.task_id}/bad{n}.png", f"q{n}", "unreadable image: fake")


READER = (list_tasks, read_task)


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    import ray

    if ray.is_initialized():  # left running by an earlier module: use it, leave it
        yield
        return
    temp = tempfile.mkdtemp(prefix="p3d-")
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp, configure_logging=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _prep(out: Path, **kwargs) -> writer.PrepResult:
    """``run_prep`` inside a Ray task, so the job's Ray Data iteration is not in the pytest process."""
    import ray

    remote = ray.remote(num_cpus=0, max_retries=0)(writer.run_prep)
    return ray.get(remote.remote(READER, str(out), str(out), ["train", "test"], config=CONFIG, **kwargs))


def _files(out: Path) -> dict[str, bytes]:
    """Shards, markers and quarantine files, by path relative to the dataset folder."""
    root = out / "h36m"
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] in ("train", "test", "_done", "_quarantine")
    }


def _shard_rows(out: Path) -> dict[str, list[str]]:
    """Shard (split/name) -> its row ids, read without Ray."""
    return {
        Path(f).relative_to(out / "h36m").as_posix(): list(
            shards.load_shards_numpy(f, columns=["row_id"])["row_id"]
        )
        for f in shards.list_shards(str(out / "h36m"))
    }


def _all_row_ids(out: Path) -> list[str]:
    return [r for ids in _shard_rows(out).values() for r in ids]


@pytest.fixture(scope="module")
def full_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    return out, _prep(out)


# --- tests -------------------------------------------------------------------------------------


def test_small_tasks_are_packed_whole_up_to_shard_rows(full_run):
    out, result = full_run
    by_shard = _shard_rows(out)
    assert {name: len(ids) for name, ids in by_shard.items()} == SHARDS
    ids = _all_row_ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == ROWS  # nothing lost, nothing twice
    # Each pack's marker lists exactly the tasks whose rows its one shard holds, in task order.
    for pack, members in PACKS.items():
        split, first = pack.split("/")
        marker = json.loads((out / "h36m" / "_done" / split / f"{first}.json").read_text())
        assert [t["task_id"] for t in marker["tasks"]] == list(members)
        held = by_shard[f"{split}/{first}-00000.parquet"]
        assert sorted({r.split("/")[2] for r in held}) == sorted(set(members) - {"c"})  # c has no rows
        assert marker["rows"] == len(held) == sum(t["rows"] for t in marker["tasks"])
        assert marker["shards"] == [f"{first}-00000.parquet"]
    done = out / "h36m" / "_done"
    markers = sorted(p.relative_to(done).as_posix() for p in done.rglob("*.json"))
    assert markers == sorted([f"{p}.json" for p in PACKS] + ["train/f.json", "train/i.json"])
    summary = json.loads((out / "h36m" / "prep_summary.json").read_text())
    assert summary["splits"]["train"] == {"tasks": 12, "tasks_done": 11, "rows": 30, "shards": 7}
    assert summary["splits"]["test"] == {"tasks": 3, "tasks_done": 3, "rows": 8, "shards": 2}
    assert summary["failed_tasks"] == ["train/e"]
    assert result.tasks_run == TASKS_TOTAL and result.rows_written == len(ROWS)


def test_quarantine_stays_per_task_and_per_record(full_run):
    out, _ = full_run
    folder = out / "h36m" / "_quarantine" / "train"
    assert sorted(p.name for p in folder.iterdir()) == ["b.jsonl", "c.jsonl", "e.jsonl"]
    lines = [json.loads(x) for x in (out / "h36m" / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["task_id"], q["key"]) for q in lines] == [("b", "q0"), ("c", "q0"), ("c", "q1"), ("e", "")]
    marker = json.loads((out / "h36m" / "_done" / "train" / "c.json").read_text())
    assert marker["tasks"][0] == {
        "task_id": "c",
        "rows": 0,
        "quarantined": 2,
        "reasons": {"unreadable image": 2},
    }
    assert marker["quarantined"] == 2


def test_packs_do_not_depend_on_the_order_results_arrive_in(full_run, tmp_path):
    """The packer fed the tasks' results (run here, without Ray) in task order and shuffled writes
    the same shards and markers as the Ray job."""
    out_full, _ = full_run
    tasks = list_tasks("", "train") + list_tasks("", "test")
    orders = {"in_order": range(TASKS_TOTAL), "shuffled": np.random.default_rng(3).permutation(TASKS_TOTAL)}
    for name, order in orders.items():
        out = tmp_path / name
        results = [
            writer.process_task(t, read_task, str(out), CONFIG, position=i, pack=True)
            for i, t in enumerate(tasks)
        ]
        packer = writer._Packer(writer.Layout(str(out)), CONFIG, tasks, crash_after=None)
        for i in order:
            packer.add(results[i])
        packer.finish()
        packed = {k: v for k, v in _files(out).items() if not k.startswith("_quarantine")}
        assert packed == {k: v for k, v in _files(out_full).items() if not k.startswith("_quarantine")}, name


def test_crash_between_packs_then_resume_equals_uninterrupted(full_run, tmp_path):
    out_full, _ = full_run
    out = tmp_path / "crashed"
    with pytest.raises(Exception, match="InjectedCrash|POSE3D_PREP_CRASH_AFTER_TASKS"):
        _prep(out, crash_after_tasks=2)
    # The driver crashed right after committing the first pack (a + b); the large tasks f and i wait
    # for two tasks to be done, then crash before moving their shards.
    assert sorted(p.name for p in (out / "h36m" / "_done").rglob("*.json")) == ["a.json"]
    assert list(_shard_rows(out)) == ["train/a-00000.parquet"]

    resumed = _prep(out)
    assert resumed.tasks_run == TASKS_TOTAL - 2  # a and b are not redone
    assert _files(out) == _files(out_full)  # the same packs, byte for byte
    ids = _all_row_ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == ROWS
    assert not any(p.is_file() for p in (out / "h36m" / "_tmp").rglob("*"))

    again = _prep(out)  # only the failed task is retried
    assert again.tasks_run == 1 and again.rows_written == 0 and _files(out) == _files(out_full)


def test_a_packed_shard_without_its_marker_is_redone(full_run, tmp_path):
    """A crash after a packed shard was moved into place but before its marker was written: the
    shard is in the folder, its tasks are not done. The next run removes it and redoes them only."""
    out_full, _ = full_run
    out = tmp_path / "half"
    shutil.copytree(out_full, out)
    (out / "h36m" / "_done" / "train" / "c.json").unlink()  # the pack c + d + g
    before = _all_row_ids(out)
    assert len(before) == len(ROWS)  # the orphan's rows are still there, unrecorded

    resumed = _prep(out)
    assert resumed.tasks_run == 4  # c, d, g and the failed e
    assert resumed.rows_written == 5
    assert _files(out) == _files(out_full)
    ids = _all_row_ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == ROWS
