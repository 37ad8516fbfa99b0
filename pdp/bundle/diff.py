"""Which decisions a policy change flips: evaluate the same requests under two bundles.

Requests come from both bundles' test suites and from JSON-lines files. A line is a decision
request (the JSON shape of `parse_check_request`) or a record wrapping one; the record readers
are pluggable (`register_record_reader`) so the decision-log format can be read here too.
Every request is decided at one frozen time under both bundles, so the clock cannot flip a
decision between the two runs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pdp.engine import Engine
from pdp.engine.suites import iter_case_requests
from pdp.errors import BundleError, PolicyErrors, RequestError
from pdp.model.decision import ActionDecision, BundleInfo
from pdp.model.request import CheckRequest, parse_check_request
from pdp.model.testsuite import TestSuite

from .build import collect_files
from .load import bundle_info, compile_files
from .verify import open_bundle

# A requests file is read whole into memory; past this many lines it wants a streaming tool.
MAX_REQUEST_LINES = 1_000_000
# One JSON line larger than this is not a decision request.
MAX_LINE_BYTES = 4 * 1024 * 1024

# A reader takes one parsed JSON line and returns the request inside it, or None if the
# record is not its format.
RecordReader = Callable[[Any], Mapping[str, Any] | None]


def _plain_request(record: Any) -> Mapping[str, Any] | None:
    if isinstance(record, dict) and "principal" in record and "resources" in record:
        return record
    return None


def _wrapped_request(record: Any) -> Mapping[str, Any] | None:
    if isinstance(record, dict) and isinstance(record.get("request"), dict):
        return record["request"]
    return None


_READERS: list[RecordReader] = [_plain_request, _wrapped_request]


def register_record_reader(reader: RecordReader) -> None:
    """Teach `pdp bundle diff --requests` another record format (tried before the built-ins)."""
    _READERS.insert(0, reader)


@dataclass(frozen=True, slots=True)
class Subject:
    """A bundle (or policy directory) under comparison."""

    info: BundleInfo
    engine: Engine
    suites: tuple[TestSuite, ...]


@dataclass(frozen=True, slots=True)
class Change:
    origin: str  # where the request came from: `suite / case` or `file:line`
    principal: str
    kind: str
    resource: str
    action: str
    old: ActionDecision
    new: ActionDecision

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "principal": self.principal,
            "resource": {"kind": self.kind, "id": self.resource},
            "action": self.action,
            "old": _decision(self.old),
            "new": _decision(self.new),
        }


def _decision(d: ActionDecision) -> dict[str, Any]:
    return {"effect": d.effect, "policy": d.policy, "rule": d.rule, "reasons": list(d.reasons)}


def _rule(d: ActionDecision) -> str:
    if d.rule:
        return f"{d.policy}/{d.rule}"
    return ",".join(d.reasons) or "-"


@dataclass(slots=True)
class DiffReport:
    old: BundleInfo
    new: BundleInfo
    requests: int = 0
    decisions: int = 0
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": dataclasses.asdict(self.old),
            "new": dataclasses.asdict(self.new),
            "requests": self.requests,
            "decisions": self.decisions,
            "changes": [c.to_dict() for c in self.changes],
            "errors": self.errors,
        }

    def render(self) -> str:
        lines = [f"old: {_label(self.old)}", f"new: {_label(self.new)}"]
        for c in self.changes:
            lines.append(
                f"{c.principal} {c.kind}/{c.resource} {c.action}: "
                f"{c.old.effect} -> {c.new.effect} ({_rule(c.old)} -> {_rule(c.new)}) [{c.origin}]"
            )
        lines.extend(f"error: {e}" for e in self.errors)
        lines.append(
            f"{len(self.changes)} of {self.decisions} decisions changed ({self.requests} requests)"
        )
        return "\n".join(lines)


def _label(info: BundleInfo) -> str:
    rev = f" revision {info.revision[:12]}" if info.revision else ""
    return f"{info.name} {info.version}{rev}"


def load_subject(path: str | Path) -> Subject:
    """A bundle file (integrity checked; signature not required) or a policy directory.

    Test failures do not stop a diff: a diff reports what changes, the tests judge it.
    """
    p = Path(path)
    if p.is_dir():
        files = collect_files(p)
        info = BundleInfo(name=p.resolve().name, version="0.0.0", revision="working-tree")
    else:
        verified = open_bundle(p)
        files = dict(verified.files)
        info = bundle_info(verified.manifest)
    try:
        compiled = compile_files(files, info)
    except PolicyErrors as exc:
        raise BundleError(f"`{path}` does not compile:\n{exc}") from exc
    return Subject(info, Engine(compiled.policy_set, info), tuple(compiled.source.test_suites))


def _from_record(origin: str, record: Any) -> tuple[str, Mapping[str, Any] | str]:
    for reader in _READERS:
        request = reader(record)
        if request is not None:
            return origin, request
    return origin, "not a decision request nor a known record format"


def _read_json_document(path: str | Path) -> Iterator[tuple[str, Mapping[str, Any] | str]]:
    """A `.json` file: one request (or record), or a list of them — like `pdp check` takes."""
    try:
        record = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read `{path}`: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, too deep, a huge integer
        yield str(path), _not_json(exc)
        return
    if isinstance(record, list):
        for i, item in enumerate(record):
            yield _from_record(f"{path}[{i}]", item)
    else:
        yield _from_record(str(path), record)


def _not_json(exc: ValueError | RecursionError) -> str:
    return "not JSON: nested too deeply" if isinstance(exc, RecursionError) else f"not JSON: {exc}"


def read_request_file(path: str | Path) -> Iterator[tuple[str, Mapping[str, Any] | str]]:
    """(origin, request) per non-empty line, or (origin, error message) for a bad line.

    A file named `*.json` is instead one JSON document: a request, or a list of requests.
    """
    if str(path).lower().endswith(".json"):
        yield from _read_json_document(path)
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, generator-scoped
    except OSError as exc:
        raise BundleError(f"cannot read `{path}`: {exc.strerror or exc}") from None
    with f:
        for n, raw in enumerate(f, 1):
            origin = f"{path}:{n}"
            if n > MAX_REQUEST_LINES:
                yield origin, f"more than {MAX_REQUEST_LINES} lines; the rest is ignored"
                return
            if len(raw) > MAX_LINE_BYTES:
                yield origin, f"line longer than {MAX_LINE_BYTES} bytes"
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                yield origin, _not_json(exc)
                continue
            yield _from_record(origin, record)


def suite_requests(subjects: Iterable[Subject]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for subject in subjects:
        for suite, case, request in iter_case_requests(subject.suites):
            yield f"{suite.id} / {case.name}", request


def diff(
    old: Subject,
    new: Subject,
    requests: Iterable[tuple[str, Mapping[str, Any] | str]] = (),
    *,
    now: datetime | None = None,
) -> DiffReport:
    """Decide every request under both subjects and collect the effects that differ."""
    frozen = now or datetime.now(UTC)
    report = DiffReport(old.info, new.info)
    seen: set[str] = set()
    for origin, raw in [*suite_requests((old, new)), *requests]:
        if isinstance(raw, str):
            report.errors.append(f"{origin}: {raw}")
            continue
        try:
            request = parse_check_request(raw)
        except RequestError as exc:
            report.errors.append(f"{origin}: bad request: {exc}")
            continue
        if request.time is None:
            request = dataclasses.replace(request, time=frozen)
        _compare(report, origin, request, old.engine, new.engine, seen)
    return report


def _decision_key(request: CheckRequest, resource: Mapping[str, Any], action: str) -> str:
    """Identifies one decision, so one asked by both bundles' suites is counted once."""
    return json.dumps(
        [request.principal, resource, action, request.context, request.time],
        sort_keys=True,
        default=str,
    )


def _compare(
    report: DiffReport,
    origin: str,
    request: CheckRequest,
    old: Engine,
    new: Engine,
    seen: set[str],
) -> None:
    before = old.check(request).results
    after = new.check(request).results
    principal = request.principal["id"]
    new_decisions = False
    for res, a, b in zip(request.resources, before, after):
        for action in res.actions:
            key = _decision_key(request, res.resource, action)
            if key in seen:
                continue
            seen.add(key)
            new_decisions = True
            report.decisions += 1
            da, db = a.actions[action], b.actions[action]
            if da.effect != db.effect:
                report.changes.append(Change(origin, principal, res.kind, res.id, action, da, db))
    report.requests += new_decisions  # requests that asked something not asked before
