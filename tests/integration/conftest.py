"""One local Ray instance for the whole integration tier (shut down after it, so the unit tier
can check that user errors start no Ray): starting Ray costs seconds each time."""

from __future__ import annotations

import os

import pytest
import ray


@pytest.fixture(scope="package", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield
    ray.shutdown()
