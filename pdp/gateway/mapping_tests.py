"""Run the `spec.tests` cases of a route mapping: HTTP request + claims → expected decision.

A case gives claims instead of a token (the token check has its own tests), so mapping tests
stay readable and need no keys. Without an engine only the translation (resource, action,
tenant) is checked; with one, the effect, reason and HTTP status too.

    python -m pdp.gateway.mapping_tests POLICY_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdp.engine import CaseResult
from pdp.gateway.mapping import RouteMapping
from pdp.gateway.request import HttpAttributes, translate
from pdp.gateway.response import outcome_for
from pdp.model.policy import PolicySource

if TYPE_CHECKING:
    from pdp.engine import Engine

_RESOURCE_KEYS = ("kind", "id", "tenant")


@dataclass(frozen=True, slots=True)
class MappingCaseResult:
    name: str
    passed: bool
    problems: tuple[str, ...] = ()


def run_case(
    case: Mapping[str, Any], mapping: RouteMapping, engine: Engine | None
) -> MappingCaseResult:
    name = str(case.get("name", "?"))
    req = case.get("request") or {}
    expect = case.get("expect") or {}
    if not isinstance(req, Mapping) or not isinstance(expect, Mapping) or "path" not in req:
        return MappingCaseResult(
            name, False, ("a case needs `request: {method, path, ...}` and `expect`",)
        )
    headers = {str(k).lower(): str(v) for k, v in (req.get("headers") or {}).items()}
    body, problem = _body(req, headers)
    if problem:
        return MappingCaseResult(name, False, (problem,))
    attrs = HttpAttributes(
        method=str(req.get("method", "GET")).upper(),
        path=str(req["path"]),
        headers=headers,
        source_ip=str(req.get("ip", "")),
        body=body,
    )
    claims = req.get("claims")
    tr = translate(attrs, mapping, None, claims=claims if isinstance(claims, Mapping) else None)
    problems: list[str] = []
    got: dict[str, Any] = {}
    if tr.request is not None:
        res = tr.request.resources[0]
        got = {**{k: res.resource[k] for k in _RESOURCE_KEYS}, "action": res.actions[0]}
        if "attr" in expect and expect["attr"] != res.resource["attr"]:
            problems.append(f"attr: got {res.resource['attr']}, expected {expect['attr']}")
    for key in (*_RESOURCE_KEYS, "action"):
        if key in expect and got.get(key) != expect[key]:
            problems.append(
                f"{key}: got `{got.get(key, '(no request)')}`, expected `{expect[key]}`"
            )
    if engine is not None and any(k in expect for k in ("effect", "status", "reason")):
        decision = engine.check(tr.request) if tr.request is not None else None
        if decision is not None and decision.time_dependent:
            # A case cannot fix the time: passing by the hour it runs, it would let one worker
            # or replica load a bundle that another refuses (as a suite case without `now`).
            problems.append(
                "the decision reads the clock (`now`) and a mapping case cannot fix the time: "
                "expect only the translation here (resource, action) and test the decision "
                "in a test suite with `now`"
            )
            return MappingCaseResult(name, False, tuple(problems))
        out = outcome_for(tr, decision, mapping, "test")
        actual = {
            "effect": "allow" if out.allowed else "deny",
            "status": out.http_status,
            "reason": out.reason,
        }
        for key, value in actual.items():
            if key in expect and expect[key] != value:
                problems.append(f"{key}: got `{value}`, expected `{expect[key]}`")
    elif "reason" in expect and tr.kind != "check" and tr.reason != expect["reason"]:
        problems.append(f"reason: got `{tr.reason}`, expected `{expect['reason']}`")
    return MappingCaseResult(name, not problems, tuple(problems))


def _body(req: Mapping[str, Any], headers: dict[str, str]) -> tuple[bytes | None, str]:
    """The case's body as Envoy would send it under `with_request_body` (all of it), and
    a problem naming the field when it cannot be one. `body` is text (sent as UTF-8) or an
    object or list (sent as JSON, `application/json` unless `contentType` says otherwise);
    `contentType` sets the `content-type` header. Without `body`, Envoy sent none."""
    content_type = req.get("contentType")
    if content_type is not None:
        if not isinstance(content_type, str):
            return None, "request.contentType must be a string"
        headers["content-type"] = content_type
    if "body" not in req:
        return None, ""
    raw = req["body"]
    if isinstance(raw, str):
        body = raw.encode("utf-8")
    elif isinstance(raw, Mapping | list):
        body = json.dumps(raw).encode("utf-8")
        headers.setdefault("content-type", "application/json")
    else:
        return None, "request.body must be text, or an object or list (sent as JSON)"
    headers.setdefault("content-length", str(len(body)))
    return body, ""


def run_mapping_tests(
    mapping: RouteMapping, engine: Engine | None = None
) -> list[MappingCaseResult]:
    return [run_case(case, mapping, engine) for case in mapping.tests]


def mapping_check(source: PolicySource, engine: Engine) -> list[CaseResult]:
    """The mapping's cases as test-suite results (a `pdp.engine.SuiteCheck`), so `pdp test`,
    `pdp bundle build` and bundle loading refuse a mapping that is broken or fails its tests."""
    from pdp.errors import PdpError
    from pdp.gateway.mapping import load_route_mapping

    if source.route_mapping is None:
        return []
    file = source.route_mapping_file or "mapping.yaml"
    try:
        mapping = load_route_mapping(source.route_mapping, file)
    except PdpError as e:
        return [CaseResult("route-mapping", "load", "-", file, 0, False, failure=str(e))]
    return [
        CaseResult(
            suite="route-mapping",
            case=r.name,
            action="http",
            file=file,
            line=0,
            passed=r.passed,
            expected="pass",
            actual="; ".join(r.problems),
            failure="; ".join(r.problems),
        )
        for r in run_mapping_tests(mapping, engine)
    ]


def main(argv: list[str] | None = None) -> int:
    from pdp.engine import Engine, compile_policy_set
    from pdp.gateway.mapping import load_route_mapping
    from pdp.model.loader import load_policy_dir

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pdp.gateway.mapping_tests POLICY_DIR", file=sys.stderr)
        return 2
    source = load_policy_dir(args[0])
    if source.route_mapping is None:
        print(f"{args[0]}: no RouteMapping document", file=sys.stderr)
        return 1
    mapping = load_route_mapping(source.route_mapping, source.route_mapping_file)
    results = run_mapping_tests(mapping, Engine(compile_policy_set(source)))
    for r in results:
        print(f"{'ok  ' if r.passed else 'FAIL'} {r.name}")
        for p in r.problems:
            print(f"       {p}")
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
