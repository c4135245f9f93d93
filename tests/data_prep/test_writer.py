"""The shard writer job on a fake reader: counts, label round trip, crop content, quarantine,
crash + resume == uninterrupted (byte-identical), parameter mismatch refused.

The fake reader (``list_tasks`` / ``read_task`` below) reads generated PNG images and a JSON label
file per task, like a real reader, so these tests do not depend on the dataset readers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import writer
from data_prep.records import Camera, PersonSample, Quarantined, SourceTask
from pose3d.data import shards
from pose3d.image import decode_images

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

W, H = 200, 160  # source image size, px
BACKGROUND = 30
BLOB_SIGMA = 3.0  # source px; a bright Gaussian blob marks each person's head_top
CROP = 64
SHARD_ROWS = 2
HEAD_TOP = 9
CONFIG = writer.WriterConfig(crop_size=CROP, jpeg_quality=90, shard_rows=SHARD_ROWS)
TASKS = {"train": ["t0", "t1", "t2", "t3"], "test": ["t0", "t1"]}
PERSONS = {"train": 5, "test": 3}


# --- the fake reader -------------------------------------------------------------------------


def list_tasks(raw_root: str, split: str) -> list[SourceTask]:
    return [
        SourceTask(
            "h36m",
            split,
            t,
            raw_root,
            {"labels": f"{split}/{t}/labels.json", "explode": (split, t) == ("test", "t1")},
        )
        for t in TASKS[split]
    ]


def read_task(task: SourceTask):
    root = Path(task.raw_root)
    for n, label in enumerate(json.loads((root / task.payload["labels"]).read_text())):
        if task.payload["explode"] and n == 1:
            raise RuntimeError("fake reader exploded")
        image = cv2.imread(str(root / label["file"]), cv2.IMREAD_COLOR)
        if image is None:
            yield Quarantined(
                label["file"], label["key"], f"unreadable image: cv2 cannot decode {label['file']}"
            )
            continue
        yield PersonSample(
            image=image,
            joints_2d=np.array(label["joints_2d"], np.float64),
            visible=np.array(label["visible"], bool),
            center=np.array(label["center"]),
            box_size=label["box"],
            source_path=label["file"],
            key=label["key"],
            joints_3d=None if label["joints_3d"] is None else np.array(label["joints_3d"]),
            camera=Camera(np.array([500.0, 500.0]), np.array([100.0, 80.0])) if label["joints_3d"] else None,
            subject=f"S{n % 2}",
            action="Walk",
            frame=n,
        )


def _make_raw(root: Path) -> dict[str, dict]:
    """Generate the raw data; return the labels by row id, with their special cases:
    train/t1/p2 a truncated JPEG, train/t2/p0 NaN label, train/t3/p4 outside the image,
    train/t0/p3 15 joints, test/t1 raises after its first record; every p1 has r_ankle outside
    the image; every person's l_wrist is unannotated (NaN)."""
    rng = np.random.default_rng(7)
    labels_by_id = {}
    yy, xx = np.mgrid[0:H, 0:W]
    for split, tasks in TASKS.items():
        for t in tasks:
            folder = root / split / t
            folder.mkdir(parents=True)
            labels = []
            for n in range(PERSONS[split]):
                key = f"p{n}"
                box = 40.0 if n % 2 == 0 else 100.0
                center = rng.uniform([50, 45], [150, 115])
                joints = center + rng.uniform(-0.4, 0.4, (16, 2)) * box
                joints = np.clip(joints, 12, [W - 13, H - 13])
                visible = np.ones(16, bool)
                visible[15] = False
                joints[15] = np.nan
                if key == "p1":
                    joints[0] = (W + 5.0, joints[0, 1])  # annotated, outside the image -> not visible
                image = np.full((H, W, 3), BACKGROUND, np.float64)
                blob = np.exp(
                    -((xx - joints[HEAD_TOP, 0]) ** 2 + (yy - joints[HEAD_TOP, 1]) ** 2) / (2 * BLOB_SIGMA**2)
                )
                image += 200 * blob[..., None]
                path = folder / f"{key}.png"
                if (split, t, key) == ("train", "t1", "p2"):  # a real JPEG cut after its first 100 bytes
                    path = path.with_suffix(".jpg")
                    path.write_bytes(
                        cv2.imencode(".jpg", np.round(image).astype(np.uint8))[1].tobytes()[:100]
                    )
                else:
                    cv2.imwrite(str(path), np.round(image).astype(np.uint8))
                j2d = joints.tolist()
                if (split, t, key) == ("train", "t2", "p0"):
                    j2d[3][0] = float("nan")
                if (split, t, key) == ("train", "t0", "p3"):
                    j2d = j2d[:15]
                    visible_list = visible[:15].tolist()
                else:
                    visible_list = visible.tolist()
                if (split, t, key) == ("train", "t3", "p4"):
                    center = np.array([W + 60.0, 80.0])
                j3d = rng.normal(0, 300, (16, 3)).tolist() if split == "train" else None
                label = {
                    "file": path.relative_to(root).as_posix(),
                    "key": key,
                    "joints_2d": j2d,
                    "visible": visible_list,
                    "center": center.tolist(),
                    "box": box,
                    "joints_3d": j3d,
                }
                labels.append(label)
                labels_by_id[f"h36m/{split}/{t}/{key}"] = label
            (folder / "labels.json").write_text(json.dumps(labels))
    return labels_by_id


