"""pose3d.infra.stall: a watchdog that says what a stalled run waits for."""

from __future__ import annotations

import time

from pose3d.infra.stall import StallWatchdog
from tests.polling import wait_for


def test_a_stall_is_reported_with_what_waits_and_the_hint():
    messages: list[str] = []

    def describe() -> str:
        return "2 Ray actor(s) cannot start yet"

    dog = StallWatchdog(0.3, "training step", "lower data.preprocess_actors", describe, messages.append)
    with dog:
        assert wait_for(lambda: messages)
    assert messages[0].startswith("no training step for ")
    assert "2 Ray actor(s) cannot start yet. lower data.preprocess_actors" in messages[0]


def test_progress_keeps_it_quiet_and_zero_turns_it_off():
    messages: list[str] = []
    # Beats every 20 ms for 2.5 s against a 2 s timeout: quiet, with room for a busy machine's pauses.
    with StallWatchdog(2.0, "step", "", describe=lambda: "", report=messages.append) as dog:
        for _ in range(125):
            dog.beat()
            time.sleep(0.02)
    assert messages == []
    with StallWatchdog(0, "step", "", describe=lambda: "", report=messages.append) as off:
        assert off._thread is None
        time.sleep(0.1)
    assert messages == []
