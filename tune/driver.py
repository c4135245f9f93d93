"""The Tune driver: every trial is a full Ray Train run of stages 2 and 3, from the weights of one
stage-1 checkpoint (stage 1 is trained once for the whole search, not once per trial;
docs/design.md, Search).

Ray 2.60 runs Train V2, where ``Tuner(TorchTrainer)`` no longer works: a trial is the function
``trial_main``, which builds the trial's ``TorchTrainer`` (``pose3d.train.trainer.build_trainer``),
adds the Train -> Tune report callback and fits it. The experiment folder STORAGE/NAME holds:

- ``pose3d_search.json``: the plan (base config, space or ablation variants, stage-1 checkpoint),
  written before anything runs, so ``--resume`` needs nothing else;
- ``runs/stage1``: the one stage-1 training every trial starts from (unless ``--init`` gave one);
- ``runs/trial-<id>``: each trial's Train run (checkpoints, TensorBoard events), so
  ``tensorboard --logdir STORAGE/NAME`` shows the whole search;
- ``trial-<id>/``, ``experiment_state-*.json``, ``tuner.pkl``: Tune's own records.

The search: Optuna's TPE (seeded) proposes, ASHA stops on validation MPJPE with the step within
stages 2-3 as its time axis (``global_step``: trials run 0 stage-1 steps). The plan is
``tune.plan``'s, a trial ``tune.trial``'s, the scheduler ``tune.asha``'s; this module trains stage 1
and runs the Tuner. Tune pickles the trainable and the scheduler by name (``tuner.pkl``): a search
started before ``tune.asha`` and ``tune.trial`` existed names them ``tune.driver.ResumableASHA`` and
``tune.driver.trial_main``, which resolve through the imports below.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pose3d import storage
from pose3d.train import schedule
from pose3d.train.config import (
    Config,
    ConfigError,
    apply_override,
    config_from_dict,
)
from tune.asha import ResumableASHA
from tune.plan import (
    METRIC,
    MODE,
    STAGE1_RUN,
    TIME_ATTR,
    Plan,
    SearchError,
    manifest_path,
    save_plan,
)
from tune.space import TRIAL_STAGES, SearchSpace, step_range
from tune.trial import SEED_INDEX, trial_dirname, trial_main, trial_setup

log = logging.getLogger("pose3d.tune")

# --- stage 1 -----------------------------------------------------------------------------------------


def stage1_run_name(index: int) -> str:
    """The stage-1 run of seed index ``index`` under the experiment's ``runs/``."""
    return STAGE1_RUN if index == 0 else f"{STAGE1_RUN}-seed{index}"


def stage1_config(plan: Plan, index: int = 0) -> Config:
    tree = json.loads(json.dumps(plan.base))
    for stage in TRIAL_STAGES:
        apply_override(tree, schedule.steps_key(stage), 0)
    tree["run"]["name"], tree["run"]["storage_path"] = stage1_run_name(index), plan.runs_root
    tree["train"]["seed"] = plan.seed_of(index)
    try:
        return config_from_dict(tree)
    except ConfigError as err:
        raise SearchError(
            f"stage 1 cannot run ({err}); set train.stages.1.steps or give a stage-1 checkpoint with --init"
        ) from None


def ensure_stage1(plan: Plan) -> str:
    """The stage-1 checkpoints the trials start from, one per seed (one for all with --init), each
    trained once (resumed if interrupted) and recorded in the plan; returns seed 0's."""
    from pose3d.train.trainer import fit

    for index in range(1 if plan.init_given else plan.seeds):
        if plan.stage1_checkpoint(index):
            continue
        cfg = stage1_config(plan, index)
        log.info(
            "stage 1, seed %d: training the checkpoint the trials of that seed start from (%d steps)",
            cfg.train.seed, schedule.total_steps(cfg),
        )  # fmt: skip
        result = fit(cfg)
        if result.checkpoint is None:
            raise SearchError(f"stage 1 left no checkpoint in {result.path}")
        if index == 0:
            plan.init_checkpoint = result.checkpoint.path
        else:
            plan.seed_checkpoints[str(index)] = result.checkpoint.path
        save_plan(plan)
        log.info("stage 1, seed %d done: %s", cfg.train.seed, result.checkpoint.path)
    return plan.init_checkpoint


# --- the Tuner ---------------------------------------------------------------------------------------


def trial_datasets(plan: Plan) -> int:
    """How many datasets a trial streams at most (the 3D set, and the 2D set when ratio_2d > 0)."""
    ratios = [plan.base["data"]["ratio_2d"]]
    for overrides in (plan.variants or {}).values():
        ratios.append(overrides.get("data.ratio_2d", ratios[0]))
    space = plan.search_space()
    for p in space.params if space else ():
        if "data.ratio_2d" in p.keys:
            ratios.extend(p.extremes())
    return 2 if max(ratios) > 0 else 1


