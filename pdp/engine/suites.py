"""Run policy test suites against a compiled policy set, and measure rule coverage."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pdp.errors import RequestError
from pdp.model.decision import ActionDecision, BundleInfo
from pdp.model.policy import PolicySource
from pdp.model.request import CheckRequest, parse_check_request
from pdp.model.testsuite import Expectation, TestCase, TestSuite

from .compiled import PolicySet, RuleRef
from .counters import MemoryCounters
from .engine import Engine


@dataclass(frozen=True, slots=True)
class CaseResult:
    suite: str
    case: str
    action: str
    file: str
    line: int
    passed: bool
    expected: str = ""
    actual: str = ""
    failure: str = ""  # what differed, or the request error


@dataclass(frozen=True, slots=True)
class SuiteReport:
    results: tuple[CaseResult, ...]
    rules: tuple[RuleRef, ...]
    covered: frozenset[tuple[str, str]]

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def uncovered(self) -> tuple[RuleRef, ...]:
        return tuple(r for r in self.rules if (r.policy, r.rule) not in self.covered)

    @property
    def coverage(self) -> float:
        if not self.rules:
            return 1.0
        return 1 - len(self.uncovered) / len(self.rules)

    def coverage_by_policy(self) -> dict[str, tuple[int, int, list[RuleRef]]]:
        """policy -> (covered, total, uncovered rules)."""
        out: dict[str, tuple[int, int, list[RuleRef]]] = {}
        for r in self.rules:
            cov, total, missing = out.get(r.policy, (0, 0, []))
            hit = (r.policy, r.rule) in self.covered
            out[r.policy] = (cov + hit, total + 1, [*missing, *(() if hit else (r,))])
        return out


UNFROZEN_CLOCK = (
    "the decision reads the clock (`now`) but the case fixes no time: give the case or its "
    "suite a `now`, or whether the bundle loads depends on the hour"
)

# A check beyond the YAML test suites (e.g. the gateway's route-mapping cases), run by whoever
# builds or loads policies: (source, engine) -> its case results, merged into the report.
SuiteCheck = Callable[[PolicySource, Engine], Sequence[CaseResult]]


def with_checks(
    report: SuiteReport, source: PolicySource, engine: Engine, checks: Iterable[SuiteCheck]
) -> SuiteReport:
    extra: list[CaseResult] = []
    for check in checks:
        extra.extend(check(source, engine))
    if not extra:
        return report
    return SuiteReport(report.results + tuple(extra), report.rules, report.covered)


@dataclass(slots=True)
class _Collector:
    results: list[CaseResult] = field(default_factory=list)
    covered: set[tuple[str, str]] = field(default_factory=set)


def _failed(suite: TestSuite, case: TestCase, failure: str) -> Iterator[CaseResult]:
    """Every expectation of `case` failed for one reason."""
    for action in case.expect:
        yield CaseResult(
            suite.id, case.name, action, suite.file, case.location.line, False, failure=failure
        )


def case_request(case: TestCase, now: Any = None) -> dict[str, Any]:
    """The JSON-shaped decision request a test case stands for (also used by bundle diff)."""
    context = dict(case.context)
    when = case.now or now
    if when is not None and "time" not in context:
        context["time"] = when.isoformat()
    return {
        "request_id": case.name,
        "principal": case.principal,
        "resources": [{**case.resource, "actions": list(case.expect)}],
        "context": context,
    }


def iter_case_requests(suites: Iterable[TestSuite]) -> Iterable[tuple[TestSuite, TestCase, dict]]:
    for suite in suites:
        for case in suite.cases:
            yield suite, case, case_request(case, suite.now)


def run_test_suites(
    policy_set: PolicySet,
    suites: Iterable[TestSuite],
    *,
    filter: str | None = None,
    bundle: BundleInfo | None = None,
) -> SuiteReport:
    """Run every case (or those whose `suite/case` name matches the glob `filter`)."""
    engine = Engine(policy_set, bundle)
    out = _Collector()
    for suite, case, raw in iter_case_requests(suites):
        if filter and not _selected(filter, suite.id, case.name):
            continue
        try:
            request: CheckRequest = parse_check_request(raw)
            if policy_set.limits:
                engine.counters = MemoryCounters()  # every case starts with full buckets
                for replay in _replays(raw, case):
                    engine.check(parse_check_request(replay))
            # A kind whose schemas are in `reject` mode refuses the request the same way.
            response = engine.check(request, coverage=out.covered)
        except RequestError as exc:
            out.results.extend(_failed(suite, case, f"bad request in test case: {exc}"))
            continue
        if response.time_dependent and request.time is None:
            # Passing by the hour it runs, a suite would let one worker or replica activate a
            # bundle that another refuses, and a refused bundle is not retried: each would
            # serve its own bundle until the next one is published.
            out.results.extend(_failed(suite, case, UNFROZEN_CLOCK))
            continue
        decisions = response.results[0].actions
        for action, expectation in case.expect.items():
            out.results.append(_compare(suite, case, action, expectation, decisions[action]))
    return SuiteReport(tuple(out.results), policy_set.rules, frozenset(out.covered))


def _replays(raw: dict[str, Any], case: TestCase) -> Iterable[dict[str, Any]]:
    """`after: {calls, within}`: the case's request, evenly over the window before its time."""
    if case.after is None:
        return
    calls, within = case.after
    now = datetime.fromisoformat(raw["context"]["time"])
    for i in range(calls):
        at = now - timedelta(seconds=within * (calls - i) / calls)
        yield {**raw, "context": {**raw["context"], "time": at.isoformat()}}


def _selected(pattern: str, suite: str, case: str) -> bool:
    name = f"{suite}/{case}"
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def _compare(
    suite: TestSuite, case: TestCase, action: str, exp: Expectation, got: ActionDecision
) -> CaseResult:
    problems = []
    if got.effect != exp.effect:
        problems.append(f"effect: expected {exp.effect}, got {got.effect}")
    if exp.rule is not None and got.rule != exp.rule:
        problems.append(f"rule: expected `{exp.rule}`, got `{got.rule}`")
    if exp.policy is not None and got.policy != exp.policy:
        problems.append(f"policy: expected `{exp.policy}`, got `{got.policy}`")
    if exp.reasons is not None and sorted(exp.reasons) != sorted(got.reasons):
        problems.append(f"reasons: expected {list(exp.reasons)}, got {list(got.reasons)}")
    if exp.obligations is not None and dict(exp.obligations) != _plain(got.obligations):
        problems.append(f"obligations: expected {exp.obligations}, got {dict(got.obligations)}")
    actual = f"{got.effect} by {got.policy}/{got.rule or '-'} reasons={list(got.reasons)}"
    if got.message:
        actual += f" ({got.message})"
    if got.errors:
        actual += f" errors={list(got.errors)}"
    return CaseResult(
        suite=suite.id,
        case=case.name,
        action=action,
        file=suite.file,
        line=case.location.line,
        passed=not problems,
        expected=exp.effect,
        actual=actual,
        failure="; ".join(problems),
    )


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)
