"""``pose3d bench model`` and ``pose3d bench gpu-check``: the pure helpers (peak table, MFU, FLOP
count, report windows), the JSON object, and the check's skip on a machine without a GPU."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pose3d.cli.bench import gpu_check
from pose3d.cli.bench.gpu_check import fill_defaults, window_figures
from pose3d.cli.bench.model import format_mfu, mfu, model_gflop, peak_tflops
from pose3d.cli.main import main
from pose3d.model import ModelConfig
from pose3d.train.config import load_config

POSE3D = str(Path(sys.executable).parent / "pose3d")


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),  # SXM
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", None),  # not an L4
        ("Tesla T4", None),
        ("cpu", None),
    ],
)
def test_the_peak_table_knows_these_devices(name, peak):
    assert peak_tflops(name) == peak


def test_mfu_is_model_flops_per_second_over_the_peak():
    # 97 GFLOP per image at 2,000 img/s is 194 TFLOP/s: 19.6 % of an H100 SXM's 989.
    assert mfu(97.0, 2000.0, 989.0) == pytest.approx(194.0 / 989.0)
    assert mfu(97.0, 2000.0, None) is None and mfu(97.0, 2000.0, 0.0) is None
    assert format_mfu(None) == "unknown" and format_mfu(0.1234) == "12.3 %"


def test_the_paper_network_costs_32_gflop_forward_and_about_three_times_that_to_train():
    forward, train = model_gflop(ModelConfig.paper())
    assert forward == pytest.approx(32.3, abs=0.1)  # the figure of issue 13, from the same counter
    assert 2.5 * forward < train < 3.0 * forward  # the first conv needs no input gradient
    demo_forward, demo_train = model_gflop(load_config("demo").model)  # its maps reach 1 x 1
    assert 0 < demo_forward < demo_train < forward


def test_report_windows_weigh_by_time_and_leave_out_the_warmup():
    # Windows of 10 steps at batch 4 (40 images): 20 img/s (2 s), 40 img/s (1 s), 10 img/s (4 s).
    img_per_s, wait = window_figures([10, 20, 30], [20.0, 40.0, 10.0], [0.9, 0.5, 0.25], 4, after=10)
    assert img_per_s == pytest.approx(80 / 5)
    assert wait == pytest.approx((0.5 * 1 + 0.25 * 4) / 5)
    with pytest.raises(ValueError, match="no report window"):
        window_figures([10], [20.0], [0.5], 4, after=10)


def test_bench_model_json_is_one_object_with_mfu_unknown_on_cpu(capsys):
    args = ["bench", "model", "--configs", "small", "--batch", "1", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mfu"] is None and out["device"] == "cpu" and out["mode"] == "eager"
    assert out["img_per_s"] > 0 and out["gflop_per_img"] > out["runs"][0]["gflop_per_img_forward"] > 0
    assert main([*args, "--threads", "1", "--json", "--peak-tflops", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mfu"] == pytest.approx(out["gflop_per_img"] * out["img_per_s"] / 2000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: gpu-check would train, not skip")
def test_gpu_check_without_a_gpu_says_skipped_and_exits_0():
    out = subprocess.run([POSE3D, "bench", "gpu-check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "skipped: no GPU"


def test_gpu_check_sizes_default_to_the_paper_on_a_gpu_and_the_demo_on_cpu():
    """--on-cpu alone must be a few minutes' check: with the paper's defaults (batch 64 at 256 px,
    compiled) it ran out of a 24 GiB machine's memory. What the user passes is kept."""
    parser = argparse.ArgumentParser()
    gpu_check.add_arguments(parser)
    gpu = fill_defaults(parser.parse_args([]), on_gpu=True)
    assert (gpu.config, gpu.batch, gpu.warmup, gpu.steps, gpu.size) == ("paper", 64, 40, 160, "small")
    cpu = fill_defaults(parser.parse_args(["--on-cpu"]), on_gpu=False)
    assert (cpu.config, cpu.batch, cpu.warmup, cpu.steps, cpu.size) == ("demo", 16, 5, 15, "tiny")
    mine = fill_defaults(parser.parse_args(["--on-cpu", "--config", "paper", "--batch", "2"]), on_gpu=False)
    assert (mine.config, mine.batch, mine.steps) == ("paper", 2, 15)


def test_bench_train_runs_every_side_on_one_cpu_worker_whatever_the_config():
    from pose3d.cli.bench.train import side_overrides

    for name in ("paper", "demo"):  # the paper config asks for a GPU
        cfg = load_config(name, side_overrides(batch=2, threads=1))
        assert (cfg.scaling.use_gpu, cfg.scaling.max_workers, cfg.data.batch_size) == (False, 1, 2)
        assert cfg.scaling.cpus_per_worker == 1
