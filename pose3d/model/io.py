"""Reading and writing the network of a checkpoint folder: ``model.pt`` holds the model config and
the weights, so a network loads from it alone (no Ray, no training code). The training state beside
it (optimizer, stage, step) is ``pose3d.train.checkpoint``'s.

May import: ``pose3d.model``, ``pose3d.storage`` (local folders and URIs such as ``s3://``), torch.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pose3d import storage
from pose3d.model.net import ModelConfig, PoseNet

#: The network's file in a checkpoint folder: {"model_config": ModelConfig fields, "state_dict"}.
MODEL_FILE = "model.pt"


def save_model(directory: str | Path, model: torch.nn.Module, model_config: ModelConfig) -> Path:
    """Write ``model.pt`` (the config and the weights, on the CPU) into a local folder; return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path = directory / MODEL_FILE
    torch.save({"model_config": asdict(model_config), "state_dict": state_dict}, path)
    return path


class CheckpointReadError(ValueError):
    """A checkpoint file that cannot be read: truncated, or not a torch file (names the file)."""


class UnsafeCheckpointError(CheckpointReadError):
    """A checkpoint file holding more than tensors and plain values: refused, since unpickling it
    could run code."""


def load_tensor_file(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain Python values (``weights_only``): a file that
    names any other class or function is refused with ``UnsafeCheckpointError`` naming the file, and
    nothing in it runs."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch reports a refused global and a file that is no pickle at all the same way; only the
        # former names one ("unsupported GLOBAL module.name").
        if "GLOBAL" not in str(err):
            raise CheckpointReadError(
                f"{path}: not a readable checkpoint (truncated, or not a torch file)"
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it holds more than tensors and plain values, and loading it could "
            f"run code ({reason}); pose3d writes only tensors and plain values, so this file did not come "
            "from pose3d or was altered"
        ) from None


def read_model_file(local: Path, name: str | None = None, map_location: Any = "cpu") -> dict[str, Any]:
    """The ``model.pt`` blob of a local checkpoint folder: {"model_config": dict, "state_dict"}.
    Raises FileNotFoundError naming ``name`` (default the folder) when the folder has no model.pt."""
    path = Path(local) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{name or local}: not a pose3d checkpoint (no {MODEL_FILE})")
    return load_tensor_file(path, map_location)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> PoseNet:
    """The network of a checkpoint folder (a local path or a URI such as ``s3://...``), in eval mode."""
    with storage.local_copy(path) as local:
        blob = read_model_file(local, str(path), map_location)
    model = PoseNet(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval()
