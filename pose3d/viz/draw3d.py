"""Evaluation figures with matplotlib's Agg canvas (no pyplot, no global backend switch): bar charts
of per-action / per-group / per-joint scores, and crops with their predicted 2D skeleton beside the
predicted and ground-truth 3D skeletons.

Colours follow ``pose3d.viz.draw2d``: the subject's right side red, left blue, spine and head green.
3D poses are in camera axes (x right, y down, z away from the camera, mm) and are drawn with the
image's up as up, seen from slightly above and to the side.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator

from pose3d import skeleton
from pose3d.viz import draw2d

#: (elevation, azimuth) of the 3D views, degrees: a little above and to the side of the camera.
VIEW_3D = (12.0, -72.0)
#: Half the side of the 3D plot box around the root, mm (a standing person fits).
HALF_EXTENT_MM = 1000.0
#: Tick spacing of 3D views drawn with tick values, mm (400: no tick at the box's edges, where
#: the labels of two axes would meet).
TICK_STEP_MM = 400.0


def _rgb(side: str) -> tuple[float, float, float]:
    b, g, r = draw2d.SIDE_COLORS[side]
    return (r / 255.0, g / 255.0, b / 255.0)


def _save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 100) -> bytes:
    """A figure encoded as ``fmt`` (png, jpg, pdf, svg), for writing through ``pose3d.storage``."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    # Fast PNG compression: zlib's default level costs more than drawing a many-panel figure.
    options = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
    fig.savefig(buf, format=fmt, dpi=dpi, **options)
    return buf.getvalue()


