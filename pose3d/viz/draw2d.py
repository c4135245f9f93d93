"""Drawing 2D skeletons on images and tiling images into contact sheets (OpenCV, BGR uint8).

Generic on purpose: the prep inspector, evaluation reports and ``pose3d predict`` all draw the 16
joints the same way (and ``pose3d predict`` its person boxes, ``draw_box``). The subject's right
side is drawn in red, the left in blue, the spine and head in green; joints that are not visible,
and bones with such an end, are not drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from pose3d import skeleton

#: BGR colours by side of the body.
SIDE_COLORS: dict[str, tuple[int, int, int]] = {
    "right": (40, 40, 230),
    "left": (230, 120, 30),
    "center": (60, 200, 60),
}
_SUBPIXEL_BITS = 4  # OpenCV draws at 1/16 px with ``shift=4``


def joint_side(joint: int) -> str:
    """'right', 'left' or 'center' from the joint's name."""
    name = skeleton.JOINT_NAMES[joint]
    return "right" if name.startswith("r_") else "left" if name.startswith("l_") else "center"


def bone_side(bone: int) -> str:
    """A bone belongs to the side of whichever end has one (the shoulder bone is on its shoulder's side)."""
    sides = {joint_side(j) for j in skeleton.BONES[bone]} - {"center"}
    return sides.pop() if sides else "center"


def _fixed_point(xy: np.ndarray) -> tuple[int, int]:
    scale = 1 << _SUBPIXEL_BITS
    return int(round(float(xy[0]) * scale)), int(round(float(xy[1]) * scale))


def draw_skeleton(
    image: np.ndarray,
    joints_2d: np.ndarray,
    visible: np.ndarray | None = None,
    *,
    thickness: int = 2,
    radius: int = 3,
    copy: bool = True,
) -> np.ndarray:
    """Draw one 16-joint skeleton.

    image (H, W, 3) uint8 BGR; joints_2d (16, 2) px of that image (pixel centres at integers);
    visible (16,) bool or None (all). Returns the drawn image (a copy unless ``copy=False``).
    """
    out = image.copy() if copy else image
    joints = np.asarray(joints_2d, np.float64)
    vis = np.ones(skeleton.NUM_JOINTS, bool) if visible is None else np.asarray(visible, bool)
    vis = vis & np.all(np.isfinite(joints), axis=-1)
    for b, (i, j) in enumerate(skeleton.BONES):
        if vis[i] and vis[j]:
            color = SIDE_COLORS[bone_side(b)]
            cv2.line(
                out,
                _fixed_point(joints[i]),
                _fixed_point(joints[j]),
                color,
                thickness,
                cv2.LINE_AA,
                _SUBPIXEL_BITS,
            )
    for i in np.flatnonzero(vis):
        color = SIDE_COLORS[joint_side(int(i))]
        cv2.circle(
            out, _fixed_point(joints[i]), radius << _SUBPIXEL_BITS, color, -1, cv2.LINE_AA, _SUBPIXEL_BITS
        )
    return out


#: BGR colour of person boxes (yellow: apart from the skeleton's red, blue and green).
BOX_COLOR: tuple[int, int, int] = (0, 215, 255)


def draw_box(
    image: np.ndarray,
    box: Sequence[float],
    label: str = "",
    *,
    color: tuple[int, int, int] = BOX_COLOR,
    thickness: int = 2,
    copy: bool = True,
) -> np.ndarray:
    """Draw a person box with an optional label above its top-left corner (inside the box when the
    box touches the image's top edge).

    image (H, W, 3) uint8 BGR; box (x1, y1, x2, y2) px of that image in corner coordinates (pixel i
    spans [i, i + 1)). Returns the drawn image (a copy unless ``copy=False``).
    """
    out = image.copy() if copy else image
    x1, y1, x2, y2 = (float(v) for v in box)
    # Corner coordinates -> the pixel centres OpenCV draws on: the outline runs along the box's edge pixels.
    p1 = _fixed_point(np.array([x1, y1]))
    p2 = _fixed_point(np.array([x2 - 1.0, y2 - 1.0]))
    cv2.rectangle(out, p1, p2, color, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
    if label:
        scale = max(0.4, thickness * 0.35)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness - 1))
        x = int(round(max(0.0, x1)))
        y = int(round(y1)) - 2 if y1 - th - base - 2 >= 0 else int(round(max(0.0, y1))) + th + base + 2
        cv2.rectangle(out, (x, y - th - base), (x + tw + 4, y + base // 2), color, -1)
        cv2.putText(
            out, label, (x + 2, y - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
            max(1, thickness - 1), cv2.LINE_AA,
        )  # fmt: skip
    return out


def contact_sheet(
    tiles: Sequence[np.ndarray],
    columns: int | None = None,
    labels: Sequence[str] | None = None,
    pad: int = 2,
    background: int = 32,
) -> np.ndarray:
    """Tile images (each (h, w, 3) uint8, sizes may differ) into one sheet, row by row.

    ``columns`` defaults to ceil(sqrt(n)); ``labels`` are written in each tile's top-left corner.
    Returns (H, W, 3) uint8.
    """
    if not tiles:
        raise ValueError("no images to tile")
    n = len(tiles)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    cell_h = max(t.shape[0] for t in tiles) + pad
    cell_w = max(t.shape[1] for t in tiles) + pad
    sheet = np.full((rows * cell_h + pad, columns * cell_w + pad, 3), background, np.uint8)
    for k, tile in enumerate(tiles):
        y, x = pad + (k // columns) * cell_h, pad + (k % columns) * cell_w
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        if labels is not None and labels[k]:
            scale = float(np.clip(tile.shape[1] / 600, 0.3, 1.0))  # readable on 64- to 600-px tiles
            org = (x + 3, y + 3 + int(round(22 * scale)))
            for color, width in (((0, 0, 0), 2), ((255, 255, 255), 1)):  # outlined text
                cv2.putText(sheet, labels[k], org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, width, cv2.LINE_AA)
    return sheet


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write a BGR image (PNG, JPEG... by extension), creating the folder. Raises OSError on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write the image (unknown extension?)")
