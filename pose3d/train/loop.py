"""The per-worker training loop: one file holds the whole training step (nanoGPT-style).

Runs inside a Ray Train worker (``train_loop_per_worker``); the process group (gloo on CPU, nccl
on GPU) is already set up by Ray Train. Each step takes an exact mixed batch (DECISIONS 1), runs
the network, the loss of its stage, the optimizer; rank 0 validates, checkpoints and logs.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from pose3d import losses
from pose3d.data.mixing import RowStream, mixed_batch
from pose3d.model.net import PoseNet
from pose3d.train import checkpoint as ckpt
from pose3d.train import schedule
from pose3d.train.config import Config, config_from_dict

log = logging.getLogger("pose3d.train")

SET_3D, SET_2D = "set_3d", "set_2d"


def checkpoint_score(val_mpjpe: float | None, with_depth: bool, global_step: int) -> float:
    """What Ray Train keeps checkpoints by, lower first (DECISIONS 12). Stage 1 (no depth): by
    recency. Later: by validation MPJPE (mm); a step without validation ranks after every validated
    one, and a diverged (NaN) validation after those, so it is the first to be dropped."""
    if not with_depth:
        return 1e12 - global_step
    if val_mpjpe is None:
        return 1e9 - global_step
    return float(val_mpjpe) if np.isfinite(val_mpjpe) else 1e10 - global_step


def to_tensors(
    batch: dict[str, np.ndarray], device: torch.device, channels_last: bool
) -> dict[str, torch.Tensor]:
    """A preprocessed numpy batch -> tensors on ``device`` (images to float in [0, 1])."""
    images = torch.from_numpy(batch["image"]).to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = {"image": images}
    for key in ("heatmaps", "depth", "joints_2d_norm", "visible", "has_3d"):
        out[key] = torch.from_numpy(np.ascontiguousarray(batch[key])).to(device, non_blocking=True)
    return out


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    weights: losses.LossWeights,
    with_depth: bool,
    autocast: Any,
) -> dict[str, float]:
    """One optimizer step; returns the loss terms as floats."""
    with autocast:
        out = model(batch["image"], with_depth=with_depth)
    total, terms = losses.pose_loss(
        out.heatmaps,
        out.depth,
        heatmap_target=batch["heatmaps"],
        depth_target=batch["depth"],
        has_3d=batch["has_3d"],
        visible=batch["visible"],
        joints_2d_norm=batch["joints_2d_norm"],
        weights=weights,
    )
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {k: float(v) for k, v in terms.items()}


def _rows(cfg: Config, stage: int) -> tuple[int, int]:
    """(3D rows, 2D rows) of this worker's batch in ``stage``."""
    per = cfg.data.batch_size // cfg.scaling.num_workers
    if schedule.uses_depth(stage):
        return cfg.rows_per_worker()
    if cfg.data.stage1_data == "2d":
        return 0, per
    if cfg.data.stage1_data == "3d":
        return per, 0
    return per - per // 2, per // 2


def datasets_drawn(cfg: Config) -> set[str]:
    """The datasets some stage with steps draws rows from (the trainer passes only these)."""
    return {
        name
        for stage, st in enumerate(cfg.train.stages, start=1)
        if st.steps
        for name, rows in zip((SET_3D, SET_2D), _rows(cfg, stage), strict=True)
        if rows
    }


def _set_stage_trainable(model: PoseNet, stage: int) -> None:
    for p in model.depth_parameters():
        p.requires_grad_(schedule.uses_depth(stage))


def _make_optimizer(model: PoseNet, cfg: Config, lr: float) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, o.alpha), eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.RMSprop(
        params, lr=lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum, weight_decay=o.weight_decay
    )


def _maybe_inject_failure(cfg: Config, global_step: int, rank: int, world: int) -> None:
    """Fault injection for tests: the last rank dies once when ``train.fail_at_step`` steps are
    done (their reports made), before the next update.

    A report reaches Ray Train's controller only when its next poll carries it off the worker
    (a queue of one per worker), and a process that exits while that poll's reply is in flight
    loses the report, as a real crash would. With a report every step, the checkpoint of step k is
    certainly registered once the worker has put the report of step k + 2 (which waits for step
    k + 1's to be taken, after step k's was delivered): to test resume from checkpoint k, set
    ``fail_at_step`` to k + 2 or more."""
    if cfg.train.fail_at_step is None or global_step != cfg.train.fail_at_step or rank != world - 1:
        return
    marker = os.path.join(cfg.run.storage_path, cfg.run.name, ".fault_injected")
    if "://" in marker or os.path.exists(marker):
        return
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w") as fh:
        fh.write(f"worker rank {rank} killed itself at step {global_step}\n")
    log.warning("fault injection: rank %d exits at global step %d", rank, global_step)
    os._exit(1)


