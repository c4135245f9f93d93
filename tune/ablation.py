"""The paper's ablation as a preset (``pose3d tune --preset ablation``): four variants trained
from one stage-1 checkpoint, each variant's best checkpoint scored on the lab test set, the wild
2D set and the wild test set, and a comparison table laid out like the paper's.

Variants (docs/conventions.md, "Mixing"): 3D/wo geo = 3D data only, λ_geo 0; 3D/w geo = 3D only, the geometric
term on every row (``loss.geo_rows=all``); 3D+2D/wo geo = half 2D-only rows, λ_geo 0;
3D+2D/w geo = half 2D-only rows, the geometric term on the 2D rows (Eq. 2).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

from pose3d import storage
from pose3d.train import schedule
from pose3d.train.config import Config
from tune.space import TRIAL_STAGES

#: The four variants, in the paper's row order: config key -> value over the base config.
_NO_GEO: dict[str, Any] = {schedule.stage_key(s, "geo"): 0.0 for s in TRIAL_STAGES}
VARIANTS: dict[str, dict[str, Any]] = {
    "3D/wo geo": {"data.ratio_2d": 0.0, **_NO_GEO},
    "3D/w geo": {"data.ratio_2d": 0.0, "loss.geo_rows": "all"},
    "3D+2D/wo geo": {"data.ratio_2d": 0.5, **_NO_GEO},
    "3D+2D/w geo": {"data.ratio_2d": 0.5, "loss.geo_rows": "2d"},
}

#: Table columns: (key, heading, the paper's counterpart, higher is better, shown as a percentage).
COLUMNS: tuple[tuple[str, str, str, bool, bool], ...] = (
    ("lab_mpjpe", "Lab MPJPE (mm)", "H36M MPJPE", False, False),
    ("wild_pck2d", "Wild 2D PCK (%)", "MPII PCKh@0.5", True, True),
    ("wild_test_pck3d", "Wild-test 3DPCK (%)", "3DHP PCK", True, True),
    ("wild_test_auc3d", "Wild-test AUC (%)", "3DHP AUC", True, True),
    ("wild_test_mpjpe", "Wild-test MPJPE (mm)", "-", False, False),
)

#: The paper's numbers for the same rows (its ablation table: H36M MPJPE mm, MPII PCKh@0.5 %, 3DHP
#: PCK % and AUC %); the paper has no wild-test MPJPE.
_PAPER_KEYS = ("lab_mpjpe", "wild_pck2d", "wild_test_pck3d", "wild_test_auc3d")
PAPER: dict[str, dict[str, float]] = {
    name: dict(zip(_PAPER_KEYS, values, strict=True))
    for name, values in {
        "3D/wo geo": (82.44, 90.01, 31.5, 18.0),
        "3D/w geo": (80.98, 90.57, 37.7, 20.9),
        "3D+2D/wo geo": (65.69, 90.93, 65.8, 32.1),
        "3D+2D/w geo": (64.90, 91.62, 69.2, 32.5),
    }.items()
}
BASELINE_ROW = "mean pose (baseline)"


def variant_overrides(cfg: Config, vary: dict[str, list[Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The variants over ``cfg``; the "w geo" ones keep its stage-3 λ_geo, which must be > 0.

    ``vary``: config key -> values, e.g. ``{"data.set_2d.2.weight": [0, 1]}`` (a source's weight);
    every variant that draws 2D rows then runs once per combination of values, named
    ``"3D+2D/w geo [data.set_2d.2.weight=0]"``, and the 3D-only variants, which those keys cannot
    change, once."""
    if not schedule.uses_geometry(cfg, schedule.GEOMETRIC_STAGE):
        raise ValueError(
            f"{schedule.stage_key(schedule.GEOMETRIC_STAGE, 'geo')} is 0: the 'w geo' variants need the "
            "geometric loss on (paper: 0.01)"
        )
    if sum(schedule.stage_steps(cfg, s) for s in TRIAL_STAGES) == 0:
        keys = " and ".join(schedule.steps_key(s) for s in TRIAL_STAGES)
        raise ValueError(f"{keys} are 0: the variants train nothing")
    vary = vary or {}
    combos = [dict(zip(vary, values, strict=True)) for values in itertools.product(*vary.values())]
    out: dict[str, dict[str, Any]] = {}
    for name, over in VARIANTS.items():
        if not vary or over["data.ratio_2d"] == 0:
            out[name] = dict(over)
            continue
        for combo in combos:
            label = ", ".join(f"{k}={v}" for k, v in combo.items())
            out[f"{name} [{label}]"] = {**over, **combo}
    return out


def paper_variant(name: str) -> str:
    """The paper's variant a (possibly varied) variant name belongs to."""
    return name.split(" [", 1)[0]


def scores_row(evaluations: dict[str, dict[str, Any] | None]) -> dict[str, float]:
    """One table row from ``pose3d.eval.score.evaluate_checkpoint`` results on the lab test, wild 2D
    and wild test sets (None where a set was not given): fractions and mm as they come."""
    nan = math.nan
    lab, wild2d, wild = (evaluations.get(k) or {} for k in ("lab_test", "wild_2d", "wild_test"))
    get = lambda ev, key: float(ev.get("model", {}).get(key, nan))  # noqa: E731
    return {
        "lab_mpjpe": get(lab, "mpjpe"),
        "wild_pck2d": get(wild2d, "pck2d"),
        "wild_test_pck3d": get(wild, "pck3d"),
        "wild_test_auc3d": get(wild, "auc3d"),
        "wild_test_mpjpe": get(wild, "mpjpe"),
    }


