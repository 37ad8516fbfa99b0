"""Hostile HTTP bodies against a real `pdp serve --http-listen`: every one gets a 4xx JSON error
naming the field, or the decision the engine makes of it in process — never a 5xx, a stack
trace, or an allow the policies would not give."""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import POLICIES, Pdp, Reply, assert_error, pdp_serve

from pdp.engine import Engine, compile_policy_set
from pdp.errors import RequestError
from pdp.http import authzen
from pdp.model.loader import load_policy_dir
from pdp.model.request import DEFAULT_LIMITS

MAX_BODY = 64 * 1024
VALID = {
    "subject": {
        "type": "user",
        "id": "alice",
        "properties": {
            "tenant": "acme",
            "roles": ["user"],
            "scopes": ["docs:read"],
            "kbs": ["kb-eng"],
        },
    },
    "action": {"name": "read"},
    "resource": {
        "type": "document",
        "id": "d-100",
        "properties": {
            "tenant": "acme",
            "owner": "alice",
            "classification": "internal",
            "kb": "kb-eng",
        },
    },
    "context": {"ip": "10.20.30.40"},
}
PATHS = ("/access/v1/evaluation", "/access/v1/evaluations", "/access/v1/search/action", "/v1/check")


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve("--max-message-bytes", str(MAX_BODY)) as p:
        yield p


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(compile_policy_set(load_policy_dir(POLICIES)))


def _raw(pdp: Pdp, path: str, data: bytes, headers: dict[str, str] | None = None) -> Reply:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return pdp.request("POST", path, raw=data, headers=hdrs)


# -- named attacks --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[]", "body"),
        (b'"a string"', "body"),
        (b"\xff\xfe{}", "body"),
        (b'{"subject": {"id": "\xc3\x28"}}', "body"),
        (b'{"a": NaN}', "body"),
        (b'{"a": Infinity}', "body"),
        (b'{"a": "\\ud800"}', "body"),
        (b"[" * 100_00 + b"]" * 100_00, "body"),
        (b'{"a": ' + b"9" * 5000 + b"}", "body"),
    ],
)
def test_malformed_bodies_are_400_naming_the_body(
    pdp: Pdp, path: str, data: bytes, field: str
) -> None:
    assert_error(_raw(pdp, path, data), 400, field)


@pytest.mark.parametrize("path", PATHS)
def test_duplicate_keys_are_refused(pdp: Pdp, path: str) -> None:
    data = (
        b'{"subject": {"type": "user", "id": "mallory", "id": "alice"}, "action": {"name": "read"}}'
    )
    assert_error(_raw(pdp, path, data), 400, "id")


def test_duplicate_keys_cannot_smuggle_a_tenant(pdp: Pdp) -> None:
    body = json.dumps(VALID).replace(
        '"tenant": "acme", "roles"', '"tenant": "globex", "tenant": "acme", "roles"'
    )
    assert body.count('"tenant"') == 3
    assert_error(_raw(pdp, "/access/v1/evaluation", body.encode()), 400, "tenant")


@pytest.mark.parametrize("path", PATHS)
def test_oversized_declared_body_is_refused_before_it_is_read(pdp: Pdp, path: str) -> None:
    host, port = pdp.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10 * 1024 * 1024 * 1024))
        conn.endheaders()
        conn.send(b"{")  # and nothing more: the answer must not wait for 10 GiB
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    err = assert_error(reply, 400, "body")
    assert str(MAX_BODY) in err["message"]


def test_oversized_chunked_body_is_refused(pdp: Pdp) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"subject": {"type": "user", "id": "a", "properties": {"x": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}}}'

    host, port = pdp.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            "/access/v1/evaluation",
            body=chunks(),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    assert_error(reply, 400, "body")


def test_body_just_under_the_limit_is_decided(pdp: Pdp) -> None:
    body = json.loads(json.dumps(VALID))
    body["resource"]["properties"]["pad"] = "x" * (MAX_BODY - len(json.dumps(VALID)) - 100)
    data = json.dumps(body).encode()
    assert len(data) < MAX_BODY
    reply = _raw(pdp, "/access/v1/evaluation", data)
    assert reply.status == 200
    assert reply.json["decision"] is True


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["subject"].pop("id"), "subject.id"),
        (lambda b: b["subject"].pop("type"), "subject.type"),
        (lambda b: b["resource"].pop("id"), "resource.id"),
        (lambda b: b["resource"].update(type=""), "resource.type"),
        (lambda b: b["action"].pop("name"), "action.name"),
        (lambda b: b.pop("subject"), "subject"),
        (lambda b: b.update(subject="alice"), "subject"),
        (lambda b: b["subject"].update(id=["alice"]), "subject.id"),
        (lambda b: b["subject"].update(properties=[1]), "subject.properties"),
        (lambda b: b["subject"]["properties"].update(tenant=7), "subject.properties.tenant"),
        (lambda b: b["subject"]["properties"].update(roles="admin"), "subject.properties.roles"),
        (
            lambda b: b["subject"]["properties"].update(roles=["admin", 1]),
            "subject.properties.roles[1]",
        ),
        (lambda b: b["subject"]["properties"].update(scopes={"a": 1}), "subject.properties.scopes"),
        (lambda b: b["subject"]["properties"].update(actor="bot"), "subject.properties.actor"),
        (
            lambda b: b["subject"]["properties"].update(actor={"type": "ai"}),
            "subject.properties.actor.id",
        ),
        (
            lambda b: b["resource"]["properties"].update(tenant=None, x=float("1e400")),
            "resource.properties.x",
        ),
        (lambda b: b["context"].update(ip="999.1.1.1"), "context.ip"),
        (lambda b: b["context"].update(time="yesterday"), "context.time"),
        (lambda b: b["context"].update(time=12), "context.time"),
        (lambda b: b.update(context=[]), "context"),
        (lambda b: b["action"].update(properties="soft"), "action.properties"),
        (lambda b: b["subject"].update(id="a" * 600), "subject.id"),
        (lambda b: b["resource"]["properties"].update(deep=_nest(40)), None),
    ],
)
def test_wrong_shapes_are_400_naming_the_field(pdp: Pdp, mutate: Any, field: str | None) -> None:
    body = json.loads(json.dumps(VALID))
    mutate(body)
    data = json.dumps(body).replace("Infinity", "1e400").encode()
    err = assert_error(_raw(pdp, "/access/v1/evaluation", data), 400, field)
    if field is None:
        assert err["field"].startswith("resource.properties.deep")


