"""What ``pose3d prep`` tells a user about a run (issue 14): why a split has no rows, where the
quarantine report is, and that a reader's new options at their defaults do not refuse a resume.
Tasks run through ``writer.process_task`` directly: no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep import writer
from data_prep.readers import common, mpii


def _mpii_raw(root: Path, images: tuple[str, ...]) -> Path:
    """A two-person HRNet-JSON val set whose images are ``images`` (the others missing)."""
    (root / "annot").mkdir(parents=True)
    (root / "images").mkdir()
    joints = [[10.0 + 3 * j, 20.0 + 2 * j] for j in range(16)]
    rows = [
        {"image": name, "joints": joints, "joints_vis": [1] * 16, "center": [30.0, 35.0], "scale": 0.4}
        for name in ("a.jpg", "b.jpg")
    ]
    (root / "annot" / "valid.json").write_text(json.dumps(rows))
    for name in images:
        cv2.imwrite(str(root / "images" / name), np.zeros((80, 80, 3), np.uint8))
    return root


def _prep_without_ray(raw: Path, out: Path, splits: tuple[str, ...] = ("val",)) -> writer.PrepResult:
    """``run_prep``'s bookkeeping with the tasks run in-process."""
    tasks = writer.list_all_tasks(mpii.list_tasks, str(raw), splits, {})
    config = writer.WriterConfig(crop_size=32)
    results = [writer.process_task(t, mpii.read_task, str(out), config) for t in tasks]
    layout = writer.Layout(str(out))
    summary = writer._summarize(layout, "mpii", tasks, {}, {})
    rows = sum(r.rows for r in results)
    return writer.PrepResult({"mpii": summary}, len(tasks), len(tasks), rows, 1.0, 1.0, [])


def test_a_split_without_rows_says_why(tmp_path: Path):
    raw, out = _mpii_raw(tmp_path / "raw", images=()), tmp_path / "out"
    result = _prep_without_ray(raw, out)
    summary = result.datasets["mpii"]
    assert summary.quarantined_by_split == {"val": {common.MISSING_IMAGE: 2}}
    assert summary.quarantine_examples == {"val": {common.MISSING_IMAGE: "images/a.jpg"}}
    report = str(out / "mpii" / "quarantine.jsonl")
    assert summary.quarantine_report == report
    assert writer.empty_splits(result, ["val"], str(raw)) == [
        f"mpii/val: 0 of 2 rows: missing image 2 (first: {raw}/images/a.jpg); "
        f"every record is listed in {report}"
    ]
    lines = list(writer.iter_summary_lines(result))
    assert f"mpii: quarantine report (each record, its file and reason): {report}" in lines
    # a split the reader listed nothing for is named too
    assert writer.empty_splits(result, ["val", "train"], str(raw))[1] == (
        f"train: the reader found nothing to read under {raw}"
    )
    saved = json.loads((out / "mpii" / "prep_summary.json").read_text())
    assert saved["quarantined_by_split"] == {"val": {common.MISSING_IMAGE: 2}}


def test_a_split_with_rows_is_no_problem(tmp_path: Path):
    raw, out = _mpii_raw(tmp_path / "raw", images=("b.jpg",)), tmp_path / "out"
    result = _prep_without_ray(raw, out)
    assert result.rows_written == 1 and writer.empty_splits(result, ["val"], str(raw)) == []
    assert any(line.startswith("mpii: quarantine report") for line in writer.iter_summary_lines(result))


def test_new_reader_options_at_their_defaults_do_not_refuse_a_resume(tmp_path: Path):
    layout = writer.Layout(str(tmp_path))
    before = {"crop_size": 64, "reader_options": {"layout": "auto"}}
    writer._check_params(layout, "3dhp", before)
    now = {"crop_size": 64, "reader_options": {"layout": "auto", "every": 10}}
    writer._check_params(layout, "3dhp", now, {"layout": "auto", "every": 10})  # added since: default
    with pytest.raises(writer.PrepMismatch, match="every"):
        writer._check_params(
            layout, "3dhp", {**now, "reader_options": {"layout": "auto", "every": 5}}, {"every": 10}
        )
    with pytest.raises(writer.PrepMismatch, match="layout"):
        writer._check_params(
            layout, "3dhp", {**now, "reader_options": {"layout": "npz", "every": 10}}, {"every": 10}
        )
