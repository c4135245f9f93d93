"""``pose3d export``: a checkpoint's network as a TorchScript or ONNX file for inference without
pose3d, checked against the eager network.

The command line only: arguments, errors as ``UserError``, printing. The work is
``pose3d.model.export``'s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from pose3d import storage
from pose3d.cli.errors import UserError

#: ``pose3d.model.export.FORMATS``, repeated here because that module imports torch (slow --help).
FORMATS = ("torchscript", "onnx")

EPILOG = """\
formats:
  torchscript  a TorchScript module (torch.jit.trace) for Python or C++ libtorch, torch only:
                 heatmaps, depth = torch.jit.load(FILE)(image)
  onnx         an ONNX model (opset 17) for onnxruntime, TensorRT, OpenVINO...; needs the export
               extra (pip install 'pose3d[export]': onnx, onnxruntime):
                 heatmaps, depth = onnxruntime.InferenceSession(FILE).run(None, {"image": image})

input (batch size B free, S = the checkpoint's input_size: 256 paper, 128 small, 64 demo):
  image     float32 (B, 3, S, S)   the person's square crop, RGB (not BGR), values in [0, 1]
                                   (uint8 / 255), channels first
outputs (O = S / 4, the checkpoint's output_size; 16 joints in pose3d.skeleton.JOINT_NAMES order):
  heatmaps  float32 (B, 16, O, O)  the last stack's joint heatmaps (the earlier stacks' are left out:
                                   inference decodes the last)
  depth     float32 (B, 16)        normalized depth: [-1, 1] over the output map, pelvis at 0

decode (numpy, outside the exported graph; S and O as above):
  from pose3d import decode, geometry
  joints_out, peak = decode.heatmaps_to_joints(heatmaps)       # (B, 16, 2) output px, 1/4 px steps
  joints_in = geometry.output_to_input_px(joints_out, S // O)  # (B, 16, 2) crop px
  pose_mm = decode.to_3d_mm(joints_out, depth, O)              # (B, 16, 3) mm, pelvis-relative, at
                                                               # the canonical skeleton's bone lengths
The file records the model config, the shapes above and the joint names (TorchScript: extra file
pose3d.json; ONNX: metadata_props key "pose3d").

After writing, the command runs the file (torch.jit.load or onnxruntime, on the CPU) and the
checkpoint's network on the same 3 random images (the export traced 2, so this also proves the batch
axis free) and prints the largest absolute difference; above 1e-4 it exits 1. --no-check skips it."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a checkpoint's network as a TorchScript or ONNX file (dynamic batch)",
        description="Export the network of a checkpoint folder, in eval mode with a dynamic batch axis, "
        "as a TorchScript or ONNX file that runs without pose3d; then check the file's outputs "
        "against the network's.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="checkpoint folder holding model.pt (local or s3://...)"
    )
    p.add_argument(
        "--format",
        required=True,
        metavar="{" + ",".join(FORMATS) + "}",
        help="torchscript (torch.jit.load) or onnx (onnxruntime and others)",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE", help="file to write (local path or s3://...; folders created)"
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the exported file against the network (the parity check)",
    )
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    fmt = args.format.lower()
    if fmt not in FORMATS:
        raise UserError(f"--format {args.format}: unknown format; choose one of {', '.join(FORMATS)}")
    from pose3d.model import export

    try:
        export.require_dependencies(fmt, run_exported=not args.no_check)
    except export.ExportDependencyError as err:
        hint = " or pass --no-check" if err.missing == ["onnxruntime"] else ""
        raise UserError(f"{err}{hint}") from None
    _check_writable(args.out)
    model = _load_model(args.checkpoint)

    from pose3d import __version__, skeleton

    metadata = {
        "pose3d_version": __version__,
        "checkpoint": args.checkpoint,
        "joint_names": list(skeleton.JOINT_NAMES),
    }
    start = time.perf_counter()
    data = export.export_bytes(model, fmt, metadata)
    seconds = time.perf_counter() - start
    fs, local_path = storage.resolve(args.out)
    try:
        if fs.type_name == "local":
            export.save_exported(data, local_path)
        else:
            storage.write_bytes(args.out, data)
    except OSError as err:
        raise UserError(f"--out {args.out}: cannot write it ({err})") from None

    if fmt == "onnx":
        inputs, outputs = export.onnx_graph_specs(data)
        kind = f"ONNX opset {export.ONNX_OPSET}"
    else:
        inputs, outputs = export.io_specs(model.config)
        kind = "TorchScript"
    print(f"wrote {args.out}: {_size(len(data))}, {kind}, exported in {seconds:.1f} s")
    for role, specs in (("input ", inputs), ("output", outputs)):
        for spec in specs:
            print(f"  {role}  {spec.name:<8}  {spec.dtype} ({', '.join(str(d) for d in spec.shape)})")

    if args.no_check:
        print("parity check skipped (--no-check)")
        return 0
    # The file as written (read back, also from an object store), not the bytes in memory.
    parity = export.check_parity(model, storage.read_bytes(args.out), fmt)
    verdict = "within" if parity.ok() else "ABOVE"
    print(
        f"parity: {_runtime(fmt)} vs the eager network on {parity.batch_size} random images "
        f"(traced at batch {export.TRACE_BATCH}): max abs difference {parity.max_abs:.1e} "
        f"(heatmaps {parity.max_abs_heatmaps:.1e}, depth {parity.max_abs_depth:.1e}), "
        f"{verdict} {export.PARITY_TOLERANCE:.0e}"
    )
    if not parity.ok():
        print(
            f"pose3d export: error: the exported file's outputs differ from the network's by "
            f"{parity.max_abs:.1e} (> {export.PARITY_TOLERANCE:.0e}); {args.out} is kept for inspection",
            file=sys.stderr,
        )
        return 1
    return 0


def _check_writable(out: str) -> None:
    """Refuse, before any work, a local ``--out`` that is a folder or whose folder cannot be created
    or written to (object stores report at the write)."""
    fs, path = storage.resolve(out)
    if fs.type_name != "local":
        return
    if os.path.isdir(path):
        raise UserError(
            f"--out {out}: is a folder; give a file name, e.g. {os.path.join(out, 'pose3d.onnx')}"
        )
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out}: cannot create the folder {folder}: a file is in the way") from None
    except OSError as err:
        raise UserError(f"--out {out}: cannot write in {folder} ({err.strerror or err})") from None


def _load_model(checkpoint: str):
    from pose3d.model.io import load_model

    if not storage.is_uri(checkpoint):
        if not os.path.exists(checkpoint):
            raise UserError(f"{checkpoint}: no such checkpoint folder")
        if os.path.isfile(checkpoint):
            raise UserError(
                f"{checkpoint}: is a file; CKPT is the checkpoint folder that holds model.pt "
                f"(e.g. {os.path.dirname(checkpoint) or '.'})"
            )
    try:
        return load_model(checkpoint, map_location="cpu")
    except FileNotFoundError as err:  # the folder has no model.pt: io names it
        raise UserError(str(err)) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as err:
        raise UserError(
            f"{checkpoint}: cannot load a pose3d checkpoint ({type(err).__name__}: {err})"
        ) from None


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB ({n_bytes:,} bytes)"


def _runtime(fmt: str) -> str:
    if fmt == "onnx":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    import torch

    return f"torch.jit.load (torch {torch.__version__})"
