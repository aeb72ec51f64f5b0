"""What a recording file holds, read without librealsense: path checks and the ``.db3`` index.

:func:`check_recording_path` refuses a missing, foreign, empty, truncated or
corrupt file with a SourceError naming the problem; for a ``.db3`` (a ROS 2
bag in one SQLite file) it also counts the color and depth frames from the
SQLite index. The images themselves are read by :mod:`.db3`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import SourceError

RECORDING_SUFFIXES = (".db3", ".bag")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_COLOR_TOPIC = re.compile(r"^/device_\d+/sensor_\d+/Color_\d+/image/data")
_DEPTH_TOPIC = re.compile(r"^/device_\d+/sensor_\d+/Depth_\d+/image/data")


_MAX_PROBLEMS = 100  # quick_check stops after this many


def first_problem(problems: list[str]) -> str:
    """SQLite's integrity report (one row may hold several lines) as one line: the first
    problem and how many follow."""
    lines = [s for p in problems for s in p.splitlines() if s.strip() and not s.startswith("***")]
    if not lines:
        return "no integrity report"
    more = len(lines) - 1
    return lines[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _no_file_fix() -> str:
    return "record one with `edge record --source synthetic --frames 60 --out FILE.db3`"


@dataclass(frozen=True)
class BagIndex:
    """What the SQLite index of a ``.db3`` says, read without librealsense."""

    color_frames: int
    depth_frames: int
    first_ns: int
    last_ns: int


def index_db3(path: Path) -> BagIndex:
    """Check that ``path`` is a readable, non-empty librealsense ``.db3`` and count its frames.

    Raises SourceError naming the problem: not a recording, truncated or
    corrupt, empty, or no color stream.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        raise SourceError(f"recording {path} does not exist", _no_file_fix()) from None
    except OSError as exc:
        raise SourceError(
            f"cannot read recording {path}: {exc.strerror}", "check the path"
        ) from None
    if len(head) == 0:
        raise SourceError(
            f"recording {path} is empty (0 bytes)",
            "the recording was not finished; record it again",
        )
    if head != _SQLITE_MAGIC:
        raise SourceError(
            f"{path} is not a recording (not a ROS 2 bag / SQLite file)",
            "pass a .db3 file written by `edge record` or the RealSense recorder",
        )
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:  # pragma: no cover - the magic check above catches most
        raise SourceError(f"cannot open recording {path}: {exc}", "check the file") from None
    try:
        problems = [str(r[0]) for r in con.execute(f"PRAGMA quick_check({_MAX_PROBLEMS})")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(first_problem(problems))
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"topics", "messages"} <= tables:
            raise SourceError(
                f"{path} is an SQLite file but not a ROS 2 bag (no topics/messages tables)",
                "pass a .db3 file written by `edge record` or the RealSense recorder",
            )
        rows = con.execute(
            "SELECT t.name, COUNT(m.id), MIN(m.timestamp), MAX(m.timestamp) "
            "FROM topics t LEFT JOIN messages m ON m.topic_id = t.id GROUP BY t.id"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"recording {path} is truncated or corrupt ({exc})",
            "record it again; a recording interrupted by power loss cannot be repaired",
        ) from None
    finally:
        con.close()
    color = [r for r in rows if _COLOR_TOPIC.match(r[0])]
    depth = [r for r in rows if _DEPTH_TOPIC.match(r[0])]
    color_frames = sum(r[1] for r in color)
    depth_frames = sum(r[1] for r in depth)
    if not rows or (color_frames == 0 and depth_frames == 0):
        raise SourceError(
            f"recording {path} holds no frames",
            "the recording was stopped before the first frame; record it again",
        )
    if color_frames == 0:
        raise SourceError(
            f"recording {path} has no color stream (depth only)",
            "record with the color stream enabled",
        )
    stamps = [r for r in color if r[1]]
    return BagIndex(
        color_frames=color_frames,
        depth_frames=depth_frames,
        first_ns=int(min(r[2] for r in stamps)),
        last_ns=int(max(r[3] for r in stamps)),
    )


def check_recording_path(path: Path) -> BagIndex | None:
    """Validate a recording path; the index for ``.db3``, None for ``.bag``."""
    if path.suffix.lower() not in RECORDING_SUFFIXES:
        raise SourceError(
            f"{path} is not a recording (expected a .db3 or .bag file)",
            "pass a file written by `edge record` or the RealSense recorder",
        )
    if path.suffix.lower() == ".db3":
        return index_db3(path)
    if not path.is_file():
        raise SourceError(f"recording {path} does not exist", _no_file_fix())
    if path.stat().st_size == 0:
        raise SourceError(f"recording {path} is empty (0 bytes)", "record it again")
    return None


@dataclass
class RecordingInfo:
    """What ``edge info`` reports about a recording."""

    path: str
    frames: int
    width: int
    height: int
    fps: float
    duration_s: float
    depth_scale_m: float
    color_format: str
    streams: list[dict[str, Any]] = field(default_factory=list)
    has_truth: bool = False
    intrinsics: dict[str, object] = field(default_factory=dict)
    camera: dict[str, str] = field(default_factory=dict)  # name, serial, firmware, product_line
    raw_depth: bool = False  # depth at its own intrinsics, aligned to color on playback

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "streams": self.streams,
            "duration_s": self.duration_s,
            "depth_scale_m": self.depth_scale_m,
            "color_format": self.color_format,
            "has_truth": self.has_truth,
            "intrinsics": self.intrinsics,
            "camera": self.camera,
            "raw_depth": self.raw_depth,
        }
