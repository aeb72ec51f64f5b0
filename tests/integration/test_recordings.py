"""Recorder -> .db3 -> playback: exactness, seek, pacing, truth sidecar, bad files."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import SourceError, StateError
from edge.frames import (
    DistortionModel,
    Frame,
    GroundTruth,
    Intrinsics,
    PixelFormat,
    SourceState,
    TimingMode,
)
from edge.sources.recording import (
    Recorder,
    RecordingSource,
    index_db3,
    load_truth,
    nearest_depth,
    probe_recording,
    temp_path_for,
    truth_path,
)

W, H, N = 64, 48, 12
DEPTH_SCALE_M = 0.0001
INTR = Intrinsics(
    W, H, 55.5, 56.25, 31.25, 23.75, DistortionModel.BROWN_CONRADY, (0.1, -0.02, 0.001, 0.002, 0.0)
)


def make_frames(n: int = N, *, seed: int = 1, truth: bool = True) -> list[Frame]:
    """Random images (incompressible, so any codec loss would show) and jittered timestamps."""
    rng = np.random.default_rng(seed)
    frames = []
    ts = 5000.0
    for i in range(n):
        ts += 33.0 + float(rng.integers(0, 4))
        pose = np.eye(4)
        pose[:3, 3] = [0.01 * i, -0.02, 0.5]
        frames.append(
            Frame(
                number=i,
                color=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                color_format=PixelFormat.RGB8,
                depth=rng.integers(0, 65536, (H, W), dtype=np.uint16),
                depth_scale_m=DEPTH_SCALE_M,
                intrinsics=INTR,
                device_timestamp_ms=ts,
                truth=GroundTruth(pose, face_visible=i % 2 == 0, scenario="test")
                if truth
                else None,
            )
        )
    return frames


def write(path: Path, frames: list[Frame], fps: float = 30.0) -> Path:
    with Recorder(path, fps=fps) as rec:
        for f in frames:
            rec.write(f)
    return path


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return make_frames()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, frames: list[Frame]) -> Path:
    return write(tmp_path_factory.mktemp("rec") / "session.db3", frames)


def read_all(path: Path, **kwargs: object) -> list[Frame]:
    with RecordingSource(path, **kwargs) as src:  # type: ignore[arg-type]
        return list(src)


# --------------------------------------------------------------------------- round trip


def test_playback_is_pixel_exact_with_intrinsics_scale_and_timestamps(recording, frames):
    out = read_all(recording)
    assert [f.number for f in out] == list(range(N))
    for want, got in zip(frames, out, strict=True):
        np.testing.assert_array_equal(got.color, want.color)
        np.testing.assert_array_equal(got.depth, want.depth)
        assert got.color_format is PixelFormat.RGB8
        assert got.intrinsics.model is DistortionModel.BROWN_CONRADY
        assert got.intrinsics.width == W and got.intrinsics.height == H
        np.testing.assert_allclose(got.intrinsics.matrix, INTR.matrix, rtol=1e-6)
        np.testing.assert_allclose(got.intrinsics.coeffs, INTR.coeffs, rtol=1e-6)
        assert got.depth_scale_m == pytest.approx(DEPTH_SCALE_M, rel=1e-6)
        assert got.device_timestamp_ms == pytest.approx(want.device_timestamp_ms, abs=1e-3)
        np.testing.assert_allclose(got.depth_to_color.matrix, np.eye(4))


def test_playback_by_select_and_by_blob_reads_give_the_same_frames(tmp_path, frames, monkeypatch):
    """Python 3.10 has no ``Connection.blobopen``: the ``SELECT`` path gives the same pixels.
    Uncompressed images are read-only views of the message's bytes (issue 15: no copy)."""
    import edge.sources.recording.db3 as db3

    with Recorder(tmp_path / "plain.db3", fps=30.0, compress=False) as rec:
        for f in frames:
            rec.write(f)
    by_blob = read_all(tmp_path / "plain.db3")
    monkeypatch.setattr(db3, "_BLOBOPEN", False)
    by_select = read_all(tmp_path / "plain.db3")
    for want, a, b in zip(frames, by_blob, by_select, strict=True):
        np.testing.assert_array_equal(a.color, want.color)
        np.testing.assert_array_equal(b.color, want.color)
        np.testing.assert_array_equal(a.depth, b.depth)
        assert not a.color.flags.writeable and not a.depth.flags.writeable


