"""Connecting to Ray: a cluster when one is named (``--address`` or RAY_ADDRESS, as inside a Ray
job), else an in-process local instance sized so Ray Data never starves (docs/design.md, Ray 2.60 facts,
Data)."""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("pose3d")
T = TypeVar("T")

#: Logical CPUs of the embedded local Ray: more than a small machine's cores, so the training
#: workers and the Ray Data actors can all be scheduled (a starved Data executor hangs).
MIN_LOCAL_CPUS = 8
#: Where Ray's State API clients (Train's placement-group cleaner among them) find the dashboard.
API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"
_own_api_server: str | None = None  # the value this process set, replaced on the next local start


def add_ray_arguments(parser: argparse.ArgumentParser, address: bool = True) -> None:
    """The options every Ray-using command shares: ``--address`` (optional) and ``--num-cpus``."""
    if address:
        parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument(
        "--num-cpus", type=int, help=f"logical CPUs of the local Ray (default: max({MIN_LOCAL_CPUS}, cores))"
    )


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray with ``num_cpus`` logical
    CPUs (default ``max(MIN_LOCAL_CPUS, cores)``); nothing if Ray is already up in this process."""
    import ray

    if ray.is_initialized():
        return
    quiet_data_progress()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    cpus = num_cpus or max(MIN_LOCAL_CPUS, os.cpu_count() or 1)
    log.info("starting a local Ray with %d logical CPUs", cpus)
    # The dashboard serves the State API, which Train's placement-group cleaner polls. Without an
    # address the cleaner looks for "the" local Ray and fails when another instance runs on the
    # machine (a test suite beside a demo), so name ours: the raylet, and every worker it starts,
    # inherit the variable set here.
    global _own_api_server
    kwargs = {}
    if os.environ.get(API_SERVER_VARIABLE) in (None, _own_api_server):
        port = free_port()
        _own_api_server = os.environ[API_SERVER_VARIABLE] = f"http://127.0.0.1:{port}"
        kwargs = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
    ray.init(num_cpus=cpus, log_to_driver=True, configure_logging=False, **kwargs)
    start_reaper()


def start_reaper() -> None:
    """Start ``pose3d.infra.reaper`` for this process (in its own session): if this process dies
    without stopping the local Ray it started, the reaper stops what is left of it."""
    subprocess.Popen(
        [sys.executable, "-m", "pose3d.infra.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class Interrupted(Exception):
    """The process was asked to stop (SIGINT or SIGTERM) while Ray work ran; ``signal`` names it."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal = signal_name


def run_interruptibly(work: Callable[[], T]) -> T:
    """``work()`` on a helper thread, with SIGINT and SIGTERM handled here in the main thread: either
    stops the work by shutting Ray down in this process (a local Ray's processes stop; on a cluster
    the run's actors, owned by this driver, are cleaned up by Ray) and raises ``Interrupted``.

    Why a thread: Ray Train installs its own SIGINT handler when it runs on the main thread, and
    that handler ends the process with status 0 and no word; SIGTERM would end it with no clean-up.
    """
    import ray

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            box["error"] = err

    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        raise _Stop

    thread = threading.Thread(target=target, name="pose3d-work", daemon=True)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
    except _Stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        ray.shutdown()
        thread.join(10)
        raise Interrupted(signal.Signals(received[0]).name) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if "error" in box:
        raise box["error"]
    return box["result"]


class _Stop(BaseException):
    """Raised by the signal handler to leave the wait in ``run_interruptibly``."""


def quiet_data_progress() -> None:
    """Turn Ray Data's progress bars off unless RAY_DATA_DISABLE_PROGRESS_BARS=0 asks for them: they
    garble logs (pose3d prints its own progress). Ray reads the variable when ``ray.data`` is first
    imported, which may already have happened here, so this process's context is set too; Ray
    Train hands it to the workers' pipelines."""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] != "0":
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False


#: Ports handed out by ``free_ports``: below Linux's ephemeral range (32768-60999), from which
#: the OS picks the ports of every outgoing connection and ``bind(0)`` (Ray's own workers and gRPC
#: servers among them), and above Ray's default worker ports (10002-19999).
PICKED_PORTS = range(20000, 32000)


def free_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct TCP ports free on this machine now, for a server to bind a moment later.

    Picked at random below the ephemeral range: a port picked by ``bind(0)`` and released can be
    handed by the OS to another process's connection before our server binds it; one outside
    that range can only be taken by another server picking the same way. All sockets are held
    until all ports are picked."""
    rng = rng or random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        for _ in range(50 * count):
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("", rng.choice(PICKED_PORTS)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < count:
            raise OSError(f"found only {len(socks)} of {count} free ports in {PICKED_PORTS}")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """A TCP port free on this machine now (see ``free_ports``)."""
    return free_ports(1)[0]
