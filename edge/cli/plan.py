"""``edge plan keygen|sign|verify``: signing keys and signed plans."""

from __future__ import annotations

import argparse

from edge.cli.options import add_config, add_overwrite, add_plan_pubkey, config_from


def register(subparsers: argparse._SubParsersAction) -> None:
    plan = subparsers.add_parser("plan", help="plan signing keys, sign and verify plans")
    sub = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair (PREFIX.key, PREFIX.pub)")
    keygen.add_argument("--out", required=True, metavar="PREFIX", help="path prefix of the files")
    add_overwrite(keygen)
    keygen.set_defaults(func=_keygen)

    sign = sub.add_parser("sign", help="validate a plan folder and sign it (writes plan.sig)")
    sign.add_argument("dir", metavar="DIR", help="plan folder (holds plan.json)")
    sign.add_argument("--key", required=True, help="private key file (PREFIX.key)")
    add_config(sign)  # the [plan] limits the plan is validated against
    sign.set_defaults(func=_sign)

    verify = sub.add_parser("verify", help="check a plan's signature and contents")
    verify.add_argument("dir", metavar="DIR", help="plan folder (holds plan.json)")
    add_plan_pubkey(verify, required=True)
    add_config(verify)  # the [plan] limits, as `edge run` applies them
    verify.set_defaults(func=_verify)


def _keygen(args: argparse.Namespace) -> int:
    from edge.plan.sign import generate_keypair

    paths = generate_keypair(args.out, overwrite=args.force)
    print(f"private key: {paths.private} (keep it secret; mode 0600)")
    print(f"public key:  {paths.public} (give it to the edge devices)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from edge.plan.load import read_plan
    from edge.plan.sign import load_private_key, sign_plan

    seed = load_private_key(args.key)
    # Validate before signing: a signature should never vouch for a plan that cannot load.
    read_plan(args.dir, limits=config_from(args).plan)
    digest = sign_plan(args.dir, seed)
    print(f"signed {args.dir}: digest {digest}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edge.plan.load import load_plan
    from edge.plan.sign import load_public_key

    plan = load_plan(
        args.dir, public_key=load_public_key(args.pubkey), limits=config_from(args).plan
    )
    print(
        f"plan {plan.case_id}: signature valid, digest {plan.digest}; "
        f"{len(plan.landmarks)} landmarks, {len(plan.targets)} targets, "
        f"{len(plan.trajectories)} trajectories, {len(plan.cut_planes)} cut planes, "
        f"{len(plan.structures)} structures, skin {len(plan.skin.faces)} triangles"
    )
    return 0
