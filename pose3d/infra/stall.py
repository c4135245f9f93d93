"""Noticing work that makes no progress, and saying why: a watchdog thread, and a description of
what a Ray cluster is waiting for (actors that cannot start, CPUs in use).

A Ray job starved of CPUs does not fail: its actors wait to be scheduled and the job waits on them,
silently. The watchdog turns that into a message naming what waits and the setting to change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("pose3d")

#: Ray actor states of an actor that has not started.
_WAITING_STATES = ("PENDING_CREATION", "DEPENDENCIES_UNREADY")


def describe_cluster() -> str:
    """One line on what the connected Ray cluster waits for: actors that cannot start yet (by class,
    e.g. a Ray Data operator's ``MapWorker(MapBatches(BatchPreprocessor))``) and its free CPUs."""
    import ray
    from ray._private import state

    total = ray.cluster_resources().get("CPU", 0.0)
    free = ray.available_resources().get("CPU", 0.0)
    try:
        waiting = Counter(
            a["ActorClassName"] for a in state.actors().values() if a.get("State") in _WAITING_STATES
        )
    except Exception:  # noqa: BLE001 - a diagnostic must never fail the run
        waiting = Counter()
    if waiting:
        names = ", ".join(f"{name} x{n}" for name, n in waiting.most_common())
        actors = f"{sum(waiting.values())} Ray actor(s) cannot start yet ({names})"
    else:
        actors = "no Ray actor is waiting to start"
    return f"{actors}; {free:g} of {total:g} CPUs free"


class StallWatchdog:
    """A daemon thread that calls ``report`` when ``beat`` has not been called for ``timeout_s``
    seconds, and again every ``timeout_s`` while the stall lasts. The message says what made no
    progress, what the cluster waits for (``describe``) and ``hint`` (the settings to change).
    ``timeout_s`` <= 0: off."""

    def __init__(
        self,
        timeout_s: float,
        what: str,
        hint: str,
        describe: Callable[[], str] = describe_cluster,
        report: Callable[[str], None] = log.warning,
    ) -> None:
        self.timeout_s, self.what, self.hint = timeout_s, what, hint
        self._describe, self._report = describe, report
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports = 0

    def beat(self) -> None:
        """Progress was made."""
        self._last = time.monotonic()

    def start(self) -> StallWatchdog:
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._watch, name="pose3d-stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StallWatchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        reported_at = None
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            idle = time.monotonic() - self._last
            if idle < self.timeout_s:
                reported_at = None
                continue
            if reported_at is not None and time.monotonic() - reported_at < self.timeout_s:
                continue
            reported_at = time.monotonic()
            try:
                seen = self._describe()
            except Exception as err:  # noqa: BLE001 - a diagnostic must never fail the run
                seen = f"(cannot describe the cluster: {err})"
            self.reports += 1
            self._report(f"no {self.what} for {idle:.0f} s: {seen}. {self.hint}")
