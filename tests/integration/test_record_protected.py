"""`edge record` and `edge phantom` write owner-only files; `edge record --seal-to` seals."""

from __future__ import annotations

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


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def small(tmp_path: Path) -> Path:
    cfg = tmp_path / "small.toml"
    cfg.write_text("[realsense]\nwidth = 64\nheight = 48\n")
    return cfg


def record(capsys, small: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run(
        capsys,
        "record",
        "--source",
        "synthetic",
        "--frames",
        "4",
        "--out",
        str(out),
        "--config",
        str(small),
        "--quiet",
        *extra,
    )


def test_record_writes_0600_files(tmp_path, capsys, small):
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = record(capsys, small, folder / "x.db3")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["x.db3", "x.truth.jsonl"]
    assert all(mode(p) == 0o600 for p in folder.iterdir())


def test_phantom_writes_0600_files(tmp_path, capsys):
    code, _, err = run(capsys, "phantom", "--out", str(tmp_path / "p.db3"), "--frames", "2")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.db3", "p.truth.jsonl"]
    assert all(mode(p) == 0o600 for p in tmp_path.iterdir())


def test_seal_to_leaves_only_sealed_files_that_open_to_the_recording(tmp_path, capsys, small):
    assert main(["recordings", "keygen", "--out", str(tmp_path / "hospital")]) == 0
    folder = tmp_path / "out"
    folder.mkdir()
    code, out, err = record(
        capsys, small, folder / "x.db3", "--seal-to", str(tmp_path / "hospital.pub")
    )
    assert code == 0, err
    assert f"to {folder / 'x.db3.sealed'}" in out and "plaintext deleted" in out
    assert sorted(p.name for p in folder.iterdir()) == ["x.db3.sealed", "x.truth.jsonl.sealed"]
    assert all(mode(p) == 0o600 for p in folder.iterdir())
    key = str(tmp_path / "hospital.key")
    for sealed in folder.iterdir():
        assert run(capsys, "recordings", "open", str(sealed), "--key", key)[0] == 0
    code, out, err = run(capsys, "info", str(folder / "x.db3"), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["frames"] == 4 and info["has_truth"] is True


def test_seal_to_a_bad_key_is_refused_before_recording(tmp_path, capsys, small):
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = record(capsys, small, folder / "x.db3", "--seal-to", str(bad))
    assert code == 2
    assert err.count("\n") == 1 and "bad.pub" in err and "Traceback" not in err
    assert list(folder.iterdir()) == []


_RECORD_FOREVER = """
import sys
from edge.cli import main
sys.exit(main(["record", "--source", "synthetic", "--frames", "100000", "--out", sys.argv[1],
               "--config", sys.argv[2], "--quiet"]))
"""


def test_sigkill_leaves_no_file_others_can_read(tmp_path, small):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECORD_FOREVER, str(folder / "x.db3"), str(small)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        side = folder / f".x.partial-{proc.pid}.truth.jsonl"
        deadline = time.monotonic() + 120
        # A frame is in once its ground-truth line is (the header, then one per frame).
        while time.monotonic() < deadline and proc.poll() is None:
            if side.exists() and len(side.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        assert side.exists(), "no frame was recorded in time"
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = sorted(folder.iterdir())
    assert {p.name for p in left} >= {f".x.partial-{proc.pid}.db3", side.name}
    for p in left:
        assert mode(p) & 0o077 == 0, f"{p.name} is mode {mode(p):04o}"
