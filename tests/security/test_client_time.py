"""The server owns the clock: a caller cannot pick the instant time-based rules see.

Issue 19, point 4: a delete denied `step_up_required` (MFA done in 2020) was allowed once the
request added `context.time: 2020-01-01T00:05:00Z`. Against a real `pdp serve` that request is
now INVALID_ARGUMENT naming `context.time`, through the raw proto and the client library alike;
only `--allow-client-time` (documented as for testing) lets it through.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp.cli._common import load_and_compile
from pdp.client import Client
from pdp.engine import Engine
from pdp.errors import RequestError
from pdp.model.request import Limits, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.convert import request_from_proto

from .real_pdp import Served, pdp_serve

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ATTACK_TIME = "2020-01-01T00:05:00Z"

# An admin's delete, with MFA done years ago: the step-up guard denies it at today's time.
DELETE: dict[str, Any] = {
    "request_id": "time-attack",
    "principal": {
        "id": "ada",
        "tenant": "acme",
        "roles": ["admin"],
        "scopes": ["docs:read", "docs:delete"],
    },
    "resources": [
        {
            "kind": "document",
            "id": "d-200",
            "tenant": "acme",
            "attr": {"owner": "bob", "classification": "internal", "kb": "kb-sales"},
            "actions": ["delete"],
        }
    ],
    "context": {"ip": "10.1.2.3", "attr": {"mfa": True, "auth_time": "2020-01-01T00:00:00Z"}},
}


def with_time(req: dict[str, Any], when: str) -> dict[str, Any]:
    out = copy.deepcopy(req)
    out["context"]["time"] = when
    return out


def proto(req: dict[str, Any]) -> pb.CheckRequest:
    """The raw message a non-Python client builds (independent of our client library)."""
    from google.protobuf import json_format

    return json_format.ParseDict(req, pb.CheckRequest())


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with pdp_serve(POLICIES) as s:
        yield s


@pytest.fixture(scope="module")
def served_for_tests() -> Iterator[Served]:
    with pdp_serve(POLICIES, "--allow-client-time") as s:
        yield s


def test_the_attack_is_real_in_process() -> None:
    """The premise: the policy's outcome does turn on the time the request names."""
    _source, policy_set = load_and_compile(str(POLICIES))
    engine = Engine(policy_set)
    now = engine.check(parse_check_request(DELETE)).results[0].actions["delete"]
    assert (now.effect, now.reasons) == ("deny", ("step_up_required",))
    then = engine.check(parse_check_request(with_time(DELETE, ATTACK_TIME)))
    assert then.results[0].actions["delete"].effect == "allow"


def test_served_decision_uses_the_servers_clock(served: Served) -> None:
    reply = served.check(proto(DELETE))
    decision = reply.results[0].actions["delete"]
    assert decision.effect == pb.EFFECT_DENY
    assert list(decision.reasons) == ["step_up_required"]
    assert not reply.evaluated_at.startswith("2020")


def test_client_time_is_invalid_argument_never_allow(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.check(proto(with_time(DELETE, ATTACK_TIME)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("context.time:")


def test_client_library_gets_the_same_refusal(served: Served) -> None:
    attack = with_time(DELETE, ATTACK_TIME)
    with Client(served.address, timeout=10) as client, pytest.raises(grpc.RpcError) as info:
        client.check(attack["principal"], attack["resources"], attack["context"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.time" in (info.value.details() or "")


@pytest.mark.parametrize("when", ["2020-01-01T00:05:00Z", "2099-01-01T00:00:00+02:00"])
def test_any_client_time_is_refused(served: Served, when: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        served.check(proto(with_time(DELETE, when)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_allow_client_time_flag_accepts_it(served_for_tests: Served) -> None:
    reply = served_for_tests.check(proto(with_time(DELETE, ATTACK_TIME)))
    assert reply.results[0].actions["delete"].effect == pb.EFFECT_ALLOW
    assert reply.evaluated_at.startswith("2020-01-01T00:05:00")
    # Without a time, the flag changes nothing: the server's clock decides.
    reply = served_for_tests.check(proto(DELETE))
    assert reply.results[0].actions["delete"].effect == pb.EFFECT_DENY


def test_one_switch_for_every_adapter() -> None:
    """JSON (pdp check, the gateway, a future HTTP adapter) and proto paths read the same
    `Limits.allow_client_time`, and refuse with the same field and words."""
    refusing = Limits(allow_client_time=False)
    attack = with_time(DELETE, ATTACK_TIME)
    with pytest.raises(RequestError) as from_json:
        parse_check_request(attack, refusing)
    with pytest.raises(RequestError) as from_proto:
        request_from_proto(proto(attack), refusing)
    assert from_json.value.field == from_proto.value.field == "context.time"
    assert from_json.value.message == from_proto.value.message
    # The in-process default keeps fixed times (pdp check, test suites).
    assert parse_check_request(attack).time is not None