def _apply_ray_train_log_level(level: str) -> None:
    """Ray's ``LoggingConfig`` filters loggers named ``ray.train.*``; the worker context's logger,
    which logs every report at INFO, is named by its file path (Ray 2.60) and escapes that filter."""
    try:
        from ray.train.v2._internal.execution import context as worker_context
    except ImportError:  # a Ray whose layout differs: its own LoggingConfig applies
        return
    logging.getLogger(worker_context.__file__).setLevel(level.upper())


class _Progress:
    """Throughput, ETA and the live progress line of rank 0."""

    def __init__(self, total_steps: int, global_batch: int) -> None:
        self.total, self.batch = total_steps, global_batch
        self.t0 = self.t_last = time.perf_counter()
        self.steps_last = 0
        self.steps_done = 0

    def tick(self) -> None:
        self.steps_done += 1

    def window(self) -> float:
        """Images per second since the previous call."""
        now = time.perf_counter()
        steps, self.steps_last = self.steps_done - self.steps_last, self.steps_done
        dt, self.t_last = now - self.t_last, now
        return steps * self.batch / dt if dt > 0 else 0.0

    def eta(self, global_step: int) -> str:
        elapsed = time.perf_counter() - self.t0
        if self.steps_done == 0:
            return "?"
        left = (self.total - global_step) * elapsed / self.steps_done
        return f"{int(left // 60)}m{int(left % 60):02d}s"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config["config"]`` is ``Config.to_dict()``."""
    import ray.train
    import ray.train.torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_dict(loop_config["config"])
    _apply_ray_train_log_level(cfg.run.ray_train_log_level)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank (and in tests)
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    channels_last = on_gpu and cfg.train.channels_last
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.train.bf16 else nullcontext()

    model = PoseNet(cfg.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_step, restored_optim, restored_stage = 0, None, 0
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            state = ckpt.load_training_state(d)
        model.load_state_dict(state["state_dict"])
        global_step, restored_optim, restored_stage = state["global_step"], state["optimizer"], state["stage"]
        if rank == 0:
            log.info("resumed from checkpoint at global step %d (stage %d)", global_step, state["stage"])
    elif cfg.train.init_from:
        model.load_state_dict(ckpt.load_training_state(cfg.train.init_from)["state_dict"])
        if rank == 0:
            log.info("initialized the weights from %s", cfg.train.init_from)

    streams = {}
    # Ray 2.60 raises KeyError for a dataset the trainer was not given: ask only for those drawn.
    needed = datasets_drawn(cfg)
    for name in (SET_3D, SET_2D):
        shard = ray.train.get_dataset_shard(name) if name in needed else None
        if shard is None:
            streams[name] = None
            continue
        streams[name] = RowStream(
            lambda s=shard: s.iter_batches(
                batch_size=32,
                batch_format="numpy",
                local_shuffle_buffer_size=cfg.data.shuffle_buffer,
                local_shuffle_seed=None,
                prefetch_batches=2,
            )
        )

    validator = None
    if rank == 0 and cfg.data.val_3d:
        from pose3d.eval.score import Validator

        validator = Validator(cfg.data.val_3d, cfg.data.val_rows, cfg.model.input_size, cfg.model.output_size)
    tb = _TensorBoard(cfg) if rank == 0 else None

    nodes = _count_nodes(world)
    if rank == 0:
        log.info("%d worker(s) on %d node(s), device %s", world, nodes, device)
    start_step = global_step
    total = schedule.total_steps(cfg)
    progress = _Progress(total, cfg.data.batch_size)
    stages = cfg.train.stages
    while (pos := schedule.position(stages, global_step)) is not None:
        stage_cfg = stages[pos.stage - 1]
        core: PoseNet = model
        _set_stage_trainable(core, pos.stage)
        net = core
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(core, device_ids=[device] if on_gpu else None)
        optimizer = _make_optimizer(core, cfg, schedule.learning_rate(stage_cfg, pos.step))
        if restored_optim is not None and restored_stage == pos.stage:
            optimizer.load_state_dict(restored_optim)  # mid-stage resume: exact optimizer state
        restored_optim = None
        weights = losses.LossWeights(stage_cfg.reg, stage_cfg.geo, cfg.loss.geo_rows)
        n3d, n2d = _rows(cfg, pos.stage)
        with_depth = schedule.uses_depth(pos.stage)
        net.train()
        window_3d = (n3d + n2d, 0)
        for step in range(pos.step, stage_cfg.steps):
            lr = schedule.learning_rate(stage_cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            np_batch = mixed_batch(streams[SET_3D], n3d, streams[SET_2D], n2d)
            rows_3d = int(np.count_nonzero(np_batch["has_3d"]))  # measured, not assumed: stage checks
            window_3d = (min(window_3d[0], rows_3d), max(window_3d[1], rows_3d))
            batch = to_tensors(np_batch, device, channels_last)
            _maybe_inject_failure(cfg, global_step, rank, world)
            terms = train_step(net, optimizer, batch, weights, with_depth, autocast)
            global_step += 1
            progress.tick()
            last_of_stage = step + 1 == stage_cfg.steps
            do_ckpt = last_of_stage or global_step % cfg.train.checkpoint_every == 0
            do_val = (
                validator is not None and with_depth and (do_ckpt or global_step % cfg.train.val_every == 0)
            )
            if not (do_ckpt or global_step % cfg.train.log_every == 0):
                continue
            metrics: dict[str, Any] = {f"loss_{k}": v for k, v in terms.items()}
            metrics.update(
                stage=pos.stage,
                step_in_stage=step + 1,
                global_step=global_step,
                start_step=start_step,  # where this attempt began: > 0 after a resume
                nodes=nodes,
                lr=lr,
                img_per_s=progress.window(),
                batch_rows=n3d + n2d,
                batch_3d_rows_min=window_3d[0],
                batch_3d_rows_max=window_3d[1],
            )
            window_3d = (n3d + n2d, 0)
            if do_val:
                metrics.update(validator(core, device, autocast))
            # DECISIONS 12: stage-1 checkpoints kept by recency, later ones by validation MPJPE.
            metrics["checkpoint_score"] = checkpoint_score(metrics.get("val_mpjpe"), with_depth, global_step)
            if rank == 0:
                log.info(_progress_line(metrics, stage_cfg.steps, total, progress.eta(global_step)))
                tb.write(metrics, global_step)
            if do_ckpt:
                with tempfile.TemporaryDirectory() as tmp:
                    checkpoint = None
                    if rank == 0:
                        ckpt.save_checkpoint(
                            tmp,
                            core,
                            cfg.model,
                            optimizer=optimizer,
                            stage=pos.stage,
                            step_in_stage=step + 1,
                            global_step=global_step,
                            config=cfg.to_dict(),
                            metrics=metrics,
                        )
                        checkpoint = ray.train.Checkpoint.from_directory(tmp)
                        tb.sync()
                    ray.train.report(metrics, checkpoint=checkpoint)
                if rank == 0:
                    saved = ray.train.get_checkpoint()  # the persisted copy, in the run's storage
                    log.info("checkpoint at global step %d: %s", global_step, saved.path if saved else "?")
            else:
                ray.train.report(metrics)
    if tb is not None:
        tb.close()


def _count_nodes(world: int) -> int:
    """Distinct Ray nodes the workers run on (placement checks; one all-gather at start)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return 1
    gathered: list[str | None] = [None] * world
    torch.distributed.all_gather_object(gathered, node)
    return len(set(gathered))


