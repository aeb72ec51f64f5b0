"""Loopback endpoints for tests that start the edge process's sockets."""

from __future__ import annotations

import socket


def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` with a port free a moment ago (the OS picked it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{int(s.getsockname()[1])}"
