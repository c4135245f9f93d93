"""The scorer's per-row scores (``pose3d.eval.score.RowScores``) -> the paper's tables (per action,
per joint, per group, bone symmetry), written as JSON and Markdown, and the report's figures (bar
charts, sample grids; drawn by ``pose3d.viz.draw3d``). ``pose3d eval`` and ``pose3d predict`` write
through here.

A report has one section per dataset found in the rows (the ``dataset`` column), scored by its kind
(``schema.EVAL_KIND``); each table appears only when the rows have what it needs:
- "h36m" kind with 3D labels: MPJPE (paper protocol and plain) and PA-MPJPE per action, in the
  paper's 15-action order, with the average over actions (docs/conventions.md, "Evaluation").
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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pose3d import geometry, metrics, skeleton, storage
from pose3d.data.shards import rows_by_id
from pose3d.eval.predict import EVAL_COLUMNS, ImagePrediction, PeoplePrediction, prepare_rows
from pose3d.eval.score import RowScores, symmetry_table
from pose3d.schema import DATASETS, EVAL_KIND

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
    where the row has no head box (such rows are left out and counted: ``metrics.pckh`` needs a
    positive normalizer for every visible joint; docs/conventions.md, "PCKh"). Returns
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


# --- the whole report ------------------------------------------------------------------------------


def _dataset_order(names: np.ndarray) -> list[str]:
    present = set(np.asarray(names).astype(str))
    return [d for d in DATASETS if d in present] + sorted(present - set(DATASETS))


def _annotation_note(kind: str, counts: dict[str, int]) -> str | None:
    """Say which 3D annotation the rows hold; warn when 3DHP rows lack univ_annot3, the official
    ground truth (docs/conventions.md, "3DHP ground truth")."""
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
    kind = EVAL_KIND.get(dataset, "other")
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
                    f"(docs/conventions.md, PCKh), {table['rows']} scored."
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
    """The report as strict JSON (NaN -> null)."""
    path = Path(path)
    storage.write_text(str(path), json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
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
    """``to_markdown``'s text written to ``path``."""
    path = Path(path)
    storage.write_text(str(path), to_markdown(report, figures))
    return path


# --- figures -----------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    """A dataset name as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_figures(
    report: Mapping[str, Any],
    preds: Mapping[str, np.ndarray],
    rs: RowScores,
    data: str | Sequence[str],
    out: str | Path,
    input_size: int,
    output_size: int,
    grid: int,
) -> dict[str, dict[str, str]]:
    """Each dataset's bar chart(s) and, with ``grid`` > 0, a grid of that many sample predictions
    (re-read from the shards under ``data``) as PNGs in the local folder ``out``. Returns dataset ->
    {caption: file name relative to ``out``}."""
    from pose3d.viz import draw3d

    out = Path(out)
    figures: dict[str, dict[str, str]] = {}
    for name, sec in report["datasets"].items():
        figs: dict[str, str] = {}
        tag = _safe(name)
        if "actions" in sec:
            t = sec["actions"]
            path = draw3d.bar_chart(
                out / f"actions_{tag}.png",
                t["actions"],
                {
                    "MPJPE (paper)": [t["means"]["mpjpe"][a] for a in t["actions"]],
                    "PA-MPJPE": [t["means"]["pa_mpjpe"][a] for a in t["actions"]],
                },
                reference={"MPJPE (paper)": t["average"]["mpjpe"], "PA-MPJPE": t["average"]["pa_mpjpe"]},
                ylabel="mm",
                title=f"{name}: error per action",
            )
            figs["Per-action error"] = path.name
        if "groups" in sec:
            t = sec["groups"]
            cats = [t["labels"][g] for g in t["groups"]] + ["All"]
            series = {
                label: [100 * v if v is not None else None for v in [*t["means"][k].values(), t["all"][k]]]
                for k, label in (("pck3d", "3DPCK@150mm"), ("auc3d", "AUC"))
            }
            path = draw3d.bar_chart(
                out / f"groups_{tag}.png", cats, series, ylabel="%", title=f"{name}: 3DPCK and AUC per group"
            )
            figs["3DPCK and AUC per group"] = path.name
        if "pckh" in sec:
            cols = sec["pckh"]["columns"]
            series = {"PCKh@0.5": [None if v is None else 100 * v for v in cols.values()]}
            path = draw3d.bar_chart(
                out / f"pckh_{tag}.png", list(cols), series, ylabel="%", title=f"{name}: PCKh@0.5 per joint"
            )
            figs["PCKh per joint"] = path.name
        if grid > 0:
            path = sample_grid(
                out / f"samples_{tag}.png", name, preds, rs, data, input_size, output_size, grid
            )
            figs["Sample predictions (best to worst)"] = path.name
        figures[name] = figs
    return figures


def sample_grid(
    path: str | Path,
    dataset: str,
    preds: Mapping[str, np.ndarray],
    rs: RowScores,
    data: str | Sequence[str],
    input_size: int,
    output_size: int,
    k: int,
) -> Path:
    """Up to ``k`` rows of ``dataset`` from best to worst (MPJPE, else 2D PCK), re-read from the
    shards: crop + predicted 2D skeleton beside the predicted (true scale where known) and true 3D.
    Returns the PNG path."""
    from pose3d.viz import draw3d

    idx = np.flatnonzero(preds["dataset"] == dataset)
    s = rs.scores
    has_3d = preds["has_3d"][idx].astype(bool)
    key = np.where(has_3d, s.mpjpe[idx], -s.pck2d[idx])
    pick = idx[draw3d.spread_rows(key, k)]
    rows = rows_by_id(data, preds["row_id"][pick], EVAL_COLUMNS)
    images = prepare_rows(rows, input_size, output_size)["image"].transpose(0, 2, 3, 1)
    joints = geometry.output_to_input_px(preds["pred_joints"][pick], input_size / output_size)
    has = preds["has_3d"][pick].astype(bool)
    pred_3d = np.where(has[:, None, None], rs.pred_known_mm[pick], rs.pred_mm[pick])
    gt = geometry.root_align(preds["joints_3d"][pick])
    labels = []
    for i in pick:
        where = preds["action"][i] or preds["group"][i] or preds["subject"][i] or dataset
        score = f"MPJPE {s.mpjpe[i]:.0f} mm" if preds["has_3d"][i] else f"2D PCK {100 * s.pck2d[i]:.0f}%"
        labels.append(f"{where} | {score}")
    return draw3d.skeleton_grid(path, images, joints, pred_3d, gt, labels=labels)


