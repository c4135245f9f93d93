"""``pose3d tune`` (a search, or the paper's ablation preset), ``pose3d best`` and
``pose3d ablation-report``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from typing import Any

from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import add_ray_arguments

TUNE_EPILOG = """\
Every trial trains stages 2 and 3 from one stage-1 checkpoint (one per seed with --seeds): the
search trains it first (stage 1 of the config), or takes --init CKPT. Trials are full Ray Train
runs; Optuna's TPE proposes, ASHA stops trials early on validation MPJPE (data.val_3d). Packaged
search spaces: paper, demo.

  pose3d tune --config paper --search paper --samples 64 --storage s3://bucket/runs --name s1
  pose3d tune --config demo --search demo --samples 8 data.val_rows=64
  pose3d tune --resume --storage s3://bucket/runs --name s1        # after an interruption
  pose3d tune --preset ablation --config demo --wild-test shards/synthetic_wild_test/test
  pose3d tune --preset ablation --seeds 3 ...   # every variant 3 times: mean ± 95 % CI, paired diffs

The ablation preset trains the paper's four variants (3D/wo geo, 3D/w geo, 3D+2D/wo geo,
3D+2D/w geo), scores each one's best checkpoint on the lab test set (--lab-test, default
data.val_3d), the wild 2D set (--wild-2d, default data.val_2d) and the wild test set (--wild-test),
and writes ablation.md and ablation.json into the experiment folder STORAGE/NAME (with --seeds N:
every figure as mean ± 95 % t-interval over the seeds, each variant's paired difference against
3D+2D/w geo, the bone-symmetry errors, and ablation.png). With several 2D
sources, --vary data.set_2d.2.weight=0,1 runs the variants that draw 2D rows without and with the
second source (a search varies a weight through its space: keys: [data.set_2d.2.weight])."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="search stages 2-3 hyperparameters with Ray Tune (Optuna + ASHA), or run the ablation",
        description="Search the paper's knobs (lambda_reg, lambda_geo, stage lengths, lr) with Ray Tune: "
        "each trial a full Ray Train run from one stage-1 checkpoint.",
        epilog=TUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", default="demo", help="training config: a YAML path or packaged name (default demo)"
    )
    p.add_argument("--search", help="search-space YAML: a path or packaged name (paper, demo)")
    p.add_argument("--samples", type=int, help="configurations to try (default 8)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="runs of every configuration (seeds train.seed + 0, 1, ...; each with its own stage 1); "
        "pose3d best and the ablation report give mean, std and a 95%% t-interval (default 1)",
    )
    p.add_argument("--preset", choices=["ablation"], help="run the paper's ablation instead of a search")
    p.add_argument("--name", help="experiment name (default: search, or ablation)")
    p.add_argument(
        "--storage", help="where the experiment folder goes: local or s3:// (default run.storage_path)"
    )
    p.add_argument("--init", metavar="CKPT", help="a stage-1 checkpoint to start every trial from")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment STORAGE/NAME")
    p.add_argument(
        "--concurrency", type=int, help="trials at once (default: from the cluster's GPUs or CPUs)"
    )
    p.add_argument("--lab-test", help="ablation: lab test shards (default data.val_3d)")
    p.add_argument("--wild-2d", help="ablation: wild 2D shards for 2D PCK (default data.val_2d)")
    p.add_argument("--wild-test", help="ablation: wild test shards (3DPCK, AUC, MPJPE)")
    p.add_argument("--eval-rows", type=int, help="ablation: score at most this many rows per set")
    p.add_argument(
        "--vary",
        action="append",
        metavar="KEY=V1,V2",
        help="ablation: run each variant that draws 2D rows once per value (repeatable: every "
        "combination), e.g. --vary data.set_2d.2.weight=0,1 (without and with a second 2D source)",
    )
    add_ray_arguments(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    p.set_defaults(handler=run_tune)

    b = subparsers.add_parser(
        "best",
        help="the best trials of a search: knobs, metrics, best checkpoints; --export copies them",
        description="Rank the trials of a search (STORAGE/NAME) by their best checkpoint's validation "
        "MPJPE and list their knobs, metrics and checkpoint paths. A search run with --seeds ranks its "
        "configurations by their mean over the seeds (with the 95%% t-interval and the seeds each has), "
        "and --top and --export take the best run of each.",
    )
    b.add_argument("experiment", metavar="EXPERIMENT", help="the search folder STORAGE/NAME (local or s3://)")
    b.add_argument("--top", type=int, default=5, help="trials (or configurations) to list (default 5)")
    b.add_argument(
        "--export", metavar="DIR", help="copy the top trials' best checkpoints, configs and metrics"
    )
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.set_defaults(handler=run_best)

    r = subparsers.add_parser(
        "ablation-report",
        help="one ablation report over several ablation experiments (more seeds added later)",
        description="Score every run of one or more `pose3d tune --preset ablation` experiments again "
        "(each run's best checkpoint on the evaluation sets the experiment recorded: about as long as "
        "the report at the end of a tune) and write one report over all their seeds (ablation.md, "
        "ablation.json, ablation.png): for example seeds 0-2 from one experiment and 3-4 from a second "
        "started with --seeds 2 train.seed=3. The experiments must share variants, evaluation sets, "
        "stage 1 and training config apart from train.seed (and run.name / run.storage_path), and no "
        "seed may be in two of them.",
        epilog="example: pose3d ablation-report runs/ablation runs/ablation-more --out runs/ablation-5seeds",
    )
    r.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="ablation folders STORAGE/NAME")
    r.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the report (required with several experiments; with one, the default is the "
        "experiment itself, whose report is rewritten)",
    )
    r.set_defaults(handler=run_ablation_report)


