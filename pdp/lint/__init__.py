"""The policy validator: lints and CEL type checks over a loaded `PolicySource`.

    findings = analyze(source)          # every finding, errors and warnings, sorted
    errors = [f for f in findings if f.severity == "error"]

Sits between `pdp.cel` and `pdp.engine` in the flow: it reads the policy model and the CEL
checker, and changes nothing. Codes and their meaning: `pdp.lint.codes`, docs/POLICY_FORMAT.md.
"""

from __future__ import annotations

import logging

from pdp.cel import shared_parses
from pdp.lint._report import Reporter
from pdp.lint.codes import CODES
from pdp.lint.structure import check_structure, check_usage
from pdp.lint.typecheck import check_types
from pdp.model.findings import Finding
from pdp.model.policy import PolicySource

__all__ = ["CODES", "Finding", "analyze", "blocking", "validator_errors"]


def analyze(source: PolicySource) -> list[Finding]:
    out = Reporter(source.files)
    with shared_parses():  # each expression is read by several checks, each variable per use
        check_structure(source, out)
        check_usage(source, out)
        check_types(source, out)
    _unused_suppressions(source, out)
    return out.result()


def blocking(findings: list[Finding], *, strict: bool) -> list[Finding]:
    """The findings that fail a check: errors, and warnings too when `strict`."""
    return [f for f in findings if strict or f.severity == "error"]


def validator_errors(source: PolicySource) -> list[Finding]:
    """The validator's errors on a directory about to be served or activated by the directory
    watcher (they refuse it, as they refuse `pdp bundle build`); its warnings are logged, as
    `pdp.watch` (here, not in pdp.bundle.watch, so that a server on a directory needs none of
    the bundle modules that one imports)."""
    findings = analyze(source)
    errors = blocking(findings, strict=False)
    if not errors:
        for warning in findings:
            logging.getLogger("pdp.watch").warning("%s", warning.render())
    return errors


def _unused_suppressions(source: PolicySource, out: Reporter) -> None:
    owners: list[tuple[object, ...]] = []
    for p in source.resource_policies:
        owners.append(p.suppress)
        owners.extend(r.suppress for r in p.rules)
        owners.extend(c.suppress for c in p.cross_tenant)
    for g in source.guard_policies:
        owners.append(g.suppress)
        owners.extend(r.suppress for r in g.rules)
    for d in source.definitions:
        owners.append(d.suppress)
        owners.extend(r.suppress for r in d.derived_roles.values())
    for lp in source.limit_policies:
        owners.append(lp.suppress)
        owners.extend(limit.suppress for limit in lp.limits)
    for group in owners:
        for s in group:
            if id(s) not in out.used and s.code != "PDP206":  # type: ignore[attr-defined]
                out.add(
                    "PDP206",
                    f"suppression of `{s.code}` silences nothing here; remove it",  # type: ignore[attr-defined]
                    s.location,  # type: ignore[attr-defined]
                )
