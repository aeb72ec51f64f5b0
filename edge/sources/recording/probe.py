"""Describing a recording (`edge info`) and measuring how fast it plays back."""

from __future__ import annotations

import time
from pathlib import Path

from edge.sources.recording.index import RecordingInfo
from edge.sources.recording.playback import RecordingSource


def probe_recording(path: str | Path) -> RecordingInfo:
    """Open a recording just long enough to describe it (raises SourceError when it is bad)."""
    with RecordingSource(path) as src:
        assert isinstance(src, RecordingSource)
        info = src.info()
        if info.frames < 0:
            # A ROS 1 .bag has no index we read: count by playing it once.
            info.frames = sum(1 for _ in src)
            info.duration_s = info.frames / info.fps
        return info


def measure_playback_fps(path: str | Path) -> float:
    """Frames per second of deterministic playback of ``path`` (whole file, decode + copy)."""
    start = time.perf_counter()
    count = 0
    with RecordingSource(path) as src:
        for _ in src:
            count += 1
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 else float("inf")
