"""The edge process uses the connected camera's own calibration, or says on the HUD why not."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from edge.app import device_calibration
from edge.calibration.results import CalibrationResult, save_result
from edge.config import CalibrationConfig, EdgeConfig
from edge.frames import Frame, FrameSource, Intrinsics, PixelFormat
from edge.sources.calibrated import CalibratedSource

FACTORY = Intrinsics(640, 480, 610.0, 610.0, 320.0, 240.0)


class _Camera(FrameSource):
    name = "camera"

    def __init__(self, serial: str) -> None:
        super().__init__()
        self.serial = serial
        self.n = 0

    def _open(self) -> None:
        pass

    def _read(self) -> Frame | None:
        if self.n >= 2:
            return None
        self.n += 1
        return Frame(
            self.n, np.zeros((480, 640, 3), np.uint8), PixelFormat.RGB8, None, 0.001, FACTORY
        )

    def _close(self) -> None:
        pass


def _config(tmp_path) -> EdgeConfig:
    return dataclasses.replace(
        EdgeConfig(), calibration=CalibrationConfig(devices_dir=str(tmp_path), max_age_days=90.0)
    )


def _save(tmp_path, created: dt.datetime) -> None:
    params = {
        "width": 640,
        "height": 480,
        "fx": 615.5,
        "fy": 616.0,
        "cx": 318.0,
        "cy": 241.5,
        "distortion": {"k1": 0.01, "k2": -0.02, "p1": 0.0, "p2": 0.0, "k3": 0.0},
    }
    result = CalibrationResult(
        "intrinsics", "123456", 640, 480, params, {"rms_px": 0.2}, created_utc=created.isoformat()
    )
    save_result(result, tmp_path)


def test_matching_calibration_replaces_the_factory_intrinsics(tmp_path):
    _save(tmp_path, dt.datetime.now(dt.timezone.utc))
    source, warnings, used = device_calibration(_Camera("123456").open(), _config(tmp_path))
    assert warnings == []
    assert used is not None and used.name == "intrinsics-640x480.json"
    assert isinstance(source, CalibratedSource)
    with source:
        frame = source.read()
    assert frame is not None
    assert (frame.intrinsics.fx, frame.intrinsics.ppy) == (615.5, 241.5)
    assert frame.intrinsics.coeffs[:2] == (0.01, -0.02)


def test_missing_calibration_is_a_hud_warning_not_a_silent_default(tmp_path):
    source, warnings, used = device_calibration(_Camera("999").open(), _config(tmp_path))
    assert used is None and not isinstance(source, CalibratedSource)
    assert len(warnings) == 1 and "999" in warnings[0]


def test_stale_calibration_is_used_with_a_warning(tmp_path):
    _save(tmp_path, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400))
    _, warnings, used = device_calibration(_Camera("123456").open(), _config(tmp_path))
    assert used is not None
    assert len(warnings) == 1 and "days old" in warnings[0]


def test_sources_without_a_serial_need_no_calibration(tmp_path):
    src = _Camera("")
    assert device_calibration(src, _config(tmp_path)) == (src, [], None)


@pytest.mark.parametrize("warnings", [(), ("no intrinsics calibration for device 1",)])
def test_warnings_reach_the_hud(warnings):
    from edge.overlay.content import build_overlay
    from edge.overlay.demo import demo_plan
    from edge.overlay.project import DisplayProfile

    ov = build_overlay(
        frame_number=1,
        capture_unix_s=0.0,
        capture_s=0.0,
        registration=None,
        plan=demo_plan(1),
        profile=DisplayProfile(),
        camera=FACTORY,
        warnings=warnings,
    )
    assert ov.hud_payload()["warnings"] == list(warnings)
