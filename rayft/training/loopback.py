"""Keep an embedded Ray on 127.0.0.1. Import-light on purpose: it must run before Ray is imported.

Ray replaces 127.0.0.1 given as the node address with the machine's outward address, so its
GCS, raylet and workers would listen beyond this machine. Ray's single-machine mode (the switch
it uses on macOS and Windows) keeps every address on loopback; it is read when Ray is imported.
"""

from __future__ import annotations

import os
import socket

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_embedded_ray_on_loopback() -> None:
    """Call before importing Ray when no cluster address is configured; a user's choice stands."""
    os.environ.setdefault(SINGLE_MACHINE_ENV, "0")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
