"""Paths that may be local folders or URIs (s3://, gs://): join, read, write, copy a folder."""

from __future__ import annotations

import os
from typing import Any

from pose3d.train.config import storage_uri


def is_uri(path: str) -> bool:
    return "://" in path


#: A URI as it is; a local path made absolute (Tune trials do not run in the caller's folder).
absolute = storage_uri


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def _fs(path: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def exists(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as fh:
        return fh.readall().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Write a small text file whole (locally through a rename, so a reader never sees half)."""
    fs, p = _fs(path)
    if not is_uri(path):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = f"{p}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, p)
        return
    fs.create_dir(os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as fh:
        fh.write(text.encode("utf-8"))


def copy_dir(src: str, dst: str) -> None:
    """Copy a folder between any two of local, s3://, gs://."""
    import pyarrow.fs as pafs

    src_fs, src_p = _fs(src)
    dst_fs, dst_p = _fs(dst)
    dst_fs.create_dir(dst_p, recursive=True)
    pafs.copy_files(src_p, dst_p, source_filesystem=src_fs, destination_filesystem=dst_fs)
