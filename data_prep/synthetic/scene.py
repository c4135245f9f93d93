"""One rendered shot: a posed body seen by a camera over a background, with its labels.

World: z-up, mm, the floor at z = 0. Labels come from the same geometry that is rendered: the 2D
joints are ``geometry.project`` of the camera-frame 3D joints (with the camera's distortion), and
the image's rays are the undistorted pixel rays of that camera (``render.ray_directions``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from data_prep.records import Camera
from data_prep.synthetic import backgrounds, render
from data_prep.synthetic.body import JOINT_DEPTH_TOLERANCE_MM, PosedBody
from data_prep.synthetic.render import GBuffer, ViewCamera

WORLD_UP = np.array([0.0, 0.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (3, 3) of a camera at ``eye`` looking at ``target`` (z-up world):
    columns are the camera's x (right), y (down) and z (forward) axes in the world."""
    z = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(z, WORLD_UP)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z], axis=1)
    if roll_deg:
        a = np.deg2rad(roll_deg)
        roll = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        r = r @ roll
    return r


def make_camera(
    eye: np.ndarray,
    target: np.ndarray,
    width: int,
    height: int,
    focal: float,
    *,
    roll_deg: float = 0.0,
    principal_offset: tuple[float, float] = (0.0, 0.0),
    k: np.ndarray | None = None,
    p: np.ndarray | None = None,
    aspect: float = 1.0,
) -> ViewCamera:
    """A camera with focal ``focal`` px (fy = focal x ``aspect``), centred principal point plus an
    offset, optional Human3.6M-model distortion."""
    c = np.array([(width - 1) / 2 + principal_offset[0], (height - 1) / 2 + principal_offset[1]])
    intr = Camera(
        np.array([focal, focal * aspect]),
        c,
        np.zeros(3) if k is None else np.asarray(k, np.float64),
        np.zeros(2) if p is None else np.asarray(p, np.float64),
    )
    return ViewCamera(intr, width, height, look_at(eye, target, roll_deg), np.asarray(eye, np.float64))


def scaled_camera(camera: ViewCamera, factor: float) -> ViewCamera:
    """The same camera for an image ``factor`` times the size (pixel centres at integers in both:
    x' = (x + 0.5) * factor - 0.5)."""
    intr = camera.intrinsics
    width, height = int(round(camera.width * factor)), int(round(camera.height * factor))
    scaled = Camera(intr.f * factor, (intr.c + 0.5) * factor - 0.5, intr.k.copy(), intr.p.copy())
    return ViewCamera(scaled, width, height, camera.r_c2w, camera.t_c2w)


@dataclass
class Shot:
    """A rendered image and its labels (camera frame, mm; px with centres at integers).

    joints_2d (16, 2); in_image (16,): inside the image; visible (16,): inside, not hidden by the
    body itself nor by an occluder; occluded (16,): behind an occluder; head_box (4,) x1, y1, x2, y2.
    """

    image: np.ndarray
    camera: ViewCamera
    body: PosedBody
    joints_2d: np.ndarray
    in_image: np.ndarray
    visible: np.ndarray
    occluded: np.ndarray
    head_box: np.ndarray
    gbuf: GBuffer


def _head_box(head: render.Ellipsoid, camera: ViewCamera) -> np.ndarray:
    """The projected extent (x1, y1, x2, y2) px of the head ellipsoid (256 surface points)."""
    n = 256
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    sphere = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=-1)
    px = camera.project(head.centre + (sphere * head.radii) @ head.axes)
    return np.concatenate([px.min(axis=0), px.max(axis=0)])


_NOISE_TILE: np.ndarray | None = None


