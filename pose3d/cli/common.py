"""What several commands share: the torch device a user names and loading a checkpoint's network,
each failing as a ``UserError`` that names the argument."""

from __future__ import annotations

from typing import Any

from pose3d.cli.errors import UserError


def torch_device(name: str | None) -> str:
    """``--device``: the named torch device, checked (default cuda when this machine has one)."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this machine has no CUDA GPU")
    return name


def load_checkpoint_model(checkpoint: str, device: str) -> Any:
    """``--checkpoint``: the network of a checkpoint folder (local or URI) on ``device``."""
    from pose3d.model.io import load_model

    try:
        return load_model(checkpoint, map_location=device)
    except (FileNotFoundError, OSError, KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"--checkpoint {checkpoint}: cannot load a pose3d checkpoint ({err})") from None
