"""The ``tools`` topic's checks on receipt (docs/protocol.md), beside the protocol codec.

A tool entry is a map with a name, a known state and ``current`` true exactly in the
current states; every array has one row per tool; a current tool's rows are finite and
a tool that is not current has NaN rows; navigation is current only for a current tool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import DecodeError

TOOL_STATES = ("VISIBLE", "PARTIAL", "OCCLUDED", "LOST")
CURRENT_TOOL_STATES = ("VISIBLE", "PARTIAL")
MAX_TOOLS = 16
TOOL_ARRAYS = {
    "tools_to_camera": (4, 4),
    "tips_camera_m": (3,),
    "axes_camera": (3,),
    "tips_px": (2,),
    "extensions_px": (2, 2),
}


def check_tools(payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    tools = payload["tools"]
    if len(tools) > MAX_TOOLS:
        raise DecodeError(f"tools lists {len(tools)} tools, at most {MAX_TOOLS}")
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise DecodeError(f"tools entry {i} must be a map with a name")
        if t.get("state") not in TOOL_STATES:
            raise DecodeError(f"tools entry {i} state {t.get('state')!r:.30} is not a tool state")
        if t.get("current") is not (t["state"] in CURRENT_TOOL_STATES):
            raise DecodeError(f"tools entry {i}: 'current' must say whether it was seen now")
        nav = t.get("navigation")
        if not isinstance(nav, dict) or not isinstance(nav.get("current"), bool):
            raise DecodeError(f"tools entry {i} needs a navigation map with 'current'")
        if nav["current"] and not t["current"]:
            raise DecodeError(f"tools entry {i}: navigation current for a tool not seen now")
    for name, tail in TOOL_ARRAYS.items():
        a = arrays.get(name)
        if a is None or a.dtype.kind != "f" or a.shape != (len(tools), *tail):
            raise DecodeError(f"tools array '{name}' must be float of shape {(len(tools), *tail)}")
    for i, t in enumerate(tools):
        rows = [arrays[name][i] for name in ("tools_to_camera", "tips_camera_m", "axes_camera")]
        finite = all(np.isfinite(r).all() for r in rows)
        if t["current"] != finite:
            raise DecodeError(
                f"tools entry {i}: a current tool has a finite pose, tip and axis, "
                "any other NaN rows"
            )
