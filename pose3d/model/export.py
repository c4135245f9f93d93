"""Exporting the network for inference without pose3d: a TorchScript module (``torch.jit.load``, also
from C++ libtorch) or an ONNX model (onnxruntime, TensorRT, OpenVINO...), batch axis dynamic, and
checking an exported file against the eager network (``check_parity``).

The exported model is ``InferenceNet``: image (B, 3, S, S) float32 RGB in [0, 1] -> the last stack's
heatmaps (B, J, O, O) and the normalized depth (B, J). Decoding them into joints stays outside the
graph (``pose3d.decode``, a few numpy lines): the raw outputs let a caller read the peak heights as
confidences, or average an image's outputs with its mirror's before decoding, as ``--flip-test`` does.

Both formats come from tracing, which records exactly the operations one forward pass runs. The
network has no data-dependent control flow, so a trace is faithful for every batch; the one Python
branch it runs, ``PoseNet.forward``'s input check, is recorded as passed. The ONNX graph declares its
input's dtype and shape instead (runtimes check them); the TorchScript module calls a scripted copy
of the check (``_check_image``), which a trace keeps, since a wrong size does not always fail inside
the network (a (B, 3, S/2, 2S) image reaches the depth regressor's linear layer with the right size).

ONNX uses torch's TorchScript-based exporter (``dynamo=False``), not the ``torch.export``-based one
that is torch's default since 2.9: the latter needs ``onnxscript`` and ``onnx-ir`` on top of ``onnx``,
took 13 s (18 s for the first export in a process) for ``ModelConfig.small()`` where this one takes
0.6 s (2 s) on 2 CPU cores with torch 2.13, and writes the weights to a second ``.data`` file unless
told otherwise; both matched the eager network to ~5e-7 in onnxruntime.
The TorchScript-based exporter is deprecated; should a torch release drop it, ``_onnx_bytes`` is the
one place to change (``dynamo=True``, ``dynamic_shapes``, ``external_data=False``, onnxscript in the
``export`` extra).

May import: torch, numpy, ``pose3d.model``; onnx and onnxruntime (the ``export`` extra) inside
functions only, so pose3d works without them.
"""

from __future__ import annotations

import copy
import functools
import importlib
import io
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pose3d.model.net import ModelConfig, PoseNet

#: Export formats, in the order ``pose3d export --help`` lists them.
FORMATS = ("torchscript", "onnx")
#: Names of the exported model's input and outputs (the ONNX graph's; TorchScript returns a tuple).
INPUT_NAME = "image"
OUTPUT_NAMES = ("heatmaps", "depth")
#: The dynamic batch axis's name in the ONNX graph and in the recorded shapes.
BATCH_AXIS = "batch"
#: Batch size of the example input the network is traced with. Not 1: a trace at batch 1 could
#: specialize a size-1 axis; the parity check runs another size (``PARITY_BATCH``) to prove the
#: batch axis dynamic.
TRACE_BATCH = 2
PARITY_BATCH = 3
#: Largest absolute difference between eager and exported outputs that ``ParityResult.ok`` accepts.
PARITY_TOLERANCE = 1e-4
#: ONNX opset. 17 rather than the exporter's newest: every operator the network uses (Conv,
#: BatchNormalization, MaxPool, Resize, Gemm...) is in it, and older runtimes (TensorRT 8.6,
#: onnxruntime >= 1.13) read it.
ONNX_OPSET = 17
#: Where the export records the model config and the input/output contract: a TorchScript extra
#: file (``torch.jit.load(path, _extra_files={name: ""})``) and an ONNX ``metadata_props`` key.
TORCHSCRIPT_METADATA_FILE = "pose3d.json"
ONNX_METADATA_KEY = "pose3d"
#: The pip extra with what the ONNX format needs (onnx, onnxruntime).
EXPORT_EXTRA = "export"
INSTALL_HINT = f"pip install 'pose3d[{EXPORT_EXTRA}]'"


