"""The authors' released network as a pose3d network: ``read_authors_weights`` reads their
checkpoint (``hgreg-3d.pth`` of their PyTorch code: a whole model object pickled by PyTorch 0.4, with
their classes ``models.hg_3d.HourglassNet3D`` and ``models.layers.Residual.Residual``) without their
code, and ``authors_to_posenet`` turns it into a ``PoseNet`` that computes the same function on
pose3d's input (docs/design.md, "The authors' weights").

Reading never runs anything the file names. ``torch.load`` would import their modules and call what
the pickle says; here a restricted unpickler maps exactly the classes of their network (theirs and
torch's layers) to plain records of their pickled state, tensors to arrays read from the file's own
storage records, and refuses any other global, naming it. Both of torch's file layouts are read: the
legacy stream PyTorch 0.4 wrote and the zip archive of later versions; a plain state dict (theirs,
or one saved from ``nn.DataParallel``) is accepted as well.

May import: ``pose3d.model``, ``pose3d.skeleton``, torch, numpy.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from pose3d import skeleton
from pose3d.model.io import UnsafeCheckpointError
from pose3d.model.net import HOURGLASS_LEVELS, STEM_STRIDE, ModelConfig, PoseNet

#: Classes of the authors' network whose objects are read as records of their state: their own
#: modules and torch's layers they use. Nothing of these classes is imported or called.
NETWORK_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("models.hg_3d", "HourglassNet3D"),
        ("models.hg_3d", "Hourglass"),
        ("models.layers.Residual", "Residual"),
        ("torch.nn.modules.conv", "Conv2d"),
        ("torch.nn.modules.batchnorm", "BatchNorm2d"),
        ("torch.nn.modules.activation", "ReLU"),
        ("torch.nn.modules.pooling", "MaxPool2d"),
        ("torch.nn.modules.upsampling", "Upsample"),
        ("torch.nn.modules.linear", "Linear"),
        ("torch.nn.modules.container", "ModuleList"),
        ("torch.nn.modules.container", "Sequential"),
    }
)

#: torch storage classes (CPU and CUDA) -> the numpy dtype of their elements.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

#: torch's legacy (non-zip) file layout: a magic number and a protocol version pickled first.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: Their input is BGR / 256, pose3d's RGB / 255: pose3d's first convolution reads input channel c
#: where theirs read channel ``2 - c``, scaled by 255 / 256 (docs/design.md, "The authors' weights").
BGR_TO_RGB = (2, 1, 0)
INPUT_SCALE = 255.0 / 256.0


class AuthorsWeightsError(ValueError):
    """A file that is not the authors' network in a form this reader knows (names the file and why)."""


# --- reading the pickle without running it ---------------------------------------------------------


@dataclass
class _Storage:
    """A storage record of the file: its key, element dtype and element offset (for views)."""

    key: str
    dtype: np.dtype
    offset: int = 0


@dataclass
class _Tensor:
    """A tensor record: where its elements are (``_Storage``), its shape and strides in elements."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Record:
    """An object of one of ``NETWORK_CLASSES``: ``class_path`` and its pickled ``state`` (a dict)."""

    class_path = ""

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        # (state, slotstate) is how pickle passes objects with __slots__; layers have none.
        self.state = state[0] if isinstance(state, tuple) else state


_RECORD_CLASSES: dict[tuple[str, str], type[_Record]] = {
    key: type(key[1], (_Record,), {"class_path": ".".join(key)}) for key in NETWORK_CLASSES
}


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
    """Stands in for torch._utils._rebuild_tensor(_v2): records where the tensor's elements are."""
    return _Tensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _Tensor, *_: Any) -> _Tensor:
    """Stands in for torch's Parameter rebuilders (0.4: ``Parameter(data, requires_grad)``)."""
    return data


def _no_backend() -> None:
    """Stands in for the THNN backend object PyTorch 0.4 pickled into every layer (``_backend``)."""
    return None


