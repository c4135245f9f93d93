"""``pose3d bench prep``: throughput of the shard writer (read -> crop -> JPEG -> Parquet), in rows/s
per CPU core, once in a plain process (one core, no Ray) and once as the Ray Data job.

Source data: the synthetic generator's renders (``data_prep.synthetic``) when it is available, else
generated full-size frames (textured JPEGs, like Human3.6M's 1000x1000 frames, one person each) read
back from disk by the small reader below; either way decoding is part of the cost, as with the real
readers. The output says which source was used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

HELP = "shard writer throughput: rows/s per CPU core (plain process and Ray Data job)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        choices=("auto", "synthetic", "frames"),
        default="auto",
        help="synthetic: the generator's renders; frames: generated textured frames; "
        "auto: synthetic when available (default %(default)s)",
    )
    parser.add_argument("--tasks", type=int, default=16, help="frames: reader tasks (default %(default)s)")
    parser.add_argument(
        "--rows-per-task",
        type=int,
        default=40,
        help="frames: people per task; tasks x rows-per-task is also the number of synthetic images "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--image-size", type=int, default=1000, help="frames: frame side, px (default %(default)s)"
    )
    parser.add_argument("--crop-size", type=int, default=384, help="crop side, px (default %(default)s)")
    parser.add_argument("--cores", type=int, default=None, help="CPU cores for the Ray job (default: all)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")


# --- the benchmark's reader: generated frames on disk ----------------------------------------


def list_tasks(raw_root: str, split: str) -> list:
    from data_prep.records import SourceTask

    manifest = json.loads((Path(raw_root) / "manifest.json").read_text())
    return [
        SourceTask("h36m", split, name, raw_root, {"labels": labels}) for name, labels in manifest.items()
    ]


def read_task(task):
    import cv2

    from data_prep.records import PersonSample, Quarantined

    for label in task.payload["labels"]:
        image = cv2.imread(str(Path(task.raw_root) / label["file"]), cv2.IMREAD_COLOR)
        if image is None:
            yield Quarantined(label["file"], label["key"], f"unreadable image: {label['file']}")
            continue
        yield PersonSample(
            image=image,
            joints_2d=np.asarray(label["joints_2d"]),
            visible=np.ones(16, bool),
            center=np.asarray(label["center"]),
            box_size=label["box"],
            source_path=label["file"],
            key=label["key"],
            joints_3d=np.asarray(label["joints_3d"]),
        )


def generate_frames(root: Path, tasks: int, rows_per_task: int, size: int, seed: int = 0) -> int:
    """Write ``tasks * rows_per_task`` textured size x size JPEG frames with one person box each."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8), (size, size))
    manifest = {}
    for t in range(tasks):
        labels = []
        for r in range(rows_per_task):
            image = np.roll(base, (37 * r + 11 * t, 53 * r), axis=(0, 1)).copy()
            box = rng.uniform(0.35, 0.6) * size
            center = rng.uniform(0.3, 0.7, 2) * size
            joints = center + rng.uniform(-0.45, 0.45, (16, 2)) * box
            for a, b in ((0, 1), (1, 2), (10, 11), (11, 12), (6, 8), (8, 9)):
                pa, pb = joints[a].astype(int), joints[b].astype(int)
                cv2.line(image, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), (200, 180, 160), 12)
            name = f"t{t:03d}/{r:04d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            labels.append(
                {
                    "file": name,
                    "key": f"{r:04d}",
                    "joints_2d": joints.tolist(),
                    "center": center.tolist(),
                    "box": box,
                    "joints_3d": rng.normal(0, 300, (16, 3)).tolist(),
                }
            )
        manifest[f"t{t:03d}"] = labels
    (root / "manifest.json").write_text(json.dumps(manifest))
    return tasks * rows_per_task


