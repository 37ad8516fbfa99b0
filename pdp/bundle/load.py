"""Load a bundle: verify it, compile it, run its tests, and build the engine — all aside.

Nothing here touches a live engine. The result is a ready `Engine`; activating it is one
`EngineHolder.swap` by the caller (the reloader), so a bundle is served wholly or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pdp.engine import (
    Engine,
    PolicySet,
    SuiteCheck,
    SuiteReport,
    compile_policy_set,
    run_test_suites,
    with_checks,
)
from pdp.errors import BundleError, PolicyErrors
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_files
from pdp.model.policy import PolicySource

from .manifest import Manifest

if TYPE_CHECKING:  # verifying imports cryptography: only bundles need it, not a policy directory
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from .signing import SignatureStatus
    from .verify import VerifiedBundle

# How many test failures a refusal message quotes; the rest are counted.
MAX_FAILURES_REPORTED = 5


@dataclass(frozen=True, slots=True)
class LoadedBundle:
    """A verified, compiled and tested bundle, ready to be swapped in."""

    manifest: Manifest
    engine: Engine
    source: PolicySource
    report: SuiteReport
    signature: SignatureStatus
    archive_sha256: str

    @property
    def info(self) -> BundleInfo:
        return self.engine.bundle


@dataclass(frozen=True, slots=True)
class Compiled:
    source: PolicySource
    policy_set: PolicySet
    report: SuiteReport


def compile_files(
    files: Mapping[str, bytes],
    bundle: BundleInfo | None = None,
    checks: Sequence[SuiteCheck] = (),
) -> Compiled:
    """Load, compile and test policy files. Raises `PolicyErrors` on load or compile errors;
    test failures (of the suites, and of `checks` such as the gateway's mapping cases) are in
    the report for the caller to judge."""
    source = load_policy_files(files)
    policy_set = compile_policy_set(source)
    report = run_test_suites(policy_set, source.test_suites, bundle=bundle)
    if checks:
        report = with_checks(report, source, Engine(policy_set, bundle), checks)
    return Compiled(source, policy_set, report)


def describe_failures(report: SuiteReport) -> str:
    failed = [r for r in report.results if not r.passed]
    lines = [
        f"{r.file}:{r.line} {r.suite} / {r.case} [{r.action}]: {r.failure}"
        for r in failed[:MAX_FAILURES_REPORTED]
    ]
    if len(failed) > MAX_FAILURES_REPORTED:
        lines.append(f"... and {len(failed) - MAX_FAILURES_REPORTED} more")
    return "; ".join(lines)


def bundle_info(manifest: Manifest) -> BundleInfo:
    # The API reports a bundle built from uncommitted sources as `<revision>-dirty`.
    revision = (
        f"{manifest.revision}-dirty" if manifest.dirty and manifest.revision else manifest.revision
    )
    return BundleInfo(
        name=manifest.name,
        version=manifest.version,
        revision=revision,
        digest=manifest.digest,
    )


def activate(verified: VerifiedBundle, checks: Sequence[SuiteCheck] = ()) -> LoadedBundle:
    """Compile and test a verified bundle. Raises `BundleError` with the reason it is refused."""
    info = bundle_info(verified.manifest)
    try:
        compiled = compile_files(verified.files, info, checks)
    except PolicyErrors as exc:
        first = exc.errors[0].render().splitlines()[0] if exc.errors else "unknown error"
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        raise BundleError(f"bundle does not compile: {first}{more}") from exc
    if compiled.report.failed:
        raise BundleError(
            f"bundle tests fail ({compiled.report.failed} failed): "
            + describe_failures(compiled.report)
        )
    return LoadedBundle(
        manifest=verified.manifest,
        engine=Engine(compiled.policy_set, info),
        source=compiled.source,
        report=compiled.report,
        signature=verified.signature,
        archive_sha256=verified.archive_sha256,
    )


def load_bundle(
    source: bytes | str | Path,
    trust: Sequence[Ed25519PublicKey] | None = None,
    require_signature: bool = False,
    checks: Sequence[SuiteCheck] = (),
) -> LoadedBundle:
    """Verify (layout, digests, signature), compile and test a bundle.

    Raises `BundleError` naming why the bundle is refused.
    """
    from .verify import open_bundle

    return activate(open_bundle(source, trust, require_signature=require_signature), checks)