def test_ground_truth_comes_back_from_the_sidecar(recording, frames):
    assert truth_path(recording).is_file()
    out = read_all(recording)
    for want, got in zip(frames, out, strict=True):
        assert got.truth is not None and want.truth is not None
        np.testing.assert_array_equal(got.truth.patient_to_camera, want.truth.patient_to_camera)
        assert got.truth.face_visible == want.truth.face_visible
        assert got.truth.scenario == "test"


def test_frames_without_truth_leave_no_sidecar(tmp_path):
    path = write(tmp_path / "plain.db3", make_frames(3, truth=False))
    assert not truth_path(path).exists()
    assert all(f.truth is None for f in read_all(path))


def test_bgr_color_and_color_only_recordings_round_trip(tmp_path):
    src = make_frames(4, truth=False)
    frames = [
        Frame(
            number=f.number,
            color=f.color,
            color_format=PixelFormat.BGR8,
            depth=None,
            depth_scale_m=0.0,
            intrinsics=f.intrinsics,
            device_timestamp_ms=f.device_timestamp_ms,
        )
        for f in src
    ]
    out = read_all(write(tmp_path / "bgr.db3", frames))
    assert len(out) == 4
    for want, got in zip(frames, out, strict=True):
        assert got.color_format is PixelFormat.BGR8 and got.depth is None
        np.testing.assert_array_equal(got.color, want.color)


def test_index_and_info_report_the_file(recording):
    idx = index_db3(recording)
    assert idx.color_frames == N and idx.depth_frames == N
    info = probe_recording(recording)
    assert (info.frames, info.width, info.height, info.fps) == (N, W, H, 30.0)
    assert {s["stream"] for s in info.streams} == {"color", "depth"}
    assert info.has_truth and info.depth_scale_m == pytest.approx(DEPTH_SCALE_M, rel=1e-6)
    # First to last frame on the device clock, as librealsense's playback reports it.
    with RecordingSource(recording) as src:
        stamps = [f.device_timestamp_ms for f in src]
    assert info.duration_s == pytest.approx((stamps[-1] - stamps[0]) / 1000.0, abs=1e-6)
    import pyrealsense2 as rs

    playback = rs.context().load_device(str(recording)).as_playback()
    assert playback.get_duration().total_seconds() == pytest.approx(info.duration_s, abs=1e-6)


def test_source_state_and_exhaustion(recording):
    src = RecordingSource(recording)
    with pytest.raises(StateError):
        src.read()
    src.open()
    assert src.frame_count == N
    assert len(list(src)) == N
    assert src.state is SourceState.EXHAUSTED and src.read() is None
    src.close()
    with pytest.raises(StateError):
        src.read()


# --------------------------------------------------------------------------- seek and timing


def test_seek_and_start_frame_give_exact_frames(recording, frames):
    src = RecordingSource(recording)
    with src:
        first = src.read()
        assert first is not None and first.number == 0
        src.seek(7)
        got = [f.number for f in src]
        assert got == list(range(7, N))
        src.seek(2)  # backwards, from an exhausted source
        f = src.read()
        assert f is not None and f.number == 2
        np.testing.assert_array_equal(f.color, frames[2].color)
        np.testing.assert_array_equal(f.depth, frames[2].depth)
        with pytest.raises(SourceError, match="outside"):
            src.seek(N)
    tail = read_all(recording, start_frame=N - 1)
    assert [f.number for f in tail] == [N - 1]
    np.testing.assert_array_equal(tail[0].color, frames[N - 1].color)


def test_every_frame_comes_back_on_every_reopening(recording, frames):
    """Replay is exact however often a recording is reopened (the soak reopens it all day)."""
    for _ in range(10):
        got = read_all(recording)
        assert [f.number for f in got] == list(range(len(frames)))
        np.testing.assert_array_equal(got[-1].color, frames[-1].color)
        np.testing.assert_array_equal(got[-1].depth, frames[-1].depth)


