"""Backgrounds: a studio room ray-cast from the camera, outdoor ground and sky, random clutter.

All return float32 BGR images in [0, 1] of the camera's size. Room and ground backgrounds also
return the floor point (world x, y in mm; NaN off the floor) seen by every pixel, so a soft contact
shadow can be laid under the person (``floor_shadow``). The world is z-up, mm, floor at z = 0.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_prep.synthetic.render import ViewCamera


def smooth_noise(
    rng: np.random.Generator, height: int, width: int, cells: int, channels: int = 1
) -> np.ndarray:
    """Band-limited noise in [0, 1]: a ``cells`` x ``cells`` random grid upsampled (bicubic)."""
    grid = rng.random((cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(height, width, channels), 0.0, 1.0)


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, octaves: tuple[int, ...] = (4, 16, 64)
) -> np.ndarray:
    """(H, W) noise in about [0, 1] summing a few octaves of ``smooth_noise``."""
    total = np.zeros((height, width), np.float32)
    weight = 0.0
    for i, cells in enumerate(octaves):
        w = 0.5**i
        total += w * smooth_noise(rng, height, width, cells)[..., 0]
        weight += w
    return total / weight


def _world_rays(camera: ViewCamera, rays: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 ray directions in the world."""
    return rays @ camera.r_c2w.T.astype(np.float32)


def _plane_t(origin: float, direction: np.ndarray, plane: float) -> np.ndarray:
    """Distances along rays to the plane coordinate = ``plane`` (inf where parallel or behind)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.float32(plane) - np.float32(origin)) / direction
    t[~(t > 0)] = np.inf
    return t


def room(
    camera: ViewCamera,
    rays: np.ndarray,
    rng: np.random.Generator,
    *,
    half_size_mm: float = 7000.0,
    ceiling_mm: float = 3800.0,
    wall: tuple[float, float, float] = (0.55, 0.56, 0.57),
    floor: tuple[float, float, float] = (0.3, 0.3, 0.31),
    tiles_mm: float = 600.0,
    wall_texture: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A box room around the origin seen from ``camera`` (inside it): walls, tiled floor, ceiling.

    Returns (image (H, W, 3), floor_xy (H, W, 2) mm with NaN where the ray does not hit the floor).
    ``wall_texture`` (h, w, 3) float, optional, is wrapped around the walls (posters, clutter).
    """
    d = _world_rays(camera, rays)
    o = np.asarray(camera.t_c2w, np.float64)
    h, w = d.shape[:2]
    # The camera is inside the box: each ray leaves through the nearest of its planes ahead.
    t_floor = _plane_t(o[2], d[..., 2], 0.0)
    t_ceil = _plane_t(o[2], d[..., 2], ceiling_mm)
    t_x = np.minimum(_plane_t(o[0], d[..., 0], half_size_mm), _plane_t(o[0], d[..., 0], -half_size_mm))
    t_y = np.minimum(_plane_t(o[1], d[..., 1], half_size_mm), _plane_t(o[1], d[..., 1], -half_size_mm))
    t_wall = np.minimum(t_x, t_y)
    t_hit = np.minimum(np.minimum(t_floor, t_ceil), t_wall)
    p = o.astype(np.float32) + d * t_hit[..., None]
    on_floor = t_floor <= t_hit
    on_wall = (t_wall <= t_hit) & ~on_floor
    grain = fractal_noise(rng, h, w)
    image = np.empty((h, w, 3), np.float32)
    image[:] = np.asarray(wall, np.float32) * 1.15  # the ceiling
    # Floor: tiles with darker joints and grain.
    fx, fy = p[..., 0] / tiles_mm, p[..., 1] / tiles_mm
    joint = (np.abs(fx - np.floor(fx) - 0.5) > 0.48) | (np.abs(fy - np.floor(fy) - 0.5) > 0.48)
    floor_shade = (0.9 + 0.2 * grain - 0.15 * joint)[..., None]
    image = np.where(on_floor[..., None], np.asarray(floor, np.float32) * floor_shade, image)
    # Walls: brighter towards the top (lit from above) with grain, optionally textured.
    height_frac = np.clip(p[..., 2] / ceiling_mm, 0, 1)
    wall_shade = (0.8 + 0.3 * height_frac + 0.1 * grain)[..., None]
    if wall_texture is not None:
        th, tw = wall_texture.shape[:2]
        along_x = t_x <= t_y
        around = np.where(
            along_x, p[..., 1] * np.sign(p[..., 0]), -p[..., 0] * np.sign(p[..., 1]) + 2 * half_size_mm
        )
        u = ((around / (2 * half_size_mm)) % 1.0) * (tw - 1)  # the texture spans one wall
        v = (1 - height_frac) * (th - 1)
        wall_col = cv2.remap(
            wall_texture.astype(np.float32), u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR
        )
    else:
        wall_col = np.asarray(wall, np.float32)
    image = np.where(on_wall[..., None], wall_col * wall_shade, image)
    floor_xy = np.where(on_floor[..., None], p[..., :2], np.float32(np.nan))
    return np.clip(image, 0, 1), floor_xy


