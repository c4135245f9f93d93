"""``pose3d.data.idle``: the scheduling loop sleeps only while nothing runs and the trainer has data."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.data import DataContext

from pose3d.data import idle


class _Op:
    def __init__(self, active: int) -> None:
        self.active = active

    def num_active_tasks(self) -> int:
        return self.active


def _executor(active: list[int], queued: int):
    topology = {_Op(a): None for a in active}
    return SimpleNamespace(
        _topology=topology, _output_node=(None, SimpleNamespace(output_queue=[0] * queued))
    )


@pytest.mark.parametrize(
    ("active", "queued", "expected"),
    [([0, 0], 3, True), ([0, 1], 3, False), ([0, 0], 0, False)],
    ids=["backpressured", "a-task-runs", "consumer-waits"],
)
def test_idle_means_nothing_runs_and_output_waits(active, queued, expected):
    assert idle.executor_is_idle(_executor(active, queued)) is expected


def test_an_executor_of_another_layout_is_never_idle():
    assert not idle.executor_is_idle(SimpleNamespace())
    assert not idle.executor_is_idle(SimpleNamespace(_topology=None, _output_node=(None, None)))


def test_backoff_doubles_to_its_cap_and_resets_when_work_appears(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(idle.time, "sleep", slept.append)
    backoff = idle.IdleBackoff()
    for _ in range(8):
        backoff.on_execution_step(_executor([0], 1))
    assert slept == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016, 0.02, 0.02, 0.02])
    backoff.on_execution_step(_executor([1], 1))  # a task runs: no sleep, and start over
    assert len(slept) == 8 and backoff.sleep_s == 0.0
    backoff.on_execution_step(_executor([0], 1))
    assert slept[-1] == idle.MIN_SLEEP_S and backoff.idle_steps == 9


def test_install_and_remove_are_idempotent():
    context = DataContext()
    idle.install_idle_backoff(context)
    idle.install_idle_backoff(context)
    assert context.custom_execution_callback_classes.count(idle.IdleBackoff) == 1
    assert idle.IdleBackoff in context.execution_callback_classes
    idle.remove_idle_backoff(context)
    assert idle.IdleBackoff not in context.custom_execution_callback_classes
