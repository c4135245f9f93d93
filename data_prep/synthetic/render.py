"""Ray-cast rendering of a body made of capsules and ellipsoids, vectorized per primitive.

Everything is in camera coordinates (mm; x right, y down, z forward). Each pixel's ray comes from
undistorting its centre with the camera's own distortion model (``pose3d.geometry.project``), so a
3D point projected with ``geometry.project`` lands on the pixel whose ray passes through it, with or
without distortion. A primitive is intersected only with the rays of its projected bounding box;
the nearest hit per pixel wins (a depth buffer), so nearer limbs hide farther ones whatever the
drawing order. Shading is Lambertian (a key light, a fill light and ambient).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.records import Camera
from pose3d import geometry


@dataclass(frozen=True)
class Capsule:
    """A cylinder of radius ``radius`` around segment a-b with hemispherical caps. a, b (3,) mm."""

    a: np.ndarray
    b: np.ndarray
    radius: float
    part: int


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid: rows of ``axes`` (3, 3) are its unit axes, ``radii`` (3,) mm the semi-axes.

    With ``alt_part`` >= 0, surface points whose normal points away from ``alt_dir`` (dot below
    ``alt_threshold``) get ``alt_part`` (the head's hair against its face).
    """

    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    part: int
    alt_part: int = -1
    alt_dir: np.ndarray | None = None
    alt_threshold: float = 0.0


Primitive = Capsule | Ellipsoid


@dataclass
class ViewCamera:
    """A camera for rendering: intrinsics, image size and pose in the world (mm)."""

    intrinsics: Camera
    width: int
    height: int
    r_c2w: np.ndarray  # (3, 3) camera-to-world rotation (columns: camera axes in the world)
    t_c2w: np.ndarray  # (3,) camera centre in the world, mm

    def world_to_camera(self, x_world: np.ndarray) -> np.ndarray:
        return geometry.world_to_camera(x_world, self.r_c2w, self.t_c2w)

    def project(self, x_cam: np.ndarray) -> np.ndarray:
        """(..., J, 3) camera mm -> (..., J, 2) px, with the camera's distortion."""
        cam = self.intrinsics
        return geometry.project(x_cam, cam.f, cam.c, cam.k, cam.p)


