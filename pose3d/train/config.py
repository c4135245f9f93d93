"""The training configuration: a typed dataclass tree loaded from YAML, with dotted overrides.

``load_config("paper", ["train.stages.3.steps=40000", "scaling.num_workers=8"])``. A config is
data: it is validated with errors that name the offending key, and saved beside every checkpoint.
Stage lists are addressed by stage number (1-based), as the paper numbers them.

Overrides have one engine, ``apply_override(tree, "a.b.c", value)`` on a ``Config.to_dict()``
tree: ``pose3d train KEY=VALUE`` and the Tune search's trial configs both go through it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pose3d import skeleton, storage
from pose3d.data.augment import AugmentParams
from pose3d.model.net import ModelConfig
from pose3d.train import schedule


class ConfigError(ValueError):
    """A configuration problem, naming the key (and file) at fault."""


@dataclass
class Source:
    """One shard set on one side of the mix, and its weight within that side (docs/conventions.md,
    Mixing: several sources per side)."""

    path: str = ""
    weight: float = 1.0  # relative to the side's other sources; 0 leaves the source out


#: The two sides of every batch, by their config keys: rows with 3D labels, 2D-only rows.
SET_3D, SET_2D = "set_3d", "set_2d"
SOURCE_SIDES: tuple[str, ...] = (SET_3D, SET_2D)


@dataclass
class DataSection:
    """Where the shards are and how each step's batch mixes 3D and 2D-only rows (exactly, at every
    step: docs/conventions.md, Mixing).

    ``set_3d`` and ``set_2d`` each take one shard path (as in the paper: Human3.6M, MPII) or a list
    of sources, each a path or ``{path, weight}``; they load as a list of ``Source`` either way
    (``""``: none)."""

    set_3d: list[Source] = field(default_factory=list)  # with 3D labels (Human3.6M, synthetic lab)
    set_2d: list[Source] = field(default_factory=list)  # 2D-only (MPII, COCO, synthetic wild)
    val_3d: str = ""  # held-out 3D shards for validation MPJPE ("" = no validation)
    val_2d: str = ""  # held-out 2D shards for validation PCK ("" = none)
    ratio_2d: float = 0.5  # fraction of each stage-2/3 batch from the 2D set (0 = 3D only)
    stage1_data: str = "2d"  # stage 1 draws from: 2d | 3d | both
    batch_size: int = 6  # global batch (all workers together)
    shuffle_buffer: int = 256  # rows; well above the batch (Ray issue 66085)
    preprocess_actors: int = 2  # max CPU actors per dataset for decode + augment
    # sleep in Ray Data's scheduling loop while it only waits for the trainer (pose3d.data.idle)
    idle_backoff: bool = True
    # Each streaming pass restarts Ray Data's execution (new actors: seconds of stall); a small
    # dataset can chain this many shuffled epochs into one pass.
    epochs_per_pass: int = 1
    val_rows: int = 256  # validation rows scored each time (0 = all)
    # Rows whose image does not decode are skipped, counted and named; the run stops when they are
    # more than this fraction of a stream's rows (judged over at least 1000 rows).
    max_bad_fraction: float = 0.01
    augment: AugmentParams = field(default_factory=AugmentParams)  # training augmentation

    def sources(self, side: str) -> list[tuple[int, Source]]:
        """(index in the side's list, source) of each source of ``side`` ("set_3d" or "set_2d")
        that is drawn from (weight > 0)."""
        return [(i, s) for i, s in enumerate(getattr(self, side)) if s.weight > 0]

    def target_shares(self, side: str) -> list[float]:
        """Each listed source's target share of its side's rows (weights normalized to sum 1)."""
        weights = [s.weight for s in getattr(self, side)]
        total = sum(weights)
        return [w / total for w in weights] if total > 0 else []


@dataclass
class StageSection:
    """One training stage: optimizer steps at the global batch, lr, loss weights."""

    steps: int = 0
    lr: float = 2.5e-4
    reg: float = 0.0  # λ_reg
    geo: float = 0.0  # λ_geo
    lr_drop_step: int | None = None  # step within the stage where lr is multiplied by lr_drop
    lr_drop: float = 0.1


@dataclass
class OptimSection:
    """RMSprop, as the authors' code trains; ``adam`` for short CPU runs (the demo)."""

    name: str = "rmsprop"  # rmsprop | adam
    alpha: float = 0.99  # RMSprop's smoothing (Adam: beta2)
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class LossSection:
    geo_rows: str = "2d"  # 2d: geometric term on 2D-only rows (Eq. 2); all: on every row


@dataclass
class TrainSection:
    stages: list[StageSection] = field(
        default_factory=lambda: [
            StageSection(steps=0),
            StageSection(steps=0, reg=0.1),
            StageSection(steps=0, lr=2.5e-5, reg=0.1, geo=0.01),
        ]
    )
    val_every: int = 500  # steps
    checkpoint_every: int = 500  # steps
    log_every: int = 20  # steps
    # A warning naming what Ray waits for when no step finishes for this long (0: off).
    stall_warn_s: float = 180.0
    # Every random choice of the run follows from it: weights, file orders, shuffles, augmentation.
    seed: int = 0
    # Rows leave Ray Data in their read order and torch uses deterministic kernels, so a run with
    # one worker repeats bit for bit (docs/conventions.md, Seeds); off, only the weights repeat.
    deterministic: bool = True
    bf16: bool = True  # autocast on GPU
    channels_last: bool = True  # on GPU
    # torch.compile the network (pose3d/train/compile.py): faster steps after a first step that
    # builds the graphs (seconds to minutes); off by default, since short CPU runs do not repay it.
    compile: bool = False
    fail_at_step: int | None = None  # fault injection for tests: a worker dies after this many steps
    init_from: str = ""  # a checkpoint whose weights start the run (e.g. the stage-1 model of a search)


@dataclass
class ScalingSection:
    """Workers and their resources. ``num_workers``: a count, or ``[min, max]`` for elastic training:
    the run starts with as many workers as the cluster places (at least min), continues on fewer
    when a node is lost, and grows back towards max when nodes return, checked every
    ``resize_interval_s`` seconds (docs/design.md, Elastic training)."""

    num_workers: int | list[int] = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_SPREAD
    resize_interval_s: float = 60.0  # elastic: how often Ray Train looks for room to add workers
    # Torch's intra-op threads per worker (0: cpus_per_worker). Lower it when cpus_per_worker reserves
    # more logical CPUs than the worker may use (e.g. to keep one worker per node).
    torch_threads: int = 0

    @property
    def worker_range(self) -> tuple[int, int]:
        """(fewest, most) workers: equal for a fixed count."""
        n = self.num_workers
        return (n[0], n[1]) if isinstance(n, list) else (n, n)

    @property
    def elastic(self) -> bool:
        low, high = self.worker_range
        return low < high

    @property
    def max_workers(self) -> int:
        return self.worker_range[1]


@dataclass
class RunSection:
    name: str = "pose3d"
    storage_path: str = "./runs"  # local, NFS, s3://, gs://
    keep_checkpoints: int = 3
    max_failures: int = 0
    # Ray Train's own console logs (ray.train.*). At INFO it prints every report and checkpoint
    # upload (hundreds of lines a run); the training loop prints its own progress and checkpoints.
    ray_train_log_level: str = "WARNING"
    # How a checkpoint reaches storage_path (docs/design.md, Checkpoint upload). sync: inside the
    # report, the step waits for the upload; async: the state is written to a local folder first,
    # then Ray Train uploads it on a background thread while training goes on (and deletes the
    # folder); auto: async for remote storage (s3://, gs://, ...), sync for a local path or file://.
    checkpoint_upload: str = "auto"

    def upload_mode(self) -> str:
        """``checkpoint_upload`` with ``auto`` resolved: "sync" or "async"."""
        if self.checkpoint_upload != "auto":
            return self.checkpoint_upload
        return "async" if is_remote_storage(self.storage_path) else "sync"


#: The values of ``run.checkpoint_upload``.
CHECKPOINT_UPLOAD_MODES: tuple[str, ...] = ("auto", "sync", "async")


def is_remote_storage(path: str) -> bool:
    """True for an object-store or other remote URI (``s3://``, ``gs://``); False for a local path
    and for ``file://``, which is local too."""
    return storage.is_uri(path) and not str(path).lower().startswith("file://")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)  # network sizes
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    run: RunSection = field(default_factory=RunSection)

    def validate(self) -> Config:
        """Check values that types cannot; raise ConfigError naming the key."""
        for key, value in _numbers(self):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value}")
        for key, value, least in (
            ("train.checkpoint_every", self.train.checkpoint_every, 1),
            ("train.val_every", self.train.val_every, 1),
            ("train.log_every", self.train.log_every, 1),
            ("data.batch_size", self.data.batch_size, 1),
            ("data.shuffle_buffer", self.data.shuffle_buffer, 0),
            ("data.preprocess_actors", self.data.preprocess_actors, 1),
            ("data.val_rows", self.data.val_rows, 0),
            ("run.keep_checkpoints", self.run.keep_checkpoints, 1),
            ("run.max_failures", self.run.max_failures, -1),
            ("train.stall_warn_s", self.train.stall_warn_s, 0),
            ("scaling.torch_threads", self.scaling.torch_threads, 0),
        ):
            if value < least:
                raise ConfigError(f"{key} must be >= {least}, got {value}")
        for key, value in (
            ("scaling.cpus_per_worker", self.scaling.cpus_per_worker),
            ("scaling.gpus_per_worker", self.scaling.gpus_per_worker),
            ("optim.eps", self.optim.eps),
        ):
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if len(self.train.stages) != schedule.NUM_STAGES:
            raise ConfigError(
                f"train.stages: expected {schedule.NUM_STAGES} stages, got {len(self.train.stages)}"
            )
        for i, st in enumerate(self.train.stages, start=1):
            if st.steps < 0:
                raise ConfigError(f"train.stages.{i}.steps must be >= 0, got {st.steps}")
            if st.lr <= 0:
                raise ConfigError(f"train.stages.{i}.lr must be > 0, got {st.lr}")
            if st.reg < 0 or st.geo < 0:
                raise ConfigError(f"train.stages.{i}: reg and geo must be >= 0")
            if st.lr_drop_step is not None and st.lr_drop_step < 0:
                raise ConfigError(f"train.stages.{i}.lr_drop_step must be >= 0, got {st.lr_drop_step}")
            if st.lr_drop <= 0:
                raise ConfigError(f"train.stages.{i}.lr_drop must be > 0, got {st.lr_drop}")
        if schedule.total_steps(self) == 0:
            raise ConfigError("train.stages: every stage has 0 steps; nothing to train")
        for side in SOURCE_SIDES:
            _check_sources(getattr(self.data, side), f"data.{side}")
        if not 0.0 <= self.data.ratio_2d < 1.0:
            raise ConfigError(f"data.ratio_2d must be in [0, 1), got {self.data.ratio_2d}")
        if not 0.0 <= self.data.max_bad_fraction < 1.0:
            raise ConfigError(f"data.max_bad_fraction must be in [0, 1), got {self.data.max_bad_fraction}")
        if self.data.stage1_data not in ("2d", "3d", "both"):
            raise ConfigError(f"data.stage1_data must be 2d, 3d or both, got {self.data.stage1_data!r}")
        if self.optim.name not in ("rmsprop", "adam"):
            raise ConfigError(f"optim.name must be rmsprop or adam, got {self.optim.name!r}")
        if self.data.epochs_per_pass < 1:
            raise ConfigError(f"data.epochs_per_pass must be >= 1, got {self.data.epochs_per_pass}")
        if self.loss.geo_rows not in ("2d", "all"):
            raise ConfigError(f"loss.geo_rows must be '2d' or 'all', got {self.loss.geo_rows!r}")
        self._check_workers()
        if self.model.num_joints != skeleton.NUM_JOINTS:
            raise ConfigError(
                f"model.num_joints: the data has the {skeleton.NUM_JOINTS} MPII joints, "
                f"got {self.model.num_joints}"
            )
        if self.run.ray_train_log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"run.ray_train_log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                f"got {self.run.ray_train_log_level!r}"
            )
        if self.run.checkpoint_upload not in CHECKPOINT_UPLOAD_MODES:
            raise ConfigError(
                f"run.checkpoint_upload must be auto, sync or async, got {self.run.checkpoint_upload!r} "
                "(auto: async when run.storage_path is remote, s3:// or gs://; sync for a local path)"
            )
        if self.scaling.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ConfigError(f"scaling.placement_strategy: unknown {self.scaling.placement_strategy!r}")
        return self

    def _check_workers(self) -> None:
        """A worker count (or range) every count of which holds the batch and its exact mix; an
        elastic range must give every count the same global 3D/2D rows in every stage."""
        n, b = self.scaling.num_workers, self.data.batch_size
        if isinstance(n, list) and (len(n) != 2 or not 1 <= n[0] <= n[1]):
            raise ConfigError(f"scaling.num_workers must be a count or [min, max], 1 <= min <= max; got {n}")
        low, high = self.scaling.worker_range
        if low < 1:
            raise ConfigError(f"scaling.num_workers must be >= 1, got {n}")
        if self.scaling.resize_interval_s <= 0:
            raise ConfigError(f"scaling.resize_interval_s must be > 0, got {self.scaling.resize_interval_s}")
        if b % low:
            raise ConfigError(f"data.batch_size {b} is not divisible by {low} workers")
        per = b // low
        n2d = round(per * self.data.ratio_2d)
        if self.data.ratio_2d > 0 and (n2d == 0 or n2d == per):
            raise ConfigError(
                f"data.ratio_2d {self.data.ratio_2d} at {per} rows per worker leaves one side empty; "
                "raise data.batch_size"
            )
        if low == high:
            return
        if self.run.max_failures == 0:
            raise ConfigError(
                f"scaling.num_workers {n} (elastic) needs run.max_failures other than 0: Ray Train counts "
                "each lost node as a failure (-1: no limit)"
            )
        if self.scaling.placement_strategy == "STRICT_SPREAD":
            raise ConfigError(
                f"scaling.num_workers {n} (elastic) cannot use STRICT_SPREAD: Ray Train sizes the group by "
                "the cluster's total resources, and a group that no longer has a node per worker would "
                "never be placed; use PACK or SPREAD, with cpus_per_worker set so one worker fills a node"
            )
        # Elastic: every count the run may resize to must give the same global rows as min does.
        rows_at = lambda w: [self.global_rows(st, w) for st in schedule.STAGES]  # noqa: E731
        same = [w for w in range(1, high + 1) if b % w == 0 and rows_at(w) == rows_at(low)]
        bad = [w for w in range(low, high + 1) if w not in same]
        if bad:
            raise ConfigError(
                f"scaling.num_workers {n}: data.batch_size {b} at data.ratio_2d {self.data.ratio_2d} cannot "
                f"keep the exact 3D/2D rows of {low} worker(s) on {', '.join(map(str, bad))} (each worker "
                f"takes batch_size / workers rows, split by ratio_2d); counts that can: "
                f"{', '.join(map(str, same))}. Choose a range of those, or a batch size every count divides"
            )

    def stage_rows(self, stage: int, world: int) -> tuple[int, int]:
        """(3D rows, 2D rows) of each worker's batch in ``stage`` when ``world`` workers train."""
        per = self.data.batch_size // world
        if schedule.uses_depth(stage):
            n2d = round(per * self.data.ratio_2d)
            return per - n2d, n2d
        if self.data.stage1_data == "2d":
            return 0, per
        if self.data.stage1_data == "3d":
            return per, 0
        return per - per // 2, per // 2

    def global_rows(self, stage: int, world: int) -> tuple[int, int]:
        """(3D rows, 2D rows) of one step's batch over all ``world`` workers in ``stage``."""
        n3d, n2d = self.stage_rows(stage, world)
        return n3d * world, n2d * world

    def rows_per_worker(self, world: int | None = None) -> tuple[int, int]:
        """(3D rows, 2D rows) of each worker's batch in the stages that train depth (exactly these
        at every step), with ``world`` workers (default: the most the config allows)."""
        return self.stage_rows(schedule.DEPTH_STAGES[0], world or self.scaling.max_workers)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_sources(sources: list[Source], key: str) -> None:
    seen: set[str] = set()
    for i, src in enumerate(sources, start=1):
        if not src.path:
            raise ConfigError(f"{key}.{i}.path is empty")
        if src.weight < 0:
            raise ConfigError(f"{key}.{i}.weight must be >= 0, got {src.weight}")
        if src.path in seen:
            raise ConfigError(f"{key}.{i}: {src.path} is listed twice")
        seen.add(src.path)
    if sources and not any(s.weight > 0 for s in sources):
        raise ConfigError(f"{key}: every source has weight 0")


