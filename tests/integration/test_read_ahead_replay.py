"""`[pipeline] read_ahead` and `overlap_stages`: a phantom recording replayed through `edge
run`'s whole pipeline gives the same frames and the same registration, to the bit, with
read-ahead and overlapped stages on and off.

Needs the tracker's models (built by ``ensure_models``); skipped when they cannot be built.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge.config import parse_config
from edge.errors import EdgeError

FRAMES = 24


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[dict, Path]:
    from edge.bench import make_phantom_recording
    from edge.models import ensure_models
    from edge.models.manifest import repo_models_dir

    try:
        ensure_models(repo_models_dir() / "build")
    except EdgeError as exc:
        pytest.skip(f"tracker models unavailable: {exc}")
    folder = tmp_path_factory.mktemp("read-ahead")
    config, _ = parse_config({})
    return make_phantom_recording(config, "nod-shake", FRAMES, 0, folder), folder


def _replay(made: dict, folder: Path, read_ahead: bool, overlap: bool = False) -> tuple[list, dict]:
    from edge.app import execute
    from edge.bench import replay_options

    settings = {"read_ahead": read_ahead, "overlap_stages": overlap}
    config, _ = parse_config({"pipeline": settings}, "test")
    assert config.pipeline.read_ahead is read_ahead
    seen: list = []
    threads: set[str] = set()

    def keep(result) -> None:
        threads.add(threading.current_thread().name)
        reg = result.registration
        seen.append(
            (
                result.frame.number,
                result.frame.color.tobytes(),
                None if reg is None else reg.state,
                None if reg is None or reg.patient_to_camera is None else reg.patient_to_camera,
                None
                if result.tracking is None or result.tracking.patient is None
                else result.tracking.patient.landmarks_px,
                [str(e) for e in result.errors],
            )
        )

    work = folder / f"{read_ahead}-{overlap}"
    work.mkdir()
    preview = work / "preview.mp4"
    options = replay_options(config, made, work, preview=str(preview))
    summary = execute(options, on_result=keep).summary
    # The preview is drawn off the frame's path; every frame is written or counted dropped.
    assert summary["preview"]["written"] + summary["preview"]["dropped"] == FRAMES
    assert summary["preview"]["written"] >= 1 and preview.stat().st_size > 0
    # With overlapped stages a result is finished (and seen here) in the second thread, or in
    # the loop's when the read-ahead had no next frame yet (nothing to overlap with).
    main = threading.main_thread().name
    assert threads <= ({"pipeline-tail", main} if overlap else {main}) and threads
    return seen, summary


def test_replay_is_identical_with_read_ahead_on_and_off(made, monkeypatch):
    from edge.sources.readahead import ReadAheadSource

    opened: list[ReadAheadSource] = []
    real_open = ReadAheadSource._open

    def spy(self: ReadAheadSource) -> None:
        opened.append(self)
        real_open(self)

    monkeypatch.setattr(ReadAheadSource, "_open", spy)
    recording, folder = made
    off, off_summary = _replay(recording, folder, False)
    assert not opened
    on, on_summary = _replay(recording, folder, True)
    assert len(opened) == 1 and opened[0].last_read_ms > 0  # the reader thread read them
    both, both_summary = _replay(recording, folder, True, overlap=True)
    assert len(off) == FRAMES and off_summary["frames"] == FRAMES
    assert any(s[3] is not None for s in off)  # a pose was registered: something to compare
    for seen, summary in ((on, on_summary), (both, both_summary)):
        assert len(seen) == FRAMES and summary["frames"] == FRAMES
        for a, b in zip(seen, off, strict=True):
            assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[5] == b[5]
            for x, y in ((a[3], b[3]), (a[4], b[4])):
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_array_equal(x, y)
        for key in ("tre_mm", "landmark_error_px", "rotation_error_deg"):
            assert summary[key] == off_summary[key]
