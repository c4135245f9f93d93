"""Checkpoints: a folder with ``model.pt`` (weights + the model config, ``pose3d.model.io``),
``state.pt`` (optimizer, stage, step) and ``config.yaml`` (the whole training config). What Ray Train
stores and hands back on resume; the network alone loads with ``pose3d.model.io.load_model``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
import yaml

from pose3d import storage
from pose3d.model.io import MODEL_FILE, load_tensor_file, read_model_file, save_model
from pose3d.model.net import ModelConfig

STATE_FILE, CONFIG_FILE, METRICS_FILE = "state.pt", "config.yaml", "metrics.yaml"
#: Where each training stream stood (side -> [pass, offset]): small, so the driver of a resumed run
#: reads it without loading the state (``newest_stream_positions``).
STREAMS_FILE = "streams.json"

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "load_training_state",
    "save_checkpoint",
]


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    model_config: ModelConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    stage: int = 0,
    step_in_stage: int = 0,
    global_step: int = 0,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    source_rows: dict[str, list[int]] | None = None,
    world_size: int | None = None,
    stream_positions: dict[str, list[int]] | None = None,
) -> Path:
    """Write a checkpoint folder (local). ``stage`` is 1-based; ``step_in_stage`` counts finished steps;
    ``source_rows``: rows drawn per source of each side of the mix over the run, carried on by a resume;
    ``world_size``: the training workers that wrote it (an elastic run may resume on another count);
    ``stream_positions``: side -> [pass, offset] of the next row rank 0's stream hands out."""
    directory = Path(directory)
    save_model(directory, model, model_config)
    torch.save(
        {
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "stage": stage,
            "step_in_stage": step_in_stage,
            "global_step": global_step,
            "source_rows": source_rows or {},
            "world_size": world_size,
            "stream_positions": stream_positions or {},
        },
        directory / STATE_FILE,
    )
    if stream_positions is not None:
        storage.write_text(str(directory / STREAMS_FILE), json.dumps(stream_positions))
    if config is not None:
        storage.write_text(str(directory / CONFIG_FILE), yaml.safe_dump(config, sort_keys=False))
    if metrics is not None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        storage.write_text(str(directory / METRICS_FILE), yaml.safe_dump(clean, sort_keys=True))
    return directory


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Optimizer state, stage, step, weights ("state_dict") and config of a checkpoint (a local folder
    or a URI), for exact resume."""
    with storage.local_copy(path) as local:
        blob = read_model_file(local, str(path))
        state = load_tensor_file(local / STATE_FILE)
        state["state_dict"] = blob["state_dict"]
        cfg_path = local / CONFIG_FILE
        state["config"] = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else None
    return state


# --- checkpoints a run wrote that Ray Train never registered -------------------------------------------

#: Ray Train 2.60's record of the checkpoints it registered, in the run folder
#: (docs/design.md, Ray 2.60 facts).
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
CHECKPOINT_PREFIX = "checkpoint_"


@dataclass(frozen=True)
class FolderCheckpoint:
    """A checkpoint folder in a run folder, found by listing it."""

    path: str
    global_step: int


@dataclass
class Reconciled:
    """What ``reconcile`` decided: the checkpoint to resume from when it is newer than Ray Train's
    latest (``adopted``), and the folders it removed (incomplete, or superseded and never registered)."""

    adopted: FolderCheckpoint | None = None
    removed: list[str] = field(default_factory=list)


def checkpoint_folders(run_dir: str) -> list[str]:
    """Names of the run's checkpoint folders, oldest first (Ray names them by time)."""
    fs, root = storage.resolve(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and i.base_name.startswith(CHECKPOINT_PREFIX)
    )


def registered_checkpoints(run_dir: str) -> set[str] | None:
    """Names of the checkpoint folders Ray Train registered for the run (from its snapshot file), or
    None when the snapshot is missing or unreadable (then nothing may be removed)."""
    try:
        snapshot = json.loads(storage.read_text(storage.join(run_dir, RAY_SNAPSHOT_FILE)))
        results = [*snapshot["checkpoint_results"], *snapshot.get("pending_training_results", [])]
        if snapshot.get("latest_checkpoint_result"):
            results.append(snapshot["latest_checkpoint_result"])
        return {r["checkpoint_dir_name"] for r in results}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_complete(path: str) -> int | None:
    """The global step of the checkpoint folder at ``path`` when every file is there and loads (a
    folder cut short by a crash mid-upload does not), else None."""
    try:
        state = load_training_state(path)
        return int(state["global_step"]) if state.get("config") is not None else None
    except Exception:  # noqa: BLE001 - any failure to load means "not complete"
        return None


def newest_complete(run_dir: str, names: list[str]) -> FolderCheckpoint | None:
    """The newest of the checkpoint folders ``names`` (oldest first, as ``checkpoint_folders`` lists
    them) that is complete; folders are loaded newest first, and only until one is."""
    for name in reversed(names):
        path = storage.join(run_dir, name)
        step = is_complete(path)
        if step is not None:
            return FolderCheckpoint(path, step)
    return None


def reconcile(run_dir: str, ray_latest_step: int | None, remove: bool) -> Reconciled:
    """Checkpoint folders of the run Ray Train did not register: the newest complete one is adopted
    when its step is past ``ray_latest_step`` (Ray registers a checkpoint only once its report reaches
    the controller, so a run stopped in between loses it otherwise); with ``remove``, the others are
    deleted (incomplete, or older than the resume point: never to be used, and Ray never prunes
    them). Registered folders are left to Ray. Nothing is removed when Ray's snapshot is unreadable.
    """
    registered = registered_checkpoints(run_dir)
    unregistered = [f for f in checkpoint_folders(run_dir) if registered is None or f not in registered]
    newest = newest_complete(run_dir, unregistered)
    floor = ray_latest_step if ray_latest_step is not None else -1
    out = Reconciled(adopted=newest if newest is not None and newest.global_step > floor else None)
    if remove and registered is not None:
        for name in unregistered:
            path = storage.join(run_dir, name)
            if out.adopted is None or path != out.adopted.path:
                fs, inner = storage.resolve(path)
                fs.delete_dir(inner)
                out.removed.append(name)
    return out


def newest_stream_positions(run_dir: str) -> dict[str, list[int]]:
    """side -> [pass, offset] saved with the run's newest checkpoint folder that has them ({} for
    none). Read before the workers choose their checkpoint: should they resume from an older one
    (the newest cut off mid-upload), they see the pass differ and say so (``train.loop``)."""
    for name in reversed(checkpoint_folders(run_dir)):
        try:
            positions = json.loads(storage.read_text(storage.join(run_dir, name, STREAMS_FILE)))
        except (OSError, ValueError):
            continue
        if isinstance(positions, dict):
            return {str(k): [int(x) for x in v] for k, v in positions.items()}
    return {}


def resume_point(run_dir: str) -> FolderCheckpoint | None:
    """The newest complete checkpoint of the run, registered by Ray Train or not: where the same
    command resumes (``reconcile``); None when there is none."""
    return newest_complete(run_dir, checkpoint_folders(run_dir))
