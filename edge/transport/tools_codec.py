"""The ``tools`` topic's checks on receipt (docs/protocol.md), beside the protocol codec.

A tool entry is a map with a name, a known state and ``current`` true exactly in the
current states; every array has one row per tool; a current tool's rows are finite (its
pose rigid, its axis a unit vector) and a tool that is not current has NaN rows;
navigation is current only for a current tool, says what is missing otherwise, and
carries its figures (each a number or nil) only when current. Every list and string has
a bounded size, so that a client can draw whatever this lets through.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import DecodeError

TOOL_STATES = ("VISIBLE", "PARTIAL", "OCCLUDED", "LOST")
CURRENT_TOOL_STATES = ("VISIBLE", "PARTIAL")
MISSING_INPUTS = ("registration", "tool")
MAX_TOOLS = 16
MAX_ITEMS = 64  # targets, trajectories, markers of one tool
MAX_NAME_CHARS = 128
MAX_REASON_CHARS = 200
TOOL_ARRAYS = {
    "tools_to_camera": (4, 4),
    "tips_camera_m": (3,),
    "axes_camera": (3,),
    "tips_px": (2,),
    "extensions_px": (2, 2),
}
TRAJECTORY_FIGURES = (
    "lateral_offset_mm",
    "angle_deg",
    "remaining_depth_mm",
    "distance_to_target_mm",
)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _name(x: Any, where: str) -> None:
    if not isinstance(x, str) or len(x) > MAX_NAME_CHARS:
        raise DecodeError(f"{where}: 'name' must be a string of at most {MAX_NAME_CHARS} chars")


def _number_or_nil(m: dict[str, Any], key: str, where: str) -> None:
    if key not in m or not (m[key] is None or _is_number(m[key])):
        raise DecodeError(f"{where}: '{key}' must be a number or nil")


def _map(x: Any, where: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise DecodeError(f"{where} must be a map")
    return x


def _list(x: Any, where: str, limit: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(x, list) or len(x) > limit:
        raise DecodeError(f"{where} must be a list of at most {limit} entries")
    return x


def _check_navigation(nav: Any, tool_current: bool, where: str) -> None:
    nav = _map(nav, f"{where} navigation")
    current = nav.get("current")
    if not isinstance(current, bool):
        raise DecodeError(f"{where} needs a navigation map with 'current'")
    if current and not tool_current:
        raise DecodeError(f"{where}: navigation current for a tool not seen now")
    missing = _list(nav.get("missing"), f"{where} navigation 'missing'", len(MISSING_INPUTS))
    if any(m not in MISSING_INPUTS for m in missing) or len(set(missing)) != len(missing):
        raise DecodeError(f"{where} navigation 'missing' lists only {MISSING_INPUTS}")
    if current == bool(missing):
        raise DecodeError(f"{where}: navigation is current exactly when nothing is missing")
    figures = {"targets", "trajectories", "structure"}
    if not current:
        if figures & set(nav):
            raise DecodeError(f"{where}: navigation that is not current carries no figures")
        return
    for i, t in enumerate(_list(nav.get("targets"), f"{where} navigation 'targets'")):
        t = _map(t, f"{where} target {i}")
        _name(t.get("name"), f"{where} target {i}")
        _number_or_nil(t, "distance_mm", f"{where} target {i}")
    for i, t in enumerate(_list(nav.get("trajectories"), f"{where} navigation 'trajectories'")):
        t = _map(t, f"{where} trajectory {i}")
        _name(t.get("name"), f"{where} trajectory {i}")
        for key in TRAJECTORY_FIGURES:
            _number_or_nil(t, key, f"{where} trajectory {i}")
    s = _map(nav.get("structure"), f"{where} navigation 'structure'")
    _name(s.get("name"), f"{where} structure")
    _number_or_nil(s, "distance_mm", f"{where} structure")
    for key in ("inside", "warning"):
        if not isinstance(s.get(key), bool):
            raise DecodeError(f"{where} structure: '{key}' must be true or false")


def _check_entry(t: Any, i: int) -> None:
    where = f"tools entry {i}"
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise DecodeError(f"{where} must be a map with a name")
    _name(t["name"], where)
    _check_state(t, where)
    q = t.get("quality")
    if not (isinstance(q, int | float) and not isinstance(q, bool) and 0.0 <= q <= 1.0):
        raise DecodeError(f"{where}: 'quality' must be a number from 0 to 1")
    used = _list(t.get("markers_used"), f"{where} 'markers_used'")
    for key in ("markers_total", "frames_unseen"):
        v = t.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise DecodeError(f"{where}: '{key}' must be an integer >= 0")
    if any(not isinstance(m, int) or isinstance(m, bool) for m in used):
        raise DecodeError(f"{where}: 'markers_used' must list marker ids")
    _number_or_nil(t, "reprojection_rms_px", where)
    _number_or_nil(t, "tip_rms_mm", where)
    _check_navigation(t.get("navigation"), t["current"], where)


def check_hud_tools(tools: list[Any]) -> None:
    """The ``hud`` topic's ``tools``: per tool its name, state, current, reason and the
    same navigation map as the ``tools`` topic."""
    if len(tools) > MAX_TOOLS:
        raise DecodeError(f"hud lists {len(tools)} tools, at most {MAX_TOOLS}")
    for i, t in enumerate(tools):
        where = f"hud tool {i}"
        if not isinstance(t, dict):
            raise DecodeError(f"{where} must be a map")
        _name(t.get("name"), where)
        _check_state(t, where)
        _check_navigation(t.get("navigation"), t["current"], where)


def _check_state(t: dict[str, Any], where: str) -> None:
    if t.get("state") not in TOOL_STATES:
        raise DecodeError(f"{where} state {t.get('state')!r:.30} is not a tool state")
    if t.get("current") is not (t["state"] in CURRENT_TOOL_STATES):
        raise DecodeError(f"{where}: 'current' must say whether it was seen now")
    reason = t.get("reason")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise DecodeError(f"{where}: 'reason' must be a string of at most {MAX_REASON_CHARS}")


def check_tools(payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    tools = payload["tools"]
    if len(tools) > MAX_TOOLS:
        raise DecodeError(f"tools lists {len(tools)} tools, at most {MAX_TOOLS}")
    for i, t in enumerate(tools):
        _check_entry(t, i)
    for name, tail in TOOL_ARRAYS.items():
        a = arrays.get(name)
        if a is None or a.dtype.kind != "f" or a.shape != (len(tools), *tail):
            raise DecodeError(f"tools array '{name}' must be float of shape {(len(tools), *tail)}")
    for i, t in enumerate(tools):
        pose, tip, axis = (
            arrays[n][i] for n in ("tools_to_camera", "tips_camera_m", "axes_camera")
        )
        finite = all(np.isfinite(r).all() for r in (pose, tip, axis))
        if t["current"] != finite:
            raise DecodeError(
                f"tools entry {i}: a current tool has a finite pose, tip and axis, "
                "any other NaN rows"
            )
        pixels = np.concatenate([arrays["tips_px"][i], arrays["extensions_px"][i].ravel()])
        if np.isinf(pixels).any() or (not t["current"] and not np.isnan(pixels).all()):
            raise DecodeError(f"tools entry {i}: pixels are finite or NaN, NaN when not current")
        if not finite:
            continue
        rigid = np.allclose(pose[3], [0, 0, 0, 1]) and np.allclose(
            pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6
        )
        if not rigid or abs(float(np.linalg.norm(axis)) - 1.0) > 1e-6:
            raise DecodeError(f"tools entry {i}: the pose must be rigid and the axis a unit vector")
