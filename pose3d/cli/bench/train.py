"""``pose3d bench train``: training throughput, plain PyTorch vs Ray Train, to measure what Ray
Train and Ray Data cost over a plain loop (Train's own overhead is meant to stay within 15 %;
docs/design.md, Training benchmark).

(a) a plain loop on in-memory tensors; (b) Ray Train (one worker) on the same in-memory data:
Train's own overhead; (c) Ray Train fed by Ray Data from shards: what a user sees. Same model
config, batch and torch thread count on every side; each as img/s and as the ratio to (a).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

HELP = "training step time and img/s: plain PyTorch vs Ray Train (in-memory) vs Ray Train + Ray Data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="demo", help="training config for the model size (default: demo)")
    p.add_argument("--batch", type=int, default=16, help="global batch (default 16)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per side (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument(
        "--data-warmup",
        type=int,
        default=60,
        help="(c): untimed steps first; the Ray Data pipeline needs ~50 steps to reach its pace (default 60)",
    )
    p.add_argument("--data-steps", type=int, default=120, help="(c): timed steps (default 120)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on every side (default 1)")
    p.add_argument("--shards", help="synthetic shard folder for (c) (default: generate a tiny set)")
    p.add_argument("--skip-data", action="store_true", help="skip (c)")


def _batch(cfg: Any, n: int, seed: int = 0) -> dict[str, Any]:
    """An in-memory half/half batch with the shapes and dtypes of the real one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    s, o = cfg.model.input_size, cfg.model.output_size
    return {
        "image": rng.integers(0, 255, (n, 3, s, s), dtype=np.uint8),
        "heatmaps": rng.random((n, 16, o, o), dtype=np.float32),
        "depth": rng.uniform(-1, 1, (n, 16)).astype(np.float32),
        "joints_2d_norm": rng.uniform(-1, 1, (n, 16, 2)).astype(np.float32),
        "visible": np.ones((n, 16), bool),
        "has_3d": np.arange(n) < n // 2,
    }


def _timed_steps(cfg: Any, batch_np: dict[str, Any], steps: int, warmup: int, threads: int) -> float:
    """Stage-3 steps on one in-memory batch; returns img/s over the timed steps."""
    import torch

    from pose3d import losses
    from pose3d.model.net import PoseNet
    from pose3d.train.loop import to_tensors, train_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = PoseNet(cfg.model).train()
    optim = torch.optim.RMSprop(model.parameters(), lr=1e-4)
    batch = to_tensors(batch_np, torch.device("cpu"), False)
    weights = losses.LossWeights(0.1, 0.01)
    for _ in range(warmup):
        train_step(model, optim, batch, weights, True, torch.autocast("cpu", enabled=False))
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optim, batch, weights, True, torch.autocast("cpu", enabled=False))
    return steps * len(batch_np["image"]) / (time.perf_counter() - t0)


def _ray_in_memory(loop_config: dict[str, Any]) -> None:
    import ray.train

    from pose3d.train.config import config_from_dict

    cfg = config_from_dict(loop_config["config"])
    batch = _batch(cfg, cfg.data.batch_size)
    ips = _timed_steps(cfg, batch, loop_config["steps"], loop_config["warmup"], loop_config["threads"])
    # Ray Train V2's Result keeps the metrics of checkpointed reports only, so the figure travels
    # with a checkpoint (docs/design.md, Ray 2.60 facts).
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "img_per_s.txt"), "w") as fh:
            fh.write(repr(ips))
        ray.train.report({"img_per_s": ips}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def run(args: argparse.Namespace) -> int:
    from pose3d.cli.errors import UserError
    from pose3d.train.config import ConfigError, load_config

    overrides = [f"data.batch_size={args.batch}", f"scaling.cpus_per_worker={args.threads}"]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        raise UserError(str(err)) from None
    m = cfg.model
    print(
        f"model: {m.num_stacks} stack(s), {m.num_features} features, input {m.input_size}; "
        f"batch {args.batch}; torch threads {args.threads}; {args.steps} timed steps"
    )
    results: dict[str, float] = {}
    results["(a) plain PyTorch, in-memory"] = _timed_steps(
        cfg, _batch(cfg, args.batch), args.steps, args.warmup, args.threads
    )
    print(f"(a) done: {results['(a) plain PyTorch, in-memory']:.1f} img/s", flush=True)

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pose3d.infra.ray_session import init_ray

    init_ray()
    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(
            _ray_in_memory,
            train_loop_config={
                "config": cfg.to_dict(),
                "steps": args.steps,
                "warmup": args.warmup,
                "threads": args.threads,
            },  # fmt: skip
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": args.threads}),
            run_config=RunConfig(name="bench-in-memory", storage_path=storage),
        )
        results["(b) Ray Train, in-memory"] = trainer.fit().metrics["img_per_s"]
        print(f"(b) done: {results['(b) Ray Train, in-memory']:.1f} img/s", flush=True)
        if not args.skip_data:
            results["(c) Ray Train + Ray Data, shards"] = _ray_with_data(cfg, args, storage)
    ray.shutdown()

    base = results["(a) plain PyTorch, in-memory"]
    print(f"\n{'side':<36} {'img/s':>8} {'step ms':>9} {'ratio to (a)':>13}")
    for name, ips in results.items():
        print(f"{name:<36} {ips:>8.1f} {1000 * args.batch / ips:>9.1f} {ips / base:>13.3f}")
    overhead = 1 - results["(b) Ray Train, in-memory"] / base
    print(f"\nRay Train overhead (b vs a): {100 * overhead:.1f} % (target <= 15 %)")
    return 0


def _ray_with_data(cfg: Any, args: argparse.Namespace, storage: str) -> float:
    """(c): the real training path on shards; img/s of the last stage's steps after warm-up."""
    from pose3d.train import schedule
    from pose3d.train.config import Source
    from pose3d.train.tensorboard import folder as tensorboard_folder
    from pose3d.train.trainer import fit

    shards = args.shards
    if not shards:
        from data_prep.synthetic import prepare

        shards = os.path.join(storage, "shards")
        print("generating a tiny synthetic shard set for (c) ...", flush=True)
        prepare(shards, size="tiny")
    lab, wild = _synthetic_train_sets(shards)
    warmup = args.data_warmup
    total = warmup + args.data_steps
    cfg.data.set_3d, cfg.data.set_2d, cfg.data.val_3d = [Source(lab)], [Source(wild)], ""
    for stage in schedule.STAGES:  # the last stage only: depth and the geometric term, the full step
        schedule.set_stage_steps(cfg, stage, total if stage == schedule.STAGES[-1] else 0)
    cfg.run.storage_path, cfg.run.name = storage, "bench-data"
    # A report every warm-up-many steps; the first window (pipeline start-up) is left out.
    cfg.train.log_every = warmup
    cfg.train.checkpoint_every = total
    fit(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tensorboard_folder(storage, "bench-data"))
    acc.Reload()
    rates = [e.value for e in acc.Scalars("img_per_s") if e.step > warmup]
    steps = [e.step for e in acc.Scalars("img_per_s")]
    windows = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    return sum(windows) / sum(w / r for w, r in zip(windows, rates, strict=True))  # images / seconds


def _synthetic_train_sets(root: str) -> tuple[str, str]:
    from pose3d import storage
    from pose3d.cli.errors import UserError

    lab = storage.join(root, "synthetic_lab", "train")
    wild = storage.join(root, "synthetic_wild", "train")
    for path in (lab, wild):
        if not storage.exists(path):
            raise UserError(f"{path}: not found; pass --shards with a `pose3d prep synthetic` output")
    return lab, wild
