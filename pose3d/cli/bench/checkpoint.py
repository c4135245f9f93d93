"""``pose3d bench checkpoint``: the stall a checkpoint causes on the training step, with Ray Train's
synchronous and asynchronous checkpoint upload side by side (docs/design.md, Checkpoint upload).

Two short Ray Train runs (one worker, in-memory batches, no Ray Data), the same in all but
``run.checkpoint_upload``: sync, then async. Each takes stage-3 steps of the chosen config's network
with a checkpoint every ``--every`` steps, through the training loop's own report and checkpoint
code (``pose3d.train.loop``), into ``--storage`` (a local path or a URI) or, with ``--local-s3``, a
SeaweedFS S3 server started on loopback. The worker times every step, the checkpoint's local write
and the time blocked in ``ray.train.report``. The loop reports with the checkpoints only, so that no
other report waits in Ray Train's queue of one (its controller takes a report every 2 s). The first
interval (the first steps and the first checkpoint) is warm-up; the figures are medians over the
checkpoints after it. The checkpoints are then listed in storage, and the newest loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

HELP = "the training step's stall at a checkpoint: sync vs async upload (local path, URI or local S3)"

MODES = ("sync", "async")
TIMINGS_FILE = "bench_checkpoint.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default="paper",
        help="training config for the network size (default: paper; demo is quick)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--storage", help="where the runs write: a local path or s3://, gs:// (default: a temp folder)"
    )
    where.add_argument(
        "--local-s3", action="store_true", help="start a SeaweedFS S3 server on loopback and write there"
    )
    p.add_argument("--batch", type=int, default=2, help="global batch (default 2)")
    p.add_argument("--every", type=int, default=3, help="steps between checkpoints (default 3)")
    p.add_argument(
        "--checkpoints",
        type=int,
        default=4,
        help="timed checkpoints per mode, after a warm-up one (default 4)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads of the worker (default 1)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON after the table")


# --- the worker ---------------------------------------------------------------------------------


def _worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: stage-3 steps on one in-memory batch, each followed by the loop's own
    ``_report_and_checkpoint``; writes the timings to the run folder (``TIMINGS_FILE``)."""
    import logging

    import ray.train
    import ray.train.torch
    import torch

    from pose3d import storage
    from pose3d.cli.bench.train import _batch
    from pose3d.train import checkpoint as ckpt
    from pose3d.train import loop, schedule
    from pose3d.train.config import config_from_dict

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_dict(loop_config["config"])
    loop._apply_ray_train_log_level(cfg.run.ray_train_log_level)
    torch.set_num_threads(loop_config["threads"])
    device = ray.train.torch.get_device()
    model, restored = loop._restore(cfg, 0, device)
    run = loop._Run.open(cfg, 0, 1, device, restored, {})
    pos = schedule.position(cfg, 0)
    stage = loop._set_up_stage(run, model, pos, None)
    batch = loop.to_tensors(_batch(cfg, cfg.data.batch_size), device, run.channels_last)

    # Time what the loop calls, where it calls it: the checkpoint's local write and Ray's report.
    spent = {"save": 0.0, "report": 0.0}
    size = [0]

    def timed(key: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t0
                if key == "save":
                    size[0] = sum(e.stat().st_size for e in os.scandir(args[0]) if e.is_file())

        return wrapper

    real_report, real_save = ray.train.report, ckpt.save_checkpoint
    ray.train.report, ckpt.save_checkpoint = timed("report", real_report), timed("save", real_save)
    steps: list[dict[str, Any]] = []
    try:
        global_step = 0
        for step in range(stage.steps):
            t0 = time.perf_counter()
            lr = stage.set_lr(cfg, step)
            terms = loop.train_step(
                stage.net, stage.optimizer, batch, stage.weights, stage.with_depth, run.autocast
            )
            global_step += 1
            run.progress.tick()
            t1 = time.perf_counter()
            spent.update(save=0.0, report=0.0)
            loop._report_and_checkpoint(run, model, stage, step + 1, global_step, terms, lr)
            t2 = time.perf_counter()
            steps.append(
                {
                    "step": global_step,
                    "checkpoint": global_step % cfg.train.checkpoint_every == 0 or step + 1 == stage.steps,
                    "step_s": t2 - t0,
                    "train_s": t1 - t0,
                    "save_s": spent["save"],
                    "report_s": spent["report"],
                }
            )
        t0 = time.perf_counter()
        loop._wait_for_uploads(run)
        drain_s = time.perf_counter() - t0
        run.close()
    finally:
        ray.train.report, ckpt.save_checkpoint = real_report, real_save
    out = {"steps": steps, "drain_s": drain_s, "checkpoint_bytes": size[0]}
    storage.write_text(storage.join(cfg.run.storage_path, cfg.run.name, TIMINGS_FILE), json.dumps(out))


# --- the driver -----------------------------------------------------------------------------------


def _fit(cfg: Any, threads: int) -> None:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(
        _worker,
        train_loop_config={"config": cfg.to_dict(), "threads": threads},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=cfg.run.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
        ),
    ).fit()


