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
from pose3d.metrics import SYMMETRY_LIMBS
from pose3d.stats import Spread, paired_difference, spread
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
#: The variant every other is compared with, seed by seed (the paper's method).
REFERENCE = "3D+2D/w geo"

#: Bone-symmetry errors reported (the paper's Table 4): (set, unit) -> the evaluation's key.
SYMMETRY_SETS: dict[tuple[str, str], str] = {
    ("wild_test", "mm"): "pred_mm",
    ("wild_test", "px"): "pred_px",
    ("wild_2d", "px"): "pred_px",
}
LIMBS = tuple(SYMMETRY_LIMBS)
#: The paper's bone symmetry for 3D+2D without -> with the geometric loss (3DHP mm, MPII px).
PAPER_SYMMETRY: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("wild_test", "mm"): {"upper_arm": (42.4, 37.8), "lower_arm": (60.4, 50.7), "upper_leg": (43.5, 43.4),
                          "lower_leg": (59.4, 47.8)},
    ("wild_2d", "px"): {"upper_arm": (6.27, 4.80), "lower_arm": (10.11, 6.64), "upper_leg": (6.89, 4.93),
                        "lower_leg": (8.03, 6.22)},
}  # fmt: skip


def symmetry_key(set_name: str, unit: str, limb: str) -> str:
    """The row key of one bone-symmetry error, e.g. ``sym_wild_test_mm_lower_arm``."""
    return f"sym_{set_name}_{unit}_{limb}"


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
    row = {
        "lab_mpjpe": get(lab, "mpjpe"),
        "wild_pck2d": get(wild2d, "pck2d"),
        "wild_test_pck3d": get(wild, "pck3d"),
        "wild_test_auc3d": get(wild, "auc3d"),
        "wild_test_mpjpe": get(wild, "mpjpe"),
    }
    for (set_name, unit), source in SYMMETRY_SETS.items():
        table = (evaluations.get(set_name) or {}).get("bone_symmetry", {}).get(source) or {}
        for limb in LIMBS:
            value = table.get(limb)
            row[symmetry_key(set_name, unit, limb)] = nan if value is None else float(value)
    return row


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


def _mean(value: float | Spread | None) -> float:
    if isinstance(value, Spread):
        return value.mean
    return math.nan if value is None else float(value)


def _cell(value: float | Spread | None, percent: bool) -> str:
    """A table cell: the value (x 100 for a percentage), or for a figure over seeds its mean ± the
    95 % t-interval's half-width (the mean alone from one seed)."""
    mean = _mean(value)
    if not math.isfinite(mean):
        return "-"
    scale = 100 if percent else 1
    if isinstance(value, Spread) and value.n > 1:
        return f"{scale * mean:.1f} ± {scale * value.half_width:.1f}"
    return f"{scale * mean:.1f}"


def _difference_cell(d: Spread, percent: bool) -> str:
    """A paired difference: signed mean ± half-width, ``*`` when the interval excludes 0."""
    if d.n == 0 or not math.isfinite(d.mean):
        return "-"
    scale = 100 if percent else 1
    if d.n == 1:
        return f"{scale * d.mean:+.1f} (n=1)"
    return f"{scale * d.mean:+.1f} ± {scale * d.half_width:.1f}" + (" *" if d.excludes_zero() else "")


def aggregate(runs: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, Spread]]:
    """variant -> seed -> row  =>  variant -> key -> its ``Spread`` over the seeds."""
    out: dict[str, dict[str, Spread]] = {}
    for variant, by_seed in runs.items():
        keys = sorted({k for row in by_seed.values() for k in row})
        out[variant] = {k: spread([row.get(k, math.nan) for row in by_seed.values()]) for k in keys}
    return out


def paired_differences(
    runs: dict[str, dict[int, dict[str, float]]], reference: str = REFERENCE
) -> dict[str, dict[str, Spread]]:
    """variant -> key -> the ``Spread`` of (variant - reference) over the seeds both ran: the
    comparison the ablation is for, with what a seed does to both taken out. Empty without the
    reference."""
    ref = runs.get(reference)
    if not ref:
        return {}
    out: dict[str, dict[str, Spread]] = {}
    for variant, by_seed in runs.items():
        if variant == reference:
            continue
        keys = sorted({k for row in by_seed.values() for k in row} & {k for row in ref.values() for k in row})
        out[variant] = {
            k: paired_difference(
                {s: r[k] for s, r in by_seed.items() if math.isfinite(r.get(k, math.nan))},
                {s: r[k] for s, r in ref.items() if math.isfinite(r.get(k, math.nan))},
            )
            for k in keys
        }
    return out


