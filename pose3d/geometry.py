"""Pure numpy geometry: the pixel convention, crop affines, cameras, alignments.

Pixel convention (docs/conventions.md, Pixel convention), defined here once and used by targets,
augmentation and decoding: pixel centres sit at integer coordinates, so an image of width W spans x
in [-0.5, W - 0.5]. This is OpenCV's convention, so ``cv2.warpAffine`` with the matrices below is
exact. The output map of a network with input size I and output size O has stride I / O.
"""

from __future__ import annotations

import numpy as np

from pose3d import skeleton

# --- pixel convention -------------------------------------------------------------------------


def input_to_output_px(xy: np.ndarray, stride: float) -> np.ndarray:
    """Input-image pixels -> output-map pixels (both with centres at integers). xy (..., 2)."""
    return (np.asarray(xy) + 0.5) / stride - 0.5


def output_to_input_px(xy: np.ndarray, stride: float) -> np.ndarray:
    """Output-map pixels -> input-image pixels, the inverse of ``input_to_output_px``."""
    return (np.asarray(xy) + 0.5) * stride - 0.5


# --- affine transforms (2x3 matrices acting on column vectors [x, y, 1]) ------------------------


def crop_affine(
    center: np.ndarray,
    box_size: np.ndarray,
    out_size: int,
    rotation_deg: np.ndarray | float = 0.0,
    flip: np.ndarray | bool = False,
) -> np.ndarray:
    """Affine mapping source-image pixels into a square crop.

    The square box of side ``box_size`` (source px) centred on ``center`` (source px), rotated by
    ``rotation_deg`` (counter-clockwise in the image as seen, i.e. the content turns that way),
    becomes the ``out_size`` x ``out_size`` crop; ``flip`` mirrors the crop horizontally.

    center (B, 2) or (2,); box_size (B,) or scalar; rotation_deg and flip (B,) or scalar.
    Returns (B, 2, 3), or (2, 3) when every input is unbatched.
    """
    center = np.asarray(center, dtype=np.float64)
    batched = center.ndim == 2
    center = np.atleast_2d(center)
    b = center.shape[0]
    box = np.broadcast_to(np.asarray(box_size, dtype=np.float64), (b,))
    theta = np.deg2rad(np.broadcast_to(np.asarray(rotation_deg, dtype=np.float64), (b,)))
    flip = np.broadcast_to(np.asarray(flip, dtype=bool), (b,))
    scale = out_size / box
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    # Image y points down, so a counter-clockwise turn as seen is a clockwise one in (x, y).
    lin = np.empty((b, 2, 2))
    lin[:, 0, 0], lin[:, 0, 1] = cos, sin
    lin[:, 1, 0], lin[:, 1, 1] = -sin, cos
    lin[flip, 0, :] *= -1
    half = (out_size - 1) / 2.0
    out = np.empty((b, 2, 3))
    out[:, :, :2] = lin
    out[:, :, 2] = half - np.einsum("bij,bj->bi", lin, center)
    return out if batched else out[0]


def invert_affine(a: np.ndarray) -> np.ndarray:
    """Inverse of (..., 2, 3) affines."""
    a = np.asarray(a, dtype=np.float64)
    lin_inv = np.linalg.inv(a[..., :2, :2])
    out = np.empty_like(a)
    out[..., :2, :2] = lin_inv
    out[..., :, 2] = -np.einsum("...ij,...j->...i", lin_inv, a[..., :, 2])
    return out


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer ∘ inner`` (apply ``inner`` first). Both (..., 2, 3)."""
    outer, inner = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    out = np.empty(np.broadcast_shapes(outer.shape, inner.shape))
    out[..., :2, :2] = outer[..., :2, :2] @ inner[..., :2, :2]
    out[..., :, 2] = np.einsum("...ij,...j->...i", outer[..., :2, :2], inner[..., :, 2]) + outer[..., :, 2]
    return out


def apply_affine(points: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Transform points (..., J, 2) by affines (..., 2, 3) (broadcast over leading dims)."""
    points, a = np.asarray(points, np.float64), np.asarray(a, np.float64)
    return np.einsum("...ij,...kj->...ki", a[..., :2, :2], points) + a[..., None, :, 2]


# --- cameras --------------------------------------------------------------------------------


def world_to_camera(x_world: np.ndarray, r_c2w: np.ndarray, t_c2w: np.ndarray) -> np.ndarray:
    """World -> camera coordinates: x_cam = R^T (x_world - T).

    x_world (..., J, 3); ``r_c2w`` (..., 3, 3) the camera-to-world rotation and ``t_c2w`` (..., 3)
    the camera centre in world coordinates (mmpose's ``cameras.pkl`` convention). Units follow T.
    """
    x_world, r = np.asarray(x_world, np.float64), np.asarray(r_c2w, np.float64)
    t = np.asarray(t_c2w, np.float64).reshape(*r.shape[:-2], 1, 3)
    return (x_world - t) @ r


