"""``pose3d import-weights``: the authors' released model (``hgreg-3d.pth``) -> a pose3d checkpoint
folder that ``pose3d eval``, ``pose3d predict``, ``pose3d export`` and ``train.init_checkpoint`` use
like any other. The work is ``pose3d.model.authors``'s."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from pose3d.cli.errors import UserError

EPILOG = """\
The file is read without the authors' code and without running anything it names: only the
classes of their network (HourglassNet3D, Hourglass, Residual and torch's layers) and tensors are
accepted; any other name is refused. Both torch file layouts (PyTorch 0.4's and the zip one) and
plain state dicts are read. The model config (stacks, modules, features, regression modules, input
size) is read off the weights' shapes.

Their demo feeds BGR images / 256; pose3d feeds RGB / 255. The first convolution is rewritten
(channels reordered, scaled by 255/256), so a photo through pose3d gives their outputs for it.
Their depth output is pose3d's normalized depth (root-relative, [-1, 1] over the heatmap); pose3d
eval turns it into mm by the paper's protocol (bone lengths summing to 4296.99 mm).

Example:
  pose3d import-weights hgreg-3d.pth --out checkpoints/authors
  pose3d eval --checkpoint checkpoints/authors --data shards/h36m/test"""

#: Written beside model.pt: where the weights came from and what was changed.
SUMMARY_FILE = "imported.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-weights",
        help="convert the authors' released model (hgreg-3d.pth) to a pose3d checkpoint",
        description="Read the authors' released checkpoint of the network (Zhou et al.'s PyTorch code) "
        "and write a pose3d checkpoint folder (model.pt + imported.json).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="the authors' checkpoint, e.g. hgreg-3d.pth")
    p.add_argument("--out", required=True, help="checkpoint folder to write (must not hold a model.pt)")
    p.add_argument("--force", action="store_true", help="overwrite a model.pt already in --out")
    p.set_defaults(handler=run)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    from pose3d.model.authors import AuthorsWeightsError, import_authors_weights
    from pose3d.model.io import MODEL_FILE, UnsafeCheckpointError, save_model
    from pose3d.model.net import count_parameters

    source, out = Path(args.file), Path(args.out)
    if (out / MODEL_FILE).exists() and not args.force:
        raise UserError(f"--out {out} already holds a {MODEL_FILE}; choose another folder or pass --force")
    try:
        model, summary = import_authors_weights(source)
    except (FileNotFoundError, UnsafeCheckpointError, AuthorsWeightsError) as err:
        raise UserError(str(err)) from None
    except OSError as err:  # unreadable (permissions, a folder)
        raise UserError(f"{source}: cannot read ({err.strerror or err})") from None
    config = summary["model_config"]
    try:
        save_model(out, model, config)
        record = {
            "source": str(source.resolve()),
            "sha256": _sha256(source),
            "tensors": summary["tensors"],
            "model_config": asdict(config),
            "changes": "first convolution: input channels BGR -> RGB, weights x 255/256 (pose3d feeds "
            "RGB / 255, the authors BGR / 256)",
        }
        (out / SUMMARY_FILE).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"--out {out}: cannot write ({err.strerror or err})") from None
    print(
        f"imported {source}: {summary['tensors']} tensors, {count_parameters(model):,} parameters; "
        f"{config.num_stacks} stack(s), {config.num_modules} module(s), {config.num_features} features, "
        f"{config.num_reg_modules} regression module(s), input {config.input_size} px"
    )
    print(f"wrote {out / MODEL_FILE} and {out / SUMMARY_FILE}")
    return 0
