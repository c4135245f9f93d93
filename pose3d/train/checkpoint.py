"""Checkpoints: a folder with ``model.pt`` (weights + the model config, ``pose3d.model.io``),
``state.pt`` (optimizer, stage, step) and ``config.yaml`` (the whole training config). What Ray Train
stores and hands back on resume; the network alone loads with ``pose3d.model.io.load_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from pose3d import storage
from pose3d.model.io import MODEL_FILE, load_tensor_file, read_model_file, save_model
from pose3d.model.net import ModelConfig

STATE_FILE, CONFIG_FILE, METRICS_FILE = "state.pt", "config.yaml", "metrics.yaml"

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
) -> Path:
    """Write a checkpoint folder (local). ``stage`` is 1-based; ``step_in_stage`` counts finished steps."""
    directory = Path(directory)
    save_model(directory, model, model_config)
    torch.save(
        {
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "stage": stage,
            "step_in_stage": step_in_stage,
            "global_step": global_step,
        },
        directory / STATE_FILE,
    )
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
