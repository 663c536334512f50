"""Connect to a Ray cluster, or start an embedded local one."""

from __future__ import annotations

import math
import os

import ray

WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def ensure_ray(address: str | None, cpus_needed: float, dashboard: bool = False) -> None:
    """Join `address` (or RAY_ADDRESS); otherwise start a new local instance on 127.0.0.1.

    `address="local"` is explicit so a stale cluster recorded on the machine is never joined by
    accident. An already initialised Ray (a test session, a notebook) is reused as it is.
    The embedded instance runs without the dashboard unless asked: on a small machine its
    processes take CPU time from the training workers (measured in benchmarks/RESULTS.md).
    """
    if ray.is_initialized():
        return
    # Worker start-up on a small machine can pass Ray Train's 60 s default.
    os.environ.setdefault(WORKER_START_TIMEOUT_ENV, "300")
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        ray.init(address=target, log_to_driver=True)
        return
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, math.ceil(cpus_needed)),
        _node_ip_address="127.0.0.1",
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        log_to_driver=True,
    )
