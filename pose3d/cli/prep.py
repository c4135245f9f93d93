"""``pose3d prep``: turn raw datasets into Parquet shards (a Ray Data job), and inspect shards.

    pose3d prep h36m  --raw /data/h36m --out s3://bucket/pose3d [--split train test] [-O every=5]
    pose3d prep mpii  --raw /data/mpii --out ./shards
    pose3d prep 3dhp  --raw /data/3dhp --out ./shards
    pose3d prep coco  --raw /data/coco --out ./shards [--split train val] [-O annotation=FILE]
    pose3d prep custom --reader my.module --raw DIR --out ./shards --split train
    pose3d prep synthetic --out ./shards [--coco]
    pose3d prep inspect ./shards/h36m/train --out contact.png

Heavy libraries (Ray, the readers) are imported inside the handlers so ``pose3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from typing import Any

from pose3d.cli.errors import UserError

#: Reader subcommand -> (reader name in pose3d.schema.READERS, default splits, one-line help).
READER_COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "h36m": ("h36m", ("train", "test"), "Human3.6M (official videos + CDF, or mmpose's npz) -> shards"),
    "mpii": (
        "mpii",
        ("train", "val"),
        "MPII Human Pose (official .mat, pose-hg-train .h5 or HRNet/mmpose JSON) -> shards",
    ),
    "3dhp": (
        "3dhp",
        ("test",),
        "MPI-INF-3DHP (official test or training set, or mmpose's npz; --split train for training) -> shards",
    ),
    "coco": ("coco", ("train", "val"), "COCO keypoints (person_keypoints_*.json + images) -> 2D shards"),
}

#: The synthetic pose gap's defaults (lab pose share, composed share) as --help states them: the
#: values of data_prep.synthetic.posebank.LAB_POSE_SHARE / COMPOSED_SHARE (a test keeps them equal;
#: importing the generator here would slow every ``pose3d`` command).
_GAP_DEFAULTS = (0.6, 0.9)

_LAYOUT_HELP = (
    "Output: OUT/<dataset>/<split>/<task>-<k>.parquet, with done-markers, quarantine reports and "
    "prep_summary.json beside them. A re-run skips finished tasks (resume after a crash)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prep",
        help="prepare datasets as Parquet shards (Ray Data), or inspect shards",
        description="Convert raw datasets into Parquet shards of person crops and labels with a "
        "resumable Ray Data job, or inspect a shard set. " + _LAYOUT_HELP,
    )
    sub = parser.add_subparsers(dest="prep_command", metavar="DATASET", required=True)
    for name, (reader, splits, help_text) in READER_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=f"{help_text}. {_LAYOUT_HELP}", add_help=False)
        p.add_argument(
            "-h", "--help", action=_ReaderHelp, reader=reader, help="show this help and the reader's options"
        )
        p.add_argument("--raw", required=True, metavar="DIR", help="root folder of the raw dataset (local)")
        _add_job_arguments(p, splits)
        p.set_defaults(handler=_run_reader, reader=reader)

    p = sub.add_parser(
        "custom",
        help="any reader module following data_prep/records.py -> shards",
        description="Run the shard writer with a reader module of your own (list_tasks, read_task; "
        f"see data_prep/records.py). {_LAYOUT_HELP}",
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_ReaderHelp, reader=None, help="show this help")
    p.add_argument(
        "--reader", required=True, metavar="MODULE", help="importable module name, e.g. my_pkg.reader"
    )
    p.add_argument("--raw", required=True, metavar="DIR", help="root folder of the raw data (local)")
    _add_job_arguments(p, None)
    p.set_defaults(handler=_run_reader)

    p = sub.add_parser(
        "synthetic",
        help="generate the synthetic lab / wild / wild-test (with --coco: street) data, prepare its shards",
        description="Generate synthetic raw data in the real datasets' formats "
        "(data_prep.synthetic.prepare), then run the readers and the writer on it. " + _LAYOUT_HELP,
    )
    p.add_argument("--out", required=True, metavar="URI", help="output folder or URI (s3://bucket/prefix)")
    p.add_argument(
        "--size", default=None, help="tiny, small or medium (the generator's presets; default small)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed of the generator (default 0)")
    p.add_argument("--raw", default=None, metavar="DIR", help="where the raw data goes (default OUT/raw)")
    p.add_argument(
        "--coco",
        action="store_true",
        help="also render a COCO-like street set (several, smaller people per image, some crowds; COCO "
        "keypoints JSON read by the coco reader) into OUT/synthetic_coco (train, val): a third source, "
        "2D only. Off by default",
    )
    p.add_argument(
        "--lab-pose-share",
        type=float,
        default=None,
        metavar="S",
        help="the pose gap: the lab set draws only from the bank's most ordinary pose clusters holding "
        f"at least this share of its poses (0 < S <= 1; 1 = no gap; default {_GAP_DEFAULTS[0]}, set from "
        "the gap measured on real data, docs/synthetic.md)",
    )
    p.add_argument(
        "--composed-share",
        type=float,
        default=None,
        metavar="S",
        help="the pose gap: this share of the wild, wild-test (and street) poses is composed from the "
        "bank (limbs of different frames, mirrored, within the bank's joint limits); the rest come from "
        f"all its clusters (0 <= S <= 1; default {_GAP_DEFAULTS[1]})",
    )
    _add_writer_arguments(p)
    p.set_defaults(handler=_run_synthetic)

    p = sub.add_parser(
        "inspect",
        help="count rows per dataset/split/subject/action and draw a contact sheet",
        description="Check a shard set's schema, print its row counts per dataset, split, subject and "
        "action, and write a contact sheet of random crops with their 2D joints drawn "
        "(right side red, left blue, centre green; joints that are not visible are not drawn).",
    )
    p.add_argument("shards", nargs="+", metavar="SHARDS", help="shard folders, files or URIs")
    p.add_argument(
        "--out", default="contact.png", metavar="PNG", help="contact sheet path (default %(default)s)"
    )
    p.add_argument(
        "--n", type=int, default=16, help="number of crops on the sheet (default %(default)s; 0: none)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed for picking the crops (default %(default)s)"
    )
    p.set_defaults(handler=_run_inspect)


class _ReaderHelp(argparse.Action):
    """``--help`` that also lists the reader's options, importing the reader only when asked."""

    def __init__(
        self, option_strings: list[str], dest: str, reader: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)
        self.reader = reader

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None
    ):
        if self.reader is not None:
            parser.epilog = _reader_options_text(self.reader)
        parser.formatter_class = _KeepLinesFormatter
        parser.print_help()
        parser.exit()


