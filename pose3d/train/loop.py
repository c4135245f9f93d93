"""The per-worker training loop: one file holds the whole training step (nanoGPT-style).

Runs inside a Ray Train worker (``train_loop_per_worker``); the process group (gloo on CPU, nccl
on GPU) is already set up by Ray Train. Each step takes a batch with exactly the configured mix of
3D and 2D-only rows (docs/conventions.md, Mixing), runs the network, the loss of its stage, the
optimizer; rank 0 validates, logs and writes the checkpoints, every rank reports to Ray Train.
Stage facts (how many, how long, what each trains) come from ``pose3d.train.schedule``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from pose3d import losses, storage, targets
from pose3d.data.augment import SOURCE_COLUMN
from pose3d.data.mixing import RowStream, RowTally, SourceCounts, StreamPosition, mixed_batch, shares
from pose3d.infra.stall import StallWatchdog
from pose3d.model.net import PoseNet
from pose3d.train import checkpoint as ckpt
from pose3d.train import schedule, seeding
from pose3d.train import tensorboard as tb
from pose3d.train.compile import compile_model, optimizer_flags
from pose3d.train.config import SET_2D, SET_3D, SOURCE_SIDES, Config, DataSection, config_from_dict
from pose3d.train.validate import Validator

log = logging.getLogger("pose3d.train")


def checkpoint_score(val_mpjpe: float | None, with_depth: bool, global_step: int) -> float:
    """What Ray Train keeps checkpoints by, lower first. A stage without depth has no 3D error to
    rank by, so its checkpoints are kept by recency (the latest is the one to resume and to start
    later stages from). Later: by validation MPJPE (mm); a step without validation ranks after
    every validated one, and a diverged (NaN) validation after those, so it is the first dropped
    (docs/design.md, Checkpoint retention)."""
    if not with_depth:
        return 1e12 - global_step
    if val_mpjpe is None:
        return 1e9 - global_step
    return float(val_mpjpe) if np.isfinite(val_mpjpe) else 1e10 - global_step


def to_tensors(
    batch: dict[str, np.ndarray], device: torch.device, channels_last: bool
) -> dict[str, torch.Tensor]:
    """A preprocessed numpy batch -> tensors on ``device`` (images to float in [0, 1]). The labels
    travel as joints (joints_out (B, 16, 2) output px, visible): ``train_step`` draws the heatmaps."""
    images = torch.from_numpy(batch["image"]).to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = {"image": images}
    for key in ("joints_out", "depth", "joints_2d_norm", "visible", "has_3d"):
        out[key] = torch.from_numpy(np.ascontiguousarray(batch[key])).to(device, non_blocking=True)
    if "labelled" in batch and not batch["labelled"].all():  # rows of a dataset that lacks joints
        out["labelled"] = torch.from_numpy(np.ascontiguousarray(batch["labelled"])).to(
            device, non_blocking=True
        )
    return out


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    weights: losses.LossWeights,
    with_depth: bool,
    autocast: Any,
) -> dict[str, float]:
    """One optimizer step; returns the loss terms as floats. The heatmap targets are drawn here, on
    the batch's device at the network's output size, from ``joints_out`` and ``visible``
    (docs/conventions.md, Targets)."""
    with autocast:
        out = model(batch["image"], with_depth=with_depth)
    heatmap_target = targets.render_heatmaps_torch(
        batch["joints_out"], batch["visible"], out.heatmaps[-1].shape[-1]
    )  # (B, 16, O, O) float32, outside autocast
    total, terms = losses.pose_loss(
        out.heatmaps,
        out.depth,
        heatmap_target=heatmap_target,
        depth_target=batch["depth"],
        has_3d=batch["has_3d"],
        visible=batch["visible"],
        joints_2d_norm=batch["joints_2d_norm"],
        weights=weights,
        labelled=batch.get("labelled"),
    )
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {k: float(v) for k, v in terms.items()}


def datasets_drawn(cfg: Config) -> set[str]:
    """The datasets some stage with steps draws rows from (the trainer passes only these)."""
    return {
        name
        for stage in schedule.STAGES
        if schedule.stage_steps(cfg, stage)
        for name, rows in zip((SET_3D, SET_2D), cfg.global_rows(stage, 1), strict=True)
        if rows
    }


# --- the recipe ---------------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point, run by every worker. ``loop_config["config"]`` is ``Config.to_dict()``.

    Restore (seeded weights, or the run's checkpoint), open the data streams, then for each stage
    from where the run stands: set it up, take its steps, report and checkpoint when due."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_dict(loop_config["config"])
    _apply_ray_train_log_level(cfg.run.ray_train_log_level)
    ctx = ray.train.get_context()
    rank, world, device = ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()
    torch.set_num_threads(cfg.scaling.torch_threads or max(1, int(cfg.scaling.cpus_per_worker)))
    _set_determinism(cfg.train.deterministic)
    model, restored = _restore(cfg, rank, device)
    streams = _streams(cfg, rank, loop_config.get("first_passes") or {}, restored.stream_positions)
    run = _Run.open(cfg, rank, world, device, restored, streams)
    global_step = restored.global_step
    while (pos := schedule.position(cfg, global_step)) is not None:
        stage = _set_up_stage(run, model, pos, restored.take_optimizer_state(pos.stage))
        for step in range(pos.step, stage.steps):
            lr = stage.set_lr(cfg, step)
            waiting = time.perf_counter()
            batch = stage.next_batch(streams, run)
            run.progress.waited(time.perf_counter() - waiting)
            _maybe_inject_failure(cfg, global_step, rank, world)
            terms = train_step(
                stage.net, stage.optimizer, batch, stage.weights, stage.with_depth, run.autocast
            )
            global_step += 1
            run.progress.tick()
            _report_and_checkpoint(run, model, stage, step + 1, global_step, terms, lr)
    _wait_for_uploads(run)
    run.close()


# --- restore and streams --------------------------------------------------------------------------


@dataclass
class _Restored:
    """Where the run resumes: the global step, and the optimizer state of the stage it stopped in."""

    global_step: int = 0
    optimizer_state: dict[str, Any] | None = None
    stage: int = 0
    adopted: str | None = None  # a checkpoint folder Ray Train never registered that the run resumed from
    source_rows: dict[str, list[int]] | None = None  # rows drawn per source over the run, all workers
    stream_positions: dict[str, list[int]] | None = None  # side -> [pass, offset] of rank 0's stream

    def take_optimizer_state(self, stage: int) -> dict[str, Any] | None:
        """The saved optimizer state when ``stage`` is the one the checkpoint stopped in (a
        mid-stage resume continues exactly); None otherwise. Handed out once."""
        state, self.optimizer_state = self.optimizer_state, None
        return state if stage == self.stage else None


def _reconcile_checkpoints(cfg: Config, rank: int, ray_step: int | None) -> ckpt.Reconciled:
    """Rank 0 looks for checkpoint folders of this run that Ray Train never registered: it adopts the
    newest complete one when it is past Ray's (``ray_step``), and removes the others; every rank
    gets rank 0's answer, so all resume from the same step."""
    found = None
    if rank == 0:
        found = ckpt.reconcile(storage.join(cfg.run.storage_path, cfg.run.name), ray_step, remove=True)
        for name in found.removed:
            log.info("removed checkpoint folder %s: incomplete, or never registered and superseded", name)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [found]
        torch.distributed.broadcast_object_list(box, src=0)
        found = box[0]
    return found


