"""The three-stage schedule (SPEC "Training"), as pure functions of the global step."""

from __future__ import annotations

from dataclasses import dataclass

from pose3d.train.config import Config, StageSection


@dataclass(frozen=True)
class StagePosition:
    """Where a global step falls: ``stage`` 1-based, ``step`` within the stage (0-based)."""

    stage: int
    step: int


def stage_starts(stages: list[StageSection]) -> list[int]:
    """Global step at which each stage starts; one extra entry: the total."""
    starts = [0]
    for st in stages:
        starts.append(starts[-1] + st.steps)
    return starts


def position(stages: list[StageSection], global_step: int) -> StagePosition | None:
    """The stage and step that global step ``global_step`` runs (None when training is over)."""
    starts = stage_starts(stages)
    for i, st in enumerate(stages):
        if starts[i] <= global_step < starts[i] + st.steps:
            return StagePosition(i + 1, global_step - starts[i])
    return None


def learning_rate(stage: StageSection, step_in_stage: int) -> float:
    """The stage's lr, dropped by ``lr_drop`` from ``lr_drop_step`` on."""
    if stage.lr_drop_step is not None and step_in_stage >= stage.lr_drop_step:
        return stage.lr * stage.lr_drop
    return stage.lr


def uses_depth(stage: int) -> bool:
    """Stage 1 trains the 2D module alone; stages 2 and 3 train the regressor too."""
    return stage >= 2


def total_steps(cfg: Config) -> int:
    return stage_starts(cfg.train.stages)[-1]
