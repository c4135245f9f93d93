"""Batch inference over shard sets with Ray Data: ``read_shards`` -> decode and crop (CPU tasks) ->
``ModelActor`` (a pool of actors, one GPU each when the cluster has GPUs, else CPU) -> a prediction
set back to the driver as numpy (``pose3d.eval.predict.add_predictions`` rows), for
``pose3d.eval.score`` to score.

The same functions as the in-memory path (``predict.prepare_rows``, ``predict.add_predictions``)
run inside the tasks and actors, so both paths give the same numbers.

``predict_photos_ray`` does the same for ``pose3d predict --ray``: image files -> read and crop (CPU
tasks) -> ``PhotoModelActor`` -> outputs written by CPU tasks, the steps of ``pose3d.eval.photos``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from pose3d.data import shards
from pose3d.eval import photos
from pose3d.eval.predict import (
    EVAL_COLUMNS,
    LABEL_COLUMNS,
    add_predictions,
    concat_prediction_sets,
    drop_undecoded,
    prepare_rows,
    select_rows,
)

log = logging.getLogger("pose3d")


def _prepare(
    rows: dict[str, np.ndarray], input_size: int, output_size: int, keep_ids: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Ray Data task: shard rows -> network input + labels (``predict.prepare_rows``), keeping only
    ``keep_ids`` rows when given."""
    if keep_ids is not None:
        keep = np.isin(np.asarray(rows["row_id"]).astype(str), keep_ids)
        rows = {k: np.asarray(v)[keep] for k, v in rows.items()}
    return prepare_rows(rows, input_size, output_size)


class ModelActor:
    """Ray Data actor: holds one network (loaded once) and runs it on prepared batches.

    ``use_gpu``: run on this actor's GPU (Ray sets CUDA_VISIBLE_DEVICES for ``num_gpus=1``);
    bf16 autocast there. On CPU the actor uses the threads Ray gives it (its ``num_cpus``).
    """

    def __init__(self, checkpoint: str, flip_test: bool, batch_size: int, use_gpu: bool) -> None:
        import torch

        from pose3d.model.io import load_model

        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.model = load_model(checkpoint, map_location=self.device)
        self.flip_test, self.batch_size = flip_test, batch_size
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return add_predictions(
            self.model,
            batch,
            self.device,
            flip_test=self.flip_test,
            batch_size=self.batch_size,
            autocast=self.autocast,
        )


