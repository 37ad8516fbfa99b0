"""`parse_check_request`: JSON in, `CheckRequest` or `RequestError` out, never anything else."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.errors import LimitExceeded, RequestError
from pdp.model.request import (
    DEFAULT_LIMITS,
    CheckRequest,
    Limits,
    number,
    parse_check_request,
)

# PDP_FUZZ_EXAMPLES=5000 for a deeper local run.
FUZZ = settings(
    max_examples=int(os.environ.get("PDP_FUZZ_EXAMPLES", "400")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: they must be rejected, not crash
    | st.text(max_size=12)
    | st.sampled_from(["10.0.0.1", "::1", "2026-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right shape most of the time, anything JSON sometimes."""
    return st.one_of(strategy, strategy, json_values)


ids = maybe(st.text(min_size=1, max_size=8))
str_lists = maybe(st.lists(st.text(min_size=1, max_size=6), max_size=3))
attrs = maybe(st.dictionaries(st.text(max_size=6), json_values, max_size=4))


def fixed(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


actor = fixed(id=ids, type=ids, scopes=str_lists, attr=attrs)
principal = fixed(
    id=ids, tenant=ids, roles=str_lists, scopes=str_lists, attr=attrs, actor=maybe(actor)
)
resource = fixed(kind=ids, id=ids, tenant=ids, attr=attrs, actions=str_lists)
context = fixed(
    ip=maybe(st.sampled_from(["10.1.2.3", "::1", "not-an-ip", "", "1.2.3.4/8"])),
    country=ids,
    time=maybe(st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "", "nope"])),
    attr=attrs,
)
requests = st.one_of(
    fixed(
        principal=maybe(principal),
        resources=maybe(st.lists(maybe(resource), max_size=3)),
        context=maybe(context),
        request_id=ids,
        explain=maybe(st.booleans()),
        bogus=json_values,
    ),
    json_values,
)


@FUZZ
@given(requests)
def test_parses_or_raises_request_error(obj: Any) -> None:
    try:
        req = parse_check_request(obj)
    except RequestError as e:
        assert e.field is not None and e.message
        return
    assert isinstance(req, CheckRequest)
    assert req.resources and all(r.actions for r in req.resources)
    assert req.roles == frozenset(req.principal["roles"])


@FUZZ
@given(json_values)
def test_attribute_values_come_back_verbatim(value: Any) -> None:
    obj = {
        "principal": {"id": "p", "attr": {"v": value}},
        "resources": [{"kind": "k", "id": "i", "actions": ["a"], "attr": {"v": value}}],
        "context": {"attr": {"v": value}},
    }
    try:
        req = parse_check_request(obj)
    except RequestError as e:
        # Only non-finite floats are refused among JSON values of this size.
        assert "finite" in e.message
        return
    for got in (
        req.principal["attr"]["v"],
        req.resources[0].resource["attr"]["v"],
        req.context["attr"]["v"],
    ):
        assert got == _numbers_as_cel(value)


def _numbers_as_cel(v: Any) -> Any:
    """`v` with every number as the documented rule types it (`pdp.model.request.number`)."""
    if isinstance(v, dict):
        return {k: _numbers_as_cel(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_numbers_as_cel(x) for x in v]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return number(v)
    return v


def base(**over: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["s"]},
        "resources": [{"kind": "document", "id": "d1", "tenant": "acme", "actions": ["read"]}],
        "context": {"ip": "10.0.0.1", "time": "2026-01-01T12:00:00Z"},
    }
    req.update(over)
    return req


def test_cel_looking_strings_are_data() -> None:
    evil = 'principal.id == "admin" || true'
    req = parse_check_request(
        base(
            principal={"id": evil, "attr": {"x": evil, "y": [evil]}},
            context={"attr": {"z": "${{ 1 + 1 }}"}},
        )
    )
    assert req.principal["id"] == evil
    assert req.principal["attr"] == {"x": evil, "y": [evil]}
    assert req.context["attr"] == {"z": "${{ 1 + 1 }}"}


def test_valid_request() -> None:
    req = parse_check_request(base())
    assert req.time == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert req.scopes == {"s"} and req.actor_scopes is None


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (base(principal={"id": 123}), "principal.id"),
        (base(principal={"tenant": "acme"}), "principal.id"),
        (base(principal={"id": ""}), "principal.id"),
        (base(principal={"id": "a", "roles": "admin"}), "principal.roles"),
        (base(principal={"id": "a", "roles": ["x", 1]}), "principal.roles[1]"),
        (base(principal={"id": "a", "actor": {"type": "agent"}}), "principal.actor.id"),
        (base(principal={"id": "a", "attr": {1: "x"}}), "principal.attr"),
        (base(principal={"id": "a", "attr": {"f": float("nan")}}), "principal.attr.f"),
        (base(resources=[{"kind": "k", "id": 7, "actions": ["a"]}]), "resources[0].id"),
        (base(resources=[{"kind": "k", "id": "i"}]), "resources[0].actions"),
        (base(resources=[]), "resources"),
        (base(context={"ip": "999.1.1.1"}), "context.ip"),
        (base(context={"time": "yesterday"}), "context.time"),
        (base(context={"time": "2026-01-01T00:00:00"}), "context.time"),
        (base(context={"time": 1767225600}), "context.time"),
        (base(context={"time": "9999-12-31T23:59:59-01:00"}), "context.time"),
        (base(explain="yes"), "explain"),
        (base(extra=1), "extra"),
        ([], "request"),
    ],
)
def test_errors_name_the_field(obj: Any, field: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_check_request(obj)
    assert info.value.field == field
    assert info.value.message and not info.value.message.endswith(".")


def nested(depth: int) -> Any:
    v: Any = "leaf"
    for _ in range(depth):
        v = {"n": v}
    return v


@pytest.mark.parametrize("depth", [DEFAULT_LIMITS.max_attr_depth, 1000, 50_000])
def test_deep_attributes_raise_limit_exceeded(depth: int) -> None:
    with pytest.raises(LimitExceeded) as info:
        parse_check_request(base(principal={"id": "a", "attr": nested(depth)}))
    assert info.value.field.startswith("principal.attr")


def test_depth_just_under_the_limit_is_fine() -> None:
    parse_check_request(
        base(principal={"id": "a", "attr": nested(DEFAULT_LIMITS.max_attr_depth - 1)})
    )


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (base(principal={"id": "a", "attr": {"big": list(range(30_000))}}), "principal.attr.big"),
        (
            base(context={"attr": {"s": "x" * (DEFAULT_LIMITS.max_string_length + 1)}}),
            "context.attr.s",
        ),
        (base(principal={"id": "a" * (DEFAULT_LIMITS.max_id_length + 1)}), "principal.id"),
        (
            base(resources=[{"kind": "k", "id": str(i), "actions": ["a"]} for i in range(501)]),
            "resources",
        ),
        (
            base(resources=[{"kind": "k", "id": "i", "actions": [str(i) for i in range(1001)]}]),
            "resources",
        ),
    ],
)
def test_oversized_requests_raise_limit_exceeded(obj: Any, field: str) -> None:
    with pytest.raises(LimitExceeded) as info:
        parse_check_request(obj)
    assert info.value.field.startswith(field)


def test_attr_budget_is_shared_across_the_request() -> None:
    limits = Limits(max_attr_values=10)
    half = {"attr": {str(i): i for i in range(6)}}
    with pytest.raises(LimitExceeded):
        parse_check_request(base(principal={"id": "a", **half}, context=half), limits)
