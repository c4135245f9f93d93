"""``pose3d bench loss``: the vectorized geometric loss against a per-sample, per-bone Python loop.

Both sides compute ``bone_ratio_loss`` forward and backward on the same batch; the figures are
medians over repeats. Torch is imported inside ``run`` so ``pose3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

HELP = "time bone_ratio_loss forward+backward: vectorized vs a per-sample Python loop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=64, help="rows per batch (default 64)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per side (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repeats first (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--seed", type=int, default=0)


def _loop_bone_ratio_loss(joints, rows, visible):
    """Eq. 3 the straightforward way: one sample, one group, one bone at a time (torch scalars,
    so autograd works); the baseline the vectorized loss is measured against."""
    import torch

    from pose3d import skeleton

    total = joints.new_zeros(())
    for b in range(joints.shape[0]):
        if not bool(rows[b]):
            continue
        for g in range(skeleton.GROUP_BONE_INDEX.shape[0]):
            values = []
            for s in range(skeleton.GROUP_BONE_INDEX.shape[1]):
                if not skeleton.GROUP_SLOT_VALID[g, s]:
                    continue
                parent, child = skeleton.BONE_ARRAY[skeleton.GROUP_BONE_INDEX[g, s]]
                if bool(visible[b, parent]) and bool(visible[b, child]):
                    length = torch.linalg.vector_norm(joints[b, child] - joints[b, parent])
                    values.append(length * float(skeleton.GROUP_BONE_WEIGHT[g, s]))
            if len(values) >= 2:
                stacked = torch.stack(values)
                total = total + ((stacked - stacked.mean()) ** 2).mean()
    return total / joints.shape[0]


def _time_forward_backward(loss_fn: Callable, joints, rows, visible, warmup: int, repeats: int):
    """Median seconds of one forward+backward, the last loss value and gradient."""
    import torch

    def once():
        x = joints.detach().clone().requires_grad_(True)
        loss = loss_fn(x, rows, visible)
        loss.backward()
        return loss.detach(), x.grad

    for _ in range(warmup):
        once()
    times = []
    for _ in range(repeats):
        if joints.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss, grad = once()
        if joints.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), loss, grad


def run(args: argparse.Namespace) -> int:
    import torch

    from pose3d.cli.errors import UserError
    from pose3d.losses import bone_ratio_loss

    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        raise UserError("--batch, --repeats and --threads must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise UserError(f"device {args.device!r} is not usable: {err}") from err

    g = torch.Generator().manual_seed(args.seed)
    # A realistic batch: joints in the normalized frame, ~10 % of joints unannotated, half the rows
    # 2D-only (the rows the term applies to).
    joints = (torch.rand(args.batch, 16, 3, generator=g) * 2 - 1).to(device)
    visible = (torch.rand(args.batch, 16, generator=g) > 0.1).to(device)
    rows = (torch.arange(args.batch) % 2 == 0).to(device)

    t_vec, loss_vec, grad_vec = _time_forward_backward(
        bone_ratio_loss, joints, rows, visible, args.warmup, args.repeats
    )
    t_loop, loss_loop, grad_loop = _time_forward_backward(
        _loop_bone_ratio_loss, joints, rows, visible, min(args.warmup, 1), args.repeats
    )
    value_diff = (loss_vec - loss_loop).abs().item()
    grad_diff = (grad_vec - grad_loop).abs().max().item()

    print(
        f"bone_ratio_loss forward+backward, batch {args.batch} ({int(rows.sum())} rows selected), "
        f"{args.device}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"  loss value: vectorized {loss_vec.item():.8g}  loop {loss_loop.item():.8g}")
    print(f"  max abs diff: value {value_diff:.3g}  gradient {grad_diff:.3g}")
    print(f"  vectorized: {t_vec * 1e3:9.3f} ms")
    print(f"  loop:       {t_loop * 1e3:9.3f} ms")
    print(f"  speed-up:   {t_loop / t_vec:9.1f}x (target >= 50x)")
    return 0
