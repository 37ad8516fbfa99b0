"""`pdp keygen -o PREFIX`: an Ed25519 key pair for signing bundles (PEM files)."""

from __future__ import annotations

import argparse
import sys

from pdp.bundle import generate_keypair
from pdp.errors import BundleError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "keygen",
        help="generate an Ed25519 key pair for signing bundles",
        description="Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PEM).",
    )
    p.add_argument("-o", "--output", required=True, metavar="PREFIX", help="key file prefix")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        private_path, public_path = generate_keypair(args.output)
    except (BundleError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"private key: {private_path}")
    print(f"public key:  {public_path}")
    return 0