def _nest(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = {"a": v}
    return v


def test_headers_cannot_forge_a_request_id_beyond_limits(pdp: Pdp) -> None:
    reply = _raw(
        pdp, "/access/v1/evaluation", json.dumps(VALID).encode(), {"X-Request-ID": "r" * 600}
    )
    assert_error(reply, 400, "X-Request-ID")


# -- generated ------------------------------------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "subject",
    "action",
    "resource",
    "context",
    "evaluations",
    "options",
    "type",
    "id",
    "name",
    "properties",
    "tenant",
    "roles",
    "scopes",
    "actor",
    "time",
    "ip",
]


@st.composite
def hostile_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        # Walk to a random container and put a random value under a (likely meaningful) key.
        node: Any = body
        for _ in range(draw(st.integers(0, 3))):
            children = (
                [v for v in node.values() if isinstance(v, dict)] if isinstance(node, dict) else []
            )
            if not children:
                break
            node = draw(st.sampled_from(children))
        if isinstance(node, dict):
            key = draw(st.sampled_from(KEYS) | st.text(max_size=6))
            if draw(st.booleans()) and key in node:
                del node[key]
            else:
                node[key] = draw(json_value)
    return body


def _expected(engine: Engine, body: dict[str, Any]) -> bool | None:
    """The in-process decision for a body, or None when the translation refuses it."""
    try:
        request = authzen.check_request([authzen.single(body)], None, DEFAULT_LIMITS, "")
    except (RequestError, ValueError, TypeError):
        return None
    return (
        engine.check(request).results[0].actions[request.resources[0].actions[0]].effect == "allow"
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=hostile_bodies())
def test_generated_bodies_get_a_4xx_or_the_in_process_decision(
    pdp: Pdp, engine: Engine, body: dict[str, Any]
) -> None:
    data = json.dumps(body).encode()
    reply = _raw(pdp, "/access/v1/evaluation", data)
    assert reply.status < 500, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    if reply.status == 200:
        expected = _expected(engine, body)
        assert expected is not None, body
        assert reply.json["decision"] is expected
    else:
        assert_error(reply, reply.status)
        assert reply.status == 400


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200), path=st.sampled_from(PATHS))
def test_random_bytes_never_crash_or_allow(pdp: Pdp, data: bytes, path: str) -> None:
    reply = _raw(pdp, path, data)
    assert reply.status < 500
    assert b'"decision":true' not in reply.body
    assert b"EFFECT_ALLOW" not in reply.body


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=hostile_bodies(),
    semantic=st.sampled_from(
        [None, "execute_all", "deny_on_first_deny", "permit_on_first_permit", "other"]
    ),
)
def test_generated_batches_never_5xx(pdp: Pdp, body: dict[str, Any], semantic: str | None) -> None:
    batch = {
        "subject": body.get("subject"),
        "context": body.get("context"),
        "evaluations": [{"action": body.get("action"), "resource": body.get("resource")}] * 3,
    }
    if semantic is not None:
        batch["options"] = {"evaluations_semantic": semantic}
    reply = _raw(pdp, "/access/v1/evaluations", json.dumps(batch).encode())
    assert reply.status in (200, 400), reply.body
    if reply.status == 200:
        single = _expected_batch(body)
        assert len(reply.json["evaluations"]) >= 1
        assert single is None or all(e["decision"] is single for e in reply.json["evaluations"])


_ENGINE: list[Engine] = []


def _expected_batch(body: dict[str, Any]) -> bool | None:
    if not _ENGINE:
        _ENGINE.append(Engine(compile_policy_set(load_policy_dir(POLICIES))))
    return _expected(_ENGINE[0], body)


def _raw_http(pdp: Pdp, data: bytes) -> bytes:
    import socket

    host, port = pdp.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"a" * 20000
        + b"\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    ],
)
def test_malformed_http_framing_is_a_400_and_a_closed_connection(pdp: Pdp, data: bytes) -> None:
    # Refused by the HTTP parser before any handler runs (plain text there: no JSON exists yet).
    answer = _raw_http(pdp, data)
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:200]
    assert b"Traceback" not in answer
    assert b'"decision"' not in answer


def test_a_gzip_body_is_not_inflated(pdp: Pdp) -> None:
    import gzip

    bomb = gzip.compress(b"[" * 10_000_000)
    assert len(bomb) < MAX_BODY
    reply = _raw(pdp, "/access/v1/evaluation", bomb, {"Content-Encoding": "gzip"})
    assert_error(reply, 400, "body")
