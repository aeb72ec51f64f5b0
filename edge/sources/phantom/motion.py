"""Head poses: Euler angles to matrices, and per-frame pose files (``--motion``).

A pose is ``face_to_camera``: the face frame (head centre; x subject's left,
y down, z posterior; see face.py) in the colour camera's optical frame.
Rotation ``R = Rz(rz) @ Ry(ry) @ Rx(rx)`` (degrees): rx nods (pitch), ry shakes
(yaw), rz tilts (roll); then the translation (metres) places the head centre.

Motion files (docs/phantom.md):

* CSV with the header ``frame,tx_m,ty_m,tz_m,rx_deg,ry_deg,rz_deg`` and one
  row per frame, frames numbered 0, 1, 2, ... in order.
* JSON: ``{"poses": [{"frame": 0, "t_m": [x, y, z], "r_deg": [rx, ry, rz]}, ...]}``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.errors import SourceError
from edge.files import parse_json

CSV_FIELDS = ("frame", "tx_m", "ty_m", "tz_m", "rx_deg", "ry_deg", "rz_deg")
MAX_TRANSLATION_M = 20.0


def pose_matrix(
    t_m: Sequence[float] | np.ndarray, r_deg: Sequence[float] | np.ndarray
) -> np.ndarray:
    """4x4 ``face_to_camera`` from a translation (metres) and rx, ry, rz (degrees)."""
    rx, ry, rz = (math.radians(float(a)) for a in r_deg)
    cx, sx, cy, sy, cz, sz = (
        math.cos(rx),
        math.sin(rx),
        math.cos(ry),
        math.sin(ry),
        math.cos(rz),
        math.sin(rz),
    )
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = Rz @ Ry @ Rx
    m[:3, 3] = np.asarray(t_m, dtype=np.float64)
    return m


def _bad(path: Path, where: str, field: str, problem: str) -> SourceError:
    return SourceError(
        f"motion file {path}, {where}, field '{field}': {problem}",
        "fix that entry (format: docs/phantom.md, 'Motion files')",
    )


def _number(path: Path, where: str, field: str, value: object) -> float:
    if isinstance(value, bool):
        raise _bad(path, where, field, f"expected a number, got {value!r}")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(path, where, field, f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise _bad(path, where, field, f"expected a finite number, got {value!r}")
    return x


def _pose(
    path: Path, where: str, frame: object, expected: int, t: list[object], r: list[object]
) -> np.ndarray:
    f = _number(path, where, "frame", frame)
    if f != expected:
        raise _bad(
            path,
            where,
            "frame",
            f"expected frame {expected} (frames count 0, 1, 2, ... in order), got {frame!r}",
        )
    names_t, names_r = ("tx_m", "ty_m", "tz_m"), ("rx_deg", "ry_deg", "rz_deg")
    tv = [_number(path, where, n, v) for n, v in zip(names_t, t, strict=True)]
    rv = [_number(path, where, n, v) for n, v in zip(names_r, r, strict=True)]
    for n, v in zip(names_t, tv, strict=True):
        if abs(v) > MAX_TRANSLATION_M:
            raise _bad(path, where, n, f"{v} m is not a plausible head position")
    if tv[2] <= 0:
        raise _bad(
            path, where, "tz_m", f"the head must be in front of the camera (tz_m > 0), got {tv[2]}"
        )
    return pose_matrix(tv, rv)


def load_motion(path: str | Path) -> np.ndarray:
    """Read a motion file (CSV or JSON, by extension) into (N, 4, 4) ``face_to_camera``.

    Raises SourceError naming the line (CSV) or pose index (JSON) and the field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(
            f"cannot read motion file {p}: {exc}", "check the path passed to --motion"
        ) from None
    poses: list[np.ndarray] = []
    if p.suffix.lower() == ".json":
        try:
            data = parse_json(text)
        except json.JSONDecodeError as exc:
            raise _bad(p, f"line {exc.lineno}", "-", f"not valid JSON ({exc.msg})") from None
        except ValueError as exc:  # over a size or nesting limit, a NUL, a duplicate key
            raise _bad(p, "top level", "-", str(exc)) from None
        items = data.get("poses") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise _bad(p, "top level", "poses", "expected a list of poses")
        for i, item in enumerate(items):
            where = f"pose {i}"
            if not isinstance(item, dict):
                raise _bad(p, where, "-", "expected an object with frame, t_m, r_deg")
            for key in ("frame", "t_m", "r_deg"):
                if key not in item:
                    raise _bad(p, where, key, "missing")
            t, r = item["t_m"], item["r_deg"]
            if not isinstance(t, list) or len(t) != 3:
                raise _bad(p, where, "t_m", "expected 3 numbers [x, y, z] in metres")
            if not isinstance(r, list) or len(r) != 3:
                raise _bad(p, where, "r_deg", "expected 3 numbers [rx, ry, rz] in degrees")
            poses.append(_pose(p, where, item["frame"], i, t, r))
    else:
        rows = csv.reader(text.splitlines())
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != CSV_FIELDS:
            raise _bad(
                p, "line 1", "header", f"expected the header {','.join(CSV_FIELDS)}, got {header!r}"
            )
        for line_no, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"line {line_no}"
            if len(row) != len(CSV_FIELDS):
                missing = CSV_FIELDS[len(row)] if len(row) < len(CSV_FIELDS) else "-"
                raise _bad(p, where, missing, f"expected {len(CSV_FIELDS)} values, got {len(row)}")
            vals = [c.strip() for c in row]
            poses.append(_pose(p, where, vals[0], len(poses), list(vals[1:4]), list(vals[4:7])))
    if not poses:
        raise SourceError(f"motion file {p} has no poses", "add at least one pose")
    return np.stack(poses)