class _Call:
    """A callable a file may name. Unpickling gets a fresh one each time, and pickle's BUILD on it is
    refused, so a file cannot alter what later lookups call."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __setstate__(self, state: Any) -> None:
        raise AuthorsWeightsError("the file tries to alter a function it names")


#: Functions and classes a file may name, each mapped to what unpickling calls instead.
_CALLABLES: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    # sets in a module's state (hook bookkeeping), under Python 3's and Python 2's module name
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
}


class _StorageType:
    """What a storage class name resolves to: only its element dtype is used."""

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, STORAGE_DTYPES[name]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``NETWORK_CLASSES``, ``_CALLABLES`` and torch storage classes; any other global
    raises ``UnsafeCheckpointError`` naming it, before anything is called."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _RECORD_CLASSES:
            return _RECORD_CLASSES[module, name]
        if (module, name) in _CALLABLES:
            return _Call(_CALLABLES[module, name])
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self.source}: refused: the file names {module}.{name}, which is not part of the authors' "
            "network (their HourglassNet3D, Hourglass and Residual, torch's layers, tensors); nothing "
            "in the file was run"
        )

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":  # legacy layout: a layer class with its source text, for a diff check
            return pid[1]
        if kind != "storage":
            raise AuthorsWeightsError(f"{self.source}: unknown persistent record {kind!r}")
        storage_type, key = pid[1], str(pid[2])
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise AuthorsWeightsError(f"{self.source}: storage {key} has no known element type")
        if view is not None:  # legacy layout: (view key, offset in elements, size)
            return _Storage(key, storage_type.dtype, int(view[1]))
        return _Storage(key, storage_type.dtype)


def _load_plain(file: BinaryIO, source: str) -> Any:
    """One pickle of plain values (the legacy header records); any global is refused."""
    return _RestrictedUnpickler(file, source).load()


def _read_legacy(file: BinaryIO, source: str) -> tuple[Any, dict[str, bytes]]:
    """The legacy layout: magic, protocol, system info, the object, its storage keys, then each
    storage as an int64 element count and its raw little-endian bytes."""
    if _load_plain(file, source) != LEGACY_MAGIC:
        raise AuthorsWeightsError(f"{source}: not a PyTorch checkpoint (no torch magic number)")
    if _load_plain(file, source) != LEGACY_PROTOCOL:
        raise AuthorsWeightsError(f"{source}: unknown PyTorch legacy protocol version")
    _load_plain(file, source)  # system info: byte order and type sizes of the writer
    unpickler = _RestrictedUnpickler(file, source)
    obj = unpickler.load()
    keys = _load_plain(file, source)
    dtypes = {s.key: s.dtype for s in _storages(obj)}
    data: dict[str, bytes] = {}
    for key in keys:
        header = file.read(8)
        if len(header) < 8:
            raise AuthorsWeightsError(f"{source}: truncated: the file ends before storage {key}")
        count = int(np.frombuffer(header, "<i8")[0])
        dtype = dtypes.get(str(key), np.dtype("u1"))
        data[str(key)] = file.read(count * dtype.itemsize)
        if len(data[str(key)]) < count * dtype.itemsize:
            raise AuthorsWeightsError(
                f"{source}: truncated: storage {key} holds {len(data[str(key)])} of its "
                f"{count * dtype.itemsize} bytes"
            )
    return obj, data


def _read_zip(path: Path, source: str) -> tuple[Any, dict[str, bytes]]:
    """The zip layout of PyTorch >= 1.6: ``<archive>/data.pkl`` and ``<archive>/data/<key>``."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise AuthorsWeightsError(f"{source}: a zip file without data.pkl, not a PyTorch checkpoint")
        root = pkl[: -len("data.pkl")]
        obj = _RestrictedUnpickler(io.BytesIO(archive.read(pkl)), source).load()
        data = {s.key: archive.read(f"{root}data/{s.key}") for s in _storages(obj)}
    return obj, data


def _walk(obj: Any) -> Iterator[Any]:
    """Every value inside a loaded object: records' state, dicts, lists and tuples."""
    stack = [obj]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, _Record):
            stack.append(getattr(item, "state", {}))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _storages(obj: Any) -> Iterator[_Storage]:
    for item in _walk(obj):
        if isinstance(item, _Tensor):
            yield item.storage


def _materialize(record: _Tensor, data: dict[str, bytes], source: str) -> torch.Tensor:
    """A tensor record -> a CPU tensor copied out of its storage; offsets, sizes and strides are
    checked to stay inside the storage first (they come from the file)."""
    storage = record.storage
    if storage.key not in data:
        raise AuthorsWeightsError(f"{source}: storage {storage.key} is missing from the file")
    raw = data[storage.key]
    flat = np.frombuffer(raw, storage.dtype, count=len(raw) // storage.dtype.itemsize)
    start = storage.offset + record.offset
    count = math.prod(record.size)
    if len(record.size) != len(record.stride) or min((start, *record.size, *record.stride)) < 0:
        raise AuthorsWeightsError(f"{source}: a tensor record with a negative offset, size or stride")
    reach = sum((n - 1) * s for n, s in zip(record.size, record.stride, strict=True))
    if count and (start + reach >= len(flat) or count > len(flat)):
        raise AuthorsWeightsError(f"{source}: a tensor of shape {record.size} reads past its storage")
    if not count:
        return torch.from_numpy(np.zeros(record.size, storage.dtype))
    strides = tuple(s * storage.dtype.itemsize for s in record.stride)
    array = np.lib.stride_tricks.as_strided(flat[start:], record.size, strides)
    return torch.from_numpy(np.array(array, copy=True))


def _flatten_module(record: _Record, prefix: str, out: dict[str, _Tensor]) -> None:
    """A module record's parameters and buffers under their state-dict names (``prefix`` + name)."""
    state = getattr(record, "state", {})  # unset when the pickle gave the object no state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None:
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, _Record):
            _flatten_module(child, f"{prefix}{name}.", out)


