"""One trial: its training config (stages 2-3 from the stage-1 checkpoint, its Train run under
the experiment's ``runs/``), the function Tune runs (``trial_main``), and the Train -> Tune bridge
that forwards only validated reports."""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from pose3d.train import schedule
from pose3d.train.config import (
    Config,
    apply_overrides,
)
from tune.plan import DIVERGED_MPJPE, METRIC, Plan
from tune.space import parse_space

log = logging.getLogger("pose3d.tune")

#: A trial's seed index (0 .. --seeds - 1) in its Tune config: the ablation's grid key, and the
#: key Tune's Repeater sets for a search (``ray.tune.search.repeater.TRIAL_INDEX``).
SEED_INDEX, REPEATER_INDEX = "seed_index", "__trial_index__"


def seed_index(values: dict[str, Any]) -> int:
    """Which of a configuration's seeds a trial runs (0 without --seeds)."""
    return int(values.get(SEED_INDEX, values.get(REPEATER_INDEX, 0)))


def knobs(values: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config without its seed index: what makes its configuration."""
    return {k: v for k, v in values.items() if k not in (SEED_INDEX, REPEATER_INDEX)}


def trial_overrides(values: dict[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config (its sampled values, or its variant) -> the config keys they set."""
    if setup.get("variants"):
        return dict(setup["variants"][values["variant"]])
    return parse_space(setup["space"], "trial search space").overrides(knobs(values))


def train_run_name(trial_id: str) -> str:
    """The Train run of a trial, under the experiment's ``runs/`` folder."""
    return f"trial-{trial_id}"


def trial_config(values: dict[str, Any], setup: dict[str, Any], trial_id: str) -> Config:
    """The training config of one trial: stages 2-3 from the stage-1 checkpoint, its run under
    the experiment's ``runs/`` folder. ``setup`` is ``trial_setup(plan)``."""
    overrides = trial_overrides(values, setup)
    index = seed_index(values)
    overrides.update({
        schedule.steps_key(1): 0,
        "train.seed": int(setup["base"]["train"]["seed"]) + index,
        "train.init_from": setup.get("stage1_checkpoints", {}).get(str(index), setup["init_checkpoint"]),
        "run.name": train_run_name(trial_id),
        "run.storage_path": setup["runs_root"],
    })  # fmt: skip
    return apply_overrides(setup["base"], overrides)


def trial_setup(plan: Plan) -> dict[str, Any]:
    """What every trial shares (bound to ``trial_main``, kept out of Tune's per-trial config)."""
    return {
        "base": plan.base,
        "space": plan.space,
        "variants": plan.variants,
        "init_checkpoint": plan.init_checkpoint,
        "stage1_checkpoints": {str(i): plan.stage1_checkpoint(i) for i in range(plan.seeds)},
        "runs_root": plan.runs_root,
    }


class ValidatedReportCallback(TuneReportCallback):
    """The Train -> Tune bridge, forwarding only the reports that carry validation MPJPE: Tune
    requires its metric in every result, and the loop validates every ``train.val_every`` steps
    but logs more often. NaN (a diverged trial) goes to Tune as DIVERGED_MPJPE."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics or METRIC not in metrics[0]:
            return
        if not math.isfinite(metrics[0][METRIC]):
            metrics = [{**metrics[0], METRIC: DIVERGED_MPJPE, "diverged": True}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


def trial_main(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """A Tune trial (function trainable; ``setup`` bound by ``tune.with_parameters``): build this
    trial's TorchTrainer and fit it. Re-running a trial (``--resume``) finds its Train run by name
    and resumes from its last checkpoint."""
    from ray import tune

    from pose3d.train.trainer import build_trainer

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(config, setup, trial_id)
    log.info("trial %s: %s, seed %d", trial_id, trial_overrides(config, setup), cfg.train.seed)
    build_trainer(cfg, callbacks=[ValidatedReportCallback()]).fit()


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: ``trial-<id>``, named as its Train run ``runs/trial-<id>``."""
    return train_run_name(trial.trial_id)