def _channels_last(cfg: Config, device: torch.device) -> bool:
    return device.type == "cuda" and cfg.train.channels_last


def _restore(cfg: Config, rank: int, device: torch.device) -> tuple[PoseNet, _Restored]:
    """The model on ``device``: seeded initial weights (the same on every rank, and in tests), then
    the run's latest checkpoint when Ray Train hands one (a resume: its step and optimizer state
    too), else the weights of ``train.init_from`` when set."""
    torch.manual_seed(cfg.train.seed)
    model = PoseNet(cfg.model).to(device)
    if _channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    compile_model(model, cfg.train.compile)  # in place, before any DDP wrap (pose3d/train/compile.py)
    state, adopted = None, None
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            state = ckpt.load_training_state(d)
    found = _reconcile_checkpoints(cfg, rank, state["global_step"] if state else None)
    if found.adopted is not None:
        adopted = found.adopted.path
        state = ckpt.load_training_state(adopted)
    if state is not None:
        model.load_state_dict(state["state_dict"])
        restored = _Restored(
            state["global_step"],
            state["optimizer"],
            state["stage"],
            adopted,
            state.get("source_rows"),
            state.get("stream_positions"),
        )
        if rank == 0:
            step, stage = restored.global_step, restored.stage
            how = (
                f" {adopted} (written before the run stopped, not yet registered by Ray Train)"
                if adopted
                else ""
            )
            log.info("resumed from checkpoint at global step %d (stage %d)%s", step, stage, how)
        return model, restored
    if cfg.train.init_from:
        model.load_state_dict(ckpt.load_training_state(cfg.train.init_from)["state_dict"])
        if rank == 0:
            log.info("initialized the weights from %s", cfg.train.init_from)
    return model, _Restored()


