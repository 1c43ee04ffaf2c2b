"""Small helpers for tests that start servers: free ports to bind them to, and waiting until
they answer."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_random = random.SystemRandom()


def free_ports(count: int) -> list[int]:
    """Ports free now, below the kernel's ephemeral range: a port the kernel may hand to any
    outgoing connection (or to a server's own bind to port 0) could be taken between this probe
    and the server's bind, as a dev server found once in CI."""
    low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    # Below the range when there is room, above it otherwise.
    floor, ceiling = (max(1024, low - 12_000), low) if low > 5_000 else (high + 1, 65_536)
    chosen: list[int] = []
    sockets = []
    try:
        while len(chosen) < count:
            port = _random.randrange(floor, ceiling)
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                probe.close()
                continue
            sockets.append(probe)
            chosen.append(port)
        return chosen
    finally:
        for probe in sockets:
            probe.close()


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")