def undistort_normalized(uv_d: np.ndarray, k: np.ndarray, p: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Invert ``geometry.project``'s distortion on normalized coordinates (..., 2) by fixed-point
    iteration (converges to < 1e-9 for the mild distortion of real lenses)."""
    uv = uv_d.copy()
    for _ in range(iterations):
        r2 = np.sum(uv**2, axis=-1, keepdims=True)
        radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
        tangential = p[0] * uv[..., 1:2] + p[1] * uv[..., 0:1]
        uv = (uv_d - r2 * p[::-1]) / (radial + tangential)
    return uv


def ray_directions(camera: ViewCamera) -> np.ndarray:
    """Unit ray directions (H, W, 3) float32 through every pixel centre (camera coordinates)."""
    cam = camera.intrinsics
    u = ((np.arange(camera.width) - cam.c[0]) / cam.f[0]).astype(np.float32)
    v = ((np.arange(camera.height) - cam.c[1]) / cam.f[1]).astype(np.float32)
    if np.any(cam.k != 0) or np.any(cam.p != 0):
        uv = np.stack(np.broadcast_arrays(u[None, :], v[:, None]), axis=-1).astype(np.float64)
        uv = undistort_normalized(uv, np.asarray(cam.k, np.float64), np.asarray(cam.p, np.float64))
        d = np.concatenate([uv, np.ones_like(uv[..., :1])], axis=-1)
        return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)
    inv = 1.0 / np.sqrt(u[None, :] ** 2 + v[:, None] ** 2 + 1.0)
    d = np.empty((camera.height, camera.width, 3), np.float32)
    d[..., 0] = u[None, :] * inv
    d[..., 1] = v[:, None] * inv
    d[..., 2] = inv
    return d


@dataclass
class GBuffer:
    """Per-pixel nearest hit: depth (H, W) mm along the ray (inf = nothing), unit normal (H, W, 3),
    part (H, W) int16 (-1 = nothing)."""

    depth: np.ndarray
    normal: np.ndarray
    part: np.ndarray

    @staticmethod
    def empty(height: int, width: int) -> GBuffer:
        return GBuffer(
            np.full((height, width), np.inf, np.float32),
            np.zeros((height, width, 3), np.float32),
            np.full((height, width), -1, np.int16),
        )


def _bounds(prim: Primitive) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (lo, hi) of a primitive, camera mm."""
    if isinstance(prim, Capsule):
        return np.minimum(prim.a, prim.b) - prim.radius, np.maximum(prim.a, prim.b) + prim.radius
    half = np.sqrt(((prim.axes * prim.radii[:, None]) ** 2).sum(axis=0))
    return prim.centre - half, prim.centre + half


def _pixel_window(prim: Primitive, camera: ViewCamera, margin: int = 3) -> tuple[int, int, int, int] | None:
    """The pixel rows/cols (y0, y1, x0, x1) that can see the primitive, or None."""
    lo, hi = _bounds(prim)
    if hi[2] <= 1.0:
        return None  # behind the camera
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    if lo[2] <= 1.0:
        return 0, camera.height, 0, camera.width  # straddles the camera plane: test every ray
    px = camera.project(corners)
    x0, y0 = np.floor(px.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(px.max(axis=0)).astype(int) + margin + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, camera.width), min(y1, camera.height)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def _hit_capsule(rd: np.ndarray, prim: Capsule) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance (h, w) (inf = miss) and normals (h, w, 3) of rays from the origin."""
    a, b, r = prim.a.astype(np.float64), prim.b.astype(np.float64), float(prim.radius)
    ba, oa = b - a, -a
    baba, baoa, oaoa = ba @ ba, ba @ oa, oa @ oa
    bard, rdoa = rd @ ba, rd @ oa
    qa = baba - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    h = qb * qb - qa * qc
    hit_inf = h >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-qb - np.sqrt(np.where(hit_inf, h, 0.0))) / qa
    y = baoa + t * bard
    body = hit_inf & (y > 0) & (y < baba) & (qa > 1e-12)
    # Outside the cylinder's span: the cap sphere on that side.
    cap_centre_is_a = y <= 0
    oc = np.where(cap_centre_is_a[..., None], oa, -b)
    cb = np.einsum("...i,...i->...", rd, oc)
    cc = np.einsum("...i,...i->...", oc, oc) - r * r
    ch = cb * cb - cc
    cap = hit_inf & ~body & (ch > 0)
    t_cap = -cb - np.sqrt(np.where(cap, ch, 0.0))
    t = np.where(body, t, np.where(cap, t_cap, np.inf))
    t = np.where(t > 0, t, np.inf)
    p = rd * np.where(np.isfinite(t), t, 0.0)[..., None]
    q = np.clip(((p - a) @ ba) / baba, 0.0, 1.0)
    n = (p - (a + q[..., None] * ba)) / r
    return t, n


def _hit_ellipsoid(rd: np.ndarray, prim: Ellipsoid) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance (h, w) and normals (h, w, 3) of rays from the origin on an ellipsoid."""
    m = prim.axes.astype(np.float64) / prim.radii[:, None]  # world -> unit-sphere coordinates
    o = m @ (-prim.centre)
    d = rd @ m.T
    qa = np.einsum("...i,...i->...", d, d)
    qb = d @ o
    qc = o @ o - 1.0
    h = qb * qb - qa * qc
    hit = h >= 0
    t = (-qb - np.sqrt(np.where(hit, h, 0.0))) / qa
    t = np.where(hit & (t > 0), t, np.inf)
    unit_point = o + d * np.where(np.isfinite(t), t, 0.0)[..., None]
    n = unit_point @ (prim.axes / prim.radii[:, None])  # gradient of the quadric: M^T M (p - c)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return t, n


def rasterize(
    primitives: list[Primitive], camera: ViewCamera, rays: np.ndarray, gbuf: GBuffer | None = None
) -> GBuffer:
    """Ray-cast the primitives (camera mm) into a depth/normal/part buffer.

    rays (H, W, 3) unit directions from ``ray_directions(camera)``. Nearest hit wins, per pixel.
    """
    if gbuf is None:
        gbuf = GBuffer.empty(camera.height, camera.width)
    for prim in primitives:
        win = _pixel_window(prim, camera)
        if win is None:
            continue
        y0, y1, x0, x1 = win
        rd = rays[y0:y1, x0:x1].astype(np.float64)
        if isinstance(prim, Capsule):
            t, n = _hit_capsule(rd, prim)
        else:
            t, n = _hit_ellipsoid(rd, prim)
        depth = gbuf.depth[y0:y1, x0:x1]
        nearer = t < depth
        if not nearer.any():
            continue
        part = np.full(t.shape, prim.part, np.int16)
        if isinstance(prim, Ellipsoid) and prim.alt_part >= 0:
            part[(n @ prim.alt_dir) < prim.alt_threshold] = prim.alt_part
        depth[nearer] = t[nearer]
        gbuf.normal[y0:y1, x0:x1][nearer] = n[nearer]
        gbuf.part[y0:y1, x0:x1][nearer] = part[nearer]
    return gbuf


def shade(
    gbuf: GBuffer,
    albedo: np.ndarray,
    key_light: np.ndarray,
    *,
    fill_light: np.ndarray | None = None,
    ambient: float = 0.35,
    key: float = 0.75,
    fill: float = 0.2,
) -> np.ndarray:
    """Lambertian colours (H, W, 3) float32 in [0, 1] (BGR) where a part was hit, 0 elsewhere.

    albedo (P, 3) BGR in [0, 1] per part id; key_light / fill_light (3,) camera-space directions
    *towards* the lights.
    """
    hit = gbuf.part >= 0
    colour = np.zeros((*gbuf.part.shape, 3), np.float32)
    if not hit.any():
        return colour
    n = gbuf.normal[hit]
    light = ambient + key * np.clip(n @ _unit(key_light), 0.0, None)
    if fill_light is not None:
        light = light + fill * np.clip(n @ _unit(fill_light), 0.0, None)
    colour[hit] = albedo[gbuf.part[hit]] * light[:, None]
    return np.clip(colour, 0.0, 1.0)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def visible_from_depth(
    gbuf: GBuffer, px: np.ndarray, x_cam: np.ndarray, tolerance_mm: np.ndarray
) -> np.ndarray:
    """Whether points inside the body are seen: the surface at their (rounded) pixel lies no more
    than ``tolerance_mm`` in front of them (e.g. a limb's radius). px (J, 2), x_cam (J, 3) mm,
    tolerance (J,) mm. Points outside the image count as not visible. Returns (J,) bool."""
    h, w = gbuf.depth.shape
    ij = np.rint(px).astype(int)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    surface = np.full(len(px), np.inf)
    surface[inside] = gbuf.depth[ij[inside, 1], ij[inside, 0]]
    return inside & (surface >= np.linalg.norm(x_cam, axis=-1) - tolerance_mm)
