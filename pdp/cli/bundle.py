"""`pdp bundle build|sign|verify|inspect|diff`: make, check and compare policy bundles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pdp.bundle import (
    TestsFailed,
    build_bundle,
    diff,
    load_private_key,
    load_public_keys,
    load_subject,
    open_bundle,
    read_request_file,
    sign_bundle,
    write_atomic,
)
from pdp.bundle.archive import read_archive_file, unpack
from pdp.bundle.build import DEFAULT_VERSION
from pdp.bundle.manifest import Manifest
from pdp.bundle.signing import verify
from pdp.bundle.verify import check_digests
from pdp.errors import BundleError, PolicyErrors

from ._common import policy_checks, print_policy_errors

# diff exit codes, so `pdp bundle diff` can gate a pull request.
EXIT_SAME = 0
EXIT_CHANGED = 1
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bundle", help="build, sign, verify, inspect and diff bundles")
    verbs = p.add_subparsers(dest="bundle_verb", metavar="VERB", required=True)

    b = verbs.add_parser("build", help="compile, test and pack a policy directory")
    b.add_argument("directory", help="policy directory")
    b.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    b.add_argument("--version", default=DEFAULT_VERSION, help="semantic version (X.Y.Z)")
    b.add_argument("--name", help="bundle name (default: the directory's name)")
    b.add_argument("--sign-key", metavar="PRIV", help="also sign with this private key")
    b.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="build despite warning findings (PDP2xx); error findings still stop the build",
    )
    b.add_argument(
        "--force", action="store_true", help="overwrite a bundle of the same name and version"
    )
    b.set_defaults(func=run_build)

    s = verbs.add_parser("sign", help="add an Ed25519 signature to a bundle")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, metavar="PRIV", help="private key (PEM)")
    s.add_argument("-o", "--output", metavar="FILE", help="write here (default: in place)")
    s.set_defaults(func=run_sign)

    v = verbs.add_parser("verify", help="check a bundle's digests and signature")
    v.add_argument("bundle")
    v.add_argument(
        "--trust", required=True, action="append", metavar="PUB", help="trusted public key"
    )
    v.set_defaults(func=run_verify)

    i = verbs.add_parser("inspect", help="show a bundle's manifest, files and signature")
    i.add_argument("bundle")
    i.add_argument("--trust", action="append", metavar="PUB", help="check the signature")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=run_inspect)

    d = verbs.add_parser(
        "diff",
        help="list the decisions that change between two bundles",
        description="Exit 0: no decision changes; 1: some change; 2: error.",
    )
    d.add_argument("old", help="bundle file or policy directory")
    d.add_argument("new", help="bundle file or policy directory")
    d.add_argument(
        "--requests", action="append", default=[], metavar="FILE", help="JSON-lines requests"
    )
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=run_diff)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def run_build(args: argparse.Namespace) -> int:
    try:
        built = build_bundle(
            args.directory,
            name=args.name,
            version=args.version,
            checks=policy_checks(),
            strict=args.strict,
            progress=_progress if sys.stderr.isatty() else None,  # for people, not for logs
        )
    except PolicyErrors as exc:
        print_policy_errors(exc)
        return 1
    except TestsFailed as exc:
        for r in exc.report.results:
            if not r.passed:
                print(f"FAIL {r.file}:{r.line} {r.suite} / {r.case} [{r.action}]")
                print(f"     {r.failure}")
                print(f"     actual: {r.actual}")
        _error(str(exc))
        return 1
    except BundleError as exc:
        _error(str(exc))
        return 1
    data = built.archive
    try:
        if args.sign_key:
            data = sign_bundle(data, load_private_key(args.sign_key))
        path = Path(args.output) / built.file_name
        # A published version must not silently change content under the same name.
        if path.exists() and not args.force and open_bundle(path).digest != built.manifest.digest:
            _error(f"`{path}` exists with different content; bump --version or pass --force")
            return 1
        write_atomic(path, data)
    except (BundleError, OSError) as exc:
        _error(str(exc))
        return 1
    m = built.manifest
    dirty = " (dirty)" if m.dirty else ""
    print(f"{path}: {m.name} {m.version}, revision {m.revision or '-'}{dirty}")
    print(f"  {len(m.files)} files, {built.report.passed} test cases passed, digest {m.digest}")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    try:
        data = sign_bundle(Path(args.bundle), load_private_key(args.key))
        out = Path(args.output or args.bundle)
        write_atomic(out, data)
    except (BundleError, OSError) as exc:
        _error(str(exc))
        return 1
    print(f"signed {out}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    try:
        trust = load_public_keys(args.trust)
        verified = open_bundle(Path(args.bundle), trust, require_signature=True)
    except BundleError as exc:
        print(f"FAILED {args.bundle}: {exc}")
        return 1
    m = verified.manifest
    print(f"OK {args.bundle}: {m.name} {m.version}, {verified.signature.describe()}")
    return 0


def _inspect(path: Path, trust_paths: list[str] | None) -> dict[str, Any]:
    raw = unpack(read_archive_file(path))
    manifest = Manifest.from_bytes(raw.manifest)
    try:
        check_digests(manifest, raw.files)
        digests = "ok"
    except BundleError as exc:
        digests = str(exc)
    trust = load_public_keys(trust_paths) if trust_paths else None
    status = verify(manifest.canonical_bytes(), raw.signature, trust)
    return {
        "file": str(path),
        "manifest": manifest.to_dict(),
        "digest": manifest.digest,
        "digests": digests,
        "signature": {"state": status.state, "key_id": status.key_id, "detail": status.detail},
    }


def run_inspect(args: argparse.Namespace) -> int:
    try:
        info = _inspect(Path(args.bundle), args.trust)
    except (BundleError, OSError) as exc:
        _error(str(exc))
        return 1
    ok = info["digests"] == "ok" and info["signature"]["state"] not in ("invalid", "untrusted")
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0 if ok else 1
    m = info["manifest"]
    sig = info["signature"]
    print(f"bundle:     {m['name']} {m['version']}")
    print(f"revision:   {m['revision'] or '-'}{' (dirty)' if m['dirty'] else ''}")
    print(f"built:      {m['build_time']} by {m['builder']}")
    print(f"digest:     {info['digest']}")
    print(f"digests:    {info['digests']}")
    key = f" (key {sig['key_id']})" if sig["key_id"] else ""
    detail = f": {sig['detail']}" if sig["detail"] else ""
    print(f"signature:  {sig['state']}{key}{detail}")
    print(f"files ({len(m['files'])}):")
    for path, entry in m["files"].items():
        print(f"  {entry['sha256'][:16]}  {entry['size']:>9}  {path}")
    return 0 if ok else 1


def run_diff(args: argparse.Namespace) -> int:
    try:
        old = load_subject(args.old)
        new = load_subject(args.new)
        requests = [item for path in args.requests for item in read_request_file(path)]
        report = diff(old, new, requests)
    except (BundleError, OSError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(report.render())
    if report.errors:
        return EXIT_ERROR
    return EXIT_CHANGED if report.changes else EXIT_SAME
