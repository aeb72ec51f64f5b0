"""`edge run` with ``[recordings]``: the session sealed to the hospital's key, end to end.

Through the command line only: keys from `edge recordings keygen` and `edge audit
keygen`, a configuration file, `edge run` on the synthetic source, then `edge
recordings open`, `edge info` and `edge run --source` on what it left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.cli import main

FRAMES = 12


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def audit_entries(path: Path) -> list[tuple[str, dict]]:
    return [(e["event"], e["data"]) for e in map(json.loads, path.read_text().splitlines())]


@pytest.fixture
def site(tmp_path: Path, monkeypatch, capsys) -> Path:
    """A working folder with the hospital's key pair, the device key and a config."""
    monkeypatch.chdir(tmp_path)
    assert main(["recordings", "keygen", "--out", "hospital"]) == 0
    assert main(["audit", "keygen", "--out", "keys"]) == 0
    write_config(tmp_path)
    capsys.readouterr()
    return tmp_path


def write_config(site: Path, **recordings: object) -> Path:
    keys = {"enabled": True, "folder": "rec", "encrypt_to": "hospital.pub", **recordings}
    lines = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path = site / "edge.toml"
    path.write_text(
        "[realsense]\nwidth = 64\nheight = 48\n"
        '[audit]\nenabled = true\npath = "audit.jsonl"\ndevice_key = "keys/device.key"\n'
        "[recordings]\n" + "\n".join(lines) + "\n"
    )
    return path


def run_edge(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_session(capsys, frames: int = FRAMES) -> dict:
    code, out, err = run_edge(
        capsys,
        "run",
        "--config",
        "edge.toml",
        "--source",
        "synthetic",
        "--frames",
        str(frames),
        "--no-publish",
        "--quiet",
        "--json",
    )
    assert code == 0, err
    return json.loads(out)


def test_the_session_is_sealed_and_opens_to_a_replayable_recording(site, capsys):
    summary = run_session(capsys)
    folder = site / "rec"
    assert mode(folder) == 0o700
    sealed = list(folder.glob("*.db3.sealed"))
    assert len(sealed) == 1 and mode(sealed[0]) == 0o600
    assert summary["recording"] == {
        "path": str(Path("rec") / sealed[0].name),
        "frames": FRAMES,
        "stopped": "the run stopped (end of source)",
    }
    # Nothing readable is left: only sealed files (the recording and its truth), all 0600.
    assert all(p.name.endswith(".sealed") and mode(p) == 0o600 for p in folder.iterdir())
    events = audit_entries(site / "audit.jsonl")
    names = [e for e, _ in events]
    i = names.index("recording.started")
    assert names[i : i + 3] == ["recording.started", "recording.stopped", "recording.sealed"]
    assert names.index("recording.sealed") < names.index("process.stop")
    entry = events[i + 2][1]
    assert entry["size"] == sealed[0].stat().st_size
    assert entry["sha256"] == hashlib.sha256(sealed[0].read_bytes()).hexdigest()

    code, out, err = run_edge(
        capsys, "recordings", "open", str(sealed[0]), "--key", "hospital.key", "--out", "s.db3"
    )
    assert code == 0, err
    code, out, err = run_edge(capsys, "info", "s.db3", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["frames"] == FRAMES and info["width"] == 64 and info["height"] == 48
    code, out, err = run_edge(
        capsys, "run", "--source", "s.db3", "--no-publish", "--quiet", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["frames"] == FRAMES


def test_start_prunes_old_recordings_and_the_run_records(site, capsys):
    folder = site / "rec"
    folder.mkdir(mode=0o700)
    old = folder / "session-20200101T000000Z.db3.sealed"
    old.write_bytes(b"an old recording")
    os.utime(old, (time.time() - 31 * 86400,) * 2)
    run_session(capsys, frames=3)
    assert not old.exists()
    assert len(list(folder.glob("*.db3.sealed"))) == 1
    removed = [d for e, d in audit_entries(site / "audit.jsonl") if e == "recording.removed"]
    assert removed == [
        {"path": str(Path("rec") / old.name), "reason": "older than recordings.retention_days = 30"}
    ]


def test_below_the_free_space_floor_nothing_is_recorded_and_the_run_goes_on(site, capsys):
    write_config(site, min_free_mb=100_000_000)  # ~95 TiB: more than this disk has
    summary = run_session(capsys, frames=3)
    assert summary["frames"] == 3
    assert summary["recording"]["path"] is None
    assert list((site / "rec").iterdir()) == []
    skipped = [d for e, d in audit_entries(site / "audit.jsonl") if e == "recording.skipped"]
    assert len(skipped) == 1
    assert "below recordings.min_free_mb = 100000000" in skipped[0]["reason"]


@pytest.mark.parametrize(
    ("recordings", "needle"),
    [
        ({"encrypt_to": ""}, "recordings.enabled = true needs recordings.encrypt_to"),
        ({"encrypt_to": "missing.pub"}, "recordings.encrypt_to: key file missing.pub does not"),
        ({"encrypt_to": "hospital.key"}, "recordings.encrypt_to: hospital.key is not"),
        ({"encrypt_to": "edge.toml"}, "recordings.encrypt_to: cannot read key file edge.toml"),
        ({"folder": "edge.toml/rec"}, "recordings.folder edge.toml/rec cannot be created"),
    ],
)
def test_config_check_and_run_refuse_recording_without_a_usable_key(
    site, capsys, recordings, needle
):
    write_config(site, **recordings)
    for argv in (
        ["config", "check", "edge.toml"],
        ["run", "--config", "edge.toml", "--source", "synthetic", "--frames", "1", "--no-publish"],
    ):
        code, _, err = run_edge(capsys, *argv)
        assert code == 2
        lines = err.strip().splitlines()
        assert lines[-1].startswith("edge: error: ") and needle in lines[-1], err
        assert "Traceback" not in err
    assert not (site / "rec").exists()


_RUN_FOREVER = """
import sys
from edge.cli import main
sys.exit(main(["run", "--config", "edge.toml", "--source", "synthetic", "--frames", "100000",
               "--no-publish", "--quiet"]))
"""


def start_recording_run(site: Path) -> subprocess.Popen:
    """`edge run` in a subprocess, returned once its recording holds a frame."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_FOREVER],
        cwd=site,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = site / "rec"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # A frame is in once its ground-truth line is (written after the frame).
        sides = list(folder.glob(f".session-*.partial-{proc.pid}.truth.jsonl"))
        if sides and len(sides[0].read_text().splitlines()) >= 2:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no frame recorded: {proc.communicate()[1][-2000:]}")


def test_sigterm_seals_the_session(site):
    proc = start_recording_run(site)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    folder = site / "rec"
    assert len(list(folder.glob("*.db3.sealed"))) == 1
    assert all(p.name.endswith(".sealed") and mode(p) == 0o600 for p in folder.iterdir())


def test_after_a_sigkill_the_next_start_deletes_what_was_left(site, capsys):
    proc = start_recording_run(site)
    proc.kill()
    proc.communicate(timeout=60)
    folder = site / "rec"
    left = sorted(folder.iterdir())
    assert left and all(mode(p) == 0o600 for p in left)  # nothing others can read
    run_session(capsys, frames=2)
    assert all(p.name.endswith(".sealed") for p in folder.iterdir())
    removed = [d for e, d in audit_entries(site / "audit.jsonl") if e == "recording.removed"]
    assert {d["path"] for d in removed} == {str(Path("rec") / p.name) for p in left}
    assert {d["reason"] for d in removed} == {"left by a run that was killed"}