def derive_concurrency(base: dict[str, Any], resources: dict[str, float], datasets: int) -> int:
    """Trials that fit the cluster at once. On GPUs: GPUs // GPUs per trial. CPUs always bound
    it too: each trial holds 1 CPU (the Tune function), its workers' CPUs, and its Ray Data
    actors and read tasks, which must find free CPUs: Ray Data does not reserve them, so a trial
    whose actors cannot start waits for them forever (docs/design.md, Ray 2.60 facts)."""
    s, d = base["scaling"], base["data"]
    # Per dataset: its preprocessing actors, and a read task for each epoch chained into a pass
    # (each read of a union holds a CPU while it lists and reads its files).
    per_dataset = d["preprocess_actors"] + d.get("epochs_per_pass", 1)
    workers = (
        max(s["num_workers"]) if isinstance(s["num_workers"], list) else s["num_workers"]
    )  # elastic: max
    cpus_per_trial = 1 + workers * s["cpus_per_worker"] + datasets * per_dataset
    bound = int(resources.get("CPU", 0) // cpus_per_trial)
    if s["use_gpu"]:
        gpus_per_trial = workers * s["gpus_per_worker"]
        bound = min(bound, int(resources.get("GPU", 0) // gpus_per_trial))
    return max(1, bound)


def asha_bounds(plan: Plan, space: SearchSpace) -> tuple[int, int]:
    """(grace period, max_t) of ASHA in steps within stages 2-3."""
    fewest, most = step_range(space, plan.base)
    grace = space.grace_steps or max(int(plan.base["train"]["val_every"]), fewest // 4)
    if grace >= most:
        log.warning("asha.grace_steps %d >= the longest trial (%d steps): no early stopping", grace, most)
    return grace, most


def build_tuner(plan: Plan, concurrency: int) -> Any:
    from ray import tune

    param_space: dict[str, Any] = {}
    tune_kwargs: dict[str, Any] = {}
    space = plan.search_space()
    if plan.variants:
        param_space["variant"] = tune.grid_search(list(plan.variants))
        if plan.seeds > 1:
            param_space[SEED_INDEX] = tune.grid_search(list(range(plan.seeds)))
        num_samples = 1  # the grid gives one trial per variant and seed
    else:
        from ray.tune.search import Repeater
        from ray.tune.search.optuna import OptunaSearch

        assert space is not None
        param_space.update(space.param_space())
        grace, max_t = asha_bounds(plan, space)
        start = list(space.start_points) or None
        searcher = OptunaSearch(seed=space.seed, points_to_evaluate=start)
        # Every proposal runs with each seed; TPE learns from their mean (Repeater's), ASHA still
        # judges each run alone.
        tune_kwargs["search_alg"] = Repeater(searcher, repeat=plan.seeds) if plan.seeds > 1 else searcher
        tune_kwargs["scheduler"] = ResumableASHA(
            time_attr=TIME_ATTR,
            max_t=max_t,
            grace_period=grace,
            reduction_factor=space.reduction_factor,
            stop_last_trials=False,  # a trial at its last step finishes on its own, gracefully
        )
        num_samples = plan.samples * plan.seeds
    return tune.Tuner(
        trainable(plan),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            num_samples=num_samples,
            max_concurrent_trials=concurrency,
            trial_dirname_creator=trial_dirname,
            **tune_kwargs,
        ),
        run_config=tune.RunConfig(name=plan.name, storage_path=plan.storage, verbose=1),
    )


def trainable(plan: Plan) -> Any:
    from ray import tune

    return tune.with_parameters(trial_main, setup=trial_setup(plan))


@dataclass
class Outcome:
    experiment: str
    trials: int  # trials Tune knows of
    finished: int  # terminated (completed or stopped by ASHA)
    errored: int
    expected: int

    @property
    def interrupted(self) -> bool:
        return self.finished + self.errored < self.expected


def expected_trials(plan: Plan) -> int:
    return (len(plan.variants) if plan.variants else plan.samples) * plan.seeds


def run_plan(plan: Plan, *, resume: bool, concurrency: int | None = None) -> Outcome:
    """Run (or, with ``resume``, continue) a planned search on the connected Ray."""
    import ray
    from ray import tune

    if not resume:
        if storage.exists(manifest_path(plan.experiment)):
            raise SearchError(
                f"{plan.experiment} already holds a search: continue it with --resume, or pick another --name"
            )
        save_plan(plan)
    plan.init_checkpoint = ensure_stage1(plan)
    if resume and tune.Tuner.can_restore(plan.experiment):
        log.info("resuming %s: finished trials are kept, unfinished ones resume", plan.experiment)
        tuner = tune.Tuner.restore(plan.experiment, trainable=trainable(plan), resume_unfinished=True)
    else:
        fits = derive_concurrency(plan.base, ray.cluster_resources(), trial_datasets(plan))
        k = concurrency or fits
        if k > fits:
            log.warning(
                "--concurrency %d: only %d trial(s) fit this cluster's CPUs with their Ray Data actors "
                "and read tasks; more may starve their pipelines and wait forever (and --resume keeps %d)",
                k, fits, k,
            )  # fmt: skip
        log.info("search %s: %d trial(s), %d at a time", plan.name, expected_trials(plan), k)
        tuner = build_tuner(plan, k)
    tuner.fit()
    return outcome_of(plan)


def outcome_of(plan: Plan) -> Outcome:
    """Trial counts as the experiment's saved state has them. (The Tuner's own result marks every
    trial TERMINATED once it cleans up after an interruption; the saved state keeps the truth.)"""
    from ray.tune import ExperimentAnalysis

    statuses = [str(t.status) for t in ExperimentAnalysis(plan.experiment).trials]
    return Outcome(
        plan.experiment,
        len(statuses),
        statuses.count("TERMINATED"),
        statuses.count("ERROR"),
        expected_trials(plan),
    )
