"""Generate the synthetic raw datasets (``generate``) and turn them into shards (``prepare``).

``generate(out_raw)`` writes three raw trees in the official formats (``formats``)::

    out_raw/h36m/   the lab set (Human3.6M layout): S1, S5, S6, S7, S8 train; S9, S11 test
    out_raw/mpii/   the wild set (MPII layout): train and val
    out_raw/3dhp/   the wild test set (MPI-INF-3DHP test layout): TS1..TS6
    out_raw/coco/   the street set (COCO keypoints layout), only when ``coco_images`` > 0: train, val
    out_raw/synthetic.json         the parameters and counts (a re-run with the same ones is skipped)
    out_raw/synthetic_labels.npz   the rendered ground truth in the 16 joints, for checks

Frames are rendered in worker processes (``num_workers``), each writing its own JPEGs; the
annotation files are written at the end. The output is the same for a seed whatever the number of
workers. ``prepare(out)`` generates into ``out/raw`` (or ``raw=``) and runs the shard writer
(``data_prep.writer.run_prep``) with this package as the reader (``data_prep.synthetic.reader``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.synthetic import formats, posebank, sets
from data_prep.synthetic.formats import CocoAnnotation, CocoImageRecord, LabRecord, TestRecord, WildRecord
from pose3d import skeleton, storage

FORMAT_VERSION = 1
JPEG_QUALITY = 92
#: Size presets: images per set, image size (px) and Human3.6M trials per action.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"lab_frames": 56, "wild_images": 30, "wild_test_frames": 48, "image_size": 320, "lab_trials": 1},
    "small": {
        "lab_frames": 1500,
        "wild_images": 1500,
        "wild_test_frames": 420,
        "image_size": 500,
        "lab_trials": 1,
    },
    "medium": {
        "lab_frames": 12000,
        "wild_images": 12000,
        "wild_test_frames": 2400,
        "image_size": 500,
        "lab_trials": 2,
    },
}
#: Street (COCO-like) images per size preset: opt-in (``prepare(coco=True)``, ``pose3d prep synthetic
#: --coco``), so the presets and the demo stay as they were. About 2 labelled people per image at the
#: small preset's size (1 at tiny's: its people are smaller), about 1.7 more skipped (tiny, crowd).
COCO_IMAGES: dict[str, int] = {"tiny": 20, "small": 700, "medium": 6000}
H36M_LAYOUTS = ("npz", "video", "both")
_CHUNK = 8  # frames per work unit

Progress = Callable[[str], None]


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


# --- work units (run in the workers) -------------------------------------------------------------


def _lab_unit(
    root: str, seed: int, image_size: int, trials: int, indices: list[int], gap: posebank.PoseGap
) -> list[dict[str, Any]]:
    out = []
    for index in indices:
        frame = sets.lab_frame(seed, image_size, index, trials, gap)
        for cid, shot in zip(sets.LAB_CAMERA_IDS, frame.shots, strict=True):
            j17, j32 = shot.body.h36m17(), shot.body.h36m32()
            record = LabRecord(
                frame.subject, frame.action, frame.trial, cid, frame.frame,
                shot.camera.project(j17), j17, shot.camera.project(j32), j32,
            )  # fmt: skip
            _write_jpeg(formats.h36m_image_path(Path(root), record), shot.image)
            out.append(
                {"record": record, "j16_px": shot.joints_2d, "j16_cam": shot.body.joints, "index": index}
            )
    return out


def _wild_unit(
    root: str, seed: int, image_size: int, indices: list[int], gap: posebank.PoseGap
) -> list[dict[str, Any]]:
    out = []
    for index in indices:
        shot = sets.wild_image(seed, image_size, index, gap)
        h, w = shot.image.shape[:2]
        name = f"{index + 1:09d}.jpg"
        record = WildRecord(
            name, sets.wild_split(index), shot.joints_2d, shot.in_image, shot.visible, shot.head_box, w, h
        )
        _write_jpeg(Path(root) / "images" / name, shot.image)
        out.append({"record": record, "j16_px": shot.joints_2d, "j16_cam": shot.body.joints, "index": index})
    return out


def _test_unit(
    root: str, seed: int, image_size: int, items: list[tuple[str, int, int]], gap: posebank.PoseGap
) -> list[dict[str, Any]]:
    out = []
    for sequence, frame, count in items:
        tf = sets.wild_test_frame(seed, image_size, sequence, frame, count, gap)
        j17 = tf.shot.body.mpi3dhp17()
        record = TestRecord(sequence, frame, tf.activity, tf.valid, tf.shot.camera.project(j17), j17)
        _write_jpeg(formats.mpi3dhp_image_path(Path(root), sequence, frame), tf.shot.image)
        out.append(
            {
                "record": record,
                "j16_px": tf.shot.joints_2d,
                "j16_cam": tf.shot.body.joints,
                "index": (sequence, frame),
            }
        )
    return out


def _coco_unit(
    root: str, seed: int, image_size: int, indices: list[int], gap: posebank.PoseGap
) -> list[dict[str, Any]]:
    out = []
    for index in indices:
        street = sets.coco_image(seed, image_size, index, gap)
        h, w = street.image.shape[:2]
        image_id = index + 1
        split = sets.coco_split(index)
        name = f"{image_id:012d}.jpg"  # COCO's file naming
        annotations, truth = [], []
        for k, person in enumerate(street.people):
            ann_id = image_id * 100 + k  # unique, and known inside this worker
            segmentation = (
                formats.mask_rle(person.mask) if person.iscrowd else formats.mask_polygons(person.mask)
            )
            annotations.append(
                CocoAnnotation(
                    ann_id, person.keypoints, formats.mask_bbox(person.mask), float(person.mask.sum()),
                    person.iscrowd, segmentation,
                )
            )  # fmt: skip
            if not person.iscrowd:
                truth.append({"key": f"{image_id:012d}_{ann_id}", "j16_px": person.joints_2d})
        _write_jpeg(Path(root) / f"{split}2017" / name, street.image)
        record = CocoImageRecord(image_id, name, split, w, h, annotations)
        out.append({"record": record, "truth": truth, "index": index})
    return out


_UNITS = {"lab": _lab_unit, "wild": _wild_unit, "test": _test_unit, "coco": _coco_unit}


def _run_unit(job: tuple[str, tuple]) -> tuple[str, list[dict[str, Any]], float]:
    kind, args = job
    start = time.process_time()
    result = _UNITS[kind](*args)
    return kind, result, time.process_time() - start


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


# --- generate ------------------------------------------------------------------------------------


def _params(lab_frames: int, wild_images: int, wild_test_frames: int, image_size: int, seed: int,
            lab_trials: int, h36m_layout: str, coco_images: int = 0,
            gap: posebank.PoseGap = sets.DEFAULT_GAP) -> dict[str, Any]:  # fmt: skip
    bank = posebank.load_bank()
    # The street set's count is recorded only when there is one, so folders generated before it
    # existed still match their parameters.
    coco = {"coco_images": coco_images} if coco_images else {}
    return {
        **coco,
        "format_version": FORMAT_VERSION,
        "lab_frames": lab_frames,
        "wild_images": wild_images,
        "wild_test_frames": wild_test_frames,
        "image_size": image_size,
        "seed": seed,
        "lab_trials": lab_trials,
        "h36m_layout": h36m_layout,
        "pose_bank": {
            "poses": len(bank),
            "source": bank.source,
            "checksum": float(np.round(bank.bone_dirs.sum(), 4)),
        },
        "pose_gap": {
            "lab_pose_share": gap.lab_pose_share,
            "composed_share": gap.composed_share,
            "lab_clusters": posebank.lab_clusters(bank, gap.lab_pose_share).tolist(),
            "lab_poses": len(posebank.lab_pool(bank, gap.lab_pose_share)),
        },
    }


def generate(
    out_raw: str,
    *,
    lab_frames: int = SIZES["small"]["lab_frames"],
    wild_images: int = SIZES["small"]["wild_images"],
    wild_test_frames: int = SIZES["small"]["wild_test_frames"],
    image_size: int = SIZES["small"]["image_size"],
    seed: int = 0,
    lab_trials: int = 1,
    h36m_layout: str = "npz",
    coco_images: int = 0,
    lab_pose_share: float = posebank.LAB_POSE_SHARE,
    composed_share: float = posebank.COMPOSED_SHARE,
    num_workers: int | None = None,
    progress: Progress | None = print,
    force: bool = False,
) -> dict[str, Any]:
    """Render the lab, wild and wild-test sets into ``out_raw/{h36m,mpii,3dhp}`` and, when
    ``coco_images`` > 0, the street set into ``out_raw/coco`` (module docstring).

    ``lab_frames`` counts images (4 cameras per pose, rounded up to a multiple of 4);
    ``h36m_layout``: "npz" (mmpose's), "video" (the official videos + CDF) or "both".
    ``lab_pose_share``, ``composed_share``: the pose gap (``posebank.PoseGap``; docs/synthetic.md).
    ``num_workers`` processes render (default: the CPU count; 1 = in this process). A folder
    already generated with the same parameters is left as it is unless ``force``.
    Returns the parameters, the counts per set, the seconds and the images per second.
    """
    if h36m_layout not in H36M_LAYOUTS:
        raise ValueError(f"h36m_layout must be one of {H36M_LAYOUTS}, not {h36m_layout!r}")
    if min(lab_frames, wild_images, wild_test_frames, coco_images) < 0 or image_size < 64:
        raise ValueError("frame counts must be >= 0 and image_size >= 64")
    say = progress or (lambda _: None)
    root = Path(out_raw)
    gap = posebank.PoseGap(lab_pose_share, composed_share)
    params = _params(
        lab_frames, wild_images, wild_test_frames, image_size, seed, lab_trials, h36m_layout, coco_images, gap
    )
    info_path = root / "synthetic.json"
    if not force and info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("params") == params:
            say(f"synthetic: {root} already holds this data set (seed {seed}); skipping generation")
            return info
    for sub in ("h36m", "mpii", "3dhp", "coco"):
        shutil.rmtree(root / sub, ignore_errors=True)
    info_path.unlink(missing_ok=True)
    start = time.perf_counter()
    lab_root, wild_root, test_root = root / "h36m", root / "mpii", root / "3dhp"
    lab_poses = -(-lab_frames // len(sets.LAB_CAMERA_IDS))
    per_sequence = sets.test_frames_per_sequence(wild_test_frames)
    test_items = [
        (seq, f, n) for seq, n in zip(sets.TEST_SEQUENCES, per_sequence, strict=True) for f in range(n)
    ]
    jobs: list[tuple[str, tuple]] = []
    step = max(1, _CHUNK // len(sets.LAB_CAMERA_IDS))  # poses per lab job (4 images each)
    for i in range(0, lab_poses, step):
        poses = list(range(i, min(i + step, lab_poses)))
        jobs.append(("lab", (str(lab_root), seed, image_size, lab_trials, poses, gap)))
    for i in range(0, wild_images, _CHUNK):
        jobs.append(
            ("wild", (str(wild_root), seed, image_size, list(range(i, min(i + _CHUNK, wild_images))), gap))
        )
    for i in range(0, len(test_items), _CHUNK):
        jobs.append(("test", (str(test_root), seed, image_size, test_items[i : i + _CHUNK], gap)))
    coco_root = root / "coco"
    for i in range(0, coco_images, _CHUNK):
        jobs.append(
            ("coco", (str(coco_root), seed, image_size, list(range(i, min(i + _CHUNK, coco_images))), gap))
        )
    order = {"test": 0, "lab": 1, "wild": 2, "coco": 3}
    jobs.sort(key=lambda j: order[j[0]])  # static scenes first: warm caches
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(jobs) or 1))
    total_images = len(sets.LAB_CAMERA_IDS) * lab_poses + wild_images + len(test_items) + coco_images
    lab_images = len(sets.LAB_CAMERA_IDS) * lab_poses
    street = f", {coco_images} street" if coco_images else ""
    say(f"synthetic: rendering {total_images} images ({lab_images} lab, {wild_images} wild, "
        f"{len(test_items)} wild-test{street}) at {image_size} px with {workers} worker(s) "
        f"into {root}")  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {"lab": [], "wild": [], "test": [], "coco": []}
    cpu: dict[str, float] = {"lab": 0.0, "wild": 0.0, "test": 0.0, "coco": 0.0}
    done = 0
    last = time.perf_counter()

    def collect(kind: str, rows: list[dict[str, Any]], seconds: float) -> None:
        nonlocal done, last
        results[kind] += rows
        cpu[kind] += seconds
        done += len(rows)
        now = time.perf_counter()
        if now - last > 5 or done == total_images:
            last = now
            say(f"synthetic: {done}/{total_images} images, {done / (now - start):.1f} images/s")

    if workers == 1:
        import cv2

        threads = cv2.getNumThreads()
        _init_worker()
        try:
            for job in jobs:
                collect(*_run_unit(job))
        finally:
            cv2.setNumThreads(threads)
    else:
        ctx = multiprocessing.get_context("spawn")  # safe beside threads (Ray) in the parent
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for kind, rows, seconds in pool.imap_unordered(_run_unit, jobs):
                collect(kind, rows, seconds)
    render_seconds = time.perf_counter() - start

    # Annotation files, in a deterministic order.
    lab = sorted(results["lab"], key=lambda r: (r["index"], r["record"].camera_id))
    wild = sorted(results["wild"], key=lambda r: r["index"])
    test = sorted(results["test"], key=lambda r: (sets.TEST_SEQUENCES.index(r["index"][0]), r["index"][1]))
    _write_lab(lab_root, [r["record"] for r in lab], seed, image_size, h36m_layout)
    formats.write_mpii(wild_root, [r["record"] for r in wild])
    _write_test(test_root, [r["record"] for r in test], seed, image_size)
    coco = sorted(results["coco"], key=lambda r: r["index"])
    if coco:
        formats.write_coco(coco_root, [r["record"] for r in coco])
    _write_labels(root / "synthetic_labels.npz", lab, wild, test, coco)
    seconds = time.perf_counter() - start
    info = {
        "params": params,
        "counts": {
            "lab": len(lab),
            "wild": len(wild),
            "wild_test": len(test),
            "lab_train": sum(r["record"].subject in sets.LAB_TRAIN_SUBJECTS for r in lab),
            "wild_val": sum(r["record"].split == "val" for r in wild),
            "wild_test_valid": sum(r["record"].valid for r in test),
            **(
                {"coco": len(coco), "coco_val": sum(r["record"].split == "val" for r in coco)} if coco else {}
            ),
        },  # fmt: skip
        "seconds": round(seconds, 2),
        "render_seconds": round(render_seconds, 2),
        "workers": workers,
        "images_per_s": round(total_images / seconds, 1) if seconds > 0 else 0.0,
        "cpu_ms_per_image": {
            k: round(1000 * cpu[k] / max(1, len(results[k])), 1) for k in cpu if k != "coco" or coco
        },
    }
    info_path.write_text(json.dumps(info, indent=1, sort_keys=True))
    say(f"synthetic: {total_images} images in {seconds:.1f} s ({info['images_per_s']} images/s, "
        f"{workers} worker(s)); CPU ms per image: {info['cpu_ms_per_image']}")  # fmt: skip
    return info


def _write_lab(root: Path, records: list[LabRecord], seed: int, image_size: int, layout: str) -> None:
    studio = sets.lab_studio(seed, image_size)
    formats.write_h36m_cameras(root, list(sets.LAB_SUBJECTS), list(sets.LAB_CAMERA_IDS), studio.cameras)
    if layout in ("npz", "both"):
        for split, subjects in (("train", sets.LAB_TRAIN_SUBJECTS), ("test", sets.LAB_TEST_SUBJECTS)):
            formats.write_h36m_npz(root, split, [r for r in records if r.subject in subjects])
    if layout in ("video", "both"):
        formats.write_h36m_video(root, records, sets.LAB_FRAME_STEP)
        if layout == "video":
            shutil.rmtree(root / "images", ignore_errors=True)


def _write_test(root: Path, records: list[TestRecord], seed: int, image_size: int) -> None:
    for seq in sets.TEST_SEQUENCES:
        seq_records = [r for r in records if r.sequence == seq]
        if seq_records:
            formats.write_annot_data(root / seq / "annot_data.mat", seq_records)
    cams = {seq: sets.test_sequence(seed, image_size, seq).camera for seq in sets.TEST_SEQUENCES}
    formats.write_3dhp_cameras(root, cams)


def _write_labels(path: Path, lab: list[dict], wild: list[dict], test: list[dict], coco: list[dict]) -> None:
    """The rendered truth in the 16 joints, keyed like the readers' samples (the street set's:
    every labelled, non-crowd annotation, keyed ``<image id:012d>_<annotation id>``)."""

    def stack(rows: list[dict], name: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.stack([r[name] for r in rows]) if rows else np.zeros((0, *shape))

    j = skeleton.NUM_JOINTS
    np.savez_compressed(
        path,
        lab_keys=np.array([f"{r['record'].sequence}/{r['record'].frame:06d}" for r in lab], dtype=str),
        lab_joints_2d=stack(lab, "j16_px", (j, 2)),
        lab_joints_3d=stack(lab, "j16_cam", (j, 3)),
        wild_keys=np.array([r["record"].name for r in wild], dtype=str),
        wild_joints_2d=stack(wild, "j16_px", (j, 2)),
        wild_annotated=np.array([r["record"].annotated for r in wild], dtype=bool).reshape(-1, j),
        wild_head_box=np.array([r["record"].head_box for r in wild]).reshape(-1, 4),
        test_keys=np.array([f"{r['record'].sequence}/{r['record'].frame:06d}" for r in test], dtype=str),
        test_joints_2d=stack(test, "j16_px", (j, 2)),
        test_joints_3d=stack(test, "j16_cam", (j, 3)),
        test_valid=np.array([r["record"].valid for r in test], dtype=bool),
        coco_keys=np.array([t["key"] for r in coco for t in r["truth"]], dtype=str),
        coco_joints_2d=np.array([t["j16_px"] for r in coco for t in r["truth"]]).reshape(-1, j, 2),
    )


# --- prepare -------------------------------------------------------------------------------------


def prepare(
    out: str,
    *,
    raw: str | None = None,
    size: str = "small",
    seed: int = 0,
    num_cpus: int | None = None,
    h36m_layout: str = "npz",
    coco: bool = False,
    lab_pose_share: float = posebank.LAB_POSE_SHARE,
    composed_share: float = posebank.COMPOSED_SHARE,
    progress: Progress | None = print,
    **writer_opts: Any,
) -> dict[str, Any]:
    """Generate the synthetic raw data (into ``raw``, default ``out/raw``; a temporary folder when
    ``out`` is an object-store URI) and write its shards under ``out`` with the shard writer:
    ``out/synthetic_lab`` (train, test), ``out/synthetic_wild`` (train, val) and
    ``out/synthetic_wild_test`` (test); with ``coco`` also the street set (``COCO_IMAGES[size]``
    images) as ``out/synthetic_coco`` (train, val), prepared in a run of its own so that the other
    sets' shards and parameters are exactly those of a run without it.

    ``size``: "tiny", "small" or "medium" (``SIZES``); ``lab_pose_share``, ``composed_share``: the
    pose gap (``generate``); ``writer_opts``: ``data_prep.writer.
    WriterConfig`` fields (crop_size, jpeg_quality, shard_rows). Returns {"generate": the
    generation info, "prep": the writer's PrepResult}.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    from data_prep import writer

    preset = dict(SIZES[size])
    lab_trials = preset.pop("lab_trials")
    temporary = None
    if raw is None:
        fs, local = storage.resolve(out)
        if fs.type_name == "local":
            raw = os.path.join(local, "raw")
        else:
            temporary = tempfile.mkdtemp(prefix="pose3d-synthetic-raw-")
            raw = temporary
    try:
        info = generate(
            raw, **preset, seed=seed, lab_trials=lab_trials, h36m_layout=h36m_layout,
            coco_images=COCO_IMAGES[size] if coco else 0, lab_pose_share=lab_pose_share,
            composed_share=composed_share, num_workers=num_cpus, progress=progress,
        )  # fmt: skip
        writer.ensure_ray(num_cpus)
        config = writer.WriterConfig(**writer_opts)
        result = writer.run_prep("synthetic", raw, out, ("train", "val", "test"), config=config)
        if coco:
            street = writer.run_prep(
                "synthetic", raw, out, ("train", "val"), reader_options={"sets": "coco"}, config=config
            )
            result = _merged(result, street)
        if progress:
            for line in writer.iter_summary_lines(result):
                progress(line)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return {"generate": info, "prep": result}


def _merged(a: Any, b: Any) -> Any:
    """Two ``PrepResult``s of disjoint datasets as one (the summary lists both)."""
    from data_prep import writer

    return writer.PrepResult(
        {**a.datasets, **b.datasets}, a.tasks_total + b.tasks_total, a.tasks_run + b.tasks_run,
        a.rows_written + b.rows_written, a.job_seconds + b.job_seconds, a.seconds + b.seconds,
        a.failed + b.failed,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Generate the synthetic raw datasets (no shards).")
    parser.add_argument("out_raw")
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--h36m-layout", choices=H36M_LAYOUTS, default="npz")
    parser.add_argument("--coco", action="store_true", help="also render the street (COCO-like) set")
    parser.add_argument("--lab-pose-share", type=float, default=posebank.LAB_POSE_SHARE)
    parser.add_argument("--composed-share", type=float, default=posebank.COMPOSED_SHARE)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    preset = dict(SIZES[args.size])
    trials = preset.pop("lab_trials")
    generate(args.out_raw, **preset, seed=args.seed, lab_trials=trials, h36m_layout=args.h36m_layout,
             coco_images=COCO_IMAGES[args.size] if args.coco else 0, num_workers=args.workers,
             lab_pose_share=args.lab_pose_share, composed_share=args.composed_share,
             force=args.force)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