def camera_to_world(x_cam: np.ndarray, r_c2w: np.ndarray, t_c2w: np.ndarray) -> np.ndarray:
    """Inverse of ``world_to_camera``."""
    x_cam, r = np.asarray(x_cam, np.float64), np.asarray(r_c2w, np.float64)
    t = np.asarray(t_c2w, np.float64).reshape(*r.shape[:-2], 1, 3)
    return x_cam @ np.swapaxes(r, -1, -2) + t


def project(
    x_cam: np.ndarray,
    f: np.ndarray,
    c: np.ndarray,
    k: np.ndarray | None = None,
    p: np.ndarray | None = None,
) -> np.ndarray:
    """Camera coordinates (..., J, 3) -> pixels (..., J, 2) with Human3.6M's distortion model.

    f, c: (..., 2) focal lengths and principal point (px); k (..., 3) radial and p (..., 2)
    tangential coefficients, or None for a pinhole; ``...`` is the poses' batch shape, or empty
    for one camera shared by all poses (column vectors (n, 1) are accepted too). The distortion is
    the one Human3.6M's own code (and 3d-pose-baseline, mmpose) applies to normalized coordinates
    u = (x/z, y/z), r² = |u|²:
    u' = u (1 + k1 r² + k2 r⁴ + k3 r⁶ + p1 v + p2 u) + (p2, p1) r², with (u, v) the components of u.
    """
    x_cam = np.asarray(x_cam, np.float64)
    uv = x_cam[..., :2] / x_cam[..., 2:3]

    def per_camera(a: np.ndarray | None, n: int) -> np.ndarray:
        # (..., n) -> (..., 1, n): one camera per pose, broadcast over the joints (and over a batch
        # of poses when a single camera is given).
        if a is None:
            return np.zeros((1, n))
        a = np.asarray(a, np.float64)
        if a.shape[-2:] == (n, 1):  # column vectors, as Human3.6M's camera files store them
            a = a[..., 0]
        return a[..., None, :]

    if k is not None or p is not None:
        kk, pp = per_camera(k, 3), per_camera(p, 2)
        r2 = np.sum(uv**2, axis=-1, keepdims=True)
        radial = 1 + kk[..., 0:1] * r2 + kk[..., 1:2] * r2**2 + kk[..., 2:3] * r2**3
        tangential = pp[..., 0:1] * uv[..., 1:2] + pp[..., 1:2] * uv[..., 0:1]
        uv = uv * (radial + tangential) + r2 * pp[..., ::-1]
    return uv * per_camera(f, 2) + per_camera(c, 2)


# --- alignment and scale ----------------------------------------------------------------------


def root_align(joints: np.ndarray, root: int = skeleton.ROOT) -> np.ndarray:
    """Subtract the root joint: (..., J, D) -> (..., J, D)."""
    joints = np.asarray(joints, np.float64)
    return joints - joints[..., root : root + 1, :]


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-align each predicted pose to its target (rotation, uniform scale, translation).

    pred, gt (B, J, 3) in any common unit. Returns pred aligned, (B, J, 3), minimizing the squared
    joint error (Umeyama); reflections are excluded. Poses with a non-finite value come out NaN.
    """
    pred, gt = np.broadcast_arrays(np.asarray(pred, np.float64), np.asarray(gt, np.float64))
    finite = np.isfinite(pred).all(axis=(-2, -1)) & np.isfinite(gt).all(axis=(-2, -1))
    if not finite.all():  # a diverged prediction scores NaN instead of stopping the SVD
        out = np.full(pred.shape, np.nan)
        if pred.ndim > 2 and finite.any():
            out[finite] = procrustes_align(pred[finite], gt[finite])
        return out
    mu_p, mu_g = pred.mean(axis=-2, keepdims=True), gt.mean(axis=-2, keepdims=True)
    p0, g0 = pred - mu_p, gt - mu_g
    cov = np.swapaxes(p0, -1, -2) @ g0  # (B, 3, 3)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones_like(s)
    fix[..., -1] = d
    rot = (u * fix[..., None, :]) @ vt  # applied to row vectors: x @ rot
    var_p = np.sum(p0**2, axis=(-2, -1))
    scale = np.sum(s * fix, axis=-1) / np.where(var_p > 0, var_p, 1.0)
    return scale[..., None, None] * (p0 @ rot) + mu_g


def rescale_to_canonical(joints: np.ndarray, bone_sum: float = skeleton.CANONICAL_BONE_SUM_MM) -> np.ndarray:
    """Scale each 16-joint pose (..., 16, 3) about its root so its 14 bone lengths sum to
    ``bone_sum`` (the paper's evaluation: predictions in any unit come out in mm)."""
    joints = np.asarray(joints, np.float64)
    total = skeleton.bone_lengths(joints).sum(axis=-1)[..., None, None]
    root = joints[..., skeleton.ROOT : skeleton.ROOT + 1, :]
    return (joints - root) * (bone_sum / np.where(total > 0, total, 1.0)) + root
