"""The effective configuration as `edge config show` prints it: TOML or JSON, with each
value's origin (the file that set it, or the default)."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

from edge.config import EdgeConfig


def toml_value(value: Any) -> str:
    """One value as TOML (the subset the loader accepts)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def effective_toml(cfg: EdgeConfig, origins: dict[str, str]) -> str:
    """The configuration as TOML, each leaf followed by ``# origin``; parses back to ``cfg``."""
    lines: list[str] = []

    def section(obj: Any, prefix: str) -> None:
        leaves: list[tuple[str, Any]] = []
        nested: list[tuple[str, Any]] = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            (nested if dataclasses.is_dataclass(value) else leaves).append((f.name, value))
        if prefix and leaves:
            lines.extend(["", f"[{prefix}]"])
        for name, value in leaves:
            full = f"{prefix}.{name}" if prefix else name
            lines.append(f"{name} = {toml_value(value)}  # {origins.get(full, 'default')}")
        for name, value in nested:
            section(value, f"{prefix}.{name}" if prefix else name)

    section(cfg, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def effective_values(cfg: EdgeConfig, origins: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``{"section.key": {"value": ..., "origin": ...}}`` for every key, sorted by key."""
    doc = {}
    for key, origin in sorted(origins.items()):
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        doc[key] = {"value": _plain(obj), "origin": origin}
    return doc
