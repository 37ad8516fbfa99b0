"""`pdp test DIR`: run the policy test suites, report failures and rule coverage."""

from __future__ import annotations

import argparse
import sys
from xml.etree import ElementTree as ET

from pdp.engine import Engine, SuiteReport, run_test_suites, with_checks
from pdp.errors import PolicyErrors
from pdp.lint import analyze, blocking
from pdp.model.policy import PolicySource

from ._common import load_and_compile, policy_checks, print_findings, print_policy_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("test", help="run policy test suites")
    p.add_argument("directory", help="policy directory")
    p.add_argument("--coverage", action="store_true", help="report rules no test matched")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--filter", metavar="PATTERN", help="run cases whose `suite/case` matches")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        source, policy_set = load_and_compile(args.directory)
    except PolicyErrors as exc:
        print_policy_errors(exc)
        return 1
    # Error findings (`PDP1xx`) fail the run like a failing case; warnings are `validate`'s.
    lint_errors = blocking(analyze(source), strict=False)
    print_findings(lint_errors)
    report = run_test_suites(policy_set, source.test_suites, filter=args.filter)
    if not args.filter:
        report = with_checks(report, source, Engine(policy_set), policy_checks())
    else:  # coverage of what the selected cases are about, not of every other policy
        report = _only_selected_policies(report, source)
    for r in report.results:
        if not r.passed:
            print(f"FAIL {r.file}:{r.line} {r.suite} / {r.case} [{r.action}]")
            print(f"     {r.failure}")
            print(f"     actual: {r.actual}")
        elif args.verbose:
            print(f"ok   {r.suite} / {r.case} [{r.action}]")
    if args.coverage:
        print_coverage(report)
    if args.junit:
        write_junit(report, args.junit)
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed or not report.results or lint_errors else 0


def _only_selected_policies(report: SuiteReport, source: PolicySource) -> SuiteReport:
    """Keep the rules of the resource policies whose kinds the selected cases ask about, and
    of the guard policies those cases matched at least once."""
    from pdp.engine.suites import iter_case_requests

    selected = {(r.suite, r.case) for r in report.results}
    kinds = {
        resource.get("kind")
        for suite, case, raw in iter_case_requests(source.test_suites)
        if (suite.id, case.name) in selected
        for resource in raw.get("resources") or ()
        if isinstance(resource, dict)
    }
    policies = {p.id for p in source.resource_policies if p.resource in kinds}
    policies |= {policy for policy, _rule in report.covered}
    rules = tuple(r for r in report.rules if r.policy in policies)
    return SuiteReport(report.results, rules, report.covered)


def print_coverage(report: SuiteReport) -> None:
    print("rule coverage:")
    for policy, (covered, total, missing) in sorted(report.coverage_by_policy().items()):
        print(f"  {policy}: {covered}/{total} rules")
        for ref in missing:
            print(f"    never matched: {ref.rule} ({ref.stage}) {ref.file}:{ref.line}")
    total = len(report.rules)
    hit = total - len(report.uncovered)
    print(f"total rule coverage: {hit}/{total} ({report.coverage:.1%})")


def write_junit(report: SuiteReport, path: str) -> None:
    suites = ET.Element("testsuites", tests=str(len(report.results)), failures=str(report.failed))
    by_suite: dict[str, ET.Element] = {}
    for r in report.results:
        el = by_suite.get(r.suite)
        if el is None:
            el = by_suite[r.suite] = ET.SubElement(suites, "testsuite", name=r.suite, file=r.file)
        case = ET.SubElement(el, "testcase", classname=r.suite, name=f"{r.case} [{r.action}]")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=r.failure)
            failure.text = r.actual
    for el in by_suite.values():
        cases = el.findall("testcase")
        el.set("tests", str(len(cases)))
        el.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    print(f"junit report written to {path}", file=sys.stderr)
