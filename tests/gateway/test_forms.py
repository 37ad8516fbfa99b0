"""`_method` in a form body (pdp/gateway/forms.py, request.body_method_override): parsed as the
frameworks that honour it parse it, whatever the spelling, and bounded in the work it costs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.gateway._gen.envoy.service.auth.v3 import attribute_context_pb2 as ac
from pdp.gateway.forms import (
    MAX_FORM_BYTES,
    MAX_PARTS,
    MULTIPART,
    URLENCODED,
    FormError,
    form_kind,
    method_views,
    multipart_method_values,
)
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import (
    AMBIGUOUS_METHOD,
    FORM_BODY_REQUIRED,
    HttpAttributes,
    body_method_override,
    translate,
)
from pdp.gateway.servicer import attributes_from_proto

from ._support import MAPPING

SEARCH = "/v1/tenants/acme/kb/search"  # the shared mapping's route that maps POST
FORM = "application/x-www-form-urlencoded"
CLAIMS = {"sub": "alice", "tid": "acme"}


def _mapping(honoured: bool = False) -> Any:
    doc = copy.deepcopy(MAPPING)
    if honoured:
        doc["spec"]["formMethodOverride"] = True
    return load_route_mapping(doc)


LOOSE, STRICT = _mapping(), _mapping(honoured=True)


def _attrs(
    body: bytes | None,
    content_type: str | None = FORM,
    method: str = "POST",
    partial: bool = False,
    length: str | None = "",
) -> HttpAttributes:
    headers = {} if content_type is None else {"content-type": content_type}
    if length == "" and body is not None:
        headers["content-length"] = str(len(body))
    elif length:
        headers["content-length"] = length
    return HttpAttributes(method, SEARCH, headers, "10.1.2.3", body=body, body_partial=partial)


def _translate(attrs: HttpAttributes, honoured: bool = False) -> Any:
    return translate(attrs, STRICT if honoured else LOOSE, None, claims=CLAIMS)


# -- urlencoded ----------------------------------------------------------------------------------


def _encode(text: str, which: list[bool], upper: list[bool]) -> str:
    """`text` with the characters `which` picks percent-encoded, hex in the case `upper` picks."""
    out = []
    for i, ch in enumerate(text):
        if which[i % len(which)]:
            hexed = f"{ord(ch):02x}"
            out.append("%" + (hexed.upper() if upper[i % len(upper)] else hexed))
        else:
            out.append(ch)
    return "".join(out)


FIELD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
OTHER = st.lists(st.tuples(FIELD, FIELD), max_size=5)
METHODS = st.sampled_from(["DELETE", "PUT", "PATCH", "GET", "delete", "Delete", " DELETE", ""])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.lists(st.booleans(), min_size=1, max_size=7),
    upper=st.lists(st.booleans(), min_size=1, max_size=3),
    value=METHODS,
    before=OTHER,
    after=OTHER,
    honoured=st.booleans(),
)
def test_an_encoded_method_field_naming_another_method_is_refused(
    which: list[bool],
    upper: list[bool],
    value: str,
    before: list[tuple[str, str]],
    after: list[tuple[str, str]],
    honoured: bool,
) -> None:
    name = _encode("_method", which, upper)
    pairs = [f"{k}={v}" for k, v in before] + [f"{name}={value}"] + [f"{k}={v}" for k, v in after]
    body = "&".join(pairs).encode()
    assert method_views(body.decode()) == [[value]]
    t = _translate(_attrs(body), honoured)
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), (body, t.kind, t.reason)
    assert "form body field `_method`" in t.message


@settings(deadline=None)
@given(value=st.sampled_from(["POST", "post", " Post "]), other=OTHER)
def test_a_method_field_naming_the_request_method_is_decided_as_usual(
    value: str, other: list[tuple[str, str]]
) -> None:
    body = "&".join([f"{k}={v}" for k, v in other] + [f"_method={value}"]).encode()
    for honoured in (False, True):
        assert _translate(_attrs(body), honoured).kind == "check"


@pytest.mark.parametrize(
    "body",
    [
        b"_method=POST&_method=DELETE",  # repeated: the upstream picks a copy, pdp cannot know
        b"_method=POST&_method=POST",
        b"_method=POST&%5Fmethod=DELETE",
        b"_method[]=DELETE",  # PHP and Rails read `_method[]` as `_method`
        b".method=DELETE",  # PHP registers `.` and ` ` in a name as `_`
        b"%20_method=DELETE",  # PHP drops leading spaces
        b"a=1;_method=DELETE",  # Rack before 3 splits at `;` too
        b"_method=POST;_method=DELETE",
        b"_method=+DELETE",
        b"_method=%44ELETE",
    ],
)
def test_every_spelling_an_upstream_reads_as_method_counts(body: bytes) -> None:
    t = _translate(_attrs(body))
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), (body, t.message)


@pytest.mark.parametrize(
    "body",
    [
        b"method=DELETE",
        b"+method=DELETE",
        b"x_method=DELETE",
        b"_methods=DELETE",
        b"q=_method%3DDELETE",
    ],
)
def test_names_no_upstream_reads_as_method_pass(body: bytes) -> None:
    assert _translate(_attrs(body)).kind == "check", body


def test_a_semicolon_elsewhere_does_not_count_one_method_twice() -> None:
    assert _translate(_attrs(b"_method=POST&note=a;b")).kind == "check"


# -- content types -------------------------------------------------------------------------------


def _case(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flips[i % len(flips)] else c for i, c in enumerate(text))


@settings(deadline=None)
@given(
    flips=st.lists(st.booleans(), min_size=1, max_size=9),
    params=st.sampled_from(["", ";charset=utf-8", "; charset=ISO-8859-1", " ;x=1", ";charset"]),
    space=st.sampled_from(["", " ", "\t"]),
)
def test_a_form_content_type_is_a_form_whatever_its_case_and_parameters(
    flips: list[bool], params: str, space: str
) -> None:
    content_type = space + _case(FORM, flips) + params
    assert form_kind(content_type) == URLENCODED
    t = _translate(_attrs(b"_method=DELETE", content_type))
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), content_type
    assert form_kind(_case("multipart/form-data", flips) + "; boundary=x" + params) == MULTIPART


@pytest.mark.parametrize(
    "content_type",
    [
        f"{FORM}, text/plain",  # a repeated header, joined by Envoy
        f"text/plain,{FORM}",
        'multipart/form-data; boundary="a,b", application/json',
    ],
)
def test_a_content_type_naming_a_form_and_another_type_is_refused(content_type: str) -> None:
    with pytest.raises(FormError):
        form_kind(content_type)
    t = _translate(_attrs(b"q=1", content_type))
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), content_type
    assert "content-type" in t.message


def test_a_quoted_comma_in_a_boundary_is_one_media_type() -> None:
    assert form_kind('multipart/form-data; boundary="a,b"') == MULTIPART
    assert form_kind("application/json, text/plain") == ""


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"method": "DELETE", "x": {"_method": "DELETE"}}'),
        ("text/plain", b"_method=DELETE"),
        (FORM, None),  # not sent, and the mapping does not say the upstream reads it
    ],
)
def test_what_is_no_form_or_was_not_sent_is_decided_as_before(
    content_type: str, body: bytes | None
) -> None:
    assert _translate(_attrs(body, content_type)).kind == "check"


def test_a_body_without_a_content_type_is_read_as_rack_reads_it_a_form() -> None:
    t = _translate(_attrs(b"_method=DELETE", content_type=None))
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD)
    assert _translate(_attrs(b"x=1", content_type=None)).kind == "check"
    # Not sent: decided as before unless the upstream honours `_method` in bodies; then a
    # bodiless POST says `content-length: 0` (test_gateway_bodies21 has the rest).
    assert _translate(_attrs(None, content_type=None)).kind == "check"
    assert _translate(_attrs(None, content_type=None, length="0"), honoured=True).kind == "check"


# -- a body pdp did not get in full --------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_with_form_method_override_a_form_without_its_body_is_refused_for_the_operator(
    method: str,
) -> None:
    attrs = _attrs(None, method=method, length="5")
    t = translate(attrs, STRICT, None, claims=CLAIMS)
    assert (t.kind, t.reason) == ("bad_request", FORM_BODY_REQUIRED), t.message
    assert "with_request_body" in t.message and "max_request_bytes" in t.message
    # No `content-length` (chunked, or HTTP/2): a body may follow, so the same.
    t = _translate(_attrs(None, length=None), honoured=True)
    assert (t.kind, t.reason) == ("bad_request", FORM_BODY_REQUIRED)
    # `content-length: 0`: nothing to override; nor on a GET labelled a form without a body.
    assert _translate(_attrs(None, length="0"), honoured=True).kind == "check"
    assert _translate(_attrs(None, method="GET", length=None), honoured=True).kind != "bad_request"
    t = _translate(_attrs(None, method="GET", length="5"), honoured=True)
    assert t.reason == FORM_BODY_REQUIRED


@pytest.mark.parametrize(
    ("partial", "length"),
    [(True, ""), (False, "99"), (False, "x"), (False, "5,5")],
)
def test_a_cut_body_is_checked_as_far_as_it_goes_and_refused_when_honoured(
    partial: bool, length: str
) -> None:
    attrs = _attrs(b"q=1&r=2", partial=partial, length=length)
    assert _translate(attrs).kind == "check"
    t = _translate(attrs, honoured=True)
    assert (t.kind, t.reason) == ("bad_request", FORM_BODY_REQUIRED), t.message
    assert "max_request_bytes" in t.message
    cut = _attrs(b"q=1&_method=DEL", partial=partial, length=length)
    assert _translate(cut).reason == AMBIGUOUS_METHOD  # what it holds is still read


def test_a_body_beyond_the_parse_bound_is_cut_there() -> None:
    body = b"q=" + b"a" * MAX_FORM_BYTES + b"&_method=DELETE"
    assert body_method_override(_attrs(body), honoured=False) == ("", "")
    reason, _ = body_method_override(_attrs(body), honoured=True)
    assert reason == FORM_BODY_REQUIRED
    early = b"_method=DELETE&q=" + b"a" * MAX_FORM_BYTES
    assert body_method_override(_attrs(early), honoured=False)[0] == AMBIGUOUS_METHOD


# -- multipart -----------------------------------------------------------------------------------


def _multipart(boundary: str, parts: list[tuple[str, bytes]], close: bool = True) -> bytes:
    out = b""
    for disposition, value in parts:
        out += f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


BOUNDARY = st.text(alphabet="abcdefghijKLMNOP0123456789-_.", min_size=1, max_size=40).filter(
    lambda b: not b.endswith("-")
)
NAME = st.sampled_from(
    ['name="_method"', "name=_method", 'name="_method[]"', "name*=UTF-8''_method"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boundary=BOUNDARY,
    name=NAME,
    value=METHODS,
    others=st.lists(st.tuples(FIELD, st.binary(max_size=30)), max_size=4),
    at=st.integers(min_value=0, max_value=4),
    quoted=st.booleans(),
    flips=st.lists(st.booleans(), min_size=1, max_size=5),
)
def test_a_multipart_method_part_naming_another_method_is_refused(
    boundary: str,
    name: str,
    value: str,
    others: list[tuple[str, bytes]],
    at: int,
    quoted: bool,
    flips: list[bool],
) -> None:
    parts = [(f'name="{k}"', v.replace(b"--", b"")) for k, v in others]
    parts.insert(min(at, len(parts)), (name, value.encode()))
    body = _multipart(boundary, parts)
    b = f'"{boundary}"' if quoted else boundary
    content_type = _case("multipart/form-data", flips) + f"; charset=utf-8; boundary={b}"
    assert value in multipart_method_values(content_type, body, complete=True)
    t = _translate(_attrs(body, content_type))
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), (body, t.message)


def test_a_multipart_form_naming_its_own_method_or_none_passes() -> None:
    content_type = "multipart/form-data; boundary=xyz"
    plain = _multipart("xyz", [('name="text"', b"hello"), ('name="file"; filename="a"', b"1")])
    assert _translate(_attrs(plain, content_type), honoured=True).kind == "check"
    own = _multipart("xyz", [('name="_method"', b"post")])
    assert _translate(_attrs(own, content_type), honoured=True).kind == "check"
    twice = _multipart("xyz", [('name="_method"', b"POST"), ('name="_method"', b"POST")])
    assert _translate(_attrs(twice, content_type)).reason == AMBIGUOUS_METHOD


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'),
        ("multipart/form-data; boundary=x", b"no delimiter at all"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"'),
        ("multipart/form-data; boundary=x\r\nX: y", _multipart("x", [('name="a"', b"1")])),
    ],
)
def test_a_complete_multipart_body_pdp_cannot_parse_cleanly_is_refused(
    content_type: str, body: bytes
) -> None:
    t = _translate(_attrs(body, content_type))
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), t.message


def test_a_cut_multipart_body_is_read_as_far_as_it_goes() -> None:
    content_type = "multipart/form-data; boundary=x"
    whole = _multipart("x", [('name="_method"', b"DELETE"), ('name="f"', b"a" * 100)])
    cut = whole[:-40]
    t = _translate(_attrs(cut, content_type, partial=True, length=str(len(whole))))
    assert t.reason == AMBIGUOUS_METHOD
    fine = _multipart("x", [('name="t"', b"hi"), ('name="f"', b"a" * 100)])[:-40]
    attrs = _attrs(fine, content_type, partial=True, length=str(len(fine) + 40))
    assert _translate(attrs).kind == "check"
    assert _translate(attrs, honoured=True).reason == FORM_BODY_REQUIRED


def test_a_multipart_bomb_is_refused_not_parsed() -> None:
    content_type = "multipart/form-data; boundary=b"
    many = _multipart("b", [('name="a"', b"")] * (MAX_PARTS + 1))
    with pytest.raises(FormError, match="parts"):
        multipart_method_values(content_type, many, complete=True)
    assert _translate(_attrs(many, content_type)).reason == AMBIGUOUS_METHOD
    enough = _multipart("b", [('name="a"', b"")] * MAX_PARTS)
    assert _translate(_attrs(enough, content_type)).kind == "check"
    # A part declaring itself multipart is text to pdp, as to form parsers: never parsed into
    # (90,000 nested parts in 800 KB cost seconds), and a `_method` one reads as another method.
    nested = b"Content-Type: multipart/mixed; boundary=y\r\n\r\n" + b"--y\r\n\r\nx\r\n" * 3
    bomb = _multipart("b", [('name="f"', nested[:-2])])
    bomb = bomb.replace(b'name="f"\r\n\r\n', b'name="f"\r\n', 1)
    assert multipart_method_values(content_type, bomb, complete=True) == []
    hidden = bomb.replace(b'name="f"', b'name="_method"')
    [value] = multipart_method_values(content_type, hidden, complete=True)
    assert (
        value.startswith("--y") and _translate(_attrs(hidden, content_type)).kind == "bad_request"
    )
    # A huge part is parsed only up to the bound, and counts as cut.
    huge = _multipart("b", [('name="f"', b"z" * (MAX_FORM_BYTES + 10))])
    assert _translate(_attrs(huge, content_type)).kind == "check"
    assert _translate(_attrs(huge, content_type), honoured=True).reason == FORM_BODY_REQUIRED


# -- what Envoy sends ----------------------------------------------------------------------------


def _proto(raw: bytes = b"", text: str = "", marker: str | None = None) -> ac.AttributeContext:
    attributes = ac.AttributeContext()
    http = attributes.request.http
    http.method, http.path = "POST", SEARCH
    http.headers["content-type"] = FORM
    if marker is not None:
        http.headers["x-envoy-auth-partial-body"] = marker
    if raw:
        http.raw_body = raw
    if text:
        http.body = text
    return attributes


def test_the_body_is_taken_from_raw_body_or_body_and_the_marker_says_if_it_was_cut() -> None:
    got = attributes_from_proto(_proto(raw=b"a=\xff", marker="false"), "jwt")
    assert (got.body, got.body_partial) == (b"a=\xff", False)
    got = attributes_from_proto(_proto(text="_method=DELETE", marker="true"), "jwt")
    assert (got.body, got.body_partial) == (b"_method=DELETE", True)
    # `with_request_body` and an empty body: Envoy sends no marker and no body.
    got = attributes_from_proto(_proto(), "jwt")
    assert (got.body, got.body_partial) == (None, False)
    # A caller that is not Envoy and sends a body without the marker sent all of it.
    got = attributes_from_proto(_proto(raw=b"q=1"), "jwt")
    assert (got.body, got.body_partial) == (b"q=1", False)


def test_a_mapping_setting_that_is_no_boolean_is_a_load_error() -> None:
    from pdp.errors import PolicyErrors

    doc = copy.deepcopy(MAPPING)
    doc["spec"]["formMethodOverride"] = "yes"
    with pytest.raises(PolicyErrors, match=r"spec\.formMethodOverride: must be `true` or `false`"):
        load_route_mapping(doc)
    assert not LOOSE.form_method_override and STRICT.form_method_override


def test_a_form_body_pdp_cannot_decode_is_refused_when_honoured() -> None:
    attrs = _attrs(b"\x1f\x8b...")
    encoded = HttpAttributes(
        "POST", SEARCH, {**attrs.headers, "content-encoding": "gzip"}, body=attrs.body
    )
    assert _translate(encoded).kind == "check"
    t = _translate(encoded, honoured=True)
    assert (t.kind, t.reason) == ("bad_request", FORM_BODY_REQUIRED) and "gzip" in t.message
    plain = HttpAttributes(
        "POST", SEARCH, {**_attrs(b"q=1").headers, "content-encoding": "identity"}, body=b"q=1"
    )
    assert _translate(plain, honoured=True).kind == "check"
