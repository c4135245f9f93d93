"""Assembles a Ray Train run: the two shard datasets with their preprocessing actors, the
TorchTrainer with its scaling, storage, checkpoint and failure settings."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import numpy as np

from pose3d.data.augment import INPUT_COLUMNS, REPEAT_COLUMN, SOURCE_COLUMN, BatchPreprocessor
from pose3d.train import schedule, seeding
from pose3d.train.config import SOURCE_SIDES, Config, ConfigError, Source, absolute_paths
from pose3d.train.loop import datasets_drawn, train_loop_per_worker

log = logging.getLogger("pose3d.train")


def needed_datasets(cfg: Config) -> dict[str, list[tuple[int, Source]]]:
    """Side name -> its drawn sources (index in the side's list, source), for the sides some stage
    draws rows from."""
    for side in datasets_drawn(cfg):
        if not cfg.data.sources(side):
            raise ConfigError(f"data.{side} is empty but the configured stages draw rows from it")
    return {side: cfg.data.sources(side) for side in sorted(datasets_drawn(cfg))}


#: Rows per block entering a side's mix, which interleaves whole blocks (a shard's block can hold
#: its 1000 rows). Measured on the demo's shards, 2D sources at 3:1, shares over windows of 120
#: rows: standard deviation 0.13 with the shards' own blocks, 0.054 at 64 rows, 0.040 at 16 rows,
#: where 16 cost about 25 % of the rows/s and 64 nothing measurable (docs/conventions.md, Mixing).
MIX_BLOCK_ROWS = 64


def build_datasets(cfg: Config, first_passes: dict[str, int] | None = None) -> dict[str, Any]:
    """One streaming pipeline per side: read each source's shards (tagged with the source's index),
    mix the sources by weight, then decode + augment on CPU actors. ``first_passes``: per side, the
    number of the pass the dataset's first execution reads (a resumed run's, ``resume_passes``);
    file orders and augmentation follow ``train.seed`` and the pass (docs/conventions.md, Seeds)."""
    import ray.data

    from pose3d.data.idle import install_idle_backoff, remove_idle_backoff

    # Datasets carry the Data context they were created under to their executors' processes.
    (install_idle_backoff if cfg.data.idle_backoff else remove_idle_backoff)()
    out = {}
    for side, sources in needed_datasets(cfg).items():
        first_pass = (first_passes or {}).get(side, 0)
        parts = [_read_source(cfg, side, src.path, index, first_pass) for index, src in sources]
        ds = parts[0]
        if len(parts) > 1:
            first, *others = [part.repartition(target_num_rows_per_block=MIX_BLOCK_ROWS) for part in parts]
            # Each pass ends when the source that is shortest relative to its weight runs out: the
            # weights hold to the end of every pass, and the larger sources are read in a fresh
            # random subset of their files each pass.
            ds = first.mix(
                *others,
                weights=[src.weight for _, src in sources],
                stopping_condition=ray.data.MixStoppingCondition.STOP_ON_SHORTEST,
            )
        out[side] = ds.map_batches(
            BatchPreprocessor,
            fn_constructor_kwargs={
                "input_size": cfg.model.input_size,
                "output_size": cfg.model.output_size,
                "params": cfg.data.augment,
                "seed": seeding.augmentation_seed(cfg.train.seed, side),
                "first_pass": first_pass,
            },
            batch_size=32,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.data.preprocess_actors),
        )
    return out


def _read_source(cfg: Config, side: str, path: str, index: int, first_pass: int) -> Any:
    """One source's rows for a pass: its shard files read ``epochs_per_pass`` times, each read in
    the order of its seed and the pass, with the ``source`` column (its index in the side's list)
    and the ``repeat`` column (which read) beside the row id and shard file that name a row that
    fails to decode."""
    from pose3d.data.shards import read_shards

    reads = [
        read_shards(
            path,
            columns=[*INPUT_COLUMNS, "row_id"],
            shuffle_files=True,
            shuffle_seed=seeding.file_order_seed(cfg.train.seed, side, index, repeat),
            first_pass=first_pass,
            include_paths=True,
        )
        for repeat in range(cfg.data.epochs_per_pass)
    ]
    if len(reads) > 1:  # without the column a row is repeat 0
        reads = [r.add_column(REPEAT_COLUMN, _constant_column(k), batch_format="numpy")
                 for k, r in enumerate(reads)]  # fmt: skip
        ds = reads[0].union(*reads[1:])
    else:
        ds = reads[0]
    return ds.add_column(SOURCE_COLUMN, _constant_column(index), batch_format="numpy")


def _constant_column(value: int) -> Any:
    """A column of ``value`` for ``Dataset.add_column`` (a numpy batch is a dict of columns)."""
    return lambda rows: np.full(len(rows["row_id"]), value, np.int16)


def resume_passes(cfg: Config) -> dict[str, int]:
    """Per side, the pass the run's newest checkpoint stood in (``{}`` for a new run): a resumed
    run's datasets start their pass count there, so the passes it reads are the ones the
    uninterrupted run would have read."""
    from pose3d import storage
    from pose3d.train.checkpoint import newest_stream_positions

    positions = newest_stream_positions(storage.join(cfg.run.storage_path, cfg.run.name))
    return {side: position[0] for side, position in positions.items()}


def build_trainer(cfg: Config, callbacks: list[Any] | None = None) -> Any:
    """The run's TorchTrainer (``callbacks``: Ray Train callbacks, e.g. Tune's report bridge)."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    absolute_paths(cfg)
    first_passes = resume_passes(cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "first_passes": first_passes},
        scaling_config=ScalingConfig(
            num_workers=s.worker_range if s.elastic else s.max_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=resources,
            placement_strategy=s.placement_strategy,
            elastic_resize_monitor_interval_s=s.resize_interval_s,
        ),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=cfg.run.storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.run.keep_checkpoints,
                checkpoint_score_attribute="checkpoint_score",
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            logging_config=LoggingConfig(log_level=cfg.run.ray_train_log_level.upper()),
            callbacks=callbacks,
        ),
        datasets=build_datasets(cfg, first_passes),
        dataset_config=DataConfig(datasets_to_split="all", execution_options=_ingest_options(cfg)),
    )


