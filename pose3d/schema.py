"""The one Parquet shard schema (version 1). A row is one person.

Every shard carries, in its Parquet key-value metadata, the schema version, dataset, split, joint
order and units; readers refuse a shard they do not understand and name it (``ShardSchemaError``).

Crops: a square JPEG of ``crop_size`` px around the person's box, the box scaled by ``CROP_MARGIN``
so that the training augmentation (scale x(1 ± 0.25), rotation ±30°) stays inside real pixels in
nearly all cases; the person's box itself spans ``crop_size / CROP_MARGIN`` px of the crop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pose3d import skeleton

SCHEMA_VERSION = 1
#: Default crop side (px) and margin: the person box spans 384 / 1.5 = 256 px, the paper's input.
DEFAULT_CROP_SIZE = 384
CROP_MARGIN = 1.5


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset the shards may hold: the one place a dataset is registered.

    ``reader``: the ``pose3d prep`` reader that writes it, and ``reader_module``, the module that
    implements that reader (imported only when used). ``eval_kind``: how evaluation scores it,
    "h36m" (MPJPE per action), "mpii" (PCKh per joint) or "3dhp" (3DPCK/AUC per group).
    """

    name: str
    reader: str
    reader_module: str
    eval_kind: str
    #: Joints of the 16 this dataset never labels (COCO has no thorax, upper neck or head top): the
    #: heatmap loss leaves their maps out on its rows (docs/conventions.md, Loss contract).
    unlabelled_joints: tuple[str, ...] = ()


_COCO_LACKS = ("thorax", "upper_neck", "head_top")

#: Every dataset, in the order reports list them. The synthetic sets stand in for the real ones
#: they imitate and are scored the same way (docs/conventions.md, "Synthetic data").
REGISTRY: tuple[DatasetEntry, ...] = (
    DatasetEntry("h36m", "h36m", "data_prep.readers.h36m", "h36m"),
    DatasetEntry("mpii", "mpii", "data_prep.readers.mpii", "mpii"),
    DatasetEntry("3dhp", "3dhp", "data_prep.readers.mpi3dhp", "3dhp"),
    DatasetEntry("coco", "coco", "data_prep.readers.coco", "mpii", _COCO_LACKS),
    DatasetEntry("synthetic_lab", "synthetic", "data_prep.synthetic.reader", "h36m"),
    DatasetEntry("synthetic_wild", "synthetic", "data_prep.synthetic.reader", "mpii"),
    DatasetEntry("synthetic_wild_test", "synthetic", "data_prep.synthetic.reader", "3dhp"),
    DatasetEntry("synthetic_coco", "synthetic", "data_prep.synthetic.reader", "mpii", _COCO_LACKS),
)
DATASETS: tuple[str, ...] = tuple(d.name for d in REGISTRY)
#: Dataset name -> evaluation kind ("h36m", "mpii", "3dhp").
EVAL_KIND: dict[str, str] = {d.name: d.eval_kind for d in REGISTRY}
#: Dataset name -> (16,) bool, the joints it labels (all but its ``unlabelled_joints``).
LABELLED_JOINTS: dict[str, np.ndarray] = {
    d.name: ~np.isin(np.arange(skeleton.NUM_JOINTS), [skeleton.JOINT_INDEX[j] for j in d.unlabelled_joints])
    for d in REGISTRY
}


def labelled_joints(datasets: np.ndarray) -> np.ndarray:
    """Per row of a batch, the joints its dataset labels: ``datasets`` (n,) names -> (n, 16) bool
    (all True for a name not registered here)."""
    names, row_name = np.unique(np.asarray(datasets).astype(str), return_inverse=True)
    every = np.ones(skeleton.NUM_JOINTS, bool)
    table = np.stack([LABELLED_JOINTS.get(name, every) for name in names]) if len(names) else every[None]
    return table[row_name.reshape(-1)]


#: Reader name -> the module implementing it.
READERS: dict[str, str] = {d.reader: d.reader_module for d in REGISTRY}
SPLITS = ("train", "val", "test")
UNITS = {
    "joints_2d": "crop px (pixel centres at integers)",
    "joints_3d": "camera mm",
    "crop_to_image": "2x3 affine, crop px -> original image px, row-major",
    "head_size": "crop px (0.6 x head-box diagonal)",
    "head_box": "original image px (x1, y1, x2, y2)",
    "camera_f": "px",
    "camera_c": "px",
}

_J = skeleton.NUM_JOINTS


#: Row shape of each fixed-size list column: the one definition (Arrow stores these flat; readers
#: reshape with it).
ROW_SHAPES: dict[str, tuple[int, ...]] = {
    "joints_2d": (_J, 2),
    "visible": (_J,),
    "joints_3d": (_J, 3),
    "crop_to_image": (2, 3),
    "camera_f": (2,),
    "camera_c": (2,),
    "camera_k": (3,),
    "camera_p": (2,),
    "head_box": (4,),
}


def _fixed(t: pa.DataType, column: str) -> pa.DataType:
    return pa.list_(t, int(np.prod(ROW_SHAPES[column])))