class _KeepLinesFormatter(argparse.HelpFormatter):
    """Wraps each paragraph line on its own and keeps indented lines (the reader options) as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line
            if line.startswith(" ")
            else super(_KeepLinesFormatter, self)._fill_text(line, width, indent)
            for line in text.splitlines()
        )


def _reader_options_text(reader: str) -> str:
    from pose3d import schema

    module_name = schema.READERS.get(reader, reader)
    try:
        module = importlib.import_module(module_name)
        params = _reader_parameters(module.list_tasks)
    except Exception as err:  # noqa: BLE001 - help must not fail because a reader cannot be imported
        return f"reader options: unavailable ({module_name}: {type(err).__name__}: {err})"
    # A reader may describe the raw folder it expects (RAW_LAYOUT: indented lines are kept as they are).
    layout = getattr(module, "RAW_LAYOUT", None)
    lines = [layout.rstrip(), ""] if layout else []
    lines += [f"reader options (-O KEY=VALUE, see {module_name}):"]
    lines += [f"  {name}={param.default!r}" for name, param in params.items()]
    return "\n".join(lines)


def _reader_parameters(list_tasks: Any) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(list_tasks).parameters.values())[2:]  # after (raw_root, split)
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _add_writer_arguments(p: argparse.ArgumentParser) -> None:
    from pose3d import schema

    p.add_argument(
        "--shard-rows",
        type=int,
        default=1000,
        metavar="N",
        help="rows per shard: tasks with fewer rows are packed together, whole, into shards of up to N "
        "rows; a larger task writes shards of N rows of its own (default %(default)s)",
    )
    p.add_argument(
        "--crop-size",
        type=int,
        default=schema.DEFAULT_CROP_SIZE,
        metavar="PX",
        help=f"square crop side in px; the person box spans crop/{schema.CROP_MARGIN} (default %(default)s)",
    )
    p.add_argument(
        "--jpeg-quality", type=int, default=90, metavar="Q", help="JPEG quality 1-100 (default %(default)s)"
    )
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        metavar="N",
        help="logical CPUs of a local Ray (default: cores, >= 4)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster instead of starting one (or RAY_ADDRESS); OUT must then be "
        "visible to every node (NFS, s3://)",
    )
    p.add_argument(
        "-O",
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a reader option (repeatable); VALUE is read as YAML (5, true, S9,S11)",
    )
    # Fault injection for the resume test; not a user option.
    p.add_argument("--crash-after-tasks", type=int, default=None, help=argparse.SUPPRESS)


def _add_job_arguments(p: argparse.ArgumentParser, splits: tuple[str, ...] | None) -> None:
    from pose3d import schema

    p.add_argument("--out", required=True, metavar="URI", help="output folder or URI (s3://bucket/prefix)")
    p.add_argument(
        "--split",
        nargs="+",
        choices=schema.SPLITS,
        default=list(splits) if splits else None,
        required=splits is None,
        help="splits to prepare" + (f" (default: {' '.join(splits)})" if splits else ""),
    )
    p.add_argument(
        "--stall-warn-s",
        type=float,
        default=300.0,
        metavar="S",
        help="warn, naming what Ray waits for, when no task finishes for S seconds (0: never; default 300)",
    )
    _add_writer_arguments(p)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["every=5", "subjects=S9,S11"]`` -> {"every": 5, "subjects": "S9,S11"} (values as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"-O {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def _setup_logging() -> None:
    logger = logging.getLogger("data_prep")
    if not any(getattr(h, "_pose3d_prep", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._pose3d_prep = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _writer_config(args: argparse.Namespace):
    from data_prep.writer import WriterConfig

    try:
        return WriterConfig(
            crop_size=args.crop_size, jpeg_quality=args.jpeg_quality, shard_rows=args.shard_rows
        )
    except ValueError as err:
        raise UserError(str(err)) from err


def _check_out(out: str) -> None:
    from pose3d.data import shards

    try:
        shards.resolve(out)
    except Exception as err:  # noqa: BLE001 - any failure to open the output is the user's to fix
        raise UserError(f"--out {out}: {err}") from err


#: Reader options that name a file (or, for ``images``, a folder) under the raw root: checked before
#: Ray starts, so a typo costs no cluster start-up.
PATH_OPTIONS = ("annotation", "npz", "cameras", "release", "val_annotation", "image_names")
FOLDER_OPTIONS = ("images",)


def check_inputs(raw: str, options: dict[str, Any]) -> None:
    """Raise UserError naming the path when ``--raw`` is not a readable folder, or a path-valued
    reader option (relative to it, or absolute) does not exist or cannot be read."""
    import os
    from pathlib import Path

    if not os.path.isdir(raw):
        raise UserError(f"--raw {raw}: no such folder")
    if not os.access(raw, os.R_OK | os.X_OK):
        raise UserError(f"--raw {raw}: the folder cannot be read (permissions)")
    for name in (*PATH_OPTIONS, *FOLDER_OPTIONS):
        value = options.get(name)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value) if Path(value).is_absolute() else Path(raw) / value
        want_folder = name in FOLDER_OPTIONS
        if not (path.is_dir() if want_folder else path.is_file()):
            kind = "folder" if want_folder else "file"
            raise UserError(f"-O {name}={value}: no such {kind} {path}")
        if not os.access(path, os.R_OK | (os.X_OK if want_folder else 0)):
            raise UserError(f"-O {name}={value}: {path} cannot be read (permissions)")


def _run_reader(args: argparse.Namespace) -> int:
    from data_prep import writer

    options = parse_options(args.options)
    _check_out(args.out)
    config = _writer_config(args)
    try:
        list_tasks, _, name = writer.resolve_reader(args.reader)
    except writer.ReaderUnavailable as err:
        raise UserError(str(err)) from err
    known = _reader_parameters(list_tasks)
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(list_tasks).parameters.values())
    unknown = sorted(set(options) - set(known))
    if unknown and not accepts_any:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for reader {name} (known: {', '.join(known) or 'none'})"
        )
    check_inputs(args.raw, options)
    _setup_logging()
    try:
        # The reader lists its tasks (opening the annotations) before Ray starts: a wrong path or
        # format fails in a second, not after Ray's start-up.
        result = writer.run_prep(
            args.reader,
            args.raw,
            args.out,
            args.split,
            reader_options=options,
            config=config,
            crash_after_tasks=args.crash_after_tasks,
            stall_warn_s=args.stall_warn_s,
            num_cpus=args.num_cpus,
            address=args.address,
        )
    except (OSError, ValueError) as err:  # unreadable raw data, unreachable output, bad options
        raise UserError(str(err)) from err
    status = _report(result)
    empty = writer.empty_splits(result, args.split, args.raw)
    if status == 0 and empty:
        raise UserError("no rows for a requested split: " + "; ".join(empty))
    return status


def _report(result: Any) -> int:
    from data_prep import writer

    for line in writer.iter_summary_lines(result):
        print(line)
    if result.failed:
        print(
            f"{len(result.failed)} task(s) failed (see quarantine.jsonl); run the command again to retry",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_synthetic(args: argparse.Namespace) -> int:
    import os

    from data_prep import writer

    _check_out(args.out)
    try:
        from data_prep.synthetic import prepare
    except ImportError as err:
        raise UserError(
            f"the synthetic generator is not available (data_prep.synthetic.prepare: {err})"
        ) from err
    options = parse_options(args.options)
    for name in ("size", "seed", "raw", "lab_pose_share", "composed_share"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.coco:
        options["coco"] = True
    options.update(crop_size=args.crop_size, jpeg_quality=args.jpeg_quality, shard_rows=args.shard_rows)
    options["num_cpus"] = args.num_cpus
    accepted = inspect.signature(prepare).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise UserError(f"synthetic: prepare() takes no option(s) {', '.join(unknown)}")
    if args.crash_after_tasks is not None:
        os.environ[writer.CRASH_ENV] = str(args.crash_after_tasks)
    _setup_logging()
    writer.ensure_ray(num_cpus=args.num_cpus, address=args.address)
    try:
        result = prepare(args.out, **options)  # prints its own progress and the writer's summary
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise UserError(f"synthetic: {err}") from err
    prep = result.get("prep") if isinstance(result, dict) else result
    if isinstance(prep, writer.PrepResult) and prep.failed:
        print(
            f"{len(prep.failed)} task(s) failed (see quarantine.jsonl); run the command again to retry",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from pose3d import schema
    from pose3d.data import shards
    from pose3d.data.inspect import format_counts, rows_per_group

    try:
        files = shards.list_shards(args.shards)
        shards.check_shards(files)
    except (shards.NoShardsError, schema.ShardSchemaError) as err:
        raise UserError(str(err)) from err
    counts, total = rows_per_group(files)
    print(format_counts(counts))
    print(f"{total} rows in {len(files)} shard(s)")
    if args.n > 0 and total > 0:
        drawn = write_contact_sheet(files, args.out, n=args.n, seed=args.seed)
        print(f"contact sheet of {drawn} crops: {args.out}")
    return 0


def write_contact_sheet(files: list[str], out: str, n: int = 16, seed: int = 0) -> int:
    """Draw ``n`` random rows (crops + 2D joints) of the shards into one PNG; returns how many."""

    from pose3d.data import shards
    from pose3d.image import decode_images
    from pose3d.viz import draw2d

    columns = ["image_jpeg", "joints_2d", "visible", "dataset", "subject", "action", "row_id"]
    data = shards.sample_rows(files, n, seed, columns)
    tiles, labels, skipped = [], [], []
    for k, jpeg in enumerate(data["image_jpeg"]):
        try:
            image = decode_images([jpeg], rgb=False)[0]
        except ValueError:  # a corrupt row is named, never fatal
            skipped.append(str(data["row_id"][k]))
            continue
        tiles.append(draw2d.draw_skeleton(image, data["joints_2d"][k], data["visible"][k]))
        labels.append(" ".join(x for x in (data["dataset"][k], data["subject"][k], data["action"][k]) if x))
    if skipped:
        print(
            f"skipped {len(skipped)} sampled row(s) whose image does not decode: {', '.join(skipped)}",
            file=sys.stderr,
        )
    if tiles:
        draw2d.save_image(out, draw2d.contact_sheet(tiles, labels=labels))
    return len(tiles)
