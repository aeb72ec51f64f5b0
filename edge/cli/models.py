"""``edge models fetch|verify|bench``: build, check and time the ONNX face models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge.cli.options import add_config, add_json, add_quiet, config_from

if TYPE_CHECKING:
    from edge.models.manifest import Manifest


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="build and verify the ONNX face models",
        description="Build the ONNX face models from the pinned MediaPipe wheel and verify them "
        "against models/manifest.toml.",
    )
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    fetch = sub.add_parser(
        "fetch",
        help="download the pinned wheel, convert and check the models (idempotent)",
        description="Download the pinned mediapipe wheel with pip (the only network access), "
        "check its SHA-256, extract the two .tflite models, convert them to ONNX and check "
        "every SHA-256 against the manifest. Does nothing when all models match.",
    )
    _common(fetch)
    add_quiet(fetch)
    fetch.add_argument("--force", action="store_true", help="rebuild even when the files match")
    _cache(fetch)
    fetch.add_argument("--wheel", help="use this downloaded copy of the pinned wheel (offline)")
    fetch.set_defaults(func=cmd_fetch)

    verify = sub.add_parser(
        "verify",
        help="check every model file against the manifest (exit 2 on any mismatch)",
    )
    _common(verify)
    verify.set_defaults(func=cmd_verify)

    bench = sub.add_parser(
        "bench",
        help="time the models on ONNX Runtime next to LiteRT (same source weights)",
        description="Median and p99 milliseconds per inference for each model on ONNX Runtime "
        "and on LiteRT with XNNPACK (the source .tflite from the pinned wheel), with 1 and 2 "
        "threads. Needs the test extra ai-edge-litert.",
    )
    _common(bench)
    bench.add_argument("--runs", type=int, default=300, help="timed runs per case (default 300)")
    add_json(bench, "the timings")
    _cache(bench)
    bench.set_defaults(func=cmd_bench)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir", help="models folder (default: tracking.models_dir from the configuration)"
    )
    p.add_argument(
        "--manifest", help="manifest file (default: the package's, models/manifest.toml)"
    )
    add_config(p)


def _cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="where the wheel is kept (default: <dir>/../cache)")


def _models_dir(args: argparse.Namespace) -> Path:
    """--dir, else the configuration's tracking.models_dir (where `edge run` looks)."""
    if args.dir:
        return Path(args.dir)
    return Path(config_from(args).tracking.models_dir)


def _manifest(args: argparse.Namespace) -> Manifest:
    from edge.models.manifest import load_manifest

    return load_manifest(args.manifest)


def _progress(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            print(f"models: {msg}", file=sys.stderr, flush=True)

    return say


def cmd_fetch(args: argparse.Namespace) -> int:
    from edge.models.fetch import fetch_models

    models_dir = _models_dir(args)
    manifest = _manifest(args)
    say = _progress(args.quiet)
    built = fetch_models(
        models_dir,
        manifest,
        cache_dir=args.cache,
        wheel=args.wheel,
        force=args.force,
        quiet=args.quiet,
        progress=say,
    )
    if not built:
        say(f"all {len(manifest.models)} models in {models_dir} are present and match")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edge.models.fetch import verify_models

    models_dir = _models_dir(args)
    paths = verify_models(models_dir, _manifest(args))
    for p in paths:
        print(f"ok {p}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.models.bench import format_table, run_bench

    results = run_bench(
        _models_dir(args), _manifest(args), runs=args.runs, cache_dir=args.cache, threads=(1, 2)
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0