def _set_determinism(deterministic: bool) -> None:
    """``train.deterministic``: torch picks deterministic kernels (on GPU too: cuBLAS needs its
    workspace setting before its first use) and cuDNN does not benchmark its algorithms."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def _streams(
    cfg: Config, rank: int, first_passes: dict[str, int], saved: dict[str, list[int]] | None
) -> dict[str, RowStream | None]:
    """This worker's row stream of each dataset some stage draws from (None for the others).

    Pass k of a side is read with its local shuffle seeded by (seed, side, k, rank). A resumed
    run's dataset starts at the pass its driver found in the newest checkpoint (``first_passes``);
    when that is the pass of the checkpoint this worker resumed from (``saved``), the stream skips
    the rows of it trained on already and continues as the uninterrupted run; otherwise (Ray Train
    restarted the workers within a run, or the newest checkpoint was cut off) it reads that pass
    from its start and says so (docs/conventions.md, Seeds)."""
    # Ray 2.60 raises KeyError for a dataset the trainer was not given: ask only for those drawn.
    needed = datasets_drawn(cfg)
    streams: dict[str, RowStream | None] = {}
    for name in (SET_3D, SET_2D):
        shard = ray.train.get_dataset_shard(name) if name in needed else None
        if shard is None:
            streams[name] = None
            continue
        first = int(first_passes.get(name, 0))
        start = StreamPosition(first, 0)
        if saved and name in saved:
            at = StreamPosition(*saved[name])
            if at.pass_index == first:
                start = at
            elif rank == 0:
                log.warning(
                    "the %s stream resumes at the start of pass %d, not where the checkpoint stood (row "
                    "%d of pass %d): from here the rows differ from an uninterrupted run's",
                    name, first, at.offset, at.pass_index,
                )  # fmt: skip

        def new_pass(k: int, s: Any = shard, side: str = name) -> Any:
            return s.iter_batches(
                batch_size=32,
                batch_format="numpy",
                local_shuffle_buffer_size=cfg.data.shuffle_buffer,
                local_shuffle_seed=seeding.local_shuffle_seed(cfg.train.seed, side, k, rank),
                prefetch_batches=2,
            )

        streams[name] = RowStream(new_pass, start=start)
    return streams


class BadDataError(RuntimeError):
    """More rows of a training set fail to decode than ``data.max_bad_fraction`` allows."""


# --- the run and its stages -------------------------------------------------------------------------


class _Progress:
    """Throughput, ETA and the live progress line of rank 0."""

    def __init__(self, total_steps: int, global_batch: int, watchdog: StallWatchdog | None = None) -> None:
        self.total, self.batch = total_steps, global_batch
        self.t0 = self.t_last = time.perf_counter()
        self.steps_last = 0
        self.steps_done = 0
        self.watchdog = watchdog
        self.wait_s, self.t_wait = 0.0, self.t0  # seconds waiting for batches since t_wait

    def waited(self, seconds: float) -> None:
        """Count ``seconds`` spent getting the next batch (Ray Data, mixing, the copy to the device)."""
        self.wait_s += seconds

    def take_wait_fraction(self) -> float:
        """The fraction of wall time since the previous call spent getting batches. ``train_step``
        reads its losses back every step (a device sync), so on a GPU this is the time it sat idle
        for data."""
        now = time.perf_counter()
        fraction = self.wait_s / (now - self.t_wait) if now > self.t_wait else 0.0
        self.wait_s, self.t_wait = 0.0, now
        return fraction

    def tick(self) -> None:
        self.steps_done += 1
        if self.watchdog is not None:
            self.watchdog.beat()

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


@dataclass
class _Run:
    """One worker's fixed facts for the whole run, and rank 0's validation set and TensorBoard."""

    cfg: Config
    rank: int
    world: int
    device: torch.device
    nodes: int  # distinct Ray nodes the workers run on
    start_step: int  # the global step this attempt began at: > 0 after a resume
    progress: _Progress
    autocast: Any  # bf16 autocast on GPU with train.bf16; a no-op context otherwise
    validator: Validator | None = None  # rank 0, with data.val_3d set
    tensorboard: tb.TensorBoard | None = None  # rank 0
    tallies: dict[str, RowTally] = field(default_factory=dict)  # each stream's skipped rows
    streams: dict[str, RowStream] = field(default_factory=dict)  # the streams drawn from
    adopted: str | None = None  # rank 0: an unregistered checkpoint folder resumed from, removed later
    sources: dict[str, SourceCounts] = field(default_factory=dict)  # each side's rows per source
    upload: ray.train.CheckpointUploadMode = ray.train.CheckpointUploadMode.SYNC  # run.checkpoint_upload
    # rank 0: each checkpoint reported but not yet seen in storage, oldest first: (global step,
    # folder name in the run folder, local folder written), the local folder gone once it is uploaded
    uploading: list[tuple[int, str, str]] = field(default_factory=list)

    @classmethod
    def open(
        cls,
        cfg: Config,
        rank: int,
        world: int,
        device: torch.device,
        restored: _Restored,
        streams: dict[str, RowStream | None],
    ) -> _Run:
        validator = None
        if rank == 0 and cfg.data.val_3d:
            m = cfg.model
            validator = Validator(cfg.data.val_3d, cfg.data.val_rows, m.input_size, m.output_size)
        board = tb.TensorBoard(tb.folder(cfg.run.storage_path, cfg.run.name)) if rank == 0 else None
        nodes = _count_nodes(world)
        if rank == 0:
            log.info("%d worker(s) on %d node(s), device %s", world, nodes, device)
        watchdog = _stall_watchdog(cfg, world).start() if rank == 0 else None
        progress = _Progress(schedule.total_steps(cfg), cfg.data.batch_size, watchdog)
        bf16 = device.type == "cuda" and cfg.train.bf16
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
        tallies = {name: s.tally for name, s in streams.items() if s is not None}
        # Rank 0 carries the run's totals on from the checkpoint; the others count from 0 (reports sum them).
        totals = (restored.source_rows or {}) if rank == 0 else {}
        sources = {
            side: SourceCounts(len(getattr(cfg.data, side)), totals.get(side))
            for side, s in streams.items()
            if s is not None
        }
        return cls(
            cfg,
            rank,
            world,
            device,
            nodes,
            restored.global_step,
            progress,
            autocast,
            validator,
            board,
            tallies,
            {name: s for name, s in streams.items() if s is not None},
            restored.adopted if rank == 0 else None,
            sources,
            _upload_mode(cfg),
        )

    def skipped_rows(self) -> int:
        """Rows this worker skipped so far because their image does not decode: each named in the
        log once; ``BadDataError`` when a stream skipped more than ``data.max_bad_fraction``."""
        for name, tally in self.tallies.items():
            for where in tally.take_unreported():
                log.warning(
                    "worker %d skipped a %s row whose image does not decode: %s", self.rank, name, where
                )
            if tally.exceeds(self.cfg.data.max_bad_fraction):
                raise BadDataError(
                    f"{tally.skipped} of {tally.seen} rows of the {name} set do not decode, more than "
                    f"data.max_bad_fraction={self.cfg.data.max_bad_fraction}; re-run pose3d prep on that "
                    "set (the log names each row), or raise data.max_bad_fraction"
                )
        return sum(t.skipped for t in self.tallies.values())

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def channels_last(self) -> bool:
        return _channels_last(self.cfg, self.device)

    def close(self) -> None:
        if self.progress.watchdog is not None:
            self.progress.watchdog.stop()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _stall_watchdog(cfg: Config, world: int) -> StallWatchdog:
    """Rank 0's warning when no step finishes for ``train.stall_warn_s`` seconds, naming what Ray
    waits for and the settings that decide it."""
    d, s = cfg.data, cfg.scaling
    hint = (
        f"Each training set is preprocessed by up to data.preprocess_actors={d.preprocess_actors} actors "
        f"of 1 CPU, beside {world} training worker(s) of scaling.cpus_per_worker={s.cpus_per_worker:g} "
        "CPUs: lower data.preprocess_actors or give Ray more CPUs (pose3d train --num-cpus); "
        f"train.stall_warn_s={cfg.train.stall_warn_s:g} sets when this warning comes"
    )
    return StallWatchdog(cfg.train.stall_warn_s, "training step", hint)


@dataclass
class _Stage:
    """One stage as set up on this worker: the network to step (DDP-wrapped with several workers),
    its optimizer and loss weights, and the rows of each batch."""

    number: int
    steps: int  # the stage's length
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    weights: losses.LossWeights
    rows: tuple[int, int]  # (3D rows, 2D rows) per batch on this worker
    with_depth: bool
    window_3d: tuple[int, int] = field(init=False)  # (fewest, most) 3D rows a batch since the last report
    drawn: tuple[int, int] = (0, 0)  # (rows, 3D rows) of the latest batch, counted

    def __post_init__(self) -> None:
        self.window_3d = (sum(self.rows), 0)

    def set_lr(self, cfg: Config, step: int) -> float:
        """Put step ``step``'s learning rate into the optimizer; returns it."""
        lr = schedule.learning_rate(cfg, self.number, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def next_batch(self, streams: dict[str, RowStream | None], run: _Run) -> dict[str, torch.Tensor]:
        """The next mixed batch as tensors on the run's device."""
        np_batch = mixed_batch(streams[SET_3D], self.rows[0], streams[SET_2D], self.rows[1])
        source = np_batch.pop(SOURCE_COLUMN, None)
        if source is not None:  # the 3D side's rows come first
            for side, rows in ((SET_3D, source[: self.rows[0]]), (SET_2D, source[self.rows[0] :])):
                if len(rows):
                    run.sources[side].count(rows)
        rows_3d = int(np.count_nonzero(np_batch["has_3d"]))  # measured, not assumed: stage checks
        self.window_3d = (min(self.window_3d[0], rows_3d), max(self.window_3d[1], rows_3d))
        self.drawn = (len(np_batch["has_3d"]), rows_3d)
        return to_tensors(np_batch, run.device, run.channels_last)

    def take_window_3d(self) -> tuple[int, int]:
        """The (fewest, most) 3D rows per batch since the last call."""
        window, self.window_3d = self.window_3d, (sum(self.rows), 0)
        return window


def _set_up_stage(
    run: _Run, model: PoseNet, pos: schedule.StagePosition, optimizer_state: dict[str, Any] | None
) -> _Stage:
    """Stage ``pos.stage`` from its step ``pos.step``: the modules it trains, the network (in DDP
    with several workers), a fresh optimizer at the step's lr (``optimizer_state`` loaded into it
    on a mid-stage resume), its loss weights and batch rows."""
    cfg, stage = run.cfg, pos.stage
    for p in model.depth_parameters():
        p.requires_grad_(schedule.uses_depth(stage))
    net: torch.nn.Module = model
    if run.world > 1:
        device_ids = [run.device] if run.on_gpu else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    optimizer = _make_optimizer(model, cfg, schedule.learning_rate(cfg, stage, pos.step))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    net.train()
    return _Stage(
        number=stage,
        steps=schedule.stage_steps(cfg, stage),
        net=net,
        optimizer=optimizer,
        weights=schedule.loss_weights(cfg, stage),
        rows=cfg.stage_rows(stage, run.world),
        with_depth=schedule.uses_depth(stage),
    )


def _make_optimizer(model: PoseNet, cfg: Config, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer over the parameters that train in this stage."""
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.RMSprop
    fast = optimizer_flags(cls, params[0].device)  # fused on CUDA where torch has it, else foreach
    if o.name == "adam":
        return cls(params, lr=lr, betas=(0.9, o.alpha), eps=o.eps, weight_decay=o.weight_decay, **fast)
    return cls(
        params, lr=lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum, weight_decay=o.weight_decay, **fast
    )


# --- reports and checkpoints ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    """What happens after a step: a report, a checkpoint with it, validation in it."""

    report: bool
    checkpoint: bool
    validate: bool


def _due(cfg: Config, global_step: int, last_of_stage: bool, can_validate: bool) -> _Due:
    """The checkpoint policy after ``global_step`` steps: a checkpoint at the end of every stage and
    every ``train.checkpoint_every`` steps; a report (to Ray Train, the log, TensorBoard) with each
    checkpoint and every ``train.log_every`` steps; validation, where ``can_validate`` (rank 0 with
    a validation set, in a stage that trains depth), in a report that carries a checkpoint or falls
    on a multiple of ``train.val_every``."""
    t = cfg.train
    checkpoint = last_of_stage or global_step % t.checkpoint_every == 0
    report = checkpoint or global_step % t.log_every == 0
    validate = report and can_validate and (checkpoint or global_step % t.val_every == 0)
    return _Due(report, checkpoint, validate)


def _report_and_checkpoint(
    run: _Run,
    model: PoseNet,
    stage: _Stage,
    step_in_stage: int,
    global_step: int,
    terms: dict[str, float],
    lr: float,
) -> None:
    """After a step, when due: the metrics (validated on rank 0 when due), rank 0's progress line
    and TensorBoard scalars, and every rank's report to Ray Train, with a checkpoint when due."""
    last_of_stage = step_in_stage == stage.steps
    due = _due(run.cfg, global_step, last_of_stage, run.validator is not None and stage.with_depth)
    if not due.report:
        return
    window_3d = stage.take_window_3d()
    global_rows, global_3d = _global_rows(run, stage.drawn)
    metrics: dict[str, Any] = {f"loss_{k}": v for k, v in terms.items()}
    metrics.update(
        stage=stage.number,
        step_in_stage=step_in_stage,
        global_step=global_step,
        start_step=run.start_step,
        nodes=run.nodes,
        lr=lr,
        img_per_s=run.progress.window(),
        data_wait_fraction=run.progress.take_wait_fraction(),
        batch_rows=sum(stage.rows),
        world_size=run.world,
        global_batch_rows=global_rows,
        global_3d_rows=global_3d,
        batch_3d_rows_min=window_3d[0],
        batch_3d_rows_max=window_3d[1],
        rows_skipped=run.skipped_rows(),
    )
    metrics.update(_source_metrics(run))
    if due.validate:
        metrics.update(run.validator(model, run.device, run.autocast))
    metrics["checkpoint_score"] = checkpoint_score(metrics.get("val_mpjpe"), stage.with_depth, global_step)
    if run.rank == 0:
        eta = run.progress.eta(global_step)
        log.info(_progress_line(metrics, stage.steps, run.progress.total, eta, run.cfg.data))
        run.tensorboard.write(metrics, global_step)
    if due.checkpoint:
        _report_with_checkpoint(run, model, stage, metrics)
    else:
        _report(run, metrics)


def _global_rows(run: _Run, drawn: tuple[int, int]) -> tuple[int, int]:
    """The reported step's batch rows and 3D rows as the workers drew them, summed over the workers
    (one small all-reduce with several): counted, not the configured rows times the world size, so
    a resize that broke the global batch or its mix would show in the reports."""
    if run.world == 1:
        return drawn
    summed = torch.tensor(drawn, dtype=torch.int64, device=run.device)
    torch.distributed.all_reduce(summed)
    rows, rows_3d = summed.tolist()
    return rows, rows_3d


def _source_metrics(run: _Run) -> dict[str, float]:
    """Each source's realized share of its side's rows since the last report (``share_set_2d_1``),
    and its rows over the run (``rows_set_2d_1``), summed over the workers (one small all-reduce),
    for the sides that list more than one source; sources numbered from 1 as in the config."""
    sides = [side for side, counts in run.sources.items() if len(counts.window) > 1]
    if not sides:
        return {}
    counts = {
        side: np.concatenate([run.sources[side].take_window(), run.sources[side].total]) for side in sides
    }
    flat = np.concatenate(list(counts.values()))
    if run.world > 1:
        summed = torch.from_numpy(flat).to(run.device)
        torch.distributed.all_reduce(summed)
        flat = summed.cpu().numpy()
    out: dict[str, float] = {}
    at = 0
    for side, part in counts.items():
        n = len(part) // 2
        window_shares, run_rows = shares(flat[at : at + n]), flat[at + n : at + 2 * n]
        at += 2 * n
        for i in range(n):
            out[f"share_{side}_{i + 1}"] = float(window_shares[i])
            out[f"rows_{side}_{i + 1}"] = int(run_rows[i])
    return out


def _run_source_rows(metrics: dict[str, Any], cfg: Config) -> dict[str, list[int]]:
    """Rows drawn per source over the run, from a report's metrics (saved with the checkpoint)."""
    return {
        side: [int(metrics[f"rows_{side}_{i}"]) for i in range(1, len(getattr(cfg.data, side)) + 1)]
        for side in SOURCE_SIDES
        if f"rows_{side}_1" in metrics
    }


def _upload_mode(cfg: Config) -> ray.train.CheckpointUploadMode:
    """Ray Train's upload mode for ``run.checkpoint_upload`` ("auto" resolved by the storage path)."""
    if cfg.run.upload_mode() == "async":
        return ray.train.CheckpointUploadMode.ASYNC
    return ray.train.CheckpointUploadMode.SYNC


def _report(run: _Run, metrics: dict[str, Any]) -> None:
    """A report without a checkpoint. Ray Train hands a worker's reports to its controller in order,
    one per poll (every 2 s), so while rank 0 has a checkpoint uploading in the background this
    report goes in the background too: a sync one would wait for the upload. Otherwise sync, Ray's
    default: a worker reporting faster than the controller polls waits, rather than queueing up."""
    if run.rank == 0:
        _note_persisted(run)
    mode = ray.train.CheckpointUploadMode.ASYNC if run.uploading else ray.train.CheckpointUploadMode.SYNC
    ray.train.report(metrics, checkpoint_upload_mode=mode)


def _report_with_checkpoint(run: _Run, model: PoseNet, stage: _Stage, metrics: dict[str, Any]) -> None:
    """Every rank reports ``metrics``; rank 0's report carries the checkpoint (weights, optimizer,
    stage and step, config, metrics), which Ray Train persists into the run's storage.

    Rank 0 writes the whole state into a local folder first (``torch.save`` copies the tensors,
    from the GPU too), so the next steps may change the weights while the folder uploads. In sync
    mode the report returns once the folder is in storage, and the folder is removed here; in async
    mode it returns at once, and Ray Train uploads the folder on a background thread, then deletes
    it (docs/design.md, Checkpoint upload)."""
    checkpoint, local, name = None, None, None
    step = metrics["global_step"]
    background = run.upload == ray.train.CheckpointUploadMode.ASYNC
    if run.rank == 0:
        local = tempfile.mkdtemp(prefix="pose3d-ckpt-")
        ckpt.save_checkpoint(
            local,
            model,
            run.cfg.model,
            optimizer=stage.optimizer,
            stage=stage.number,
            step_in_stage=metrics["step_in_stage"],
            global_step=step,
            config=run.cfg.to_dict(),
            metrics=metrics,
            source_rows=_run_source_rows(metrics, run.cfg),
            world_size=run.world,
            stream_positions={
                side: [p.pass_index, p.offset] for side, s in run.streams.items() for p in [s.position()]
            },
        )
        checkpoint = ray.train.Checkpoint.from_directory(local)
        run.tensorboard.sync()
        # Ray Train's own name format (folders sort by time: ckpt.reconcile relies on it), chosen here
        # to know the folder; Ray takes rank 0's name for every rank.
        name = f"{ckpt.CHECKPOINT_PREFIX}{datetime.today().strftime('%Y-%m-%d_%H-%M-%S.%f')}"
        run.uploading.append((step, name, local))
    try:
        ray.train.report(
            metrics,
            checkpoint=checkpoint,
            checkpoint_dir_name=name,
            checkpoint_upload_mode=run.upload,
            delete_local_checkpoint_after_upload=background,
        )
    finally:
        if local is not None and not background:
            shutil.rmtree(local, ignore_errors=True)
    if run.rank == 0:
        if background:
            where = storage.join(run.cfg.run.storage_path, run.cfg.run.name, name)
            log.info("uploading the step-%d checkpoint to %s in the background", step, where)
        _note_persisted(run, everything=not background)  # sync: every upload so far is done


def _note_persisted(run: _Run, everything: bool = False) -> None:
    """Rank 0: announce each checkpoint that is in storage now, and remove the adopted folder once
    a newer checkpoint is. A checkpoint is there when its local folder is gone: removed here after a
    sync report, deleted by Ray Train right after an async upload (uploads run one at a time, in
    order). ``everything``: all reported are in storage (a sync report returned, or the run's end).
    ``checkpoint at global step N: PATH`` means the folder is in storage, complete, in either mode;
    registered by Ray Train or, should the run stop first, adopted when it resumes."""
    done = 0
    while done < len(run.uploading) and (everything or not os.path.exists(run.uploading[done][2])):
        done += 1
    if not done:
        return
    run_dir = storage.join(run.cfg.run.storage_path, run.cfg.run.name)
    for step, name, local in run.uploading[:done]:
        shutil.rmtree(local, ignore_errors=True)  # left by a failed delete
        log.info("checkpoint at global step %d: %s", step, storage.join(run_dir, name))
    del run.uploading[:done]
    if run.adopted is not None:
        # A newer checkpoint is in storage: the adopted folder, which Ray never prunes, goes.
        fs, path = storage.resolve(run.adopted)
        fs.delete_dir(path)
        log.info("removed %s: resumed from, never registered, now superseded", run.adopted)
        run.adopted = None


def _wait_for_uploads(run: _Run) -> None:
    """Rank 0, after the last step: wait until Ray Train's controller has registered every report so
    far (async uploads included), then announce the checkpoints still in flight. Nothing to wait for
    in sync mode, where each checkpoint is in storage when its report returns."""
    if run.rank != 0 or not run.uploading:
        return
    waited = time.perf_counter()
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    log.info("waited %.1f s for the last checkpoint upload(s)", time.perf_counter() - waited)
    _note_persisted(run, everything=True)


def _progress_line(m: dict[str, Any], stage_steps: int, total: int, eta: str, data: DataSection) -> str:
    parts = [
        f"[stage {m['stage']}/{schedule.NUM_STAGES}] step {m['step_in_stage']}/{stage_steps} "
        f"(global {m['global_step']}/{total})",
        f"loss {m['loss_total']:.4g} (hm {m['loss_heatmap']:.3g}",
    ]
    if "loss_depth" in m:
        parts[-1] += f" dep {m['loss_depth']:.3g} geo2d {m['loss_geo_2d']:.3g}"
    parts[-1] += ")"
    parts.append(f"{m['img_per_s']:.1f} img/s")
    if data_workers := m.get("world_size"):
        parts.append(f"{data_workers} worker{'s' if data_workers > 1 else ''}")
    for side, label in ((SET_3D, "3D"), (SET_2D, "2D")):
        if f"share_{side}_1" in m:  # the realized shares since the last line, and the weights' shares
            targets = data.target_shares(side)
            realized = "/".join(f"{100 * m[f'share_{side}_{i}']:.0f}" for i in range(1, len(targets) + 1))
            parts.append(
                f"{label} sources {realized} % (weights {'/'.join(f'{100 * t:.0f}' for t in targets)})"
            )
    if m.get("rows_skipped"):
        parts.append(f"{m['rows_skipped']} undecodable rows skipped")
    if "val_mpjpe" in m:
        parts.append(f"val MPJPE {m['val_mpjpe']:.1f} mm PCK {m['val_pck2d']:.3f}")
    parts.append(f"ETA {eta}")
    return " | ".join(parts)


# --- workers and fault injection ------------------------------------------------------------------


def _count_nodes(world: int) -> int:
    """Distinct Ray nodes the workers run on (placement checks; one all-gather at start)."""
    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return 1
    gathered: list[str | None] = [None] * world
    torch.distributed.all_gather_object(gathered, node)
    return len(set(gathered))


def _apply_ray_train_log_level(level: str) -> None:
    """Ray's ``LoggingConfig`` filters loggers named ``ray.train.*``; the worker context's logger,
    which logs every report at INFO, is named by its file path (Ray 2.60) and escapes that filter."""
    try:
        from ray.train.v2._internal.execution import context as worker_context
    except ImportError:  # a Ray whose layout differs: its own LoggingConfig applies
        return
    logging.getLogger(worker_context.__file__).setLevel(level.upper())


def _maybe_inject_failure(cfg: Config, global_step: int, rank: int, world: int) -> None:
    """Fault injection for tests: the last rank dies once when ``train.fail_at_step`` steps are
    done (their reports made), before the next update. "Once": a marker file in the run's folder
    (STORAGE/NAME/.fault_injected) records it, so the restarted worker group runs on.

    A report reaches Ray Train's controller only when its next poll carries it off the worker
    (a queue of one per worker), and a process that exits while that poll's reply is in flight
    loses the report, as a real crash would. With a report every step, the checkpoint of step k is
    certainly registered once the worker has put the report of step k + 2 (which waits for step
    k + 1's to be taken, after step k's was delivered): to test resume from checkpoint k, set
    ``fail_at_step`` to k + 2 or more."""
    if cfg.train.fail_at_step is None or global_step != cfg.train.fail_at_step or rank != world - 1:
        return
    marker = storage.join(cfg.run.storage_path, cfg.run.name, ".fault_injected")
    if storage.exists(marker):
        return
    storage.write_text(marker, f"worker rank {rank} killed itself at step {global_step}\n")
    log.warning("fault injection: rank %d exits at global step %d", rank, global_step)
    os._exit(1)
