"""Reading shard sets: find the finished shards, check their schema, read them with Ray Data (or with
plain pyarrow for small evaluations and tests).

A shard set is a folder (local, or an object-store URI such as ``s3://bucket/pose3d``) holding
``*.parquet`` files at any depth. Files and folders whose name starts with ``_`` or ``.`` are never
taken: the writer keeps its temporary files, done-markers and quarantine reports there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pose3d import schema, skeleton
from pose3d.storage import resolve, to_uri

if TYPE_CHECKING:
    import ray.data

_J = skeleton.NUM_JOINTS


class NoShardsError(FileNotFoundError):
    """A path with no finished shard under it."""

    def __init__(self, path: str, reason: str = "no shards (*.parquet) found") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def list_shards(paths: str | Sequence[str]) -> list[str]:
    """Every finished shard under ``paths`` (folders searched recursively, or shard files), sorted.

    Only ``*.parquet`` files are taken, and none inside a folder (or with a name) starting with ``_``
    or ``.``. Returns local paths or URIs as given. Raises NoShardsError naming a path that does not
    exist or holds no shard.
    """
    found: list[str] = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        fs, root = resolve(path)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise NoShardsError(str(path), "no such file or folder")
        if info.type == pafs.FileType.File:
            if not root.endswith(".parquet"):
                raise NoShardsError(str(path), "not a .parquet file")
            found.append(to_uri(fs, root))
            continue
        here = []
        for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
            relative = entry.path[len(root) :].lstrip("/")
            if (
                entry.type == pafs.FileType.File
                and entry.path.endswith(".parquet")
                and not _is_hidden(relative)
            ):
                here.append(to_uri(fs, entry.path))
        if not here:
            raise NoShardsError(str(path))
        found.extend(sorted(here))
    return found


def check_shards(paths: Iterable[str], max_threads: int = 16) -> list[dict[str, str]]:
    """Validate every shard's footer (``schema.read_shard_metadata``); return their pose3d metadata
    in order. Raises ``schema.ShardSchemaError`` naming the first bad file."""
    paths = list(paths)

    def one(path: str) -> dict[str, str]:
        fs, inner = resolve(path)
        try:
            return schema.read_shard_metadata(inner, filesystem=fs)
        except schema.ShardSchemaError as err:
            raise schema.ShardSchemaError(path, str(err).removeprefix(f"{inner}: ")) from err

    if len(paths) <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(max_threads, len(paths))) as pool:
        return list(pool.map(one, paths))


def read_shards(
    paths: str | Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    shuffle_files: bool = False,
    shuffle_seed: int | None = None,
    first_pass: int = 0,
    **read_parquet_args,
) -> ray.data.Dataset:
    """A Ray Dataset over the finished shards under ``paths``, after checking every file's schema.

    ``columns`` selects columns (all by default). Fixed-size list columns arrive as flat tensors,
    e.g. joints_2d (B, 32); ``unflatten_columns`` gives them their row shapes. ``shuffle_files``
    reads the files in a new order at every execution: a random one, or with ``shuffle_seed`` the
    order of pass ``first_pass`` + execution index (``pose3d.data.passes``).
    """
    import ray.data

    files = list_shards(paths)
    check_shards(files)
    if columns is not None:
        unknown = sorted(set(columns) - set(schema.COLUMNS))
        if unknown:
            raise ValueError(f"unknown shard columns {unknown}; the schema has {list(schema.COLUMNS)}")
    # Ray 2.60's V2 Parquet reader starts a pool of 32 footer-reading actors for every read (and
    # training re-reads every pass): hundreds of processes on a small machine with many small
    # shards. The V1 reader lists footers in a few tasks; shards here are few and self-describing.
    ray.data.DataContext.get_current().use_datasource_v2 = False
    return ray.data.read_parquet(
        files,
        columns=list(columns) if columns is not None else None,
        shuffle=_file_shuffle(shuffle_files, shuffle_seed, first_pass),
        **read_parquet_args,
    )


def _file_shuffle(shuffle: bool, seed: int | None, first_pass: int) -> object:
    if not shuffle:
        return None
    if seed is None:
        return "files"
    from pose3d.data.passes import PassSeededFileShuffle

    return PassSeededFileShuffle(seed=seed, first_pass=first_pass)


def unflatten_columns(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Give the fixed-size columns of a numpy batch their row shapes, e.g. joints_2d (B, 32) ->
    (B, 16, 2). Other columns pass through."""
    out = dict(batch)
    for name, shape in schema.ROW_SHAPES.items():
        if name in out:
            out[name] = np.asarray(out[name]).reshape(-1, *shape)
    return out


