"""Heatmaps drawn on the training device (docs/conventions.md, Targets): the torch renderer equals the
numpy one and the Gaussian's formula, and a training step on the device-drawn targets computes the
same loss and the same update as the old path, which shipped CPU-drawn heatmaps in the batch."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from pose3d import losses, targets
from pose3d.data.augment import INPUT_COLUMNS, AugmentParams, make_batch, sample_augmentation
from pose3d.model.net import ModelConfig, PoseNet
from pose3d.train.loop import to_tensors, train_step
from tests.shard_factory import make_rows

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def _old_render_heatmaps(joints_out: np.ndarray, visible: np.ndarray, out_size: int) -> np.ndarray:
    """``targets.render_heatmaps`` as it was when the preprocessing actors shipped heatmaps (verbatim,
    σ = 1): the old path's targets."""
    joints_out = np.asarray(joints_out, np.float32)
    grid = np.arange(out_size, dtype=np.float32)
    gx = np.exp(-((grid - joints_out[..., 0:1]) ** 2) / 2.0)
    gy = np.exp(-((grid - joints_out[..., 1:2]) ** 2) / 2.0)
    inside = np.all((joints_out >= -0.5) & (joints_out <= out_size - 0.5), axis=-1)
    keep = (np.asarray(visible, bool) & inside).astype(np.float32)
    return gy[..., :, None] * gx[..., None, :] * keep[..., None, None]


def _gaussian_2d(joints: np.ndarray, keep: np.ndarray, out_size: int) -> np.ndarray:
    """The target written out: a float64 2D Gaussian of peak 1, σ = 1, at each kept joint. (B, J, O, O)"""
    y, x = np.mgrid[0:out_size, 0:out_size].astype(np.float64)
    jx, jy = joints[..., 0, None, None], joints[..., 1, None, None]
    with np.errstate(invalid="ignore"):
        maps = np.exp(-((x - jx) ** 2 + (y - jy) ** 2) / 2.0)
    return np.where(keep[..., None, None], maps, 0.0)


