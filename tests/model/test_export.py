"""``pose3d.model.export``: the TorchScript and ONNX files give the eager network's outputs at batch
sizes other than the traced one, declare and record their contract, are exported in eval mode, and
decode (the README's recipe) to what ``pose3d predict`` computes."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

from pose3d import decode
from pose3d.eval.predict import predict
from pose3d.model import export
from pose3d.model.net import ModelConfig, PoseNet

#: Batch sizes the parity tests run: neither is the traced one.
OTHER_BATCHES = (1, 3)


@pytest.fixture(scope="module")
def model() -> PoseNet:
    torch.manual_seed(0)
    return PoseNet(ModelConfig.small()).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> dict[str, str]:
    """Each available format exported once to a file, as ``pose3d export`` writes it."""
    folder = tmp_path_factory.mktemp("export")
    files = {"torchscript": str(export.export_model(model, folder / "net.pt", "torchscript", {"k": "v"}))}
    try:
        export.require_dependencies("onnx")
    except export.ExportDependencyError:
        return files
    files["onnx"] = str(export.export_model(model, folder / "net.onnx", "onnx", {"k": "v"}))
    return files


def _file(exported: dict[str, str], fmt: str) -> str:
    if fmt not in exported:
        pytest.skip(f"onnx and onnxruntime are not installed ({export.INSTALL_HINT})")
    return exported[fmt]


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_exported_file_matches_the_network_at_other_batch_sizes(model, exported, fmt):
    path = _file(exported, fmt)
    assert export.TRACE_BATCH not in OTHER_BATCHES
    for batch in OTHER_BATCHES:
        parity = export.check_parity(model, path, fmt, batch_size=batch, seed=batch)
        assert parity.batch_size == batch
        assert parity.ok() and parity.max_abs <= 1e-4, parity
    heatmaps, depth = export.load_exported(path, fmt)(np.zeros((4, 3, 128, 128), np.float32))
    assert heatmaps.shape == (4, 16, 32, 32) and depth.shape == (4, 16)
    assert heatmaps.dtype == depth.dtype == np.float32


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_exported_file_refuses_a_wrong_image(exported, fmt):
    run = export.load_exported(_file(exported, fmt), fmt)
    # (1, 3, 64, 256) would run through a trace without the check: the regressor's input size matches.
    expected = r"must be \(B, 3, 128, 128\), got \[1, 3, 64, 256\]" if fmt == "torchscript" else "image"
    with pytest.raises(Exception, match=expected):  # torch.jit.Error or onnxruntime's
        run(np.zeros((1, 3, 64, 256), np.float32))
    if fmt == "torchscript":
        module = torch.jit.load(exported[fmt])
        with pytest.raises(torch.jit.Error, match="must be float32"):
            module(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_the_file_records_config_and_contract(model, exported, fmt):
    path = _file(exported, fmt)
    meta = export.read_metadata(path, fmt)
    assert meta["model_config"] == asdict(model.config) and meta["k"] == "v"
    inputs, outputs = export.io_specs(model.config)
    assert meta["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 128, 128]}]
    assert [o["name"] for o in meta["outputs"]] == ["heatmaps", "depth"]
    assert [tuple(o["shape"]) for o in meta["outputs"]] == [o.shape for o in outputs]
    if fmt == "onnx":  # what a runtime checks: the graph's own declaration, batch axis named
        assert export.onnx_graph_specs(path) == (inputs, outputs)
    # Written whole, with a new file's ordinary permissions, nothing left beside it.
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")]


def test_export_is_in_eval_mode_and_leaves_the_model_as_it_is(model):
    model.train()  # BN in train mode normalizes with batch statistics: a trace of it would not match
    try:
        data = export.export_bytes(model, "torchscript")
        assert model.training and all(p.requires_grad for p in model.parameters())
        assert export.check_parity(model, data, "torchscript").ok()  # against the network in eval mode
        assert model.training
    finally:
        model.eval()


def test_decoded_outputs_are_what_pose3d_predicts(model, exported):
    """The README's decode recipe on the exported outputs gives ``pose3d.eval.predict``'s joints."""
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 128, 128), dtype=np.uint8)
    joints_expected, depth_expected = predict(model, images)
    run = export.load_exported(exported["torchscript"], "torchscript")
    heatmaps, depth = run(images.astype(np.float32) / np.float32(255))
    joints_out, _ = decode.heatmaps_to_joints(heatmaps)
    np.testing.assert_array_equal(joints_out, joints_expected)
    np.testing.assert_allclose(depth, depth_expected, atol=1e-6)
    pose_mm = decode.to_3d_mm(joints_out, depth, model.config.output_size)
    assert pose_mm.shape == (3, 16, 3) and np.isfinite(pose_mm).all()


def test_unknown_format_and_missing_packages_say_what_to_do(model, monkeypatch):
    with pytest.raises(ValueError, match="unknown export format 'tflite': choose one of torchscript, onnx"):
        export.export_bytes(model, "tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(export.ExportDependencyError, match=r"pip install 'pose3d\[export\]'") as err:
        export.require_dependencies("onnx")
    assert err.value.missing == ["onnx", "onnxruntime"]
    with pytest.raises(export.ExportDependencyError):
        export.export_bytes(model, "onnx")
    export.require_dependencies("torchscript")  # torch only


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_exported_file_matches_the_network_on_real_person_crops(model, exported, fmt, fixtures_dir):
    """Parity on real photos, not only on random inputs: the COCO fixture's annotated people."""
    import cv2

    from pose3d.eval import photos
    from pose3d.eval.predict import crop_people

    coco = fixtures_dir / "coco"
    boxes = photos.load_person_boxes(str(coco / "test_coco.json"))
    size = model.config.input_size
    crops = []
    for image in sorted(coco.glob("*.jpg")):
        people, _, _ = boxes.lookup(image)
        crops.append(crop_people(cv2.imread(str(image)), people, 1.1, size)[0])
    x = np.concatenate(crops).astype(np.float32) / np.float32(255)
    assert len(x) >= 10
    heatmaps, depth = export.load_exported(_file(exported, fmt), fmt)(x)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    assert np.abs(heatmaps - out.heatmaps[-1].numpy()).max() <= 1e-4
    assert np.abs(depth - out.depth.numpy()).max() <= 1e-4
