"""``pose3d eval``: score a checkpoint on shard sets (Ray Data batch inference) and write the paper's
tables (JSON, Markdown) and figures. (``pose3d predict`` is ``pose3d.cli.predict``.)

The command line only: arguments, errors as ``UserError``, progress and printing. The work is
``pose3d.eval``'s (``predict``, ``batch``, ``score``, ``report``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pose3d import storage
from pose3d.cli.common import load_checkpoint_model, torch_device
from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import add_ray_arguments

EVAL_EPILOG = """\
Datasets are recognized by the shards' `dataset` column: h36m and synthetic_lab get the per-action
MPJPE table, mpii and synthetic_wild PCKh per joint, 3dhp and synthetic_wild_test 3DPCK/AUC per
group; every dataset gets bone symmetry and a grid of sample predictions.
For real MPI-INF-3DHP pass --shift-pelvis-hips 0.2 (the paper's pelvis correction; the value is
recalled, not verified). Writes OUT/report.json, OUT/report.md and OUT/*.png."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a checkpoint on shard sets: tables (JSON, Markdown) and plots",
        description="Batch inference with Ray Data (a pool of model actors, GPU when the cluster has "
        "one), then MPJPE / PA-MPJPE per action, PCKh per joint, 3DPCK / AUC per group, bone symmetry.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (local or s3://...)")
    p.add_argument("--data", required=True, nargs="+", help="shard set folder(s) or URI(s)")
    p.add_argument("--out", default="eval_out", help="report folder (default eval_out)")
    p.add_argument("--flip-test", action="store_true", help="average each image's outputs with its mirror's")
    p.add_argument("--max-rows", type=int, help="score this many rows, spread evenly over the set")
    p.add_argument("--batch-size", type=int, default=32, help="rows per inference batch (default 32)")
    p.add_argument("--actors", type=int, help="model actors (default: one per GPU, or 1 on CPU)")
    p.add_argument(
        "--cpus-per-actor",
        type=float,
        default=2.0,
        help="CPUs (torch threads) of a CPU model actor (default 2)",
    )
    p.add_argument(
        "--shift-pelvis-hips",
        type=float,
        metavar="F",
        help="3DHP rows: move the predicted pelvis and hips toward the neck by F of "
        "pelvis->neck before 3DPCK/AUC (default off; 0.2 for real 3DHP)",
    )
    p.add_argument("--grid", type=int, default=8, help="sample images per dataset in the grid (0: none)")
    p.add_argument("--in-memory", action="store_true", help="run without Ray, in this process (small sets)")
    p.add_argument("--device", help="with --in-memory: torch device (default cuda when present, else cpu)")
    add_ray_arguments(p)
    p.set_defaults(handler=run_eval)


class Progress:
    """Prints ``label: done/total rows, R rows/s`` to stderr at most every ``every_s`` seconds. The rate
    counts from the first rows on, so start-up (Ray workers, model loading) does not skew the ETA."""

    def __init__(self, label: str, every_s: float = 5.0) -> None:
        self.label, self.every_s = label, every_s
        self.last = time.perf_counter()
        self.first: tuple[float, int] | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, done)
        finished = bool(total) and done >= total
        if now - self.last < self.every_s and not finished:
            return
        self.last = now
        of = f"/{total}" if total else ""
        line = f"{self.label}: {done}{of} rows"
        t0, n0 = self.first
        if now > t0 and done > n0:
            rate = (done - n0) / (now - t0)
            line += f", {rate:.1f} rows/s"
            if total and not finished:
                line += f", about {(total - done) / rate:.0f} s left"
        print(line, file=sys.stderr, flush=True)


# --- pose3d eval -----------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.shift_pelvis_hips is not None and not 0.0 <= args.shift_pelvis_hips < 1.0:
        raise UserError(f"--shift-pelvis-hips must be in [0, 1), got {args.shift_pelvis_hips}")
    for flag in ("max_rows", "batch_size", "actors"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    from pose3d.data.shards import NoShardsError, check_shards, list_shards
    from pose3d.eval.predict import predict_in_memory
    from pose3d.eval.report import write_report
    from pose3d.eval.score import score_prediction_set
    from pose3d.schema import ShardSchemaError

    device = torch_device(args.device) if args.in_memory else "cpu"
    model = load_checkpoint_model(args.checkpoint, device)  # checked here, before any Ray start
    cfg = model.config
    data = [storage.absolute(d) for d in args.data]  # Ray workers do not run in this folder
    checkpoint = storage.absolute(args.checkpoint)
    try:  # the shards too, before any Ray start
        check_shards(list_shards(data))
    except (NoShardsError, ShardSchemaError) as err:
        raise UserError(str(err)) from None
    if not args.in_memory:
        from pose3d.infra.ray_session import init_ray

        init_ray(args.address, args.num_cpus)  # before the clock: start-up is not inference
    progress = Progress("eval")
    start = time.perf_counter()
    try:
        if args.in_memory:
            preds = predict_in_memory(
                model,
                data,
                max_rows=args.max_rows,
                flip_test=args.flip_test,
                device=device,
                batch_size=args.batch_size,
                progress=progress,
            )
            engine = f"in memory on {device}"
        else:
            from pose3d.eval.batch import predict_dataset

            preds = predict_dataset(
                checkpoint,
                data,
                input_size=cfg.input_size,
                output_size=cfg.output_size,
                flip_test=args.flip_test,
                batch_size=args.batch_size,
                max_rows=args.max_rows,
                actors=args.actors,
                cpus_per_actor=args.cpus_per_actor,
                progress=progress,
            )
            engine = "Ray Data"
    except (NoShardsError, ShardSchemaError) as err:
        raise UserError(str(err)) from None
    seconds = time.perf_counter() - start
    n = len(preds["row_id"])
    print(f"eval: {n} rows in {seconds:.1f} s ({n / seconds:.1f} rows/s, {engine})", file=sys.stderr)

    rs = score_prediction_set(preds, cfg.input_size, cfg.output_size, args.shift_pelvis_hips)
    meta = {
        "checkpoint": args.checkpoint,
        "data": list(args.data),
        "model": {
            "input_size": cfg.input_size,
            "output_size": cfg.output_size,
            "stacks": cfg.num_stacks,
            "features": cfg.num_features,
        },
        "options": {
            "flip_test": args.flip_test,
            "shift_pelvis_hips": args.shift_pelvis_hips,
            "max_rows": args.max_rows,
        },
        "inference": {"engine": engine, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds, 2)},
    }
    out = Path(args.out)
    report, md = write_report(out, preds, rs, meta, data, cfg.input_size, cfg.output_size, args.grid)
    _print_summary(report)
    figures = report["figures"]
    print(f"report: {md} (and report.json, {sum(len(f) for f in figures.values())} figures) in {out}")
    return 0


def _print_summary(report: dict[str, Any]) -> None:
    for name, sec in report["datasets"].items():
        s = sec["summary"]
        parts = [f"{sec['rows']} rows"]
        for key, label, scale, unit in (
            ("mpjpe", "MPJPE", 1, "mm"),
            ("pa_mpjpe", "PA-MPJPE", 1, "mm"),
            ("pck3d", "3DPCK", 100, "%"),
            ("auc3d", "AUC", 100, "%"),
        ):
            if s.get(key) is not None:
                parts.append(f"{label} {scale * s[key]:.1f} {unit}")
        if "pckh" in sec and sec["pckh"]["columns"]["Total"] is not None:
            parts.append(f"PCKh@0.5 {100 * sec['pckh']['columns']['Total']:.1f} %")
            if sec["pckh"]["excluded_no_head_size"]:
                parts.append(
                    f"{sec['pckh']['excluded_no_head_size']} rows without a head size left out of PCKh"
                )
        elif s.get("pck2d") is not None:
            parts.append(f"2D PCK {100 * s['pck2d']:.1f} %")
        print(f"{name}: " + ", ".join(parts))
