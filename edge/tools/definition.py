"""Tool definition files: what a tracked instrument looks like to the camera.

One TOML file per instrument in ``hardware/tools/`` (or any path)::

    name = "needle-guide"
    dictionary = "DICT_4X4_50"        # OpenCV ArUco dictionary of its markers
    axis = [0.0, 0.0, 1.0]            # tool frame, from the body towards the tip
    tip_mm = [0.0, 0.0, 120.0]        # the tip in the tool frame (pivot calibration)
    tip_rms_mm = 0.0                  # that calibration's RMS; 0: taken from the design
    tip_source = "design"             # or what `edge calibrate pivot` wrote
    [[markers]]
    id = 0
    corners_mm = [[-15, -15, 0], [15, -15, 0], [15, 15, 0], [-15, 15, 0]]

Corners are in OpenCV's order (top-left, top-right, bottom-right, bottom-left of the
printed marker, seen from the front); the marker faces the side from which that order
is clockwise. Positions are millimetres in the file, metres once loaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError, ToolError
from edge.files import parse_toml, read_toml, write_atomic
from edge.typed_toml import build_dataclass

# The ArUco dictionaries a tool may use, with the number of markers each holds.
DICTIONARIES = {
    "DICT_4X4_50": 50,
    "DICT_4X4_100": 100,
    "DICT_4X4_250": 250,
    "DICT_5X5_50": 50,
    "DICT_5X5_100": 100,
    "DICT_6X6_50": 50,
}
MAX_MARKERS = 32
MARKER_SIZE_MM = (5.0, 200.0)
SQUARE_TOLERANCE_MM = 0.2  # sides and diagonals of a marker agree within this
MAX_TIP_MM = 500.0
# A tool's name goes on the HUD, the wire and file names: a safe, short word.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_TIP_SOURCE_CHARS = 300


@dataclass(frozen=True)
class _MarkerFile:
    id: int
    corners_mm: tuple[
        tuple[float, float, float],
        tuple[float, float, float],
        tuple[float, float, float],
        tuple[float, float, float],
    ]


@dataclass(frozen=True)
class _ToolFile:
    name: str
    dictionary: str
    axis: tuple[float, float, float]
    tip_mm: tuple[float, float, float]
    markers: tuple[_MarkerFile, ...]
    tip_rms_mm: float = 0.0
    tip_source: str = "design"


@dataclass(frozen=True)
class Marker:
    """One square marker of a tool: its dictionary id and corners (4, 3) in the tool frame, m."""

    id: int
    corners_m: np.ndarray

    @cached_property
    def size_m(self) -> float:
        return float(np.linalg.norm(self.corners_m[1] - self.corners_m[0]))

    @cached_property
    def normal(self) -> np.ndarray:
        """Outward unit normal (the side the marker is seen from), tool frame."""
        c = self.corners_m
        n = -np.cross(c[1] - c[0], c[3] - c[0])
        return np.asarray(n / np.linalg.norm(n))

    @cached_property
    def centre_m(self) -> np.ndarray:
        return np.asarray(self.corners_m.mean(axis=0))

    @cached_property
    def tool_to_marker(self) -> np.ndarray:
        """4x4 from the tool frame to the marker's own (OpenCV's square: centre, x right,
        y up, z out of the printed face), as the marker's IPPE poses are given."""
        c = self.corners_m
        x = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
        y = (c[0] - c[3]) / np.linalg.norm(c[0] - c[3])
        marker_to_tool = np.eye(4)
        marker_to_tool[:3, :3] = np.column_stack([x, y, np.cross(x, y)])
        marker_to_tool[:3, 3] = c.mean(axis=0)
        return np.asarray(np.linalg.inv(marker_to_tool))


