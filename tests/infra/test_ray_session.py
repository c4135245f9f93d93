"""pose3d.infra.ray_session: work that SIGINT or SIGTERM stops with a named exception."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pose3d.infra.ray_session import Interrupted, run_interruptibly


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_work_and_names_itself(sig):
    before = signal.getsignal(sig)
    threading.Timer(0.3, os.kill, (os.getpid(), sig)).start()
    started = time.monotonic()
    with pytest.raises(Interrupted) as stop:
        run_interruptibly(lambda: time.sleep(30))
    assert stop.value.signal == sig.name and time.monotonic() - started < 5
    assert signal.getsignal(sig) is before  # the previous handler is back


def test_results_and_errors_come_through():
    assert run_interruptibly(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        run_interruptibly(lambda: 1 / 0)
