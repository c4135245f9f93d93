"""Batch construction: exact mixing, and shard rows -> inputs/targets with augmentation."""

import cv2
import numpy as np
import pytest

from pose3d import decode, geometry, skeleton, targets
from pose3d.data.augment import AugmentParams, identity_augmentation, make_batch, sample_augmentation
from pose3d.data.mixing import (
    MIN_ROWS_FOR_FRACTION,
    RowStream,
    SourceCounts,
    StreamPosition,
    mixed_batch,
    shares,
)
from pose3d.schema import CROP_MARGIN


def _passes(n_rows, chunk):
    def new_pass(k):
        for i in range(0, n_rows, chunk):
            yield {"row": np.arange(i, min(i + chunk, n_rows)), "pass": np.full(min(chunk, n_rows - i), k)}

    return new_pass


def test_row_stream_gives_exact_sizes_across_short_batches_and_passes():
    stream = RowStream(_passes(10, 3))  # passes of 3, 3, 3, 1 rows: short batches and a pass end
    taken = np.concatenate([stream.take(4)["row"] for _ in range(5)])
    assert taken.tolist() == list(range(10)) + list(range(10))
    assert stream.passes == 2


def test_a_stream_resumed_at_its_position_hands_out_the_rows_the_whole_stream_would():
    whole = RowStream(_passes(10, 3))
    expected = [whole.take(4) for _ in range(8)]
    for stop_after in range(1, 8):
        first = RowStream(_passes(10, 3))
        for _ in range(stop_after):
            first.take(4)
        position = first.position()  # saved with a checkpoint
        resumed = RowStream(_passes(10, 3), start=position)
        for want in expected[stop_after:]:
            got = resumed.take(4)
            for key in ("row", "pass"):
                assert got[key].tolist() == want[key].tolist()
    # After 12 rows of passes of 10: the next row is row 2 of pass 1.
    stream = RowStream(_passes(10, 3))
    stream.take(12)
    assert stream.position() == StreamPosition(1, 2)
    assert RowStream(_passes(10, 3)).position() == StreamPosition(0, 0)


def test_row_stream_refuses_an_empty_dataset():
    with pytest.raises(RuntimeError, match="no rows"):
        RowStream(_passes(0, 3)).take(1)


def test_mixed_batch_is_exactly_the_configured_split():
    s3, s2 = RowStream(_passes(7, 2)), RowStream(_passes(5, 4))
    for _ in range(6):
        b = mixed_batch(s3, 3, s2, 5)
        assert len(b["row"]) == 8
    only_2d = mixed_batch(None, 0, s2, 8)
    assert len(only_2d["row"]) == 8


