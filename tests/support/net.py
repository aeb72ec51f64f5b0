"""Loopback endpoints for tests that start the edge process's sockets.

A port the OS picks (bind to port 0) comes from its ephemeral range, where any
connect() of another process (the other pytest worker's, a subprocess's) may take it
between this probe and the edge process's bind. So the ports here come from below
that range, each pytest-xdist worker from a block of its own, each checked free by a
bind: only a listener started on that very port in between could take it.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

BLOCK = 2000  # ports per worker
LOWEST = 10000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _worker_index() -> int:
    """0 for ``gw0`` (and a run without workers), 1 for ``gw1``..."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def _ports() -> itertools.cycle[int]:
    blocks = max((_ephemeral_start() - LOWEST) // BLOCK, 1)
    first = LOWEST + (_worker_index() % blocks) * BLOCK
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
