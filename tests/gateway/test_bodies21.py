"""Gateway bodies at their edges (session 21), through the ext_authz servicer with real protobuf
messages and a real engine.

- A JSON body cut at `max_request_bytes` was not read at all under `bodyMethodOverride: false`:
  `{"_method": "DELETE", "text": "...` past the cut reached a Laravel upstream as a DELETE.
  Its top-level keys are now read as far as the cut (`forms.json_prefix_method_values`).
- A POST without a content type (Rack reads its body as a form) whose body Envoy did not send
  passed under `bodyMethodOverride: true`: Envoy shows pdp no `transfer-encoding`, so a chunked
  body looks like none. It is refused now unless it says `content-length: 0`.
- The JSON depth check's string pattern re-scanned an unterminated string to its end at every
  escaped quote (quadratic: 128 KiB of `\\"` cost ~55 s of CPU); it takes such a string as one
  token now.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pdp.engine import EngineHolder
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.forms import (
    _JSON_STRING,
    CUT_VALUE,
    MAX_METHOD_PAYLOAD,
    FormError,
    json_method_values,
    json_prefix_method_values,
    multipart_method_values,
)
from pdp.gateway.request import AMBIGUOUS_METHOD, FORM_BODY_REQUIRED
from pdp.gateway.servicer import ExtAuthzServicer, GatewayOptions, GatewayResolver

from ._support import MAPPING
from .test_servicer import KEYS, RecordingEngine, _request, _token, real_engine

SEARCH = "/v1/tenants/acme/kb/search"  # the shared mapping's route that maps POST
PARTIAL = "x-envoy-auth-partial-body"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> RecordingEngine:
    return real_engine(tmp_path_factory.mktemp("policies"))


def _servicer(engine: RecordingEngine, honoured: bool) -> ExtAuthzServicer:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["bodyMethodOverride"] = honoured
    return ExtAuthzServicer(EngineHolder(engine), GatewayResolver(GatewayOptions(mapping=doc)))


def _post(
    method: str = "POST",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    marker: str | None = None,
) -> ext.CheckRequest:
    """A request as Envoy sends it: `body` is what `with_request_body` forwarded (None: no body
    and no marker, as Envoy sends a request it did not buffer)."""
    req = _request(SEARCH, _token(KEYS), method=method)
    http = req.attributes.request.http
    for k, v in (headers or {}).items():
        http.headers[k] = v
    if marker is not None:
        http.headers[PARTIAL] = marker
    if body:
        http.raw_body = body
    return req


def _outcome(svc: ExtAuthzServicer, req: ext.CheckRequest) -> tuple[int, str]:
    """(status, reason) of a refusal, or `DECIDED` when the engine decided (the shared test
    policies deny this route: whatever they say, the request got past the body check)."""
    out = svc.check(req)
    return DECIDED if out.http_status == 403 else (out.http_status, out.reason)


DECIDED = (403, "decided")


# -- a cut JSON body -----------------------------------------------------------------------------

_KEYS = st.sampled_from(
    ['"_method"', '"\\u005fmethod"', '"_metho\\u0064"', '"a"', '"_m"', '"_methods"', '"method"']
) | st.text(max_size=6).map(json.dumps)
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["POST", "DELETE", "post", "", " PUT "]),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["_method", "b"]), inner, max_size=2)
    ),
    max_leaves=8,
)
_SPACE = st.sampled_from(["", " ", "\n", "\r\n\t "])


@st.composite
def _json_object(draw: st.DrawFn) -> tuple[str, list[int]]:
    """A JSON object's text, a top-level key possibly given twice, and where each top-level
    `_method` pair's value ends, in bytes."""
    pairs = draw(st.lists(st.tuples(_KEYS, _VALUES), max_size=5))
    text, ends = "{" + draw(_SPACE), []
    for i, (key, value) in enumerate(pairs):
        if i:
            text += draw(_SPACE) + "," + draw(_SPACE)
        text += key + draw(_SPACE) + ":" + draw(_SPACE)
        text += json.dumps(value, ensure_ascii=draw(st.booleans()))
        if json.loads(key) == "_method":
            ends.append(len(text.encode()))  # the cut is in bytes
    return text + draw(_SPACE) + "}", ends


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_json_object(), cut=st.integers(0, 10**6))
@example(case=('{"_method": "DELETE", "q": "aaaa"}', [20]), cut=25)
@example(case=('{"q": 1, "_method": "DELETE"}', [28]), cut=24)
def test_a_cut_json_body_is_read_key_by_key_as_far_as_the_cut(
    case: tuple[str, list[int]], cut: int
) -> None:
    text, ends = case
    body = text.encode()
    whole = json_method_values(body)
    # In full, the key-by-key read finds what parsing the whole text finds.
    assert json_prefix_method_values(body) == whole
    cut %= len(body) + 1
    seen = json_prefix_method_values(body[:cut])
    # Every `_method` whose value the cut leaves whole is seen, in order ...
    done = sum(1 for end in ends if end <= cut)
    assert seen[:done] == whole[:done]
    # ... one the cut runs through is no method, and nothing past the cut is made up.
    assert len(seen) <= done + 1
    if len(seen) > done:
        assert seen[-1] == CUT_VALUE or not isinstance(json.loads(seen[-1] or '""'), str)


