"""pose3d.storage: the one storage layer (local paths and URIs)."""

from __future__ import annotations

import os

import pytest

from pose3d import storage


def test_absolute_join_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("runs") == str(tmp_path / "runs")
    assert storage.absolute("s3://bucket/x") == "s3://bucket/x"
    assert storage.join("s3://bucket/", "/a/", "b") == "s3://bucket/a/b"
    fs, inner = storage.resolve(f"file://{tmp_path}/x/")
    assert fs.type_name == "local" and inner == f"{tmp_path}/x"
    assert storage.to_uri(fs, inner) == inner


def test_write_text_is_whole_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "report.json"
    storage.write_text(str(target), "first")
    assert storage.read_text(str(target)) == "first" and storage.exists(str(target))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        storage.write_text(str(target), "second")
    assert target.read_text() == "first"  # the old file stands, and no temporary is left behind
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_written_file_has_the_umasks_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        storage.write_text(str(tmp_path / "shared.json"), "{}")
        os.umask(0o077)
        storage.write_text(str(tmp_path / "private.json"), "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def test_local_copy_and_copy_dir(tmp_path):
    src = tmp_path / "src"
    storage.write_text(str(src / "a" / "b.txt"), "x")
    storage.copy_dir(str(src), f"file://{tmp_path}/dst")
    assert (tmp_path / "dst" / "a" / "b.txt").read_text() == "x"
    with storage.local_copy(f"file://{tmp_path}/dst") as local:
        assert local == tmp_path / "dst"  # local, file:// or not: no copy
    with storage.local_copy(str(src)) as local:
        assert local == src