def winner(rows: dict[str, dict[str, float]], key: str = "wild_test_pck3d") -> dict[str, Any] | None:
    """The variant best on ``key`` (every row but the baseline) and its margin over the next."""
    col = next(c for c in COLUMNS if c[0] == key)
    higher = col[3]
    scored = [
        (_mean(v.get(key)), n)
        for n, v in rows.items()
        if n != BASELINE_ROW and math.isfinite(_mean(v.get(key)))
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


def _order(names: Sequence[str]) -> list[str]:
    """Variants in the paper's row order (each varied one under its variant), then the rest."""
    rank = {name: i for i, name in enumerate(VARIANTS)}
    return sorted(names, key=lambda n: (rank.get(paper_variant(n), len(rank)), n))


def _seeds_note(rows: dict[str, dict[str, float | Spread]]) -> str:
    counts = sorted({v.n for row in rows.values() for v in row.values() if isinstance(v, Spread) and v.n})
    if not counts or counts == [1]:
        return ""
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"Mean ± the half-width of the 95 % t-interval over {n} seeds (each seed its own stage 1)."


def to_markdown(
    rows: dict[str, dict[str, float | Spread]],
    notes: list[str] | None = None,
    differences: dict[str, dict[str, Spread]] | None = None,
) -> str:
    """The comparison table (rows in the paper's order, then the baseline; a figure over seeds as
    mean ± CI), the winners on the wild test set, the paired differences against ``REFERENCE``,
    the bone-symmetry errors when the rows have them, and the paper's own numbers."""
    head = "| Method | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = ["## Ablation (the paper's layout)", ""]
    if note := _seeds_note(rows):
        lines += [note, ""]
    lines += [head, rule]
    for name in _order(list(rows)):
        cells = [_cell(rows[name].get(c[0], math.nan), c[4]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for key in ("wild_test_pck3d", "wild_test_mpjpe"):
        text = _winner_line(winner(rows, key))
        if text:
            lines.append(f"- {text}")
    pairs = "; ".join(f"{c[1]} = {c[2]}" for c in COLUMNS if c[2] != "-")
    lines += ["", f"Column counterparts in the paper: {pairs}."]
    if differences:
        lines += _differences_md(differences, head, rule)
    if any(k.startswith("sym_") for row in rows.values() for k in row):
        lines += _symmetry_md(rows, differences or {})
    lines += ["", "### The paper's numbers", "", head, rule]
    for name, values in PAPER.items():
        cells = [f"{values[c[0]]:.2f}" if c[0] in values else "-" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _differences_md(differences: dict[str, dict[str, Spread]], head: str, rule: str) -> list[str]:
    lines = [
        "",
        f"### Paired differences against {REFERENCE}",
        "",
        f"Each variant minus {REFERENCE}, seed by seed (the same seed: the same stage 1, file orders "
        "and augmentation), mean ± the 95 % t-interval's half-width, in points or mm; * marks an "
        "interval that excludes 0.",
        "",
        head,
        rule,
    ]
    for name in _order(list(differences)):
        cells = [_difference_cell(differences[name].get(c[0], spread([])), c[4]) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _symmetry_md(
    rows: dict[str, dict[str, float | Spread]], differences: dict[str, dict[str, Spread]]
) -> list[str]:
    """Bone symmetry |left - right| per limb (the paper's Table 4), per set and unit: each variant's
    error, then its paired difference against ``REFERENCE`` (negative: more symmetric)."""
    titles = {"wild_test": "wild test set", "wild_2d": "wild 2D set"}
    head = "| Method | " + " | ".join(limb.replace("_", " ") for limb in LIMBS) + " |"
    rule = "|---|" + "---:|" * len(LIMBS)
    lines = ["", "### Bone symmetry", "",
             "Mean |left − right| bone length per limb: mm at the true scale (rows with 3D), px of the "
             "network input (2D with depth in the same scale).", ""]  # fmt: skip
    variants = [n for n in _order(list(rows)) if n != BASELINE_ROW]
    for (set_name, unit), _ in SYMMETRY_SETS.items():
        keys = [symmetry_key(set_name, unit, limb) for limb in LIMBS]
        if not any(math.isfinite(_mean(rows[n].get(k))) for n in variants for k in keys):
            continue
        lines += [f"#### {titles[set_name]}, {unit}", "", head, rule]
        for name in variants:
            cells = [_cell(rows[name].get(k), False) for k in keys]
            if name in differences:
                paired = [_difference_cell(differences[name].get(k, spread([])), False) for k in keys]
                cells = [c if c == "-" else f"{c} ({d})" for c, d in zip(cells, paired, strict=True)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        paper = PAPER_SYMMETRY.get((set_name, unit))
        if paper:
            cells = [f"{paper[limb][0]:.2f} → {paper[limb][1]:.2f}" for limb in LIMBS]
            lines.append("| the paper, 3D+2D wo → w geo | " + " | ".join(cells) + " |")
        lines.append("")
    if differences:
        lines.append(f"In brackets: the paired difference against {REFERENCE} (* : the interval excludes 0).")
    return lines


def evaluate_variants(
    best_checkpoints: dict[str, str] | dict[str, dict[int, str]],
    eval_sets: dict[str, str],
    *,
    max_rows: int | None = None,
    baseline_from: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score each run's checkpoint on the given sets (``pose3d.eval.score.evaluate_checkpoint``):
    ``best_checkpoints`` is variant -> checkpoint, or variant -> seed -> checkpoint. Returns
    {"variants": {name: {seed: {"checkpoint", set: evaluation}}}, "runs": {name: {seed: row}},
    "rows": {name: {key: Spread over the seeds}} with the mean-pose row, "differences": the paired
    differences against ``REFERENCE``, "baselines"}."""
    from pose3d.eval.score import evaluate_checkpoint

    per_variant: dict[str, Any] = {}
    runs: dict[str, dict[int, dict[str, float]]] = {}
    baselines: dict[str, Any] = {}
    for name, by_seed in best_checkpoints.items():
        seeds = by_seed if isinstance(by_seed, dict) else {0: by_seed}
        for seed, ckpt in sorted(seeds.items()):
            evals: dict[str, Any] = {}
            for set_name, path in eval_sets.items():
                with_baseline = baseline_from if set_name != "wild_2d" and set_name not in baselines else None
                ev = evaluate_checkpoint(ckpt, path, max_rows=max_rows, baseline_from=with_baseline)
                if "baseline" in ev:
                    baselines[set_name] = ev.pop("baseline")
                evals[set_name] = ev
            per_variant.setdefault(name, {})[seed] = {"checkpoint": ckpt, **evals}
            runs.setdefault(name, {})[seed] = scores_row(evals)
    rows: dict[str, dict[str, Any]] = dict(aggregate(runs))
    if baselines:
        rows[BASELINE_ROW] = baseline_row(baselines)
    return {
        "variants": per_variant,
        "runs": runs,
        "rows": rows,
        "differences": paired_differences(runs),
        "baselines": baselines,
    }


def write_report(experiment: str, report: dict[str, Any], notes: list[str] | None = None) -> tuple[str, str]:
    """Write ``ablation.md``, ``ablation.json`` and, for rows over seeds, ``ablation.png`` (the
    table's figures with their intervals) into the experiment folder; return the first two paths."""
    md_path, json_path = storage.join(experiment, "ablation.md"), storage.join(experiment, "ablation.json")
    rows = report["rows"]
    full = {
        **report,
        "winner_wild_test_pck3d": winner(rows, "wild_test_pck3d"),
        "winner_wild_test_mpjpe": winner(rows, "wild_test_mpjpe"),
        "notes": notes or [],
    }
    storage.write_text(md_path, to_markdown(rows, notes, report.get("differences")))
    storage.write_text(json_path, json.dumps(_finite(full), indent=2) + "\n")
    if any(isinstance(v, Spread) for row in rows.values() for v in row.values()):
        png = plot(rows, report.get("differences") or {})
        storage.write_bytes(storage.join(experiment, "ablation.png"), png)
    return md_path, json_path


def plot(rows: dict[str, dict[str, Any]], differences: dict[str, dict[str, Spread]]) -> bytes:
    """A PNG of the table: per column, each variant's mean with its 95 % interval as an error bar
    (the mean pose as a dashed line), and the wild-test bone symmetry in mm; returns its bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [n for n in _order(list(rows)) if n != BASELINE_ROW]
    panels = [(c[0], c[1], 100 if c[4] else 1) for c in COLUMNS]
    panels += [(symmetry_key("wild_test", "mm", limb), f"Wild-test {limb.replace('_', ' ')} |l-r| (mm)", 1)
               for limb in LIMBS]  # fmt: skip
    fig, axes = plt.subplots(3, 3, figsize=(15, 12))
    colours = plt.cm.tab10.colors
    for ax, (key, title, scale) in zip(axes.flat, panels, strict=False):
        spreads = [rows[n].get(key) for n in variants]
        means = [scale * _mean(s) for s in spreads]
        errors = [scale * s.half_width if isinstance(s, Spread) and s.n > 1 else 0.0 for s in spreads]
        ax.bar(range(len(variants)), means, yerr=errors, capsize=4,
               color=[colours[i % len(colours)] for i in range(len(variants))])  # fmt: skip
        for i, name in enumerate(variants):
            d = differences.get(name, {}).get(key)
            if d is not None and d.excludes_zero():
                ax.annotate("*", (i, means[i] + errors[i]), ha="center", va="bottom", fontsize=14)
        baseline = _mean(rows.get(BASELINE_ROW, {}).get(key))
        if math.isfinite(baseline):
            ax.axhline(scale * baseline, color="grey", linestyle="--", label="mean pose")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(variants)), [n.replace(" [", "\n[") for n in variants], rotation=30,
                      ha="right", fontsize=8)  # fmt: skip
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"Ablation: mean ± 95 % CI over seeds; * differs from {REFERENCE} (paired, 95 %)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities (a score a set could not give) become null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, Spread):
        s = value
        return _finite({"mean": s.mean, "std": s.std, "ci95_half_width": s.half_width, "n": s.n})
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    return value


# --- one report over several ablation experiments ------------------------------------------------

#: Config keys that may differ between experiments pooled into one report: the seeds (the point of
#: pooling) and where each experiment's runs live.
POOLABLE_KEYS = ("train.seed", "run.name", "run.storage_path")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a config dict, list items numbered from 1 as overrides name them
    (``train.stages.2.lr``)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree, start=1)
    out: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, dict | list) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pooling_conflicts(plans: Sequence[Any]) -> list[str]:
    """Why ablation ``plans`` (``tune.plan.Plan``) cannot be pooled into one report, one line each
    (empty when they can): each must be an ablation with the same variants, evaluation sets, rows and
    training config apart from ``POOLABLE_KEYS``, the same stage 1 (each seed its own, or one given
    checkpoint), and no seed may be in two of them."""
    problems: list[str] = []
    first = plans[0]
    base = {k: v for k, v in _flat(first.base).items() if k not in POOLABLE_KEYS}
    seen: dict[int, str] = {}
    for p in plans:
        if p.kind != "ablation":
            problems.append(f"{p.experiment}: a search, not an ablation (pose3d best ranks a search)")
            continue
        if p is not first:
            if p.variants != first.variants:
                problems.append(f"{p.experiment}: other variants than {first.experiment}")
            if p.init_given != first.init_given or (
                p.init_given and p.init_checkpoint != first.init_checkpoint
            ):
                problems.append(f"{p.experiment}: another stage 1 than {first.experiment} (--init)")
            if p.eval_sets != first.eval_sets or p.eval_rows != first.eval_rows:
                problems.append(f"{p.experiment}: other evaluation sets or rows than {first.experiment}")
            other = {k: v for k, v in _flat(p.base).items() if k not in POOLABLE_KEYS}
            for key in sorted(set(base) | set(other)):
                if base.get(key) != other.get(key):
                    mine, theirs = other.get(key), base.get(key)
                    problems.append(f"{p.experiment}: {key} is {mine!r}, {first.experiment} has {theirs!r}")
        for seed in p.all_seeds:
            if seed in seen:
                problems.append(f"seed {seed} is in both {seen[seed]} and {p.experiment}")
            seen.setdefault(seed, p.experiment)
    return problems


def pooled_checkpoints(
    parts: Sequence[tuple[Any, Sequence[Any]]],
) -> tuple[dict[str, dict[int, str]], list[str]]:
    """(variant -> seed -> its run's best checkpoint, notes on the runs that have none) over
    ``parts``: (plan, its trials' ``tune.best.TrialSummary``) per experiment."""
    checkpoints: dict[str, dict[int, str]] = {}
    notes: list[str] = []
    for plan, trials in parts:
        for t in trials:
            variant = t.params.get("variant")
            if variant and t.best_checkpoint:
                checkpoints.setdefault(variant, {})[t.seed] = t.best_checkpoint
        for v in plan.variants or {}:
            for s in plan.all_seeds:
                if s not in checkpoints.get(v, {}):
                    notes.append(f"{v}, seed {s}: no checkpoint (the trial failed)")
    return checkpoints, notes
