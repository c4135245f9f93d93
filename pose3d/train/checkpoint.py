"""Checkpoints: a folder with ``model.pt`` (weights + the model config), ``state.pt`` (optimizer,
stage, step) and ``config.yaml`` (the whole training config). It loads without Ray, for
evaluation and inference; it is also what Ray Train stores and hands back on resume.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml

from pose3d.model.net import ModelConfig, PoseNet

MODEL_FILE, STATE_FILE, CONFIG_FILE, METRICS_FILE = "model.pt", "state.pt", "config.yaml", "metrics.yaml"


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
    """Write a checkpoint folder. ``stage`` is 1-based; ``step_in_stage`` counts finished steps."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model_config": asdict(model_config), "state_dict": state_dict}, directory / MODEL_FILE)
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
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    if metrics is not None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        (directory / METRICS_FILE).write_text(yaml.safe_dump(clean, sort_keys=True))
    return directory


def _local_dir(path: str | Path) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """A local folder holding the checkpoint at ``path`` (a local path, or a URI such as s3://)."""
    text = str(path)
    if "://" not in text:
        local = Path(text)
        if not (local / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{local}: not a pose3d checkpoint (no {MODEL_FILE})")
        return local, None
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(text)
    tmp = tempfile.TemporaryDirectory(prefix="pose3d-ckpt-")
    pafs.copy_files(root, tmp.name, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    if not (Path(tmp.name) / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{text}: not a pose3d checkpoint (no {MODEL_FILE})")
    return Path(tmp.name), tmp


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> PoseNet:
    """The network of a checkpoint (local folder or URI), in eval mode. No Ray needed."""
    local, tmp = _local_dir(path)
    try:
        blob = torch.load(local / MODEL_FILE, map_location=map_location, weights_only=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    model = PoseNet(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Optimizer state, stage, step and config of a checkpoint (for exact resume)."""
    local, tmp = _local_dir(path)
    try:
        state = torch.load(local / STATE_FILE, map_location="cpu", weights_only=False)
        blob = torch.load(local / MODEL_FILE, map_location="cpu", weights_only=True)
        state["state_dict"] = blob["state_dict"]
        cfg_path = local / CONFIG_FILE
        state["config"] = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else None
    finally:
        if tmp is not None:
            tmp.cleanup()
    return state