class ExportDependencyError(ImportError):
    """Packages the chosen format needs (onnx, onnxruntime) are not installed: ``missing`` names them,
    the message says how to install them."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


def _check_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """The image unchanged when it is float32 (B, 3, size, size); else ValueError saying what is
    wrong. TorchScript source (the exported module runs it), hence the plain string concatenation."""
    if image.dtype != torch.float32:
        raise ValueError("pose3d: the image must be float32 RGB in [0, 1] (uint8 images: divide by 255)")
    if image.dim() != 4 or image.size(1) != 3 or image.size(2) != size or image.size(3) != size:
        raise ValueError(
            "pose3d: the image must be (B, 3, " + str(size) + ", " + str(size) + "), got " + str(image.shape)
        )
    return image


@functools.cache
def _scripted_image_check() -> Callable[[torch.Tensor, int], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script, like torch.jit.trace
        return torch.jit.script(_check_image)


class InferenceNet(nn.Module):
    """``PoseNet`` as exported: image (B, 3, S, S) float32 RGB in [0, 1] -> (heatmaps (B, J, O, O)
    of the last stack, depth (B, J) in the normalized output frame: [-1, 1] over the output map,
    root at 0).

    Only the last stack's heatmaps: inference decodes those (``pose3d.eval.predict``); the earlier
    stacks' maps exist for intermediate supervision in training and are coarser estimates. Returning
    them too would make the number of outputs depend on ``num_stacks``, so every consumer would need
    the config to find the maps to decode.

    ``check_input``: check the image's dtype and shape in TorchScript code that a trace keeps (the
    TorchScript export; the ONNX graph declares them instead).
    """

    def __init__(self, net: PoseNet, check_input: bool = False) -> None:
        super().__init__()
        self.net = net
        self.check_input = check_input

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.check_input:
            image = _scripted_image_check()(image, self.net.config.input_size)
        out = self.net(image)
        assert out.depth is not None  # with_depth defaults to True
        return out.heatmaps[-1], out.depth


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, dtype and shape (``BATCH_AXIS`` for the dynamic batch axis)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


def io_specs(config: ModelConfig) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The exported model's contract for ``config``: (inputs, outputs)."""
    s, o, j = config.input_size, config.output_size, config.num_joints
    inputs = (TensorSpec(INPUT_NAME, "float32", (BATCH_AXIS, 3, s, s)),)
    outputs = (
        TensorSpec(OUTPUT_NAMES[0], "float32", (BATCH_AXIS, j, o, o)),
        TensorSpec(OUTPUT_NAMES[1], "float32", (BATCH_AXIS, j)),
    )
    return inputs, outputs


def check_format(fmt: str) -> None:
    """Raise ValueError naming the known formats unless ``fmt`` is one."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")


def require_dependencies(fmt: str, run_exported: bool = True) -> None:
    """Raise ``ExportDependencyError`` unless what ``fmt`` needs is installed: onnx to write an ONNX
    model, onnxruntime too to run it (``run_exported``: the parity check). TorchScript needs torch only."""
    check_format(fmt)
    if fmt != "onnx":
        return
    needed = ["onnx", "onnxruntime"] if run_exported else ["onnx"]
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportDependencyError(
            f"the onnx format needs {' and '.join(missing)}, not installed here: {INSTALL_HINT} "
            f"(or pip install {' '.join(missing)})",
            missing,
        )


def export_bytes(model: PoseNet, fmt: str, metadata: Mapping[str, Any] | None = None) -> bytes:
    """The network as a file's content in format ``fmt`` ("torchscript" or "onnx"), in eval mode and
    without gradients (a copy is exported: ``model`` is left as it is), on the model's device.

    The file records, as JSON, the model config, the input/output contract (``io_specs``) and
    ``metadata`` (JSON-serializable; e.g. the joint names): ``read_metadata`` returns it.
    Raises ValueError for an unknown format, ``ExportDependencyError`` when onnx is missing.
    """
    check_format(fmt)
    if fmt == "onnx":
        require_dependencies(fmt, run_exported=False)
    inputs, outputs = io_specs(model.config)
    record = {
        "model_config": asdict(model.config),
        "inputs": [asdict(t) for t in inputs],
        "outputs": [asdict(t) for t in outputs],
        **(metadata or {}),
    }
    device = next(model.parameters()).device
    size = model.config.input_size
    example = torch.rand(TRACE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    # A copy: the caller's model keeps its mode and its parameters' requires_grad. Without grad, the
    # TorchScript module's outputs need no .detach() before .numpy().
    net = copy.deepcopy(model).eval().requires_grad_(False)
    wrapper = InferenceNet(net, check_input=fmt == "torchscript").eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarning: the input-shape check is recorded as passed (see the module docstring);
        # DeprecationWarning: torch.jit.trace and the TorchScript-based ONNX exporter (ditto).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if fmt == "torchscript":
            return _torchscript_bytes(wrapper, example, record)
        return _onnx_bytes(wrapper, example, record)


def _torchscript_bytes(wrapper: InferenceNet, example: torch.Tensor, record: dict[str, Any]) -> bytes:
    # check_trace would re-run the same input; check_parity runs another batch size, a stronger test.
    traced = torch.jit.trace(wrapper, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(record)})
    return buffer.getvalue()


def _onnx_bytes(wrapper: InferenceNet, example: torch.Tensor, record: dict[str, Any]) -> bytes:
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper,
        (example,),
        buffer,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={name: {0: BATCH_AXIS} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        opset_version=ONNX_OPSET,
        dynamo=False,  # the TorchScript-based exporter: see the module docstring
    )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(record)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def save_exported(data: bytes, path: str | Path) -> Path:
    """Write an exported file's content to the local file ``path`` (folders created) through a
    temporary file beside it and a rename, so a failed write never leaves half a file. The file gets
    the permissions of any new file (the umask's), as a model to share should. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def export_model(
    model: PoseNet, path: str | Path, fmt: str, metadata: Mapping[str, Any] | None = None
) -> Path:
    """``export_bytes`` written to the local file ``path`` by ``save_exported``. Returns the path."""
    return save_exported(export_bytes(model, fmt, metadata), path)