def _progress_line(m: dict[str, Any], stage_steps: int, total: int, eta: str) -> str:
    parts = [
        f"[stage {m['stage']}/3] step {m['step_in_stage']}/{stage_steps} (global {m['global_step']}/{total})",
        f"loss {m['loss_total']:.4g} (hm {m['loss_heatmap']:.3g}",
    ]
    if "loss_depth" in m:
        parts[-1] += f" dep {m['loss_depth']:.3g} geo2d {m['loss_geo_2d']:.3g}"
    parts[-1] += ")"
    parts.append(f"{m['img_per_s']:.1f} img/s")
    if "val_mpjpe" in m:
        parts.append(f"val MPJPE {m['val_mpjpe']:.1f} mm PCK {m['val_pck2d']:.3f}")
    parts.append(f"ETA {eta}")
    return " | ".join(parts)


class _TensorBoard:
    """Rank 0's TensorBoard event files in STORAGE/NAME/tensorboard (DECISIONS 16). Remote storage:
    written locally, copied up at every checkpoint."""

    def __init__(self, cfg: Config) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.remote = "://" in cfg.run.storage_path
        self.target = f"{cfg.run.storage_path.rstrip('/')}/{cfg.run.name}/tensorboard"
        self._tmp = tempfile.mkdtemp(prefix="pose3d-tb-") if self.remote else None
        self.writer = SummaryWriter(self._tmp or self.target)

    def write(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in metrics.items():
            if isinstance(v, int | float) and k not in ("global_step", "checkpoint_score"):
                self.writer.add_scalar(k, v, step)

    def sync(self) -> None:
        self.writer.flush()
        if self.remote:
            import pyarrow.fs as pafs

            fs, root = pafs.FileSystem.from_uri(self.target)
            pafs.copy_files(
                self._tmp, root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
            )

    def close(self) -> None:
        self.sync()
        self.writer.close()
