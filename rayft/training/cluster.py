"""Connect to a Ray cluster, or start an embedded local one."""

from __future__ import annotations

import math
import os
import socket

import ray
from ray.train import ScalingConfig

from rayft.config import ScalingSection, UserInputError
from rayft.training.loopback import free_port

WORKER_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
EMBEDDED_TRAIN_SETTINGS = {
    # The controller notices a finished worker group at its next poll: 2 s by default, per run.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # A watcher actor (one more process) for cloud nodes being preempted: none on this machine.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
"""Ray Train settings for an embedded instance: together ~4 s less per Train run on 2 cores."""


class ClusterConnectError(UserInputError):
    """The configured cluster address does not answer."""


def ensure_ray(address: str | None, cpus_needed: float, dashboard: bool = False) -> None:
    """Join `address` (or RAY_ADDRESS); otherwise start a new local instance (on 127.0.0.1 when
    `keep_embedded_ray_on_loopback` ran before Ray was imported, as the CLI and `rayft.train` do).

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
        _check_reachable(target)
        _use_token_auth_when_available()
        try:
            ray.init(address=target, log_to_driver=True)
        except ConnectionError as err:
            raise _cannot_connect(target, str(err).splitlines()[0]) from None
        return
    start_local_ray(max(os.cpu_count() or 1, math.ceil(cpus_needed)), dashboard=dashboard)


def start_local_ray(num_cpus: float, dashboard: bool = False, log_to_driver: bool = True) -> None:
    """A new Ray instance on this machine, with its state API address pinned.

    Ray's own processes (Train's placement-group cleaner among them) find the state API through
    the cluster recorded in /tmp/ray/ray_current_cluster, which an earlier `ray start` may have
    left pointing at a dead cluster: each lookup then waits 40 s for that GCS, and every Train run
    spent ~12 s at shutdown waiting for its cleaner. RAY_API_SERVER_ADDRESS, inherited by every
    Ray process started here, names this instance's dashboard port instead (refused at once when
    the dashboard is off, which the cleaner tolerates). EMBEDDED_TRAIN_SETTINGS go the same way.
    """
    port = free_port()
    os.environ[API_SERVER_ENV] = f"http://127.0.0.1:{port}"
    for name, value in EMBEDDED_TRAIN_SETTINGS.items():  # a user's own setting stands
        os.environ.setdefault(name, value)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=log_to_driver,
    )



def _use_token_auth_when_available() -> None:
    """Recent Ray clusters require a token, and a client sends it only in token mode.

    When the user chose no mode (RAY_AUTH_MODE) and a token is at hand (RAY_AUTH_TOKEN, or
    ~/.ray/auth_token where `ray start` puts it), switch this process to token mode through
    Ray's own helper, which also refreshes Ray's cached config. The token is never read here.
    """
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _check_reachable(target: str) -> None:
    """Fail in seconds on a host:port where nothing listens (Ray itself waits for minutes)."""
    host, sep, port = target.rpartition(":")
    if not sep or "://" in target or not port.isdigit():
        return  # "auto", ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise _cannot_connect(target, str(err)) from None


def _cannot_connect(target: str, reason: str) -> ClusterConnectError:
    return ClusterConnectError(
        f"address: cannot connect to the Ray cluster at {target!r} ({reason}); "
        "check --address / RAY_ADDRESS and that the cluster is up (`ray status`)"
    )


def worker_scaling(scaling: ScalingSection) -> ScalingConfig:
    """Ray Train's ScalingConfig for the configured workers (training and evaluation alike)."""
    return ScalingConfig(
        num_workers=scaling.num_workers,
        use_gpu=scaling.use_gpu,
        resources_per_worker={"CPU": scaling.cpus_per_worker, **({"GPU": 1} if scaling.use_gpu else {})},
    )
