"""The ground-truth sidecar of a recording: ``NAME.truth.jsonl`` next to ``NAME.db3``.

A header line (``{"format": "edge-truth", "version": 1, ...}``), then one
JSON object per frame (see :func:`truth_to_json`), appended and flushed per
frame by the recorder. Playback attaches it back to ``frame.truth``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import SourceError
from edge.files import parse_json
from edge.frames import GroundTruth

log = logging.getLogger(__name__)

TRUTH_FORMAT = "edge-truth"
TRUTH_VERSION = 1
MAX_TRUTH_LINE_BYTES = 1 << 20  # a frame's truth (468 landmarks) is ~30 kB


def truth_path(recording: str | Path) -> Path:
    """The ground-truth sidecar of a recording: ``NAME.db3`` -> ``NAME.truth.jsonl``."""
    p = Path(recording)
    return p.with_name(p.stem + ".truth.jsonl")


def truth_header() -> str:
    """The sidecar's first line: its format, version and units."""
    return json.dumps({"format": TRUTH_FORMAT, "version": TRUTH_VERSION, "units": "metres, pixels"})


def truth_to_json(frame_number: int, device_timestamp_ms: float, truth: GroundTruth) -> str:
    """One sidecar line: the frame's index and timestamp and its ground truth (metres, pixels)."""

    def arr(a: np.ndarray | None) -> list[Any] | None:
        return None if a is None else np.asarray(a, dtype=np.float64).tolist()

    return json.dumps(
        {
            "frame": frame_number,
            "device_timestamp_ms": device_timestamp_ms,
            "patient_to_camera": arr(truth.patient_to_camera),
            "face_visible": bool(truth.face_visible),
            "landmarks_px": arr(truth.landmarks_px),
            "landmarks_camera_m": arr(truth.landmarks_camera_m),
            "scenario": truth.scenario,
            **_tool_json(truth),
        },
        separators=(",", ":"),
    )


def _tool_json(truth: GroundTruth) -> dict[str, Any]:
    """The tool's truth, when the frame has one (a key ``tool``; absent otherwise)."""
    if truth.tool_to_camera is None:
        return {}
    return {
        "tool": {
            "name": truth.tool_name,
            "tool_to_camera": np.asarray(truth.tool_to_camera, np.float64).tolist(),
            "tip_camera_m": np.asarray(truth.tool_tip_camera_m, np.float64).tolist(),
            "axis_camera": np.asarray(truth.tool_axis_camera, np.float64).tolist(),
            "visible": bool(truth.tool_visible),
        }
    }


def truth_from_json(obj: dict[str, Any]) -> GroundTruth:
    """One sidecar object back to :class:`GroundTruth`; ValueError/KeyError when malformed."""

    def arr(v: Any) -> np.ndarray | None:
        return None if v is None else np.asarray(v, dtype=np.float64)

    pose = arr(obj["patient_to_camera"])
    if pose is None or pose.shape != (4, 4):
        raise ValueError("patient_to_camera must be a 4x4 matrix")
    return GroundTruth(
        patient_to_camera=pose,
        face_visible=bool(obj["face_visible"]),
        landmarks_px=arr(obj.get("landmarks_px")),
        landmarks_camera_m=arr(obj.get("landmarks_camera_m")),
        scenario=str(obj.get("scenario", "")),
        **_tool_from_json(obj.get("tool")),
    )


def _tool_from_json(tool: Any) -> dict[str, Any]:
    if tool is None:
        return {}
    pose = np.asarray(tool["tool_to_camera"], dtype=np.float64)
    tip = np.asarray(tool["tip_camera_m"], dtype=np.float64)
    axis = np.asarray(tool["axis_camera"], dtype=np.float64)
    if pose.shape != (4, 4) or tip.shape != (3,) or axis.shape != (3,):
        raise ValueError("the tool's truth must be a 4x4 pose, a tip and an axis of 3")
    return {
        "tool_name": str(tool["name"]),
        "tool_to_camera": pose,
        "tool_tip_camera_m": tip,
        "tool_axis_camera": axis,
        "tool_visible": bool(tool["visible"]),
    }


def load_truth(recording: Path) -> dict[int, GroundTruth]:
    """Read a recording's truth sidecar (empty when there is none).

    A torn last line (the recorder was killed mid-write) is ignored; any
    other malformed line is a SourceError.
    """
    side = truth_path(recording)
    if not side.is_file():
        return {}
    try:
        lines = side.read_bytes().splitlines()
    except OSError as exc:
        raise SourceError(f"cannot read {side}: {exc.strerror}", "check its permissions") from None
    out: dict[int, GroundTruth] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = parse_json(line, max_bytes=MAX_TRUTH_LINE_BYTES)
            if i == 0 and obj.get("format") == TRUTH_FORMAT:
                if obj.get("version") != TRUTH_VERSION:
                    raise ValueError(f"unsupported version {obj.get('version')}")
                continue
            out[int(obj["frame"])] = truth_from_json(obj)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if i == len(lines) - 1:
                log.warning("ignoring torn last line of %s", side)
                continue
            raise SourceError(
                f"{side} line {i + 1} is not valid ground truth ({exc})",
                "delete the sidecar or record again",
            ) from None
    return out
