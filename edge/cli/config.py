"""``edge config check FILE`` and ``edge config show``: validate and explain the configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.cli.options import add_config, add_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="check a configuration file; show the effective one"
    )
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check",
        help="validate a configuration file as `edge run` would: ranges, endpoints and their "
        "security, key files and their modes (exit 0 valid, 2 with the problem on one line)",
    )
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)

    show = sub.add_parser(
        "show",
        help="print the effective configuration as TOML, each value with where it came from",
        description="Without --config the default search path is used: $EDGE_CONFIG, "
        "./edge.toml, /etc/edge/edge.toml (first found), else the built-in defaults.",
    )
    add_config(show)
    add_json(show, "{key: {value, origin}}")
    show.set_defaults(func=_show)


def _check(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.validate import validate_deployment

    cfg, origins = load_config(args.file)
    # The checks `edge run` makes before it starts (edge.app.execute): key files with
    # relative paths are looked up from the working folder, as the service does.
    validate_deployment(cfg, demo_keys=cfg.source.kind == "phantom")
    from_file = sum(1 for o in origins.values() if o != "default")
    print(
        f"{args.file}: valid ({from_file} key(s) set in the file, "
        f"{len(origins) - from_file} from defaults)"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from edge.config import find_config_file, load_config
    from edge.config_show import effective_toml, effective_values

    chosen = args.config if args.config is not None else find_config_file()
    cfg, origins = load_config(chosen)
    if args.json:
        print(json.dumps(effective_values(cfg, origins), indent=2))
        return 0
    print(f"# effective configuration; file: {chosen if chosen is not None else 'none (defaults)'}")
    print(effective_toml(cfg, origins), end="")
    return 0
