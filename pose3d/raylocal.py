"""Connecting to Ray: a cluster when one is named (``--address`` or RAY_ADDRESS, as inside a Ray
job), else an in-process local instance sized so Ray Data never starves (RAY_NOTES)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("pose3d")

#: Logical CPUs of the embedded local Ray: more than a small machine's cores, so the training
#: workers and the Ray Data actors can all be scheduled (a starved Data executor hangs).
MIN_LOCAL_CPUS = 8


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    cpus = num_cpus or max(MIN_LOCAL_CPUS, os.cpu_count() or 1)
    log.info("starting a local Ray with %d logical CPUs", cpus)
    # The dashboard process serves the State API, which Train's placement-group cleaner polls.
    ray.init(num_cpus=cpus, log_to_driver=True, configure_logging=False)