def _synthetic_source(raw: Path, images: int, cores: int) -> tuple[str, tuple[str, ...], str]:
    """Render the synthetic raw sets (lab 50 %, wild 35 %, wild-test 15 % of ``images``, 500 px)."""
    from data_prep import writer

    writer.resolve_reader("synthetic")  # fail before rendering when the reader is missing
    from data_prep.synthetic import generate

    lab, wild = images // 2, images * 35 // 100
    info = generate(
        str(raw),
        lab_frames=lab,
        wild_images=wild,
        wild_test_frames=images - lab - wild,
        image_size=500,
        seed=0,
        num_workers=cores,
        progress=None,
    )
    counts = info.get("counts", info)
    return "synthetic", ("train", "val", "test"), f"the synthetic generator's renders at 500 px ({counts})"


def run(args: argparse.Namespace) -> int:
    from data_prep import writer
    from pose3d.cli.errors import UserError

    cores = args.cores or len(os.sched_getaffinity(0))
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pose3d-bench-prep-"))
    try:
        raw = work / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        source = None
        if args.source in ("auto", "synthetic"):
            try:
                source = _synthetic_source(raw, args.tasks * args.rows_per_task, cores)
            except (ImportError, TypeError) as err:
                if args.source == "synthetic":
                    raise UserError(f"the synthetic generator cannot be used: {err}") from err
                print(f"note: the synthetic generator cannot be used ({err}); using generated frames instead")
        if source is None:
            rows = generate_frames(raw, args.tasks, args.rows_per_task, args.image_size)
            source = (
                (list_tasks, read_task),
                ("train",),
                f"{rows} generated {args.image_size}x{args.image_size} textured JPEG frames, one person each "
                "(not the synthetic generator's renders)",
            )
        reader, splits, description = source
        print(f"source: {description}; prepared in {time.perf_counter() - t0:.1f} s")
        config = writer.WriterConfig(crop_size=args.crop_size)
        list_fn, read_fn, _ = writer.resolve_reader(reader)
        tasks = writer.list_all_tasks(list_fn, str(raw), splits, {})

        # One core, no Ray: the writer's own cost.
        out_plain = work / "out_plain"
        t0 = time.perf_counter()
        written = sum(writer.process_task(t, read_fn, str(out_plain), config).rows for t in tasks)
        plain_s = time.perf_counter() - t0
        print(
            f"plain process (1 core, no Ray): {written} rows from {len(tasks)} tasks in {plain_s:.2f} s = "
            f"{written / plain_s:.1f} rows/s/core"
        )

        # The Ray Data job on all cores (Ray start-up reported apart).
        import ray

        from pose3d.infra.ray_session import init_ray

        t0 = time.perf_counter()
        started_here = not ray.is_initialized()
        init_ray(num_cpus=cores)
        ray_start = time.perf_counter() - t0
        results = []
        try:
            # Twice, into fresh folders: the first job also starts Ray's worker processes (what a
            # user sees); the second shows the writer's throughput once they are up.
            for run_name in ("cold", "warm"):
                out = str(work / f"out_ray_{run_name}")
                results.append(writer.run_prep(reader, str(raw), out, splits, config=config))
        finally:
            if started_here:
                ray.shutdown()
        for run_name, result in zip(("first (cold)", "second (warm)"), results, strict=True):
            rate = result.rows_written / result.job_seconds
            print(
                f"Ray Data job, {run_name}, {cores} cores: {result.rows_written} rows in "
                f"{result.job_seconds:.2f} s = {rate:.1f} rows/s = {rate / cores:.1f} rows/s/core"
            )
        print(f"(Ray start {ray_start:.1f} s, not included)")
        cold, warm = (r.rows_written / r.job_seconds / cores for r in results)
        print(
            f"rows={results[0].rows_written} cores={cores} plain_rows_per_s_per_core={written / plain_s:.2f} "
            f"ray_cold_rows_per_s_per_core={cold:.2f} ray_warm_rows_per_s_per_core={warm:.2f}"
        )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0
