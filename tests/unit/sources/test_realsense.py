"""Live RealSense source: reconnection, backoff and errors with a fault-injecting fake camera."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.config import RealSenseConfig
from edge.errors import DeviceLostError, FrameTimeout, SourceError
from edge.frames import Extrinsics, Intrinsics, SourceState
from edge.sources.realsense import (
    RawFrame,
    RealSenseSource,
    StreamSetup,
    backoff_delays,
    check_mode,
    load_preset,
)

W, H = 32, 24
SETUP = StreamSetup(
    serial="123",
    intrinsics=Intrinsics(W, H, 30.0, 30.0, 15.5, 11.5),
    depth_scale_m=0.001,
    depth_to_color=Extrinsics(translation_m=(0.015, 0.0, 0.0)),
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class FakeSession:
    def __init__(self, layer: FakeLayer) -> None:
        self.layer = layer
        self.setup = SETUP
        self.stopped = False

    def wait(self, timeout_ms: int) -> RawFrame | None:
        event = self.layer.script.pop(0) if self.layer.script else "frame"
        if event == "unplug":
            self.layer.plugged = False
            raise DeviceLostError("gone")
        if event == "timeout":
            return None
        self.layer.sent += 1
        v = self.layer.sent
        return RawFrame(
            color=np.full((H, W, 3), v % 256, np.uint8),
            depth=np.full((H, W), v, np.uint16),
            timestamp_ms=v * 33.0,
        )

    def stop(self) -> None:
        self.stopped = True


class FakeLayer:
    """A camera that follows a script of events and comes back after ``replug_after`` looks."""

    def __init__(self, serials: tuple[str, ...] = ("123",), replug_after: int = 0) -> None:
        self.serials = list(serials)
        self.plugged = bool(serials)
        self.script: list[str] = []
        self.sent = 0
        self.opens: list[tuple[str, str | None, Path | None]] = []
        self.looks_while_unplugged = 0
        self.replug_after = replug_after
        self.refuse_mode = False

    def find_serials(self) -> list[str]:
        if not self.plugged and self.serials:
            self.looks_while_unplugged += 1
            if self.looks_while_unplugged > self.replug_after:
                self.plugged = True
        return list(self.serials) if self.plugged else []

    def open(self, serial, config, preset_json, record_to):  # type: ignore[no-untyped-def]
        if self.refuse_mode:
            raise SourceError(f"camera {serial} does not offer color at 1x1 1 fps", "pick another")
        self.opens.append((serial, preset_json, record_to))
        return FakeSession(self)


def make(layer: FakeLayer, clock: FakeClock, **cfg: object) -> RealSenseSource:
    config = RealSenseConfig(
        preset="", reconnect_initial_s=0.25, reconnect_max_s=1.0, frame_timeout_ms=500, **cfg
    )  # type: ignore[arg-type]
    return RealSenseSource(config, layer=layer, clock=clock, sleep=clock.sleep)


def test_frames_carry_device_setup_and_numbers():
    layer, clock = FakeLayer(), FakeClock()
    with make(layer, clock) as src:
        frames = [src.read() for _ in range(3)]
    assert [f.number for f in frames] == [0, 1, 2]  # type: ignore[union-attr]
    f = frames[0]
    assert f is not None and f.intrinsics == SETUP.intrinsics and f.depth_scale_m == 0.001
    assert f.depth_to_color.translation_m == (0.015, 0.0, 0.0)
    assert layer.opens == [("123", None, None)]


def test_no_camera_is_a_clear_error():
    with pytest.raises(SourceError, match=r"no RealSense camera found.*--source FILE\.db3/phantom"):
        make(FakeLayer(serials=()), FakeClock()).open()


def test_unknown_serial_is_a_clear_error():
    with pytest.raises(SourceError, match=r"999 not found.*connected: 123"):
        make(FakeLayer(), FakeClock(), serial="999").open()


def test_unsupported_mode_is_reported():
    layer = FakeLayer()
    layer.refuse_mode = True
    with pytest.raises(SourceError, match="does not offer"):
        make(layer, FakeClock()).open()


def test_mode_check_names_what_the_device_offers():
    offered = {
        ("color", 640, 480, 30),
        ("depth", 640, 480, 30),
        ("color", 1280, 720, 30),
        ("depth", 848, 480, 90),
    }
    check_mode(offered, RealSenseConfig(), "123")  # 640x480 at 30 is offered
    with pytest.raises(SourceError, match="does not offer depth at 1280x720 30 fps") as exc:
        check_mode(offered, RealSenseConfig(width=1280, height=720), "123")
    assert "640x480@30, 848x480@90" in str(exc.value)
    with pytest.raises(SourceError, match="does not offer color at 640x480 60 fps"):
        check_mode(offered, RealSenseConfig(fps=60), "123")


def test_unplug_reconnects_with_backoff_and_resumes():
    layer, clock = FakeLayer(replug_after=3), FakeClock()
    src = make(layer, clock)
    src.open()
    assert src.read() is not None
    layer.script = ["unplug"]
    with pytest.raises(FrameTimeout) as lost:
        src.read()
    assert lost.value.reconnecting and src.state is SourceState.RECONNECTING
    timeouts = 0
    frame = None
    while frame is None:
        try:
            frame = src.read()
        except FrameTimeout as exc:
            assert exc.reconnecting and src.state is SourceState.RECONNECTING
            timeouts += 1
            assert timeouts < 20
    assert src.state is SourceState.OPEN and src.reconnects == 1
    assert frame.number == 1 and frame.device_timestamp_ms == 2 * 33.0
    # Attempts at 0.25, 0.5, 1.0 (capped), 1.0 s after the loss: the 4th look finds the camera.
    assert layer.looks_while_unplugged == 4
    assert clock.now == pytest.approx(0.25 + 0.5 + 1.0 + 1.0)
    assert all(s <= 0.5 + 1e-9 for s in clock.sleeps)  # read() never blocks past the timeout
    assert len(layer.opens) == 2 and layer.opens[1][0] == "123"
    src.close()


def test_iteration_keeps_waiting_through_a_disconnect():
    layer, clock = FakeLayer(replug_after=1), FakeClock()
    layer.script = ["frame", "unplug", "timeout", "frame"]
    got = []
    with make(layer, clock) as src:
        for frame in src:
            got.append(frame.number)
            if len(got) == 3:
                break
    assert got == [0, 1, 2]


def test_timeout_without_unplug_keeps_the_source_open():
    layer, clock = FakeLayer(), FakeClock()
    layer.script = ["timeout"]
    with make(layer, clock) as src:
        with pytest.raises(FrameTimeout) as exc:
            src.read()
        assert not exc.value.reconnecting and src.state is SourceState.OPEN
        assert src.read() is not None


def test_backoff_doubles_and_caps():
    gen = backoff_delays(0.25, 1.0)
    assert [next(gen) for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_presets_in_hardware_folder_are_valid_json_objects(repo_root):
    presets = sorted((repo_root / "hardware" / "presets").glob("*.json"))
    assert presets, "no presets committed"
    for p in presets:
        data = json.loads(load_preset(p))
        assert all(isinstance(v, str) for v in data.values()), p
    default = RealSenseConfig().preset
    assert (repo_root / default).is_file()


def test_bad_presets_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="cannot be read"):
        load_preset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(SourceError, match="not valid JSON"):
        load_preset(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(SourceError, match="JSON object"):
        load_preset(bad)


def test_preset_is_passed_to_the_device(repo_root):
    layer, clock = FakeLayer(), FakeClock()
    config = RealSenseConfig(preset=str(repo_root / "hardware/presets/face-high-accuracy.json"))
    with RealSenseSource(config, layer=layer, clock=clock, sleep=clock.sleep):
        pass
    assert layer.opens[0][1] is not None and "param-depthunits" in layer.opens[0][1]


@pytest.mark.hardware
def test_live_camera_delivers_aligned_frames():
    rs = pytest.importorskip("pyrealsense2")
    if len(rs.context().query_devices()) == 0:
        pytest.skip("no RealSense camera connected")
    with RealSenseSource(RealSenseConfig()) as src:
        frame = src.read()
    assert frame is not None and frame.depth is not None
    assert frame.depth.shape == frame.color.shape[:2] and frame.depth_scale_m > 0
