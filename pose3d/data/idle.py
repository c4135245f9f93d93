"""Keeping Ray Data's streaming executor from spinning while the trainer is the bottleneck.

The executor's scheduling loop blocks in ``ray.wait`` only while some task is running. Once the
pipeline is backpressured (its output queue holds blocks the trainer has not taken, nothing
running), each loop step returns at once and the next begins: on a small machine the split
coordinator then burns most of a core that the trainer needs (docs/design.md, "Idle executor").
``IdleBackoff``, an execution callback, sleeps between steps in exactly that state, a little
longer each idle step up to ``MAX_SLEEP_S``, and not at all once a task runs or the consumer is
waiting for data.

May import: ray.
"""

from __future__ import annotations

import time
from typing import Any

from ray.data import DataContext
from ray.data._internal.execution.execution_callback import ExecutionCallback

#: First and longest sleep between idle scheduling steps (seconds). The executor notices a finished
#: task or a drained queue within 20 ms, about 5 % of a demo-sized step on 2 cores (435 ms) and less
#: than the time a batch waits in the backpressured queue anyway.
MIN_SLEEP_S = 0.001
MAX_SLEEP_S = 0.02


def executor_is_idle(executor: Any) -> bool:
    """True when no operator has a running task and the output queue holds data for the consumer.
    False (never sleep) when the executor's layout is not the one this was written for."""
    try:
        topology = executor._topology
        _, output_state = executor._output_node
        if topology is None or len(output_state.output_queue) == 0:
            return False
        return all(op.num_active_tasks() == 0 for op in topology)
    except (AttributeError, TypeError):
        return False


class IdleBackoff(ExecutionCallback):
    """Sleeps after each idle scheduling step (``executor_is_idle``): 1 ms, doubling to 20 ms."""

    def __init__(self) -> None:
        self.sleep_s = 0.0
        self.idle_steps = 0
        self.slept_s = 0.0

    def on_execution_step(self, executor: Any) -> None:
        if not executor_is_idle(executor):
            self.sleep_s = 0.0
            return
        self.sleep_s = min(MAX_SLEEP_S, max(MIN_SLEEP_S, 2 * self.sleep_s))
        self.idle_steps += 1
        self.slept_s += self.sleep_s
        time.sleep(self.sleep_s)


def install_idle_backoff(context: DataContext | None = None) -> None:
    """Add ``IdleBackoff`` to the Data context (this process's by default) that datasets created
    afterwards carry to the processes running their executors. Idempotent."""
    context = context or DataContext.get_current()
    if IdleBackoff not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(IdleBackoff)


def remove_idle_backoff(context: DataContext | None = None) -> None:
    """Undo ``install_idle_backoff`` (benchmarks compare both)."""
    context = context or DataContext.get_current()
    while IdleBackoff in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.remove(IdleBackoff)