# --- pose3d tune -----------------------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> Any:
    from pose3d.train import schedule
    from pose3d.train.config import ConfigError, apply_overrides, load_config
    from tune import ablation
    from tune import plan as plans
    from tune.space import SpaceError, check_space, load_space

    try:
        cfg = load_config(args.config, list(args.overrides))
    except ConfigError as err:
        raise UserError(str(err)) from None
    storage_path = args.storage or cfg.run.storage_path
    command = "pose3d " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        if args.preset == "ablation":
            if args.search or args.samples:
                raise UserError("--preset ablation runs its four variants: drop --search and --samples")
            variants = ablation.variant_overrides(cfg, _vary(args.vary))
            eval_sets = {
                "lab_test": args.lab_test or cfg.data.val_3d,
                "wild_2d": args.wild_2d or cfg.data.val_2d,
                "wild_test": args.wild_test or "",
            }
            plan = plans.new_plan(
                "ablation", cfg, name=args.name or "ablation", storage_path=storage_path, samples=1,
                variants=variants, init=args.init, eval_sets=eval_sets, eval_rows=args.eval_rows,
                command=command, seeds=args.seeds,
            )  # fmt: skip
            for name, over in variants.items():
                try:
                    apply_overrides(plan.base, {**over, schedule.steps_key(1): 0})
                except ConfigError as err:
                    raise UserError(f"ablation variant {name}: {err}") from None
            return plan
        if args.vary:
            raise UserError("--vary belongs to --preset ablation; a search varies keys through its space")
        if not args.search:
            raise UserError("give --search SPACE (a YAML path, or paper / demo), or --preset ablation")
        space = load_space(args.search)
        check_space(space, cfg)
        samples = args.samples or 8
        if samples < 1:
            raise UserError(f"--samples must be >= 1, got {samples}")
        return plans.new_plan(
            "search", cfg, name=args.name or "search", storage_path=storage_path, samples=samples,
            space=space, init=args.init, command=command, seeds=args.seeds,
        )  # fmt: skip
    except (SpaceError, ValueError, plans.SearchError) as err:
        raise UserError(str(err)) from None


def _vary(items: list[str] | None) -> dict[str, list[Any]]:
    """``--vary KEY=V1,V2`` (repeatable) -> {KEY: [V1, V2]}, values read as YAML; the keys a search
    may not set are refused here too (a source's weight is allowed)."""
    import yaml

    from tune.space import SpaceError, check_key

    out: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not raw:
            raise UserError(f"--vary {item!r}: expected KEY=V1,V2, e.g. data.set_2d.2.weight=0,1")
        try:
            check_key(key.strip(), "--vary")
        except SpaceError as err:
            raise UserError(str(err)) from None
        out[key.strip()] = [yaml.safe_load(v) for v in raw.split(",")]
    return out


