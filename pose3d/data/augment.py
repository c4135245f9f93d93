"""Shard rows -> network inputs and targets, for a whole batch at once (pure numpy + OpenCV).

Decoding and warping are per image (OpenCV); every label computation (affines, flips, joints in
output px, depth targets) is vectorized over the batch. Used by the Ray Data actors in training and
by evaluation (``params=None``: no augmentation). Heatmaps are not made here: the training step
draws them on its device from ``joints_out`` and ``visible`` (``targets.render_heatmaps_torch``),
so a row ships 16 coordinates instead of 16 x O x O floats (docs/conventions.md, Targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose3d import geometry, seeds, skeleton, targets
from pose3d.schema import CROP_MARGIN, labelled_joints

#: Columns the batch transform reads from shards.
INPUT_COLUMNS = ("image_jpeg", "crop_size", "joints_2d", "visible", "joints_3d", "has_3d", "dataset")
#: Columns that name a row (its id, and the shard file Ray Data's ``include_paths`` adds as "path").
NAME_COLUMNS = ("row_id", "path")
#: Which of a side's sources a row came from (its index in ``data.set_3d`` / ``data.set_2d``),
#: added when training reads the shards and carried through preprocessing.
SOURCE_COLUMN = "source"
#: Which copy of its source a row is within a pass (``data.epochs_per_pass`` > 1 reads each source
#: that many times a pass): part of the row's augmentation key, so the copies differ.
REPEAT_COLUMN = "repeat"


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the training augmentation, none at validation (docs/conventions.md, Augmentation).
    It is also the training config's ``data.augment`` section: the field names are its YAML keys,
    the defaults its defaults."""

    scale: float = 0.25  # the person box scaled by a factor in 1 ± scale
    rotation_deg: float = 30.0  # rotation by up to ± this many degrees ...
    rotation_prob: float = 0.4  # ... applied with this probability
    flip: bool = True  # horizontal flip with left/right joints swapped, probability 0.5
    color_jitter: float = 0.2  # per-channel colour gain in 1 ± color_jitter


#: Uniform numbers one row's augmentation draws: rotate or not, angle, flip, scale, 3 colour gains.
AUGMENT_DRAWS = 7


def augmentation_from_uniforms(u: np.ndarray, p: AugmentParams) -> dict[str, np.ndarray]:
    """Augmentation for n rows from their (n, AUGMENT_DRAWS) uniform numbers in [0, 1): scale (n,),
    rotation_deg (n,), flip (n,) bool, gain (n, 3)."""
    u = np.asarray(u, np.float64)
    rotate = u[:, 0] < p.rotation_prob
    return {
        "scale": 1.0 + p.scale * (2 * u[:, 3] - 1),
        "rotation_deg": np.where(rotate, p.rotation_deg * (2 * u[:, 1] - 1), 0.0),
        "flip": (u[:, 2] < 0.5) if p.flip else np.zeros(len(u), bool),
        "gain": 1.0 + p.color_jitter * (2 * u[:, 4:7] - 1),
    }


def sample_augmentation(rng: np.random.Generator, n: int, p: AugmentParams) -> dict[str, np.ndarray]:
    """Random augmentation for n rows from ``rng`` (tests and benchmarks; training keys each row's
    numbers to the row, ``BatchPreprocessor``)."""
    return augmentation_from_uniforms(rng.random((n, AUGMENT_DRAWS)), p)


def identity_augmentation(n: int) -> dict[str, np.ndarray]:
    return {
        "scale": np.ones(n),
        "rotation_deg": np.zeros(n),
        "flip": np.zeros(n, bool),
        "gain": np.ones((n, 3)),
    }


