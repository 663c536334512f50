"""One local Ray instance for the whole integration tier (shut down after it, so the unit tier
can check that user errors start no Ray): starting Ray costs seconds each time."""

from __future__ import annotations

import os

import pytest
import ray

from rayft.training.cluster import API_SERVER_ENV, WORKER_START_TIMEOUT_ENV, start_local_ray


@pytest.fixture(scope="package", autouse=True)
def local_ray():
    os.environ.setdefault(WORKER_START_TIMEOUT_ENV, "300")
    start_local_ray(3, log_to_driver=False)
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield
    ray.shutdown()
    os.environ.pop(API_SERVER_ENV, None)  # later tests and the processes they start must not inherit it