def write_report(
    out: str | Path,
    preds: Mapping[str, np.ndarray],
    rs: RowScores,
    meta: Mapping[str, Any],
    data: str | Sequence[str],
    input_size: int,
    output_size: int,
    grid: int,
) -> tuple[dict[str, Any], Path]:
    """The whole ``pose3d eval`` output in the local folder ``out``: the figures, ``report.json`` and
    ``report.md``. Returns the report (with its "figures": dataset -> {caption: file}) and the
    Markdown path."""
    out = Path(out)
    report = build_report(preds, rs, meta)
    figures = write_figures(report, preds, rs, data, out, input_size, output_size, grid)
    report["figures"] = figures
    write_json(report, out / "report.json")
    return report, write_markdown(report, out / "report.md", figures)


#: Longest side of the image as drawn by ``pose3d predict`` (px); larger images are shrunk.
MAX_DISPLAY_SIDE = 900


def people_overlay(
    image_bgr: np.ndarray, people: PeoplePrediction, max_side: int = MAX_DISPLAY_SIDE
) -> np.ndarray:
    """The image (H, W, 3) uint8 BGR, shrunk to at most ``max_side`` px, with each person's box
    (numbered from 1, with the detector's score where there is one) and 2D skeleton drawn.
    Returns (h, w, 3) uint8 BGR."""
    import cv2

    from pose3d.viz import draw2d

    h, w = image_bgr.shape[:2]
    shrink = min(1.0, max_side / max(h, w))
    shown = cv2.resize(image_bgr, (round(w * shrink), round(h * shrink)), interpolation=cv2.INTER_AREA)
    # Pixel centres at integers: x -> (x + 0.5) * shrink - 0.5; box corners scale plainly.
    joints = (np.asarray(people.joints_2d, np.float64) + 0.5) * shrink - 0.5
    boxes = np.asarray(people.boxes, np.float64) * shrink
    thickness = max(1, int(round(max(shown.shape[:2]) / 300)))
    for k in range(len(people)):
        score = people.box_scores[k]
        label = f"{k + 1}" + ("" if np.isnan(score) else f" {score:.2f}")
        draw2d.draw_box(shown, boxes[k], label, thickness=thickness, copy=False)
        draw2d.draw_skeleton(shown, joints[k], thickness=thickness, radius=thickness + 1, copy=False)
    return shown


def people_figure_png(image_bgr: np.ndarray, people: PeoplePrediction, title: str) -> bytes:
    """``pose3d predict``'s figure of one image as PNG bytes: the image with every person's box and
    2D skeleton (``people_overlay``) beside one 3D view per person, tick values in mm from the pelvis
    (``draw3d.people_figure``). Needs at least one person."""
    from pose3d.viz import draw3d

    shown = people_overlay(image_bgr, people)
    labels = [
        f"person {k + 1}" + ("" if np.isnan(people.box_scores[k]) else f" ({people.box_scores[k]:.2f})")
        for k in range(len(people))
    ]
    fig = draw3d.people_figure(shown[..., ::-1], people.pose_mm, labels, title)
    return draw3d.figure_bytes(fig, "png")


def prediction_figure(
    path: str | Path, image_bgr: np.ndarray, result: ImagePrediction | PeoplePrediction, title: str
) -> Path:
    """One image (H, W, 3) uint8 BGR with one person (an ``ImagePrediction``) or several (a
    ``PeoplePrediction``): ``people_figure_png`` written to ``path`` (local or a URI). Returns it."""
    if isinstance(result, ImagePrediction):
        scores = np.zeros(16, np.float32) if result.joint_scores is None else result.joint_scores
        result = PeoplePrediction(
            np.asarray([result.box], np.float64),
            np.asarray(result.joints_2d)[None],
            np.asarray(scores)[None],
            np.asarray(result.pose_mm)[None],
            np.full(1, np.nan),
        )
    storage.write_bytes(str(path), people_figure_png(image_bgr, result, title))
    return Path(path)


def photo_sheet(figures_png: Sequence[bytes], labels: Sequence[str], tile_width: int = 640) -> np.ndarray:
    """A contact sheet of ``pose3d predict``'s figures (PNG bytes): each shrunk to ``tile_width`` px
    wide under a band with its label, in a grid about as tall as wide. Returns (H, W, 3) uint8 BGR."""
    import cv2

    from pose3d.viz import draw2d

    band = 24  # px of label above each figure, so the label never covers the figure's own title
    tiles = []
    for png, label in zip(figures_png, labels, strict=True):
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        size = (tile_width, round(img.shape[0] * tile_width / img.shape[1]))
        tile = np.full((size[1] + band, tile_width, 3), 255, np.uint8)
        tile[band:] = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        cv2.putText(tile, label, (6, band - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    mean_h = float(np.mean([t.shape[0] for t in tiles]))
    columns = max(1, min(len(tiles), int(np.ceil(np.sqrt(len(tiles) * mean_h / tile_width)))))
    return draw2d.contact_sheet(tiles, columns=columns, pad=4)
