"""Validation inside training: a fixed held-out set in memory (rank 0), scored with the evaluation
scorer (``pose3d.eval.score``) each time training asks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pose3d.eval.predict import EVAL_COLUMNS, add_predictions, drop_undecoded, load_rows, prepare_rows
from pose3d.eval.score import score_prediction_set


class Validator:
    """A fixed held-out set in memory: read and preprocessed once (``max_rows`` rows spread evenly
    over the set, 0 for all), scored on demand. ``input_size``/``output_size``: the network's, px."""

    def __init__(self, path: str, max_rows: int, input_size: int, output_size: int) -> None:
        rows = load_rows(path, EVAL_COLUMNS, max_rows or None)
        n = len(rows["image_jpeg"])
        if n == 0:
            raise ValueError(f"{path}: no validation rows")
        self.input_size, self.output_size = input_size, output_size
        self.prepared = drop_undecoded(prepare_rows(rows, input_size, output_size))

    def __call__(
        self, model: torch.nn.Module, device: torch.device, autocast: Any = None
    ) -> dict[str, float]:
        """val_mpjpe (mm, the paper's protocol), val_pa_mpjpe (mm) and val_pck2d (fraction) of
        ``model`` on the set (NaN when no row has the labels)."""
        preds = add_predictions(model, self.prepared, device, autocast=autocast)
        s = score_prediction_set(preds, self.input_size, self.output_size).scores
        return {"val_mpjpe": float(np.nanmean(s.mpjpe)), "val_pa_mpjpe": float(np.nanmean(s.pa_mpjpe)),
                "val_pck2d": float(np.nanmean(s.pck2d))}  # fmt: skip
