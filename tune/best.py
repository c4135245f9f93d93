"""``pose3d best``: a search's trials ranked by their best checkpoint's validation MPJPE, with
their knobs, metrics and checkpoint paths; ``--export`` copies the top ones with their config
and metrics.

A trial's best checkpoint is the one its Train run scored best (``checkpoint_score`` is the
validation MPJPE in every stage that trains depth, ``pose3d.train.loop.checkpoint_score``); trials
rank by that checkpoint's MPJPE, so the rank is that of a model one can actually load.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from pose3d import storage
from pose3d.stats import Spread, spread
from pose3d.train import schedule
from tune.plan import METRIC, RUNS_DIR, SearchError, load_plan
from tune.trial import knobs, trial_config, trial_setup

#: Metrics shown and exported for each trial's best checkpoint.
SHOWN = ("val_mpjpe", "val_pa_mpjpe", "val_pck2d", "global_step")


@dataclass
class TrialSummary:
    trial_id: str
    status: str  # Tune's: TERMINATED (completed or stopped by ASHA), RUNNING, PENDING, ERROR
    params: dict[str, Any]  # the sampled knobs (or the ablation variant), without the seed index
    steps_done: int  # the last validated step Tune saw (all planned when the run's checkpoints reached them)
    steps_planned: int  # stages 2 + 3 of this trial's config
    run_path: str  # the trial's Train run
    best_checkpoint: str | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # the trial's whole training config
    seed: int = 0  # its train.seed

    @property
    def stopped_early(self) -> bool:
        """Stopped by ASHA: finished with fewer steps than it planned."""
        return self.status == "TERMINATED" and self.steps_done < self.steps_planned

    @property
    def score(self) -> float:
        value = self.best_metrics.get(METRIC)
        return float(value) if value is not None and math.isfinite(value) else math.inf

    def state(self) -> str:
        if self.stopped_early:
            return "stopped (ASHA)"
        return {"TERMINATED": "completed"}.get(self.status, self.status.lower())


def best_checkpoint(run_path: str) -> tuple[str | None, dict[str, float]]:
    """The checkpoint of a Train run with the lowest validation MPJPE, and its reported metrics."""
    from ray.train import Result

    if not storage.exists(run_path):
        return None, {}
    quiet = logging.getLogger("ray.train")  # reading a run logs a resume notice meant for training
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        result = Result.from_path(run_path)
    except RuntimeError:  # the run never reported a checkpoint
        return None, {}
    finally:
        quiet.setLevel(level)
    scored = [(m[METRIC], c, m) for c, m in result.best_checkpoints if math.isfinite(m.get(METRIC, math.nan))]
    if not scored:
        return None, {}
    _, checkpoint, metrics = min(scored, key=lambda t: t[0])
    return checkpoint.path, {k: float(metrics[k]) for k in SHOWN if k in metrics}


def _folder_steps(run_path: str) -> list[int]:
    """The global step of every checkpoint folder of a run whose metrics file reads."""
    from pose3d.train.checkpoint import METRICS_FILE, checkpoint_folders

    steps = []
    for name in checkpoint_folders(run_path):
        try:
            metrics = yaml.safe_load(storage.read_text(storage.join(run_path, name, METRICS_FILE)))
            steps.append(int(metrics["global_step"]))
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            continue
    return steps


def collect(experiment: str) -> list[TrialSummary]:
    """Every trial of a search at ``experiment`` (STORAGE/NAME), best first."""
    from ray.tune import ExperimentAnalysis

    experiment = storage.absolute(experiment)
    try:
        setup = trial_setup(load_plan(experiment))
    except SearchError as err:
        raise FileNotFoundError(str(err)) from None
    try:
        analysis = ExperimentAnalysis(experiment)
    except (ValueError, FileNotFoundError) as err:
        raise FileNotFoundError(f"{experiment}: no Tune experiment here yet ({err})") from None
    out = []
    for trial in analysis.trials:
        config = dict(trial.config)
        cfg = trial_config(config, setup, trial.trial_id)
        run_path = storage.join(experiment, RUNS_DIR, cfg.run.name)  # where the experiment is now
        last = trial.last_result or {}
        ckpt, metrics = best_checkpoint(run_path)
        planned = schedule.total_steps(cfg)
        steps_done = int(last.get("global_step", 0))
        if str(trial.status) == "TERMINATED" and steps_done < planned and planned in _folder_steps(run_path):
            # Interrupted after writing its last checkpoint but before Tune saw that result, the
            # trial resumed from it (train.loop adopts a folder Ray never registered) with nothing
            # left to train: it completed, though Tune's last result is older.
            steps_done = planned
        out.append(
            TrialSummary(
                trial_id=trial.trial_id,
                status=str(trial.status),
                params=knobs(config),
                steps_done=steps_done,
                steps_planned=planned,
                run_path=run_path,
                best_checkpoint=ckpt,
                best_metrics=metrics,
                config=cfg.to_dict(),
                seed=cfg.train.seed,
            )
        )
    out.sort(key=lambda t: (t.score, t.trial_id))
    return out


@dataclass
class ConfigSummary:
    """One configuration of a search (its knobs, or an ablation variant) over the seeds it ran."""

    params: dict[str, Any]
    trials: list[TrialSummary]  # one per seed, by seed

    @property
    def scores(self) -> dict[int, float]:
        """seed -> the best checkpoint's validation MPJPE of that seed's run (inf: none)."""
        return {t.seed: t.score for t in self.trials}

    @property
    def val_mpjpe(self) -> Spread:
        """Validation MPJPE over the seeds that have a score (runs that diverged or left no
        checkpoint are out of n)."""
        return spread([s for s in self.scores.values() if math.isfinite(s)])

    @property
    def rank_key(self) -> tuple[float, int]:
        mean = self.val_mpjpe.mean
        return (mean if math.isfinite(mean) else math.inf, -self.val_mpjpe.n)

    @property
    def best_trial(self) -> TrialSummary:
        return min(self.trials, key=lambda t: (t.score, t.seed))


def group_by_config(trials: list[TrialSummary]) -> list[ConfigSummary]:
    """The trials grouped by configuration (same knobs, any seed), best mean validation MPJPE first:
    a configuration is never ranked by one seed's luck when it ran more."""
    groups: dict[str, ConfigSummary] = {}
    for t in trials:
        key = json.dumps(t.params, sort_keys=True, default=str)
        groups.setdefault(key, ConfigSummary(t.params, [])).trials.append(t)
    for g in groups.values():
        g.trials.sort(key=lambda t: t.seed)
    return sorted(groups.values(), key=lambda g: g.rank_key)


