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
    p.add_argument(
        "--compare-idle",
        action="store_true",
        help="also run (c) with data.idle_backoff=false, the Ray Data executor spinning while it waits "
        "for the trainer, and print both with the split coordinators' CPU",
    )
    p.add_argument(
        "--compare-deterministic",
        action="store_true",
        help="also run (c) with train.deterministic=false (rows in the order actors finish, torch's "
        "fastest kernels): what a repeatable run costs",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides for every side, e.g. data.preprocess_actors=2",
    )


def _batch(cfg: Any, n: int, seed: int = 0) -> dict[str, Any]:
    """An in-memory half/half batch with the shapes and dtypes of the real one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    s, o = cfg.model.input_size, cfg.model.output_size
    return {
        "image": rng.integers(0, 255, (n, 3, s, s), dtype=np.uint8),
        "joints_out": rng.uniform(-1, o, (n, 16, 2)).astype(np.float32),  # the step draws the heatmaps
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


def side_overrides(batch: int, threads: int) -> list[str]:
    """The config overrides of every side: one worker on this machine's CPU, as (a) runs (the paper
    config asks for a GPU, which (c) would otherwise wait for forever on a machine without one)."""
    return [
        f"data.batch_size={batch}",
        f"scaling.cpus_per_worker={threads}",
        "scaling.use_gpu=false",
        "scaling.num_workers=1",
    ]


def run(args: argparse.Namespace) -> int:
    from pose3d.cli.errors import UserError
    from pose3d.train.config import ConfigError, load_config

    overrides = [*args.overrides, *side_overrides(args.batch, args.threads)]
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
    print(f"(a) done: {results['(a) plain PyTorch, in-memory']:.3g} img/s", flush=True)

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
        print(f"(b) done: {results['(b) Ray Train, in-memory']:.3g} img/s", flush=True)
        if not args.skip_data:
            coordinator_cpu = {}
            sides = [("(c) Ray Train + Ray Data, shards", [])]
            if args.compare_idle:
                sides.append(("(c0) as (c), idle executor spinning", ["data.idle_backoff=false"]))
            if args.compare_deterministic:
                sides.append(("(c1) as (c), not deterministic", ["train.deterministic=false"]))
            for name, extra in sides:
                side_cfg = load_config(args.config, overrides + extra)
                with CoordinatorCpu() as cpu:
                    results[name] = _ray_with_data(side_cfg, args, storage, f"bench-data-{len(results)}")
                coordinator_cpu[name] = cpu.core_fraction()
                print(f"{name.split()[0]} done: {results[name]:.3g} img/s", flush=True)
    ray.shutdown()

    base = results["(a) plain PyTorch, in-memory"]
    print(f"\n{'side':<36} {'img/s':>8} {'step ms':>9} {'ratio to (a)':>13}")
    for name, ips in results.items():
        print(f"{name:<36} {ips:>8.3g} {1000 * args.batch / ips:>9.1f} {ips / base:>13.3f}")
    overhead = 1 - results["(b) Ray Train, in-memory"] / base
    print(f"\nRay Train overhead (b vs a): {100 * overhead:.1f} % (target <= 15 %)")
    for name, fraction in coordinator_cpu.items() if not args.skip_data else ():
        print(f"Ray Data split coordinators during {name.split()[0]}: {100 * fraction:.0f} % of a core")
    return 0


class CoordinatorCpu:
    """CPU used by Ray Data's split coordinator processes while the block runs, as a fraction of one
    core (summed over coordinators), sampled every ``every_s`` from /proc through psutil."""

    def __init__(self, every_s: float = 1.0) -> None:
        import threading

        self.every_s = every_s
        self.first: dict[int, tuple[float, float]] = {}  # pid -> (time, cpu seconds) first seen
        self.last: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CoordinatorCpu:
        import psutil  # noqa: F401  (fail here, not silently in the sampling thread)

        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(self.every_s):
            for proc in psutil.process_iter(["pid", "name", "cmdline"]):
                # Ray sets a worker's process title (its cmdline) to ray::<actor class>.<method>.
                title = f"{proc.info['name'] or ''} {' '.join(proc.info['cmdline'] or [])}"
                if "SplitCoordinator" not in title:
                    continue
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                point = (time.monotonic(), times.user + times.system)
                self.first.setdefault(proc.pid, point)
                self.last[proc.pid] = point

    def core_fraction(self) -> float:
        """Summed over coordinators: CPU seconds / wall seconds they were seen (0 if none was)."""
        total = 0.0
        for pid, (t0, c0) in self.first.items():
            t1, c1 = self.last[pid]
            total += (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
        return total


def _ray_with_data(cfg: Any, args: argparse.Namespace, storage: str, run_name: str) -> float:
    """(c): the real training path on shards; img/s of the last stage's steps after warm-up."""
    from pose3d.train import schedule
    from pose3d.train.config import Source
    from pose3d.train.tensorboard import folder as tensorboard_folder
    from pose3d.train.tensorboard import read_scalars
    from pose3d.train.trainer import fit

    shards = args.shards
    if not shards:
        from data_prep.synthetic import prepare

        shards = os.path.join(storage, "shards")
        print("generating a tiny synthetic shard set for (c) ...", flush=True)
        prepare(shards, size="tiny")
        args.shards = shards  # one set for every (c) side
    lab, wild = _synthetic_train_sets(shards)
    warmup = args.data_warmup
    total = warmup + args.data_steps
    cfg.data.set_3d, cfg.data.set_2d, cfg.data.val_3d = [Source(lab)], [Source(wild)], ""
    for stage in schedule.STAGES:  # the last stage only: depth and the geometric term, the full step
        schedule.set_stage_steps(cfg, stage, total if stage == schedule.STAGES[-1] else 0)
    cfg.run.storage_path, cfg.run.name = storage, run_name
    # A report every warm-up-many steps; the first window (pipeline start-up) is left out.
    cfg.train.log_every = warmup
    cfg.train.checkpoint_every = total
    fit(cfg)
    by_step = read_scalars(tensorboard_folder(storage, run_name), ("img_per_s",))["img_per_s"]
    steps = sorted(by_step)
    rates = [by_step[k] for k in steps if k > warmup]
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