def sensor_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Unit Gaussian noise (H, W, 3) float32: a random window of a fixed tile (drawing fresh
    normals for every pixel of every image would cost more than rendering the body)."""
    global _NOISE_TILE
    if _NOISE_TILE is None:
        _NOISE_TILE = np.random.default_rng(20170101).normal(0.0, 1.0, (1024, 1024, 3)).astype(np.float32)
    tile = _NOISE_TILE
    if height > tile.shape[0] or width > tile.shape[1]:
        tile = np.tile(tile, (height // tile.shape[0] + 1, width // tile.shape[1] + 1, 1))
    y0 = int(rng.integers(0, tile.shape[0] - height + 1))
    x0 = int(rng.integers(0, tile.shape[1] - width + 1))
    out = tile[y0 : y0 + height, x0 : x0 + width]
    return out[:, ::-1] if rng.random() < 0.5 else out


def draw_occluders(image: np.ndarray, rng: np.random.Generator, box: np.ndarray, count: int) -> np.ndarray:
    """Paint ``count`` random objects overlapping the person box (x1, y1, x2, y2) onto ``image``
    (float, in place). Returns the occluder mask (H, W) bool."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    bw, bh = box[2] - box[0], box[3] - box[1]
    texture = backgrounds.fractal_noise(rng, h, w, (4, 24))[..., None] * 0.5 + 0.75
    for _ in range(count):
        layer = np.zeros((h, w), np.uint8)
        cx = box[0] + rng.uniform(-0.1, 1.1) * bw
        cy = box[1] + rng.uniform(0.0, 1.1) * bh
        sx, sy = rng.uniform(0.12, 0.45) * bw, rng.uniform(0.08, 0.3) * bh
        kind = rng.integers(0, 3)
        if kind == 0:  # a box / sign / table edge
            cv2.rectangle(layer, (int(cx - sx), int(cy - sy)), (int(cx + sx), int(cy + sy)), 255, -1)
        elif kind == 1:  # a blob (ball, bush, head of another person)
            cv2.ellipse(
                layer, (int(cx), int(cy)), (int(sx), int(sy)), float(rng.uniform(0, 180)), 0, 360, 255, -1
            )
        else:  # a pole or a bar
            angle = rng.uniform(0, np.pi)
            dx, dy = np.cos(angle) * max(bw, bh), np.sin(angle) * max(bw, bh)
            cv2.line(
                layer, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, int(max(4, 0.12 * bw))
            )
        colour = np.array(backgrounds.random_colour(rng), np.float32)
        sel = layer > 0
        # Shaded from one side so the object reads as a volume, not a flat cut-out.
        shade = (
            np.linspace(1.1, 0.75, w, dtype=np.float32)[None, :, None]
            if rng.random() < 0.5
            else np.float32(1)
        )
        image[sel] = np.clip(colour * texture * shade, 0, 1)[sel]
        mask |= layer
    return mask > 0


@dataclass
class Lighting:
    """key (3,) world direction towards the key light; strengths; tint (3,) BGR colour of the light."""

    key: np.ndarray
    ambient: float = 0.35
    key_strength: float = 0.75
    fill_strength: float = 0.2
    tint: np.ndarray | None = None


def _develop(
    image: np.ndarray, rng: np.random.Generator, noise_sigma: float, blur_sigma: float
) -> np.ndarray:
    """A rendered float image in [0, 1] -> uint8: softened by a Gaussian blur of ``blur_sigma`` px,
    with sensor noise of ``noise_sigma`` grey levels."""
    h, w = image.shape[:2]
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
    image = image * np.float32(255.0) + np.float32(noise_sigma) * sensor_noise(rng, h, w)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _shade_over(
    gbuf: GBuffer, albedo: np.ndarray, key_light: np.ndarray, lighting: Lighting, background: np.ndarray
) -> np.ndarray:
    """The rendered parts (albedo (P, 3), tinted by the lighting; key light in camera axes, a fill
    light from the camera) over ``background``: (H, W, 3) float32 [0, 1] BGR."""
    colour = render.shade(
        gbuf,
        albedo if lighting.tint is None else albedo * lighting.tint,
        key_light,
        fill_light=np.array([0.0, 0.0, -1.0]),
        ambient=lighting.ambient,
        key=lighting.key_strength,
        fill=lighting.fill_strength,
    )
    return np.where((gbuf.part >= 0)[..., None], colour, background).astype(np.float32)