def read_authors_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The authors' checkpoint -> their state dict (their parameter names, CPU tensors).

    Accepts their whole pickled model (legacy or zip layout), a plain state dict, or a dict holding
    one under ``state_dict``; a ``module.`` prefix (``nn.DataParallel``) is dropped. Raises
    FileNotFoundError, ``UnsafeCheckpointError`` (a global outside their network, named) or
    ``AuthorsWeightsError`` (anything else that is not their network, with the reason)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    try:
        return _read_state_dict(path, source)
    except (UnsafeCheckpointError, AuthorsWeightsError):
        raise
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, TypeError,
            AttributeError, zipfile.BadZipFile) as err:  # fmt: skip
        raise AuthorsWeightsError(f"{source}: not a readable PyTorch checkpoint ({err})") from None


def _read_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    """``read_authors_state_dict`` past its error handling (which wraps what this raises)."""
    with open(path, "rb") as file:
        head = file.read(4)
    if zipfile.is_zipfile(path):
        obj, data = _read_zip(path, source)
    elif head == b"PK\x03\x04":
        raise AuthorsWeightsError(f"{source}: a corrupt or truncated zip checkpoint")
    else:
        with open(path, "rb") as file:
            obj, data = _read_legacy(file, source)
    records: dict[str, _Tensor] = {}
    if isinstance(obj, _Record):
        _flatten_module(obj, "", records)
    else:
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
            raise AuthorsWeightsError(f"{source}: holds neither a model nor a state dict of tensors")
        records = {str(k): v for k, v in obj.items()}
    if records and all(k.startswith("module.") for k in records):
        records = {k[len("module.") :]: v for k, v in records.items()}
    return {k: _materialize(v, data, source) for k, v in records.items()}


# --- their names -> pose3d's -----------------------------------------------------------------------

#: pose3d's ``Residual`` layers -> theirs (``models.layers.Residual``), by attribute name.
_RESIDUAL_LAYERS = (
    ("branch.0", "bn"), ("branch.2", "conv1"), ("branch.3", "bn1"), ("branch.5", "conv2"),
    ("branch.6", "bn2"), ("branch.8", "conv3"), ("skip", "conv4"),
)  # fmt: skip


def _count(keys: list[str], pattern: str) -> int:
    """How many distinct integers fill the ``(\\d+)`` of ``pattern`` at the start of a key."""
    found = {m.group(1) for k in keys if (m := re.match(pattern, k))}
    return len(found)


