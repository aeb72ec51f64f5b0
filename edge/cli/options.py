"""Options that several commands share, each defined once with one help text."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import EdgeConfig

SOURCE_FORMS = "realsense[:SERIAL], FILE.db3, FILE.bag, phantom[:SCENARIO] or synthetic"


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="configuration file (TOML; default: $EDGE_CONFIG, ./edge.toml, "
        "/etc/edge/edge.toml, the first found, else the built-in defaults)",
    )


def config_from(args: argparse.Namespace) -> EdgeConfig:
    """The configuration that ``--config`` names, or the one on the search path."""
    from edge.config import load_config

    return load_config(args.config)[0]


def add_source(
    parser: argparse.ArgumentParser, *, required: bool = False, default: str | None = None
) -> None:
    """``--source SPEC``; ``default`` says in words what a missing --source means."""
    parser.add_argument(
        "--source",
        required=required,
        help=SOURCE_FORMS + (f" (default: {default})" if default else ""),
    )


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of generated input (default 0)")


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime intra-op threads (default: tracking.intra_op_threads)",
    )


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: print ``what`` as JSON instead of text."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress or status lines (errors still show)"
    )


def add_plan_pubkey(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--pubkey",
        required=required,
        help="public key file of the plan's signer (from edge plan keygen)",
    )


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--force`` of the key generators."""
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")
