"""Recordings that look like a camera's: raw depth at the depth imager's intrinsics with a
15 mm extrinsic, aligned on playback as librealsense's ``rs.align`` does; message times and
camera info that plain librealsense replays and reports (issue 14).

The phantom's ``--raw-depth`` writes the raw recording; the same scenario without it is
the pre-aligned session it is compared with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.errors import EdgeError
from edge.sources.recording import RecordingSource

rs = pytest.importorskip("pyrealsense2")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def models() -> None:
    from edge.models import ensure_models
    from edge.models.manifest import repo_models_dir

    try:
        ensure_models(repo_models_dir() / "build")
    except EdgeError as exc:  # no models and no way to build them here
        pytest.skip(f"tracker models unavailable: {exc}")


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, models) -> dict[str, Path]:
    """The same phantom session recorded raw and pre-aligned, and its plan."""
    root = Path(tmp_path_factory.mktemp("raw"))
    common = ["phantom", "--scenario", "nod-shake", "--frames", "30", "--seed", "3"]
    assert main([*common, "--raw-depth", "--out", str(root / "raw.db3")]) == 0
    assert (
        main([*common, "--out", str(root / "aligned.db3"), "--plan-out", str(root / "plan")]) == 0
    )
    return {"raw": root / "raw.db3", "aligned": root / "aligned.db3", "plan": root / "plan"}


def _played_by_librealsense(path: Path) -> dict[float, np.ndarray]:
    """Device timestamp -> depth aligned by librealsense's own ``rs.align`` on playback."""
    pipe = rs.pipeline()
    cfg = rs.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    profile = pipe.start(cfg)
    profile.get_device().as_playback().set_real_time(False)
    align = rs.align(rs.stream.color)
    out: dict[float, np.ndarray] = {}
    try:
        while True:
            ok, frames = pipe.try_wait_for_frames(2000)
            if not ok:
                break
            aligned = align.process(frames)
            depth = np.asanyarray(aligned.get_depth_frame().get_data()).copy()
            out[round(aligned.get_color_frame().get_timestamp(), 3)] = depth
    finally:
        pipe.stop()
    return out


def test_raw_depth_aligns_as_librealsense_does(sessions, capsys):
    code, out, _ = run(capsys, "info", str(sessions["raw"]), "--json")
    info = json.loads(out)
    assert code == 0 and info["raw_depth"] is True
    theirs = _played_by_librealsense(sessions["raw"])
    with RecordingSource(sessions["raw"]) as src:
        ours = {round(f.device_timestamp_ms, 3): (f.depth, f.depth_scale_m) for f in src}
    assert len(theirs) >= 25 and set(theirs) <= set(ours)
    for ts, want in theirs.items():
        got, scale_m = ours[ts]
        filled = want > 0
        both = filled & (got > 0)
        # librealsense fills ~99 % of the image here; we fill nearly all of the same pixels.
        assert both.sum() / filled.sum() >= 0.95
        diff_mm = np.abs(got[both].astype(float) - want[both].astype(float)) * scale_m * 1000
        assert np.median(diff_mm) <= 1.0
        # Most pixels are the steeply seen table, where rs.align's keeping the nearest of
        # its overlapping footprints reads up to ~1 mm near (ours is unbiased on an exact
        # plane: tests/unit/sources/test_librealsense.py); on the head they agree closer.
        head = both & (want.astype(float) * scale_m < 0.75)
        head_mm = np.abs(got[head].astype(float) - want[head].astype(float)) * scale_m * 1000
        assert np.median(head_mm) <= 0.5


def test_raw_recording_registers_like_the_pre_aligned_session(sessions, capsys):
    summaries = {}
    for kind in ("raw", "aligned"):
        code, out, _ = run(
            capsys,
            "run",
            "--source",
            str(sessions[kind]),
            "--plan",
            str(sessions["plan"]),
            "--allow-unsigned-plan",
            "--no-publish",
            "--json",
            "-q",
        )
        assert code == 0
        summaries[kind] = json.loads(out)
    raw, aligned = summaries["raw"], summaries["aligned"]
    assert raw["frames"] == aligned["frames"] == 30
    assert raw["state_fractions"].get("TRACKING", 0) >= 0.9
    assert aligned["state_fractions"].get("TRACKING", 0) >= 0.9
    assert abs(raw["tre_mm"]["mean"] - aligned["tre_mm"]["mean"]) <= 0.2


def test_plain_librealsense_replays_at_the_recorded_rate_and_names_the_device(tmp_path, capsys):
    out = tmp_path / "synthetic.db3"
    args = ["record", "--source", "synthetic", "--frames", "30", "--out", str(out), "-q"]
    assert run(capsys, *args)[0] == 0
    device = rs.context().load_device(str(out))
    playback = device.as_playback()
    # 30 frames at 30 fps: 29 intervals of 1/30 s, first to last frame, whatever the speed
    # the file was written at (message times are the frames' device times).
    assert playback.get_duration().total_seconds() == pytest.approx(29 / 30, abs=1e-3)
    assert device.get_info(rs.camera_info.name) == "synthetic"
    assert device.get_info(rs.camera_info.serial_number) == "synthetic"
    assert device.get_info(rs.camera_info.firmware_version).startswith("edge ")
    assert device.get_info(rs.camera_info.product_line) == "synthetic"
    _, stdout, _ = run(capsys, "info", str(out), "--json")
    assert json.loads(stdout)["duration_s"] == pytest.approx(29 / 30, abs=1e-3)
    # Re-recording keeps the device it came from.
    again = tmp_path / "again.db3"
    assert run(capsys, "record", "--source", str(out), "--frames", "5", "--out", str(again))[0] == 0
    with RecordingSource(again) as src:
        assert src.camera_info.serial == "synthetic"


def test_live_recordings_get_the_same_finishing_step(tmp_path):
    """`edge record --source realsense` keeps librealsense's own file; its message times,
    written at arrival, are set to the frames' device times as for every other recording.
    The camera here is a fake whose "librealsense recorder" writes a file stamped at a
    third of real time."""
    import shutil
    import sqlite3

    from edge.config import EdgeConfig
    from edge.sources.record import record_live
    from edge.sources.replay import ScriptedCamera
    from edge.sources.synthetic import SyntheticSource

    with SyntheticSource(12, seed=1, width=64, height=48) as src:
        frames = list(src)
    camera = ScriptedCamera(frames, away=[])
    written_by_camera = tmp_path / "camera.db3"

    class RecordingCamera:
        def find_serials(self) -> list[str]:
            return camera.find_serials()

        def open(self, serial, config, preset_json, record_to):  # type: ignore[no-untyped-def]
            from edge.sources.recording import Recorder

            with Recorder(written_by_camera) as rec:
                for f in frames:
                    rec.write(f)
            con = sqlite3.connect(written_by_camera)
            with con:  # what a recorder stamping arrival times might leave
                con.execute("UPDATE messages SET timestamp = timestamp / 3")
            con.close()
            shutil.copy(written_by_camera, record_to)
            return camera.open(serial, config, preset_json, record_to)

    out = tmp_path / "live.db3"
    config = EdgeConfig()
    assert record_live("", config, out, 12, layer=RecordingCamera()) == (12, out)
    before = rs.context().load_device(str(written_by_camera)).as_playback().get_duration()
    after = rs.context().load_device(str(out)).as_playback().get_duration()
    assert before.total_seconds() == pytest.approx(11 / 30 / 3, abs=2e-3)
    assert after.total_seconds() == pytest.approx(11 / 30, abs=1e-3)
