"""The ``edge`` command: parse, call, report.

Each command group is one module here with a ``register(subparsers)``
function; :data:`COMMAND_MODULES` lists them. Options that several commands
share are defined once in :mod:`edge.cli.options`. Expected failures
(:class:`~edge.errors.EdgeError`) become one line on stderr and their exit
code; Ctrl-C exits 130, a closed output pipe 141, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from edge import __version__
from edge.cli import (
    audit,
    bench,
    calibrate,
    config,
    keys,
    models,
    phantom,
    plan,
    record,
    recordings,
    run,
    tools,
    track,
    view,
)
from edge.errors import EdgeError

# The command groups, in the order `edge --help` lists them.
COMMAND_MODULES = (
    run,  # run
    bench,  # bench
    config,  # config check|show
    record,  # record, info
    phantom,  # phantom
    models,  # models fetch|verify|bench
    track,  # track
    plan,  # plan keygen|sign|verify
    view,  # view
    keys,  # keys generate
    calibrate,  # calibrate board|intrinsics|depth-check|handeye|spaam|pivot|find
    tools,  # tools print|list
    audit,  # audit verify|keygen
    recordings,  # recordings keygen|seal|open|prune
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
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


# The frame loop is one thread; the second core belongs to playback, the transport and
# the video encoder. OpenBLAS's own threads spun on it for a few microseconds of work
# per call (issue 15: 42-47 ms of CPU per frame in the skin ray cast on a 284k-triangle
# skin, 5 ms with one thread). Read by OpenBLAS when numpy is first imported, which no
# module above does; an operator's own setting wins.
BLAS_THREADS = "1"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)
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
        # One line, even when a library's message (SQLite, librealsense) has several.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        print("edge: error: " + " / ".join(lines), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`edge info X | head`): not an error of ours.
        # Point stdout at /dev/null so that the interpreter's final flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
