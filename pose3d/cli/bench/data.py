"""``pose3d bench data``: what the CPU side of training costs per row, and how many CPU cores feed
one GPU.

The data path of a training row, read -> decode -> augment -> batch (shard Parquet -> JPEG decode ->
warp and colour gain -> labels and targets, ``BatchPreprocessor`` as the Ray Data actors run it), at
each config's sizes (paper: 256 px in, 64 px out; demo: 64 / 16), two ways:

- before: the batch also carries 16 x O x O float32 heatmaps drawn on the CPU (the preprocessing
  actors did that until the trainer drew them);
- after: the batch as shipped now (image, joints, visibility, depth); the training step draws the
  heatmaps on its device (``targets.render_heatmaps_torch``; its cost there is printed too).

Measured in this one process with one thread for OpenCV, torch and pyarrow, no Ray, so the figure is
per core: rows per CPU second of the process (``time.process_time``, the median over batches, which
a busy machine disturbs less than wall time; the wall rate is printed too). ``--ray`` also runs both
ways through Ray Data with one preprocessing actor, counting the CPU of every Ray process. Bytes per
row: the preprocessed batch's arrays as they leave the actor (numeric nbytes, strings as UTF-8),
i.e. what travels through Ray's object store to the trainer. Cores per GPU: ``--gpu-img-s`` over
the per-core rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

HELP = (
    "data path rows/s per CPU core (256 and 64 px, heatmaps on CPU vs device), bytes per row, cores per GPU"
)

#: The GPU the default rate assumes (a name in ``bench.model.PEAK_BF16_TFLOPS``) and the share of its
#: bf16 peak a well-fed training step of the paper model reaches.
REFERENCE_GPU = "NVIDIA H100 80GB HBM3"
ASSUMED_MFU = 0.35


def default_gpu_img_s() -> float:
    """Training images/s of ``REFERENCE_GPU`` at ``ASSUMED_MFU`` on the paper model: its peak over the
    model's forward+backward FLOPs per image (``bench.model.model_gflop``: about 3,600 img/s)."""
    from pose3d.cli.bench.model import model_gflop, peak_tflops
    from pose3d.model import ModelConfig

    peak = peak_tflops(REFERENCE_GPU)
    assert peak is not None, REFERENCE_GPU
    return ASSUMED_MFU * peak * 1e3 / model_gflop(ModelConfig.paper())[1]


SIDES = ("before", "after")
WHERE_HEATMAPS = {"before": "cpu", "after": "device"}
HEADLINE_KEYS = ("rows_per_s_per_core", "bytes_per_row", "cores_per_gpu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--configs", default="paper,demo", help="training configs, comma-separated (default: paper,demo)"
    )
    p.add_argument(
        "--shards", help="shard folders or files, comma-separated (default: generate a tiny synthetic set)"
    )
    p.add_argument("--rows", type=int, default=384, help="timed rows per config (default 384)")
    p.add_argument(
        "--batch", type=int, default=32, help="rows per preprocessed batch, as training (default 32)"
    )
    p.add_argument(
        "--gpu-img-s",
        type=float,
        default=None,
        help=f"training images/s one GPU consumes (default: the paper model's forward+backward FLOPs "
        f"at {100 * ASSUMED_MFU:.0f} %% of an H100's bf16 peak, about 3,600)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="where to time the trainer's heatmap drawing (default: cuda if present)",
    )
    p.add_argument("--ray", action="store_true", help="also measure both ways through Ray Data (one actor)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json",
        action="store_true",
        help=(
            "print one JSON object instead of the table: rows_per_s_per_core, bytes_per_row, "
            "cores_per_gpu (the current path, one per config) beside input_size, both sides in results"
        ),
    )


# --- one process, one core ---------------------------------------------------------------------------


class CpuHeatmapPreprocessor:
    """The old preprocessing actor, for the "before" side through Ray Data: ``BatchPreprocessor``'s
    batch plus heatmaps (n, 16, O, O) float32 drawn on the CPU."""

    def __init__(self, input_size: int, output_size: int, params: Any, seed: int | None = None) -> None:
        from pose3d.data.augment import BatchPreprocessor

        self.preprocess = BatchPreprocessor(input_size, output_size, params, seed)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from pose3d import targets

        out = self.preprocess(rows)
        out["heatmaps"] = targets.render_heatmaps(
            out["joints_out"], out["visible"], self.preprocess.output_size
        )
        return out