def column_to_numpy(name: str, column: pa.ChunkedArray) -> np.ndarray:
    typ = column.type
    if pa.types.is_fixed_size_list(typ):
        flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), *schema.ROW_SHAPES[name])
    if pa.types.is_string(typ) or pa.types.is_binary(typ):
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy()


def load_shards_numpy(
    paths: str | Sequence[str], columns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Read the shards under ``paths`` into memory without Ray (small sets: evaluation, tests).

    Returns column -> array with row shapes, e.g. joints_2d (N, 16, 2) float32; strings and JPEG
    bytes as object arrays. Files are read in ``list_shards`` order.
    """
    files = list_shards(paths)
    check_shards(files)
    names = list(columns) if columns is not None else list(schema.COLUMNS)
    return table_to_numpy(read_table(files, names))


def read_table(files: Sequence[str], columns: Sequence[str]) -> pa.Table:
    """``columns`` of the shard ``files`` (as ``list_shards`` gives them) as one Arrow table, in
    file order, without Ray and without a schema check."""
    tables = []
    for path in files:
        fs, inner = resolve(path)
        tables.append(pq.read_table(inner, columns=list(columns), filesystem=fs))
    return pa.concat_tables(tables)


def table_to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """An Arrow table of shard columns -> column -> array with row shapes (``column_to_numpy``)."""
    return {name: column_to_numpy(name, table.column(name)) for name in table.column_names}


def sample_rows(files: Sequence[str], n: int, seed: int, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """``n`` rows drawn uniformly without replacement (all rows when fewer) from the shard ``files``,
    reading only the row groups' columns asked for; rows come in file order."""
    handles = []
    for path in files:
        fs, inner = resolve(path)
        handles.append(pq.ParquetFile(fs.open_input_file(inner)))
    sizes = np.array([h.metadata.num_rows for h in handles])
    total = int(sizes.sum())
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    file_of = np.searchsorted(np.cumsum(sizes), picks, side="right")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    parts = [
        handles[f].read(columns=list(columns)).take(picks[file_of == f] - starts[f])
        for f in np.unique(file_of)
    ]
    if not parts:
        return {name: np.zeros(0) for name in columns}
    return table_to_numpy(pa.concat_tables(parts))


def rows_by_id(
    paths: str | Sequence[str], row_ids: Sequence[str], columns: Sequence[str]
) -> dict[str, np.ndarray]:
    """The rows with these ``row_id`` values (in that order) from the shards under ``paths``, read with
    a filter so only the matching rows are kept in memory (the images of a figure). Raises KeyError
    naming an id that is not there."""
    wanted = list(dict.fromkeys(str(r) for r in row_ids))
    names = list(dict.fromkeys(("row_id", *columns)))
    tables = []
    for shard in list_shards(paths):
        fs, inner = resolve(shard)
        tables.append(pq.read_table(inner, columns=names, filters=[("row_id", "in", wanted)], filesystem=fs))
    table = pa.concat_tables(tables)
    found = {rid: i for i, rid in enumerate(table.column("row_id").to_pylist())}
    missing = [r for r in wanted if r not in found]
    if missing:
        raise KeyError(f"{paths}: no row with row_id {missing[0]!r}")
    order = [found[str(r)] for r in row_ids]
    return {name: column_to_numpy(name, table.column(name))[order] for name in columns}


def count_shard_rows(files: Sequence[str]) -> int:
    """Rows in these shard files, from their Parquet footers (no data read)."""

    def one(path: str) -> int:
        fs, inner = resolve(path)
        return pq.read_metadata(inner, filesystem=fs).num_rows

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(files)))) as pool:
        return sum(pool.map(one, files))
