"""The network (pose3d.model): shapes, exact parameter count, config checks, gradients, memory
formats and autocast, and a learning test (a falling loss alone can hide a network that learns
nothing useful)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pose3d.decode import heatmaps_to_joints
from pose3d.geometry import output_to_input_px
from pose3d.model import Hourglass, ModelConfig, PoseNet, Residual, count_parameters
from pose3d.targets import render_heatmaps

#: Two stacks (so the merge between stacks exists) at the smallest legal size.
TINY = ModelConfig(
    num_stacks=2, num_modules=1, num_features=16, num_reg_modules=1, input_size=64, output_size=16
)


def _residual_parameter_count(c_in: int, c_out: int) -> int:
    """BN(in) conv1x1(in->m) BN(m) conv3x3(m->m) BN(m) conv1x1(m->out), m = out/2, convs with bias;
    a 1x1 conv skip when in != out. BN has a weight and a bias per channel."""
    m = c_out // 2
    batch_norms = 2 * c_in + 2 * m + 2 * m
    convs = (c_in * m + m) + (9 * m * m + m) + (m * c_out + c_out)
    skip = 0 if c_in == c_out else c_in * c_out + c_out
    return batch_norms + convs + skip


def _expected_parameter_count(stacks: int, modules: int, feats: int, reg_modules: int, out: int) -> int:
    joints = 16
    res = _residual_parameter_count(feats, feats)
    stem = (7 * 7 * 3 * 64 + 64) + 2 * 64
    stem += _residual_parameter_count(64, 128) + _residual_parameter_count(128, 128)
    stem += _residual_parameter_count(128, feats)
    # 4 levels x (upper, down, up) chains of `modules` residuals, plus the innermost chain.
    hourglass = (4 * 3 + 1) * modules * res
    ll = (feats * feats + feats) + 2 * feats  # 1x1 conv + BN
    stack = hourglass + modules * res + ll + (feats * joints + joints)
    merge = (feats * feats + feats) + (joints * feats + feats)  # conv1x1(ll) + conv1x1(heatmaps)
    depth = 4 * reg_modules * res + ((out // 16) ** 2 * feats * joints + joints)
    # every stack is followed by a merge: the last one's feeds the depth regressor.
    return stem + stacks * (stack + merge) + depth


def test_paper_parameter_count_matches_the_layer_formula():
    net = PoseNet(ModelConfig.paper())
    assert count_parameters(net) == _expected_parameter_count(2, 2, 256, 2, 64)
    assert 10_000_000 < count_parameters(net) < 20_000_000
    assert net.depth_head.linear.in_features == 4 * 4 * 256


def test_small_parameter_count_and_groups_partition_the_parameters():
    cfg = ModelConfig.small()
    net = PoseNet(cfg)
    assert count_parameters(net) == _expected_parameter_count(1, 1, 64, 1, 32)
    hourglass_ids = {id(p) for p in net.hourglass_parameters()}
    depth_ids = {id(p) for p in net.depth_parameters()}
    assert not hourglass_ids & depth_ids
    assert hourglass_ids | depth_ids == {id(p) for p in net.parameters()}
    assert {id(p) for p in net.depth_head.parameters()} == depth_ids


def test_paper_forward_shapes_and_dtypes():
    net = PoseNet(ModelConfig.paper()).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 256, 256))
    assert len(out.heatmaps) == 2
    for maps in out.heatmaps:
        assert maps.shape == (1, 16, 64, 64) and maps.dtype == torch.float32
    assert out.depth.shape == (1, 16) and out.depth.dtype == torch.float32


def test_small_forward_shapes_train_mode_and_without_depth():
    net = PoseNet(ModelConfig.small())
    out = net(torch.rand(2, 3, 128, 128))
    assert [m.shape for m in out.heatmaps] == [(2, 16, 32, 32)]
    assert out.depth.shape == (2, 16) and out.depth.dtype == torch.float32
    assert net(torch.rand(2, 3, 128, 128), with_depth=False).depth is None
    assert net.stem(torch.rand(2, 3, 128, 128)).shape == (2, 64, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": 256, "output_size": 32}, "4 x output_size"),
        ({"input_size": 96, "output_size": 24}, "multiple of 16"),
        ({"input_size": 32, "output_size": 8}, "multiple of 16"),
        ({"num_features": 63}, "even"),
        ({"num_stacks": 0}, "num_stacks"),
        ({"num_reg_modules": 0}, "num_reg_modules"),
        ({"num_modules": 1.5}, "num_modules"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_forward_rejects_wrong_image_size():
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        PoseNet(TINY)(torch.rand(1, 3, 128, 128))


def test_residual_skip_is_identity_or_projection():
    same, wider = Residual(8, 8), Residual(4, 8)
    assert isinstance(same.skip, torch.nn.Identity)
    assert isinstance(wider.skip, torch.nn.Conv2d) and wider.skip.weight.shape == (8, 4, 1, 1)
    x = torch.randn(2, 8, 5, 5)
    last = same.branch[-1]
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
    assert torch.equal(same(x), x)  # zero branch: the identity skip alone
    assert wider(torch.randn(2, 4, 5, 5)).shape == (2, 8, 5, 5)


def _zero_branches(module: torch.nn.Module) -> None:
    """Make every Residual the identity (its branch's last conv outputs zero)."""
    for res in module.modules():
        if isinstance(res, Residual):
            torch.nn.init.zeros_(res.branch[-1].weight), torch.nn.init.zeros_(res.branch[-1].bias)


def test_hourglass_wiring_with_identity_residuals():
    # With identity residuals, one level is x + up(maxpool(x)); two levels x + up(H1(maxpool(x))).
    x = torch.tensor([[1.0, 2, 0, 5], [3, 4, 1, 1], [9, 0, 2, 2], [0, 1, 3, 7]]).reshape(1, 1, 4, 4)
    x = x.repeat(1, 2, 1, 1)
    one, two = Hourglass(1, 2, 2).eval(), Hourglass(2, 2, 1).eval()
    _zero_branches(one), _zero_branches(two)
    pooled = torch.tensor([[4.0, 5], [9, 7]])
    expect_one = x[0, 0] + pooled.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(one(x)[0, 0], expect_one)
    inner = pooled + 9.0  # H1 on the 2x2 map: + its max (9) everywhere
    expect_two = x[0, 0] + inner.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(two(x)[0, 1], expect_two)


def _weighted_output_sum(out) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    total = sum((m * torch.rand(m.shape, generator=gen)).sum() for m in out.heatmaps)
    if out.depth is not None:
        total = total + (out.depth * torch.rand(out.depth.shape, generator=gen)).sum()
    return total


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = PoseNet(TINY)
    _weighted_output_sum(net(torch.rand(2, 3, 64, 64))).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_stage_one_forward_gives_every_2d_parameter_a_gradient_and_none_to_the_regressor():
    net = PoseNet(TINY)
    _weighted_output_sum(net(torch.rand(2, 3, 64, 64), with_depth=False)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.hourglass_parameters())
    assert all(p.grad is None for p in net.depth_parameters())


def test_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    net = PoseNet(TINY).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(images)
        net_cl = net.to(memory_format=torch.channels_last)
        cl = net_cl(images.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net_cl(images.contiguous(memory_format=torch.channels_last))
    for a, b, h in zip(
        ref.heatmaps + [ref.depth], cl.heatmaps + [cl.depth], half.heatmaps + [half.depth], strict=True
    ):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        assert h.dtype == torch.float32 and torch.isfinite(h).all()
        assert (h - a).abs().max() <= 0.1 * a.abs().max() + 1e-3  # bf16 keeps ~3 significant digits
    net_cl.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net_cl(images.contiguous(memory_format=torch.channels_last))
    _weighted_output_sum(out).backward()
    assert all(torch.isfinite(p.grad).all() for p in net_cl.parameters())


def _synthetic_blob_images(rng: np.random.Generator, count: int, input_size: int, output_size: int):
    """One coloured disc per joint (fixed colour per joint) on black, at a random place: the joints
    are a random permutation of a 4x4 grid of cells, jittered +-1 output px, so discs never cover
    another's centre. A joint's depth in [-0.5, 0.5] sets its disc radius (2..4 input px).
    Returns images (N, 3, I, I) float in [0, 1], joints (N, 16, 2) output px, depth (N, 16)."""
    joints_n = 16
    palette = [c for c in itertools.product((0.0, 0.5, 1.0), repeat=3) if max(c) == 1.0][:joints_n]
    cell = output_size // 4
    cells = np.stack([rng.permutation(joints_n) for _ in range(count)])
    centre = np.stack([cells % 4, cells // 4], -1) * cell + (cell - 1) / 2
    joints = centre + rng.uniform(-1.0, 1.0, (count, joints_n, 2))
    depth = rng.uniform(-0.5, 0.5, (count, joints_n)).astype(np.float32)
    radius = 2.0 + 2.0 * (depth + 0.5)
    centres = output_to_input_px(joints, input_size / output_size)
    images = np.zeros((count, input_size, input_size, 3), np.float32)
    fixed = 16  # cv2 draws at 1/16 px with shift=4
    for n, j in itertools.product(range(count), range(joints_n)):
        c = (int(round(centres[n, j, 0] * fixed)), int(round(centres[n, j, 1] * fixed)))
        cv2.circle(images[n], c, int(round(radius[n, j] * fixed)), palette[j], -1, cv2.LINE_AA, 4)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), joints, depth


def test_small_model_overfits_sixteen_images():
    """The model must actually learn positions and depths, not only lower a loss."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = ModelConfig(
        num_stacks=1, num_modules=1, num_features=32, num_reg_modules=1, input_size=64, output_size=16
    )
    images, joints, depth = _synthetic_blob_images(rng, 16, cfg.input_size, cfg.output_size)
    images = images.contiguous(memory_format=torch.channels_last)  # ~1.5x faster on CPU
    heatmap_target = torch.from_numpy(
        render_heatmaps(joints, np.ones(joints.shape[:2], bool), cfg.output_size)
    )
    depth_target = torch.from_numpy(depth)
    net = PoseNet(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(150):
        out = net(images)
        heatmap_loss = F.mse_loss(out.heatmaps[-1], heatmap_target)
        depth_loss = F.mse_loss(out.depth, depth_target)
        if step == 0:
            first_heatmap_loss, first_depth_loss = heatmap_loss.item(), depth_loss.item()
        opt.zero_grad()
        (100.0 * heatmap_loss + depth_loss).backward()  # the heatmap MSE is ~100x smaller in scale
        opt.step()

    net.eval()  # judged as at inference (the first losses above came from a train-mode step)
    with torch.no_grad():
        out = net(images)
    heatmap_loss = F.mse_loss(out.heatmaps[-1], heatmap_target).item()
    depth_loss = F.mse_loss(out.depth, depth_target).item()
    predicted, _ = heatmaps_to_joints(out.heatmaps[-1].numpy())
    error = np.linalg.norm(predicted - joints, axis=-1)
    assert np.mean(error <= 1.5) >= 0.9, f"mean joint error {error.mean():.2f} output px"
    assert heatmap_loss <= first_heatmap_loss / 10
    assert depth_loss <= first_depth_loss / 5
    # and 5x better than predicting the targets' mean (the initial loss alone can be inflated by init)
    assert depth_loss <= depth.var() / 5


def test_bench_model_prints_a_row_per_config(capsys):
    from pose3d.cli.main import main

    threads = torch.get_num_threads()  # the benchmark sets its own thread count
    try:
        argv = ["bench", "model", "--configs", "small", "--batch", "1", "--repeats", "1", "--warmup", "0"]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    rows = [row.split() for row in capsys.readouterr().out.splitlines() if row.startswith("small ")]
    assert len(rows) == 1
    params = f"{count_parameters(PoseNet(ModelConfig.small())):,}"
    # name, params, GFLOP/img forward and forward+backward, batch, mode
    assert rows[0][:2] == ["small", params] and rows[0][4:6] == ["1", "eager"]
    assert 0 < float(rows[0][2]) < float(rows[0][3])
    assert main(["bench", "model", "--configs", "huge"]) == 2
    assert "--configs huge: config 'huge': no such file, and not a packaged config" in capsys.readouterr().err