# --- running and checking an exported file ---------------------------------------------------------

#: An exported model as a function: images (B, 3, S, S) float32 -> (heatmaps, depth) numpy arrays.
ExportedRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_exported(source: str | Path | bytes, fmt: str) -> ExportedRunner:
    """An exported file (a local path or its content) as a function, run on the CPU the way a user
    would: ``torch.jit.load`` or an onnxruntime ``InferenceSession``."""
    check_format(fmt)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if fmt == "torchscript":
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")

        def run_torchscript(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                heatmaps, depth = module(torch.from_numpy(np.ascontiguousarray(images, np.float32)))
            return heatmaps.numpy(), depth.numpy()

        return run_torchscript
    require_dependencies(fmt)
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def run_onnx(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heatmaps, depth = session.run(
            list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images, np.float32)}
        )
        return heatmaps, depth

    return run_onnx


def read_metadata(source: str | Path | bytes, fmt: str) -> dict[str, Any]:
    """What ``export_bytes`` recorded in an exported file: model_config, inputs, outputs and the
    caller's metadata."""
    check_format(fmt)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if fmt == "torchscript":
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
        return json.loads(extra[TORCHSCRIPT_METADATA_FILE])
    require_dependencies(fmt, run_exported=False)
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    return json.loads(props[ONNX_METADATA_KEY])


def onnx_graph_specs(source: str | Path | bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """An ONNX file's inputs and outputs as its graph declares them (a named axis such as ``batch``
    stays a name): what a runtime will check, rather than what the export meant to write."""
    require_dependencies("onnx", run_exported=False)
    import onnx

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    graph = onnx.load_from_string(data).graph

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        shape = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
        return TensorSpec(value.name, dtype, shape)

    initializers = {init.name for init in graph.initializer}
    inputs = tuple(spec(v) for v in graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in graph.output)


@dataclass(frozen=True)
class ParityResult:
    """Largest absolute differences between the eager network and an exported file on the same
    random batch of ``batch_size`` images; heatmaps in heatmap units, depth in normalized depth."""

    batch_size: int
    max_abs_heatmaps: float
    max_abs_depth: float

    @property
    def max_abs(self) -> float:
        """The larger of the two (NaN when either is: Python's max would drop a NaN second argument)."""
        return float(np.max([self.max_abs_heatmaps, self.max_abs_depth]))

    def ok(self, tolerance: float = PARITY_TOLERANCE) -> bool:
        """True when both differences are at most ``tolerance`` (False for NaN)."""
        return bool(self.max_abs_heatmaps <= tolerance and self.max_abs_depth <= tolerance)


def check_parity(
    model: PoseNet,
    source: str | Path | bytes,
    fmt: str,
    batch_size: int = PARITY_BATCH,
    seed: int = 0,
) -> ParityResult:
    """Run the eager network (eval mode, on its device) and the exported file (``load_exported``, on
    the CPU) on the same ``batch_size`` random images in [0, 1] and measure how far apart their
    outputs are. The default batch size differs from ``TRACE_BATCH``, so a pass also proves the batch
    axis dynamic."""
    size = model.config.input_size
    images = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
    run_exported = load_exported(source, fmt)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = InferenceNet(model)(images.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    got = run_exported(images.numpy())
    diffs = [float(np.max(np.abs(g - e.float().cpu().numpy()))) for g, e in zip(got, expected, strict=True)]
    return ParityResult(batch_size, diffs[0], diffs[1])
