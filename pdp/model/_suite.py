"""Test suites (`*_test.yaml`): fixtures resolved into plain JSON-shaped `TestCase`s.

Fixtures get only light checks here (shape, required ids, known keys); the request parser
validates them fully when the suite runs, with the same code path as a real request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from pdp.errors import RequestError, SourceLocation
from pdp.model._limits import parse_period
from pdp.model._yaml import INT, Fields, FileContext, did_you_mean, is_str, to_json, type_name
from pdp.model.request import id_problem, parse_time
from pdp.model.testsuite import Expectation, TestCase, TestSuite


@dataclass(frozen=True, slots=True)
class ExpectRef:
    """An expected action for a resource kind, checked against the kind's policy later."""

    kind: str
    action: str
    location: SourceLocation


_SPEC_KEYS = ("now", "principals", "resources", "contexts", "cases")
_CASE_KEYS = ("name", "principal", "resource", "resources", "context", "now", "after", "expect")
_AFTER_KEYS = ("calls", "within")
# Calls a test case may replay before it is decided: enough for any sane limit's burst.
MAX_CASE_CALLS = 100_000
_EXPECT_KEYS = ("effect", "rule", "policy", "reasons", "obligations")
_PRINCIPAL_KEYS = ("id", "tenant", "roles", "scopes", "attr", "actor")
_ACTOR_KEYS = ("id", "type", "scopes", "attr")
_RESOURCE_KEYS = ("kind", "id", "tenant", "attr")
_CONTEXT_KEYS = ("ip", "country", "time", "attr")
_EFFECTS = ("allow", "deny")


def load_suite(
    ctx: FileContext, spec: Node, suite_id: str, description: str, location: SourceLocation
) -> tuple[TestSuite | None, list[ExpectRef]]:
    f = Fields(ctx, spec, _SPEC_KEYS, "`spec`")
    if not f.ok:
        return None, []
    suite_now = _time(ctx, f.get("now"))
    fixtures = {
        "principal": _fixtures(ctx, f.mapping("principals"), _principal),
        "resource": _fixtures(ctx, f.mapping("resources"), _resource),
        "context": _fixtures(ctx, f.mapping("contexts"), _context),
    }
    cases: list[TestCase] = []
    refs: list[ExpectRef] = []
    names: dict[str, int] = {}
    cases_node = f.sequence("cases", required=True)
    for item in cases_node.value if cases_node is not None else ():
        c = Fields(ctx, item, _CASE_KEYS, "a test case")
        if not c.ok:
            continue
        name = c.str("name", required=True)
        problem = id_problem(name)
        if problem:
            # The name is the case's request id, which follows the id rule (`id_problem`).
            ctx.error(f"test case name {problem}", c.get("name"))
        elif name in names:
            ctx.error(
                f"duplicate test case name `{name}` (first at line {names[name]})", c.get("name")
            )
        elif name:
            names[name] = ctx.loc(c.get("name")).line
        principal = _ref(ctx, c.get("principal", required=True), fixtures, "principal", _principal)
        resource_nodes: list[Node] = []
        if "resource" in c and "resources" in c:
            ctx.error(
                "a test case takes `resource` or `resources`, not both", c.key_node("resources")
            )
        elif "resources" in c:
            many = c.sequence("resources", required=True)
            resource_nodes = list(many.value) if many is not None else []
            if many is not None and not many.value:
                ctx.error("`resources` must not be empty", many)
        else:
            one = c.get("resource", required=True)
            resource_nodes = [one] if one is not None else []
        resources = [(_ref(ctx, n, fixtures, "resource", _resource), n) for n in resource_nodes]
        context_node = c.get("context")
        context = _ref(ctx, context_node, fixtures, "context", _context) if context_node else {}
        case_now = _time(ctx, c.get("now")) or suite_now
        after = _after(ctx, c.get("after"), case_now)
        expect = _expect(ctx, c.mapping("expect", required=True))
        if principal is None or context is None or expect is None:
            continue
        for resource, node in resources:
            if resource is None:
                continue
            kind = resource.get("kind")
            if isinstance(kind, str):
                refs.extend(ExpectRef(kind, action, loc) for action, loc in expect[1].items())
            case_name = name
            if len(resources) > 1:
                label = node.value if is_str(node) else resource.get("id", "")
                case_name = f"{name} [{label}]"
            cases.append(
                TestCase(
                    name=case_name,
                    location=ctx.loc(item),
                    principal=principal,
                    resource=resource,
                    expect=expect[0],
                    context=context,
                    now=case_now,
                    after=after,
                )
            )
    suite = TestSuite(
        id=suite_id,
        file=ctx.file,
        location=location,
        cases=tuple(cases),
        now=suite_now,
        description=description,
    )
    return suite, refs


def _after(ctx: FileContext, node: Node | None, now: datetime | None) -> tuple[int, float] | None:
    """`after: {calls: N, within: 1m}`: the request made N times over the minute before `now`."""
    if node is None:
        return None
    f = Fields(ctx, node, _AFTER_KEYS, "`after`")
    if not f.ok:
        return None
    calls_node = f.get("calls", required=True)
    within = f.str("within", required=True)
    calls = None
    if calls_node is not None:
        if not (isinstance(calls_node, ScalarNode) and calls_node.tag == INT):
            ctx.error(f"`calls` must be a whole number, got {type_name(calls_node)}", calls_node)
        elif not 1 <= int(calls_node.value) <= MAX_CASE_CALLS:
            ctx.error(f"`calls` must be between 1 and {MAX_CASE_CALLS}", calls_node)
        else:
            calls = int(calls_node.value)
    seconds = parse_period(within) if within else None
    if within and seconds is None:
        ctx.error(f"`within` must be a duration such as `1s`, `1m`, `1h`, got `{within}`", node)
    if now is None:
        ctx.error("a case with `after` needs a `now` (on the case or the suite)", node)
        return None
    if calls is None or seconds is None:
        return None
    return calls, seconds


