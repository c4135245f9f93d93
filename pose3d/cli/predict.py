"""``pose3d predict``: images (files, folders, globs) -> each person's 2D and 3D pose, as JSON and a
figure per image, and a contact sheet; one model load, crops batched, in this process or on Ray.

The command line only: arguments, errors as ``UserError``, progress and printing. The work is
``pose3d.eval``'s (``photos``, ``predict``, ``batch``, ``report``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from pose3d import storage
from pose3d.cli.common import load_checkpoint_model, torch_device
from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import add_ray_arguments

DESCRIPTION = """\
Predict the 2D and 3D pose of every person in images: one model load, the people's crops batched
through the network (--batch crops per forward pass), on CPU or GPU, or on Ray with --ray."""

EPILOG = """\
images:
  files, folders (their .jpg .jpeg .png .bmp .tif .tiff .webp files, recursively) and glob patterns
  ('photos/**/*.jpg', quoted so pose3d expands them), each image once; files inside --out are left
  out. A file that cannot be read is skipped with a warning; no image at all is an error.

person boxes (the network expects one person filling a crop):
  --boxes FILE      COCO format, several people per image:
                    - detections, a list of {image_id, bbox [x, y, w, h], score, category_id}
                      (COCO results; mmpose's test_coco_det_AP_H_56.json), boxes with score below
                      --min-score (default 0.5) left out;
                    - or keypoint annotations (person_keypoints_val2017.json): their 'annotations'
                      bboxes, crowd regions left out.
                    Only category 1 (person). Images are matched by image_id through a COCO 'images'
                    list (file_name <-> id: the boxes file's own, or --image-ids FILE), else by an
                    entry's own 'file_name', else by an id equal to the file's stem or its number
                    (000000000785.jpg is image 785). An image with no box is skipped, with the reason.
  --box X1 Y1 X2 Y2 one person's box in image px, for a single image.
  neither           the whole image is the person. An image that does not look like a person crop
                    gets a warning: wider than 1.25 x its height, or the predicted skeleton spans
                    less than 40 % of its longer side, or the joints' median heatmap peak is below
                    0.2 (the network finds no clear joints; an untrained network usually does).

outputs, per image (OUT = --out):
  OUT/<stem>.json   image, width, height, boxes_from, joint_names, units, warnings, and per person:
                    box [x1, y1, x2, y2] (image px), box_score, joints_2d_px (16 x [x, y], the
                    original image's px, pixel centres at integers), joint_scores (16 heatmap peaks),
                    joints_3d_mm (16 x [x, y, z], mm from the pelvis, camera axes: x right, y down,
                    z away; scaled to the canonical skeleton, 4297 mm of bones).
  OUT/<stem>.png    the image with each person's box (numbered) and 2D skeleton, beside each
                    person's 3D view (ticks in mm from the pelvis).
  Two images with the same stem (a/img.jpg, b/img.jpg) are named by their path from the folder they
  share, '/' as '__': a__img, b__img (img_jpg, img_png when only the ending differs).
  --sheet FILE      one contact sheet of the figures (up to --sheet-max, spread over the run).

Progress (images, img/s) goes to stderr, then a summary: images, people, skipped images and why.
--ray: images through Ray Data: read and crop in CPU tasks, a pool of model actors (one per GPU, or
--actors on CPU), outputs written by CPU tasks; on a cluster the images and --out must be on storage
every node sees."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="2D + 3D pose of the people in images (files, folders, globs): JSON, figures, a sheet",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (local or s3://...)")
    p.add_argument("--out", default="predictions", help="output folder (default predictions)")
    boxes = p.add_mutually_exclusive_group()
    boxes.add_argument("--boxes", metavar="FILE", help="COCO detections or keypoint annotations (see below)")
    boxes.add_argument(
        "--box",
        nargs=4,
        type=float,
        metavar=("X1", "Y1", "X2", "Y2"),
        help="one person's box in image px (a single image only)",
    )
    p.add_argument(
        "--image-ids", metavar="FILE", help="COCO annotation file mapping file names to --boxes ids"
    )
    p.add_argument(
        "--min-score", type=float, default=0.5, help="leave out detections scored below this (default 0.5)"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=1.1,
        help="the network sees a square of this many times a box's longer side (default 1.1)",
    )
    p.add_argument("--flip-test", action="store_true", help="average with the mirrored crops' outputs")
    p.add_argument(
        "--batch", type=int, default=16, help="crops per forward pass, images per step (default 16)"
    )
    p.add_argument(
        "--device", help="torch device (default cuda when present, else cpu; with --ray: cpu or cuda)"
    )
    p.add_argument("--sheet", metavar="FILE", help="also write a contact sheet of the figures (.png, .jpg)")
    p.add_argument("--sheet-max", type=int, default=64, help="figures on the sheet at most (default 64)")
    p.add_argument("--json-only", action="store_true", help="no figures (they take most of the time on CPU)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (large sets, clusters)")
    p.add_argument("--actors", type=int, help="with --ray: model actors (default one per GPU, or 1 on CPU)")
    p.add_argument(
        "--cpus-per-actor", type=float, default=2.0, help="with --ray: CPUs of a CPU model actor (default 2)"
    )
    add_ray_arguments(p)
    p.set_defaults(handler=run_predict)


class Progress:
    """``predict: done/total images, R img/s, about S s left`` on stderr at most every ``every_s``
    seconds and at the end; the rate counts from the first finished batch, so start-up (model
    loading, Ray) does not skew it."""

    def __init__(self, total: int, every_s: float = 5.0) -> None:
        self.total, self.every_s = total, every_s
        self.last = time.perf_counter()
        self.first: tuple[float, int] | None = None

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, done)
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        line = f"predict: {done}/{self.total} images"
        t0, n0 = self.first
        if now - t0 >= 1.0 and done > n0:  # a rate over less than a second is noise
            rate = (done - n0) / (now - t0)
            line += f", {rate:.1f} img/s"
            if done < self.total:
                line += f", about {(self.total - done) / rate:.0f} s left"
        print(line, file=sys.stderr, flush=True)


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _warn(message: str) -> None:
    print(f"pose3d predict: warning: {message}", file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace) -> None:
    if not args.margin > 0:
        raise UserError(f"--margin must be positive, got {args.margin}")
    for flag in ("batch", "sheet_max", "actors"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.box:
        x1, y1, x2, y2 = args.box
        if not (x2 > x1 and y2 > y1):
            raise UserError(f"--box {x1:g} {y1:g} {x2:g} {y2:g}: needs x2 > x1 and y2 > y1")
    if args.image_ids and not args.boxes:
        raise UserError("--image-ids maps file names to the ids of a --boxes file: give --boxes too")
    if args.sheet and args.json_only:
        raise UserError("--sheet shows the figures, which --json-only leaves out")
    if args.sheet and Path(args.sheet).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"--sheet {args.sheet}: the sheet must end in .png, .jpg or .jpeg")
    if Path(args.out).suffix.lower() in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        raise UserError(
            f"--out {args.out}: --out names a folder (OUT/<image stem>.png and .json per image); "
            "give a folder name"
        )


def _plan(args: argparse.Namespace) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """The image rows to run and the images skipped before running (name, reason)."""
    from pose3d.eval import photos

    exclude = None if storage.is_uri(args.out) else args.out
    listing = photos.list_images(args.images, exclude=exclude)
    for arg, why in listing.problems:
        _warn(f"{arg}: {why}")
    if not listing.images:
        named = "; ".join(f"{arg}: {why}" for arg, why in listing.problems)
        raise UserError(f"no images to predict ({named})")
    if args.box and len(listing.images) > 1:
        raise UserError(
            f"--box is one person's box in one image, but {len(listing.images)} images were given; "
            "use --boxes FILE for several images"
        )
    names = photos.output_names(listing.images)
    skipped: list[tuple[str, str]] = [(arg, why) for arg, why in listing.problems]
    if args.boxes:
        try:
            found = photos.load_person_boxes(args.boxes, args.min_score, args.image_ids)
        except photos.BoxesFileError as err:
            raise UserError(str(err)) from None
        source = f"{Path(args.boxes).name} ({found.kind}" + (
            f", score >= {args.min_score:g})" if found.kind == "detections" else ")"
        )
        keep_images, keep_names, keep_boxes = [], [], []
        for image, name in zip(listing.images, names, strict=True):
            b, s, why = found.lookup(image)
            if why:
                _warn(f"skipped {image}: {why}")
                skipped.append((str(image), why))
                continue
            keep_images.append(image)
            keep_names.append(name)
            keep_boxes.append((b, s))
        if not keep_images:
            raise UserError(f"--boxes {args.boxes}: no box for any of the {len(names)} images")
        return photos.image_rows(keep_images, keep_names, keep_boxes, source), skipped
    if args.box:
        import numpy as np

        given = [(np.asarray([args.box], np.float64), np.full(1, np.nan))]
        return photos.image_rows(listing.images, names, given, "--box"), skipped
    return photos.image_rows(listing.images, names, [None] * len(names), "whole image"), skipped


def _write_sheet(args: argparse.Namespace, names: list[str]) -> str | None:
    """The contact sheet of up to --sheet-max figures, spread evenly over the run."""
    import cv2
    import numpy as np

    from pose3d.eval.report import photo_sheet

    if not names:
        return None
    pick = np.unique(np.linspace(0, len(names) - 1, min(len(names), args.sheet_max)).round().astype(int))
    figures = [storage.read_bytes(storage.join(storage.absolute(args.out), f"{names[i]}.png")) for i in pick]
    sheet = photo_sheet(figures, [names[i] for i in pick])
    ok, buf = cv2.imencode(Path(args.sheet).suffix.lower(), sheet)
    if not ok:
        raise UserError(f"--sheet {args.sheet}: could not encode the sheet")
    storage.write_bytes(storage.absolute(args.sheet), buf.tobytes())
    return args.sheet


def run_predict(args: argparse.Namespace) -> int:
    _check_args(args)
    rows, skipped = _plan(args)  # listing and boxes first: their errors need no model

    from pose3d.eval import photos

    if args.ray:  # the actors' device: the driver (a cluster's head) may have no GPU itself
        if args.device not in (None, "cpu", "cuda"):
            raise UserError(f"--device {args.device}: with --ray, cpu or cuda (the model actors' device)")
        device = "cpu"
    else:
        device = torch_device(args.device)
    model = load_checkpoint_model(args.checkpoint, device)  # checked before any Ray start
    out = storage.absolute(args.out)
    common = {"flip_test": args.flip_test, "margin": args.margin, "figures": not args.json_only}
    if args.ray:
        import ray

        from pose3d.eval.batch import predict_photos_ray
        from pose3d.infra.ray_session import init_ray

        init_ray(args.address, args.num_cpus)
        use_gpu = None if args.device is None else args.device == "cuda"
        if use_gpu and not ray.cluster_resources().get("GPU"):
            raise UserError("--device cuda: the Ray cluster has no GPU")
        batches = predict_photos_ray(
            storage.absolute(args.checkpoint),
            rows,
            out,
            input_size=model.config.input_size,
            batch_size=args.batch,
            actors=args.actors,
            cpus_per_actor=args.cpus_per_actor,
            use_gpu=use_gpu,
            **common,
        )
        engine = "Ray Data"
    else:
        import torch

        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
        batches = photos.predict_photos(
            model, rows, out, device=device, batch_size=args.batch, autocast=autocast, **common
        )
        engine = device
    print(
        f"predict: {_count(len(rows), 'image')} on {engine}, batches of {args.batch}",
        file=sys.stderr,
        flush=True,
    )
    progress = Progress(len(rows))
    start = time.perf_counter()
    done, people, written, full_frames = 0, 0, [], 0
    for batch in batches:
        for i in range(len(batch["name"])):
            image = str(batch["image"][i])
            if batch["status"][i] != "ok":
                _warn(f"skipped {image}: {batch['reason'][i]}")
                skipped.append((image, str(batch["reason"][i])))
                continue
            people += int(batch["people"][i])
            written.append(str(batch["name"][i]))
            if batch["signs"][i]:
                full_frames += 1
                _warn(
                    f"{image}: no person box given, and it does not look like a person crop "
                    f"({batch['signs'][i]}); the whole image went to the network as one person: pass "
                    "person boxes with --boxes FILE (COCO detections or keypoint annotations) or --box"
                )
        done += len(batch["name"])
        progress(done)
    seconds = time.perf_counter() - start

    print(
        f"predict: {_count(len(written), 'image')}, {_count(people, 'person', 'people')} in {seconds:.1f} s "
        f"({done / max(seconds, 1e-9):.1f} img/s, {engine}); outputs in {args.out}",
        file=sys.stderr,
    )
    if skipped:
        reasons = Counter(why for _, why in skipped)
        print(
            f"predict: skipped {len(skipped)}: " + "; ".join(f"{n} x {why}" for why, n in reasons.items()),
            file=sys.stderr,
        )
        for image, why in skipped[:10]:
            print(f"  {image}: {why}", file=sys.stderr)
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more (warnings above)", file=sys.stderr)
    if full_frames:
        print(
            f"predict: {_count(full_frames, 'image')} did not look like person crops (warnings above): "
            "pass --boxes",
            file=sys.stderr,
        )
    sheet = _write_sheet(args, written) if args.sheet else None
    print(
        f"wrote JSON{'' if args.json_only else ' and PNG'} of {_count(len(written), 'image')} to {args.out}"
    )
    if sheet:
        print(f"contact sheet: {sheet}")
    if not written:
        raise UserError(f"no image could be predicted ({len(skipped)} skipped)")
    return 0
