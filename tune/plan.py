"""What a search is: the plan saved as ``pose3d_search.json`` in the experiment folder before
anything runs (so ``--resume`` needs nothing else), its metric and folders, and the checks made
before it starts."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pose3d import storage
from pose3d.train.config import (
    Config,
    ConfigError,
    absolute_paths,
)
from pose3d.train.trainer import check_shard_paths
from tune.space import SearchSpace, parse_space

log = logging.getLogger("pose3d.tune")

METRIC, MODE = "val_mpjpe", "min"
TIME_ATTR = "global_step"  # trials train 0 stage-1 steps, so this is the step within stages 2-3
MANIFEST = "pose3d_search.json"
RUNS_DIR, STAGE1_RUN = "runs", "stage1"
#: val_mpjpe given to Tune in place of NaN (a diverged trial), so ASHA and TPE rank it last.
DIVERGED_MPJPE = 1.0e6


class SearchError(Exception):
    """A search that cannot start or continue, said in one line."""


@dataclass
class Plan:
    """What a search (or the ablation preset) is; saved as ``pose3d_search.json``."""

    kind: str  # "search" or "ablation"
    name: str
    storage: str  # absolute path or URI
    base: dict[str, Any]  # Config.to_dict() every trial starts from (trial overrides applied)
    samples: int
    space: dict[str, Any] | None = None  # the search-space YAML (kind "search")
    variants: dict[str, dict[str, Any]] | None = None  # variant -> config overrides (kind "ablation")
    init_checkpoint: str = ""  # the stage-1 checkpoint (of seed index 0); empty until stage 1 is trained
    init_given: bool = False  # --init gave it (no stage-1 run of our own)
    seeds: int = 1  # runs of every configuration, seeds train.seed + 0 .. seeds - 1 (--seeds)
    # seed index (as a string, JSON keys) -> its stage-1 checkpoint, for indexes above 0
    seed_checkpoints: dict[str, str] = field(default_factory=dict)
    eval_sets: dict[str, str] = field(default_factory=dict)  # ablation: lab_test, wild_2d, wild_test
    eval_rows: int | None = None
    command: str = ""  # how it was started, for the record

    @property
    def experiment(self) -> str:
        return storage.join(self.storage, self.name)

    @property
    def runs_root(self) -> str:
        return storage.join(self.experiment, RUNS_DIR)

    @property
    def base_seed(self) -> int:
        return int(self.base["train"]["seed"])

    def seed_of(self, index: int) -> int:
        """``train.seed`` of a configuration's run number ``index`` (0 .. seeds - 1)."""
        return self.base_seed + index

    @property
    def all_seeds(self) -> list[int]:
        """``train.seed`` of every run of a configuration, in order."""
        return [self.seed_of(i) for i in range(self.seeds)]

    def stage1_checkpoint(self, index: int) -> str:
        """The stage-1 checkpoint the runs of seed ``index`` start from ('' until trained): one per
        seed, so a configuration's spread over seeds includes stage 1's; one for all with --init."""
        if index == 0 or self.init_given:
            return self.init_checkpoint
        return self.seed_checkpoints.get(str(index), "")

    def search_space(self) -> SearchSpace | None:
        return parse_space(self.space, f"{self.name}: search space") if self.space else None


def manifest_path(experiment: str) -> str:
    return storage.join(experiment, MANIFEST)


def save_plan(plan: Plan) -> None:
    storage.write_text(manifest_path(plan.experiment), json.dumps(asdict(plan), indent=2) + "\n")


def load_plan(experiment: str) -> Plan:
    path = manifest_path(experiment)
    if not storage.exists(path):
        raise SearchError(f"{experiment}: not a pose3d search (no {MANIFEST})")
    return Plan(**json.loads(storage.read_text(path)))


def check_init_checkpoint(path: str) -> None:
    from pose3d.model.io import CheckpointReadError
    from pose3d.train.checkpoint import load_training_state

    try:
        state = load_training_state(path)
    except (FileNotFoundError, CheckpointReadError) as err:
        raise SearchError(f"--init: {err}") from None
    if state.get("stage") != 1:
        stage = state.get("stage")
        log.warning("--init %s is a stage-%s checkpoint; trials start from its weights", path, stage)


def new_plan(
    kind: str,
    cfg: Config,
    *,
    name: str,
    storage_path: str,
    samples: int,
    space: SearchSpace | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    init: str | None = None,
    eval_sets: dict[str, str] | None = None,
    eval_rows: int | None = None,
    command: str = "",
    seeds: int = 1,
) -> Plan:
    """A plan from a loaded config (the caller checked the space against it)."""
    from tune.space import trial_base

    if seeds < 1:
        raise SearchError(f"--seeds must be >= 1, got {seeds}")
    if not cfg.data.val_3d:
        raise SearchError("data.val_3d is empty: the search needs validation MPJPE (its metric)")
    absolute_paths(cfg)
    try:
        check_shard_paths(cfg)
    except ConfigError as err:
        raise SearchError(str(err)) from None
    base = trial_base(cfg, space) if space else cfg.to_dict()
    if init:
        init = storage.absolute(init)
        check_init_checkpoint(init)
    return Plan(
        kind=kind,
        name=name,
        storage=storage.absolute(storage_path),
        base=base,
        samples=samples,
        space=space.raw if space else None,
        variants=variants,
        init_checkpoint=init or "",
        init_given=bool(init),
        eval_sets={k: storage.absolute(v) for k, v in (eval_sets or {}).items() if v},
        eval_rows=eval_rows,
        command=command,
        seeds=seeds,
    )


def experiment_of(storage_path: str, name: str) -> str:
    return storage.join(storage.absolute(storage_path), name)
