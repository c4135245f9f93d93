"""``pose3d bench model``: parameter count and forward / forward+backward time of the network
(paper and small configs) on this machine's CPU or GPU."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

HELP = "parameters and forward / forward+backward time of the paper and small networks"

#: Default batch per config: the paper's training batch is 6; 4 keeps a CPU run short.
DEFAULT_BATCH = {"paper": 4, "small": 16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs", default="paper,small", help="comma-separated presets to time (default: paper,small)"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="batch size for every config (default: 4 paper, 16 small)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per measurement (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (default: 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--bf16", action="store_true", help="run under torch.autocast(bfloat16)")


def _timed(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> tuple[float, float]:
    """(median, best) seconds of ``step()`` over ``repeats`` calls after ``warmup`` untimed ones.
    The best is the figure least disturbed by other processes on a shared machine."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times[0]


def _forward_gflop(net: torch.nn.Module, input_size: int, device: torch.device) -> float:
    """Forward GFLOP per image (torch's FLOP counter: 2 per multiply-add of convs and linears)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, input_size, input_size, device=device))
    return counter.get_total_flops() / 1e9


def _measure(
    net: torch.nn.Module,
    images: torch.Tensor,
    autocast: Callable[[], AbstractContextManager],
    args: argparse.Namespace,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(median, best) seconds per batch of inference (eval, no_grad) and of a training
    forward+backward (train mode)."""
    import torch

    def forward() -> None:
        net.eval()
        with torch.no_grad(), autocast():
            net(images)

    def forward_backward() -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        with autocast():
            out = net(images)
            loss = sum(m.square().mean() for m in out.heatmaps) + out.depth.square().mean()
        loss.backward()

    device = images.device
    return (
        _timed(forward, device, args.repeats, args.warmup),
        _timed(forward_backward, device, args.repeats, args.warmup),
    )


def run(args: argparse.Namespace) -> int:
    import contextlib

    import torch

    from pose3d.cli.errors import UserError
    from pose3d.model import ModelConfig, PoseNet, count_parameters

    presets = {"paper": ModelConfig.paper, "small": ModelConfig.small}
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in presets]
    if unknown or not names:
        raise UserError(f"unknown config(s) {unknown or names}; choose from {sorted(presets)}")
    if args.repeats < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        raise UserError("--repeats and --batch must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    def autocast():
        if args.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    print(
        f"pose3d bench model: torch {torch.__version__}, device {device}, torch threads "
        f"{torch.get_num_threads()}, channels_last {args.channels_last}, bf16 {args.bf16}, "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    print(
        f"{'config':<7} {'params':>11} {'GFLOP/img':>9} {'batch':>5} {'fwd s med/min':>15} {'fwd img/s':>9} "
        f"{'fwd+bwd s med/min':>17} {'train img/s':>11}"
    )
    torch.manual_seed(0)
    for name in names:
        config = presets[name]()
        batch = args.batch or DEFAULT_BATCH[name]
        net = PoseNet(config).to(device, memory_format=memory_format)
        gflop = _forward_gflop(net, config.input_size, device)
        images = torch.rand(batch, 3, config.input_size, config.input_size, device=device)
        fwd, train = _measure(net, images.contiguous(memory_format=memory_format), autocast, args)
        print(
            f"{name:<7} {count_parameters(net):>11,} {gflop:>9.2f} {batch:>5} "
            f"{fwd[0]:>7.3f}/{fwd[1]:<7.3f} {batch / fwd[0]:>9.1f} "
            f"{train[0]:>8.3f}/{train[1]:<8.3f} {batch / train[0]:>11.1f}"
        )
    print("img/s at the median time; fwd = eval + no_grad, fwd+bwd = train mode, loss on all outputs")
    return 0