# Rows that must come out: every record but the five special ones above.
QUARANTINED_IDS = {"train/t1/p2", "train/t2/p0", "train/t3/p4", "train/t0/p3"}
EXPECTED_ROWS = {"train": 4 * 5 - 4, "test": 3}  # test/t1 fails as a whole


@pytest.fixture(scope="module")
def ray_session():
    import ray

    if ray.is_initialized():  # left running by an earlier module: use it, leave it
        yield
        return
    temp = tempfile.mkdtemp(prefix="p3d-")  # short: Ray's socket paths must fit in 107 bytes
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return root, _make_raw(root)


@pytest.fixture(scope="module")
def full_run(ray_session, raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("out_full")
    result = writer.run_prep((list_tasks, read_task), str(raw[0]), str(out), ["train", "test"], config=CONFIG)
    return out, result


def _files(out: Path) -> dict[str, bytes]:
    """Every file a reader or a user consumes (shards, markers, quarantine), by relative path."""
    keep = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and "/_tmp/" not in f"/{rel}" and not rel.endswith("prep_summary.json"):
            keep[rel] = path.read_bytes()
    return keep


# --- tests -------------------------------------------------------------------------------------


def test_rows_and_shards_read_back(full_run):
    out, result = full_run
    folders = [str(out / "h36m" / split) for split in EXPECTED_ROWS]
    rows = shards.read_shards(folders, columns=["row_id", "joints_2d", "split"]).take_all()
    assert {split: sum(r["split"] == split for r in rows) for split in EXPECTED_ROWS} == EXPECTED_ROWS
    assert all(r["row_id"].startswith(f"h36m/{r['split']}/") for r in rows)
    assert np.asarray(rows[0]["joints_2d"]).shape == (32,)
    # 4 rows per train task, 3 in test/t0, in shards of at most 2 rows.
    names = sorted(p.name for p in (out / "h36m" / "train").iterdir())
    assert names == [f"t{t}-{k:05d}.parquet" for t in range(4) for k in range(2)]
    assert sorted(p.name for p in (out / "h36m" / "test").iterdir()) == [
        "t0-00000.parquet",
        "t0-00001.parquet",
    ]
    summary = json.loads((out / "h36m" / "prep_summary.json").read_text())
    assert summary["splits"]["train"] == {"tasks": 4, "tasks_done": 4, "rows": 16, "shards": 8}
    assert summary["splits"]["test"] == {"tasks": 2, "tasks_done": 1, "rows": 3, "shards": 2}
    assert not summary["complete"]
    assert result.rows_written == 19 and result.tasks_run == 6


def test_labels_map_into_the_crop_and_back(full_run, raw):
    out, _ = full_run
    labels = raw[1]
    data = shards.load_shards_numpy(str(out))
    ids = list(data["row_id"])
    assert len(ids) == len(set(ids)) == 19
    assert set(ids) == {
        i for i in labels if i.split("/", 1)[1] not in QUARANTINED_IDS and "/test/t1/" not in i
    }
    for k, row_id in enumerate(ids):
        label = labels[row_id]
        src = np.array(label["joints_2d"], np.float64)
        center, side = np.array(label["center"]), label["box"] * 1.5
        # Hand-written crop mapping: side px around the centre -> CROP px, pixel centres at integers.
        expected = (src - center) * (CROP / side) + (CROP - 1) / 2
        annotated = np.array(label["visible"])
        np.testing.assert_allclose(data["joints_2d"][k][annotated], expected[annotated], atol=1e-3)
        inside = annotated & (src[:, 0] <= W - 0.5)
        np.testing.assert_array_equal(data["visible"][k], inside)
        np.testing.assert_array_equal(data["joints_2d"][k][15], [0.0, 0.0])  # unannotated, no coordinates
        # Back through crop_to_image to the source labels.
        a = data["crop_to_image"][k]
        back = data["joints_2d"][k].astype(np.float64) @ a[:, :2].T + a[:, 2]
        assert np.abs(back[annotated] - src[annotated]).max() < 0.5
        assert data["has_3d"][k] == (label["joints_3d"] is not None)
        if label["joints_3d"] is not None:
            np.testing.assert_allclose(data["joints_3d"][k], label["joints_3d"], rtol=1e-6)
            np.testing.assert_array_equal(data["camera_f"][k], [500.0, 500.0])
        else:
            assert np.isnan(data["joints_3d"][k]).all() and np.isnan(data["camera_f"][k]).all()
        assert np.isnan(data["head_size"][k]) and data["crop_size"][k] == CROP


def test_crop_pixels_follow_the_labels(full_run):
    """The blob drawn at head_top in the source image is at the stored crop coordinates (within
    0.1 crop px), for boxes that are enlarged (40 px) and shrunk 2.3x (100 px, area pre-filter)."""
    out, _ = full_run
    data = shards.load_shards_numpy(str(out), columns=["image_jpeg", "joints_2d", "crop_to_image"])
    images = decode_images(data["image_jpeg"], rgb=False)
    assert images.shape[1:] == (CROP, CROP, 3)
    scales, errors = [], []
    for image, joints, a in zip(images, data["joints_2d"], data["crop_to_image"], strict=True):
        scale = 1 / np.sqrt(abs(np.linalg.det(a[:, :2])))
        radius = int(np.ceil(4 * BLOB_SIGMA * scale)) + 1
        x0, y0 = np.round(joints[HEAD_TOP]).astype(int)
        window = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1, 1].astype(np.float64)
        weight = np.clip(window - BACKGROUND - 3, 0, None)
        yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
        centroid = np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()
        errors.append(np.linalg.norm(centroid - joints[HEAD_TOP]))
        scales.append(round(scale, 3))
    assert max(errors) < 0.1
    assert sorted(set(scales)) == [round(CROP / 150, 3), round(CROP / 60, 3)]