def _edge_case_joints(out_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(4, 16, 2) output px and (4, 16) visibility: random joints on and around the map (a third
    off it), then the edges: both borders exactly (inside), just past them, far off, a NaN joint,
    pixel centres, and invisible joints on the map."""
    joints = rng.uniform(-3.0, out_size + 2.0, (4, 16, 2))
    visible = rng.random((4, 16)) < 0.8
    lo, hi = -0.5, out_size - 0.5
    edges = np.array([
        [lo, lo], [hi, hi], [lo, hi], [hi, 3.0],          # on the border: drawn
        [lo - 1e-3, 3.0], [3.0, hi + 1e-3], [-40.0, 5.0], [5.0, 1e6],  # just or far off: zero maps
        [np.nan, 4.0], [0.0, 0.0], [out_size - 1.0, 2.0], [2.25, 1.75],
    ])  # fmt: skip
    joints[0, : len(edges)] = edges
    visible[0, : len(edges)] = True
    visible[1, :4] = False  # invisible joints well inside the map
    joints[1, :4] = out_size / 2
    return joints, visible


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("out_size", [16, 17, 32, 64])
def test_torch_heatmaps_equal_the_numpy_renderer_and_the_formula(out_size, device):
    joints, visible = _edge_case_joints(out_size, np.random.default_rng(out_size))
    got = targets.render_heatmaps_torch(
        torch.as_tensor(joints, device=device), torch.as_tensor(visible, device=device), out_size
    )
    assert got.shape == (4, 16, out_size, out_size) and got.dtype == torch.float32
    assert got.device.type == device
    got = got.cpu().numpy()
    numpy_maps = targets.render_heatmaps(joints, visible, out_size)
    np.testing.assert_allclose(got, numpy_maps, rtol=0, atol=1e-5)
    keep = visible & targets.inside_map(joints, out_size)
    np.testing.assert_allclose(got, _gaussian_2d(joints, keep, out_size), rtol=0, atol=1e-5)
    finite = np.isfinite(joints).all(-1).all(-1)
    np.testing.assert_allclose(
        got[finite], _old_render_heatmaps(joints[finite], visible[finite], out_size), rtol=0, atol=1e-5
    )
    # The zero-map rule holds exactly: invisible, off the map, NaN.
    assert not got[~keep].any() and np.isfinite(got).all()
    assert keep[0, :4].all() and not keep[0, 4:9].any() and not keep[1, :4].any()
    assert got[0, 9, 0, 0] == pytest.approx(1.0)  # a joint on a pixel centre peaks at 1 there


def test_inside_map_counts_both_borders_for_numpy_and_torch():
    joints = np.array([[-0.5, -0.5], [15.5, 15.5], [-0.5001, 0.0], [0.0, 15.5001], [np.nan, 1.0]])
    expect = [True, True, False, False, False]
    assert targets.inside_map(joints, 16).tolist() == expect
    assert targets.inside_map(torch.as_tensor(joints), 16).tolist() == expect


def _rows(seed: int = 0) -> dict[str, object]:
    """Shard rows, 3D then 2D-only: 4 lab rows with 3D and 4 COCO-like rows (joints the dataset never
    labels leave the heatmap loss), a few joints unannotated."""
    lab = make_rows(4, has_3d=True, seed=seed, dataset="synthetic_lab")
    coco = make_rows(4, has_3d=False, seed=seed + 1, dataset="coco")
    rows = {
        key: np.concatenate([np.asarray(lab[key], dtype=object if key == "image_jpeg" else None),
                             np.asarray(coco[key], dtype=object if key == "image_jpeg" else None)])
        for key in INPUT_COLUMNS
    }  # fmt: skip
    rows["visible"][[1, 5, 6], [0, 10, 3]] = False
    return rows


@pytest.mark.parametrize("with_depth", [False, True])
def test_a_step_on_device_targets_gives_the_loss_and_update_of_cpu_heatmaps(with_depth):
    rows = _rows()
    # Strong zoom and rotation: some joints leave the map and become invisible.
    aug = sample_augmentation(
        np.random.default_rng(1), 8, AugmentParams(scale=0.5, rotation_deg=40.0, rotation_prob=1.0)
    )
    batch = make_batch(rows, 64, 16, aug)
    assert "heatmaps" not in batch
    assert not batch["visible"].all() and not batch["labelled"].all() and batch["has_3d"][:4].all()

    torch.manual_seed(0)
    cfg = ModelConfig(num_stacks=2, num_modules=1, num_features=16, num_reg_modules=1, input_size=64,
                      output_size=16)  # fmt: skip
    model_old = PoseNet(cfg).train()
    model_new = copy.deepcopy(model_old)
    weights = losses.LossWeights(reg=0.1, geo=0.01)

    # The old path: heatmaps drawn on the CPU in the batch, the loss of the old train_step.
    old = to_tensors(batch, torch.device("cpu"), False)
    old_target = torch.from_numpy(_old_render_heatmaps(batch["joints_out"], batch["visible"], 16))
    opt_old = torch.optim.SGD(model_old.parameters(), lr=0.1)
    out = model_old(old["image"], with_depth=with_depth)
    total, old_terms = losses.pose_loss(
        out.heatmaps,
        out.depth,
        heatmap_target=old_target,
        depth_target=old["depth"],
        has_3d=old["has_3d"],
        visible=old["visible"],
        joints_2d_norm=old["joints_2d_norm"],
        weights=weights,
        labelled=old.get("labelled"),
    )
    opt_old.zero_grad(set_to_none=True)
    total.backward()
    opt_old.step()

    # The new path: joints to the device, heatmaps drawn in the step.
    opt_new = torch.optim.SGD(model_new.parameters(), lr=0.1)
    new_terms = train_step(
        model_new, opt_new, to_tensors(batch, torch.device("cpu"), False), weights, with_depth, nullcontext()
    )

    assert set(new_terms) == set(old_terms) and ("depth" in new_terms) == with_depth
    for name, value in old_terms.items():
        assert new_terms[name] == pytest.approx(float(value), rel=1e-6, abs=1e-9), name
    # The same gradients (gradients reach ~1; the targets differ by float32 rounding of exp, ~1e-7)
    # and weights after the step (SGD: an update is its gradient, where RMSprop's first step turns
    # rounding in a near-zero gradient into a full step).
    for p_old, p_new in zip(model_old.parameters(), model_new.parameters(), strict=True):
        if p_old.grad is not None:
            torch.testing.assert_close(p_new.grad, p_old.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(p_new, p_old, rtol=1e-6, atol=1e-6)
    assert old_terms["heatmap"] > 0 and (not with_depth or old_terms["depth"] > 0)