def source_list(value: Any, key: str) -> Any:
    """A side's value as a list of source mappings: ``""`` -> [], ``"path"`` -> [{path}], and each
    list item a path or a mapping (left for the type checks to judge)."""
    if value is None or value == "":
        return []
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(
            f"{key}: expected a shard path or a list of sources {{path, weight}}, got {value!r}"
        )
    return [{"path": item} if isinstance(item, str) else item for item in value]


def _normalize_sources(tree: dict[str, Any]) -> None:
    """Every side of ``tree["data"]`` as a list of source mappings, in place (so that overrides
    such as ``data.set_2d.2.weight`` address a list whatever form the YAML used)."""
    data = tree.get("data")
    if isinstance(data, dict):
        for side in SOURCE_SIDES:
            if side in data:
                data[side] = source_list(data[side], f"data.{side}")


def absolute_paths(cfg: Config) -> None:
    """Make the config's local paths absolute, in place: the workers and the checkpoints' saved
    config must not depend on the directory the driver was started in."""
    cfg.run.storage_path = storage.absolute(cfg.run.storage_path)
    for side in SOURCE_SIDES:
        for src in getattr(cfg.data, side):
            src.path = storage.absolute(src.path)
    for key in ("val_3d", "val_2d"):
        if getattr(cfg.data, key):
            setattr(cfg.data, key, storage.absolute(getattr(cfg.data, key)))
    if cfg.train.init_from:
        cfg.train.init_from = storage.absolute(cfg.train.init_from)


