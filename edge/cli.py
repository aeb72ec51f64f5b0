"""The ``edge`` command: parse, call, report.

Each area of the package contributes its own subcommands through a small
``register(subparsers)`` function in its ``commands`` module; this file only
lists those modules and turns expected failures into one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from edge import __version__
from edge.errors import EdgeError

# Modules that add subcommands, in the order `edge --help` lists them.
COMMAND_MODULES = (
    "edge.commands",  # run, bench
    "edge.config_commands",  # config check|show
    "edge.sources.commands",  # record, info
    "edge.sources.phantom.commands",  # phantom
    "edge.models.commands",  # models fetch|verify
    "edge.tracking.commands",  # track
    "edge.plan.commands",  # plan keygen|sign|verify
    "edge.transport.commands",  # view, keys
    "edge.calibration.commands",  # calibrate ...
    "edge.audit_commands",  # audit verify
    "edge.protect_commands",  # recordings keygen|seal|open|prune
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Edge process of the AR heads-up surgical assistant. "
        "With no subcommand, `edge run` is meant: see `edge run --help`.",
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # an area that has no commands yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        # `edge [-v]` means `edge [-v] run`: the options given stay before the subcommand.
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "run"])
    try:
        return int(args.func(args) or 0)
    except EdgeError as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`edge info X | head`): not an error of ours.
        # Point stdout at /dev/null so that the interpreter's final flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
