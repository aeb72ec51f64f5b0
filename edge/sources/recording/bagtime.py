"""Message times of a finished ``.db3``: set from the frames' own device timestamps.

librealsense's recorder stamps every message of a ROS 2 bag with the wall-clock
time at which it was written (nanoseconds since recording began). Its playback
paces frames, and reports the file's duration, by those stamps, so a recording
written faster or slower than the camera's frame rate (a software device fed by
a renderer, a busy machine) replays at the writer's speed. This rewrites the
stamps of each image's messages (data, metadata, camera info) to the frame's
device timestamp (from its ``image/metadata`` message) relative to the first
frame, so plain librealsense replays at the recorded frame rate. Messages that
are not frames (device description, options, transforms) keep their stamps.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from edge.errors import SourceError
from edge.sources.recording.db3 import metadata_timestamp_ms

_STREAM_TOPIC = re.compile(r"^(/device_\d+/sensor_\d+/[A-Za-z]+_\d+/image/)(.+)$")


def stamp_with_device_time(path: Path) -> int:
    """Rewrite the image messages' times of the closed recording ``path``; frames restamped.

    Raises SourceError when the file cannot be updated.
    """
    try:
        con = sqlite3.connect(str(path))
    except sqlite3.Error as exc:  # pragma: no cover - the recorder just wrote it
        raise SourceError(f"cannot open {path} to set its times: {exc}", "record again") from None
    try:
        with con:
            return _restamp(con)
    except sqlite3.Error as exc:
        raise SourceError(
            f"cannot set the message times of {path}: {exc}", "check the disk and record again"
        ) from None
    finally:
        con.close()


def _restamp(con: sqlite3.Connection) -> int:
    streams: dict[str, list[int]] = {}
    meta_topic: dict[str, int] = {}
    for tid, name in con.execute("SELECT id, name FROM topics"):
        m = _STREAM_TOPIC.match(name)
        if m:
            streams.setdefault(m.group(1), []).append(int(tid))
            if m.group(2) == "metadata":
                meta_topic[m.group(1)] = int(tid)
    device: dict[str, dict[int, float]] = {}
    for prefix, tid in meta_topic.items():
        stamps: dict[int, float] = {}
        for bag_ns, data in con.execute(
            "SELECT timestamp, data FROM messages WHERE topic_id = ?", (tid,)
        ):
            ms = metadata_timestamp_ms(bytes(data))
            if ms is not None:
                stamps[int(bag_ns)] = ms
        if stamps:
            device[prefix] = stamps
    if not device:
        return 0
    first_ms = min(min(s.values()) for s in device.values())
    # The first frame just after the device description (stamped 0 when recording
    # starts), so that librealsense's duration, last minus first message time, is
    # the frames' span on the device clock.
    base_ns = 1
    con.execute("CREATE TEMP TABLE remap(old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
    done = 0
    for prefix, stamps in device.items():
        con.execute("DELETE FROM remap")
        con.executemany(
            "INSERT INTO remap(old, new) VALUES (?, ?)",
            [(old, base_ns + round((ms - first_ms) * 1e6)) for old, ms in stamps.items()],
        )
        ids = streams[prefix]
        marks = ",".join("?" * len(ids))
        # One statement per stream, so a new time can never be mistaken for an old one.
        con.execute(
            "UPDATE messages SET timestamp = "
            "(SELECT new FROM remap WHERE old = messages.timestamp) "
            f"WHERE topic_id IN ({marks}) AND timestamp IN (SELECT old FROM remap)",
            ids,
        )
        done += len(stamps)
    con.execute("DROP TABLE remap")
    return done
