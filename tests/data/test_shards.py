"""Finding, checking and reading shard sets (pose3d.data.shards), without Ray.

Ray Data reading (``read_shards``) of a real writer output is tested in test_writer.py.
"""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pose3d import schema
from pose3d.data import shards
from pose3d.image import decode_images
from tests.shard_factory import make_rows, write_shard_set


@pytest.fixture
def shard_set(tmp_path):
    """Two real shards under root/lab/train, plus decoys no reader may take."""
    root = tmp_path / "root"
    folder = write_shard_set(root / "lab" / "train", 6, has_3d=True, shards=2)
    real = sorted(folder.glob("*.parquet"))
    (root / "lab" / "_tmp" / "attempt").mkdir(parents=True)
    shutil.copy(real[0], root / "lab" / "_tmp" / "attempt" / "part-00000.parquet")  # staging
    shutil.copy(real[0], root / "lab" / "train" / "_partial.parquet")
    shutil.copy(real[0], root / "lab" / ".hidden.parquet")
    (root / "lab" / "train" / "part-00002.parquet.tmp-1234").write_bytes(b"PAR1 half written")
    (root / "lab" / "_done").mkdir()
    (root / "lab" / "_done" / "t.json").write_text("{}")
    (root / "lab" / "notes.txt").write_text("not a shard")
    return root, [str(p) for p in real]


def test_list_shards_takes_only_finished_parquet(shard_set):
    root, real = shard_set
    assert shards.list_shards(str(root)) == real
    assert shards.list_shards(str(root / "lab" / "train")) == real
    assert shards.list_shards(real[1]) == [real[1]]
    assert shards.list_shards([real[1], str(root / "lab")]) == [real[1], *real]


def test_missing_or_empty_folders_are_named(tmp_path):
    with pytest.raises(shards.NoShardsError, match=re.escape(f"{tmp_path / 'nope'}: no such file or folder")):
        shards.list_shards(str(tmp_path / "nope"))
    (tmp_path / "empty" / "_tmp").mkdir(parents=True)
    (tmp_path / "empty" / "_tmp" / "x.parquet").write_bytes(b"")
    with pytest.raises(shards.NoShardsError, match=re.escape(f"{tmp_path / 'empty'}: no shards")):
        shards.list_shards(str(tmp_path / "empty"))
    with pytest.raises(shards.NoShardsError):
        shards.load_shards_numpy(str(tmp_path / "empty"))


def test_unknown_schema_is_refused_by_name(tmp_path):
    good = write_shard_set(tmp_path / "set", 4, has_3d=False, shards=1) / "part-00000.parquet"
    plain = tmp_path / "set" / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), plain)
    with pytest.raises(schema.ShardSchemaError, match=re.escape(f"{plain}: not a pose3d shard")):
        shards.check_shards([str(good), str(plain)])
    with pytest.raises(schema.ShardSchemaError, match=re.escape(f"{plain}: not a pose3d shard")):
        shards.load_shards_numpy(str(tmp_path / "set"))
    with pytest.raises(schema.ShardSchemaError, match=re.escape(f"{plain}: not a pose3d shard")):
        shards.read_shards(str(tmp_path / "set"))  # refused before Ray reads anything

    plain.unlink()
    table = pq.read_table(good)
    meta = dict(table.schema.metadata)
    meta[b"pose3d.schema_version"] = b"999"
    future = tmp_path / "set" / "future.parquet"
    pq.write_table(table.replace_schema_metadata(meta), future)
    with pytest.raises(
        schema.ShardSchemaError, match=re.escape(f"{future}: schema version 999, this pose3d reads version 1")
    ):
        shards.check_shards(shards.list_shards(str(tmp_path / "set")))

    not_parquet = tmp_path / "set" / "broken.parquet"
    not_parquet.write_bytes(b"definitely not parquet")
    with pytest.raises(
        schema.ShardSchemaError, match=re.escape(f"{not_parquet}: not a readable Parquet file")
    ):
        shards.check_shards([str(not_parquet)])


def test_check_shards_returns_metadata(shard_set):
    _, real = shard_set
    meta = shards.check_shards(real)
    assert [m["dataset"] for m in meta] == ["synthetic_lab", "synthetic_lab"]
    assert {m["split"] for m in meta} == {"train"} and {m["schema_version"] for m in meta} == {"1"}


def test_load_shards_numpy_round_trip(tmp_path):
    rows = make_rows(5, has_3d=True, seed=3)
    pq.write_table(schema.rows_to_table(rows, "synthetic_lab", "train"), tmp_path / "a.parquet")
    data = shards.load_shards_numpy(str(tmp_path))
    assert data["joints_2d"].shape == (5, 16, 2) and data["joints_2d"].dtype == np.float32
    np.testing.assert_array_equal(data["joints_2d"], np.asarray(rows["joints_2d"], np.float32))
    np.testing.assert_array_equal(data["joints_3d"], np.asarray(rows["joints_3d"], np.float32))
    np.testing.assert_array_equal(data["crop_to_image"], rows["crop_to_image"])
    assert data["visible"].shape == (5, 16) and data["visible"].dtype == bool
    assert list(data["row_id"]) == rows["row_id"] and list(data["image_jpeg"]) == rows["image_jpeg"]
    assert data["frame"].tolist() == [0, 1, 2, 3, 4]
    part = shards.load_shards_numpy(str(tmp_path), columns=["row_id", "head_box"])
    assert set(part) == {"row_id", "head_box"} and part["head_box"].shape == (5, 4)


def test_unflatten_columns_row_major():
    batch = {"joints_2d": np.arange(64).reshape(2, 32), "row_id": np.array(["a", "b"])}
    out = shards.unflatten_columns(batch)
    assert out["joints_2d"].shape == (2, 16, 2)
    assert out["joints_2d"][0, 1].tolist() == [2, 3] and out["joints_2d"][1, 0].tolist() == [32, 33]
    assert out["row_id"] is batch["row_id"]


def test_decode_images_channel_order():
    red_bgr = np.zeros((8, 8, 3), np.uint8)
    red_bgr[..., 2] = 255
    jpeg = cv2.imencode(".jpg", red_bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    rgb = decode_images([jpeg, jpeg])
    assert rgb.shape == (2, 8, 8, 3)
    assert rgb[0, 4, 4, 0] > 240 and rgb[0, 4, 4, 2] < 15
    assert decode_images([jpeg], rgb=False)[0, 4, 4, 2] > 240
    with pytest.raises(ValueError, match="crop 1 is not a decodable JPEG"):
        decode_images([jpeg, b"nope"])