@dataclass(frozen=True)
class ToolSpec:
    """A rigid tool: its markers, tip and axis in the tool frame (metres, unit vector)."""

    name: str
    dictionary: str
    markers: tuple[Marker, ...]
    tip_m: np.ndarray
    axis: np.ndarray
    tip_rms_mm: float = 0.0
    tip_source: str = "design"
    path: str = ""

    @cached_property
    def all_corners_m(self) -> np.ndarray:
        """Every marker's corners, (4 x markers, 3), tool frame, in the file's order."""
        return np.concatenate([m.corners_m for m in self.markers])

    @property
    def marker_ids(self) -> list[int]:
        return [m.id for m in self.markers]

    def marker(self, marker_id: int) -> Marker:
        for m in self.markers:
            if m.id == marker_id:
                return m
        raise KeyError(marker_id)

    def to_toml(self) -> str:
        """The definition file's text (what :func:`load_tool` reads back)."""

        def vec(v: np.ndarray) -> str:
            return "[" + ", ".join(f"{float(x):.4f}" for x in v) + "]"

        lines = [
            f"name = {_toml_string(self.name)}",
            f"dictionary = {_toml_string(self.dictionary)}",
            f"axis = {vec(self.axis)}",
            f"tip_mm = {vec(self.tip_m * 1000.0)}",
            f"tip_rms_mm = {self.tip_rms_mm:.4f}",
            f"tip_source = {_toml_string(self.tip_source)}",
        ]
        for m in self.markers:
            corners = ", ".join(vec(c * 1000.0) for c in m.corners_m)
            lines += ["", "[[markers]]", f"id = {m.id}", f"corners_mm = [{corners}]"]
        return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's: quotes, backslashes, controls)."""
    return json.dumps(text, ensure_ascii=True)


def aruco_dictionary(name: str) -> Any:
    """The OpenCV dictionary object of that name (one of :data:`DICTIONARIES`)."""
    import cv2

    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


def known_tools(tools_dir: str | Path) -> list[str]:
    d = Path(tools_dir)
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def tool_path(name_or_path: str, tools_dir: str | Path) -> Path:
    """``NAME`` -> ``tools_dir/NAME.toml``; a path ending in .toml is used as it is."""
    p = Path(name_or_path)
    return p if p.suffix == ".toml" else Path(tools_dir) / f"{name_or_path}.toml"


def load_tool(name_or_path: str, tools_dir: str | Path = "hardware/tools") -> ToolSpec:
    """Load and validate a tool definition; raises ToolError naming the file and the fix."""
    path = tool_path(name_or_path, tools_dir)
    try:
        data = read_toml(path)
    except FileNotFoundError:
        known = ", ".join(known_tools(tools_dir)) or "none"
        raise ToolError(
            f"tool {name_or_path!r} not found ({path} does not exist)",
            f"tools in {tools_dir}: {known}",
        ) from None
    except (OSError, ValueError) as exc:
        raise ToolError(
            f"cannot read tool file {path}: {exc}", f"fix the tool file {path}"
        ) from None
    return _parsed(data, str(path))


def _parsed(data: dict[str, Any], where: str) -> ToolSpec:
    try:
        raw = build_dataclass(_ToolFile, data, "", where, None, {})
    except ConfigError as exc:
        raise ToolError(exc.problem, f"fix the value in the tool file {where}") from None
    return _validated(raw, where)