def sky_and_ground(
    camera: ViewCamera, rays: np.ndarray, rng: np.random.Generator, ground_texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Outdoors: a ground plane (z = 0) textured with ``ground_texture`` (h, w, 3) tiled every 4 m,
    hazy towards the horizon, under a sky gradient. Returns (image, floor_xy) like ``room``."""
    d = _world_rays(camera, rays)
    o = np.asarray(camera.t_c2w, np.float32)
    t = _plane_t(o[2], np.minimum(d[..., 2], np.float32(-1e-4)), 0.0)
    ground = d[..., 2] < -1e-4
    t[~ground] = 0.0
    p = o + d * t[..., None]
    th, tw = ground_texture.shape[:2]
    tile = np.float32(4000.0)
    u = (p[..., 0] / tile - np.floor(p[..., 0] / tile)) * (tw - 1)
    v = (p[..., 1] / tile - np.floor(p[..., 1] / tile)) * (th - 1)
    tex = cv2.remap(ground_texture.astype(np.float32), u, v, cv2.INTER_LINEAR)
    sky_top = rng.uniform([0.6, 0.35, 0.2], [0.95, 0.7, 0.55]).astype(np.float32)
    sky_low = rng.uniform(0.75, 0.98, 3).astype(np.float32)
    elev = np.sqrt(np.clip(d[..., 2], 0, 1))[..., None]
    sky = sky_low + (sky_top - sky_low) * elev
    haze = np.exp(-t / np.float32(40000.0))[..., None]
    image = np.where(ground[..., None], tex * haze + sky_low * (1 - haze), sky)
    floor_xy = np.where(ground[..., None], p[..., :2], np.float32(np.nan))
    return np.clip(image, 0, 1), floor_xy


def random_colour(rng: np.random.Generator, lo: float = 0.05, hi: float = 0.95) -> tuple[float, float, float]:
    return tuple(float(x) for x in rng.uniform(lo, hi, 3))


def clutter(rng: np.random.Generator, height: int, width: int, shapes: int | None = None) -> np.ndarray:
    """A cluttered texture (H, W, 3) in [0, 1]: a smooth colour field, random filled and outlined
    shapes (rectangles, ellipses, polygons, stripes, lines) and grain."""
    base_a, base_b = np.array(random_colour(rng), np.float32), np.array(random_colour(rng), np.float32)
    mix = smooth_noise(rng, height, width, int(rng.integers(2, 6)))
    image = (base_a * mix + base_b * (1 - mix)).astype(np.float32)
    n = int(rng.integers(8, 30)) if shapes is None else shapes
    size = max(height, width)
    for _ in range(n):
        colour = random_colour(rng)
        kind = rng.integers(0, 5)
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(size // 30, size // 4))
        thick = -1 if rng.random() < 0.7 else int(rng.integers(1, 6))
        if kind == 0:
            cv2.rectangle(
                image, (cx - s, cy - s // 2), (cx + s, cy + int(rng.integers(s // 2, 2 * s))), colour, thick
            )
        elif kind == 1:
            axes = (s, int(rng.integers(s // 3, s + 1)))
            cv2.ellipse(image, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, colour, thick)
        elif kind == 2:
            pts = (np.array([cx, cy]) + rng.normal(0, s, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            if thick < 0:
                cv2.fillPoly(image, [pts], colour)
            else:
                cv2.polylines(image, [pts], True, colour, thick)
        elif kind == 3:  # a striped panel
            x0, y0 = cx - s, cy - s
            step = int(rng.integers(4, 16))
            other = random_colour(rng)
            for k in range(0, 2 * s, step * 2):
                cv2.rectangle(image, (x0 + k, y0), (x0 + k + step, y0 + 2 * s), colour, -1)
                cv2.rectangle(image, (x0 + k + step, y0), (x0 + k + 2 * step, y0 + 2 * s), other, -1)
        else:
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, (cx, cy), p1, colour, int(rng.integers(1, 8)))
    grain = fractal_noise(rng, height, width, (8, 32, 128))
    image *= (0.8 + 0.4 * grain)[..., None]
    if rng.random() < 0.5:  # out of focus
        k = int(rng.integers(1, 4)) * 2 + 1
        image = cv2.GaussianBlur(image, (k, k), 0)
    return np.clip(image, 0, 1)


def ground_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A ground texture: grass, asphalt, sand or paving, with grain; (size, size, 3) in [0, 1]."""
    palettes = [((0.15, 0.45, 0.25), (0.1, 0.3, 0.15)), ((0.35, 0.35, 0.36), (0.25, 0.25, 0.27)),
                ((0.5, 0.65, 0.75), (0.4, 0.5, 0.6)), ((0.45, 0.45, 0.55), (0.3, 0.32, 0.4))]  # fmt: skip
    a, b = (np.array(c, np.float32) for c in palettes[int(rng.integers(0, len(palettes)))])
    mix = fractal_noise(rng, size, size, (4, 16, 64))[..., None]
    tex = a * mix + b * (1 - mix)
    if rng.random() < 0.4:  # paving joints
        step = int(rng.integers(16, 64))
        tex[::step, :] *= 0.6
        tex[:, ::step] *= 0.6
    return tex.astype(np.float32)


def floor_shadow(
    floor_xy: np.ndarray, centre_xy: np.ndarray, radius_mm: float = 350.0, strength: float = 0.45
) -> np.ndarray:
    """(H, W, 1) darkening factor of a soft contact shadow around ``centre_xy`` on the floor."""
    d2 = np.sum((floor_xy - np.asarray(centre_xy, np.float32)) ** 2, axis=-1)
    shade = 1.0 - strength * np.exp(-d2 / (2 * radius_mm**2))
    return np.where(np.isnan(shade), 1.0, shade)[..., None].astype(np.float32)


#: Facade colours of the street set (BGR): brick, sandstone, render, concrete, dark cladding, white.
_FACADE_PALETTE = np.array(
    [[0.22, 0.3, 0.55], [0.45, 0.6, 0.72], [0.6, 0.68, 0.75], [0.52, 0.53, 0.55], [0.2, 0.21, 0.23],
     [0.78, 0.8, 0.82], [0.3, 0.42, 0.6]], np.float32,
)  # fmt: skip


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per element of integer arrays (cell ids)."""
    h = np.zeros(np.broadcast(*ints).shape, np.uint32)
    for k, v in enumerate(ints):
        h = (h ^ (np.asarray(v).astype(np.int64) * (0x9E3779B1 + 2 * k)).astype(np.uint32)) * np.uint32(
            0x85EBCA6B
        )
        h ^= h >> np.uint32(13)
    return (h & np.uint32(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)


def street(
    camera: ViewCamera,
    rays: np.ndarray,
    rng: np.random.Generator,
    *,
    half_width_mm: float = 10000.0,
    road_half_mm: float = 6500.0,
) -> tuple[np.ndarray, np.ndarray]:
    """An urban street along the world x axis, seen from ``camera`` (inside it): an asphalt road
    (|y| < ``road_half_mm``) with a dashed centre line, kerbs and paved pavements up to the building
    facades at y = ±``half_width_mm``. The facades are a row of buildings 6-20 m wide and 7-30 m
    tall, each with its own colour, window grid (some windows lit) and a shop front with a sign band
    on the ground floor; sky above them, haze with distance. Returns (image, floor_xy) like ``room``.
    """
    d = _world_rays(camera, rays)
    o = np.asarray(camera.t_c2w, np.float64)
    h, w = d.shape[:2]
    t_ground = _plane_t(o[2], d[..., 2], 0.0)
    t_left, t_right = _plane_t(o[1], d[..., 1], half_width_mm), _plane_t(o[1], d[..., 1], -half_width_mm)
    left = t_left <= t_right
    t_wall = np.minimum(t_left, t_right)
    t_wall_safe = np.where(np.isfinite(t_wall), t_wall, 0.0)
    p_wall = o.astype(np.float32) + d * t_wall_safe[..., None]
    # The buildings of each side: boundaries along x, height, colour, window grid, shop sign colour.
    sides = []
    for _ in range(2):
        widths = rng.uniform(6000, 20000, 60)
        bounds = np.cumsum(widths) - widths.sum() / 2
        n = len(bounds) + 1
        colour = _FACADE_PALETTE[rng.integers(0, len(_FACADE_PALETTE), n)] * rng.uniform(0.8, 1.15, (n, 1))
        sides.append({
            "bounds": bounds, "height": rng.uniform(7000, 30000, n), "colour": colour.astype(np.float32),
            "floor": rng.uniform(2900, 3600, n), "bay": rng.uniform(2000, 3200, n),
            "win_w": rng.uniform(0.4, 0.65, n), "win_h": rng.uniform(0.4, 0.6, n),
            "sign": rng.uniform(0.1, 0.95, (n, 3)).astype(np.float32),
        })  # fmt: skip
    x = p_wall[..., 0]
    idx = [np.searchsorted(s["bounds"], x) for s in sides]

    def pick(name: str) -> np.ndarray:
        return np.where(
            left[..., None] if sides[0][name].ndim > 1 else left,
            sides[0][name][idx[0]],
            sides[1][name][idx[1]],
        )

    building = pick("height")
    hit_wall = np.isfinite(t_wall) & (t_wall < t_ground) & (p_wall[..., 2] < building)
    on_ground = np.isfinite(t_ground) & ~hit_wall
    grain = fractal_noise(rng, h, w, (8, 32, 128))
    # Sky: an overcast grey-blue gradient.
    sky_low = (rng.uniform(0.7, 0.9) * np.array([1.0, 0.98, 0.95]) + rng.uniform(-0.03, 0.03, 3)).astype(
        np.float32
    )
    sky_top = (sky_low * rng.uniform(0.75, 0.95) + np.array([0.06, 0.0, -0.04])).astype(np.float32)
    elev = np.sqrt(np.clip(d[..., 2], 0, 1))[..., None]
    image = sky_low + (sky_top - sky_low) * elev
    # Facades: window cells in floors and bays; glass dark with some lit windows; a shop front and a
    # sign band on the ground floor.
    floor_h, bay = pick("floor"), pick("bay")
    fz, fx = p_wall[..., 2] / floor_h, x / bay
    cell_z, cell_x = np.floor(fz).astype(np.int64), np.floor(fx).astype(np.int64)
    in_window = (np.abs(fx - cell_x - 0.5) < pick("win_w") / 2) & (
        np.abs(fz - cell_z - 0.55) < pick("win_h") / 2
    )
    lit = _hash01(cell_x, cell_z, idx[0] * 2 + left) < 0.2
    glass = np.where(lit[..., None], np.float32([0.45, 0.7, 0.85]), np.float32([0.28, 0.24, 0.2]))
    facade = np.where(in_window[..., None] & (cell_z >= 1)[..., None], glass, pick("colour"))
    shop = p_wall[..., 2] < 3000
    sign = (p_wall[..., 2] >= 3000) & (p_wall[..., 2] < 3600)
    shop_glass = np.float32([0.18, 0.17, 0.15]) + 0.25 * _hash01(cell_x, idx[1])[..., None]
    facade = np.where(shop[..., None], shop_glass, np.where(sign[..., None], pick("sign"), facade))
    image = np.where(hit_wall[..., None], facade * (0.85 + 0.25 * grain)[..., None], image)
    # Ground: asphalt road, dashed centre line and edge lines, kerbs, paving tiles.
    t_g = np.where(on_ground, t_ground, 0.0)
    p = o.astype(np.float32) + d * t_g[..., None]
    ay = np.abs(p[..., 1])
    asphalt = np.float32(rng.uniform(0.2, 0.3)) * np.float32([1.0, 1.0, 1.02])
    road = asphalt * (0.8 + 0.4 * grain)[..., None]
    dash = (ay < 75) & ((p[..., 0] % 6000) < 3000)
    edge = (ay > road_half_mm - 350) & (ay < road_half_mm - 200)
    road = np.where((dash | edge)[..., None], np.float32([0.8, 0.82, 0.82]), road)
    tile = rng.uniform(350, 600)
    paving_colour = np.float32(rng.uniform([0.45, 0.5, 0.52], [0.6, 0.65, 0.7]))
    tx, ty = p[..., 0] / tile, p[..., 1] / tile
    joint = (np.abs(tx - np.floor(tx) - 0.5) > 0.46) | (np.abs(ty - np.floor(ty) - 0.5) > 0.46)
    paving = paving_colour * (0.9 + 0.2 * grain - 0.2 * joint)[..., None]
    kerb = (ay >= road_half_mm) & (ay < road_half_mm + 150)
    ground = np.where((ay < road_half_mm)[..., None], road, paving)
    ground = np.where(kerb[..., None], np.float32([0.62, 0.63, 0.64]), ground)
    image = np.where(on_ground[..., None], ground, image)
    # Haze towards the sky colour with distance.
    dist = np.where(on_ground, t_ground, np.where(hit_wall, t_wall, np.inf))
    haze = np.exp(-np.minimum(dist, 1e9) / np.float32(120000.0))[..., None]
    image = np.where(np.isfinite(dist)[..., None], image * haze + sky_low * (1 - haze), image)
    floor_xy = np.where(on_ground[..., None], p[..., :2], np.float32(np.nan))
    return np.clip(image, 0, 1).astype(np.float32), floor_xy
