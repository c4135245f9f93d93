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
stages 2-3 as its time axis (``global_step``: trials run 0 stage-1 steps).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler

from pose3d import storage
from pose3d.train import schedule
from pose3d.train.config import (
    Config,
    ConfigError,
    absolute_paths,
    apply_override,
    apply_overrides,
    config_from_dict,
)
from tune.space import TRIAL_STAGES, SearchSpace, parse_space, step_range

log = logging.getLogger("pose3d.tune")

METRIC, MODE = "val_mpjpe", "min"
TIME_ATTR = "global_step"  # trials train 0 stage-1 steps, so this is the step within stages 2-3
MANIFEST = "pose3d_search.json"
RUNS_DIR, STAGE1_RUN = "runs", "stage1"
#: val_mpjpe given to Tune in place of NaN (a diverged trial), so ASHA and TPE rank it last.
DIVERGED_MPJPE = 1.0e6


class SearchError(Exception):
    """A search that cannot start or continue, said in one line."""


# --- the plan --------------------------------------------------------------------------------------


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
    init_checkpoint: str = ""  # the stage-1 checkpoint; empty until stage 1 is trained
    init_given: bool = False  # --init gave it (no stage-1 run of our own)
    eval_sets: dict[str, str] = field(default_factory=dict)  # ablation: lab_test, wild_2d, wild_test
    eval_rows: int | None = None
    command: str = ""  # how it was started, for the record

    @property
    def experiment(self) -> str:
        return storage.join(self.storage, self.name)

    @property
    def runs_root(self) -> str:
        return storage.join(self.experiment, RUNS_DIR)

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


# --- trials ------------------------------------------------------------------------------------------