def _summary(timings: dict[str, Any], every: int, base_step_s: float | None) -> dict[str, Any]:
    """Medians over the checkpoints after the first interval; ``base_step_s``: the plain step the
    stall and the interval cost are counted against (the sync run's: no upload runs beside its
    plain steps, where an async upload slows the steps it overlaps)."""
    steps = [s for s in timings["steps"] if s["step"] > every]  # the first interval: warm-up
    ckpts = [s for s in steps if s["checkpoint"]]
    plain = [s for s in steps if not s["checkpoint"]]
    med = statistics.median
    out = {
        "checkpoints_timed": len(ckpts),
        "write_s": med(s["save_s"] for s in ckpts),
        "report_s": med(s["report_s"] for s in ckpts),
        "checkpoint_step_s": med(s["step_s"] for s in ckpts),
        "plain_step_s": med(s["step_s"] for s in plain),
        "drain_s": timings["drain_s"],
        "checkpoint_mb": timings["checkpoint_bytes"] / 1e6,
    }
    base = out["plain_step_s"] if base_step_s is None else base_step_s
    out["stall_s"] = out["checkpoint_step_s"] - base
    intervals: dict[int, float] = {}
    for s in steps:  # interval k: steps (k*every, (k+1)*every], its checkpoint last
        k = (s["step"] - 1) // every
        intervals[k] = intervals.get(k, 0.0) + s["step_s"]
    out["interval_cost_s"] = med(total - every * base for total in intervals.values())
    return out


def _check_storage(run_dir: str) -> tuple[int, int | None]:
    """(checkpoint folders in the run folder, global step of the newest complete one)."""
    from pose3d.train import checkpoint as ckpt

    names = ckpt.checkpoint_folders(run_dir)
    newest = ckpt.newest_complete(run_dir, names)
    return len(names), newest.global_step if newest else None


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    rows = [
        ("write state to local disk (s)", "write_s", True),
        ("blocked in ray.train.report (s)", "report_s", True),
        ("checkpoint step (s)", "checkpoint_step_s", False),
        ("plain step (s)", "plain_step_s", False),
        ("stall: checkpoint step - base (s)", "stall_s", True),
        ("cost per interval (s)", "interval_cost_s", True),
        ("wait for uploads at the end (s)", "drain_s", False),
    ]
    sync, async_ = results["sync"], results["async"]
    print(f"\n{'':<36} {'sync':>8} {'async':>8} {'async/sync':>11}")
    for label, key, ratio in rows:
        line = f"{label:<36} {sync[key]:>8.2f} {async_[key]:>8.2f}"
        if ratio and sync[key] > 0:
            line += f" {async_[key] / sync[key]:>11.2f}"
        print(line)
    for label, key in (("checkpoints in storage", "in_storage"), ("newest complete at step", "newest_step")):
        print(f"{label:<36} {sync[key]!s:>8} {async_[key]!s:>8}")