def _validated(raw: _ToolFile, where: str) -> ToolSpec:
    def bad(problem: str, fix: str) -> ToolError:
        return ToolError(f"{where}: {problem}", fix)

    if not NAME_PATTERN.fullmatch(raw.name):
        raise bad(
            f"name {raw.name!r:.40} is not a tool name",
            "use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    if len(raw.tip_source) > MAX_TIP_SOURCE_CHARS or not raw.tip_source.isprintable():
        raise bad(
            "tip_source is not one line of printable text",
            f"give at most {MAX_TIP_SOURCE_CHARS} printable characters",
        )
    if raw.dictionary not in DICTIONARIES:
        raise bad(
            f"unknown marker dictionary {raw.dictionary!r}", "use one of " + ", ".join(DICTIONARIES)
        )
    if not 1 <= len(raw.markers) <= MAX_MARKERS:
        raise bad(f"{len(raw.markers)} markers", f"a tool has 1 to {MAX_MARKERS} [[markers]]")
    ids = [m.id for m in raw.markers]
    if len(set(ids)) != len(ids):
        raise bad("a marker id is listed twice", "give every marker its own id")
    size = DICTIONARIES[raw.dictionary]
    markers = []
    for m in raw.markers:
        if not 0 <= m.id < size:
            raise bad(f"marker id {m.id} is not in {raw.dictionary}", f"use ids 0..{size - 1}")
        c = np.asarray(m.corners_mm, dtype=np.float64)
        if not np.isfinite(c).all():
            raise bad(f"marker {m.id} has a corner that is not a number", "fix corners_mm")
        sides = np.linalg.norm(c - np.roll(c, -1, axis=0), axis=1)
        diagonals = np.linalg.norm(c[:2] - c[2:], axis=1)
        side = float(sides.mean())
        if not MARKER_SIZE_MM[0] <= side <= MARKER_SIZE_MM[1]:
            raise bad(
                f"marker {m.id} is {side:.1f} mm wide",
                f"markers are {MARKER_SIZE_MM[0]:g} to {MARKER_SIZE_MM[1]:g} mm",
            )
        if (
            np.ptp(sides) > SQUARE_TOLERANCE_MM
            or abs(diagonals[0] - diagonals[1]) > SQUARE_TOLERANCE_MM
            or abs(diagonals[0] - side * math.sqrt(2.0)) > SQUARE_TOLERANCE_MM
        ):
            raise bad(
                f"marker {m.id}'s corners are not a square",
                "list its four corners in order (top-left, top-right, bottom-right, bottom-left)",
            )
        markers.append(Marker(m.id, c / 1000.0))
    axis = np.asarray(raw.axis, dtype=np.float64)
    if not np.isfinite(axis).all() or np.linalg.norm(axis) < 1e-6:
        raise bad("axis is zero", "give the direction from the tool's body to its tip")
    tip = np.asarray(raw.tip_mm, dtype=np.float64)
    if not np.isfinite(tip).all() or np.linalg.norm(tip) > MAX_TIP_MM:
        raise bad(f"tip_mm is more than {MAX_TIP_MM:g} mm from the tool's origin", "fix tip_mm")
    if not (math.isfinite(raw.tip_rms_mm) and raw.tip_rms_mm >= 0):
        raise bad("tip_rms_mm must be a number >= 0", "fix tip_rms_mm")
    return ToolSpec(
        name=raw.name,
        dictionary=raw.dictionary,
        markers=tuple(markers),
        tip_m=tip / 1000.0,
        axis=axis / np.linalg.norm(axis),
        tip_rms_mm=float(raw.tip_rms_mm),
        tip_source=raw.tip_source,
        path=where,
    )


def write_tip(path: str | Path, tip_m: np.ndarray, rms_mm: float, source: str) -> ToolSpec:
    """Rewrite a tool file with a calibrated tip (metres) and its RMS; returns the new spec."""
    import dataclasses

    spec = load_tool(str(path))
    new = dataclasses.replace(
        spec, tip_m=np.asarray(tip_m, np.float64), tip_rms_mm=float(rms_mm), tip_source=source
    )
    # The file's opening comments (what the tool is, its frame) are kept.
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    head = "".join(
        f"{line}\n"
        for line in lines[
            : next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        ]
    )
    text = head + new.to_toml()
    # What is written must read back as the same tool: checked before the file is replaced.
    try:
        _parsed(parse_toml(text), str(path))
    except (ValueError, ToolError) as exc:
        raise ToolError(
            f"the calibrated tool file for {path} would not read back ({exc})",
            "the file was left as it was; fix its values and calibrate again",
        ) from None
    write_atomic(path, text)
    return load_tool(str(path))


def load_tools(names: tuple[str, ...], tools_dir: str | Path) -> tuple[ToolSpec, ...]:
    """Several tools, each file once; their names differ and their markers must not share
    a (dictionary, id)."""
    specs = tuple(load_tool(n, tools_dir) for n in names)
    files: dict[str, ToolSpec] = {}
    by_name: dict[str, ToolSpec] = {}
    for s in specs:
        key = str(Path(s.path).resolve())
        if key in files:
            raise ToolError(f"tool file {s.path} is listed twice", "list each tool once")
        files[key] = s
        other = by_name.setdefault(s.name, s)
        if other is not s:
            raise ToolError(
                f"tool files {other.path} and {s.path} both name a tool {s.name!r}",
                f"give each tool its own name (in the tool file {s.path})",
            )
    seen: dict[tuple[str, int], ToolSpec] = {}
    for s in specs:
        for i in s.marker_ids:
            other = seen.setdefault((s.dictionary, i), s)
            if other is not s:
                raise ToolError(
                    f"tools {other.name} ({other.path}) and {s.name} ({s.path}) both use "
                    f"marker {i} of {s.dictionary}",
                    f"give every tool its own marker ids (in the tool file {s.path})",
                )
    return specs
