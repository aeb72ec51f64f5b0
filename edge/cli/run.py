"""``edge run``: the main job (also what ``edge`` with no command means)."""

from __future__ import annotations

import argparse
import sys

from edge.cli.options import (
    add_config,
    add_json,
    add_plan_pubkey,
    add_quiet,
    add_seed,
    add_source,
    config_from,
)
from edge.cli.output import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the edge process (default: the phantom demo, which ends by itself)",
        description="Capture -> track -> register -> overlay -> stream. With no options it runs "
        "the embedded default: the phantom head (nod-shake, 300 frames) with its signed plan, "
        "streamed on loopback, and prints a summary.",
    )
    add_config(run)
    add_source(run, default="the configured source, else phantom:nod-shake")
    run.add_argument("--frames", type=int, help="stop after N frames (default 300 for the demo)")
    run.add_argument("--plan", help="plan folder (holds plan.json)")
    add_plan_pubkey(run)
    run.add_argument(
        "--allow-unsigned-plan",
        action="store_true",
        help="explicit, logged override: load a plan whose signature is missing or wrong",
    )
    run.add_argument("--publish", help="ZeroMQ PUB endpoint (default from the configuration)")
    run.add_argument("--service", help="ZeroMQ ROUTER endpoint for plan assets and commands")
    run.add_argument("--no-publish", action="store_true", help="do not stream")
    run.add_argument("--preview", help="write what the pipeline saw: FILE.mp4 or FILE.png")
    add_seed(run)
    add_json(run, "the summary")
    add_quiet(run)
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import RunOptions, execute
    from edge.evaluation import format_summary
    from edge.frames import require_frames
    from edge.logs import configure_logging

    config = config_from(args)
    configure_logging(
        config.service.log_format, "debug" if args.verbose else config.service.log_level
    )
    if args.frames is not None:
        require_frames(args.frames)
    options = RunOptions(
        config=config,
        source=args.source,
        frames=args.frames,
        plan=args.plan,
        pubkey=args.pubkey,
        allow_unsigned_plan=args.allow_unsigned_plan,
        publish="off" if args.no_publish else args.publish,
        service=args.service,
        preview=args.preview,
        seed=args.seed,
        status_stream=None if args.quiet else sys.stderr,
    )
    report = execute(options)
    if args.json:
        print_json(report.summary)
    else:
        print(format_summary(report.summary))
    if report.plan_problem:
        print(f"edge: error: plan refused: {report.plan_problem}", file=sys.stderr)
        return 2
    return 0