def bar_chart(
    path: str | Path,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    ylabel: str,
    title: str,
    reference: Mapping[str, float | None] | None = None,
) -> Path:
    """Grouped bars: one group per category, one bar per series (None = no bar, "n/a" written).

    ``reference``: series -> a value drawn as a dashed line in the series' colour (e.g. the average
    over actions). Returns the PNG path.
    """
    n_cat, n_series = len(categories), max(len(series), 1)
    fig = Figure(figsize=(max(6.0, 0.75 * n_cat + 2.5), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / n_series
    x = np.arange(n_cat)
    colours = ["#3b6fb6", "#e08a2c", "#4a9a4a", "#9b59b6"]
    for k, (name, values) in enumerate(series.items()):
        vals = np.array([np.nan if v is None else v for v in values], np.float64)
        pos = x - 0.4 + width * (k + 0.5)
        colour = colours[k % len(colours)]
        bars = ax.bar(pos, np.nan_to_num(vals), width, label=name, color=colour)
        for bar, v in zip(bars, vals, strict=True):
            text = "n/a" if np.isnan(v) else f"{v:.1f}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
        ref = (reference or {}).get(name)
        if ref is not None and np.isfinite(ref):
            ax.axhline(ref, color=colour, linestyle="--", linewidth=1, label=f"{name}: average {ref:.1f}")
    ax.set_xticks(x, list(categories), rotation=35 if n_cat > 6 else 0, ha="right" if n_cat > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return _save(fig, path)


def draw_skeleton_3d(
    ax, joints_mm: np.ndarray, *, linestyle: str = "-", alpha: float = 1.0, label: str = ""
) -> None:
    """Draw one (16, 3) camera-frame pose (mm) on a 3D axes: x right, z (depth) into the page, -y up.
    Joints with a non-finite coordinate, and their bones, are skipped."""
    p = np.asarray(joints_mm, np.float64)
    ok = np.all(np.isfinite(p), axis=-1)
    for b, (i, j) in enumerate(skeleton.BONES):
        if ok[i] and ok[j]:
            ax.plot(
                [p[i, 0], p[j, 0]],
                [p[i, 2], p[j, 2]],
                [-p[i, 1], -p[j, 1]],
                linestyle=linestyle,
                color=_rgb(draw2d.bone_side(b)),
                alpha=alpha,
                linewidth=2,
                label=label if b == 0 else None,
            )


def _setup_3d(ax, centre: np.ndarray, *, ticks_mm: bool = False) -> None:
    """Limits of ``HALF_EXTENT_MM`` around ``centre`` (3,) camera mm, the view, and the axes' labels:
    bare, or with tick values every ``TICK_STEP_MM`` mm (``ticks_mm``)."""
    c = np.nan_to_num(centre)
    h = HALF_EXTENT_MM
    ax.set_xlim(c[0] - h, c[0] + h)
    ax.set_ylim(c[2] - h, c[2] + h)
    ax.set_zlim(-c[1] - h, -c[1] + h)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(*VIEW_3D)
    if not ticks_mm:
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        ax.set_xlabel("x", labelpad=-12, fontsize=7)
        ax.set_ylabel("depth", labelpad=-12, fontsize=7)
        ax.set_zlabel("up", labelpad=-12, fontsize=7)
        return
    ax.xaxis.set_major_locator(MultipleLocator(TICK_STEP_MM))
    ax.yaxis.set_major_locator(MultipleLocator(2 * TICK_STEP_MM))  # the short, foreshortened depth axis
    ax.zaxis.set_major_locator(MultipleLocator(TICK_STEP_MM))
    ax.tick_params(labelsize=5, pad=0)
    ax.set_xlabel("x (mm)", labelpad=-6, fontsize=6)
    ax.set_ylabel("depth (mm)", labelpad=-6, fontsize=6)
    ax.set_zlabel("up (mm)", labelpad=-6, fontsize=6)


def skeleton_grid(
    path: str | Path,
    images: np.ndarray,
    joints_2d: np.ndarray,
    pred_3d_mm: np.ndarray,
    gt_3d_mm: np.ndarray | None = None,
    visible: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    per_row: int = 2,
) -> Path:
    """Sample crops with their predicted 2D skeleton, each beside its 3D skeleton(s).

    images (K, S, S, 3) uint8 RGB network inputs; joints_2d (K, 16, 2) predicted, px of those
    images; pred_3d_mm (K, 16, 3) root-aligned mm; gt_3d_mm (K, 16, 3) root-aligned mm drawn dashed
    (NaN rows: no ground truth); visible (K, 16) joints to draw in 2D (None: all); labels (K,) titles.
    ``per_row`` samples per figure row. Returns the PNG path.
    """
    k = len(images)
    if k == 0:
        raise ValueError("no samples to draw")
    rows = int(np.ceil(k / per_row))
    fig = Figure(figsize=(3.2 * 2 * per_row, 3.3 * rows))
    for i in range(k):
        r, c = divmod(i, per_row)
        ax_img = fig.add_subplot(rows, 2 * per_row, r * 2 * per_row + 2 * c + 1)
        bgr = np.ascontiguousarray(images[i][..., ::-1])
        thickness = max(1, int(round(images[i].shape[0] / 128)))
        drawn = draw2d.draw_skeleton(
            bgr,
            joints_2d[i],
            None if visible is None else visible[i],
            thickness=thickness,
            radius=thickness + 1,
        )
        ax_img.imshow(drawn[..., ::-1])
        ax_img.set_axis_off()
        if labels is not None:
            ax_img.set_title(labels[i], fontsize=8)
        ax_3d = fig.add_subplot(rows, 2 * per_row, r * 2 * per_row + 2 * c + 2, projection="3d")
        draw_skeleton_3d(ax_3d, pred_3d_mm[i], label="predicted")
        has_gt = gt_3d_mm is not None and np.all(np.isfinite(gt_3d_mm[i]))
        if has_gt:
            draw_skeleton_3d(ax_3d, gt_3d_mm[i], linestyle="--", alpha=0.45, label="ground truth")
        _setup_3d(ax_3d, pred_3d_mm[i].mean(0))
        ax_3d.set_title("3D: predicted (solid)" + (", truth (dashed)" if has_gt else ""), fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def people_figure(
    image_rgb: np.ndarray, poses_mm: np.ndarray, labels: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """An image (already drawn on: boxes, 2D skeletons) beside one 3D view per person.

    image_rgb (H, W, 3) uint8 RGB; poses_mm (K, 16, 3) root-relative camera mm (K >= 1); labels (K,)
    the 3D views' titles (default "person k"). Each view spans ``HALF_EXTENT_MM`` around the root
    (the pelvis) with tick values in mm; the views fill a grid of up to 3 rows beside the image.
    Returns the (unsaved) figure.
    """
    poses = np.asarray(poses_mm, np.float64).reshape(-1, len(skeleton.JOINT_NAMES), 3)
    k = len(poses)
    if k == 0:
        raise ValueError("no poses to draw")
    rows = 1 if k <= 2 else 2 if k <= 6 else 3
    cols = int(np.ceil(k / rows))
    height = max(4.8, 2.7 * rows)
    h, w = image_rgb.shape[:2]
    image_width = height * w / h
    cell = height / rows
    fig = Figure(figsize=(image_width + cols * cell, height))
    # Fixed margins rather than tight_layout, which measures every 3D axis (a quarter of the time).
    grid = fig.add_gridspec(
        rows,
        1 + cols,
        width_ratios=[image_width] + [cell] * cols,
        left=0.01,
        right=0.97,
        bottom=0.06,
        top=0.93,
        wspace=0.25,
        hspace=0.3,
    )
    ax_img = fig.add_subplot(grid[:, 0])
    ax_img.imshow(image_rgb)
    ax_img.set_axis_off()
    ax_img.set_title(title or "2D prediction", fontsize=9)
    for i in range(k):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[r, 1 + c], projection="3d")
        draw_skeleton_3d(ax, poses[i])
        _setup_3d(ax, np.zeros(3), ticks_mm=True)
        name = labels[i] if labels is not None else f"person {i + 1}"
        ax.set_title(f"{name}: 3D, mm from the pelvis", fontsize=7)
    return fig


def prediction_figure(
    path: str | Path, image_rgb: np.ndarray, joints_2d: np.ndarray, pred_3d_mm: np.ndarray, title: str = ""
) -> Path:
    """One image with its predicted 2D skeleton (joints_2d (16, 2) px of ``image_rgb``) beside the
    predicted 3D skeleton (16, 3) root-relative mm, with mm ticks. Returns the PNG path."""
    h, w = image_rgb.shape[:2]
    thickness = max(1, int(round(max(h, w) / 250)))
    drawn = draw2d.draw_skeleton(
        np.ascontiguousarray(image_rgb[..., ::-1]), joints_2d, thickness=thickness, radius=thickness + 2
    )[..., ::-1]
    return _save(people_figure(drawn, np.asarray(pred_3d_mm)[None], ["person"], title), path)


def spread_rows(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows spread from the lowest to the highest of ``values`` (N,) (NaN rows last),
    so a grid shows the whole range of quality. Returns (min(k, N),) int."""
    values = np.asarray(values, np.float64)
    order = np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable")
    if len(order) <= k:
        return order
    return order[np.linspace(0, len(order) - 1, k).round().astype(int)]
