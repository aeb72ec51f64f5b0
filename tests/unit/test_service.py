"""systemd notify protocol against a real datagram socket; clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.errors import StateError
from edge.service import HARD_EXIT_CODE, GracefulStop, Notifier


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sd") as folder:
        path = os.path.join(folder, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        yield path, sock
        sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(10)
    return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ready_status_stopping_reach_the_socket(notify_socket):
    path, sock = notify_socket
    n = Notifier(path)
    assert n.enabled
    assert n.ready("tracking, plan demo\nloaded")
    assert sock.recv(4096) == b"READY=1\nSTATUS=tracking, plan demo loaded"
    assert n.status("LOST: no face")
    assert sock.recv(4096) == b"STATUS=LOST: no face"
    assert n.extend_timeout(30)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=30000000"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_socket_address():
    name = f"edge-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        assert Notifier("@" + name).ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_is_rate_limited_to_half_the_period(notify_socket):
    path, sock = notify_socket
    clock = FakeClock()
    n = Notifier(path, watchdog_usec=2_000_000, clock=clock)
    assert n.watchdog_interval_s == 1.0
    sent = []
    for step in range(7):  # frames every 0.25 s for 1.5 s
        clock.now = 100.0 + 0.25 * step
        sent.append(n.watchdog())
    assert sent == [True, False, False, False, True, False, False]
    assert received(sock) == ["WATCHDOG=1", "WATCHDOG=1"]


def test_environment_rules():
    n = Notifier.from_environment({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x") and not n.stopping()
    other_pid = Notifier.from_environment(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert other_pid.watchdog_interval_s is None  # the watchdog is for another process
    mine = Notifier.from_environment(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval_s == 0.5
    assert (
        Notifier.from_environment(
            {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "soon"}
        ).watchdog_interval_s
        is None
    )


def test_a_missing_socket_is_counted_not_raised(tmp_path: Path):
    n = Notifier(str(tmp_path / "gone"))
    assert not n.ready()
    assert n.failures == 1 and n.sent == 0


def test_graceful_stop_restores_handlers_and_refuses_misuse():
    before = signal.getsignal(signal.SIGTERM)
    stop = GracefulStop(hard_exit_after_s=None)
    with stop:
        assert signal.getsignal(signal.SIGTERM) != before
        with pytest.raises(StateError):
            stop.__enter__()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(10)
        assert stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


def test_hard_exit_timer_is_cancelled_when_the_loop_stops_in_time():
    exits: list[int] = []
    with GracefulStop(hard_exit_after_s=5.0, exit_function=exits.append) as stop:
        stop.request("SIGTERM")
    stop._timer.join()  # type: ignore[union-attr]
    assert exits == []


LOOP = textwrap.dedent(
    """
    import os, sys, time
    from edge.files import write_atomic
    from edge.service import GracefulStop, Notifier

    out, ignore_stop = sys.argv[1], sys.argv[2] == "ignore"
    notifier = Notifier.from_environment()
    frames = 0
    with GracefulStop(hard_exit_after_s=1.0, on_stop=lambda why: notifier.stopping()) as stop:
        notifier.ready("up")
        while ignore_stop or not stop.requested:
            # One frame: work, then its output written whole.
            time.sleep(0.01)
            frames += 1
            write_atomic(out, f"frame {frames} complete\\n".encode() * 1000)
            notifier.watchdog()
            if frames == 1:
                print("ready", flush=True)
    print(f"stopped cleanly after {frames} frames", flush=True)
    """
)


def run_loop(tmp_path: Path, notify_path: str, mode: str) -> tuple[int, str]:
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="20000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP, str(tmp_path / "frame.txt"), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def test_sigterm_mid_loop_stops_cleanly_with_whole_output(tmp_path: Path, notify_socket):
    path, sock = notify_socket
    code, out = run_loop(tmp_path, path, "stop")
    assert code == 0
    assert out.startswith("stopped cleanly after ")
    frames = int(out.split()[3])
    # The frame in progress when SIGTERM arrived was finished and written whole.
    assert (tmp_path / "frame.txt").read_text() == f"frame {frames} complete\n" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["frame.txt"]  # no temp files left
    messages = received(sock)
    assert messages[0] == "READY=1\nSTATUS=up"
    assert "STOPPING=1" in messages


def test_a_loop_that_ignores_the_stop_is_ended_by_the_hard_exit(tmp_path: Path, notify_socket):
    path, _ = notify_socket
    code, out = run_loop(tmp_path, path, "ignore")
    assert code == HARD_EXIT_CODE
    assert "stopped cleanly" not in out
