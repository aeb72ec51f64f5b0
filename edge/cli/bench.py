"""``edge bench``: speed, memory and accuracy of the whole pipeline on a phantom recording."""

from __future__ import annotations

import argparse

from edge.cli.options import add_config, add_json, add_seed, add_threads, config_from
from edge.cli.output import print_json
from edge.errors import EdgeError


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure the pipeline on a generated phantom recording",
        description="Renders a phantom session, replays it deterministically through the whole "
        "pipeline and reports speed, memory and accuracy against ground truth "
        "(keys in docs/benchmark.md).",
    )
    add_config(bench)
    bench.add_argument(
        "--scenario",
        help="phantom scenario (default nod-shake; with --calibrate-tre: only this one)",
    )
    bench.add_argument("--frames", type=int, default=300, help="frames (default 300)")
    add_seed(bench)
    add_threads(bench)
    bench.add_argument(
        "--skin-triangles",
        type=int,
        default=0,
        metavar="N",
        help="split the phantom plan's skin (same surface) until it has at least N triangles"
        " (e.g. 284000: four times the phantom's)",
    )
    bench.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="replay the recording in a loop for SECONDS and report memory growth and failures",
    )
    bench.add_argument(
        "--no-compare",
        action="store_true",
        help="skip the replays on one core and on both and the publishing to 1 and 8 headsets"
        " (their keys are left out): the accuracy, tool and stage figures, sooner",
    )
    bench.add_argument(
        "--calibrate-tre",
        action="store_true",
        help="run the calibration scenarios and propose registration.tre_confidence_factor",
    )
    add_json(bench, "the report")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import (
        CALIBRATION_SCENARIOS,
        calibrate_tre,
        format_calibration,
        format_report,
        format_soak,
        run_bench,
        run_soak,
    )
    from edge.logs import configure_logging

    config = config_from(args)
    configure_logging("text", "debug" if args.verbose else "warning")
    if args.calibrate_tre:
        scenarios = (args.scenario,) if args.scenario else CALIBRATION_SCENARIOS
        calibration = calibrate_tre(config, scenarios, args.frames, args.seed, args.threads)
        if args.json:
            print_json(calibration)
        else:
            print(format_calibration(calibration))
        return 0
    scenario = args.scenario or "nod-shake"
    if args.soak is not None:
        soak = run_soak(config, args.soak, scenario, args.frames, args.seed, args.threads)
        if args.json:
            print_json(soak)
        else:
            print(format_soak(soak))
        return 0
    if args.skin_triangles < 0:
        raise EdgeError(
            f"--skin-triangles must be 0 or more, got {args.skin_triangles}",
            "pass --skin-triangles N with N >= 0",
        )
    report = run_bench(
        config,
        scenario,
        args.frames,
        args.seed,
        args.threads,
        compare=not args.no_compare,
        skin_triangles=args.skin_triangles,
    )
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 0
