"""``pose3d eval``: score a checkpoint on shard sets (Ray Data batch inference) and write the paper's
tables (JSON, Markdown) and figures; ``pose3d predict``: one image -> 2D overlay + 3D skeleton."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import add_ray_arguments

EVAL_EPILOG = """\
Datasets are recognized by the shards' `dataset` column: h36m and synthetic_lab get the per-action
MPJPE table, mpii and synthetic_wild PCKh per joint, 3dhp and synthetic_wild_test 3DPCK/AUC per
group; every dataset gets bone symmetry and a grid of sample predictions.
For real MPI-INF-3DHP pass --shift-pelvis-hips 0.2 (the paper's pelvis correction; the value is
recalled, not verified). Writes OUT/report.json, OUT/report.md and OUT/*.png."""

#: Output extensions ``pose3d predict`` can write.
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


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

    q = subparsers.add_parser(
        "predict",
        help="predict one image's 2D and 3D pose and draw them",
        description="Crop the person (--box, else the whole image), run the network, and write the "
        "image with its 2D skeleton beside the 3D skeleton.",
    )
    q.add_argument("image", help="an image file (JPEG, PNG...)")
    q.add_argument("--checkpoint", required=True, help="checkpoint folder (local or s3://...)")
    q.add_argument(
        "--out", default="pred.png", help="figure to write (.png, .jpg, .pdf, .svg; default pred.png)"
    )
    q.add_argument(
        "--box",
        nargs=4,
        type=float,
        metavar=("X1", "Y1", "X2", "Y2"),
        help="the person's box in image px (default: the whole image)",
    )
    q.add_argument(
        "--margin",
        type=float,
        default=1.1,
        help="the network sees a square of this many times the box's longer side "
        "(default 1.1, about the training crops' framing for a tight person box)",
    )
    q.add_argument("--flip-test", action="store_true", help="average with the mirrored image's outputs")
    q.add_argument("--json", help="also write the joints (image px, mm) to this JSON file")
    q.add_argument("--device", help="torch device (default cuda when present, else cpu)")
    q.set_defaults(handler=run_predict)


# --- shared ------------------------------------------------------------------------------------


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _load_model(checkpoint: str, device: str):
    from pose3d.train.checkpoint import load_model

    try:
        return load_model(checkpoint, map_location=device)
    except (FileNotFoundError, OSError, KeyError, RuntimeError) as err:
        raise UserError(f"--checkpoint {checkpoint}: cannot load a pose3d checkpoint ({err})") from None


def _absolute(path: str) -> str:
    """Local paths made absolute (Ray workers may run elsewhere); URIs unchanged."""
    return path if "://" in path else str(Path(path).resolve())


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_eval(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.shift_pelvis_hips is not None and not 0.0 <= args.shift_pelvis_hips < 1.0:
        raise UserError(f"--shift-pelvis-hips must be in [0, 1), got {args.shift_pelvis_hips}")
    for flag in ("max_rows", "batch_size", "actors"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    from pose3d.data.shards import NoShardsError, check_shards, list_shards
    from pose3d.eval.report import build_report, write_json, write_markdown
    from pose3d.eval.score import predict_in_memory, score_prediction_set
    from pose3d.schema import ShardSchemaError

    device = _device(args.device) if args.in_memory else "cpu"
    model = _load_model(args.checkpoint, device)  # checked here, before any Ray start
    cfg = model.config
    data = [_absolute(d) for d in args.data]
    checkpoint = _absolute(args.checkpoint)
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
    report = build_report(preds, rs, meta)
    out = Path(args.out)
    figures = write_figures(report, preds, rs, data, out, cfg.input_size, cfg.output_size, args.grid)
    report["figures"] = figures
    write_json(report, out / "report.json")
    md = write_markdown(report, out / "report.md", figures)
    _print_summary(report)
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


def write_figures(
    report: dict[str, Any],
    preds: dict[str, np.ndarray],
    rs: Any,
    data: list[str],
    out: Path,
    input_size: int,
    output_size: int,
    grid: int,
) -> dict[str, dict[str, str]]:
    """Each dataset's bar chart(s) and sample grid as PNGs under ``out``. Returns dataset ->
    {caption: file name relative to ``out``}."""
    from pose3d.viz import draw3d

    figures: dict[str, dict[str, str]] = {}
    for name, sec in report["datasets"].items():
        figs: dict[str, str] = {}
        tag = _safe(name)
        if "actions" in sec:
            t = sec["actions"]
            path = draw3d.bar_chart(
                out / f"actions_{tag}.png",
                t["actions"],
                {
                    "MPJPE (paper)": [t["means"]["mpjpe"][a] for a in t["actions"]],
                    "PA-MPJPE": [t["means"]["pa_mpjpe"][a] for a in t["actions"]],
                },
                reference={"MPJPE (paper)": t["average"]["mpjpe"], "PA-MPJPE": t["average"]["pa_mpjpe"]},
                ylabel="mm",
                title=f"{name}: error per action",
            )
            figs["Per-action error"] = path.name
        if "groups" in sec:
            t = sec["groups"]
            cats = [t["labels"][g] for g in t["groups"]] + ["All"]
            series = {
                label: [100 * v if v is not None else None for v in [*t["means"][k].values(), t["all"][k]]]
                for k, label in (("pck3d", "3DPCK@150mm"), ("auc3d", "AUC"))
            }
            path = draw3d.bar_chart(
                out / f"groups_{tag}.png", cats, series, ylabel="%", title=f"{name}: 3DPCK and AUC per group"
            )
            figs["3DPCK and AUC per group"] = path.name
        if "pckh" in sec:
            cols = sec["pckh"]["columns"]
            series = {"PCKh@0.5": [None if v is None else 100 * v for v in cols.values()]}
            path = draw3d.bar_chart(
                out / f"pckh_{tag}.png", list(cols), series, ylabel="%", title=f"{name}: PCKh@0.5 per joint"
            )
            figs["PCKh per joint"] = path.name
        if grid > 0:
            path = _sample_grid(
                out / f"samples_{tag}.png", name, preds, rs, data, input_size, output_size, grid
            )
            figs["Sample predictions (best to worst)"] = path.name
        figures[name] = figs
    return figures


def _sample_grid(
    path: Path,
    dataset: str,
    preds: dict[str, np.ndarray],
    rs: Any,
    data: list[str],
    input_size: int,
    output_size: int,
    k: int,
) -> Path:
    """Up to ``k`` rows of ``dataset`` from best to worst (MPJPE, else 2D PCK), re-read from the
    shards: crop + predicted 2D skeleton beside the predicted (true scale where known) and true 3D."""
    from pose3d import geometry
    from pose3d.eval.score import load_rows_by_id, prepare_rows
    from pose3d.viz import draw3d

    idx = np.flatnonzero(preds["dataset"] == dataset)
    s = rs.scores
    has_3d = preds["has_3d"][idx].astype(bool)
    key = np.where(has_3d, s.mpjpe[idx], -s.pck2d[idx])
    pick = idx[draw3d.spread_rows(key, k)]
    rows = load_rows_by_id(data, preds["row_id"][pick])
    images = prepare_rows(rows, input_size, output_size)["image"].transpose(0, 2, 3, 1)
    joints = geometry.output_to_input_px(preds["pred_joints"][pick], input_size / output_size)
    has = preds["has_3d"][pick].astype(bool)
    pred_3d = np.where(has[:, None, None], rs.pred_known_mm[pick], rs.pred_mm[pick])
    gt = geometry.root_align(preds["joints_3d"][pick])
    labels = []
    for i in pick:
        where = preds["action"][i] or preds["group"][i] or preds["subject"][i] or dataset
        score = f"MPJPE {s.mpjpe[i]:.0f} mm" if preds["has_3d"][i] else f"2D PCK {100 * s.pck2d[i]:.0f}%"
        labels.append(f"{where} | {score}")
    return draw3d.skeleton_grid(path, images, joints, pred_3d, gt, labels=labels)


# --- pose3d predict --------------------------------------------------------------------------------

#: Longest side of the image as drawn by ``pose3d predict`` (px); larger images are shrunk.
MAX_DISPLAY_SIDE = 900


def run_predict(args: argparse.Namespace) -> int:
    import cv2

    from data_prep.crop import warp_crop
    from pose3d import decode, geometry, skeleton
    from pose3d.eval.score import predict
    from pose3d.viz import draw3d

    out = Path(args.out)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"--out {out}: the figure must end in one of {', '.join(FIGURE_SUFFIXES)}")
    if not args.margin > 0:
        raise UserError(f"--margin must be positive, got {args.margin}")
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{args.image}: not a readable image")
    h, w = image.shape[:2]
    # Boxes are in corner coordinates (pixel i spans [i, i + 1)); geometry puts pixel centres at integers.
    x1, y1, x2, y2 = args.box if args.box else (0.0, 0.0, float(w), float(h))
    if not (x2 > x1 and y2 > y1):
        raise UserError(f"--box {x1:g} {y1:g} {x2:g} {y2:g}: needs x2 > x1 and y2 > y1")
    device = _device(args.device)
    model = _load_model(args.checkpoint, device)
    cfg = model.config
    centre = np.array([(x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5])
    side = max(x2 - x1, y2 - y1) * args.margin
    affine = geometry.crop_affine(centre, side, cfg.input_size)
    crop = warp_crop(image, affine, cfg.input_size)
    batch = np.ascontiguousarray(crop[..., ::-1].transpose(2, 0, 1)[None])  # (1, 3, S, S) RGB
    joints_out, depth = predict(model, batch, device, flip_test=args.flip_test)
    joints_in = geometry.output_to_input_px(joints_out, cfg.stride)
    joints_img = geometry.apply_affine(joints_in, geometry.invert_affine(affine))[0]  # (16, 2) image px
    pose_mm = decode.to_3d_mm(joints_out, depth, cfg.output_size)[0]

    shrink = min(1.0, MAX_DISPLAY_SIDE / max(h, w))
    shown = cv2.resize(image, (round(w * shrink), round(h * shrink)), interpolation=cv2.INTER_AREA)
    joints_shown = (joints_img + 0.5) * shrink - 0.5
    title = f"{Path(args.image).name}" + (" (flip test)" if args.flip_test else "")
    draw3d.prediction_figure(out, shown[..., ::-1], joints_shown, pose_mm, title)
    if args.json:
        result = {
            "image": args.image,
            "box": [x1, y1, x2, y2],
            "margin": args.margin,
            "flip_test": args.flip_test,
            "joint_names": list(skeleton.JOINT_NAMES),
            "joints_2d_px": np.round(joints_img, 2).tolist(),
            "joints_3d_mm": np.round(pose_mm, 1).tolist(),
            "units": {
                "joints_2d_px": "image px, pixel centres at integers",
                "joints_3d_mm": "root-relative camera axes at the canonical skeleton's scale",
            },
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"predicted {args.image} -> {out}" + (f", {args.json}" if args.json else ""))
    return 0
