"""The ``pose3d`` command. Each subcommand lives in its own module with ``register(subparsers)``;
modules import heavy libraries (torch, ray) inside their handlers so ``pose3d --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from pose3d.cli.errors import UserError
from pose3d.infra.ray_session import Interrupted

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "pose3d.cli.prep",
    "pose3d.cli.demo",
    "pose3d.cli.train",
    "pose3d.cli.submit",
    "pose3d.cli.eval",
    "pose3d.cli.predict",
    "pose3d.cli.export",
    "pose3d.cli.tune",
    "pose3d.cli.bench",
    "pose3d.cli.weights",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose3d",
        description="Weakly-supervised 3D human pose estimation (Zhou et al., ICCV 2017) on Ray: "
        "prepare datasets as Parquet shards, train with Ray Train, search with Ray Tune, evaluate.",
    )
    from pose3d import __version__

    parser.add_argument("--version", action="version", version=f"pose3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        print(f"pose3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print(f"pose3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
