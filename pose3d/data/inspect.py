"""What a shard set holds: row counts per dataset, split, subject and action (no Ray)."""

from __future__ import annotations

from collections.abc import Sequence

from pose3d.data import shards

#: The columns ``rows_per_group`` groups by, in its output's order.
GROUP_COLUMNS = ("dataset", "split", "subject", "action")

GroupCount = tuple[str, str, str, str, int]


def rows_per_group(files: Sequence[str]) -> tuple[list[GroupCount], int]:
    """Rows per (dataset, split, subject, action) of the shard ``files``, sorted, and the total.
    Reads only those columns."""
    table = shards.read_table(files, GROUP_COLUMNS)
    grouped = table.group_by(list(GROUP_COLUMNS)).aggregate([([], "count_all")]).to_pylist()
    rows = sorted((g["dataset"], g["split"], g["subject"], g["action"], g["count_all"]) for g in grouped)
    return rows, table.num_rows


def format_counts(rows: Sequence[GroupCount]) -> str:
    """A fixed-width table of ``rows_per_group``'s groups ("-" for an empty subject or action)."""
    header = ("dataset", "split", "subject", "action", "rows")
    cells = [header] + [(d, s, sub or "-", act or "-", str(n)) for d, s, sub, act, n in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [
        "  ".join(c[i].rjust(widths[i]) if i == 4 else c[i].ljust(widths[i]) for i in range(5)) for c in cells
    ]
    return "\n".join(lines)
