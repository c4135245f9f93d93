"""Search spaces: a YAML file over the paper's knobs -> Tune domains (sampled by Optuna's TPE).

A search file names parameters; each has a distribution and the training-config keys it sets::

    seed: 0                        # Optuna TPE seed
    asha: {grace_steps: 20000, reduction_factor: 3}
    trial_overrides: [train.val_every=5000]   # KEY=VALUE applied to every trial
    start_points: [{lambda_reg: 0.1, lambda_geo: 0.01}]   # evaluated first (the paper's values)
    params:
      lambda_geo:
        distribution: loguniform
        low: 0.001
        high: 0.1
        keys: [train.stages.3.geo]
      lr:
        distribution: loguniform
        low: 1.0e-4
        high: 1.0e-3
        keys: {train.stages.2.lr: 1.0, train.stages.3.lr: 0.1}   # key: multiplier

``keys`` is a list (each key gets the value) or a mapping key -> multiplier (the value times the
multiplier; rounded where the config field is an integer, e.g. a stage's steps or lr_drop_step).
Keys use the training config's dotted names with stages numbered 1..3, set through the config's
one override engine (``pose3d.train.config.apply_override``). Every trial starts from the weights
of one stage-1 checkpoint (training stage 1 once serves every trial), so stage 1, the network
(``model.*``: the trials load the stage-1 weights), the run's name and storage, ``scaling.*`` and
the data paths are not searchable. Every error names the file and the parameter.
"""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pose3d.train import schedule
from pose3d.train.config import (
    Config,
    ConfigError,
    apply_override,
    apply_overrides,
    config_from_dict,
    field_type,
    read_named_yaml,
)
from pose3d.train.config import parse_override as parse_config_override

#: Distributions a parameter may use (Tune's names; randint's ``high`` is inclusive here).
DISTRIBUTIONS = ("loguniform", "uniform", "quniform", "qloguniform", "randint", "qrandint", "choice")
#: Config keys (prefixes) a search may not set: the trial owns them (it starts from the stage-1
#: checkpoint's weights, in the search's run folder, with the search's scaling and data).
FORBIDDEN_PREFIXES = (
    "train.stages.1.", "train.init_from", "train.fail_at_step", "run.name", "run.storage_path", "scaling.",
    "model.", "data.set_3d", "data.set_2d", "data.val_3d", "data.val_2d",
)  # fmt: skip
#: ...except a source's weight within its side: ``data.set_2d.2.weight`` (docs/conventions.md, Mixing).
SOURCE_WEIGHT_KEY = re.compile(r"data\.set_(3d|2d)\.\d+\.weight")
#: Stages a trial trains (1-based): every stage after the first.
TRIAL_STAGES: tuple[int, ...] = schedule.STAGES[1:]


class SpaceError(ValueError):
    """A problem in a search-space file, naming the file and the parameter."""