def run_tune(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from tune import driver
    from tune import plan as plans

    if args.resume:
        from pose3d.train.config import ConfigError, load_config

        try:
            storage_path = args.storage or load_config(args.config, list(args.overrides)).run.storage_path
        except ConfigError as err:
            raise UserError(str(err)) from None
        try:
            plan = plans.load_plan(plans.experiment_of(storage_path, args.name or _default_name(args)))
        except plans.SearchError as err:
            raise UserError(str(err)) from None
    else:
        plan = _plan(args)
    from pose3d.infra.ray_session import init_ray

    init_ray(args.address, args.num_cpus)
    try:
        outcome = driver.run_plan(plan, resume=args.resume, concurrency=args.concurrency)
    except plans.SearchError as err:
        raise UserError(str(err)) from None
    if outcome.interrupted:
        print(
            f"pose3d tune: {plan.experiment} stopped with {outcome.finished + outcome.errored} of "
            f"{outcome.expected} trials finished. Continue it with:\n"
            f"  pose3d tune --resume --storage {shlex.quote(plan.storage)} --name {shlex.quote(plan.name)}",
            file=sys.stderr,
        )
        return 130
    return _after_search(plan, outcome)


def _default_name(args: argparse.Namespace) -> str:
    return "ablation" if args.preset == "ablation" else "search"


def _after_search(plan: Any, outcome: Any) -> int:
    from tune import best

    trials = best.collect(plan.experiment)
    print(f"experiment: {plan.experiment}  ({outcome.finished} trial(s) finished, {outcome.errored} errored)")
    print(f"stage-1 checkpoint: {plan.init_checkpoint}")
    print(f"tensorboard --logdir {plan.experiment}")
    if plan.seeds > 1:
        print(best.format_config_table(best.group_by_config(trials)[:5]))
    else:
        print(best.format_table(trials[:5]))
    if plan.kind == "ablation":
        _ablation_report([(plan, trials)], plan.experiment)
    return 0 if outcome.errored == 0 else 1


def _ablation_report(parts: list[tuple[Any, list[Any]]], out: str) -> None:
    """Score every run of ``parts`` ((plan, its trials) per ablation experiment, pooled by seed) and
    write the report into the folder ``out``."""
    from pose3d.train import schedule
    from pose3d.train.config import config_from_dict
    from tune import ablation
    from tune.space import TRIAL_STAGES

    plan = parts[0][0]  # pooled plans differ only in their seeds (ablation.pooling_conflicts)
    checkpoints, notes = ablation.pooled_checkpoints(parts)
    notes += [f"{label}: not given" for label, path in plan.eval_sets.items() if not path]
    sets = {k: v for k, v in plan.eval_sets.items() if v}
    base = config_from_dict(plan.base)
    lab_train = [src.path for _, src in base.data.sources("set_3d")]  # the mean pose: all 3D sources
    report = ablation.evaluate_variants(
        checkpoints, sets, max_rows=plan.eval_rows, baseline_from=lab_train or None
    )
    stages = " + ".join(str(s) for s in TRIAL_STAGES)
    steps = " + ".join(str(schedule.stage_steps(base, s)) for s in TRIAL_STAGES)
    for p, _ in parts:
        stage1 = (
            f"the stage-1 checkpoint {p.init_checkpoint}"
            if p.seeds == 1 or p.init_given
            else f"each seed's own stage-1 checkpoint (seeds {', '.join(map(str, p.all_seeds))})"
        )
        source = f", in {p.experiment}" if len(parts) > 1 else ""
        notes.append(
            f"stages {stages}: {steps} steps at batch {base.data.batch_size} from {stage1}{source}; "
            "each run is scored at its best checkpoint by validation MPJPE"
        )
    notes += [f"{k}: {v}" for k, v in sets.items()]
    md_path, json_path = ablation.write_report(out, report, notes)
    print(ablation.to_markdown(report["rows"], notes, report["differences"]))
    print(f"written: {md_path}, {json_path}")


def run_ablation_report(args: argparse.Namespace) -> int:
    import dataclasses
    import posixpath

    from pose3d import storage
    from tune import ablation, best
    from tune import plan as plans

    if len(args.experiments) > 1 and not args.out:
        raise UserError("give --out DIR for a report over several experiments (each keeps its own report)")
    loaded = []
    for given in args.experiments:
        path = storage.absolute(given).rstrip("/")
        try:
            plan = plans.load_plan(path)
        except plans.SearchError as err:
            raise UserError(str(err)) from None
        # Where the experiment is now, which may not be where it ran (copied, or moved off s3).
        loaded.append(
            dataclasses.replace(plan, storage=posixpath.dirname(path), name=posixpath.basename(path))
        )
    problems = ablation.pooling_conflicts(loaded)
    if problems:
        raise UserError("these experiments cannot share one report:\n  " + "\n  ".join(problems))
    parts = []
    for plan in loaded:
        try:
            parts.append((plan, best.collect(plan.experiment)))
        except FileNotFoundError as err:
            raise UserError(str(err)) from None
    _ablation_report(parts, storage.absolute(args.out) if args.out else loaded[0].experiment)
    return 0


# --- pose3d best -----------------------------------------------------------------------------------


def run_best(args: argparse.Namespace) -> int:
    from tune import best

    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    try:
        trials = best.collect(args.experiment)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    groups = best.group_by_config(trials)
    if any(len({t.seed for t in g.trials}) > 1 for g in groups):  # --seeds: configurations by their mean
        ranked = groups[: args.top]
        top = [g.best_trial for g in ranked]
        if args.json:
            print(json.dumps([best.config_dict(g, r) for r, g in enumerate(ranked, start=1)], indent=2))
        else:
            print(best.format_config_table(ranked))
            print("\nThe best run of each:\n")
            print(best.format_table(top))
    else:
        top = trials[: args.top]
        if args.json:
            print(json.dumps([best.summary_dict(t, r) for r, t in enumerate(top, start=1)], indent=2))
        else:
            print(best.format_table(top))
    if args.export:
        folders = best.export(top, args.export)
        print(f"exported {len(folders)} checkpoint(s) to {args.export}", file=sys.stderr)
    return 0
