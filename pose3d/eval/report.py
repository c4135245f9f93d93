"""Per-row scores -> the paper's tables (per action, per joint, per group, bone symmetry), written as
JSON and Markdown. Pure numpy; the figures are ``pose3d.viz.draw3d``'s.

A report has one section per dataset found in the rows (the ``dataset`` column), scored by its kind
(``evaluate.DATASET_KIND``); each table appears only when the rows have what it needs:
- "h36m" kind with 3D labels: MPJPE (paper protocol and plain) and PA-MPJPE per action, in the
  paper's 15-action order, with the average over actions (SPEC "Evaluation").
- "mpii" kind with head sizes: PCKh@0.5 per joint in the MPII table's columns, mean and total.
- "3dhp" kind with 3D labels: 3DPCK, AUC and MPJPE per group (Studio GS, Studio no GS, Outdoor)
  and over all rows.
- every dataset: left/right bone-length differences in px (the network input's pixels, depth in the
  same scale), and in mm where 3D labels are (prediction at the true scale, and the ground truth's).

JSON keeps fractions in [0, 1] for PCK/AUC and mm for distances; Markdown shows percentages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pose3d import metrics, skeleton
from pose3d.eval.score import DATASET_KIND, RowScores
from pose3d.schema import DATASETS

#: 3DHP's test-set groups in the paper's column order, and how its table names them.
GROUP_LABELS: dict[str, str] = {"studio_gs": "Studio GS", "studio_nogs": "Studio no GS", "outdoor": "Outdoor"}
#: The MPII table's columns -> joints, left and right paired. "Head" is the head top, as in the
#: common MPII evaluation code; the upper neck counts in Mean and Total only.
PCKH_COLUMNS: dict[str, tuple[str, ...]] = {
    "Head": ("head_top",),
    "Shoulder": ("r_shoulder", "l_shoulder"),
    "Elbow": ("r_elbow", "l_elbow"),
    "Wrist": ("r_wrist", "l_wrist"),
    "Hip": ("r_hip", "l_hip"),
    "Knee": ("r_knee", "l_knee"),
    "Ankle": ("r_ankle", "l_ankle"),
}
#: Per-row metric name -> (Markdown label, unit); "%" metrics are fractions scaled by 100 for display.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "mpjpe": ("MPJPE, paper protocol", "mm"),
    "mpjpe_plain": ("MPJPE, plain (scale known)", "mm"),
    "pa_mpjpe": ("PA-MPJPE", "mm"),
    "pck3d": ("3DPCK@150mm", "%"),
    "auc3d": ("AUC 0-150mm", "%"),
    "pck2d": ("2D PCK@0.5 head", "%"),
}
DEFINITIONS = (
    "MPJPE, paper protocol: the predicted 16-joint pose scaled so its 14 bone lengths sum to the "
    "canonical 4296.99 mm, root on the ground-truth root, thorax of both set to the midpoint of pelvis "
    "and upper neck, mean over 16 joints.",
    "MPJPE, plain: root-aligned, the prediction scaled to the ground truth's own bone-length sum "
    "(scale known), the 16 joints as predicted.",
    "PA-MPJPE: after a per-pose similarity (Procrustes) alignment.",
    "3DPCK / AUC: 14 joints, root-aligned, scale known; PCK within 150 mm, AUC over 0..150 mm in 31 steps.",
    "2D PCK: visible joints within half a head size (a tenth of the person box where no head box).",
)


# --- tables (pure functions of per-row values) --------------------------------------------------


def _num(x: float) -> float | None:
    """A float for JSON: NaN (no samples) -> None."""
    x = float(x)
    return None if math.isnan(x) else x


def action_table(values: Mapping[str, np.ndarray], actions: np.ndarray) -> dict[str, Any]:
    """Per-action means of per-row metrics.

    values: metric name -> (B,) per-row values (NaN-free: the caller passes the 3D rows);
    actions (B,) Human3.6M action or sequence names. Returns {"layout": "h36m", "actions": the 15
    actions in the paper's order, "counts", "means": metric -> {action: mean or None}, "average":
    metric -> mean of the present actions' means (the paper's Average), "overall": metric -> mean
    over rows, "missing": actions without rows}. Names that are not Human3.6M actions give the
    same table with layout "generic" and the names sorted.
    """
    actions = np.asarray(actions).astype(str)
    try:
        tables = {k: metrics.per_action_table(v, actions) for k, v in values.items()}
    except ValueError:
        grouped = {k: metrics.per_group_mean(v, actions) for k, v in values.items()}
        first = next(iter(grouped.values()))
        return {
            "layout": "generic",
            "actions": list(first.means),
            "counts": dict(first.counts),
            "means": {k: {a: _num(m) for a, m in g.means.items()} for k, g in grouped.items()},
            "average": {k: _num(g.mean_of_groups) for k, g in grouped.items()},
            "overall": {k: _num(g.overall) for k, g in grouped.items()},
            "missing": [],
        }
    first = next(iter(tables.values()))
    return {
        "layout": "h36m",
        "actions": list(metrics.H36M_ACTIONS),
        "counts": dict(first.counts),
        "means": {k: {a: _num(m) for a, m in t.means.items()} for k, t in tables.items()},
        "average": {k: _num(t.average) for k, t in tables.items()},
        "overall": {k: _num(t.overall) for k, t in tables.items()},
        "missing": list(first.missing),
    }


def group_table(values: Mapping[str, np.ndarray], groups: np.ndarray) -> dict[str, Any]:
    """Per-group means of per-row metrics (3DHP).

    values: metric name -> (B,) per-row values; groups (B,) labels ('' = no group). Returns
    {"groups": present groups, 3DHP's in the paper's order then others sorted, "labels": display
    names, "counts", "means": metric -> {group: mean}, "all": metric -> mean over all rows (the
    3DHP "All" pools frames, so larger groups weigh more)}.
    """
    groups = np.asarray(groups).astype(str)
    labels = np.where(groups == "", "(none)", groups)
    grouped = {k: metrics.per_group_mean(v, labels) for k, v in values.items()}
    present = set(next(iter(grouped.values())).counts)
    order = [g for g in GROUP_LABELS if g in present] + sorted(present - set(GROUP_LABELS))
    first = next(iter(grouped.values()))
    return {
        "groups": order,
        "labels": {g: GROUP_LABELS.get(g, g) for g in order},
        "counts": {g: first.counts[g] for g in order},
        "means": {k: {g: _num(gm.means[g]) for g in order} for k, gm in grouped.items()},
        "all": {k: _num(gm.overall) for k, gm in grouped.items()},
    }


def pckh_table(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray, threshold: float = 0.5
) -> dict[str, Any] | None:
    """PCKh in the MPII table's layout.

    pred, gt (B, 16, 2) px; visible (B, 16) bool; head_size (B,) the normalizer in the same px, NaN
    where the row has no head box (DECISIONS 6: such rows are left out and counted). Returns
    {"threshold", "columns": {Head..Ankle: mean of the paired joints' PCKh, "Mean", "Total"},
    "per_joint": {joint: PCKh or None}, "rows", "excluded_no_head_size"}, or None when no row has a
    head size.
    """
    head_size = np.asarray(head_size, np.float64)
    ok = np.isfinite(head_size) & (head_size > 0)
    if not ok.any():
        return None
    res = metrics.pckh(pred[ok], gt[ok], np.asarray(visible, bool)[ok], head_size[ok], threshold)
    per_joint = {name: _num(res.per_joint[i]) for i, name in enumerate(skeleton.JOINT_NAMES)}
    columns: dict[str, float | None] = {}
    for column, joints in PCKH_COLUMNS.items():
        seen = [v for v in (per_joint[j] for j in joints) if v is not None]
        columns[column] = float(np.mean(seen)) if seen else None
    columns["Mean"], columns["Total"] = _num(res.mean), _num(res.total)
    return {
        "threshold": threshold,
        "columns": columns,
        "per_joint": per_joint,
        "rows": int(ok.sum()),
        "excluded_no_head_size": int((~ok).sum()),
    }


def symmetry_table(
    pred_px: np.ndarray | None, pred_mm: np.ndarray | None = None, gt_mm: np.ndarray | None = None
) -> dict[str, Any]:
    """Mean |left - right| bone length per limb (``metrics.bone_symmetry``).

    pred_px (B, 16, 3) network-input px (2D with depth in the same scale); pred_mm (B', 16, 3) mm at
    the true scale and gt_mm (B', 16, 3) its ground truth, or None. Returns {"limbs", and for each
    given input "pred_px" / "pred_mm" / "gt_mm": {limb: mean}}.
    """
    out: dict[str, Any] = {"limbs": list(metrics.SYMMETRY_LIMBS)}
    for name, joints in (("pred_px", pred_px), ("pred_mm", pred_mm), ("gt_mm", gt_mm)):
        if joints is not None and len(joints):
            out[name] = {limb: _num(v.mean()) for limb, v in metrics.bone_symmetry(joints).items()}
    return out


# --- the whole report ------------------------------------------------------------------------------


def _dataset_order(names: np.ndarray) -> list[str]:
    present = set(np.asarray(names).astype(str))
    return [d for d in DATASETS if d in present] + sorted(present - set(DATASETS))


def _annotation_note(kind: str, counts: dict[str, int]) -> str | None:
    """DECISIONS 7: say which 3D annotation the rows hold; warn when 3DHP rows lack univ_annot3."""
    if not counts:
        return None
    named = ", ".join(f"{k or 'unnamed (camera mm)'} ({n} rows)" for k, n in sorted(counts.items()))
    note = f"3D ground truth: {named}."
    if kind == "3dhp" and set(counts) != {"univ_annot3"}:
        note += " The official MPI-INF-3DHP ground truth is univ_annot3; rows without it are scored as given."
    return note


def dataset_section(
    preds: Mapping[str, np.ndarray], rs: RowScores, rows: np.ndarray, dataset: str
) -> dict[str, Any]:
    """The report section of one dataset: ``rows`` (N,) bool selects its rows of ``preds``/``rs``."""
    kind = DATASET_KIND.get(dataset, "other")
    s = {k: np.asarray(v)[rows] for k, v in vars(rs.scores).items()}
    has_3d = np.asarray(preds["has_3d"], bool)[rows]
    annotations = np.asarray(preds["annotation_3d"]).astype(str)[rows][has_3d]
    labels, counts = np.unique(annotations, return_counts=True)
    section: dict[str, Any] = {
        "kind": kind,
        "rows": int(rows.sum()),
        "rows_3d": int(has_3d.sum()),
        "annotation_3d": {str(a): int(c) for a, c in zip(labels, counts, strict=True)},
        "summary": {k: _num(np.nanmean(v)) if np.isfinite(v).any() else None for k, v in s.items()},
        "notes": [],
    }
    note = _annotation_note(kind, section["annotation_3d"])
    if note:
        section["notes"].append(note)
    if kind == "h36m" and has_3d.any():
        metric_rows = {k: s[k][has_3d] for k in ("mpjpe", "mpjpe_plain", "pa_mpjpe")}
        section["actions"] = action_table(metric_rows, np.asarray(preds["action"])[rows][has_3d])
    if kind == "3dhp" and has_3d.any():
        metric_rows = {k: s[k][has_3d] for k in ("pck3d", "auc3d", "mpjpe")}
        section["groups"] = group_table(metric_rows, np.asarray(preds["group"])[rows][has_3d])
    if kind == "mpii":
        table = pckh_table(
            np.asarray(preds["pred_joints"])[rows],
            np.asarray(preds["joints_out"])[rows],
            np.asarray(preds["visible"])[rows],
            np.asarray(preds["head_size_out"])[rows],
        )
        if table is None:
            section["notes"].append("No row has a head size: PCKh not computed (2D PCK uses the box).")
        else:
            section["pckh"] = table
            if table["excluded_no_head_size"]:
                section["notes"].append(
                    f"PCKh: {table['excluded_no_head_size']} rows without a head size left out "
                    f"(DECISIONS 6), {table['rows']} scored."
                )
    gt = np.asarray(preds["joints_3d"], np.float64)[rows][has_3d]
    section["bone_symmetry"] = symmetry_table(
        rs.pred_px[rows], rs.pred_known_mm[rows][has_3d] if has_3d.any() else None, gt if len(gt) else None
    )
    return section


def build_report(
    preds: Mapping[str, np.ndarray], rs: RowScores, meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The whole report: ``meta`` (checkpoint, data, options, timing...) and one section per dataset."""
    datasets = np.asarray(preds["dataset"]).astype(str)
    report: dict[str, Any] = dict(meta or {})
    report["rows"] = len(datasets)
    report["units"] = {"mm": "millimetres", "pck": "fraction in [0, 1]", "px": "network-input pixels"}
    report["datasets"] = {d: dataset_section(preds, rs, datasets == d, d) for d in _dataset_order(datasets)}
    return report


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars and arrays -> Python."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
    return path


# --- Markdown ----------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if unit == "%" else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> list[str]:
    sep = ["---" if i == 0 and align_first_left else "---:" for i in range(len(header))]
    return [f"| {' | '.join(header)} |", f"| {' | '.join(sep)} |"] + [f"| {' | '.join(r)} |" for r in rows]


def _overview(report: Mapping[str, Any]) -> list[str]:
    keys = ["mpjpe", "mpjpe_plain", "pa_mpjpe", "pck3d", "auc3d", "pck2d"]
    header = ["dataset", "kind", "rows", "3D rows"] + [
        f"{METRIC_LABELS[k][0]} ({METRIC_LABELS[k][1]})" for k in keys
    ]
    rows = []
    for name, sec in report["datasets"].items():
        values = [_fmt(sec["summary"].get(k), METRIC_LABELS[k][1]) for k in keys]
        rows.append([name, sec["kind"], str(sec["rows"]), str(sec["rows_3d"]), *values])
    return _table(header, rows)


def _actions_md(t: Mapping[str, Any]) -> list[str]:
    header = ["", *t["actions"], "Average"]
    rows = []
    for key, means in t["means"].items():
        label, unit = METRIC_LABELS[key]
        rows.append(
            [
                f"{label} ({unit})",
                *(_fmt(means[a], unit) for a in t["actions"]),
                _fmt(t["average"][key], unit),
            ]
        )
    rows.append(["rows", *(str(t["counts"][a]) for a in t["actions"]), str(sum(t["counts"].values()))])
    lines = _table(header, rows)
    if t["missing"]:
        present = len(t["actions"]) - len(t["missing"])
        missing = ", ".join(t["missing"])
        lines += ["", f"No rows for {missing}: the Average is over the {present} actions present."]
    if t["layout"] == "generic":
        lines += ["", "The action names are not Human3.6M's 15 actions: listed as found."]
    return lines


def _groups_md(t: Mapping[str, Any]) -> list[str]:
    header = ["", *(t["labels"][g] for g in t["groups"]), "All"]
    rows = []
    for key, means in t["means"].items():
        label, unit = METRIC_LABELS[key]
        rows.append(
            [f"{label} ({unit})", *(_fmt(means[g], unit) for g in t["groups"]), _fmt(t["all"][key], unit)]
        )
    rows.append(["rows", *(str(t["counts"][g]) for g in t["groups"]), str(sum(t["counts"].values()))])
    return _table(header, rows)


def _pckh_md(t: Mapping[str, Any]) -> list[str]:
    cols = t["columns"]
    return _table(["", *cols], [[f"PCKh@{t['threshold']:g} (%)", *(_fmt(v, "%") for v in cols.values())]]) + [
        "",
        f"{t['rows']} people scored; Mean = mean over the 14 joints, Total = pooled over them.",
    ]


def _symmetry_md(t: Mapping[str, Any]) -> list[str]:
    cols = [
        (k, lab)
        for k, lab in (
            ("pred_mm", "predicted (mm)"),
            ("gt_mm", "ground truth (mm)"),
            ("pred_px", "predicted (px)"),
        )
        if k in t
    ]
    rows = [[limb.replace("_", " "), *(_fmt(t[k][limb], k[-2:]) for k, _ in cols)] for limb in t["limbs"]]
    return _table(["limb: mean abs(left - right)", *(lab for _, lab in cols)], rows)


def to_markdown(report: Mapping[str, Any], figures: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The report as Markdown. ``figures``: dataset -> {caption: relative PNG path} to link."""
    figures = figures or {}
    lines = ["# pose3d evaluation", ""]
    if "checkpoint" in report:
        lines.append(f"- Checkpoint: {report['checkpoint']}")
    if "data" in report:
        data = report["data"]
        lines.append(f"- Data: {data if isinstance(data, str) else ', '.join(map(str, data))}")
    inf = report.get("inference")
    if inf:
        lines.append(
            f"- Inference: {report['rows']} rows in {inf['seconds']:.1f} s, "
            f"{inf['rows_per_s']:.1f} rows/s ({inf['engine']})"
        )
    options = report.get("options")
    if options:
        lines.append("- Options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    lines += ["", "## Overview", "", *_overview(report), ""]
    for name, sec in report["datasets"].items():
        lines += [f"## {name} ({sec['kind']}-style scoring, {sec['rows']} rows)", ""]
        lines += [f"- {n}" for n in sec["notes"]]
        if sec["notes"]:
            lines.append("")
        if "actions" in sec:
            lines += ["### Per action", "", *_actions_md(sec["actions"]), ""]
        if "groups" in sec:
            lines += ["### Per group", "", *_groups_md(sec["groups"]), ""]
        if "pckh" in sec:
            lines += ["### PCKh per joint", "", *_pckh_md(sec["pckh"]), ""]
        lines += ["### Bone symmetry", "", *_symmetry_md(sec["bone_symmetry"]), ""]
        for caption, path in figures.get(name, {}).items():
            lines += [f"![{caption}]({path})", ""]
    lines += ["## Definitions", "", *(f"- {d}" for d in DEFINITIONS), ""]
    return "\n".join(lines)


def write_markdown(
    report: Mapping[str, Any], path: str | Path, figures: Mapping[str, Mapping[str, str]] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(report, figures))
    return path
