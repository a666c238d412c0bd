"""Loopback ports for the benchmarks, the simulator and the tests."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback TCP port nothing listens on, below the kernel's ephemeral range.

    A port the kernel picked (``bind`` to port 0) comes from the range it
    also gives outgoing connections: between this call and the server's own
    ``bind``, a connection made meanwhile (a NATS node dialling its peers, a
    gateway retrying a broker that is not there) can take it, and the server
    fails with "address already in use".
    """
    low, _ = _ephemeral_ports()
    rng = random.Random()  # noqa: S311 - a port number, not a secret
    start, stop = (10000, low) if low > 11000 else (low, 65536)
    for _ in range(200):
        port = rng.randrange(start, stop)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free there: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