def infer_model_config(state: dict[str, torch.Tensor], source: str = "the weights") -> ModelConfig:
    """Their state dict -> the pose3d ``ModelConfig`` of the same network, from names and shapes:
    stacks, modules per place, features, regression modules, input and output sizes."""
    keys = list(state)
    for needed in ("conv1_.weight", "r5.conv3.weight", "tmpOut.0.weight", "reg.weight"):
        if needed not in state:
            raise AuthorsWeightsError(
                f"{source}: no {needed}: not the authors' HourglassNet3D (its layers conv1_, r1, r4, "
                "r5, hourglass, Residual, lin_, tmpOut, ll_, tmpOut_, reg_, reg)"
            )
    features = int(state["r5.conv3.weight"].shape[0])
    joints = int(state["tmpOut.0.weight"].shape[0])
    if joints != skeleton.NUM_JOINTS:
        raise AuthorsWeightsError(
            f"{source}: the network predicts {joints} joints; pose3d's skeleton has {skeleton.NUM_JOINTS}"
        )
    reg_in = int(state["reg.weight"].shape[1])
    side = math.isqrt(reg_in // features)
    if side * side * features != reg_in:
        raise AuthorsWeightsError(
            f"{source}: reg.weight takes {reg_in} inputs, not a square map of {features}"
        )
    levels = 1 + max((k.count("low2.") for k in keys if k.startswith("hourglass.0.")), default=0)
    if levels != HOURGLASS_LEVELS:
        raise AuthorsWeightsError(
            f"{source}: hourglasses of {levels} levels; pose3d's have {HOURGLASS_LEVELS}"
        )
    reg_modules = _count(keys, r"reg_\.(\d+)\.")
    if reg_modules % 4:
        raise AuthorsWeightsError(f"{source}: {reg_modules} regression residuals, not 4 groups")
    output = side * 2**4
    return ModelConfig(
        num_stacks=_count(keys, r"hourglass\.(\d+)\."),
        num_modules=_count(keys, r"hourglass\.0\.up1_\.(\d+)\."),
        num_features=features,
        num_reg_modules=reg_modules // 4,
        input_size=STEM_STRIDE * output,
        output_size=output,
    )


def _module_pairs(config: ModelConfig) -> list[tuple[str, str]]:
    """(pose3d module path, their module path) for every layer with weights."""
    m, r = config.num_modules, config.num_reg_modules
    pairs = [("stem.conv.0", "conv1_"), ("stem.conv.1", "bn1")]

    def residual(ours: str, theirs: str) -> None:
        pairs.extend((f"{ours}.{a}", f"{theirs}.{b}") for a, b in _RESIDUAL_LAYERS)

    def hourglass(ours: str, theirs: str, levels: int) -> None:
        for k in range(m):
            residual(f"{ours}.upper.{k}", f"{theirs}.up1_.{k}")
            residual(f"{ours}.down.{k}", f"{theirs}.low1_.{k}")
            residual(f"{ours}.up.{k}", f"{theirs}.low3_.{k}")
            if levels == 1:
                residual(f"{ours}.inner.{k}", f"{theirs}.low2_.{k}")
        if levels > 1:
            hourglass(f"{ours}.inner", f"{theirs}.low2", levels - 1)

    residual("stem.before_pool", "r1")
    residual("stem.after_pool.0", "r4")
    residual("stem.after_pool.1", "r5")
    last = config.num_stacks - 1
    for i in range(config.num_stacks):
        hourglass(f"stacks.{i}.hourglass", f"hourglass.{i}", HOURGLASS_LEVELS)
        for k in range(m):
            residual(f"stacks.{i}.residuals.{k}", f"Residual.{i * m + k}")
        pairs += [
            (f"stacks.{i}.features.0", f"lin_.{i}.0"),
            (f"stacks.{i}.features.1", f"lin_.{i}.1"),
            (f"stacks.{i}.heatmaps", f"tmpOut.{i}"),
        ]
        merge = "depth_head.merge" if i == last else f"merges.{i}"
        pairs += [(f"{merge}.features", f"ll_.{i}"), (f"{merge}.heatmaps", f"tmpOut_.{i}")]
    for block in range(4):
        for k in range(r):
            residual(f"depth_head.blocks.{block}.{k}", f"reg_.{block * r + k}")
    pairs.append(("depth_head.linear", "reg"))
    return pairs


def authors_to_posenet(state: dict[str, torch.Tensor], source: str = "the weights") -> PoseNet:
    """Their state dict -> a ``PoseNet`` (eval mode) computing their function on pose3d's input.

    Every tensor of theirs maps to exactly one of pose3d's and back (shapes checked); the first
    convolution's input channels are reordered BGR -> RGB and scaled by 255/256, because pose3d feeds
    RGB / 255 where they fed BGR / 256. A BatchNorm counter their PyTorch did not save starts at 0."""
    config = infer_model_config(state, source)
    model = PoseNet(config)
    ours = model.state_dict()
    prefix = {o: t for o, t in _module_pairs(config)}
    mapped: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, target in ours.items():
        module, _, leaf = key.rpartition(".")
        if module not in prefix:
            raise AuthorsWeightsError(f"{source}: pose3d's {key} has no counterpart (internal mapping)")
        theirs = f"{prefix[module]}.{leaf}"
        if theirs not in state:
            if leaf == "num_batches_tracked":
                mapped[key] = torch.zeros_like(target)
                continue
            raise AuthorsWeightsError(f"{source}: no {theirs} (pose3d's {key})")
        value = state[theirs]
        if tuple(value.shape) != tuple(target.shape):
            raise AuthorsWeightsError(
                f"{source}: {theirs} has shape {tuple(value.shape)}, pose3d's {key} {tuple(target.shape)}"
            )
        mapped[key] = value.to(target.dtype)
        used.add(theirs)
    unused = sorted(set(state) - used)
    if unused:
        raise AuthorsWeightsError(
            f"{source}: {len(unused)} tensor(s) of the file have no place in the network: "
            + ", ".join(unused[:5])
        )
    first = mapped["stem.conv.0.weight"]
    mapped["stem.conv.0.weight"] = first[:, list(BGR_TO_RGB)] * INPUT_SCALE
    model.load_state_dict(mapped)
    return model.eval()


def import_authors_weights(path: str | Path) -> tuple[PoseNet, dict[str, Any]]:
    """The authors' checkpoint file -> (the pose3d network, a summary: source, tensors mapped,
    model config). Raises as ``read_authors_state_dict`` and ``authors_to_posenet``."""
    state = read_authors_state_dict(path)
    model = authors_to_posenet(state, str(path))
    return model, {"source": str(path), "tensors": len(state), "model_config": model.config}
