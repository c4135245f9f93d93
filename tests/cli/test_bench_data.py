"""``pose3d bench data``: the JSON object's figures and how they relate (no timing asserted)."""

from __future__ import annotations

import json

import cv2
import pytest
import torch

from pose3d.cli.bench.data import default_gpu_img_s
from pose3d.cli.bench.model import mfu, model_gflop
from pose3d.cli.main import main
from tests.shard_factory import write_shard_set


def test_the_default_gpu_rate_is_the_paper_model_at_35_percent_of_an_h100():
    from pose3d.model import ModelConfig

    rate = default_gpu_img_s()
    assert mfu(model_gflop(ModelConfig.paper())[1], rate, 989.0) == pytest.approx(0.35)
    assert 3000 < rate < 4500  # issue 13: a quarter to a half of the peak is ~2,000-4,000 img/s


def test_bench_data_json_has_both_sides_and_the_bytes_the_heatmaps_cost(tmp_path, capsys):
    shards = write_shard_set(tmp_path / "lab", 24, has_3d=True)
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()  # the bench pins both to 1
    try:
        argv = ["bench", "data", "--shards", str(shards), "--configs", "demo", "--rows", "16", "--batch", "8"]
        assert main([*argv, "--json", "--gpu-img-s", "1000", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    report = json.loads(capsys.readouterr().out)
    assert report["input_size"] == [64] and report["gpu_img_s"] == 1000
    (run,) = report["results"]
    assert (run["config"], run["input_size"], run["output_size"]) == ("demo", 64, 16)
    before, after = run["before"], run["after"]
    assert (before["heatmaps"], after["heatmaps"]) == ("cpu", "device")
    # The heatmaps were the only difference: 16 maps of 16 x 16 float32 a row.
    assert before["bytes_per_row"] - after["bytes_per_row"] == pytest.approx(16 * 16 * 16 * 4)
    assert after["bytes_per_row"] > 3 * 64 * 64  # the uint8 image and the labels
    for side in (before, after):
        assert side["rows_per_s_per_core"] > 0
        assert side["cores_per_gpu"] == pytest.approx(1000 / side["rows_per_s_per_core"])
    assert before["rows_per_s_per_core"] <= after["rows_per_s_per_core"]  # the same work plus the maps
    # The headline keys at the top, for the path training takes (heatmaps on the device).
    for key in ("rows_per_s_per_core", "bytes_per_row", "cores_per_gpu"):
        assert report[key] == [after[key]]
