"""``pose3d demo``: the embedded default, end to end on one machine.

Generates the synthetic lab (3D) / wild (2D) / wild-test (3D) data in the raw formats, converts it
to shards with the Ray Data prep job, trains the three stages on an in-process local Ray, scores the
best checkpoint on the wild test set and prints it next to the mean-pose baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pose3d import storage
from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import add_ray_arguments
from pose3d.schema import CROP_MARGIN

#: Shard folders of the synthetic sets, relative to the shard root (``pose3d prep synthetic``).
LAB_TRAIN, LAB_TEST = "synthetic_lab/train", "synthetic_lab/test"
WILD_TRAIN, WILD_TEST = "synthetic_wild/train", "synthetic_wild_test/test"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate synthetic data, train all three stages locally, evaluate (what `make demo` runs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", default="demo_out", help="folder for shards, runs and the report (default demo_out)"
    )
    p.add_argument(
        "--size", default="small", help="synthetic data size: tiny | small | medium (default small)"
    )
    p.add_argument("--config", default="demo", help="training config (default: the packaged demo)")
    add_ray_arguments(p, address=False)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from pose3d.train import schedule
    from pose3d.train.config import ConfigError, load_config

    out = Path(args.out).resolve()
    shards = out / "shards"
    try:
        cfg = load_config(
            args.config,
            [
                f"data.set_3d={shards / LAB_TRAIN}",
                f"data.set_2d={shards / WILD_TRAIN}",
                f"data.val_3d={shards / LAB_TEST}",
                f"run.storage_path={out / 'runs'}",
                *args.overrides,
            ],
        )
    except ConfigError as err:
        raise UserError(str(err)) from None

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    from data_prep.synthetic import prepare
    from pose3d.infra.ray_session import init_ray

    init_ray(num_cpus=args.num_cpus)
    print(f"== 1/3 synthetic data -> {shards}", flush=True)
    # Crops stored at the network's resolution (person box = input size): nothing decoded is wasted.
    prepare(str(shards), size=args.size, crop_size=round(cfg.model.input_size * CROP_MARGIN))
    timings["data"] = time.perf_counter() - t0

    print(
        f"== 2/3 training ({cfg.run.name}: {schedule.describe_lengths(cfg)} steps)",
        flush=True,
    )
    from pose3d.cli.train import train

    t1 = time.perf_counter()
    result = train(cfg)
    timings["train"] = time.perf_counter() - t1
    if result is None:
        return 1
    best = result.get_best_checkpoint("checkpoint_score", "min")
    if best is None:
        print("pose3d demo: the run reported no checkpoint", file=sys.stderr)
        return 1

    print(f"== 3/3 evaluating {best.path} on the synthetic wild test set", flush=True)
    from pose3d.eval.score import evaluate_checkpoint

    t2 = time.perf_counter()
    ev = evaluate_checkpoint(best.path, str(shards / WILD_TEST), baseline_from=str(shards / LAB_TRAIN))
    timings["eval"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    table = format_table(ev, timings, cfg.train.seed)
    print(table)
    report = {"checkpoint": best.path, "seed": cfg.train.seed, "evaluation": ev, "seconds": timings}
    storage.write_text(str(out / "demo_report.json"), json.dumps(report, indent=2, default=float))
    storage.write_text(str(out / "demo_report.md"), table + "\n")
    model, base = ev["model"]["mpjpe"], ev["baseline"]["mpjpe"]
    if not model < base:
        print(
            f"pose3d demo: the model ({model:.1f} mm) did not beat the mean pose ({base:.1f} mm)",
            file=sys.stderr,
        )
        return 1
    return 0


def format_table(ev: dict, timings: dict[str, float], seed: int) -> str:
    """The demo's result as a Markdown table: model vs the mean-pose baseline, with the training
    seed (the same seed repeats the run; another shows the spread: README, Results)."""
    m, b = ev["model"], ev["baseline"]
    rows = [
        ("MPJPE, paper protocol (mm)", m["mpjpe"], b["mpjpe"], "{:.1f}"),
        ("PA-MPJPE (mm)", m["pa_mpjpe"], b["pa_mpjpe"], "{:.1f}"),
        ("3DPCK @150 mm (%)", 100 * m["pck3d"], 100 * b["pck3d"], "{:.1f}"),
        ("AUC 0-150 mm (%)", 100 * m["auc3d"], 100 * b["auc3d"], "{:.1f}"),
    ]
    lines = [
        f"Synthetic wild test set: {ev['rows']} people; training seed {seed} (train.seed=N for another)",
        "",
        "| metric | trained model | mean-pose baseline |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {fmt.format(a)} | {fmt.format(c)} |" for name, a, c, fmt in rows]
    lines.append(f"| 2D PCK (0.5 head) (%) | {100 * m['pck2d']:.1f} | - |")
    for group, g in ev.get("groups", {}).items():
        lines.append(f"| MPJPE {group} (mm) | {g['mpjpe']:.1f} | - |")
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())]
    return "\n".join(lines)
