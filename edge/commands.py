"""`edge run` (the main job) and `edge bench`: parse, call, report."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def _config(args: argparse.Namespace) -> Any:
    from edge.config import load_config

    return load_config(args.config)[0]


def _json_safe(obj: Any) -> Any:
    """NaN and infinity are not JSON: report them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import RunOptions, execute
    from edge.evaluation import format_summary
    from edge.frames import require_frames
    from edge.logs import configure_logging

    config = _config(args)
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
        print(json.dumps(_json_safe(report.summary), indent=2))
    else:
        print(format_summary(report.summary))
    if report.plan_problem:
        print(f"edge: error: plan refused: {report.plan_problem}", file=sys.stderr)
        return 2
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import format_report, run_bench
    from edge.logs import configure_logging

    config = _config(args)
    configure_logging("text", "debug" if args.verbose else "warning")
    if args.soak is not None:
        from edge.bench import format_soak, run_soak

        soak = run_soak(config, args.soak, args.scenario, args.frames, args.seed, args.threads)
        print(json.dumps(_json_safe(soak), indent=2) if args.json else format_soak(soak))
        return 0
    report = run_bench(config, args.scenario, args.frames, args.seed, args.threads)
    print(json.dumps(_json_safe(report), indent=2) if args.json else format_report(report))
    return 0


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the edge process (default: the phantom demo, which ends by itself)",
        description="Capture -> track -> register -> overlay -> stream. With no options it runs "
        "the embedded default: the phantom head (nod-shake, 300 frames) with its signed plan, "
        "streamed on loopback, and prints a summary.",
    )
    run.add_argument("--config", help="configuration file (TOML; default search path in docs)")
    run.add_argument(
        "--source",
        help="realsense[:SERIAL], FILE.db3, phantom[:SCENARIO] or synthetic "
        "(default: the configured source, else phantom:nod-shake)",
    )
    run.add_argument("--frames", type=int, help="stop after N frames (default 300 for the demo)")
    run.add_argument("--plan", help="plan folder (holds plan.json)")
    run.add_argument("--pubkey", help="public key of the plan's signer (edge plan keygen)")
    run.add_argument(
        "--allow-unsigned-plan",
        action="store_true",
        help="explicit, logged override: load a plan whose signature is missing or wrong",
    )
    run.add_argument("--publish", help="ZeroMQ PUB endpoint (default from the configuration)")
    run.add_argument("--service", help="ZeroMQ ROUTER endpoint for plan assets and commands")
    run.add_argument("--no-publish", action="store_true", help="do not stream")
    run.add_argument("--preview", help="write what the pipeline saw: FILE.mp4 or FILE.png")
    run.add_argument("--seed", type=int, default=0, help="seed of a synthetic source")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("-q", "--quiet", action="store_true", help="no live status line")
    run.set_defaults(func=cmd_run)

    bench = subparsers.add_parser(
        "bench",
        help="measure the pipeline on a generated phantom recording",
        description="Renders a phantom session, replays it deterministically through the whole "
        "pipeline and reports speed, memory and accuracy against ground truth "
        "(keys in docs/benchmark.md).",
    )
    bench.add_argument("--config", help="configuration file (TOML)")
    bench.add_argument(
        "--scenario", default="nod-shake", help="phantom scenario (default nod-shake)"
    )
    bench.add_argument("--frames", type=int, default=300, help="frames (default 300)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    bench.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="replay the recording in a loop for SECONDS and report memory growth and failures",
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(func=cmd_bench)