def render_shot(
    body_world: PosedBody,
    camera: ViewCamera,
    rays: np.ndarray,
    background: np.ndarray,
    albedo: np.ndarray,
    lighting: Lighting,
    rng: np.random.Generator,
    *,
    occluders: int = 0,
    noise_sigma: float = 2.0,
    blur_sigma: float = 0.6,
) -> Shot:
    """Render ``body_world`` (z-up world, mm) over ``background`` (H, W, 3) float [0, 1] BGR.

    A fill light shines from the camera. ``occluders`` random objects are painted over the person
    after rendering (their joints stay labelled, with ``occluded`` set). Returns the Shot (image
    uint8 BGR, softened by a Gaussian blur of ``blur_sigma`` px, with sensor noise).
    """
    r, t = camera.r_c2w, camera.t_c2w
    body = body_world.transformed(r.T, -(r.T @ t))
    prims = body.primitives(r.T @ WORLD_UP)
    gbuf = render.rasterize(prims, camera, rays)
    image = _shade_over(gbuf, albedo, r.T @ lighting.key, lighting, background)
    joints_2d = camera.project(body.joints)
    h, w = image.shape[:2]
    in_image = np.all((joints_2d >= -0.5) & (joints_2d < np.array([w, h]) - 0.5), axis=-1)
    visible = render.visible_from_depth(gbuf, joints_2d, body.joints, JOINT_DEPTH_TOLERANCE_MM)
    occluded = np.zeros(len(joints_2d), bool)
    if occluders and in_image.any():
        lo, hi = joints_2d[in_image].min(axis=0), joints_2d[in_image].max(axis=0)
        mask = draw_occluders(image, rng, np.concatenate([lo, hi]), occluders)
        ij = np.clip(np.rint(joints_2d).astype(int), 0, [w - 1, h - 1])
        occluded = in_image & mask[ij[:, 1], ij[:, 0]]
        visible &= ~occluded
    image_u8 = _develop(image, rng, noise_sigma, blur_sigma)
    head = next(p for p in prims if isinstance(p, render.Ellipsoid) and p.alt_part >= 0)
    return Shot(
        image_u8,
        camera,
        body,
        joints_2d,
        in_image,
        visible & in_image,
        occluded,
        _head_box(head, camera),
        gbuf,
    )


@dataclass
class GroupShot:
    """Several people rendered into one image (the COCO-like street set).

    image (H, W, 3) uint8; bodies: each person in the camera frame; owner (H, W) int16, the person
    each pixel shows (-1: background or an occluder in front); occluder (H, W) bool; gbuf the
    nearest hits (part ids offset by ``person * len(albedo)``)."""

    image: np.ndarray
    camera: ViewCamera
    bodies: list[PosedBody]
    owner: np.ndarray
    occluder: np.ndarray
    gbuf: GBuffer


def render_group(
    bodies_world: list[PosedBody],
    camera: ViewCamera,
    rays: np.ndarray,
    background: np.ndarray,
    albedos: list[np.ndarray],
    lighting: Lighting,
    rng: np.random.Generator,
    *,
    occluders: int = 0,
    occluder_box: np.ndarray | None = None,
    noise_sigma: float = 2.0,
    blur_sigma: float = 0.6,
) -> GroupShot:
    """Render every body (z-up world, mm; each with its albedo (P, 3)) over ``background`` in one
    depth buffer, so nearer people hide farther ones. ``occluders`` objects are painted over
    ``occluder_box`` (x1, y1, x2, y2 px) after rendering, as ``render_shot`` does."""
    r, t = camera.r_c2w, camera.t_c2w
    bodies = [b.transformed(r.T, -(r.T @ t)) for b in bodies_world]
    up = r.T @ WORLD_UP
    n_parts = len(albedos[0]) if albedos else 1
    prims: list[render.Primitive] = []
    for k, body in enumerate(bodies):
        offset = k * n_parts  # each person's parts get their own ids, hence their own colours
        for prim in body.primitives(up):
            if isinstance(prim, render.Ellipsoid) and prim.alt_part >= 0:
                prims.append(replace(prim, part=prim.part + offset, alt_part=prim.alt_part + offset))
            else:
                prims.append(replace(prim, part=prim.part + offset))
    gbuf = render.rasterize(prims, camera, rays)
    albedo = np.concatenate(albedos) if albedos else np.zeros((1, 3))
    image = _shade_over(gbuf, albedo, r.T @ lighting.key, lighting, background)
    owner = np.where(gbuf.part >= 0, gbuf.part // n_parts, -1).astype(np.int16)
    h, w = image.shape[:2]
    occluder = np.zeros((h, w), bool)
    if occluders and occluder_box is not None:
        occluder = draw_occluders(image, rng, np.asarray(occluder_box, np.float64), occluders)
        owner[occluder] = -1
    return GroupShot(_develop(image, rng, noise_sigma, blur_sigma), camera, bodies, owner, occluder, gbuf)