def trial_overrides(values: dict[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    """A trial's Tune config (its sampled values, or its variant) -> the config keys they set."""
    if setup.get("variants"):
        return dict(setup["variants"][values["variant"]])
    return parse_space(setup["space"], "trial search space").overrides(values)


def train_run_name(trial_id: str) -> str:
    """The Train run of a trial, under the experiment's ``runs/`` folder."""
    return f"trial-{trial_id}"


def trial_config(values: dict[str, Any], setup: dict[str, Any], trial_id: str) -> Config:
    """The training config of one trial: stages 2-3 from the stage-1 checkpoint, its run under
    the experiment's ``runs/`` folder. ``setup`` is ``trial_setup(plan)``."""
    overrides = trial_overrides(values, setup)
    overrides.update({
        schedule.steps_key(1): 0,
        "train.init_from": setup["init_checkpoint"],
        "run.name": train_run_name(trial_id),
        "run.storage_path": setup["runs_root"],
    })  # fmt: skip
    return apply_overrides(setup["base"], overrides)


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
    log.info("trial %s: %s", trial_id, trial_overrides(config, setup))
    build_trainer(cfg, callbacks=[ValidatedReportCallback()]).fit()


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive ``--resume``. Tune restores a scheduler as it was created, so the
    rungs would start empty and a resumed search would judge its next trials against nothing;
    here every trial Tune adds (the finished ones too, on restore) replays the results it
    reported before into the rungs. A new trial has none, so a fresh search is plain ASHA.

    A replayed result that ASHA would have stopped (one Train checkpointed but Tune never saw,
    the search being interrupted in between) stops the trial at its first result after resume."""

    def _stops_pending(self) -> set[str]:
        # Made on first use, not in __init__: a scheduler pickled by an earlier pose3d lacks it.
        return self.__dict__.setdefault("_stop_when_resumed", set())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        bracket = self._trial_info[trial.trial_id]
        for result in _reported_results(trial, self._time_attr, self._metric):
            reward = self._metric_op * result[self._metric]
            if bracket.on_result(trial, result[self._time_attr], reward) == self.STOP:
                self._stops_pending().add(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.trial_id in self._stops_pending():
            self._stops_pending().discard(trial.trial_id)
            return self.STOP
        return super().on_trial_result(tune_controller, trial, result)


def _reported_results(trial: Any, time_attr: str, metric: str) -> list[dict[str, Any]]:
    """A trial's past results in time order (none for a new trial): its Tune result log, plus
    the validated metrics saved with its Train checkpoints at times the log lacks."""
    if trial.storage.trial_dir_name is None:  # a new trial: no folder yet, nothing reported
        return []

    def usable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in results if time_attr in r and metric in r]

    logged = usable(_result_log(trial))
    seen = {r[time_attr] for r in logged}
    extra = [r for r in usable(_checkpoint_metrics(trial)) if r[time_attr] not in seen]
    for r in extra:
        if not math.isfinite(r[metric]):
            r[metric] = DIVERGED_MPJPE  # as ValidatedReportCallback would have reported it
    return sorted(logged + extra, key=lambda r: r[time_attr])


def _result_log(trial: Any) -> list[dict[str, Any]]:
    """The results Tune logged for a trial (its ``result.json``)."""
    from ray.tune.result import EXPR_RESULT_FILE

    fs = trial.storage.storage_filesystem
    path = f"{trial.storage.trial_fs_path}/{EXPR_RESULT_FILE}"
    try:
        with fs.open_input_stream(path) as fh:
            text = fh.readall().decode("utf-8")
    except (FileNotFoundError, OSError):
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _checkpoint_metrics(trial: Any) -> list[dict[str, Any]]:
    """The metrics saved in each checkpoint folder of a trial's Train run (unreadable ones,
    e.g. an upload cut off, are skipped)."""
    import pyarrow.fs as pafs
    import yaml

    from pose3d.train.checkpoint import METRICS_FILE

    fs = trial.storage.storage_filesystem
    run = f"{trial.storage.experiment_fs_path}/{RUNS_DIR}/{train_run_name(trial.trial_id)}"
    try:
        folders = fs.get_file_info(pafs.FileSelector(run, allow_not_found=True))
    except OSError:
        return []
    out = []
    for info in folders:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{METRICS_FILE}") as fh:
                metrics = yaml.safe_load(fh.readall().decode("utf-8"))
        except (FileNotFoundError, OSError, yaml.YAMLError):
            continue
        if isinstance(metrics, dict):
            out.append(metrics)
    return out


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: ``trial-<id>``, named as its Train run ``runs/trial-<id>``."""
    return train_run_name(trial.trial_id)


# --- stage 1 -----------------------------------------------------------------------------------------


def stage1_config(plan: Plan) -> Config:
    tree = json.loads(json.dumps(plan.base))
    for stage in TRIAL_STAGES:
        apply_override(tree, schedule.steps_key(stage), 0)
    tree["run"]["name"], tree["run"]["storage_path"] = STAGE1_RUN, plan.runs_root
    try:
        return config_from_dict(tree)
    except ConfigError as err:
        raise SearchError(
            f"stage 1 cannot run ({err}); set train.stages.1.steps or give a stage-1 checkpoint with --init"
        ) from None


def check_init_checkpoint(path: str) -> None:
    from pose3d.model.io import UnsafeCheckpointError
    from pose3d.train.checkpoint import load_training_state

    try:
        state = load_training_state(path)
    except (FileNotFoundError, UnsafeCheckpointError) as err:
        raise SearchError(f"--init: {err}") from None
    if state.get("stage") != 1:
        stage = state.get("stage")
        log.warning("--init %s is a stage-%s checkpoint; trials start from its weights", path, stage)


def ensure_stage1(plan: Plan) -> str:
    """The stage-1 checkpoint every trial starts from: trained once (resumed if interrupted)."""
    if plan.init_checkpoint:
        return plan.init_checkpoint
    from pose3d.train.trainer import fit

    cfg = stage1_config(plan)
    log.info("stage 1: training the checkpoint every trial starts from (%d steps)", schedule.total_steps(cfg))
    result = fit(cfg)
    if result.checkpoint is None:
        raise SearchError(f"stage 1 left no checkpoint in {result.path}")
    plan.init_checkpoint = result.checkpoint.path
    save_plan(plan)
    log.info("stage 1 done: %s", plan.init_checkpoint)
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
    cpus_per_trial = 1 + s["num_workers"] * s["cpus_per_worker"] + datasets * per_dataset
    bound = int(resources.get("CPU", 0) // cpus_per_trial)
    if s["use_gpu"]:
        gpus_per_trial = s["num_workers"] * s["gpus_per_worker"]
        bound = min(bound, int(resources.get("GPU", 0) // gpus_per_trial))
    return max(1, bound)


def trial_setup(plan: Plan) -> dict[str, Any]:
    """What every trial shares (bound to ``trial_main``, kept out of Tune's per-trial config)."""
    return {
        "base": plan.base,
        "space": plan.space,
        "variants": plan.variants,
        "init_checkpoint": plan.init_checkpoint,
        "runs_root": plan.runs_root,
    }


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
        num_samples = 1  # the grid gives one trial per variant
    else:
        from ray.tune.search.optuna import OptunaSearch

        assert space is not None
        param_space.update(space.param_space())
        grace, max_t = asha_bounds(plan, space)
        start = list(space.start_points) or None
        tune_kwargs["search_alg"] = OptunaSearch(seed=space.seed, points_to_evaluate=start)
        tune_kwargs["scheduler"] = ResumableASHA(
            time_attr=TIME_ATTR,
            max_t=max_t,
            grace_period=grace,
            reduction_factor=space.reduction_factor,
            stop_last_trials=False,  # a trial at its last step finishes on its own, gracefully
        )
        num_samples = plan.samples
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
    return len(plan.variants) if plan.variants else plan.samples


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
) -> Plan:
    """A plan from a loaded config (the caller checked the space against it)."""
    from tune.space import trial_base

    if not cfg.data.val_3d:
        raise SearchError("data.val_3d is empty: the search needs validation MPJPE (its metric)")
    absolute_paths(cfg)
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
    )


def experiment_of(storage_path: str, name: str) -> str:
    return storage.join(storage.absolute(storage_path), name)