def _time(ctx: FileContext, node: Node | None) -> datetime | None:
    if node is None:
        return None
    if not is_str(node):
        ctx.error(f"`now` must be an RFC 3339 timestamp string, got {type_name(node)}", node)
        return None
    try:
        return parse_time(node.value, "now")  # type: ignore[union-attr]
    except RequestError as e:
        ctx.error(f"bad `now`: {e.message}", node)
        return None


def _fixtures(ctx: FileContext, node: MappingNode | None, check: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node is None:
        return out
    for name, (_, value) in Fields(ctx, node, None, "fixtures").items.items():
        fixture = check(ctx, value)
        if fixture is not None:
            out[name] = fixture
    return out


def _ref(
    ctx: FileContext, node: Node | None, fixtures: dict[str, dict[str, Any]], what: str, check: Any
) -> dict[str, Any] | None:
    if node is None:
        return None
    if is_str(node):
        assert isinstance(node, ScalarNode)
        found = fixtures[what].get(node.value)
        if found is None:
            hint = did_you_mean(node.value, fixtures[what])
            ctx.error(f"unknown {what} fixture `{node.value}`{hint}", node)
        return found
    if isinstance(node, MappingNode):
        return check(ctx, node)
    ctx.error(f"`{what}` must be a fixture name or a mapping, got {type_name(node)}", node)
    return None


def _json_object(ctx: FileContext, f: Fields) -> dict[str, Any] | None:
    for key in ("roles", "scopes"):
        f.str_list(key)
    attr = f.get("attr")
    if attr is not None and not isinstance(attr, MappingNode):
        ctx.error(f"`attr` must be a mapping, got {type_name(attr)}", attr)
    before = len(ctx.errors)
    value = to_json(ctx, f.node)  # type: ignore[arg-type]
    return value if len(ctx.errors) == before and isinstance(value, dict) else None


def _principal(ctx: FileContext, node: Node) -> dict[str, Any] | None:
    f = Fields(ctx, node, _PRINCIPAL_KEYS, "a principal")
    if not f.ok:
        return None
    before = len(ctx.errors)
    f.str("id", required=True)
    f.str("tenant")
    actor = f.get("actor")
    if actor is not None:
        a = Fields(ctx, actor, _ACTOR_KEYS, "an actor")
        a.str("id", required=True)
        a.str("type")
        a.str_list("scopes")
    value = _json_object(ctx, f)
    return value if len(ctx.errors) == before else None


def _resource(ctx: FileContext, node: Node) -> dict[str, Any] | None:
    if isinstance(node, MappingNode) and any(
        is_str(k) and k.value == "actions" for k, _ in node.value
    ):
        key = next(k for k, _ in node.value if is_str(k) and k.value == "actions")
        ctx.error("a resource fixture does not list `actions`: the case's `expect` names them", key)
        return None
    f = Fields(ctx, node, _RESOURCE_KEYS, "a resource")
    if not f.ok:
        return None
    before = len(ctx.errors)
    f.str("kind", required=True)
    f.str("id", required=True)
    f.str("tenant")
    value = _json_object(ctx, f)
    return value if len(ctx.errors) == before else None


def _context(ctx: FileContext, node: Node) -> dict[str, Any] | None:
    f = Fields(ctx, node, _CONTEXT_KEYS, "a context")
    if not f.ok:
        return None
    before = len(ctx.errors)
    ip = f.str("ip")
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            ctx.error(f"`{ip[:64]}` is not an IP address", f.get("ip"))
    f.str("country")
    time = f.get("time")
    if time is not None:
        if not is_str(time):
            ctx.error(f"`time` must be an RFC 3339 timestamp string, got {type_name(time)}", time)
        else:
            try:
                parse_time(time.value, "time")  # type: ignore[union-attr]
            except RequestError as e:
                ctx.error(f"bad `time`: {e.message}", time)
    value = _json_object(ctx, f)
    return value if len(ctx.errors) == before else None


def _expect(
    ctx: FileContext, node: MappingNode | None
) -> tuple[dict[str, Expectation], dict[str, SourceLocation]] | None:
    """action → Expectation, and action → where it was written (for the action check)."""
    if node is None:
        return None
    before = len(ctx.errors)
    out: dict[str, Expectation] = {}
    where: dict[str, SourceLocation] = {}
    for action, (key, value) in Fields(ctx, node, None, "`expect`").items.items():
        where[action] = ctx.loc(key)
        if isinstance(value, ScalarNode):
            effect = value.value if is_str(value) else None
            if effect not in _EFFECTS:
                shown = f"`{value.value}`" if is_str(value) else type_name(value)
                ctx.error(f"expected effect must be `allow` or `deny`, got {shown}", value)
                continue
            out[action] = Expectation(effect=effect)  # type: ignore[arg-type]
            continue
        e = Fields(ctx, value, _EXPECT_KEYS, f"the expectation of `{action}`")
        if not e.ok:
            continue
        effect = e.choice("effect", _EFFECTS)
        if e.get("effect", required=True) is None or not effect:
            continue
        reasons = e.str_list("reasons")
        obligations = e.mapping("obligations")
        out[action] = Expectation(
            effect=effect,  # type: ignore[arg-type]
            rule=e.str("rule") if "rule" in e else None,
            policy=e.str("policy") if "policy" in e else None,
            reasons=tuple(r for r, _ in reasons) if reasons is not None else None,
            obligations=to_json(ctx, obligations) if obligations is not None else None,
        )
    if not node.value:
        ctx.error("`expect` must name at least one action", node)
    return (out, where) if len(ctx.errors) == before else None