#: Column name -> (Arrow type, description).
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "row_id": (pa.string(), "deterministic unique key: dataset/split/source/person"),
    "image_jpeg": (pa.binary(), "JPEG bytes of the square crop"),
    "crop_size": (pa.int32(), "crop side, px"),
    "joints_2d": (_fixed(pa.float32(), "joints_2d"), "(16, 2) crop px"),
    "visible": (_fixed(pa.bool_(), "visible"), "(16,) joint annotated (and inside the source image)"),
    "joints_3d": (_fixed(pa.float32(), "joints_3d"), "(16, 3) camera mm; NaN when has_3d is false"),
    "has_3d": (pa.bool_(), "3D labels present"),
    "crop_to_image": (_fixed(pa.float64(), "crop_to_image"), "2x3 affine crop px -> original px"),
    "camera_f": (_fixed(pa.float64(), "camera_f"), "focal lengths px; NaN when unknown"),
    "camera_c": (_fixed(pa.float64(), "camera_c"), "principal point px; NaN when unknown"),
    "camera_k": (_fixed(pa.float64(), "camera_k"), "radial distortion; NaN when unknown"),
    "camera_p": (_fixed(pa.float64(), "camera_p"), "tangential distortion; NaN when unknown"),
    "head_size": (pa.float32(), "crop px; NaN when no head box"),
    "head_box": (_fixed(pa.float32(), "head_box"), "original px; NaN when none"),
    "dataset": (pa.string(), "one of DATASETS"),
    "split": (pa.string(), "train | val | test"),
    "subject": (pa.string(), "subject / sequence id ('' when none)"),
    "action": (pa.string(), "action or activity ('' when none)"),
    "subaction": (pa.string(), "sub-action ('' when none)"),
    "camera": (pa.string(), "camera id ('' when none)"),
    "group": (pa.string(), "evaluation group, e.g. 3DHP studio_gs / studio_nogs / outdoor ('' none)"),
    "frame": (pa.int64(), "frame index in the source sequence (-1 when none)"),
    "source_path": (pa.string(), "path of the source image or video, relative to the raw root"),
    "annotation_3d": (pa.string(), "which 3D annotation joints_3d holds ('' when none)"),
}

SCHEMA = pa.schema([pa.field(name, t) for name, (t, _) in COLUMNS.items()])


class ShardSchemaError(ValueError):
    """A shard this version of pose3d does not understand."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def shard_metadata(dataset: str, split: str) -> dict[bytes, bytes]:
    """The Parquet key-value metadata every shard carries."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    meta = {
        "pose3d.schema_version": str(SCHEMA_VERSION),
        "pose3d.dataset": dataset,
        "pose3d.split": split,
        "pose3d.joint_order": ",".join(skeleton.JOINT_NAMES),
        "pose3d.units": json.dumps(UNITS, sort_keys=True),
    }
    return {k.encode(): v.encode() for k, v in meta.items()}


def rows_to_table(columns: Mapping[str, object], dataset: str, split: str) -> pa.Table:
    """Columns (numpy arrays or lists, one entry per row; fixed-size columns as (N, k...) arrays)
    -> a table with the shard schema and metadata. Missing or extra columns raise ValueError."""
    missing = set(COLUMNS) - set(columns)
    extra = set(columns) - set(COLUMNS)
    if missing or extra:
        raise ValueError(f"shard columns: missing {sorted(missing)}, unexpected {sorted(extra)}")
    arrays = []
    for name, (typ, _) in COLUMNS.items():
        value = columns[name]
        if pa.types.is_fixed_size_list(typ):
            flat = np.ascontiguousarray(np.asarray(value), dtype=typ.value_type.to_pandas_dtype())
            flat = flat.reshape(len(flat), -1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), typ.list_size))
        else:
            arrays.append(pa.array(value, type=typ))
    return pa.Table.from_arrays(arrays, schema=SCHEMA.with_metadata(shard_metadata(dataset, split)))


def check_schema(schema: pa.Schema, path: str) -> dict[str, str]:
    """Validate a shard's schema and metadata; return its pose3d metadata (without the prefix).

    Raises ShardSchemaError naming ``path`` when the version, joint order or columns differ.
    """
    raw = schema.metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"pose3d.")}
    if "pose3d.schema_version" not in meta:
        raise ShardSchemaError(path, "not a pose3d shard (no pose3d.schema_version metadata)")
    version = meta["pose3d.schema_version"]
    if version != str(SCHEMA_VERSION):
        raise ShardSchemaError(path, f"schema version {version}, this pose3d reads version {SCHEMA_VERSION}")
    if meta.get("pose3d.joint_order") != ",".join(skeleton.JOINT_NAMES):
        raise ShardSchemaError(
            path, f"joint order {meta.get('pose3d.joint_order')!r} is not the 16 MPII joints"
        )
    for name, (typ, _) in COLUMNS.items():
        idx = schema.get_field_index(name)
        if idx < 0:
            raise ShardSchemaError(path, f"column {name!r} is missing")
        if not schema.field(idx).type.equals(typ):
            raise ShardSchemaError(path, f"column {name!r} has type {schema.field(idx).type}, expected {typ}")
    return {k.removeprefix("pose3d."): v for k, v in meta.items()}


def read_shard_metadata(path: str, filesystem: pa.fs.FileSystem | None = None) -> dict[str, str]:
    """Open one shard's footer and validate it (``check_schema``)."""
    try:
        schema = pq.read_schema(path, filesystem=filesystem)
    except (OSError, pa.ArrowInvalid) as err:
        raise ShardSchemaError(path, f"not a readable Parquet file ({err})") from err
    return check_schema(schema, path)
