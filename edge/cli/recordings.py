"""``edge recordings keygen|seal|open|prune``: protect recordings of patients at rest."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli.options import add_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recordings", help="seal recordings to the hospital's key, open them, apply retention"
    )
    sub = parser.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)

    keygen = sub.add_parser(
        "keygen",
        help="make the hospital's key pair: PREFIX.key (0600, keep it off the device) "
        "and PREFIX.pub (install on the device as recordings.encrypt_to; what "
        "`edge record --seal-to` and `edge recordings seal --to` seal to)",
    )
    keygen.add_argument("--out", type=Path, required=True, help="PREFIX of the two key files")
    add_overwrite(keygen)
    keygen.set_defaults(func=_keygen)

    seal = sub.add_parser("seal", help="encrypt a recording to a public key, then delete it")
    seal.add_argument("file", type=Path)
    seal.add_argument("--to", type=Path, required=True, help="the hospital's .pub file")
    seal.add_argument("--keep", action="store_true", help="keep the unencrypted file")
    seal.set_defaults(func=_seal)

    open_ = sub.add_parser(
        "open", help="decrypt a sealed recording with the hospital's private key"
    )
    open_.add_argument("file", type=Path, help="a .sealed recording")
    open_.add_argument("--key", type=Path, required=True, help="the hospital's .key file")
    open_.add_argument("--out", type=Path, help="output file (default: FILE without .sealed)")
    open_.set_defaults(func=_open)

    prune = sub.add_parser("prune", help="delete recordings older than a number of days")
    prune.add_argument("folder", type=Path)
    prune.add_argument("--days", type=int, required=True, help="retention period (0: none)")
    prune.add_argument("--dry-run", action="store_true", help="only list what would go")
    prune.set_defaults(func=_prune)


def _keygen(args: argparse.Namespace) -> int:
    from edge.keys import fingerprint, generate_recording_key, load_recording_public_key

    pair = generate_recording_key(args.out, overwrite=args.force)
    fp = fingerprint(bytes(load_recording_public_key(pair.public)))
    print(f"wrote {pair.private} (mode 0600) and {pair.public}; key fingerprint {fp}")
    print(f"keep {pair.private} at the hospital; copy only {pair.public} to the device")
    return 0


def _seal(args: argparse.Namespace) -> int:
    from edge.keys import load_recording_public_key
    from edge.protect import seal_file

    out = seal_file(args.file, load_recording_public_key(args.to), remove_plaintext=not args.keep)
    print(f"sealed {args.file} -> {out}" + ("" if args.keep else f" (deleted {args.file})"))
    return 0


def _open(args: argparse.Namespace) -> int:
    from edge.keys import load_recording_private_key
    from edge.protect import open_file, unsealed_path

    out = args.out if args.out is not None else unsealed_path(args.file)
    open_file(args.file, load_recording_private_key(args.key), out)
    print(f"decrypted {args.file} -> {out} (mode 0600)")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from edge.protect import prune_recordings

    gone = prune_recordings(args.folder, args.days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for path in gone:
        print(f"{verb} {path}")
    print(f"{verb} {len(gone)} recording(s) older than {args.days} days")
    return 0