@dataclass(frozen=True)
class Param:
    """One searched knob: a distribution and the config keys its value sets (key -> multiplier)."""

    name: str
    distribution: str
    keys: dict[str, float]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple[Any, ...] = ()

    def domain(self) -> Any:
        """The Tune search domain (``ray.tune.loguniform(...)`` etc.)."""
        from ray import tune

        d, lo, hi = self.distribution, self.low, self.high
        if d == "loguniform":
            return tune.loguniform(lo, hi)
        if d == "uniform":
            return tune.uniform(lo, hi)
        if d == "quniform":
            return tune.quniform(lo, hi, self.q)
        if d == "qloguniform":
            return tune.qloguniform(lo, hi, self.q)
        if d == "randint":
            return tune.randint(int(lo), int(hi) + 1)  # Tune's upper bound is exclusive
        if d == "qrandint":
            return tune.qrandint(int(lo), int(hi), int(self.q))
        return tune.choice(list(self.values))

    def extremes(self) -> list[Any]:
        """The values that bound what this parameter can take (for validation)."""
        return list(self.values) if self.distribution == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    seed: int = 0
    grace_steps: int | None = None  # ASHA's first rung, in steps within stages 2-3
    reduction_factor: int = 3
    trial_overrides: tuple[str, ...] = ()
    start_points: tuple[dict[str, Any], ...] = ()
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def param_space(self) -> dict[str, Any]:
        """Parameter name -> Tune domain."""
        return {p.name: p.domain() for p in self.params}

    def overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """Sampled values (name -> value) -> config key -> value, multipliers and rounding applied."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name not in values:
                raise SpaceError(f"{self.source}: no value for parameter {p.name!r}")
            for key, factor in p.keys.items():
                out[key] = scaled_value(key, values[p.name], factor)
        return out


# --- config keys ---------------------------------------------------------------------------------


def _is_integer_field(typ: Any) -> bool:
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return int in typing.get_args(typ) and float not in typing.get_args(typ)
    return typ is int


def scaled_value(key: str, value: Any, factor: float) -> Any:
    """``value * factor`` for a numeric key (rounded for integer fields); the value itself otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    scaled = value * factor
    if _is_integer_field(field_type(key)):
        return int(round(scaled))
    return float(scaled)


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (VALUE read as YAML) -> (key, value), as ``pose3d train`` reads overrides."""
    try:
        return parse_config_override(item)
    except ConfigError:
        raise SpaceError(f"override {item!r}: expected KEY=VALUE, e.g. train.val_every=100") from None


# --- parsing -------------------------------------------------------------------------------------


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise SpaceError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise SpaceError(f"{where}: keys must be dotted config names, got {key!r}")
    forbidden = any(key == p.rstrip(".") or key.startswith(p) for p in FORBIDDEN_PREFIXES)
    if forbidden and not SOURCE_WEIGHT_KEY.fullmatch(key):
        raise SpaceError(
            f"{where}: {key} is not searchable (trials start from the weights of one stage-1 checkpoint, "
            "so its network; the search sets their run name, storage, scaling and data paths; "
            "a source's weight, data.set_2d.N.weight, is searchable)"
        )
    try:
        field_type(key)
    except ConfigError as err:
        raise SpaceError(f"{where}: {err}") from None
    return key


def _parse_param(name: str, spec: Any, where: str) -> Param:
    where = f"{where}: params.{name}"
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected a mapping with distribution and keys")
    known = {"distribution", "low", "high", "q", "values", "keys"}
    unknown = set(spec) - known
    if unknown:
        raise SpaceError(f"{where}: unknown field {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})")
    dist = spec.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: distribution must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
    raw_keys = spec.get("keys")
    if isinstance(raw_keys, str):
        raw_keys = [raw_keys]
    if isinstance(raw_keys, list) and raw_keys:
        keys = {check_key(k, where): 1.0 for k in raw_keys}
    elif isinstance(raw_keys, dict) and raw_keys:
        keys = {check_key(k, where): _number(f, f"{where}: keys.{k}") for k, f in raw_keys.items()}
    else:
        raise SpaceError(f"{where}: keys must be a non-empty list of config keys or a key -> multiplier map")

    if dist == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: choice needs a non-empty list of values")
        if any(f != 1.0 for f in keys.values()) and not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise SpaceError(f"{where}: multipliers need numeric values")
        return Param(name, dist, keys, values=tuple(values))
    if "values" in spec:
        raise SpaceError(f"{where}: values belongs to the choice distribution; use low and high")
    for bound in ("low", "high"):
        if bound not in spec:
            raise SpaceError(f"{where}: {dist} needs low and high")
    low, high = _number(spec["low"], f"{where}: low"), _number(spec["high"], f"{where}: high")
    if not low < high:
        raise SpaceError(f"{where}: low ({low:g}) must be below high ({high:g})")
    if dist in ("loguniform", "qloguniform") and low <= 0:
        raise SpaceError(f"{where}: {dist} needs low > 0, got {low:g}")
    q = None
    if dist.startswith("q"):
        if "q" not in spec:
            raise SpaceError(f"{where}: {dist} needs q (the step between values)")
        q = _number(spec["q"], f"{where}: q")
        if q <= 0:
            raise SpaceError(f"{where}: q must be > 0, got {q:g}")
    elif "q" in spec:
        raise SpaceError(f"{where}: q belongs to the q* distributions (quniform, qrandint, ...)")
    if dist in ("randint", "qrandint"):
        for label, v in (("low", low), ("high", high), ("q", q)):
            if v is not None and not float(v).is_integer():
                raise SpaceError(f"{where}: {dist} needs an integer {label}, got {v:g}")
    return Param(name, dist, keys, low=low, high=high, q=q)


def parse_space(data: Any, source: str = "search space") -> SearchSpace:
    """A parsed, self-consistent search space from a YAML mapping (raises SpaceError)."""
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: the top level must be a mapping with params")
    known = {"params", "seed", "asha", "trial_overrides", "start_points"}
    unknown = set(data) - known
    if unknown:
        first = sorted(unknown)[0]
        raise SpaceError(f"{source}: unknown field {first!r} (known: {', '.join(sorted(known))})")
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise SpaceError(f"{source}: params must be a non-empty mapping of name -> distribution")
    params = tuple(_parse_param(str(name), spec, source) for name, spec in raw_params.items())
    owners: dict[str, str] = {}
    for p in params:
        for key in p.keys:
            if key in owners:
                raise SpaceError(f"{source}: {key} is set by both {owners[key]!r} and {p.name!r}")
            owners[key] = p.name

    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpaceError(f"{source}: seed must be an integer, got {seed!r}")
    asha = data.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - {"grace_steps", "reduction_factor"}:
        raise SpaceError(f"{source}: asha takes grace_steps and reduction_factor")
    grace = asha.get("grace_steps")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 1):
        raise SpaceError(f"{source}: asha.grace_steps must be an integer >= 1, got {grace!r}")
    rf = asha.get("reduction_factor", 3)
    if isinstance(rf, bool) or not isinstance(rf, int) or rf < 2:
        raise SpaceError(f"{source}: asha.reduction_factor must be an integer >= 2, got {rf!r}")

    overrides = data.get("trial_overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SpaceError(f"{source}: trial_overrides must be a list of KEY=VALUE strings")
    for item in overrides:
        try:
            key, _ = parse_override(item)
        except SpaceError as err:
            raise SpaceError(f"{source}: trial_overrides: {err}") from None
        check_key(key, f"{source}: trial_overrides")
        if key in owners:
            raise SpaceError(f"{source}: trial_overrides sets {key}, which {owners[key]!r} searches")

    points = data.get("start_points") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise SpaceError(f"{source}: start_points must be a list of name -> value mappings")
    names = {p.name for p in params}
    for i, point in enumerate(points, start=1):
        if set(point) != names:
            raise SpaceError(f"{source}: start_points.{i} must give exactly the params {sorted(names)}")
    return SearchSpace(
        params=params,
        seed=seed,
        grace_steps=grace,
        reduction_factor=rf,
        trial_overrides=tuple(overrides),
        start_points=tuple(points),
        source=source,
        raw=copy.deepcopy(data),
    )


def packaged_spaces() -> list[str]:
    """Names of the search spaces shipped in the ``tune`` package (``--search NAME``)."""
    return sorted(p.name[:-5] for p in resources.files("tune").iterdir() if p.name.endswith("_search.yaml"))


def load_space(path_or_name: str) -> SearchSpace:
    """Read a search-space YAML: a path, or a packaged name (``paper_search`` or ``paper``)."""
    name = path_or_name if path_or_name.endswith("_search") else f"{path_or_name}_search"
    data, where = read_named_yaml(path_or_name, "tune", name, "search space", packaged_spaces(), SpaceError)
    return parse_space(data, where)


# --- against a training config -------------------------------------------------------------------


def trial_base(base: Config, space: SearchSpace) -> dict[str, Any]:
    """The config tree every trial of ``space`` starts from: ``base`` with the trial overrides."""
    tree = base.to_dict()
    for item in space.trial_overrides:
        apply_override(tree, *parse_override(item))
    return tree


def check_space(space: SearchSpace, base: Config) -> None:
    """Raise SpaceError when a parameter's extreme values make an invalid trial config."""
    tree = trial_base(base, space)
    apply_override(tree, schedule.steps_key(1), 0)
    try:
        config_from_dict(copy.deepcopy(tree))
    except ConfigError as err:
        raise SpaceError(f"{space.source}: the trial config (stage 1 at 0 steps) is invalid: {err}") from None
    for p in space.params:
        for value in p.extremes():
            try:
                apply_overrides(tree, {k: scaled_value(k, value, f) for k, f in p.keys.items()})
            except (ConfigError, TypeError, ValueError) as err:
                where = f"{space.source}: params.{p.name} = {value!r}"
                raise SpaceError(f"{where} gives an invalid config: {err}") from None
    for i, point in enumerate(space.start_points, start=1):
        try:
            apply_overrides(tree, space.overrides(point))
        except (ConfigError, TypeError, ValueError) as err:
            raise SpaceError(f"{space.source}: start_points.{i} gives an invalid config: {err}") from None


def step_range(space: SearchSpace, base: dict[str, Any]) -> tuple[int, int]:
    """(fewest, most) optimizer steps a trial runs (stages 2 + 3) over the space: ASHA's time axis."""
    cfg = config_from_dict(copy.deepcopy(base))
    lo = hi = 0
    for stage in TRIAL_STAGES:
        key = schedule.steps_key(stage)
        owner = next((p for p in space.params if key in p.keys), None)
        if owner is None:
            fixed = schedule.stage_steps(cfg, stage)
            lo, hi = lo + fixed, hi + fixed
            continue
        values = [scaled_value(key, v, owner.keys[key]) for v in owner.extremes()]
        lo, hi = lo + min(values), hi + max(values)
    return lo, hi
