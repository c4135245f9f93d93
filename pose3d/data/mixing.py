"""Exact-size batches from streams, and each step's mixed batch: a fixed number of rows with 3D
labels and of 2D-only rows (docs/conventions.md, Mixing).

Ray Data may hand out short batches mid-stream (Ray issue 66085), and a dataset shard ends after
each pass. These generators re-cut whatever arrives into batches of exactly the requested size
and start a new pass (a fresh shuffle) when one ends, so every rank takes the same fixed number
of steps and every step's batch has exactly the configured mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

Batch = dict[str, np.ndarray]


def _concat(parts: list[Batch]) -> Batch:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


#: Below this many rows seen, ``RowTally.exceeds`` judges the fraction against this many instead
#: (one corrupt row among the first few must not end a run).
MIN_ROWS_FOR_FRACTION = 1000


@dataclass
class RowTally:
    """Rows a stream handed over or skipped because their image does not decode."""

    seen: int = 0
    skipped: int = 0
    unreported: list[str] = field(default_factory=list)  # "shard file, row id" of skips not yet logged

    def count(self, batch: Batch) -> Batch:
        """``batch`` without its undecoded rows (``decoded`` False), each counted and named; the
        naming columns (``row_id``, ``path``) and ``decoded`` are removed."""
        decoded = batch.pop("decoded", None)
        row_id, path = batch.pop("row_id", None), batch.pop("path", None)
        if decoded is None:
            return batch
        self.seen += len(decoded)
        if decoded.all():
            return batch
        bad = np.flatnonzero(~decoded)
        self.skipped += len(bad)
        self.unreported += [
            f"shard {path[i] if path is not None else '?'}, row {row_id[i] if row_id is not None else '?'}"
            for i in bad
        ]
        return {k: v[decoded] for k, v in batch.items()}

    def take_unreported(self) -> list[str]:
        names, self.unreported = self.unreported, []
        return names

    def exceeds(self, max_fraction: float) -> bool:
        """Whether the skipped rows are more than ``max_fraction`` of the rows seen (of at least
        ``MIN_ROWS_FOR_FRACTION``)."""
        return self.skipped > max_fraction * max(self.seen, MIN_ROWS_FOR_FRACTION)


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stands: the next row it hands out is row ``offset`` (0-based, counting only
    rows that decode) of pass ``pass_index`` (0 for the run's first pass)."""

    pass_index: int = 0
    offset: int = 0


class RowStream:
    """Rows of a stream that is read in passes, handed out in any requested amount.

    ``new_pass(k)`` starts pass k (for a Ray Data shard: a new epoch, its order seeded by k). Rows
    left at the end of a pass carry over, so nothing is dropped; one RowStream lives for the whole
    run, so a pass is never abandoned half-read (which would desynchronize ``streaming_split``
    ranks). Rows whose image did not decode are skipped and counted in ``tally``. ``start``: where
    a resumed run's stream stood (``position()`` at its checkpoint): reading begins with that pass,
    and its first ``offset`` rows, already trained on, are read and dropped.
    """

    def __init__(
        self,
        new_pass: Callable[[int], Iterable[Batch]],
        max_empty_passes: int = 3,
        start: StreamPosition | None = None,
    ) -> None:
        start = start or StreamPosition()
        self._new_pass = new_pass
        self._iter: Iterator[Batch] | None = None
        self._pending: list[tuple[int, int, Batch]] = []  # (pass, offset of its first row, rows)
        self._have = 0
        self._pass, self._next_pass = start.pass_index - 1, start.pass_index
        self._skip = start.offset
        self._read_in_pass = 0  # rows of the current pass read so far (dropped ones included)
        self._empty_passes = 0
        self._max_empty = max_empty_passes
        self.passes = 0  # passes started by this stream
        self.tally = RowTally()

    def take(self, n: int) -> Batch:
        """Exactly n rows (n >= 1)."""
        if n < 1:
            raise ValueError(f"take needs n >= 1, got {n}")
        while self._have < n:
            if self._iter is None:
                self._pass, self._next_pass = self._next_pass, self._next_pass + 1
                self._iter = iter(self._new_pass(self._pass))
                self._read_in_pass = 0
                self.passes += 1
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter = None
                self._skip = 0  # a pass shorter than the resume offset: the data changed
                self._empty_passes = self._empty_passes + 1 if self._read_in_pass == 0 else 0
                if self._empty_passes >= self._max_empty:
                    raise RuntimeError(
                        "the dataset shard yielded no rows in several passes; is it empty?"
                    ) from None
                continue
            batch = self.tally.count(batch)
            rows = len(next(iter(batch.values())))
            if self._skip and rows:
                drop = min(self._skip, rows)
                batch = {k: v[drop:] for k, v in batch.items()}
                self._skip -= drop
                self._read_in_pass += drop
                rows -= drop
            if rows:
                self._pending.append((self._pass, self._read_in_pass, batch))
                self._have += rows
                self._read_in_pass += rows
        out, self._pending = _take_rows(self._pending, n)
        self._have -= n
        return out

    def position(self) -> StreamPosition:
        """The pass and offset of the next row ``take`` hands out."""
        if self._pending:
            pass_index, offset, _ = self._pending[0]
            return StreamPosition(pass_index, offset)
        if self._iter is not None:
            return StreamPosition(self._pass, self._read_in_pass + self._skip)
        return StreamPosition(self._next_pass, self._skip)

    def close(self) -> None:
        """End the pass being read (for a Ray Data stream: stop its executor), e.g. before Ray shuts down."""
        if self._iter is not None and hasattr(self._iter, "close"):
            self._iter.close()
        self._iter = None