def test_nearest_depth_pairs_by_device_time():
    assert nearest_depth([0.0, 33.0, 66.0], [1.0, 34.0, 65.0]) == [0, 1, 2]
    assert nearest_depth([0.0, 33.0, 66.0], [30.0]) == [0, 0, 0]
    # File order need not be time order.
    assert nearest_depth([10.0, 20.0], [25.0, 0.0, 12.0]) == [2, 0]
    assert nearest_depth([5.0], []) == []


def test_a_damaged_image_message_is_one_clear_error(tmp_path, recording):
    p = tmp_path / "damaged.db3"
    p.write_bytes(recording.read_bytes())
    con = sqlite3.connect(p)
    (mid, data) = con.execute(
        "SELECT m.id, m.data FROM messages m JOIN topics t ON m.topic_id = t.id "
        "WHERE t.name LIKE '%Color_0/image/data%' ORDER BY m.timestamp LIMIT 1 OFFSET 5"
    ).fetchone()
    con.execute("UPDATE messages SET data = ? WHERE id = ?", (data[: len(data) // 3], mid))
    con.commit()
    con.close()
    with RecordingSource(p) as src:
        for _ in range(5):
            assert src.read() is not None
        with pytest.raises(SourceError, match=r"color image message \d+ is malformed"):
            src.read()


def _plain_recording(path: Path, frames: list[Frame]) -> Path:
    with Recorder(path, fps=30.0, compress=False) as rec:
        for f in frames:
            rec.write(f)
    return path


def test_mapped_reads_give_the_bytes_sqlite_stores(tmp_path, frames):
    """The reader maps the file (``PRAGMA mmap_size``); each message's bytes are those a
    plain connection's ``SELECT`` returns."""
    from edge.sources.recording.db3 import Db3Images

    p = _plain_recording(tmp_path / "plain.db3", frames)
    images = Db3Images(p)
    plain = sqlite3.connect(p)
    try:
        assert images._con.execute("PRAGMA mmap_size").fetchone()[0] > p.stat().st_size
        for ref in images.color + images.depth:
            (want,) = plain.execute("SELECT data FROM messages WHERE id = ?", (ref.message_id,))
            assert images._blob(ref.message_id, ref.row) == bytes(want[0])
    finally:
        plain.close()
        images.close()


def test_a_broken_page_chain_is_one_clear_error(tmp_path, frames):
    """A damaged overflow page of frame 5's image (its next-page pointer) is a SourceError
    when that image is read from the mapped file (opening checks the whole file first, so
    this reads past that check); the others read."""
    from edge.sources.recording.db3 import Db3Images

    p = _plain_recording(tmp_path / "chain.db3", frames)
    raw = bytearray(p.read_bytes())
    page = raw.find(frames[5].color.tobytes()[5000:5064]) // 4096
    assert page > 0
    raw[page * 4096 : page * 4096 + 4] = b"\xff\xff\xff\xff"
    p.write_bytes(raw)
    images = Db3Images(p)
    try:
        for i, ref in enumerate(images.color):
            if i == 5:
                with pytest.raises(SourceError, match=r"message \d+ is unreadable .*malformed"):
                    images.decode(ref, "color", (H, W, 3))
            else:
                np.testing.assert_array_equal(
                    images.decode(ref, "color", (H, W, 3)), frames[i].color
                )
    finally:
        images.close()


def test_realtime_mode_paces_at_recorded_timestamps(recording, frames):
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    out = read_all(recording, timing=TimingMode.REALTIME, clock=lambda: now[0], sleep=sleep)
    assert [f.number for f in out] == list(range(N))
    # With an instant consumer every frame after the first waits its recorded interval.
    intervals = np.diff([f.device_timestamp_ms for f in frames]) / 1000.0
    np.testing.assert_allclose(sleeps, intervals, atol=1e-5)


def test_realtime_mode_reads_a_frames_bytes_only_once_it_is_due(recording, monkeypatch):
    """As a camera's frame arrives before the host copies it: the pacer's wait comes before
    the image is read, so a reader thread copies nothing while the frame before is still
    being processed at the camera's rate."""
    from edge.sources.recording.db3 import Db3Images

    events: list[str] = []
    decode = Db3Images.decode

    def logged_decode(self, ref, kind, expect):  # type: ignore[no-untyped-def]
        events.append(kind)
        return decode(self, ref, kind, expect)

    monkeypatch.setattr(Db3Images, "decode", logged_decode)
    now = [100.0]

    def sleep(s: float) -> None:
        events.append("wait")
        now[0] += s

    out = read_all(recording, timing=TimingMode.REALTIME, clock=lambda: now[0], sleep=sleep)
    assert len(out) == N
    # The first frame is due at once; each later one waits, then its images are read.
    assert events[:2] == ["color", "depth"]
    assert events[2:] == ["wait", "color", "depth"] * (N - 1)


# --------------------------------------------------------------------------- recorder safety


def test_recorder_writes_to_a_temp_name_and_renames_at_close(tmp_path):
    out = tmp_path / "x.db3"
    frames = make_frames(2)
    rec = Recorder(out)
    rec.write(frames[0])
    assert not out.exists() and temp_path_for(out).exists()
    rec.write(frames[1])
    assert rec.close() == out
    assert out.exists() and not temp_path_for(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db3", "x.truth.jsonl"]


def test_a_failure_while_recording_leaves_nothing_behind(tmp_path):
    out = tmp_path / "x.db3"
    frames = make_frames(2)
    with pytest.raises(RuntimeError), Recorder(out) as rec:
        rec.write(frames[0])
        raise RuntimeError("source broke")
    assert list(tmp_path.iterdir()) == []


def test_a_frame_that_changes_size_is_refused(tmp_path):
    frames = make_frames(1)
    small = Intrinsics(32, 24, 30.0, 30.0, 15.5, 11.5)
    other = Frame(
        1,
        np.zeros((24, 32, 3), np.uint8),
        PixelFormat.RGB8,
        None,
        0.0,
        small,
        device_timestamp_ms=1,
    )
    with pytest.raises(SourceError, match="mid-recording"), Recorder(tmp_path / "x.db3") as rec:
        rec.write(frames[0])
        rec.write(other)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_depth_format_is_refused(tmp_path):
    f = make_frames(1)[0]
    bad = Frame(0, f.color, f.color_format, f.depth.astype(np.float32), 0.001, f.intrinsics)  # type: ignore[union-attr]
    with pytest.raises(SourceError, match="depth format"), Recorder(tmp_path / "x.db3") as rec:
        rec.write(bad)
    assert list(tmp_path.iterdir()) == []


def test_closing_an_empty_recorder_is_an_error_and_leaves_nothing(tmp_path):
    rec = Recorder(tmp_path / "x.db3")
    with pytest.raises(SourceError, match="no frames"):
        rec.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["missing-folder/x.db3", "x.bag", "x.txt", "afolder.db3"])
def test_unwritable_outputs_are_refused_before_writing(tmp_path, name):
    (tmp_path / "afolder.db3").mkdir()
    with pytest.raises(SourceError):
        Recorder(tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == ["afolder.db3"]


_AS_NOBODY = """
import os, sys
from edge.errors import SourceError
from edge.sources.recording import Recorder
if os.geteuid() == 0:  # root may write anywhere: check as an unprivileged user
    os.setgid(65534)
    os.setuid(65534)
try:
    Recorder(sys.argv[1])
    print("accepted")
except SourceError as exc:
    print(f"refused: {exc}")
"""


def test_read_only_folder_is_refused():
    base = Path(tempfile.mkdtemp(prefix="edge-ro-"))  # reachable by the unprivileged user
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir(mode=0o555)
        out = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, str(ro / "x.db3")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("refused:") and "not writable" in out.stdout
        assert list(ro.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_torn_last_truth_line_is_ignored(recording, tmp_path):
    copy = tmp_path / "c.db3"
    copy.write_bytes(recording.read_bytes())
    text = truth_path(recording).read_text()
    truth_path(copy).write_text(text + '{"frame": 99, "patient_to')
    assert len(load_truth(copy)) == N


def test_corrupt_truth_line_is_an_error(recording, tmp_path):
    copy = tmp_path / "c.db3"
    copy.write_bytes(recording.read_bytes())
    lines = truth_path(recording).read_text().splitlines()
    lines[2] = '{"frame": 1}'
    truth_path(copy).write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match="line 3"):
        load_truth(copy)


# --------------------------------------------------------------------------- bad files


def _bad(path: Path, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        RecordingSource(path).open()


def test_missing_file(tmp_path):
    _bad(tmp_path / "nope.db3", "does not exist")


def test_file_that_is_not_a_recording(tmp_path):
    p = tmp_path / "notes.db3"
    p.write_text("hello, this is not a bag\n" * 20)
    _bad(p, "not a recording")
    _bad(tmp_path / "x.mp4", "not a recording")


def test_sqlite_file_that_is_not_a_bag(tmp_path):
    p = tmp_path / "other.db3"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    _bad(p, "not a ROS 2 bag")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.db3"
    p.touch()
    _bad(p, "empty")


def test_bag_without_frames(tmp_path, recording):
    p = tmp_path / "noframes.db3"
    p.write_bytes(recording.read_bytes())
    con = sqlite3.connect(p)
    con.execute(
        "DELETE FROM messages WHERE topic_id IN "
        "(SELECT id FROM topics WHERE name LIKE '%image/data%')"
    )
    con.commit()
    con.close()
    _bad(p, "no frames")


def test_truncated_recording(tmp_path, recording):
    p = tmp_path / "cut.db3"
    data = recording.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _bad(p, "truncated or corrupt")


def test_unsupported_color_format(tmp_path):
    """A file whose color stream is YUYV (as some cameras deliver it) is refused on open."""
    import pyrealsense2 as rs

    path = tmp_path / "yuyv.db3"
    dev = rs.software_device()
    cs = dev.add_sensor("Color")
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = (
        rs.stream.color,
        0,
        1,
        W,
        H,
        30,
        2,
    )
    vs.fmt = rs.format.yuyv
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, 50.0, 50.0, 32.0, 24.0
    vs.intrinsics = intr
    prof = cs.add_video_stream(vs).as_video_stream_profile()
    rec = rs.recorder(str(path), dev)
    cs.open(prof)
    cs.start(lambda f: None)
    for i in range(3):
        f = rs.software_video_frame()
        f.pixels = np.zeros((H, W * 2), np.uint8)
        f.stride, f.bpp, f.timestamp, f.frame_number, f.profile = W * 2, 2, i * 33.0, i, prof
        f.domain = rs.timestamp_domain.hardware_clock
        cs.on_video_frame(f)
    cs.stop()
    cs.close()
    del rec, cs, dev
    _bad(path, "unsupported color format 'yuyv'")


# --------------------------------------------------------------------------- interruption

_RECORD_FOREVER = """
import sys
from edge.cli import main
sys.exit(main(["record", "--source", "synthetic", "--frames", "100000", "--out", sys.argv[1],
               "--config", sys.argv[2], "--quiet"]))
"""


def test_sigterm_while_recording_closes_a_playable_file(tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text("[realsense]\nwidth = 64\nheight = 48\n")
    out = tmp_path / "live.db3"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECORD_FOREVER, str(out), str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tmp = temp_path_for(out).with_name(f".live.partial-{proc.pid}.db3")
        # A frame is in once its ground truth line is (written after the frame).
        side = truth_path(tmp)
        deadline = time.monotonic() + 120

        def frames_in() -> int:
            return max(0, len(side.read_text().splitlines()) - 1) if side.exists() else 0

        while frames_in() < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert frames_in() >= 2, proc.stderr.read() if proc.poll() is not None else "no frame"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "live.db3",
        "live.truth.jsonl",
        "small.toml",
    ]
    frames = read_all(out)
    assert len(frames) >= 1 and [f.number for f in frames] == list(range(len(frames)))
    assert len(load_truth(out)) == len(frames)
