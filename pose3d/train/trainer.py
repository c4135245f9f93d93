"""Assembles a Ray Train run: the two shard datasets with their preprocessing actors, the
TorchTrainer with its scaling, storage, checkpoint and failure settings."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from pose3d.data.augment import INPUT_COLUMNS, BatchPreprocessor
from pose3d.train import schedule
from pose3d.train.config import Config, ConfigError, absolute_paths
from pose3d.train.loop import SET_2D, SET_3D, datasets_drawn, train_loop_per_worker

log = logging.getLogger("pose3d.train")


def needed_datasets(cfg: Config) -> dict[str, str]:
    """Dataset name -> shard path, for the sets some stage draws rows from."""
    paths = {SET_3D: ("data.set_3d", cfg.data.set_3d), SET_2D: ("data.set_2d", cfg.data.set_2d)}
    for name in datasets_drawn(cfg):
        key, path = paths[name]
        if not path:
            raise ConfigError(f"{key} is empty but the configured stages draw rows from it")
    return {name: paths[name][1] for name in sorted(datasets_drawn(cfg))}


def build_datasets(cfg: Config) -> dict[str, Any]:
    """One streaming pipeline per dataset: read shards -> decode + augment on CPU actors."""
    import ray.data

    from pose3d.data.shards import read_shards

    out = {}
    for name, path in needed_datasets(cfg).items():
        # File order reshuffled at every read (each pass, each chained epoch); rows further mixed
        # by the workers' local shuffle buffer.
        # The row id and the shard file ride along so a row that fails to decode can be named.
        ds = read_shards(path, columns=[*INPUT_COLUMNS, "row_id"], shuffle_files=True, include_paths=True)
        if cfg.data.epochs_per_pass > 1:
            ds = ds.union(*[ds] * (cfg.data.epochs_per_pass - 1))
        out[name] = ds.map_batches(
            BatchPreprocessor,
            fn_constructor_kwargs={
                "input_size": cfg.model.input_size,
                "output_size": cfg.model.output_size,
                "params": cfg.data.augment,
            },
            batch_size=32,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.data.preprocess_actors),
        )
    return out


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
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict()},
        scaling_config=ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=resources,
            placement_strategy=s.placement_strategy,
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
        datasets=build_datasets(cfg),
        dataset_config=DataConfig(datasets_to_split="all"),
    )


def check_init_checkpoint(cfg: Config) -> None:
    """Refuse a ``train.init_from`` that is missing or unsafe (``ConfigError`` naming it) in the driver,
    before any worker starts. ``fit`` checks; a Tune trial does not (its search checked the
    checkpoint once, in ``tune.plan``)."""
    if not cfg.train.init_from:
        return
    from pose3d.model.io import UnsafeCheckpointError
    from pose3d.train.checkpoint import load_training_state

    try:
        load_training_state(cfg.train.init_from)
    except (FileNotFoundError, UnsafeCheckpointError) as err:
        raise ConfigError(f"train.init_from: {err}") from None


def check_shard_paths(cfg: Config) -> None:
    """Refuse a configured shard set with no shard under it (``ConfigError`` naming the key), in the
    driver: otherwise a missing ``data.val_3d`` surfaces minutes later as a worker's traceback."""
    from pose3d.data.shards import NoShardsError, list_shards

    for key in ("set_3d", "set_2d", "val_3d", "val_2d"):
        path = getattr(cfg.data, key)
        if not path:
            continue
        try:
            list_shards(path)
        except NoShardsError as err:
            raise ConfigError(f"data.{key}: {err}") from None


def check_inputs(cfg: Config) -> None:
    """Every input the run reads, checked in the driver before anything starts (``ConfigError``)."""
    check_shard_paths(cfg)
    check_init_checkpoint(cfg)


def fit(cfg: Config, *, inputs_checked: bool = False) -> Any:
    """Run (or resume: same run name and storage) a training; returns the Ray Train Result.
    ``inputs_checked``: the caller ran ``check_inputs`` already (before starting Ray)."""
    log.info(
        "training %s: %d steps (%s), %d worker(s), batch %d (3D/2D rows per worker in stages %s: %s)",
        cfg.run.name,
        schedule.total_steps(cfg),
        schedule.describe_lengths(cfg),
        cfg.scaling.num_workers,
        cfg.data.batch_size,
        f"{schedule.DEPTH_STAGES[0]}-{schedule.DEPTH_STAGES[-1]}",
        cfg.rows_per_worker(),
    )
    log.debug("config: %s", asdict(cfg))
    if not inputs_checked:
        check_inputs(cfg)
    return build_trainer(cfg).fit()
