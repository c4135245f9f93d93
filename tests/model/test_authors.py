"""The authors' released network imported without their code (``pose3d.model.authors``).

The tests write checkpoints in the layout of the authors' ``hgreg-3d.pth``: a whole model object
pickled by torch's legacy (non-zip) writer, whose classes live in modules named as theirs
(``models.hg_3d``, ``models.layers.Residual``). The classes below are written here from the
architecture of their network (attribute names and computation, docs/design.md "The authors'
weights"); they exist in ``sys.modules`` only while a file is written, so reading it cannot import
them.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose3d import decode, skeleton
from pose3d.eval.predict import predict_image
from pose3d.model import authors
from pose3d.model.io import UnsafeCheckpointError, load_model

J = skeleton.NUM_JOINTS


# --- a network laid out as the authors' ---------------------------------------------------------


class Residual(nn.Module):
    """Their residual: bn, relu, conv1, bn1, conv2, bn2, conv3 (+ conv4 skip when sizes differ)."""

    def __init__(self, num_in: int, num_out: int) -> None:
        super().__init__()
        half = num_out // 2
        self.numIn, self.numOut = num_in, num_out
        self.bn = nn.BatchNorm2d(num_in)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_in, half, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, num_out, kernel_size=1)
        if num_in != num_out:
            self.conv4 = nn.Conv2d(num_in, num_out, kernel_size=1)

    def forward(self, x):
        out = self.conv1(self.relu(self.bn(x)))
        out = self.conv2(self.relu(self.bn1(out)))
        out = self.conv3(self.relu(self.bn2(out)))
        return out + (self.conv4(x) if self.numIn != self.numOut else x)


class Hourglass(nn.Module):
    """Their hourglass: up1_, low1 (pool), low1_, low2 (deeper) or low2_, low3_, up2 (upsample)."""

    def __init__(self, n: int, modules: int, feats: int) -> None:
        super().__init__()
        self.n, self.nModules = n, modules
        self.up1_ = nn.ModuleList(Residual(feats, feats) for _ in range(modules))
        self.low1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.low1_ = nn.ModuleList(Residual(feats, feats) for _ in range(modules))
        if n > 1:
            self.low2 = Hourglass(n - 1, modules, feats)
        else:
            self.low2_ = nn.ModuleList(Residual(feats, feats) for _ in range(modules))
        self.low3_ = nn.ModuleList(Residual(feats, feats) for _ in range(modules))
        self.up2 = nn.Upsample(scale_factor=2)

    def forward(self, x):
        up1 = x
        for layer in self.up1_:
            up1 = layer(up1)
        low = self.low1(x)
        for layer in self.low1_:
            low = layer(low)
        if self.n > 1:
            low = self.low2(low)
        else:
            for layer in self.low2_:
                low = layer(low)
        for layer in self.low3_:
            low = layer(low)
        return up1 + self.up2(low)


class HourglassNet3D(nn.Module):
    """Their whole network; forward returns [heatmaps of each stack..., depth (B, J)]."""

    def __init__(self, stacks: int, modules: int, feats: int, reg_modules: int) -> None:
        super().__init__()
        self.nStack, self.nModules, self.nRegModules = stacks, modules, reg_modules
        self.conv1_ = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.r1 = Residual(64, 128)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.r4 = Residual(128, 128)
        self.r5 = Residual(128, feats)
        self.hourglass = nn.ModuleList(Hourglass(4, modules, feats) for _ in range(stacks))
        self.Residual = nn.ModuleList(Residual(feats, feats) for _ in range(stacks * modules))
        self.lin_ = nn.ModuleList(
            nn.Sequential(nn.Conv2d(feats, feats, 1), nn.BatchNorm2d(feats), self.relu) for _ in range(stacks)
        )
        self.tmpOut = nn.ModuleList(nn.Conv2d(feats, J, 1) for _ in range(stacks))
        self.ll_ = nn.ModuleList(nn.Conv2d(feats, feats, 1) for _ in range(stacks))
        self.tmpOut_ = nn.ModuleList(nn.Conv2d(J, feats, 1) for _ in range(stacks))
        self.reg_ = nn.ModuleList(Residual(feats, feats) for _ in range(4 * reg_modules))
        self.reg = nn.Linear(4 * 4 * feats, J)

    def forward(self, x):
        x = self.r1(self.relu(self.bn1(self.conv1_(x))))
        x = self.r5(self.r4(self.maxpool(x)))
        out = []
        for i in range(self.nStack):
            ll = self.hourglass[i](x)
            for j in range(self.nModules):
                ll = self.Residual[i * self.nModules + j](ll)
            ll = self.lin_[i](ll)
            maps = self.tmpOut[i](ll)
            out.append(maps)
            x = x + self.ll_[i](ll) + self.tmpOut_[i](maps)
        for i in range(4):
            for j in range(self.nRegModules):
                x = self.reg_[i * self.nRegModules + j](x)
            x = self.maxpool(x)
        out.append(self.reg(x.view(x.size(0), -1)))
        return out


def _their_modules() -> dict[str, types.ModuleType]:
    """Modules named as the authors' holding the classes above, for pickling by reference."""
    hg = types.ModuleType("models.hg_3d")
    res = types.ModuleType("models.layers.Residual")
    for cls, module in ((HourglassNet3D, hg), (Hourglass, hg), (Residual, res)):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    return {
        "models": types.ModuleType("models"),
        "models.layers": types.ModuleType("models.layers"),
        "models.hg_3d": hg,
        "models.layers.Residual": res,
    }


