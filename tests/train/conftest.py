"""Fixtures shared by the training tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """An in-process local Ray for one test module (its own temp dir), shut down after it."""
    import ray

    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    tmp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=8, include_dashboard=False, _temp_dir=str(tmp), configure_logging=False)
    yield
    ray.shutdown()