def test_bad_records_are_quarantined_with_reasons(full_run, raw):
    out, result = full_run
    assert cv2.imread(str(raw[0] / "train" / "t1" / "p2.jpg")) is None  # really undecodable
    lines = [json.loads(x) for x in (out / "h36m" / "quarantine.jsonl").read_text().splitlines()]
    by_task = {(q["split"], q["task_id"], q["key"]): q["reason"] for q in lines}
    assert len(lines) == 5
    assert by_task[("train", "t1", "p2")].startswith("unreadable image: ")
    assert by_task[("train", "t2", "p0")].startswith("non-finite label: joints_2d of visible l_hip")
    assert by_task[("train", "t3", "p4")].startswith("person outside the image: box centre (260.0, 80.0)")
    assert by_task[("train", "t0", "p3")].startswith("wrong joint count: ")
    failed = by_task[("test", "t1", "")]
    assert failed == "task failed: RuntimeError: fake reader exploded"
    assert "read_task" in next(q for q in lines if q["task_id"] == "t1" and q["split"] == "test")["traceback"]
    summary = json.loads((out / "h36m" / "prep_summary.json").read_text())
    assert summary["quarantined"] == {
        "non-finite label": 1,
        "person outside the image": 1,
        "task failed": 1,
        "unreadable image": 1,
        "wrong joint count": 1,
    }
    assert summary["failed_tasks"] == ["test/t1"]
    assert [(r.split, r.task_id) for r in result.failed] == [("test", "t1")]
    # The failed task is not marked done and left no shard; the others are marked.
    done = sorted(
        p.relative_to(out / "h36m" / "_done").as_posix() for p in (out / "h36m" / "_done").rglob("*.json")
    )
    assert done == ["test/t0.json", "train/t0.json", "train/t1.json", "train/t2.json", "train/t3.json"]
    assert not list((out / "h36m" / "test").glob("t1-*"))