@pytest.mark.parametrize("honoured", [False, True])
def test_a_cut_json_body_naming_another_method_in_its_start_is_refused(
    engine: RecordingEngine, honoured: bool
) -> None:
    svc = _servicer(engine, honoured)
    json_type = {"content-type": "application/json", "content-length": "99999"}
    for start in (b'{"_method": "DELETE", "text": "', b'{"a": [1, {"b": 2}], "_method": "DEL'):
        req = _post(headers=json_type, body=start + b"a" * 100, marker="true")
        if start.endswith(b"DEL"):
            req = _post(headers=json_type, body=start, marker="true")
        assert _outcome(svc, req) == (400, AMBIGUOUS_METHOD), start
    # A cut body whose start names no other method is the policy's (or, when the upstream
    # reads `_method` in bodies, refused for what pdp did not see).
    for start in (b'{"_method": "POST", "text": "', b'{"q": {"_method": "DELETE"}, "_met'):
        got = _outcome(svc, _post(headers=json_type, body=start, marker="true"))
        assert got == ((400, FORM_BODY_REQUIRED) if honoured else DECIDED), (start, got)


def test_the_depth_checks_string_token_runs_to_the_end_of_an_unterminated_string() -> None:
    """Each string of the text is one token, closed or not: a lone `"` token made every `\\"`
    of an unterminated string start a new scan to the end (quadratic)."""

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet='ab[]{}\\"', max_size=40))
    def check(inner: str) -> None:
        escaped = inner.replace("\\", "\\\\").replace('"', '\\"')
        assert _JSON_STRING.match('"' + escaped).end() == len(escaped) + 1
        assert _JSON_STRING.match('"' + escaped + '"').end() == len(escaped) + 2

    check()
    body = b'{"_method": "POST", "a": "' + b"[" * 600 + b'\\"' * 20_000
    assert json_method_values(body) == []  # no JSON: no method, and no refusal for depth


# -- a body Envoy did not send -------------------------------------------------------------------

_LENGTHS = st.sampled_from([None, "0", " 0", "14", "abc", "", "1,1"])
_UNTYPED = st.sampled_from([None, "", "  "])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(length=_LENGTHS, content_type=_UNTYPED, method=st.sampled_from(["POST", "post"]))
def test_with_body_method_override_an_untyped_post_pdp_got_no_body_of_is_refused(
    engine: RecordingEngine, length: str | None, content_type: str | None, method: str
) -> None:
    """A chunked (or HTTP/2) body reaches pdp with neither `transfer-encoding` nor a length;
    without `with_request_body` Envoy sends no body and no marker: only `content-length: 0`
    says there is nothing to hide."""
    headers = {} if length is None else {"content-length": length}
    if content_type is not None:
        headers["content-type"] = content_type
    got = _outcome(_servicer(engine, True), _post(method, headers))
    if length is not None and length.strip() == "0":
        assert got == DECIDED, got  # the policy's
    else:
        assert got == (400, FORM_BODY_REQUIRED), (headers, got)
    # The default decides it as before.
    assert _outcome(_servicer(engine, False), _post(method, headers)) == DECIDED


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_an_untyped_request_no_framework_overrides_is_decided_as_before(
    engine: RecordingEngine, method: str
) -> None:
    status, reason = _outcome(_servicer(engine, True), _post(method))
    assert reason != FORM_BODY_REQUIRED, (method, status, reason)


