"""Loopback endpoints for tests that start the edge process's sockets.

A port the OS picks (bind to port 0) comes from its ephemeral range, where any
connect() of another process (the other pytest worker's, a subprocess's) may take it
between this probe and the edge process's bind. So the ports here come from outside
that range (below it where there is room), each pytest-xdist worker from a block of its
own, each checked free by a bind: only a listener started on that very port in between
could take it.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

BLOCK = 2000  # ports per worker
LOWEST = 10000  # below: well-known services
HIGHEST = 65535


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _worker_index() -> int:
    """0 for ``gw0`` (and a run without workers), 1 for ``gw1``..."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def _ports() -> itertools.cycle[int]:
    """This worker's block, below the ephemeral range or, where that leaves less room,
    above it (with more workers than blocks there, workers share blocks; every port is
    still probed)."""
    low, high = _ephemeral_range()
    below, above = (low - LOWEST) // BLOCK, (HIGHEST - high) // BLOCK
    if max(below, above) < 1:
        raise RuntimeError(
            f"the ephemeral port range {low}-{high} leaves no {BLOCK} ports outside it for"
            " the tests; narrow net.ipv4.ip_local_port_range"
        )
    base, blocks = (LOWEST, below) if below >= above else (high + 1, above)
    first = base + (_worker_index() % blocks) * BLOCK
    ports = list(range(first, first + BLOCK))
    start = random.randrange(BLOCK)  # another run on this machine starts elsewhere
    return itertools.cycle(ports[start:] + ports[:start])


_NEXT = _ports()


def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` with a port of this worker's block that is free now."""
    for _ in range(BLOCK):
        port = next(_NEXT)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return f"tcp://127.0.0.1:{port}"
    raise RuntimeError(f"no free loopback port in this worker's block of {BLOCK}")