def _numbers(obj: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, value) of every float in a config tree (stages numbered from 1)."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _numbers(getattr(obj, f.name), f"{prefix}{f.name}.")
    elif isinstance(obj, list):
        for i, item in enumerate(obj, start=1):
            yield from _numbers(item, f"{prefix}{i}.")
    elif isinstance(obj, float):
        yield prefix.rstrip("."), obj


# --- loading ------------------------------------------------------------------------------


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(typ)
        if value is None and type(None) in options:
            return None
        inner = [t for t in options if t is not type(None)]
        as_list = [t for t in inner if typing.get_origin(t) is list]
        if isinstance(value, list) and as_list:  # e.g. scaling.num_workers: a count or [min, max]
            return _coerce(value, as_list[0], key)
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(typ, value, key)
    if origin is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}.{i + 1}") for i, v in enumerate(value)]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError as err:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from err
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from err
    if typ is str:
        if value is None:  # ``KEY=`` on the command line: YAML reads the empty value as null
            return ""
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    if cls is DataSection:
        sides = {k: source_list(values[k], f"{prefix}.{k}") for k in SOURCE_SIDES if k in values}
        values = {**values, **sides}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{sorted(unknown)[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:  # a section's own checks (ModelConfig's sizes)
        raise ConfigError(f"{prefix or 'config'}: {err}") from None


def packaged_configs() -> list[str]:
    """Names of the configs shipped with pose3d (``--config NAME``)."""
    return sorted(
        p.name[:-5] for p in resources.files("pose3d.configs").iterdir() if p.name.endswith(".yaml")
    )


def read_named_yaml(
    path_or_name: str, package: str, name: str, what: str, known: list[str], error: type[ValueError]
) -> tuple[Any, str]:
    """A YAML file by path, else the packaged resource ``package/name.yaml`` (configs, search
    spaces). Returns (parsed data, where it came from); raises ``error`` naming the file (and the
    ``known`` packaged names) when there is no such file or the YAML does not parse."""
    path = Path(path_or_name)
    if path.is_file():
        text, where = path.read_text(), str(path)
    else:
        res = resources.files(package) / f"{name}.yaml"
        if not res.is_file():
            raise error(
                f"{what} {path_or_name!r}: no such file, and not a packaged {what} ({', '.join(known)})"
            )
        text, where = res.read_text(), f"packaged {what} {name!r}"
    try:
        return yaml.safe_load(text), where
    except yaml.YAMLError as err:
        raise error(f"{where}: invalid YAML: {err}") from err


def _read_yaml(path_or_name: str) -> tuple[dict[str, Any], str]:
    data, where = read_named_yaml(
        path_or_name, "pose3d.configs", path_or_name, "config", packaged_configs(), ConfigError
    )
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    return data, where


def load_config(path_or_name: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (a path or a packaged name) over the defaults, apply ``key=value``
    overrides (values parsed as YAML), validate, and return it."""
    tree: dict[str, Any] = dataclasses.asdict(Config())
    where = "defaults"
    if path_or_name:
        data, where = _read_yaml(path_or_name)
        _merge(tree, data, "")
    for item in overrides or []:
        apply_override(tree, *parse_override(item))
    try:
        return _build(Config, tree).validate()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _merge(base: dict[str, Any], new: dict[str, Any], prefix: str) -> None:
    for k, v in new.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in base:
            raise ConfigError(f"unknown key {key}")
        if isinstance(v, dict) and isinstance(base[k], dict):
            _merge(base[k], v, key)
        elif k == "stages" and isinstance(v, list):
            if len(v) != len(base[k]):
                raise ConfigError(f"{key}: expected {len(base[k])} stages, got {len(v)}")
            for i, st in enumerate(v):
                if not isinstance(st, dict):
                    raise ConfigError(f"{key}.{i + 1}: expected a mapping")
                _merge(base[k][i], st, f"{key}.{i + 1}")
        else:
            base[k] = v


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``Config.to_dict`` (e.g. from a checkpoint)."""
    return _build(Config, data).validate()


# --- overrides ------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (VALUE read as YAML) -> (key, value); ConfigError when there is no ``=``."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.stages.3.steps=100")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def field_type(key: str, *, section_ok: bool = False) -> Any:
    """The declared type of a dotted config key (stage lists by stage number 1..NUM_STAGES);
    ConfigError naming the key when there is no such key, or (unless ``section_ok``) when it
    names a whole section rather than a value."""
    typ: Any = Config
    parts = key.split(".")
    i = 0
    while i < len(parts):
        part = parts[i]
        if not dataclasses.is_dataclass(typ):
            raise ConfigError(f"unknown key {key}: {'.'.join(parts[:i])} is not a section")
        hints = typing.get_type_hints(typ)
        if part not in hints:
            raise ConfigError(f"unknown key {key} (known: {', '.join(sorted(hints))})")
        typ = hints[part]
        if typing.get_origin(typ) is list and part == "stages":
            i += 1
            n = schedule.NUM_STAGES
            if i >= len(parts) or not parts[i].isdigit() or not 1 <= int(parts[i]) <= n:
                raise ConfigError(f"key {key}: {part} needs a stage number 1..{n}")
            (typ,) = typing.get_args(typ)
        elif typing.get_origin(typ) is list and i + 1 < len(parts):  # a side's sources: the list, or one
            i += 1
            if not parts[i].isdigit() or int(parts[i]) < 1:
                raise ConfigError(f"key {key}: {part} needs a source number from 1")
            (typ,) = typing.get_args(typ)
        i += 1
    if dataclasses.is_dataclass(typ) and not section_ok:
        raise ConfigError(f"key {key} is a section, not a value")
    return typ


def apply_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (stages numbered 1..NUM_STAGES) to ``value`` in a ``Config.to_dict()``
    tree, in place; ConfigError naming the key when the config has no such key. A key naming a
    section (``data.augment``) replaces the whole section with ``value`` (a mapping). Values are
    type-checked when the tree is built into a Config (``config_from_dict``)."""
    field_type(key, section_ok=True)
    _normalize_sources(tree)
    node: Any = tree
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = _item(node, part, key) if isinstance(node, list) else node[part]
        if not isinstance(node, dict | list):  # an earlier override replaced the section
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        _item(node, last, key)  # the item must exist
        node[int(last) - 1] = value
    else:
        node[last] = value


def _item(items: list[Any], number: str, key: str) -> Any:
    """Item ``number`` (1-based) of a config list, or ConfigError naming the key and the count."""
    if not 1 <= int(number) <= len(items):
        where = key.rsplit(".", 1)[0] if key.endswith(f".{number}") else key.split(f".{number}.")[0]
        raise ConfigError(f"override {key}: {where} has {len(items)} item(s), no item {number}")
    return items[int(number) - 1]


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """A validated Config: ``base`` (a ``Config.to_dict()``, left as it is) with key -> value
    overrides applied."""
    tree = copy.deepcopy(base)
    for key, value in overrides.items():
        apply_override(tree, key, value)
    return config_from_dict(tree)