def bytes_per_row(batch: dict[str, np.ndarray]) -> float:
    """Bytes of a preprocessed batch per row: numeric and bool arrays by nbytes, strings as UTF-8."""
    total = 0
    for value in batch.values():
        arr = np.asarray(value)
        if arr.dtype.kind in "USO":
            total += sum(len(str(s).encode()) for s in arr.ravel())
        else:
            total += arr.nbytes
    return total / len(batch["image"])


def _read_file(path: str) -> dict[str, np.ndarray]:
    """One shard's training columns as numpy (pyarrow, one thread), with the ``path`` and ``source``
    columns the training reader adds."""
    import pyarrow.parquet as pq

    from pose3d.data.augment import INPUT_COLUMNS, SOURCE_COLUMN
    from pose3d.data.shards import table_to_numpy
    from pose3d.storage import resolve

    fs, inner = resolve(path)
    rows = table_to_numpy(
        pq.read_table(inner, columns=[*INPUT_COLUMNS, "row_id"], filesystem=fs, use_threads=False)
    )
    n = len(rows["row_id"])
    rows["path"] = np.full(n, path)
    rows[SOURCE_COLUMN] = np.zeros(n, np.int16)
    return rows


def _timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """fn(*args), its CPU seconds (this process, all threads) and wall seconds."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


def _batches(files: list[str], batch: int) -> Iterator[tuple[dict[str, np.ndarray], float, float]]:
    """Endless batches of ``batch`` rows (or a file's last, shorter one), cycling over ``files``, each
    with the CPU and wall seconds its share of the file read took."""
    while True:
        for path in files:
            rows, cpu, wall = _timed(_read_file, path)
            n = len(rows["row_id"])
            for start in range(0, n, batch):
                part = {k: v[start : start + batch] for k, v in rows.items()}
                share = len(part["row_id"]) / n
                yield part, cpu * share, wall * share


def measure_in_process(
    files: list[str], input_size: int, output_size: int, params: Any, rows: int, batch: int, seed: int
) -> dict[str, Any]:
    """Both sides on the same batches after one untimed batch. The old batch is the new one plus
    CPU-drawn heatmaps, so one preprocessing run serves both and the heatmaps are timed on their
    own: before = read + preprocess + heatmaps, after = read + preprocess. Per-core rates are
    1 / the median over batches of CPU seconds per row (robust to a busy neighbour's spikes); wall
    rates are rows over total wall seconds. Returns per side rows_per_s_per_core, rows_per_s_wall
    and bytes_per_row, and the read and heatmap costs in CPU µs per row (medians)."""
    from pose3d import targets
    from pose3d.data.augment import BatchPreprocessor

    preprocess = BatchPreprocessor(input_size, output_size, params, seed)
    cpu: list[tuple[float, float, float]] = []  # per batch, per row: read, preprocess, heatmaps
    wall = np.zeros(3)
    size = np.zeros(2)  # bytes shipped: the new batch, the heatmaps
    done = -1  # the first batch warms up (allocations, OpenCV's first decode)
    for part, read_cpu, read_wall in _batches(files, batch):
        n = len(part["row_id"])
        out, prep_cpu, prep_wall = _timed(preprocess, part)
        maps, map_cpu, map_wall = _timed(
            targets.render_heatmaps, out["joints_out"], out["visible"], output_size
        )
        if done < 0:
            done = 0
            continue
        cpu.append((read_cpu / n, prep_cpu / n, map_cpu / n))
        wall += (read_wall, prep_wall, map_wall)
        size += (bytes_per_row(out) * n, maps.nbytes)
        done += n
        if done >= rows:
            break
    per_row = np.array(cpu)
    cost = {"before": np.median(per_row.sum(1)), "after": np.median(per_row[:, :2].sum(1))}
    sides = {
        side: {
            "heatmaps": WHERE_HEATMAPS[side],
            "rows_per_s_per_core": 1.0 / cost[side],
            "rows_per_s_wall": done / (wall.sum() if side == "before" else wall[:2].sum()),
            "bytes_per_row": (size.sum() if side == "before" else size[0]) / done,
        }
        for side in SIDES
    }
    read_us, prep_us, maps_us = 1e6 * np.median(per_row, axis=0)
    return {
        "rows": done,
        "read_us_per_row": read_us,
        "preprocess_us_per_row": prep_us,
        "cpu_heatmaps_us_per_row": maps_us,
        **sides,
    }


def device_render_us_per_row(device: str, output_size: int, batch: int, repeats: int = 50) -> float:
    """µs per row of ``targets.render_heatmaps_torch`` on ``device`` at a batch of ``batch`` rows
    (the trainer's cost of drawing the targets); median of ``repeats`` calls after a warm-up."""
    import torch

    from pose3d import targets

    gen = torch.Generator().manual_seed(0)
    joints = (torch.rand(batch, 16, 2, generator=gen) * (output_size + 2) - 1).to(device)
    visible = (torch.rand(batch, 16, generator=gen) < 0.9).to(device)
    sync = torch.cuda.synchronize if joints.device.type == "cuda" else (lambda: None)
    times = []
    for i in range(repeats + 5):
        sync()
        t0 = time.perf_counter()
        targets.render_heatmaps_torch(joints, visible, output_size)
        sync()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times)) / batch


# --- through Ray Data ----------------------------------------------------------------------------------


def _ray_cpu_seconds() -> float:
    """CPU seconds so far of this process and all its descendants (the local Ray's processes)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def measure_ray(
    files: list[str], input_size: int, output_size: int, params: Any, rows: int, batch: int
) -> dict[str, dict[str, float]]:
    """Each side as the trainer reads it: read_shards -> map_batches(preprocessor, one actor of one
    CPU) -> iter_batches; rows/s wall and rows per CPU second of every Ray process, after the first
    batch (pipeline start-up) arrives, and that start-up itself: seconds from asking for the first
    batch to holding it (planning, one read task and footer read per file, the actor's start)."""
    import ray.data

    from pose3d.data.augment import INPUT_COLUMNS, BatchPreprocessor
    from pose3d.data.shards import count_shard_rows, read_shards

    out = {}
    passes = max(1, math.ceil(2 * rows / max(1, count_shard_rows(files))))
    for side, cls in (("before", CpuHeatmapPreprocessor), ("after", BatchPreprocessor)):
        ds = read_shards(files, columns=[*INPUT_COLUMNS, "row_id"], include_paths=True)
        if passes > 1:
            ds = ds.union(*[ds] * (passes - 1))
        ds = ds.map_batches(
            cls,
            fn_constructor_kwargs={"input_size": input_size, "output_size": output_size, "params": params},
            batch_size=batch,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        done, t0, c0 = -1, 0.0, 0.0
        asked = time.perf_counter()
        for b in ds.iter_batches(batch_size=batch, batch_format="numpy", prefetch_batches=2):
            if done < 0:
                done, t0, c0 = 0, time.perf_counter(), _ray_cpu_seconds()
                first_batch_s = t0 - asked
                continue
            done += len(b["image"])
            if done >= rows:
                break
        wall, cpu = time.perf_counter() - t0, _ray_cpu_seconds() - c0
        # Per core: rows over the CPU seconds of every Ray process (reads, actor, executor, driver).
        out[side] = {
            "rows": done,
            "rows_per_s_wall": done / wall,
            "rows_per_s_per_core": done / cpu,
            "first_batch_s": first_batch_s,
        }
    return out


# --- the command ---------------------------------------------------------------------------------------


def _generate(folder: str) -> list[str]:
    """A tiny synthetic shard set (lab + wild training sets) in ``folder``; Ray is shut down after."""
    import ray

    from data_prep.synthetic import prepare
    from pose3d.data.shards import list_shards

    print("generating a tiny synthetic shard set ...", flush=True)
    prepare(folder, size="tiny", progress=None)
    if ray.is_initialized():  # its processes would share the cores with the timed process
        ray.shutdown()
    return list_shards(
        [os.path.join(folder, "synthetic_lab", "train"), os.path.join(folder, "synthetic_wild", "train")]
    )


def run(args: argparse.Namespace) -> int:
    import cv2
    import torch

    from pose3d.cli.errors import UserError
    from pose3d.data.shards import NoShardsError, list_shards
    from pose3d.train.config import ConfigError, load_config

    try:
        configs = {name: load_config(name) for name in args.configs.split(",") if name}
    except ConfigError as err:
        raise UserError(str(err)) from None
    if args.gpu_img_s is None:
        args.gpu_img_s = default_gpu_img_s()
    if args.rows < 1 or args.batch < 1 or args.gpu_img_s <= 0:
        raise UserError("--rows, --batch and --gpu-img-s must be positive")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cv2.setNumThreads(1)  # one core: OpenCV's and torch's thread pools off
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pose3d-bench-data-") as tmp:
        try:
            files = list_shards(args.shards.split(",")) if args.shards else _generate(tmp)
        except NoShardsError as err:
            raise UserError(str(err)) from None
        results = []
        for name, cfg in configs.items():
            m = cfg.model
            res = measure_in_process(
                files, m.input_size, m.output_size, cfg.data.augment, args.rows, args.batch, args.seed
            )
            for side in SIDES:
                res[side]["cores_per_gpu"] = args.gpu_img_s / res[side]["rows_per_s_per_core"]
            res["device_render_us_per_row"] = device_render_us_per_row(device, m.output_size, args.batch)
            results.append({"config": name, "input_size": m.input_size, "output_size": m.output_size, **res})
            if not args.json:
                print(f"{name}: {m.input_size} px done", flush=True)
        if args.ray:
            from pose3d.infra.ray_session import init_ray

            init_ray()
            try:
                for r in results:
                    cfg = configs[r["config"]]
                    ray_sides = measure_ray(
                        files, r["input_size"], r["output_size"], cfg.data.augment, args.rows, args.batch
                    )
                    for side in SIDES:
                        ray_sides[side]["cores_per_gpu"] = (
                            args.gpu_img_s / ray_sides[side]["rows_per_s_per_core"]
                        )
                        r[side]["ray_data"] = ray_sides[side]
            finally:
                import ray

                ray.shutdown()
    report = {
        "gpu_img_s": args.gpu_img_s,
        "device": device,
        "shard_files": len(files),
        "batch": args.batch,
        "input_size": [r["input_size"] for r in results],
        # The headline figures, one per config in input_size's order, for the path training takes now
        # (heatmaps drawn on the device); "results" holds both sides and the Ray Data figures.
        **{key: [r["after"][key] for r in results] for key in HEADLINE_KEYS},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"\nread -> decode -> augment -> batch, one process, one core; {report['shard_files']} shard "
        f"files, batches of {report['batch']}; GPU rate {report['gpu_img_s']:.0f} img/s"
    )
    columns = ("config", "in/out px", "heatmaps", "rows/s/core", "wall rows/s", "bytes/row", "cores/GPU")
    print("{:<7} {:>9} {:<9} {:>11} {:>11} {:>10} {:>9}".format(*columns))
    for r in report["results"]:
        for side in SIDES:
            s = r[side]
            size = f"{r['input_size']}/{r['output_size']}"
            print(
                f"{r['config']:<7} {size:>9} {s['heatmaps']:<9} {s['rows_per_s_per_core']:>11.1f} "
                f"{s['rows_per_s_wall']:>11.1f} {s['bytes_per_row']:>10.0f} {s['cores_per_gpu']:>9.1f}"
            )
    for r in report["results"]:
        before, after = r["before"], r["after"]
        shrink = after["bytes_per_row"] / before["bytes_per_row"]
        speedup = after["rows_per_s_per_core"] / before["rows_per_s_per_core"]
        print(
            f"{r['config']} {r['input_size']} px, CPU µs/row: read {r['read_us_per_row']:.0f}, decode + "
            f"augment + labels {r['preprocess_us_per_row']:.0f}, heatmaps {r['cpu_heatmaps_us_per_row']:.0f} "
            f"(on {report['device']} in the step: {r['device_render_us_per_row']:.2f}); "
            f"bytes/row x{shrink:.2f}, rows/s/core x{speedup:.2f}"
        )
        for side in SIDES if "ray_data" in after else ():
            d = r[side]["ray_data"]
            print(
                f"  through Ray Data (1 actor), heatmaps on {r[side]['heatmaps']}: "
                f"{d['rows_per_s_wall']:.1f} rows/s wall, {d['rows_per_s_per_core']:.1f} rows/s per core "
                "(CPU of every Ray process), "
                f"{d['cores_per_gpu']:.1f} cores/GPU ({d['rows']} rows; first batch after "
                f"{d['first_batch_s']:.2f} s)"
            )