def predict_dataset(
    checkpoint: str,
    data: str | Sequence[str],
    *,
    input_size: int,
    output_size: int,
    flip_test: bool = False,
    batch_size: int = 32,
    max_rows: int | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 2.0,
    use_gpu: bool | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> dict[str, np.ndarray]:
    """Predictions for every row of the shard sets under ``data`` (Ray must be initialized).

    ``checkpoint`` must be readable from every node (local on one machine, s3:// on a cluster).
    ``max_rows``: that many rows spread evenly (``predict.select_rows``, as the in-memory path).
    ``actors``: model actors (default: one per GPU, or 1 on CPU). ``use_gpu``: default when the
    cluster has GPUs. ``cpus_per_actor``: CPUs (torch threads) of a CPU actor.
    ``progress(rows_done, rows_total)`` is called as batches arrive.
    Returns the prediction set: per-row numpy arrays (``predict.add_predictions``'s keys).
    """
    import ray

    from pose3d.data.shards import load_shards_numpy, read_shards

    ds = read_shards(data, columns=EVAL_COLUMNS)
    keep_ids = None
    if max_rows:
        ids = load_shards_numpy(data, ["row_id"])["row_id"].astype(str)
        keep = select_rows(len(ids), max_rows)
        keep_ids = None if keep is None else ids[keep]
    total = len(keep_ids) if keep_ids is not None else shards.count_shard_rows(shards.list_shards(data))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 if use_gpu is None else use_gpu
    if use_gpu and gpus == 0:
        raise ValueError("use_gpu is set but the Ray cluster has no GPU")
    pool = actors or (gpus if use_gpu else 1)
    log.info("eval: %d rows, %d model actor(s) on %s", total, pool, "GPU" if use_gpu else "CPU")
    # Blocks of a batch each: the read may hand over a whole small set as one block, and a map task
    # returns one block per input block, so without this the predictions arrive all at the end.
    ds = ds.repartition(target_num_rows_per_block=batch_size)
    ds = ds.map_batches(
        _prepare,
        fn_kwargs={"input_size": input_size, "output_size": output_size, "keep_ids": keep_ids},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
    ds = ds.map_batches(
        ModelActor,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "flip_test": flip_test,
            "batch_size": batch_size,
            "use_gpu": use_gpu,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool),
        num_gpus=1 if use_gpu else 0,
        num_cpus=1 if use_gpu else cpus_per_actor,
    )
    parts, done, start, first = [], 0, time.perf_counter(), None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if len(batch["row_id"]):
            parts.append({k: np.asarray(v) for k, v in batch.items()})
            done += len(batch["row_id"])
        if first is None:
            first = (time.perf_counter() - start, done)
            log.info("eval: first predictions after %.1f s (start-up)", first[0])
        if progress is not None:
            progress(done, total)
    if first is not None and done > first[1]:
        rate = (done - first[1]) / max(time.perf_counter() - start - first[0], 1e-9)
        log.info("eval: %.1f rows/s after the first batch", rate)
    if not parts:
        raise ValueError(f"{data}: no rows to evaluate")
    preds = concat_prediction_sets(parts)
    for name in LABEL_COLUMNS:  # Arrow strings come back as object arrays
        preds[name] = preds[name].astype(str)
    return drop_undecoded(preds)


# --- images (``pose3d predict --ray``) --------------------------------------------------------------


class PhotoModelActor(ModelActor):
    """Ray Data actor for ``pose3d predict --ray``: ``photos.predict_people_batch`` on batches of
    ``photos.read_and_crop`` rows, the crops of a batch through the network ``batch_size`` at a time."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return photos.predict_people_batch(
            self.model,
            batch,
            self.device,
            flip_test=self.flip_test,
            batch_size=self.batch_size,
            autocast=self.autocast,
        )


def predict_photos_ray(
    checkpoint: str,
    rows: Sequence[dict[str, str]],
    out: str,
    *,
    input_size: int,
    margin: float,
    flip_test: bool = False,
    batch_size: int = 32,
    figures: bool = True,
    actors: int | None = None,
    cpus_per_actor: float = 2.0,
    use_gpu: bool | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """``photos.predict_photos`` with Ray Data (Ray must be initialized): image rows
    (``photos.image_rows``) -> read and crop (CPU tasks) -> a pool of ``PhotoModelActor`` (one GPU
    each when the cluster has GPUs, else CPU) -> the outputs written by CPU tasks. Yields
    ``photos.write_outputs``'s summary batches as they arrive.

    ``checkpoint``, the images' paths and ``out`` must be readable (writable) from every node: local
    paths on one machine; on a cluster a shared filesystem (``out`` may also be s3://...).
    ``batch_size``: images per task and actor call, and crops per forward pass. ``actors``: default
    one per GPU, or 1 on CPU. ``use_gpu``: default when the cluster has GPUs.
    """
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 if use_gpu is None else use_gpu
    if use_gpu and gpus == 0:
        raise ValueError("use_gpu is set but the Ray cluster has no GPU")
    pool = actors or (gpus if use_gpu else 1)
    log.info("predict: %d images, %d model actor(s) on %s", len(rows), pool, "GPU" if use_gpu else "CPU")
    # Blocks of a batch each, so images flow through the stages batch by batch (see predict_dataset).
    ds = ray.data.from_items(list(rows), override_num_blocks=max(1, -(-len(rows) // batch_size)))
    ds = ds.map_batches(
        photos.read_and_crop,
        fn_kwargs={"input_size": input_size, "margin": margin},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
    ds = ds.map_batches(
        PhotoModelActor,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "flip_test": flip_test,
            "batch_size": batch_size,
            "use_gpu": use_gpu,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool),
        num_gpus=1 if use_gpu else 0,
        num_cpus=1 if use_gpu else cpus_per_actor,
    )
    ds = ds.map_batches(
        photos.write_outputs,
        fn_kwargs={
            "out": out,
            "margin": margin,
            "flip_test": flip_test,
            "figures": figures,
            "input_size": input_size,
        },
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if len(batch["name"]):
            yield {k: np.asarray(v) for k, v in batch.items()}
