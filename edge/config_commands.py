"""`edge config check FILE` and `edge config show`: validate and explain the configuration."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="check a configuration file; show the effective one"
    )
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check",
        help="validate a configuration file (exit 0 valid, 2 with the key and file named)",
    )
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)

    show = sub.add_parser(
        "show",
        help="print the effective configuration as TOML, each value with where it came from",
        description="Without --config the default search path is used: $EDGE_CONFIG, "
        "./edge.toml, /etc/edge/edge.toml (first found), else the built-in defaults.",
    )
    show.add_argument("--config", type=Path, help="configuration file (default: search path)")
    show.add_argument("--json", action="store_true", help="JSON {key: {value, origin}} instead")
    show.set_defaults(func=_show)


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


def effective_toml(cfg: Any, origins: dict[str, str]) -> str:
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


def _check(args: argparse.Namespace) -> int:
    from edge.config import load_config

    _, origins = load_config(args.file)
    from_file = sum(1 for o in origins.values() if o != "default")
    print(
        f"{args.file}: valid ({from_file} key(s) set in the file, "
        f"{len(origins) - from_file} from defaults)"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from edge.config import find_config_file, load_config

    chosen = args.config if args.config is not None else find_config_file()
    cfg, origins = load_config(chosen)
    if args.json:
        doc = {}
        for key, origin in sorted(origins.items()):
            obj: Any = cfg
            for part in key.split("."):
                obj = getattr(obj, part)
            doc[key] = {"value": _plain(obj), "origin": origin}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"# effective configuration; file: {chosen if chosen is not None else 'none (defaults)'}")
    print(effective_toml(cfg, origins), end="")
    return 0