def _ingest_options(cfg: Config) -> Any:
    """Ray Data's options for the training sets. With ``train.deterministic`` rows leave each
    pipeline in the order they were read, whichever actor finishes first: the price of a repeatable
    run (docs/conventions.md, Seeds, with its cost measured). Ray Train sets every dataset's options
    from these (by default from the driver's context), overriding the dataset's own."""
    from ray.data import DataContext, ExecutionOptions

    current = DataContext.get_current().execution_options
    return ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=cfg.train.deterministic,
        verbose_progress=current.verbose_progress,
    )


def check_init_checkpoint(cfg: Config) -> None:
    """Refuse a ``train.init_from`` that is missing or unsafe (``ConfigError`` naming it) in the driver,
    before any worker starts. ``fit`` checks; a Tune trial does not (its search checked the
    checkpoint once, in ``tune.plan``)."""
    if not cfg.train.init_from:
        return
    from pose3d.model.io import CheckpointReadError
    from pose3d.train.checkpoint import load_training_state

    try:
        load_training_state(cfg.train.init_from)
    except (FileNotFoundError, CheckpointReadError) as err:
        raise ConfigError(f"train.init_from: {err}") from None


def check_shard_paths(cfg: Config) -> None:
    """Refuse a configured shard set with no shard under it (``ConfigError`` naming the key), in the
    driver: otherwise a missing ``data.val_3d`` surfaces minutes later as a worker's traceback."""
    from pose3d.data.shards import NoShardsError, list_shards

    named = [(f"data.{side}.{i}.path", src.path) for side in SOURCE_SIDES
             for i, src in enumerate(getattr(cfg.data, side), start=1)]  # fmt: skip
    named += [(f"data.{key}", getattr(cfg.data, key)) for key in ("val_3d", "val_2d")]
    for key, path in named:
        if not path:
            continue
        try:
            list_shards(path)
        except NoShardsError as err:
            raise ConfigError(f"{key}: {err}") from None


def check_inputs(cfg: Config) -> None:
    """Every input the run reads, checked in the driver before anything starts (``ConfigError``)."""
    check_shard_paths(cfg)
    check_init_checkpoint(cfg)


def fit(cfg: Config, *, inputs_checked: bool = False) -> Any:
    """Run (or resume: same run name and storage) a training; returns the Ray Train Result.
    ``inputs_checked``: the caller ran ``check_inputs`` already (before starting Ray)."""
    low, high = cfg.scaling.worker_range
    log.info(
        "training %s: %d steps (%s), %s worker(s), batch %d (3D/2D rows in stages %s: %s)",
        cfg.run.name,
        schedule.total_steps(cfg),
        schedule.describe_lengths(cfg),
        f"{low}-{high} (elastic)" if cfg.scaling.elastic else low,
        cfg.data.batch_size,
        f"{schedule.DEPTH_STAGES[0]}-{schedule.DEPTH_STAGES[-1]}",
        cfg.global_rows(schedule.DEPTH_STAGES[0], low),
    )
    log.debug("config: %s", asdict(cfg))
    if not inputs_checked:
        check_inputs(cfg)
    return build_trainer(cfg).fit()
