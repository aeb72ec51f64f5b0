"""``edge audit verify|keygen``: check an audit log, make the device's signing key."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli.options import add_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="verify the tamper-evident audit log; make the device key"
    )
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    verify = sub.add_parser(
        "verify",
        help="check the whole hash chain and every signature (exit 0 intact, 2 broken)",
        description="Check every entry of an audit log: sequence, hash chain and Ed25519 "
        "signature, and that the log reaches the signed head anchored in FILE.head (so a "
        "log cut at its end fails). An empty log fails. Names the first broken entry by "
        "line number and why.",
    )
    verify.add_argument("file", type=Path, help="the audit log (JSON lines)")
    verify.add_argument(
        "--pubkey",
        type=Path,
        help="the device's public key file (device.pub); without it the key named inside "
        "the log is used, which only shows that the log is self-consistent",
    )
    head = verify.add_mutually_exclusive_group()
    head.add_argument(
        "--head",
        type=Path,
        help="the signed head file to check the log against (default: FILE.head); "
        "a copy kept off the device is the stronger check",
    )
    head.add_argument(
        "--no-head",
        action="store_true",
        help="check the chain only, without a head file: a log cut at its end then "
        "still verifies (for logs written before heads were anchored)",
    )
    verify.set_defaults(func=_verify)

    keygen = sub.add_parser(
        "keygen",
        help="make the device's Ed25519 audit signing key (DIR/device.key 0600, DIR/device.pub)",
    )
    keygen.add_argument("--out", type=Path, required=True, help="folder for the key files")
    keygen.add_argument("--name", default="device", help="file name stem (default: device)")
    add_overwrite(keygen)
    keygen.set_defaults(func=_keygen)


def _verify(args: argparse.Namespace) -> int:
    from edge.audit import verify_log
    from edge.audit_head import head_path, read_head
    from edge.errors import AuditError
    from edge.keys import load_device_verify_key

    key = load_device_verify_key(args.pubkey) if args.pubkey is not None else None
    head = None
    if not args.no_head:
        where = args.head or head_path(args.file)
        if args.head is None and not where.exists() and args.file.exists():
            raise AuditError(
                f"{args.file}: no head file {where}, so a cut at the log's end cannot be seen",
                "pass --head with a copy of it, or --no-head to check the chain only",
            )
        head = read_head(where) if args.file.exists() else None
    report = verify_log(args.file, key, head)
    if report.problem is not None:
        where_in = f" line {report.problem.line}" if report.problem.line else ""
        raise AuditError(
            f"{args.file}{where_in}: {report.problem.reason}",
            "the log was altered or damaged after it was written; keep it as evidence",
        )
    source = "the key named in the log" if report.key_from_log else f"{args.pubkey}"
    print(
        f"{args.file}: intact, {report.entries} entries in {report.segments} segment(s), "
        f"signed by key {report.key_fingerprint} ({source})"
    )
    if report.head_seq is not None:
        print(f"head: seq {report.head_seq} hash {report.head_hash}")
    if report.anchored_seq is not None:
        after = (report.head_seq or 0) - report.anchored_seq
        print(
            f"anchored: the head file's seq {report.anchored_seq} is in the log"
            + (f" ({after} entries after it)" if after else "")
        )
    else:
        print("note: --no-head: a log cut at its end would still verify")
    for line in report.acknowledged_torn_lines:
        print(f"note: line {line} was torn by a crash and acknowledged by the entry after it")
    if report.torn_tail_line is not None:
        print(
            f"note: line {report.torn_tail_line} (the last) was torn by a crash; "
            "the next start will acknowledge it"
        )
    if report.key_from_log:
        print("note: pass --pubkey DEVICE.pub to check against the device's known key")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from edge.keys import fingerprint, generate_device_key, load_device_verify_key

    pair = generate_device_key(args.out / args.name, overwrite=args.force)
    fp = fingerprint(bytes(load_device_verify_key(pair.public)))
    print(f"wrote {pair.private} (mode 0600) and {pair.public}; key fingerprint {fp}")
    return 0
