"""``pose3d export`` run as a user runs it, on a small checkpoint: it writes the file, prints its
inputs, outputs and size and a parity figure within 1e-4; every user mistake exits 2 with one line
that names it, and a parity failure exits 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pose3d.cli import export as export_cli
from pose3d.cli.main import main
from pose3d.model import export
from pose3d.model.io import save_model
from pose3d.model.net import ModelConfig, PoseNet

POSE3D = Path(sys.executable).parent / "pose3d"
PARITY = re.compile(r"max abs difference (\S+) .*, within 1e-04")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cfg = ModelConfig.small()
    return str(save_model(tmp_path_factory.mktemp("ckpt") / "ckpt", PoseNet(cfg), cfg).parent)


def _check_summary(stdout: str, out: Path) -> float:
    assert f"wrote {out}: " in stdout and f"({out.stat().st_size:,} bytes)" in stdout, stdout
    assert re.search(r"input\s+image\s+float32 \(batch, 3, 128, 128\)", stdout), stdout
    assert re.search(r"output\s+heatmaps\s+float32 \(batch, 16, 32, 32\)", stdout), stdout
    assert re.search(r"output\s+depth\s+float32 \(batch, 16\)", stdout), stdout
    match = PARITY.search(stdout)
    assert match, stdout
    return float(match.group(1))


def test_onnx_export_as_a_user_runs_it(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason=f"onnxruntime is not installed ({export.INSTALL_HINT})")
    import onnxruntime

    out = tmp_path / "models" / "pose.onnx"  # the folder does not exist yet
    proc = subprocess.run(
        [str(POSE3D), "export", checkpoint, "--format", "onnx", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert _check_summary(proc.stdout, out) <= 1e-4
    assert "parity: onnxruntime" in proc.stdout
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    heatmaps, depth = session.run(None, {"image": np.zeros((5, 3, 128, 128), np.float32)})
    assert heatmaps.shape == (5, 16, 32, 32) and depth.shape == (5, 16)


def test_torchscript_export_and_no_check(checkpoint, tmp_path, capsys):
    out = tmp_path / "pose.pt"
    assert main(["export", checkpoint, "--format", "TorchScript", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert _check_summary(stdout, out) <= 1e-4 and "parity: torch.jit.load" in stdout
    heatmaps, depth = torch.jit.load(str(out))(torch.zeros(1, 3, 128, 128))
    assert heatmaps.shape == (1, 16, 32, 32) and depth.shape == (1, 16)
    assert not heatmaps.requires_grad  # .numpy() works as it is

    assert main(["export", checkpoint, "--format", "torchscript", "--out", str(out), "--no-check"]) == 0
    stdout = capsys.readouterr().out
    assert "parity check skipped (--no-check)" in stdout and "max abs difference" not in stdout


def test_a_parity_failure_exits_1_and_keeps_the_file(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "check_parity", lambda *a, **k: export.ParityResult(3, 2e-3, 1e-7))
    out = tmp_path / "pose.pt"
    assert main(["export", checkpoint, "--format", "torchscript", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "max abs difference 2.0e-03" in captured.out and "ABOVE 1e-04" in captured.out
    assert f"differ from the network's by 2.0e-03 (> 1e-04); {out} is kept" in captured.err
    assert out.is_file()


def _user_error(args: list[str], capsys) -> str:
    assert main(["export", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("pose3d export: error: "), captured
    return captured.err


def test_user_mistakes_exit_2_naming_them(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.pt").write_bytes(b"not a checkpoint")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = {
        "no such checkpoint folder": [str(tmp_path / "missing"), "--format", "onnx", "--out", out],
        "not a pose3d checkpoint (no model.pt)": [str(empty), "--format", "onnx", "--out", out],
        "cannot load a pose3d checkpoint": [str(garbage), "--format", "onnx", "--out", out],
        "is a file; CKPT is the checkpoint folder that holds model.pt": [
            os.path.join(checkpoint, "model.pt"), "--format", "onnx", "--out", out,
        ],
        "--format tflite: unknown format; choose one of torchscript, onnx": [
            checkpoint, "--format", "tflite", "--out", out,
        ],
        "a file is in the way": [checkpoint, "--format", "onnx", "--out", str(a_file / "x.onnx")],
        "is a folder; give a file name": [checkpoint, "--format", "onnx", "--out", str(tmp_path)],
    }  # fmt: skip
    for expected, args in cases.items():
        assert expected in _user_error(args, capsys), args
    assert not os.path.exists(out)


def test_missing_onnx_packages_name_the_extra(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    args = [checkpoint, "--format", "onnx", "--out", str(tmp_path / "x.onnx")]
    err = _user_error(args, capsys)
    assert "needs onnxruntime" in err and "pip install 'pose3d[export]'" in err and "--no-check" in err
    monkeypatch.setitem(sys.modules, "onnx", None)
    err = _user_error([*args, "--no-check"], capsys)
    assert "needs onnx," in err and "pip install 'pose3d[export]'" in err


def test_help_explains_formats_inputs_outputs_and_decoding(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needed in ("torchscript", "onnx", "float32 (B, 3, S, S)", "heatmaps", "depth", "heatmaps_to_joints"):
        assert needed in text, needed
    assert export_cli.FORMATS == export.FORMATS
