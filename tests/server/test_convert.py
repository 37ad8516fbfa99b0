"""The proto <-> model conversion on its own: same values and errors as the JSON parser."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.client._convert import request_to_proto
from pdp.errors import LimitExceeded, RequestError
from pdp.model.decision import (
    ALLOW,
    DENY,
    ActionDecision,
    BundleInfo,
    CheckResponse,
    ResourceDecision,
    TraceStep,
)
from pdp.model.request import DEFAULT_LIMITS, Limits, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.convert import request_from_proto, response_from_proto, response_to_proto

FULL: dict[str, Any] = {
    "request_id": "req-1",
    "explain": True,
    "principal": {
        "id": "alice",
        "tenant": "acme",
        "roles": ["user", "admin"],
        "scopes": ["docs:read"],
        "attr": {"dept": "eng", "level": 3.0, "tags": ["a", {"b": None}], "mfa": True},
        "actor": {"id": "bot", "type": "ai_agent", "scopes": ["docs:read"], "attr": {"x": 1.5}},
    },
    "resources": [
        {
            "kind": "document",
            "id": "d1",
            "tenant": "acme",
            "attr": {"owner": "alice"},
            "actions": ["read", "write", "read"],
        },
        {"kind": "document", "id": "d2", "actions": ["read"]},
    ],
    "context": {
        "ip": "10.1.2.3",
        "country": "fr",
        "time": "2026-01-01T12:00:00.250Z",
        "attr": {"device": {"managed": True}},
    },
}


def to_proto(obj: dict[str, Any]) -> pb.CheckRequest:
    return request_to_proto(
        obj["principal"],
        obj["resources"],
        obj.get("context"),
        request_id=obj.get("request_id", ""),
        explain=obj.get("explain", False),
    )


def test_same_request_as_the_json_parser() -> None:
    got = request_from_proto(to_proto(FULL), DEFAULT_LIMITS)
    want = parse_check_request(FULL)
    assert got == want
    assert got.context["time"] == datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert got.resources[0].actions == ("read", "write")


def test_minimal_request_matches_json_parser() -> None:
    obj = {"principal": {"id": "p"}, "resources": [{"kind": "k", "id": "1", "actions": ["a"]}]}
    assert request_from_proto(to_proto(obj), DEFAULT_LIMITS) == parse_check_request(obj)


def test_struct_numbers_follow_the_number_rule() -> None:
    # Integral values within +-2**53 are ints (as `parse_check_request` makes them), others
    # doubles: a Struct carries 3 as the double 3.0.
    numbers = {"n": 3, "f": 3.0, "h": 2.5, "big": 2**60, "neg": -(2**53)}
    obj = {
        "principal": {"id": "p", "attr": numbers},
        "resources": [{"kind": "k", "id": "1", "actions": ["a"]}],
    }

    def typed(attr: dict[str, Any]) -> dict[str, tuple[type, Any]]:
        return {k: (type(v), v) for k, v in attr.items()}

    got = typed(request_from_proto(to_proto(obj), DEFAULT_LIMITS).principal["attr"])
    assert got == {
        "n": (int, 3),
        "f": (int, 3),
        "h": (float, 2.5),
        "big": (float, 2.0**60),
        "neg": (int, -(2**53)),
    }
    assert typed(parse_check_request(obj).principal["attr"]) == got


def bad(mutate: Any) -> pb.CheckRequest:
    msg = to_proto(FULL)
    mutate(msg)
    return msg


@pytest.mark.parametrize(
    ("mutate", "field", "exc"),
    [
        (lambda m: m.ClearField("principal"), "principal", RequestError),
        (lambda m: setattr(m.principal, "id", ""), "principal.id", RequestError),
        (lambda m: m.principal.roles.append(""), "principal.roles[2]", RequestError),
        (lambda m: setattr(m.principal.actor, "id", ""), "principal.actor.id", RequestError),
        (lambda m: m.ClearField("resources"), "resources", RequestError),
        (lambda m: setattr(m.resources[1], "kind", ""), "resources[1].kind", RequestError),
        (lambda m: setattr(m.resources[0], "id", ""), "resources[0].id", RequestError),
        (lambda m: m.resources[1].ClearField("actions"), "resources[1].actions", RequestError),
        (lambda m: setattr(m.context, "ip", "not-an-ip"), "context.ip", RequestError),
        (lambda m: setattr(m.context.time, "nanos", -1), "context.time", RequestError),
        (lambda m: setattr(m.context.time, "seconds", 10**12), "context.time", RequestError),
        (
            lambda m: (
                m.resources[0]
                .attr.fields["owner"]
                .list_value.values.add()
                .struct_value.update({"n": math.nan})
            ),
            "resources[0].attr.owner[0].n",
            RequestError,
        ),
        (lambda m: setattr(m.principal, "id", "x" * 513), "principal.id", LimitExceeded),
        (
            lambda m: m.principal.attr.update({"s": "x" * (64 * 1024 + 1)}),
            "principal.attr.s",
            LimitExceeded,
        ),
    ],
)
def test_errors_name_the_field(mutate: Any, field: str, exc: type[Exception]) -> None:
    with pytest.raises(exc) as info:
        request_from_proto(bad(mutate), DEFAULT_LIMITS)
    assert type(info.value) is exc
    assert info.value.field == field  # type: ignore[attr-defined]


def nested(depth: int) -> dict[str, Any]:
    d: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        d = {"n": d}
    return d


def test_depth_limit_same_as_json_parser() -> None:
    limits = Limits(max_attr_depth=4)
    for depth in range(6):
        obj = {
            "principal": {"id": "p", "attr": nested(depth)},
            "resources": [{"kind": "k", "id": "1", "actions": ["a"]}],
        }
        try:
            parse_check_request(obj, limits)
            want = None
        except LimitExceeded as e:
            want = e.field
        try:
            request_from_proto(to_proto(obj), limits)
            got = None
        except LimitExceeded as e:
            got = e.field
        assert got == want, depth


def test_value_count_and_batch_limits() -> None:
    limits = Limits(max_attr_values=10, max_resources=2, max_checks=3)
    obj = {
        "principal": {"id": "p", "attr": {str(i): i for i in range(10)}},
        "resources": [{"kind": "k", "id": "1", "actions": ["a"]}],
    }
    with pytest.raises(LimitExceeded):
        request_from_proto(to_proto(obj), limits)
    many = {"principal": {"id": "p"}, "resources": [{"kind": "k", "id": "1", "actions": ["a"]}] * 3}
    with pytest.raises(LimitExceeded, match="more than 2 resources"):
        request_from_proto(to_proto(many), limits)
    wide = {
        "principal": {"id": "p"},
        "resources": [{"kind": "k", "id": "1", "actions": list("abcd")}],
    }
    with pytest.raises(LimitExceeded) as info:
        request_from_proto(to_proto(wide), limits)
    assert info.value.field == "resources"


def test_response_round_trip() -> None:
    resp = CheckResponse(
        request_id="r",
        decision_id="d",
        bundle=BundleInfo("b", "1.2.3", "abc", "sha256:00"),
        results=(
            ResourceDecision(
                kind="document",
                id="d1",
                actions={
                    "read": ActionDecision(
                        ALLOW,
                        "documents",
                        "owner",
                        ("owner",),
                        {"mask_fields": ["email"], "n": 2.0},
                        trace=(TraceStep("allow_rule", "documents", "owner", "matched"),),
                    ),
                    "delete": ActionDecision(
                        DENY, reasons=("missing_scope",), message="needs `x`", errors=("e",)
                    ),
                },
            ),
        ),
        evaluated_at="2026-01-01T00:00:00Z",
        time_dependent=True,
    )
    msg = response_to_proto(resp)
    assert msg.results[0].actions["read"].effect == pb.EFFECT_ALLOW
    assert msg.results[0].actions["delete"].effect == pb.EFFECT_DENY
    back = response_from_proto(pb.CheckResponse.FromString(msg.SerializeToString()))
    assert back == resp


def test_unspecified_effect_reads_as_deny() -> None:
    msg = pb.CheckResponse()
    msg.results.add(kind="k", id="1").actions["a"].policy = "p"
    assert response_from_proto(msg).results[0].actions["a"].effect == DENY


# -- fuzz: random messages never raise anything but RequestError -------------------------------

json_scalars = st.none() | st.booleans() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
texts = st.text(max_size=12)


def _struct(d: dict[str, Any]) -> Struct:
    s = Struct()
    s.update(d)
    return s


@st.composite
def requests(draw: st.DrawFn) -> pb.CheckRequest:
    msg = pb.CheckRequest(request_id=draw(texts), explain=draw(st.booleans()))
    if draw(st.booleans()):
        p = msg.principal
        p.id = draw(texts)
        p.tenant = draw(texts)
        p.roles.extend(draw(st.lists(texts, max_size=3)))
        p.scopes.extend(draw(st.lists(texts, max_size=3)))
        if draw(st.booleans()):
            p.attr.CopyFrom(_struct(draw(st.dictionaries(texts, json_values, max_size=4))))
        if draw(st.booleans()):
            p.actor.id = draw(texts)
            p.actor.scopes.extend(draw(st.lists(texts, max_size=2)))
    for _ in range(draw(st.integers(0, 3))):
        r = msg.resources.add(kind=draw(texts), id=draw(texts), tenant=draw(texts))
        r.actions.extend(draw(st.lists(texts, max_size=3)))
        if draw(st.booleans()):
            r.attr.CopyFrom(_struct(draw(st.dictionaries(texts, json_values, max_size=4))))
    if draw(st.booleans()):
        c = msg.context
        c.ip = draw(st.sampled_from(["", "10.0.0.1", "::1", "nope"]) | texts)
        c.country = draw(texts)
        if draw(st.booleans()):
            c.time.seconds = draw(st.integers(-(2**40), 2**40))
            c.time.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    return msg


@settings(max_examples=300, deadline=None)
@given(requests(), st.integers(1, 6), st.integers(1, 40))
def test_fuzz_only_request_errors(msg: pb.CheckRequest, depth: int, values: int) -> None:
    limits = Limits(max_attr_depth=depth, max_attr_values=values, max_id_length=8)
    try:
        req = request_from_proto(msg, limits)
    except RequestError as e:
        assert e.field
        return
    assert req.resources and req.principal["id"]