def _configs(args: argparse.Namespace, where: str) -> dict[str, Any]:
    """The two runs' configs: the same but for ``run.checkpoint_upload`` (and the run name)."""
    from pose3d.cli.bench.train import side_overrides
    from pose3d.cli.errors import UserError
    from pose3d.train.config import ConfigError, load_config

    total = args.every * (args.checkpoints + 1)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    configs = {}
    for mode in MODES:
        overrides = side_overrides(args.batch, args.threads) + [
            "data.val_3d=", "train.stages.1.steps=0", "train.stages.2.steps=0",
            f"train.stages.3.steps={total}", f"train.checkpoint_every={args.every}",
            f"train.log_every={args.every}",
            f"train.val_every={total}", "train.stall_warn_s=0", f"run.storage_path={where}",
            f"run.name=bench-{stamp}-{mode}", f"run.keep_checkpoints={args.checkpoints + 2}",
            f"run.checkpoint_upload={mode}",
        ]  # fmt: skip
        try:
            configs[mode] = load_config(args.config, overrides)
        except ConfigError as err:
            raise UserError(str(err)) from None
    return configs


def _measure(configs: dict[str, Any], threads: int) -> dict[str, dict[str, Any]]:
    """Each mode's run in turn (sync first); its worker's timings and what storage holds after it."""
    import ray

    from pose3d import storage
    from pose3d.infra.ray_session import init_ray
    from pose3d.train.config import absolute_paths

    init_ray()
    timings = {}
    try:
        for mode in MODES:
            cfg = configs[mode]
            absolute_paths(cfg)
            t0 = time.perf_counter()
            _fit(cfg, threads)
            run_dir = storage.join(cfg.run.storage_path, cfg.run.name)
            timings[mode] = json.loads(storage.read_text(storage.join(run_dir, TIMINGS_FILE)))
            timings[mode]["in_storage"], timings[mode]["newest_step"] = _check_storage(run_dir)
            print(f"{mode}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        ray.shutdown()
    return timings


def run(args: argparse.Namespace) -> int:
    from pose3d.cli.errors import UserError

    if args.every < 2 or args.checkpoints < 1:
        raise UserError("--every must be >= 2 (plain steps between checkpoints) and --checkpoints >= 1")
    with tempfile.TemporaryDirectory(prefix="pose3d-bench-ckpt-") as tmp:
        server = None
        if args.local_s3:
            from pose3d.infra.s3_local import BUCKET, LocalS3

            where = f"s3://{BUCKET}/bench-checkpoint"
        else:
            where = args.storage or os.path.join(tmp, "runs")
        configs = _configs(args, where)
        m = configs["sync"].model
        print(
            f"model {args.config}: {m.num_stacks} stack(s) of {m.num_features} features, input "
            f"{m.input_size}; batch {args.batch}; {args.threads} torch thread(s); a checkpoint every "
            f"{args.every} steps, {args.checkpoints} timed after a warm-up one; storage {where}"
            + (" (SeaweedFS on loopback)" if args.local_s3 else ""),
            flush=True,
        )
        try:
            if args.local_s3:
                print("starting SeaweedFS (S3) on loopback ...", flush=True)
                server = LocalS3(os.path.join(tmp, "s3")).start()
                os.environ.update(server.env)  # before Ray starts: its workers inherit it
            timings = _measure(configs, args.threads)
        finally:
            if server is not None:
                server.stop()
    results: dict[str, dict[str, Any]] = {}
    base = None
    for mode in MODES:
        results[mode] = _summary(timings[mode], args.every, base)
        results[mode].update(in_storage=timings[mode]["in_storage"], newest_step=timings[mode]["newest_step"])
        base = results["sync"]["plain_step_s"]
    sync = results["sync"]
    print(
        f"\ncheckpoint {sync['checkpoint_mb']:.1f} MB; medians over {sync['checkpoints_timed']} checkpoints; "
        "base: the sync run's plain step (no upload beside it); cost per interval: the "
        f"{args.every} steps up to a checkpoint less {args.every} x base (so async counts the upload's "
        "drag on the steps it overlaps)"
    )
    _print_table(results)
    if sync["plain_step_s"] * args.every < 2.5:
        print(
            f"note: a checkpoint every {sync['plain_step_s'] * args.every:.1f} s comes about as often as Ray "
            "Train's controller takes a report (every 2 s): a report may wait for that; raise --every"
        )
    if args.json:
        print(json.dumps({"config": args.config, "storage": where, "every": args.every, **results}, indent=1))
    return 0
