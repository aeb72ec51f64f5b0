"""Recorded sessions: librealsense ``.db3`` recordings, their ground truth, playback and recording.

``index``     what a file holds, read from SQLite: path checks, frame counts (:class:`BagIndex`),
              and what ``edge info`` reports (:class:`RecordingInfo`)
``db3``       a ``.db3``'s image messages, decoded from SQLite in file order; depth pairing
``truth``     the ground-truth sidecar ``NAME.truth.jsonl``
``playback``  :class:`RecordingSource`
``probe``     :func:`probe_recording`, :func:`measure_playback_fps`
``recorder``  :class:`Recorder`, :func:`check_writable`, :func:`temp_path_for`

The librealsense conversions and depth alignment that playback shares with
the live camera are in :mod:`edge.sources.librealsense`.
"""

from edge.sources.recording.db3 import Db3Images, ImageRef, nearest_depth
from edge.sources.recording.index import (
    RECORDING_SUFFIXES,
    BagIndex,
    RecordingInfo,
    check_recording_path,
    index_db3,
)
from edge.sources.recording.playback import RecordingSource
from edge.sources.recording.probe import measure_playback_fps, probe_recording
from edge.sources.recording.recorder import Recorder, check_writable, temp_path_for
from edge.sources.recording.truth import (
    TRUTH_FORMAT,
    TRUTH_VERSION,
    load_truth,
    truth_from_json,
    truth_header,
    truth_path,
    truth_to_json,
)

__all__ = [
    "RECORDING_SUFFIXES",
    "TRUTH_FORMAT",
    "TRUTH_VERSION",
    "BagIndex",
    "Db3Images",
    "ImageRef",
    "Recorder",
    "RecordingInfo",
    "RecordingSource",
    "check_recording_path",
    "check_writable",
    "index_db3",
    "load_truth",
    "measure_playback_fps",
    "nearest_depth",
    "probe_recording",
    "temp_path_for",
    "truth_from_json",
    "truth_header",
    "truth_path",
    "truth_to_json",
]