def _as_array(column: object, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    arr = np.asarray(column.numpy() if hasattr(column, "numpy") else column)
    if arr.dtype == object:
        arr = np.stack([np.asarray(x) for x in arr])
    return arr.astype(dtype, copy=False).reshape(-1, *shape)


def crop_to_input_affine(crop_size: np.ndarray, input_size: int, aug: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 2, 3) affines from stored crop px to network input px: the person box (the crop's
    centre ``crop / CROP_MARGIN``) scaled, rotated and flipped into the ``input_size`` square."""
    crop = np.asarray(crop_size, np.float64)
    centre = np.stack([(crop - 1) / 2, (crop - 1) / 2], axis=-1)
    return geometry.crop_affine(
        centre, crop / CROP_MARGIN * aug["scale"], input_size, aug["rotation_deg"], aug["flip"]
    )


def make_batch(
    rows: dict[str, object],
    input_size: int,
    output_size: int,
    aug: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Decode, warp and build targets for one batch of shard rows (heatmaps excepted: the trainer
    draws them from joints_out and visible, ``targets.render_heatmaps_torch``).

    Returns numpy arrays: image (n, 3, S, S) uint8 RGB; depth (n, 16) float32 normalized (NaN on
    rows without 3D); joints_2d_norm (n, 16, 2) float32 in [-1, 1] over the output map; joints_out
    (n, 16, 2) float32 output px (the heatmap centres); visible (n, 16) bool, False also for a joint
    off the output map; has_3d (n,) bool; joints_3d (n, 16, 3) float32 camera mm after the flip
    (NaN without 3D); with a ``dataset`` column, labelled (n, 16) bool, the joints the row's
    dataset labels at all (``schema.labelled_joints``, after the flip); decoded (n,) bool, False
    for a row whose JPEG does not decode (its image is black; readers skip such rows and name them:
    ``mixing.RowTally``).
    """
    jpegs = list(rows["image_jpeg"])
    n = len(jpegs)
    j = skeleton.NUM_JOINTS
    crop_size = _as_array(rows["crop_size"], (), np.int64)
    joints_crop = _as_array(rows["joints_2d"], (j, 2), np.float64)
    visible = _as_array(rows["visible"], (j,), bool)
    joints_3d = _as_array(rows["joints_3d"], (j, 3), np.float64)
    has_3d = _as_array(rows["has_3d"], (), bool)

    affine = crop_to_input_affine(crop_size, input_size, aug)
    images = np.zeros((n, input_size, input_size, 3), np.uint8)
    decoded = np.ones(n, bool)
    for i, data in enumerate(jpegs):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:  # a corrupt row: flagged for the reader to skip and name, never fatal here
            decoded[i] = False
            continue
        images[i] = cv2.warpAffine(bgr, affine[i], (input_size, input_size), flags=cv2.INTER_LINEAR)
    gain = aug["gain"][:, None, None, ::-1]  # gains are RGB; images are BGR until the flip below
    images = np.clip(images * gain, 0, 255).astype(np.uint8)[..., ::-1]  # BGR -> RGB

    joints_in = geometry.apply_affine(joints_crop, affine)
    flip = np.asarray(aug["flip"], bool)
    perm = np.where(flip[:, None], skeleton.FLIP_PERMUTATION[None, :], np.arange(j)[None, :])
    joints_in = np.take_along_axis(joints_in, perm[..., None], axis=1)
    visible = np.take_along_axis(visible, perm, axis=1)
    joints_3d = np.take_along_axis(joints_3d, perm[..., None], axis=1)
    joints_3d[flip, :, 0] *= -1  # a mirrored image is a mirrored scene

    joints_out = geometry.input_to_output_px(joints_in, input_size / output_size)
    visible = visible & targets.inside_map(joints_out, output_size)
    with np.errstate(invalid="ignore"):
        scale = targets.pixels_per_mm(joints_out, joints_3d, visible | has_3d[:, None])
        depth = targets.depth_targets(joints_3d, scale, output_size)
    depth[~has_3d] = np.nan
    out = {
        "image": np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
        "depth": depth.astype(np.float32),
        "joints_2d_norm": targets.normalize_xy(joints_out, output_size).astype(np.float32),
        "joints_out": joints_out.astype(np.float32),
        "visible": visible,
        "has_3d": has_3d,
        "joints_3d": joints_3d.astype(np.float32),
        "decoded": decoded,
    }
    if "dataset" in rows:
        out["labelled"] = np.take_along_axis(labelled_joints(rows["dataset"]), perm, axis=1)
    return out


class BatchPreprocessor:
    """Callable class for ``Dataset.map_batches``: shard rows -> model inputs and targets.

    A row's augmentation is a function of ``seed``, the pass, the row's source and repeat within
    the pass (columns ``source`` and ``repeat`` when present) and its ``row_id``, never of which
    actor or batch it lands in: a seeded run augments every row as any other run with that seed
    (docs/conventions.md, Seeds). ``seed=None`` draws a fresh seed. ``first_pass``: the number of
    the pass Ray Data's first execution of the dataset is (a resumed run continues the count);
    None outside Ray Data, where every call is pass 0.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        params: AugmentParams | None,
        seed: int | None = None,
        first_pass: int | None = None,
    ) -> None:
        self.input_size, self.output_size, self.params = input_size, output_size, params
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self.first_pass = first_pass

    def pass_index(self) -> int:
        if self.first_pass is None:
            return 0
        from pose3d.data.passes import current_pass

        return current_pass(self.first_pass)

    def augmentation(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each row's augmentation (``identity_augmentation`` without params)."""
        n = len(rows["image_jpeg"])
        if not self.params:
            return identity_augmentation(n)
        ids = rows["row_id"] if "row_id" in rows else np.arange(n).astype(str)
        keys = seeds.derive(
            self.seed,
            self.pass_index(),
            np.asarray(rows.get(SOURCE_COLUMN, 0)).astype(np.uint64),
            np.asarray(rows.get(REPEAT_COLUMN, 0)).astype(np.uint64),
            seeds.row_keys(ids),
        )
        return augmentation_from_uniforms(seeds.uniforms(keys, AUGMENT_DRAWS), self.params)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = make_batch(rows, self.input_size, self.output_size, self.augmentation(rows))
        for key in NAME_COLUMNS:  # carried through so a skipped row can be named
            if key in rows:
                out[key] = np.asarray(rows[key]).astype(str)
        if SOURCE_COLUMN in rows:
            out[SOURCE_COLUMN] = np.asarray(rows[SOURCE_COLUMN])
        return out
