"""``pose3d bench NAME``: benchmarks that print figures (never asserted by tests).

Each benchmark is a module ``pose3d.cli.bench.<name>`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib

#: Benchmark name -> module. Modules import torch and ray inside run(), so --help stays fast.
BENCHMARKS: dict[str, str] = {
    "loss": "pose3d.cli.bench.loss",
    "prep": "pose3d.cli.bench.prep",
    "model": "pose3d.cli.bench.model",
    "train": "pose3d.cli.bench.train",
    "gpu-check": "pose3d.cli.bench.gpu_check",
    "data": "pose3d.cli.bench.data",
    "checkpoint": "pose3d.cli.bench.checkpoint",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="print throughput figures", description="Benchmarks that print figures."
    )
    names = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = names.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