def format_config_table(groups: list[ConfigSummary]) -> str:
    """A Markdown table of configurations over their seeds, in the order given."""
    lines = [
        "| rank | knobs | seeds (stopped early) | val MPJPE (mm), mean ± 95 % CI | std (mm) | per seed "
        "| best run |",
        "|---:|---|---:|---:|---:|---|---|",
    ]
    for rank, g in enumerate(groups, start=1):
        s = g.val_mpjpe
        stopped = sum(t.stopped_early for t in g.trials)
        per_seed = ", ".join(f"{t.seed}: {t.score:.1f}" if math.isfinite(t.score) else f"{t.seed}: -"
                             for t in g.trials)  # fmt: skip
        cells = [
            str(rank),
            ", ".join(f"{k}={_fmt(v)}" for k, v in g.params.items()) or "-",
            f"{len(g.trials)} ({stopped})",
            s.format() if s.n else "-",
            f"{s.std:.1f}" if s.n > 1 else "-",
            per_seed,
            f"trial {g.best_trial.trial_id}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def config_dict(g: ConfigSummary, rank: int) -> dict[str, Any]:
    s = g.val_mpjpe
    return {
        "rank": rank,
        "params": g.params,
        "seeds": [t.seed for t in g.trials],
        "val_mpjpe": {"mean": s.mean, "std": s.std, "ci95_half_width": s.half_width, "n": s.n},
        "val_mpjpe_per_seed": {str(k): v for k, v in g.scores.items()},
        "stopped_early": sum(t.stopped_early for t in g.trials),
        "trials": [t.trial_id for t in g.trials],
        "best_trial": g.best_trial.trial_id,
        "best_checkpoint": g.best_trial.best_checkpoint,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(trials: list[TrialSummary]) -> str:
    """A Markdown table of the trials, in the order given."""
    lines = [
        "| rank | trial | state | steps | val MPJPE (mm) | val PA-MPJPE (mm) | val PCK2D | knobs "
        "| best checkpoint |",
        "|---:|---|---|---:|---:|---:|---:|---|---|",
    ]
    for rank, t in enumerate(trials, start=1):
        m = t.best_metrics
        cells = [
            str(rank),
            t.trial_id,
            t.state(),
            f"{t.steps_done}/{t.steps_planned}",
            *(f"{m[k]:.1f}" if k in m else "-" for k in ("val_mpjpe", "val_pa_mpjpe")),
            f"{m['val_pck2d']:.3f}" if "val_pck2d" in m else "-",
            ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()),
            t.best_checkpoint or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_dict(t: TrialSummary, rank: int) -> dict[str, Any]:
    d = asdict(t)
    d.pop("config")
    d.update(rank=rank, state=t.state(), stopped_early=t.stopped_early)
    return d


def export(trials: list[TrialSummary], dest: str) -> list[str]:
    """Copy each trial's best checkpoint to DEST/rank<k>-trial-<id>/checkpoint, with its whole
    training config (config.yaml), knobs and metrics (metrics.json); a summary beside them."""
    folders = []
    for rank, t in enumerate(trials, start=1):
        if t.best_checkpoint is None:
            continue
        folder = storage.join(dest, f"rank{rank}-trial-{t.trial_id}")
        storage.copy_dir(t.best_checkpoint, storage.join(folder, "checkpoint"))
        storage.write_text(storage.join(folder, "config.yaml"), yaml.safe_dump(t.config, sort_keys=False))
        storage.write_text(
            storage.join(folder, "metrics.json"), json.dumps(summary_dict(t, rank), indent=2) + "\n"
        )
        folders.append(folder)
    storage.write_text(
        storage.join(dest, "best.json"),
        json.dumps([summary_dict(t, r) for r, t in enumerate(trials, start=1)], indent=2) + "\n",
    )
    storage.write_text(storage.join(dest, "best.md"), format_table(trials) + "\n")
    return folders