def _take_rows(pending: list[tuple[int, int, Batch]], n: int) -> tuple[Batch, list[tuple[int, int, Batch]]]:
    """The first n rows of the pending chunks (pass, offset, rows), and the chunks left."""
    parts, need, rest = [], n, list(pending)
    while need:
        pass_index, offset, chunk = rest.pop(0)
        rows = len(next(iter(chunk.values())))
        if rows <= need:
            parts.append(chunk)
            need -= rows
        else:
            parts.append({k: v[:need] for k, v in chunk.items()})
            rest.insert(0, (pass_index, offset + need, {k: v[need:] for k, v in chunk.items()}))
            need = 0
    return (parts[0] if len(parts) == 1 else _concat(parts)), rest


def mixed_batch(stream_3d: RowStream | None, n_3d: int, stream_2d: RowStream | None, n_2d: int) -> Batch:
    """One step's batch: n_3d rows of the 3D stream, then n_2d rows of the 2D stream (a count of
    0 skips that stream: stage 1, or ratio 0)."""
    parts = []
    if n_3d:
        parts.append(stream_3d.take(n_3d))
    if n_2d:
        parts.append(stream_2d.take(n_2d))
    if not parts:
        raise ValueError("a batch needs rows from at least one stream")
    return parts[0] if len(parts) == 1 else _concat(parts)


class SourceCounts:
    """Rows drawn from each source of one side of the mix (``data.set_3d`` or ``data.set_2d``):
    since the last report (the window) and over the run."""

    def __init__(self, n_sources: int, run_total: np.ndarray | None = None) -> None:
        self.window = np.zeros(n_sources, np.int64)
        self.total = np.zeros(n_sources, np.int64) if run_total is None else np.asarray(run_total, np.int64)
        if self.total.shape != (n_sources,):
            raise ValueError(f"run_total has shape {self.total.shape}, expected ({n_sources},)")

    def count(self, source: np.ndarray) -> None:
        """Count one batch's rows by source index, ``source`` (rows,) ints in [0, n_sources)."""
        drawn = np.bincount(np.asarray(source, np.int64), minlength=len(self.window))
        if len(drawn) != len(self.window):
            raise ValueError(f"source index {len(drawn) - 1} out of range for {len(self.window)} sources")
        self.window += drawn
        self.total += drawn

    def take_window(self) -> np.ndarray:
        """The window's counts, and a new window."""
        window, self.window = self.window, np.zeros_like(self.window)
        return window


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts (n,) -> fractions of their sum (zeros when nothing was counted)."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)