def _their_network(stacks=2, modules=1, feats=32, reg_modules=1, seed=0) -> HourglassNet3D:
    """Their network with random weights and random BN statistics (so a wrong mapping shows)."""
    torch.manual_seed(seed)
    net = HourglassNet3D(stacks, modules, feats, reg_modules)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


class _Thnn:
    """Pickles as PyTorch 0.4's per-layer ``_backend``: a call of the THNN backend getter."""

    def __reduce__(self):
        from torch.nn.backends import thnn

        return (thnn._get_thnn_function_backend, ())


class _Pickler04(pickle.Pickler):
    """Writes Parameters as PyTorch 0.4 did: ``Parameter(tensor, requires_grad)``."""

    def reducer_override(self, obj):
        if isinstance(obj, nn.Parameter):
            return (nn.Parameter, (obj.data, obj.requires_grad))
        return NotImplemented


def _save_their_model(net: nn.Module, path: Path, monkeypatch, torch04: bool = False) -> Path:
    """``torch.save`` of the whole model in the legacy layout, their module names registered only
    while writing. ``torch04``: also their PyTorch's ``_backend`` objects and Parameter form, and no
    BatchNorm counters (0.4.0 had none)."""
    with monkeypatch.context() as patch:
        for name, module in _their_modules().items():
            patch.setitem(sys.modules, name, module)
        kwargs = {}
        if torch04:
            for m in net.modules():
                m._backend = _Thnn()
                m._buffers.pop("num_batches_tracked", None)
            pickler = types.ModuleType("pickle04")
            pickler.Pickler, pickler.dump = _Pickler04, pickle.dump
            kwargs["pickle_module"] = pickler
        with warnings.catch_warnings():  # torch cannot find these classes' source: irrelevant here
            warnings.simplefilter("ignore", UserWarning)
            torch.save(net, path, _use_new_zipfile_serialization=False, **kwargs)
    assert "models.hg_3d" not in sys.modules
    return path


