"""``edge keys generate``: CurveZMQ keys for the edge and its headsets."""

from __future__ import annotations

import argparse

from edge.cli.options import add_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="CurveZMQ keys for the edge and headsets")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser(
        "generate",
        help="make the edge's and headsets' key pairs and enrol the headsets",
        description="Writes DIR/edge.key(_secret), DIR/NAME.key(_secret) per headset, and "
        "DIR/enrolled/NAME.key (the public keys the edge accepts). Secret files are mode 0600.",
    )
    gen.add_argument("--out", required=True, metavar="DIR")
    gen.add_argument(
        "--headset", action="append", metavar="NAME", help="repeatable; default 'headset'"
    )
    add_overwrite(gen)
    gen.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from edge.transport.security import generate_keys

    written = generate_keys(args.out, tuple(args.headset or ["headset"]), overwrite=args.force)
    for p in written:
        print(p)
    print("give each headset its NAME.key_secret and edge.key; keep edge.key_secret on the edge")
    return 0