def test_crash_then_resume_equals_uninterrupted(full_run, raw, tmp_path):
    out_full, _ = full_run
    out = tmp_path / "crashed"
    reader = (list_tasks, read_task)
    with pytest.raises(Exception, match="InjectedCrash|POSE3D_PREP_CRASH_AFTER_TASKS"):
        writer.run_prep(reader, str(raw[0]), str(out), ["train", "test"], config=CONFIG, crash_after_tasks=2)
    # Exactly the first two tasks finished; the crashed ones left staging files only, which no reader takes.
    done = sorted(p.name for p in (out / "h36m" / "_done").rglob("*.json"))
    assert done == ["t0.json", "t1.json"]
    assert [Path(p).name for p in shards.list_shards(str(out))] == [
        "t0-00000.parquet", "t0-00001.parquet", "t1-00000.parquet", "t1-00001.parquet"
    ]  # fmt: skip
    assert any(p.is_file() for p in (out / "h36m" / "_tmp").rglob("*"))

    resumed = writer.run_prep(reader, str(raw[0]), str(out), ["train", "test"], config=CONFIG)
    assert resumed.tasks_run == 4 and resumed.tasks_total == 6
    assert _files(out) == _files(out_full)  # byte-identical shards, markers and quarantine
    ids = shards.load_shards_numpy(str(out), columns=["row_id"])["row_id"]
    assert len(ids) == len(set(ids)) == 19
    assert not any(p.is_file() for p in (out / "h36m" / "_tmp").rglob("*"))

    # A third run only retries the failed task and changes nothing.
    again = writer.run_prep(reader, str(raw[0]), str(out), ["train", "test"], config=CONFIG)
    assert again.tasks_run == 1 and again.rows_written == 0
    assert _files(out) == _files(out_full)


def test_other_parameters_are_refused(full_run, raw):
    out, _ = full_run
    other = writer.WriterConfig(crop_size=80, shard_rows=SHARD_ROWS)
    with pytest.raises(writer.PrepMismatch, match=r"_prep\.json: .*crop_size: 64 there, 80 now"):
        writer.run_prep((list_tasks, read_task), str(raw[0]), str(out), ["train"], config=other)


def _slow_read_task(task: SourceTask):
    time.sleep(4)  # a task that makes no progress for a while
    yield from read_task(task)


def test_a_prep_job_that_makes_no_progress_says_what_waits(ray_session, raw, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="pose3d"):
        result = writer.run_prep(
            (list_tasks, _slow_read_task), str(raw[0]), str(tmp_path / "out"), ["test"], config=CONFIG,
            stall_warn_s=1.5,
        )  # fmt: skip
    assert result.tasks_run == 2
    stalls = [r.getMessage() for r in caplog.records if "no prep task finished for" in r.getMessage()]
    assert stalls, caplog.text
    assert "CPUs free" in stalls[0] and "--stall-warn-s" in stalls[0]
