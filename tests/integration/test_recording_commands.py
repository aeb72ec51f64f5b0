"""`edge record` and `edge info`: the 60-frame round trip and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.sources.recording import RecordingSource, truth_path
from edge.sources.synthetic import SyntheticSource


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def expect_error(capsys: pytest.CaptureFixture[str], *argv: str, match: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: error: "), err
    assert match in lines[0]


def test_sixty_frame_vga_session_round_trips_pixel_exact(tmp_path, capsys):
    out = tmp_path / "session.db3"
    code, stdout, _ = run(
        capsys,
        "record",
        "--source",
        "synthetic",
        "--frames",
        "60",
        "--out",
        str(out),
        "--seed",
        "4",
    )
    assert code == 0 and "recorded 60 frames" in stdout

    code, stdout, _ = run(capsys, "info", str(out), "--json")
    info = json.loads(stdout)
    assert code == 0
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (60, 640, 480, 30.0)
    assert {s["stream"] for s in info["streams"]} == {"color", "depth"}
    # First to last frame (59 intervals of 1/30 s), as librealsense's playback says.
    assert info["duration_s"] == pytest.approx(59 / 30.0, abs=1e-5)
    assert info["camera"]["name"] == "synthetic" and info["camera"]["serial"] == "synthetic"
    assert info["raw_depth"] is False
    assert info["depth_scale_m"] == pytest.approx(0.001, rel=1e-6)
    assert info["has_truth"] is True

    code, stdout, _ = run(capsys, "info", str(out))
    assert code == 0 and "frames:      60" in stdout and "640x480" in stdout

    with SyntheticSource(60, seed=4) as want, RecordingSource(out) as got:
        pairs = list(zip(want, got, strict=True))
    assert len(pairs) == 60
    for w, g in pairs:
        assert g.number == w.number
        np.testing.assert_array_equal(g.color, w.color)
        np.testing.assert_array_equal(g.depth, w.depth)
        assert g.intrinsics == w.intrinsics
        assert g.device_timestamp_ms == pytest.approx(w.device_timestamp_ms, abs=1e-3)
        np.testing.assert_allclose(g.truth.patient_to_camera, w.truth.patient_to_camera)


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "small.toml"
    cfg.write_text('[realsense]\nwidth = 64\nheight = 48\npreset = ""\n')
    return cfg


def test_rerecording_a_recording_keeps_it_exact(tmp_path, capsys, small_config):
    first, second = tmp_path / "a.db3", tmp_path / "b.db3"
    args = ["--frames", "5", "--config", str(small_config), "--quiet"]
    assert run(capsys, "record", "--source", "synthetic", "--out", str(first), *args)[0] == 0
    assert run(capsys, "record", "--source", str(first), "--out", str(second), *args)[0] == 0
    with RecordingSource(first) as a, RecordingSource(second) as b:
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.color, y.color)
            np.testing.assert_array_equal(x.depth, y.depth)
            assert x.device_timestamp_ms == pytest.approx(y.device_timestamp_ms, abs=1e-3)
            assert y.truth is not None
    assert truth_path(second).is_file()


def test_frames_must_be_positive(tmp_path, capsys):
    for n in ("0", "-3"):
        out = tmp_path / "x.db3"
        expect_error(
            capsys, "record", "--source", "synthetic", "--frames", n, "--out", str(out),
            match="frame count must be at least 1",
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_missing_camera(tmp_path, capsys, small_config):
    import pyrealsense2 as rs

    if len(rs.context().query_devices()) > 0:
        pytest.skip("a camera is connected")
    expect_error(
        capsys, "record", "--source", "realsense", "--frames", "3",
        "--out", str(tmp_path / "x.db3"), "--config", str(small_config),
        match="no RealSense camera found",
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == [small_config]


def test_unwritable_output(tmp_path, capsys):
    expect_error(
        capsys, "record", "--source", "synthetic", "--frames", "3",
        "--out", str(tmp_path / "no" / "such" / "x.db3"), match="does not exist",
    )  # fmt: skip
    expect_error(
        capsys, "record", "--source", "synthetic", "--frames", "3",
        "--out", str(tmp_path / "x.bag"), match="must end in .db3",
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_unknown_source(tmp_path, capsys):
    expect_error(
        capsys, "record", "--source", "webcam", "--frames", "3", "--out", str(tmp_path / "x.db3"),
        match="unknown source 'webcam'",
    )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_recording_from_a_bad_file_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.db3"
    bad.write_text("not a bag")
    expect_error(
        capsys, "record", "--source", str(bad), "--frames", "3", "--out", str(tmp_path / "o.db3"),
        match="not a recording",
    )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["bad.db3"]


def test_info_on_bad_files(tmp_path, capsys):
    notrec = tmp_path / "notes.db3"
    notrec.write_text("hello\n" * 50)
    expect_error(capsys, "info", str(notrec), match="not a recording")
    empty = tmp_path / "empty.db3"
    empty.touch()
    expect_error(capsys, "info", str(empty), match="empty")
    expect_error(capsys, "info", str(tmp_path / "missing.db3"), match="does not exist")
    expect_error(capsys, "info", str(tmp_path / "clip.mp4"), match="expected a .db3 or .bag")
    junk_bag = tmp_path / "junk.bag"
    junk_bag.write_text("not a ros1 bag")
    expect_error(capsys, "info", str(junk_bag), match="cannot play")


def test_info_on_truncated_recording(tmp_path, capsys, small_config):
    good = tmp_path / "good.db3"
    assert (
        run(capsys, "record", "--source", "synthetic", "--frames", "8", "--out", str(good),
            "--config", str(small_config), "--quiet")[0]
        == 0
    )  # fmt: skip
    cut = tmp_path / "cut.db3"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    expect_error(capsys, "info", str(cut), match="truncated or corrupt")


def test_info_into_a_pipe_closed_early_is_quiet(tmp_path, capsys, small_config):
    """`edge info X.db3 | head -1`: the reader leaving is no traceback."""
    import subprocess
    import sys

    rec = tmp_path / "r.db3"
    args = ["--frames", "3", "--config", str(small_config), "--quiet"]
    assert run(capsys, "record", "--source", "synthetic", "--out", str(rec), *args)[0] == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "info", str(rec), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `head` exiting before edge writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "Error" not in err
