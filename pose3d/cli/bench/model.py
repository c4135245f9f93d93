"""``pose3d bench model``: the network's parameters, GFLOP per image, img/s and MFU, for inference
(forward) and for a training step (forward+backward), eager and (``--compile``) compiled side by
side, on this machine's CPU or GPU.

MFU (model FLOPs utilization) = model FLOPs per image x img/s / the device's peak. Model FLOPs are
counted by torch's FLOP counter (2 per multiply-add of convolutions and linear layers; BatchNorm,
ReLU and pooling count 0), on the meta device, so counting costs no compute. The peak is the
device's dense bf16 tensor throughput from ``PEAK_BF16_TFLOPS`` or ``--peak-tflops``; a CPU has no
entry, so its MFU is unknown unless ``--peak-tflops`` gives one.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from pose3d.model import ModelConfig

HELP = "GFLOP per image, img/s and MFU of the network (inference and training step), eager vs compiled"

#: Default batch per config: the paper's training batch is 6; 4 keeps a CPU run short.
DEFAULT_BATCH = {"paper": 4, "demo": 16, "small": 16}

#: Dense bf16 tensor-core peak in TFLOP/s (vendor datasheets, without sparsity), by a pattern of
#: ``torch.cuda.get_device_name()``; the first match counts, so variants come before their family.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bH200\b", 989.0),  # the H100 SXM's chip and clocks with more memory
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b.*\bNVL\b", 835.0),
    (r"\bH100\b", 989.0),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    (r"\bA100\b", 312.0),
    (r"\bL4\b", 121.0),  # not the L40 or L40S
)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a GPU named ``device_name`` (as torch names it), or None
    for a device not in ``PEAK_BF16_TFLOPS`` (every CPU)."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops
    return None


def mfu(gflop_per_img: float, img_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization, a fraction: ``gflop_per_img`` (GFLOP) x ``img_per_s`` / ``peak``
    (TFLOP/s); None when the peak is unknown."""
    if peak is None or peak <= 0:
        return None
    return gflop_per_img * img_per_s / (peak * 1e3)


def format_mfu(value: float | None) -> str:
    """MFU as a percentage, or "unknown" (no peak for the device)."""
    return "unknown" if value is None else f"{100 * value:.1f} %"