def _rows(n=4, crop=96, seed=0):
    """Shard-like rows: a dark crop with a bright dot at every joint, joints inside the person box."""
    rng = np.random.default_rng(seed)
    box = crop / CROP_MARGIN
    lo, hi = (crop - box) / 2 + 8, (crop + box) / 2 - 8  # off the map border (no neighbour there)
    joints = rng.uniform(lo, hi, (n, 16, 2))
    jpegs = []
    for j in joints:
        img = np.zeros((crop, crop, 3), np.uint8)
        for x, y in j:
            cv2.circle(img, (round(x), round(y)), 1, (255, 255, 255), -1)
        jpegs.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    j3d = np.concatenate([joints - crop / 2, rng.uniform(-50, 50, (n, 16, 1))], -1) * 5.0
    return {
        "image_jpeg": np.array(jpegs, dtype=object),
        "crop_size": np.full(n, crop),
        "joints_2d": joints.reshape(n, -1).astype(np.float32),
        "visible": np.ones((n, 16), bool),
        "joints_3d": j3d.reshape(n, -1).astype(np.float32),
        "has_3d": np.array([True, False] * (n // 2)),
    }


def test_identity_batch_targets_decode_to_the_labels():
    rows = _rows()
    b = make_batch(rows, 64, 16, identity_augmentation(4))
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == np.uint8
    assert "heatmaps" not in b  # the trainer draws them on its device from joints_out and visible
    # The person box fills the input: crop px -> input px is a shift and a scale.
    crop, box = 96, 96 / CROP_MARGIN
    expect_in = (rows["joints_2d"].reshape(4, 16, 2) - (crop - 1) / 2) * (64 / box) + 63 / 2
    expect_out = geometry.input_to_output_px(expect_in, 4)
    np.testing.assert_allclose(b["joints_out"], expect_out, atol=1e-4)
    decoded, _ = decode.heatmaps_to_joints(targets.render_heatmaps(b["joints_out"], b["visible"], 16))
    assert np.abs(decoded - expect_out).max() <= 0.26
    assert np.isnan(b["depth"][~rows["has_3d"]]).all() and np.isfinite(b["depth"][rows["has_3d"]]).all()
    np.testing.assert_allclose(b["joints_2d_norm"], expect_out * 2 / 16 - 1, atol=1e-5)


def test_flip_swaps_left_and_right_and_mirrors_depth_targets():
    rows = _rows()
    aug = identity_augmentation(4)
    plain = make_batch(rows, 64, 16, aug)
    aug["flip"] = np.ones(4, bool)
    flipped = make_batch(rows, 64, 16, aug)
    perm = skeleton.FLIP_PERMUTATION
    # Joint i of the flipped batch is the mirror image of joint perm[i] of the plain one.
    np.testing.assert_allclose(
        flipped["joints_out"][:, :, 0], 15 - plain["joints_out"][:, perm, 0], atol=1e-4
    )
    np.testing.assert_allclose(flipped["joints_out"][:, :, 1], plain["joints_out"][:, perm, 1], atol=1e-4)
    d3 = rows["has_3d"]
    np.testing.assert_allclose(flipped["depth"][d3], plain["depth"][d3][:, perm], atol=1e-5)
    # The image is mirrored too: the dot of a joint is where its label is.
    img = flipped["image"][0].max(0).astype(float)
    j = np.rint(geometry.output_to_input_px(flipped["joints_out"][0], 4)).astype(int)
    assert img[j[:, 1].clip(0, 63), j[:, 0].clip(0, 63)].mean() > 100


def test_random_augmentation_stays_consistent_with_the_image():
    rows = _rows(n=6, seed=3)
    rng = np.random.default_rng(1)
    aug = sample_augmentation(rng, 6, AugmentParams(rotation_prob=1.0, color_jitter=0.0))
    b = make_batch(rows, 64, 16, aug)
    assert np.abs(aug["rotation_deg"]).max() > 1
    img = b["image"].max(1).astype(float)  # (n, 64, 64)
    j = np.rint(geometry.output_to_input_px(b["joints_out"], 4)).astype(int)
    inside = b["visible"]
    ii = np.nonzero(inside)
    values = img[ii[0], j[ii][:, 1], j[ii][:, 0]]
    assert np.median(values) > 100  # the dots moved with their labels


def test_a_rows_augmentation_follows_from_the_seed_pass_and_row_not_the_batch():
    from pose3d.data.augment import BatchPreprocessor

    rows = _rows(n=6, seed=4)
    rows["row_id"] = np.array([f"lab/train/{i}" for i in range(6)])
    params = AugmentParams()
    prep = BatchPreprocessor(64, 16, params, seed=11)
    whole = prep.augmentation(rows)
    half = prep.augmentation({k: v[3:] for k, v in rows.items()})  # another batch, another actor
    for key in whole:
        np.testing.assert_array_equal(whole[key][3:], half[key])
    same_seed, other_seed = (BatchPreprocessor(64, 16, params, seed=s).augmentation(rows) for s in (11, 12))
    assert same_seed["scale"].tolist() == whole["scale"].tolist()
    assert not np.array_equal(other_seed["scale"], whole["scale"])
    # The second copy of a row within a pass (data.epochs_per_pass) is augmented differently.
    again = prep.augmentation({**rows, "repeat": np.ones(6, np.int64)})
    assert not np.array_equal(again["scale"], whole["scale"])
    assert np.ptp(whole["scale"]) > 0 and whole["flip"].dtype == bool


def test_an_undecodable_row_is_flagged_not_fatal():
    rows = _rows()
    rows["image_jpeg"] = list(rows["image_jpeg"])
    rows["image_jpeg"][2] = b"garbage"
    b = make_batch(rows, 64, 16, identity_augmentation(4))
    assert b["decoded"].tolist() == [True, True, False, True]
    assert not b["image"][2].any() and b["image"][1].any()


def test_row_stream_skips_counts_and_names_undecoded_rows():
    def passes():
        while True:
            yield [{
                "x": np.arange(4), "decoded": np.array([True, False, True, True]),
                "row_id": np.array(["a", "b", "c", "d"]), "path": np.array(["s0.parquet"] * 4),
            }]  # fmt: skip

    batches = passes()
    stream = RowStream(lambda k: next(batches))
    assert stream.take(6)["x"].tolist() == [0, 2, 3, 0, 2, 3]
    assert set(stream.take(1)) == {"x"}  # the naming columns do not reach training
    assert (stream.tally.seen, stream.tally.skipped) == (12, 3)  # three passes read
    assert stream.tally.take_unreported() == ["shard s0.parquet, row b"] * 3
    assert stream.tally.take_unreported() == []
    assert not stream.tally.exceeds(0.01)  # 3 of at least MIN_ROWS_FOR_FRACTION rows
    assert stream.tally.exceeds(2 / MIN_ROWS_FOR_FRACTION)


def test_source_counts_keep_a_window_and_the_run_total():
    counts = SourceCounts(3, run_total=np.array([10, 0, 5]))
    counts.count(np.array([0, 0, 2, 0]))
    counts.count(np.array([2], np.int16))
    np.testing.assert_array_equal(counts.take_window(), [3, 0, 2])
    np.testing.assert_array_equal(counts.take_window(), [0, 0, 0])
    np.testing.assert_array_equal(counts.total, [13, 0, 7])
    np.testing.assert_allclose(shares(np.array([3, 0, 1])), [0.75, 0.0, 0.25])
    np.testing.assert_array_equal(shares(np.zeros(2)), [0.0, 0.0])
    with pytest.raises(ValueError, match="source index 3 out of range for 3 sources"):
        counts.count(np.array([3]))


def test_a_batch_says_which_joints_each_rows_dataset_labels():
    rows = _rows()
    rows["dataset"] = np.array(["coco", "mpii", "coco", "h36m"])
    flip = identity_augmentation(4)
    flip["flip"] = np.array([True, False, False, False])
    b = make_batch(rows, 64, 16, flip)
    lacks = [skeleton.JOINT_INDEX[j] for j in ("thorax", "upper_neck", "head_top")]
    for i, dataset in enumerate(rows["dataset"]):
        expect = np.ones(16, bool)
        if dataset == "coco":
            expect[lacks] = False
        np.testing.assert_array_equal(b["labelled"][i], expect)
    assert "labelled" not in make_batch(_rows(), 64, 16, identity_augmentation(4))  # no dataset column
