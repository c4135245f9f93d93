"""Stops the Ray processes of a local Ray when the process that started it dies without stopping
them (SIGKILL, a crash): ``python -m pose3d.infra.reaper DRIVER_PID``, started by ``init_ray`` in its
own session so that killing the driver's process group does not take it along.

Ray ties its core processes to the driver (they die with it), but the agents the raylet starts are
re-parented to init and live on. The reaper keeps a list of the driver's descendants whose command
line names Ray, refreshed every second, and when the driver is gone it sends them SIGTERM, then
SIGKILL to those still running 3 s later. Processes are matched by PID and start time, so a
recycled PID is never signalled. It exits when it has nothing left to watch.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pose3d.infra.local_cluster import all_processes, proc_stat

#: Command-line fragments of the processes a local Ray starts.
RAY_MARKERS = ("ray", "gcs_server", "raylet", "dashboard")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_descendants(root: int) -> dict[int, int]:
    """PID -> start ticks of the live descendants of ``root`` whose command line names Ray."""
    table = {pid: st for pid, st in all_processes().items() if st[0] not in ("Z", "X")}
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st[1], []).append(pid)
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and child != os.getpid():
                found[child] = table[child][3]
                stack.append(child)
    return {pid: start for pid, start in found.items() if any(m in _cmdline(pid) for m in RAY_MARKERS)}


def _same(pid: int, start: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[3] == start


def _signal(pids: dict[int, int], sig: signal.Signals) -> None:
    for pid, start in pids.items():
        if _same(pid, start):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def watch(driver: int, poll_s: float = 1.0, grace_s: float = 3.0) -> int:
    """Block until ``driver`` is gone, then stop the Ray processes it left; returns how many."""
    stat = proc_stat(driver)
    if stat is None:
        return 0
    driver_start = stat[3]
    known: dict[int, int] = {}
    while _same(driver, driver_start):
        known.update(ray_descendants(driver))
        known = {pid: start for pid, start in known.items() if _same(pid, start)}
        time.sleep(poll_s)
    left = {pid: start for pid, start in known.items() if _same(pid, start)}
    _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_same(p, s) for p, s in left.items()):
        time.sleep(0.1)
    _signal(left, signal.SIGKILL)
    return len(left)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m pose3d.infra.reaper DRIVER_PID", file=sys.stderr)
        return 2
    watch(int(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