def model_gflop(config: ModelConfig) -> tuple[float, float]:
    """(forward, forward+backward) GFLOP per image of the network ``config`` with the depth
    regressor (the step of stages 2 and 3), counted on the meta device in train mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pose3d.model import PoseNet

    batch = 2  # BatchNorm in train mode wants 2 values per channel, and the demo's maps reach 1 x 1
    with torch.device("meta"):
        net = PoseNet(config).train()
        images = torch.zeros(batch, 3, config.input_size, config.input_size)
    with FlopCounterMode(display=False) as counter:
        out = net(images)
        forward = counter.get_total_flops()
        (sum(m.sum() for m in out.heatmaps) + out.depth.sum()).backward()
        total = counter.get_total_flops()
    return forward / batch / 1e9, total / batch / 1e9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        default="paper,demo",
        help="comma-separated training configs (packaged names or YAML paths) whose network to time, "
        "or 'small' (ModelConfig.small()) (default: paper,demo)",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="batch size for every config (default: 4 paper, 16 demo)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per measurement (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (default: 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--bf16", action="store_true", help="run under torch.autocast(bfloat16)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the network compiled with torch.compile, beside eager (the first call, which "
        "builds the graph, is shown apart)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for MFU (default: the dense bf16 peak of a known GPU; "
        "none on CPU, so MFU is unknown)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of the table: img_per_s, gflop_per_img (the training step's) "
        "and mfu of the first config, compiled with --compile, and every measurement under 'runs'",
    )


def _timed(
    step: Callable[[], None], device: torch.device, repeats: int, warmup: int
) -> tuple[float, float, float]:
    """(median, best, first) seconds of ``step()``: median and best over ``repeats`` calls after
    ``warmup`` untimed ones, and the first warm-up call's (a compiled network builds its graph
    then). The best is the figure least disturbed by other processes on a shared machine."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def once() -> float:
        sync()
        start = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - start

    first = [once() for _ in range(warmup)][:1]
    times = sorted(once() for _ in range(repeats))
    return times[len(times) // 2], times[0], (first or [float("nan")])[0]


def _measure(
    net: torch.nn.Module,
    images: torch.Tensor,
    autocast: Callable[[], AbstractContextManager],
    args: argparse.Namespace,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(median, best, first) seconds per batch of inference (eval, no_grad) and of a training
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


def _model_config(name: str) -> ModelConfig:
    """The network of a training config (packaged name or path), or of the ``small`` preset."""
    from pose3d.cli.errors import UserError
    from pose3d.model import ModelConfig
    from pose3d.train.config import ConfigError, load_config

    if name == "small":
        return ModelConfig.small()
    try:
        return load_config(name).model
    except ConfigError as err:
        raise UserError(f"--configs {name}: {err}") from None


def run(args: argparse.Namespace) -> int:
    import contextlib

    import torch

    from pose3d.cli.errors import UserError
    from pose3d.model import PoseNet, count_parameters
    from pose3d.train.compile import compile_model

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if not names:
        raise UserError("--configs names no config")
    if args.repeats < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        raise UserError("--repeats and --batch must be >= 1, --warmup >= 0")
    if args.compile and args.warmup < 1:
        raise UserError("--compile needs --warmup >= 1: the first call builds the graph")
    configs = {name: _model_config(name) for name in names}
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops if args.peak_tflops is not None else peak_tflops(device_name)

    def autocast() -> AbstractContextManager:
        if args.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    modes = ["eager", "compiled"] if args.compile else ["eager"]
    runs: list[dict[str, Any]] = []
    if not args.json:
        peak_text = f"{peak:g} TFLOP/s" if peak else "unknown (--peak-tflops)"
        print(
            f"pose3d bench model: torch {torch.__version__}, device {device} ({device_name}, peak "
            f"{peak_text}), torch threads {torch.get_num_threads()}, channels_last {args.channels_last}, "
            f"bf16 {args.bf16}, median of {args.repeats} after {args.warmup} warm-up"
        )
        print(
            f"{'config':<7} {'params':>11} {'GFLOP/img fwd':>13} {'fwd+bwd':>7} {'batch':>5} {'mode':<8} "
            f"{'1st call s fwd/train':>20} {'fwd img/s':>9} {'train s med/min':>15} {'train img/s':>11} "
            f"{'MFU':>8}"
        )
    for name, config in configs.items():
        batch = args.batch or DEFAULT_BATCH.get(name, 16)
        gflop_fwd, gflop_train = model_gflop(config)
        images = torch.rand(batch, 3, config.input_size, config.input_size, device=device)
        images = images.contiguous(memory_format=memory_format)
        for mode in modes:
            torch.manual_seed(0)
            net = PoseNet(config).to(device, memory_format=memory_format)
            compile_model(net, mode == "compiled")
            try:
                fwd, train = _measure(net, images, autocast, args)
            except Exception as err:  # a graph the compiler cannot build: say so, time the rest
                if mode == "eager":
                    raise
                error = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}"
                runs.append({"config": name, "mode": mode, "batch": batch, "error": error})
                if not args.json:
                    print(f"{name:<7} {'':>11} {gflop_fwd:>13.2f} {gflop_train:>7.2f} {batch:>5} {mode:<8} "
                          f"failed: {error}", flush=True)  # fmt: skip
                continue
            row = {
                "config": name,
                "mode": mode,
                "batch": batch,
                "params": count_parameters(net),
                "gflop_per_img_forward": gflop_fwd,
                "gflop_per_img": gflop_train,
                "forward_img_per_s": batch / fwd[0],
                "img_per_s": batch / train[0],
                "train_s_median": train[0],
                "train_s_best": train[1],
                "first_call_s": {"forward": fwd[2], "train": train[2]},
                "mfu": mfu(gflop_train, batch / train[0], peak),
                "mfu_forward": mfu(gflop_fwd, batch / fwd[0], peak),
            }
            runs.append(row)
            if not args.json:
                print(
                    f"{name:<7} {row['params']:>11,} {gflop_fwd:>13.2f} {gflop_train:>7.2f} {batch:>5} "
                    f"{mode:<8} {fwd[2]:>10.2f}/{train[2]:<9.2f} {row['forward_img_per_s']:>9.1f} "
                    f"{train[0]:>7.3f}/{train[1]:<7.3f} {row['img_per_s']:>11.1f} "
                    f"{format_mfu(row['mfu']):>8}",
                    flush=True,
                )
    # The headline: the first config, compiled when asked and it compiled, else eager.
    first = [r for r in runs if r["config"] == names[0] and "error" not in r]
    head = first[-1]
    if args.json:
        print(json.dumps({
            "img_per_s": head["img_per_s"],
            "gflop_per_img": head["gflop_per_img"],
            "mfu": head["mfu"],
            "config": head["config"],
            "mode": head["mode"],
            "device": str(device),
            "device_name": device_name,
            "peak_tflops": peak,
            "runs": runs,
        }))  # fmt: skip
        return 0
    print(
        "img/s at the median time; fwd = eval + no_grad, train = fwd+bwd in train mode with a loss on "
        "all outputs; GFLOP counted by torch.utils.flop_counter (convs and linears); MFU = train "
        "GFLOP/img x train img/s / peak"
    )
    return 0
