"""``pose3d train``: run the three-stage training on Ray Train."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import TYPE_CHECKING

from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import add_ray_arguments

if TYPE_CHECKING:  # the config module imports torch: not at --help time
    from pose3d.train.config import Config

EPILOG = """\
overrides are KEY=VALUE pairs applied over the config, e.g.
  pose3d train --config paper train.stages.3.steps=40000 scaling.num_workers=8 data.ratio_2d=0.5
Stages are numbered 1..3. Re-running with the same --name and --storage resumes the run.
Packaged configs: paper (the paper's settings, GPUs), demo (small, CPUs)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the network (three stages) on Ray Train",
        description="Train the stacked-hourglass + depth-regression network on Ray Train with "
        "half/half 3D + 2D batches, through the paper's three stages.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="demo", help="a YAML path or a packaged config name (default: demo)")
    p.add_argument("--name", help="run name (run.name)")
    p.add_argument("--storage", help="storage path for checkpoints: local, NFS, s3:// (run.storage_path)")
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N|MIN:MAX",
        help="training workers (scaling.num_workers): a count, or MIN:MAX for elastic training (the run "
        "continues on fewer workers when nodes are lost and grows back when they return)",
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per worker, NCCL, bf16 (scaling.use_gpu)")
    add_ray_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(handler=run)


def _workers(text: str) -> str:
    """``--workers 4`` or ``--workers 2:8`` -> the ``scaling.num_workers`` value (checked with the config)."""
    low, sep, high = text.partition(":")
    if not (low.isdigit() and (not sep or high.isdigit())):
        raise argparse.ArgumentTypeError(f"expected a count (4) or MIN:MAX (2:8), got {text!r}")
    return f"[{low}, {high}]" if sep else low


def resolve_config(args: argparse.Namespace):
    from pose3d.train.config import ConfigError, load_config

    overrides = list(args.overrides)
    for flag, key in (
        ("name", "run.name"),
        ("storage", "run.storage_path"),
        ("workers", "scaling.num_workers"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.gpu:
        overrides.append("scaling.use_gpu=true")
    try:
        return load_config(args.config, overrides)
    except ConfigError as err:
        raise UserError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cfg = resolve_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    from pose3d.infra.ray_session import Interrupted
    from pose3d.schema import ShardSchemaError
    from pose3d.train.config import ConfigError

    try:
        result = train(cfg, address=args.address, num_cpus=args.num_cpus)
    except (ShardSchemaError, FileNotFoundError, ConfigError) as err:
        raise UserError(str(err)) from None
    except Interrupted as stop:
        print(f"pose3d train: {_interrupted_note(cfg, stop.signal)}", file=sys.stderr, flush=True)
        return INTERRUPTED
    return 0 if result is not None else 1


#: Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report Ctrl-C).
INTERRUPTED = 130


def _interrupted_note(cfg: Config, signal_name: str) -> str:
    """The step the run got to and where the same command picks it up again. The step is the
    later of the last progress line this process received and the newest checkpoint in storage:
    the worker may have written a checkpoint whose progress line was still on its way here when
    Ray shut down."""
    from pose3d import storage
    from pose3d.train.checkpoint import resume_point

    found = resume_point(storage.join(cfg.run.storage_path, cfg.run.name))
    steps = [s for s in (LAST_STEP.step, found.global_step if found else None) if s is not None]
    stopped = f"interrupted{f' after step {max(steps)}' if steps else ''} ({signal_name})"
    if found is None:
        return f"{stopped}; no checkpoint was written; the same command starts the run from step 0"
    return f"{stopped}; the same command resumes from step {found.global_step} ({found.path})"


class _LastStep:
    """The last global step the run's progress lines showed: Ray forwards the workers' output to
    this process, and rank 0 prints ``(global N/TOTAL)`` with every report."""

    PATTERN = re.compile(r"\(global (\d+)/\d+\)")

    def __init__(self) -> None:
        self.step: int | None = None

    def __call__(self, data: dict) -> None:
        for line in data.get("lines", ()):
            match = self.PATTERN.search(str(line))
            if match:
                self.step = int(match.group(1))

    def follow(self) -> None:
        """Listen to the forwarded worker output (Ray's private dispatcher: nothing if it moved)."""
        try:
            from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:
            return
        dispatcher.add_handler("pose3d_last_step", self)


LAST_STEP = _LastStep()


def train(cfg, address: str | None = None, num_cpus: int | None = None):
    """Run a training; print where its checkpoints are. Returns the Result, or None on failure."""
    from ray.train.v2.api.exceptions import TrainingFailedError

    from pose3d.infra.ray_session import init_ray, run_interruptibly
    from pose3d.train.trainer import check_inputs, fit

    check_inputs(cfg)  # a missing shard set or checkpoint is refused before Ray's ~10-20 s start
    init_ray(address, num_cpus)
    LAST_STEP.follow()
    try:
        result = run_interruptibly(lambda: fit(cfg, inputs_checked=True))
    except TrainingFailedError as err:
        print(f"pose3d train: the run {cfg.run.name!r} failed: {err}", file=sys.stderr)
        return None
    best = result.get_best_checkpoint("checkpoint_score", "min") if result.checkpoint else None
    print(f"run folder:        {result.path}")
    print(f"latest checkpoint: {result.checkpoint.path if result.checkpoint else 'none'}")
    print(f"best checkpoint:   {best.path if best else 'none'}")
    if result.metrics:
        shown = {
            k: v for k, v in result.metrics.items() if k.startswith(("val_", "loss_total", "global_step"))
        }
        print("final metrics:     " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    return result