def baseline_row(baselines: dict[str, dict[str, float] | None]) -> dict[str, float]:
    """The mean-pose row from ``evaluate_checkpoint(..., baseline_from=...)["baseline"]``."""
    nan = math.nan
    lab, wild = baselines.get("lab_test") or {}, baselines.get("wild_test") or {}
    return {
        "lab_mpjpe": float(lab.get("mpjpe", nan)),
        "wild_pck2d": nan,
        "wild_test_pck3d": float(wild.get("pck3d", nan)),
        "wild_test_auc3d": float(wild.get("auc3d", nan)),
        "wild_test_mpjpe": float(wild.get("mpjpe", nan)),
    }


def _cell(value: float, percent: bool) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.1f}"


def winner(rows: dict[str, dict[str, float]], key: str = "wild_test_pck3d") -> dict[str, Any] | None:
    """The variant best on ``key`` (every row but the baseline) and its margin over the next."""
    col = next(c for c in COLUMNS if c[0] == key)
    higher = col[3]
    scored = [
        (v[key], n) for n, v in rows.items() if n != BASELINE_ROW and math.isfinite(v.get(key, math.nan))
    ]
    if not scored:
        return None
    scored.sort(key=lambda t: -t[0] if higher else t[0])
    best_value, best = scored[0]
    out: dict[str, Any] = {"metric": key, "variant": best, "value": best_value}
    if len(scored) > 1:
        out.update(runner_up=scored[1][1], margin=abs(best_value - scored[1][0]))
    return out


def _winner_line(w: dict[str, Any] | None) -> str:
    if w is None:
        return ""
    col = next(c for c in COLUMNS if c[0] == w["metric"])
    scale, unit = (100, " points") if col[4] else (1, " mm")
    line = f"Best on {col[1].split(' (')[0]}: **{w['variant']}** ({_cell(w['value'], col[4])}"
    if "runner_up" in w:
        line += f", {w['margin'] * scale:.1f}{unit} ahead of {w['runner_up']}"
    return line + ")."


def to_markdown(rows: dict[str, dict[str, float]], notes: list[str] | None = None) -> str:
    """The comparison table (rows in the paper's order, then the baseline), the winners on the
    wild test set, and the paper's own numbers for the same layout."""
    head = "| Method | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = ["## Ablation (the paper's layout)", "", head, rule]
    rank = {name: i for i, name in enumerate(VARIANTS)}
    order = sorted(rows, key=lambda n: (rank.get(paper_variant(n), len(rank)), n))
    for name in order:
        cells = [_cell(rows[name].get(c[0], math.nan), c[4]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for key in ("wild_test_pck3d", "wild_test_mpjpe"):
        text = _winner_line(winner(rows, key))
        if text:
            lines.append(f"- {text}")
    pairs = "; ".join(f"{c[1]} = {c[2]}" for c in COLUMNS if c[2] != "-")
    lines += ["", f"Column counterparts in the paper: {pairs}."]
    lines += ["", "### The paper's numbers", "", head, rule]
    for name, values in PAPER.items():
        cells = [f"{values[c[0]]:.2f}" if c[0] in values else "-" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def evaluate_variants(
    best_checkpoints: dict[str, str],
    eval_sets: dict[str, str],
    *,
    max_rows: int | None = None,
    baseline_from: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score each variant's checkpoint on the given sets (``pose3d.eval.score.evaluate_checkpoint``).
    Returns {"variants": {name: {"checkpoint", set: evaluation}}, "rows": table rows}."""
    from pose3d.eval.score import evaluate_checkpoint

    per_variant: dict[str, Any] = {}
    rows: dict[str, dict[str, float]] = {}
    baselines: dict[str, Any] = {}
    for name, ckpt in best_checkpoints.items():
        evals: dict[str, Any] = {}
        for set_name, path in eval_sets.items():
            with_baseline = baseline_from if set_name != "wild_2d" and set_name not in baselines else None
            ev = evaluate_checkpoint(ckpt, path, max_rows=max_rows, baseline_from=with_baseline)
            if "baseline" in ev:
                baselines[set_name] = ev.pop("baseline")
            evals[set_name] = ev
        per_variant[name] = {"checkpoint": ckpt, **evals}
        rows[name] = scores_row(evals)
    if baselines:
        rows[BASELINE_ROW] = baseline_row(baselines)
    return {"variants": per_variant, "baselines": baselines, "rows": rows}


def write_report(experiment: str, report: dict[str, Any], notes: list[str] | None = None) -> tuple[str, str]:
    """Write ``ablation.md`` and ``ablation.json`` into the experiment folder; return their paths."""
    md_path, json_path = storage.join(experiment, "ablation.md"), storage.join(experiment, "ablation.json")
    rows = report["rows"]
    full = {
        **report,
        "winner_wild_test_pck3d": winner(rows, "wild_test_pck3d"),
        "winner_wild_test_mpjpe": winner(rows, "wild_test_mpjpe"),
        "notes": notes or [],
    }
    storage.write_text(md_path, to_markdown(rows, notes))
    storage.write_text(json_path, json.dumps(_finite(full), indent=2) + "\n")
    return md_path, json_path


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities (a score a set could not give) become null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    return value
