"""ASHA whose rungs survive ``--resume``: a restored trial replays what it reported before (Tune's
result log, and the validated metrics saved with its Train checkpoints)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from tune.plan import DIVERGED_MPJPE, METRIC, RUNS_DIR
from tune.trial import train_run_name

log = logging.getLogger("pose3d.tune")


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
            log.info("ASHA: trial %s stops: a result replayed on resume was below its rung", trial.trial_id)
            return self.STOP
        bracket = self._trial_info.get(trial.trial_id)
        before = [(m, dict(r)) for m, r in bracket._rungs] if bracket is not None else []
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP and self._time_attr in result and self._metric in result:
            log.info("ASHA stops trial %s: %s", trial.trial_id, _why_stopped(bracket, before, trial.trial_id,
                     result[self._time_attr], result[self._metric], self._metric_op))  # fmt: skip
        return action


def _why_stopped(
    bracket: Any, rungs: list[tuple[int, dict[str, float]]], trial_id: str, at: int, value: float, sign: float
) -> str:
    """Why ASHA stopped a trial at time ``at`` with metric ``value``, from the rungs before that
    result (``rungs``: milestone -> trial id -> reward, reward = ``sign`` x metric)."""
    judged = [(m, r) for m, r in rungs if m <= at and trial_id not in r]
    if not judged or not judged[0][1]:
        return f"at step {at}, {METRIC} {value:.4g}"
    milestone, recorded = judged[0]  # rungs run from the highest milestone down
    cutoff = sign * float(bracket.cutoff(recorded))
    return (
        f"at step {at}, {METRIC} {value:.4g} is worse than the cutoff {cutoff:.4g} of the rung at step "
        f"{milestone}, set by {len(recorded)} trial(s) there before it"
    )


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