def test_an_untyped_body_envoy_sent_is_read_as_a_form(engine: RecordingEngine) -> None:
    svc = _servicer(engine, True)
    # `with_request_body`: a chunked body arrives with the marker and no length.
    assert _outcome(svc, _post(body=b"_method=DELETE", marker="false")) == (400, AMBIGUOUS_METHOD)
    assert _outcome(svc, _post(body=b"q=1", marker="false")) == DECIDED
    assert _outcome(svc, _post(body=b"", marker="false")) == DECIDED  # chunked and empty
    assert _outcome(svc, _post(body=b"q=1", marker="true")) == (400, FORM_BODY_REQUIRED)
    message = svc.check(_post()).message
    assert "with_request_body" in message and "content-length: 0" in message


# -- multipart: the parser reads the lines that matter -------------------------------------------

_B = "XyZb"
_LINES = st.sampled_from(
    [
        f"--{_B}",
        f"--{_B}--",
        f"--{_B} \t",
        f"--{_B}x",
        f"--{_B}--x",
        f"x--{_B}",
        'Content-Disposition: form-data; name="_method"',
        'content-disposition: form-data; name="text"',
        "Content-Disposition: form-data; name*=utf-8''%5Fmethod",
        'Content-Disposition: form-data; name="_method[]"',
        "Content-Transfer-Encoding: base64",
        "Content-Type: multipart/mixed; boundary=inner",
        "X-Other: y",
        "X-Method: 1",
        'CONTENT-DISPOSITION: form-data; name="_method"',
        "Content-Disposition: form-data;",
        ' name="_method"',
        "content-transfer-encoding:base64",
        "Content-Disposition : x",
        " folded",
        "From someone",
        ":no name",
        "",
        "",
        "DELETE",
        "POST",
        "  post ",
        "UE9TVA==",
        "REVMRVRF",
        "--",
        "x",
    ]
)
_EOL = st.sampled_from(["\r\n", "\r\n", "\n", "\r"])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.tuples(_LINES, _EOL), max_size=24),
    last_eol=st.booleans(),
    complete=st.booleans(),
)
@example(
    lines=[
        (f"--{_B}", "\r\n"),
        ('Content-Disposition: form-data; name="_method"', "\r\n"),
        ("", "\r\n"),
        ("", "\n"),
        ("  post ", "\r\n"),
        (f"--{_B}--", "\r\n"),
    ],
    last_eol=True,
    complete=True,
)
@example(
    lines=[
        (f"--{_B}", "\r\n"),
        ("Content-Type: multipart/mixed; boundary=inner", "\r\n"),
        (f"--{_B}--", "\r\n"),
        ('Content-Disposition: form-data; name="_method"', "\r\n"),
    ],
    last_eol=False,
    complete=False,
)  # a part of dropped headers only is still a part: the close delimiter ends the form
def test_multipart_read_from_its_delimiters_and_headers_finds_what_the_full_parse_finds(
    lines: list[tuple[str, str]], last_eol: bool, complete: bool
) -> None:
    """`multipart_method_values` hands `email`'s parser every delimiter line and each part's
    headers and first line, and the payload only of a part whose headers say `method`:
    the parts, their names, their defects and every `_method` value are what parsing the
    whole body finds."""
    body = "".join(text + eol for text, eol in lines)
    if lines and not last_eol:
        body = body[: -len(lines[-1][1])]
    content_type = f"multipart/form-data; boundary={_B}"

    def outcome(shrink: bool) -> object:
        try:
            return multipart_method_values(content_type, body.encode(), complete, shrink=shrink)
        except FormError as e:
            return str(e)

    assert outcome(True) == outcome(False)


def test_a_method_part_longer_than_any_method_name_is_refused_not_walked() -> None:
    """A `_method` part's payload is handed to the parser up to `MAX_METHOD_PAYLOAD` bytes: a
    longer one (`POST` padded with 256 KiB of newlines, which the parser walked line by line)
    reads as naming another method."""
    content_type = f"multipart/form-data; boundary={_B}"

    def form(value: bytes) -> bytes:
        head = f'--{_B}\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'.encode()
        return head + value + f"\r\n--{_B}--\r\n".encode()

    padded = b"\n" * MAX_METHOD_PAYLOAD + b"POST"
    assert multipart_method_values(content_type, form(padded), True, shrink=False) == [
        padded.decode()
    ]
    (value,) = multipart_method_values(content_type, form(padded), True)
    assert value.strip().upper() != "POST"
    short = b"\n" * (MAX_METHOD_PAYLOAD - 10) + b"POST"
    assert multipart_method_values(content_type, form(short), True) == [short.decode()]