def _their_outputs(net: HourglassNet3D, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Their demo's input path: BGR / 256. Returns last heatmaps (1, J, 64, 64) and depth (1, J)."""
    x = torch.from_numpy(image_bgr.transpose(2, 0, 1).copy()).float()[None] / 256.0
    with torch.no_grad():
        out = net(x)
    return out[-2].numpy(), out[-1].numpy()


def _photo(seed=1) -> np.ndarray:
    """A 256 x 256 BGR 'photo' with structure (smooth blobs), not only noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    img = np.stack([np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
    img = 127.5 + 100 * img + rng.normal(0, 10, (256, 256, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("torch04", [False, True], ids=["legacy-file", "pytorch-0.4-objects"])
def test_a_photo_gives_the_authors_outputs_through_pose3ds_input_path(tmp_path, monkeypatch, torch04):
    net = _their_network()
    image = _photo()
    their_maps, their_depth = _their_outputs(net, image)
    path = _save_their_model(net, tmp_path / "hgreg-3d.pth", monkeypatch, torch04=torch04)
    saved = net.state_dict()  # without BatchNorm counters when written as PyTorch 0.4 did

    model, summary = authors.import_authors_weights(path)
    assert model.config.num_stacks == 2 and model.config.num_features == 32
    assert (model.config.input_size, model.config.output_size) == (256, 64)
    assert summary["tensors"] == len(saved)
    assert any(k.endswith("num_batches_tracked") for k in saved) != torch04

    # pose3d's input: RGB / 255 of the crop predict_image takes (the whole 256 px photo)
    x = torch.from_numpy(image[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255.0
    with torch.no_grad():
        out = model(x)
    np.testing.assert_allclose(out.heatmaps[-1].numpy(), their_maps, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(out.depth.numpy(), their_depth, atol=2e-5, rtol=1e-4)

    result = predict_image(model, image, box=(0, 0, 256, 256), margin=1.0)
    their_joints_out, _ = decode.heatmaps_to_joints(their_maps)
    np.testing.assert_allclose(result.joints_2d, (their_joints_out[0] + 0.5) * 4 - 0.5, atol=1e-6)
    their_mm = decode.to_3d_mm(their_joints_out, their_depth, 64)[0]
    np.testing.assert_allclose(result.pose_mm, their_mm, atol=1e-2)


def test_the_paper_network_maps_every_tensor_one_to_one():
    net = HourglassNet3D(2, 2, 256, 2)
    state = net.state_dict()
    model = authors.authors_to_posenet(state)
    assert model.config == authors.ModelConfig.paper()
    assert len(state) == len(model.state_dict()) == 1446
    ours = model.state_dict()
    assert torch.equal(ours["depth_head.linear.weight"], state["reg.weight"])
    assert torch.equal(ours["stacks.1.hourglass.inner.inner.inner.inner.0.branch.5.weight"],
                       state["hourglass.1.low2.low2.low2.low2_.0.conv2.weight"])  # fmt: skip
    assert torch.equal(ours["merges.0.heatmaps.bias"], state["tmpOut_.0.bias"])
    assert torch.equal(ours["depth_head.merge.features.weight"], state["ll_.1.weight"])


def test_a_state_dict_file_with_a_dataparallel_prefix_loads(tmp_path):
    net = _their_network(stacks=1, feats=16)
    path = tmp_path / "sd.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    state = authors.read_authors_state_dict(path)
    assert set(state) == set(net.state_dict())
    model = authors.authors_to_posenet(state, str(path))
    assert model.config.num_stacks == 1 and model.config.num_features == 16


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_layout", [False, True], ids=["legacy", "zip"])
def test_a_file_naming_anything_else_is_refused_and_nothing_runs(tmp_path, zip_layout):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "x": _RunsCode(marker)}, path,
               _use_new_zipfile_serialization=zip_layout)  # fmt: skip
    with pytest.raises(UnsafeCheckpointError, match=r"names posix\.system") as err:
        authors.read_authors_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


class _TensorRecord:
    """Pickles as a tensor record with the given size and stride over a 4-element storage."""

    def __init__(self, size, stride) -> None:
        self.size, self.stride = size, stride

    def __reduce__(self):
        with warnings.catch_warnings():  # a typed storage is what torch's legacy writer names
            warnings.simplefilter("ignore")
            storage = torch.zeros(4).storage()
        return (torch._utils._rebuild_tensor_v2, (storage, 0, self.size, self.stride, False, OrderedDict()))


@pytest.mark.parametrize(("size", "stride"), [((4,), (-1,)), ((1000,), (0,)), ((8,), (1,))],
                         ids=["negative-stride", "zero-stride-overreach", "past-the-end"])  # fmt: skip
def test_a_tensor_record_outside_its_storage_is_refused(tmp_path, size, stride):
    path = tmp_path / "crafted.pth"
    torch.save({"w": _TensorRecord(size, stride)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(authors.AuthorsWeightsError, match="negative|past its storage"):
        authors.read_authors_state_dict(path)


def test_a_file_cannot_alter_the_functions_it_may_name(tmp_path):
    # GLOBAL torch._utils _rebuild_parameter, then BUILD with a state: pickle would setattr on it
    data = b"\x80\x02ctorch._utils\n_rebuild_parameter\n}X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(authors.AuthorsWeightsError, match="alter a function"):
        authors._RestrictedUnpickler(io.BytesIO(data), "crafted").load()


def test_files_that_are_not_their_network_say_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        authors.read_authors_state_dict(tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(authors.AuthorsWeightsError, match="notes.pth"):
        authors.read_authors_state_dict(text)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(
        authors.AuthorsWeightsError, match="no conv1_.weight: not the authors' HourglassNet3D"
    ):
        authors.authors_to_posenet(authors.read_authors_state_dict(other), str(other))
    truncated = tmp_path / "truncated.pth"
    torch.save(
        _their_network(stacks=1, feats=16).state_dict(), truncated, _use_new_zipfile_serialization=False
    )
    with pytest.raises(authors.AuthorsWeightsError, match="truncated.pth: truncated: "):
        truncated.write_bytes(truncated.read_bytes()[:-1001])
        authors.read_authors_state_dict(truncated)
    # one storage of 3 float32 (12 bytes) last: cut inside its bytes, then inside its count header
    torch.save({"w": torch.zeros(3)}, truncated, _use_new_zipfile_serialization=False)
    whole = truncated.read_bytes()
    for cut, match in ((5, "holds 7 of its 12 bytes"), (16, "ends before storage")):
        truncated.write_bytes(whole[:-cut])
        with pytest.raises(authors.AuthorsWeightsError, match=f"truncated.pth: truncated: .*{match}"):
            authors.read_authors_state_dict(truncated)
    zipped = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(3)}, zipped)
    zipped.write_bytes(zipped.read_bytes()[:200])
    with pytest.raises(authors.AuthorsWeightsError, match="cut.pth: a corrupt or truncated zip"):
        authors.read_authors_state_dict(zipped)
    state = _their_network(stacks=1, feats=16).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(authors.AuthorsWeightsError, match="1 tensor.*no place.*extra.weight"):
        authors.authors_to_posenet(state)
    state.pop("extra.weight")
    state["reg.weight"] = torch.zeros(J, 7)
    with pytest.raises(authors.AuthorsWeightsError, match="reg.weight takes 7 inputs"):
        authors.authors_to_posenet(state)


def test_import_weights_command_writes_a_checkpoint_pose3d_loads(tmp_path, monkeypatch, capsys):
    from pose3d.cli.main import main

    net = _their_network(stacks=1, feats=16)
    path = _save_their_model(net, tmp_path / "hgreg-3d.pth", monkeypatch, torch04=True)
    out = tmp_path / "imported"
    assert main(["import-weights", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 stack(s)" in printed and str(out) in printed
    model = load_model(out)
    image = _photo(2)
    their_maps, their_depth = _their_outputs(net, image)
    with torch.no_grad():
        got = model(torch.from_numpy(image[..., ::-1].transpose(2, 0, 1).copy()).float()[None] / 255.0)
    np.testing.assert_allclose(got.depth.numpy(), their_depth, atol=2e-5, rtol=1e-4)
    assert (out / "imported.json").is_file()

    assert main(["import-weights", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.pth: no such file" in capsys.readouterr().err
    assert main(["import-weights", str(path), "--out", str(out)]) == 2  # refuses to overwrite
    assert "already holds" in capsys.readouterr().err


def test_real_person_crops_give_the_authors_outputs(tmp_path, monkeypatch, fixtures_dir):
    """The same check on real photos: the COCO fixture's annotated people, cropped by pose3d, fed
    their way (BGR / 256) to their network and pose3d's way (RGB / 255) to the import."""
    import cv2

    from pose3d.eval import photos
    from pose3d.eval.predict import crop_people

    net = _their_network()
    model, _ = authors.import_authors_weights(_save_their_model(net, tmp_path / "h.pth", monkeypatch))
    coco = fixtures_dir / "coco"
    boxes = photos.load_person_boxes(str(coco / "test_coco.json"))
    crops = []
    for image in sorted(coco.glob("*.jpg")):
        people, _, _ = boxes.lookup(image)
        crops.append(crop_people(cv2.imread(str(image)), people, 1.1, 256)[0])
    rgb = np.concatenate(crops)  # (N, 3, 256, 256) uint8, RGB
    assert len(rgb) >= 10
    with torch.no_grad():
        theirs = net(torch.from_numpy(rgb[:, ::-1].copy()).float() / 256.0)
        ours = model(torch.from_numpy(rgb).float() / 255.0)
    np.testing.assert_allclose(ours.heatmaps[-1].numpy(), theirs[-2].numpy(), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(ours.depth.numpy(), theirs[-1].numpy(), atol=2e-5, rtol=1e-4)
