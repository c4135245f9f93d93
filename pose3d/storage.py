"""The one storage layer: every path pose3d reads or writes may be a local path or a URI (``s3://``,
``gs://``, ``file://``). Nothing else in the package parses a URI or makes a path absolute.

May import: the standard library and pyarrow only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

_LOCAL = pafs.LocalFileSystem()

#: The environment a remote filesystem is configured from: part of its cache key.
_FS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_REGION",
    "AWS_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...``; False for a local path."""
    return "://" in str(path)


def absolute(path: str | os.PathLike) -> str:
    """A URI as it is; a local path made absolute, ``~`` expanded. Ray workers and Tune trials do not
    run in the caller's folder, so every path handed to them goes through here."""
    text = str(path)
    return text if is_uri(text) else os.path.abspath(os.path.expanduser(text))


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI alike."""
    if is_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def resolve(path_or_uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """A local path (relative allowed) or a URI -> the pyarrow filesystem and the path within it
    (no trailing slash)."""
    text = str(path_or_uri)
    if not is_uri(text):
        return _LOCAL, absolute(text).rstrip("/") or "/"
    scheme, rest = text.split("://", 1)
    if scheme == "file":
        return _LOCAL, os.path.abspath(rest).rstrip("/") or "/"
    if scheme in ("s3", "gs", "gcs"):
        # One filesystem object per bucket and credentials: creating an S3 filesystem may query the
        # bucket's region.
        env = tuple(os.environ.get(k) for k in _FS_ENV)
        return _remote_filesystem(f"{scheme}://{rest.split('/', 1)[0]}", env), rest.rstrip("/")
    fs, path = pafs.FileSystem.from_uri(text)
    return fs, path.rstrip("/") or "/"


@functools.lru_cache(maxsize=32)
def _remote_filesystem(bucket_uri: str, env: tuple[str | None, ...]) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(bucket_uri)[0]


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    """The inverse of ``resolve``: a plain path for the local filesystem, ``scheme://path`` otherwise."""
    if fs.type_name == "local":
        return path
    scheme = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs", "abfs": "abfs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path}"


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_bytes(path: str) -> bytes:
    fs, p = resolve(path)
    with fs.open_input_stream(p) as fh:
        return fh.readall()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write a file whole. Locally through a temporary file and a rename in the same folder, so a
    reader (or a crash) never leaves half a file; object stores publish a put whole already. A new
    local file gets the permissions the umask gives any new file (mkstemp's would be 0600, which
    hides reports and predictions from the user's group)."""
    fs, p = resolve(path)
    if fs is _LOCAL:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    fs.create_dir(os.path.dirname(p), recursive=True)
    with fs.open_output_stream(p) as fh:
        fh.write(data)


def write_text(path: str, text: str) -> None:
    """``write_bytes`` for UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def copy_dir(src: str, dst: str) -> None:
    """Copy a folder between any two of local, s3://, gs://."""
    src_fs, src_p = resolve(src)
    dst_fs, dst_p = resolve(dst)
    dst_fs.create_dir(dst_p, recursive=True)
    pafs.copy_files(src_p, dst_p, source_filesystem=src_fs, destination_filesystem=dst_fs)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[Path]:
    """A local folder with the contents of ``path``: the folder itself when local (``file://``
    included), else a temporary download removed on exit."""
    fs, inner = resolve(path)
    if fs is _LOCAL:
        yield Path(inner)
        return
    with tempfile.TemporaryDirectory(prefix="pose3d-copy-") as tmp:
        copy_dir(str(path), tmp)
        yield Path(tmp)


class LocalMirror:
    """A local folder to write into that ``sync`` copies to ``target`` when the target is remote
    (TensorBoard's writer, for one, wants a local folder); a local target is written directly."""

    def __init__(self, target: str) -> None:
        self.target = absolute(target)
        self.remote = is_uri(target)
        self.local = tempfile.mkdtemp(prefix="pose3d-mirror-") if self.remote else self.target

    def sync(self) -> None:
        if self.remote:
            copy_dir(self.local, self.target)
