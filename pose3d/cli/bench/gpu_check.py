"""``pose3d bench gpu-check`` (``make gpu-check``): a GPU self-check, meant to take under 5 minutes.

Trains the paper's network on a generated synthetic shard set through the real path (Ray Train +
Ray Data, one worker, bf16 autocast, channels_last, ``train.compile``) and prints its img/s, MFU,
the fraction of step time the GPU waited for data (target: under 10 %) and the peak GPU memory. On a
machine without a CUDA GPU it prints "skipped: no GPU" and exits 0 (what CI runs).

The figures come from the training loop itself: rank 0's TensorBoard scalars ``img_per_s`` and
``data_wait_fraction`` (the wall time spent getting the next batch: the loop reads the losses back
every step, so the GPU is idle then), over the report windows after the warm-up, which holds the
compilation and the pipeline's start. The worker writes ``torch.cuda.max_memory_allocated`` when
its loop returns.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

HELP = (
    "GPU self-check: the paper model via Ray Train + Ray Data, bf16, compile; img/s, MFU, data wait "
    "(--on-cpu: the demo's, fp32)"
)

#: The most of its step time the GPU should spend waiting for data (issue 13's target).
DATA_WAIT_TARGET = 0.10
#: Run name under the temporary storage.
RUN_NAME = "gpu-check"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="training config for the network (default: paper; demo on a CPU, --on-cpu)"
    )
    p.add_argument("--batch", type=int, help="batch of the one worker (default: 64; 16 on a CPU, --on-cpu)")
    p.add_argument(
        "--warmup",
        type=int,
        help="untimed steps first: compilation, pipeline start (default: 40; 5 on a CPU, --on-cpu)",
    )
    p.add_argument(
        "--steps", type=int, help="timed steps after the warm-up (default: 160; 15 on a CPU, --on-cpu)"
    )
    p.add_argument("--shards", help="a `pose3d prep synthetic` output (default: generate one)")
    p.add_argument(
        "--size",
        choices=("tiny", "small", "medium"),
        help="size preset of the set generated when --shards is not given: small (~1,000 training rows "
        "a set: few pipeline restarts; the default) or tiny (~40 rows; the default on a CPU, --on-cpu)",
    )
    p.add_argument("--num-cpus", type=int, help="logical CPUs of the local Ray (default: max(8, cores))")
    p.add_argument(
        "--preprocess-actors",
        type=int,
        help="decode + augment actors per training set (default: what the CPUs leave, halved)",
    )
    p.add_argument(
        "--peak-tflops", type=float, help="the GPU's peak TFLOP/s for MFU (default: a known GPU's bf16 peak)"
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="train eager (train.compile=false), to compare with compiled",
    )
    p.add_argument(
        "--on-cpu",
        action="store_true",
        help="run the flow on the CPU when there is no GPU, by default at the demo's size (checks the "
        "command in a few minutes; its figures say nothing about a GPU)",
    )


#: Defaults of the sizes a user leaves out: on a GPU the paper's network at a GPU's batch; on a CPU
#: (``--on-cpu``) the demo's, which a CPU trains in minutes (the paper's batch of 64 at 256 px
#: compiled ran out of a 24 GiB machine's memory).
GPU_DEFAULTS = {"config": "paper", "batch": 64, "warmup": 40, "steps": 160, "size": "small"}
CPU_DEFAULTS = {"config": "demo", "batch": 16, "warmup": 5, "steps": 15, "size": "tiny"}


def fill_defaults(args: argparse.Namespace, on_gpu: bool) -> argparse.Namespace:
    """``args`` with every size the user left out (None) set from the device's defaults."""
    defaults = GPU_DEFAULTS if on_gpu else CPU_DEFAULTS
    return argparse.Namespace(
        **{**vars(args), **{k: v for k, v in defaults.items() if getattr(args, k, None) is None}}
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from pose3d.cli.errors import UserError

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.on_cpu:
        print("skipped: no GPU")
        return 0
    args = fill_defaults(args, on_gpu)
    if min(args.batch, args.steps, args.warmup) < 1:
        raise UserError("--batch, --steps and --warmup must be >= 1")
    started = time.perf_counter()

    import ray

    from pose3d.cli.bench.model import format_mfu, mfu, model_gflop, peak_tflops
    from pose3d.infra.ray_session import init_ray

    device_name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peak = args.peak_tflops or peak_tflops(device_name)
    cpus = args.num_cpus or max(8, os.cpu_count() or 1)
    init_ray(num_cpus=cpus)
    try:
        with tempfile.TemporaryDirectory(prefix="pose3d-gpu-check-") as tmp:
            shards = args.shards or _generate(tmp, args.size)
            cfg, window = _config(args, shards, tmp, on_gpu, cpus)
            step = " + ".join(
                (["bf16", "channels_last"] if on_gpu else []) + ([] if args.no_compile else ["compile"])
            )
            print(
                f"gpu-check: {device_name}, torch {torch.__version__}, {args.config} network "
                f"({cfg.model.input_size} px), batch {args.batch}, {step or 'eager fp32'}, "
                f"{args.steps} timed steps after {args.warmup}, "
                f"{cfg.data.preprocess_actors} preprocessing actor(s) per set",
                flush=True,
            )
            peak_memory = _train(cfg, Path(tmp) / "peak_memory_bytes")
            img_per_s, wait = _figures(cfg, args.warmup)
    finally:
        ray.shutdown()
    _, gflop = model_gflop(cfg.model)
    verdict = "met" if wait < DATA_WAIT_TARGET else "NOT met"
    print(f"img/s: {img_per_s:.1f} (Ray Train + Ray Data, 1 worker, reports every {window} steps)")
    print(f"model: {gflop:.1f} GFLOP per image (forward+backward, torch.utils.flop_counter)")
    peak_text = f"{peak:g} TFLOP/s bf16 peak" if peak else "peak unknown: --peak-tflops"
    print(f"MFU: {format_mfu(mfu(gflop, img_per_s, peak))} ({peak_text})")
    print(f"data wait: {100 * wait:.1f} % of step time (target < {100 * DATA_WAIT_TARGET:.0f} %: {verdict})")
    if on_gpu:
        print(f"peak GPU memory: {peak_memory / 2**30:.2f} GiB (torch.cuda.max_memory_allocated)")
    print(f"total: {time.perf_counter() - started:.0f} s")
    return 0


def _generate(tmp: str, size: str) -> str:
    """A synthetic shard set of the ``size`` preset under ``tmp`` (small: about 50 s on 2 cores,
    seconds on 16)."""
    from data_prep.synthetic import prepare

    shards = os.path.join(tmp, "shards")
    started = time.perf_counter()
    prepare(shards, size=size, progress=None)
    print(f"gpu-check: generated a {size} synthetic shard set in {time.perf_counter() - started:.0f} s")
    return shards


def _config(args: argparse.Namespace, shards: str, tmp: str, on_gpu: bool, cpus: int) -> tuple[Any, int]:
    """The run's config (stage 3 only: the whole network with depth and the geometric term, the
    full step) and its report window in steps."""
    from pose3d import storage
    from pose3d.cli.errors import UserError
    from pose3d.data.shards import count_shard_rows, list_shards
    from pose3d.train.config import ConfigError, load_config

    lab = storage.join(shards, "synthetic_lab", "train")
    wild = storage.join(shards, "synthetic_wild", "train")
    for path in (lab, wild):
        if not storage.exists(path):
            raise UserError(f"{path}: not found; pass --shards with a `pose3d prep synthetic` output")
    window = args.warmup  # reports every warm-up-many steps; the first window is left out
    timed = window * math.ceil(args.steps / window)
    total = args.warmup + timed
    # One Ray Data pass per run: the set is chained over as many epochs as the run draws (each new
    # pass restarts the pipeline: seconds the GPU would wait).
    fewest = min(count_shard_rows(list_shards(lab)), count_shard_rows(list_shards(wild)))
    epochs = math.ceil(total * args.batch / max(1, fewest)) + 1
    worker_cpus = 2 if on_gpu else 1  # the step's Python and the batches' copies
    actors = args.preprocess_actors or max(1, (cpus - worker_cpus - 2) // 2)
    overrides = {
        "data.set_3d": lab, "data.set_2d": wild, "data.val_3d": "", "data.val_2d": "",
        "data.batch_size": args.batch, "data.preprocess_actors": actors, "data.epochs_per_pass": epochs,
        "train.stages.1.steps": 0, "train.stages.2.steps": 0, "train.stages.3.steps": total,
        "train.log_every": window, "train.checkpoint_every": total,
        "train.bf16": True, "train.channels_last": True, "train.compile": not args.no_compile,
        "scaling.num_workers": 1, "scaling.use_gpu": on_gpu, "scaling.cpus_per_worker": worker_cpus,
        "scaling.gpus_per_worker": 1, "run.storage_path": tmp, "run.name": RUN_NAME,
        "run.keep_checkpoints": 1,
    }  # fmt: skip
    try:
        cfg = load_config(args.config, [f"{k}={v}" for k, v in overrides.items()])
    except ConfigError as err:
        raise UserError(str(err)) from None
    return cfg, window


def _worker(loop_config: dict[str, Any]) -> None:
    """The training loop, then this worker's peak GPU memory (bytes) written for the driver."""
    import torch

    from pose3d.train.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    Path(loop_config["peak_memory_file"]).write_text(str(peak))


def _train(cfg: Any, peak_memory_file: Path) -> int:
    """Train ``cfg`` on one Ray Train worker fed by Ray Data (the datasets of ``pose3d train``);
    returns the worker's peak GPU memory in bytes (0 on CPU)."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pose3d.train.trainer import build_datasets

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": cfg.to_dict(), "peak_memory_file": str(peak_memory_file)},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=cfg.run.name, storage_path=cfg.run.storage_path),
        datasets=build_datasets(cfg),
        dataset_config=DataConfig(datasets_to_split="all"),
    )
    trainer.fit()
    return int(peak_memory_file.read_text())


def window_figures(
    steps: list[int], img_per_s: list[float], wait: list[float], batch: int, after: int
) -> tuple[float, float]:
    """(img/s, data-wait fraction) over the report windows that end after step ``after``, from the
    reports' global ``steps`` and each window's ``img_per_s`` and ``wait`` fraction: images over
    seconds, and waited seconds over seconds (each window's seconds = its images / its img/s)."""
    images = seconds = waited = 0.0
    for prev, step, rate, frac in zip([0, *steps[:-1]], steps, img_per_s, wait, strict=True):
        if step <= after or rate <= 0:
            continue
        n = (step - prev) * batch
        images, seconds, waited = images + n, seconds + n / rate, waited + frac * n / rate
    if seconds == 0:
        raise ValueError(f"no report window after step {after}")
    return images / seconds, waited / seconds


def _figures(cfg: Any, warmup: int) -> tuple[float, float]:
    """(img/s, data-wait fraction) after the warm-up, from rank 0's TensorBoard scalars."""
    from pose3d.train.tensorboard import folder, read_scalars

    logged = read_scalars(folder(cfg.run.storage_path, cfg.run.name), ("img_per_s", "data_wait_fraction"))
    steps = sorted(logged["img_per_s"])
    return window_figures(
        steps,
        [logged["img_per_s"][k] for k in steps],
        [logged["data_wait_fraction"][k] for k in steps],
        cfg.data.batch_size,
        warmup,
    )
