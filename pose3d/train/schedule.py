"""The stage schedule: every fact about the training stages, as pure functions of the config.

The paper trains in three stages: stage 1 the 2D module (the stacked hourglass) alone, stage 2
the depth regressor too, stage 3 the same with the geometric term on (docs/conventions.md, Stages).
Stages are numbered 1..NUM_STAGES as the paper numbers them; a stage's length is its ``steps``
(optimizer steps at the global batch), and the global step counts steps over all stages. Nothing
else reads a stage's length or decides what a stage trains.

May import: ``pose3d.losses``; ``pose3d.train.config`` for type hints only (the config imports this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pose3d import losses

if TYPE_CHECKING:
    from pose3d.train.config import Config, StageSection

#: How many stages a training has.
NUM_STAGES = 3
#: The stage numbers, in training order.
STAGES: tuple[int, ...] = tuple(range(1, NUM_STAGES + 1))
#: The stages that train every module (the depth regressor too); the others train the 2D module.
DEPTH_STAGES: tuple[int, ...] = (2, 3)
#: The stage whose λ_geo turns the geometric term on in the paper's recipe (0 in the others).
GEOMETRIC_STAGE = 3


@dataclass(frozen=True)
class StagePosition:
    """Where a global step falls: ``stage`` 1-based, ``step`` within the stage (0-based)."""

    stage: int
    step: int


def _check(stage: int) -> int:
    if stage not in STAGES:
        raise ValueError(f"stage {stage}: stages are numbered 1..{NUM_STAGES}")
    return stage


def section(cfg: Config, stage: int) -> StageSection:
    """The config section of stage ``stage`` (1-based)."""
    return cfg.train.stages[_check(stage) - 1]


def stage_key(stage: int, name: str) -> str:
    """The dotted config key of a stage's field, e.g. ``train.stages.1.steps`` (overrides)."""
    return f"train.stages.{_check(stage)}.{name}"


def steps_key(stage: int) -> str:
    """The dotted config key of a stage's length."""
    return stage_key(stage, "steps")


def stage_steps(cfg: Config, stage: int) -> int:
    """Stage ``stage``'s length in optimizer steps."""
    return section(cfg, stage).steps


def set_stage_steps(cfg: Config, stage: int, steps: int) -> None:
    """Set stage ``stage``'s length (steps), in place."""
    section(cfg, stage).steps = steps


def stage_lengths(cfg: Config) -> list[int]:
    """Every stage's length in steps, stage 1 first."""
    return [stage_steps(cfg, s) for s in STAGES]


def describe_lengths(cfg: Config) -> str:
    """The stage lengths for a log line, e.g. ``"3 + 3 + 3"``."""
    return " + ".join(str(n) for n in stage_lengths(cfg))


def stage_starts(cfg: Config) -> list[int]:
    """Global step at which each stage starts; one extra entry: the total."""
    starts = [0]
    for n in stage_lengths(cfg):
        starts.append(starts[-1] + n)
    return starts


def total_steps(cfg: Config) -> int:
    """Steps of all stages together (the global step at the end of training)."""
    return stage_starts(cfg)[-1]


def position(cfg: Config, global_step: int) -> StagePosition | None:
    """The stage and step that global step ``global_step`` runs (None when training is over)."""
    starts = stage_starts(cfg)
    for stage in STAGES:
        if starts[stage - 1] <= global_step < starts[stage]:
            return StagePosition(stage, global_step - starts[stage - 1])
    return None


def learning_rate(cfg: Config, stage: int, step_in_stage: int) -> float:
    """The stage's lr, multiplied by its ``lr_drop`` from its ``lr_drop_step`` on."""
    st = section(cfg, stage)
    if st.lr_drop_step is not None and step_in_stage >= st.lr_drop_step:
        return st.lr * st.lr_drop
    return st.lr


def uses_depth(stage: int) -> bool:
    """Whether stage ``stage`` trains every module (the depth regressor too); False: the 2D module
    alone (the network skips its depth head)."""
    return _check(stage) in DEPTH_STAGES


def geo_weight(cfg: Config, stage: int) -> float:
    """λ_geo of stage ``stage`` (0: no geometric term)."""
    return section(cfg, stage).geo


def uses_geometry(cfg: Config, stage: int) -> bool:
    """Whether stage ``stage`` trains with the geometric term (its λ_geo > 0)."""
    return geo_weight(cfg, stage) > 0


def loss_weights(cfg: Config, stage: int) -> losses.LossWeights:
    """The loss weights stage ``stage`` trains with: its λ_reg and λ_geo, and the rows the
    geometric term applies to (``loss.geo_rows``)."""
    st = section(cfg, stage)
    return losses.LossWeights(st.reg, st.geo, cfg.loss.geo_rows)
