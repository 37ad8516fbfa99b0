"""`_method` in a JSON body (forms.json_method_values, request.body_method_override): Laravel
reads a top-level `_method` from an `application/json` (or `+json`) body, so pdp does too,
and the work a hostile body costs stays bounded (urlencoded and multipart scans as well)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.errors import PolicyErrors
from pdp.gateway.forms import (
    MAX_FORM_BYTES,
    MAX_JSON_DEPTH,
    MAX_METHOD_FIELDS,
    MAX_PARSED_BYTES,
    FormError,
    _is_method_name,
    is_json,
    json_method_values,
    method_values,
)
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import (
    AMBIGUOUS_METHOD,
    FORM_BODY_REQUIRED,
    HttpAttributes,
    body_method_override,
    translate,
)

from ._support import MAPPING

SEARCH = "/v1/tenants/acme/kb/search"  # the shared mapping's route that maps POST
JSON = "application/json"
CLAIMS = {"sub": "alice", "tid": "acme"}


def _mapping(**spec: Any) -> Any:
    doc = copy.deepcopy(MAPPING)
    doc["spec"].update(spec)
    return load_route_mapping(doc)


LOOSE, STRICT = _mapping(), _mapping(bodyMethodOverride=True)


def _attrs(
    body: bytes | None, content_type: str = JSON, partial: bool = False, method: str = "POST"
) -> HttpAttributes:
    headers = {"content-type": content_type}
    if body is not None:
        headers["content-length"] = str(len(body))
    else:
        headers["content-length"] = "40"
    return HttpAttributes(method, SEARCH, headers, "10.1.2.3", body=body, body_partial=partial)


def _reason(attrs: HttpAttributes, honoured: bool = False) -> str:
    t = translate(attrs, STRICT if honoured else LOOSE, None, claims=CLAIMS)
    return t.reason if t.kind == "bad_request" else t.kind


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.api+json",
        "application/merge-patch+json ;q=1",
        "text/json",
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        b'{"_method": "DELETE"}',
        b'{"q": 1, "_method": "delete"}',
        b' \r\n{"\\u005fmethod": "DELETE"}',  # escaped: `_method` once parsed
        b'\xef\xbb\xbf{"_method": "PUT"}',  # a BOM
        b'{"x": "\xff", "_method": "DELETE"}',  # not UTF-8: Node's body-parser replaces it
        b'{"x": ' + b"1" * 5000 + b', "_method": "DELETE"}',  # PHP reads a float
        b'{"x": "\x01", "_method": "DELETE"}',  # a raw control character
        b'{"_method": "POST", "_method": "DELETE"}',  # twice: parsers keep first or last
        b'{"_method": "POST", "_method": "POST"}',
        b'{"_method": ["DELETE"]}',  # no string: refused, never guessed
        b'{"_method": null}',
        '{"_method": "PUT"}'.encode("utf-16"),
    ],
)
def test_a_top_level_json_method_naming_another_method_is_refused(
    content_type: str, body: bytes
) -> None:
    assert _reason(_attrs(body, content_type)) == AMBIGUOUS_METHOD


@pytest.mark.parametrize(
    "body",
    [
        b'{"_method": "POST"}',
        b'{"_method": " post "}',
        b'{"q": {"_method": "DELETE"}}',  # nested: Laravel's bag holds top-level keys only
        b'[{"_method": "DELETE"}]',  # an array: `(array)` of a list has no `_method`
        b'"_method"',
        b'{"_Method": "DELETE", "method": "DELETE"}',  # PHP's keys are case-sensitive
        b'{"_method": "DELETE"',  # no JSON: json_decode gives null, an empty bag
        b"_method=DELETE",  # a form under a JSON type: Laravel reads it as JSON, not a form
        b"",
    ],
)
def test_json_no_framework_reads_a_method_from_passes(body: bytes) -> None:
    assert _reason(_attrs(body)) == "check"


def test_laravels_json_test_is_a_substring_test_over_the_whole_header() -> None:
    assert is_json("application/json") and is_json("application/problem+JSON")
    assert is_json("text/plain; x=/json")
    assert not is_json("application/jsonp") or is_json("application/jsonp")  # `/json` prefix
    assert not is_json("text/plain") and not is_json(None)
    # A form type that also says json is checked both ways.
    both = "application/x-www-form-urlencoded; x=+json"
    assert _reason(_attrs(b"_method=DELETE", both)) == AMBIGUOUS_METHOD
    assert _reason(_attrs(b'{"_method": "DELETE"}', both)) == AMBIGUOUS_METHOD


def test_json_nested_deeper_than_the_bound_is_refused_not_parsed() -> None:
    n = MAX_JSON_DEPTH - 1  # the object is a level too
    deep = b'{"a": ' + b"[" * n + b"]" * n + b', "_method": "PUT"}'
    assert json_method_values(deep) == ["PUT"]  # at the bound: parsed
    deeper = b'{"a": ' + b"[" * (n + 1) + b"]" * (n + 1) + b', "_method": "POST"}'
    assert _reason(_attrs(deeper)) == AMBIGUOUS_METHOD
    # Without a key that can be `_method`, nothing is parsed, however deep.
    assert _reason(_attrs(deeper.replace(b"_method", b"_other"))) == "check"
    # Brackets inside strings do not nest, and many shallow ones do not add up.
    text = json.dumps({"a": "[" * 5000, "b": [[]] * 5000, "_method": "POST"}).encode()
    assert json_method_values(text) == ["POST"]
    assert _reason(_attrs(text)) == "check"


def test_with_body_method_override_a_json_body_not_got_in_full_is_refused() -> None:
    body = b'{"q": 1, "x": "aaaa'
    assert _reason(_attrs(body, partial=True)) == "check"  # a cut JSON text is not read
    assert _reason(_attrs(body, partial=True), honoured=True) == FORM_BODY_REQUIRED
    assert _reason(_attrs(None), honoured=True) == FORM_BODY_REQUIRED
    assert _reason(_attrs(None)) == "check"
    big = b'{"q": "' + b"a" * MAX_PARSED_BYTES + b'"}'
    assert body_method_override(_attrs(big), honoured=True)[0] == FORM_BODY_REQUIRED
    t = translate(_attrs(None), STRICT, None, claims=CLAIMS)
    assert "JSON `POST`" in t.message and "with_request_body" in t.message


def test_the_old_setting_name_still_works_and_the_two_must_agree() -> None:
    assert _mapping(formMethodOverride=True).form_method_override
    assert _mapping(bodyMethodOverride=True, formMethodOverride=True).form_method_override
    assert not _mapping(bodyMethodOverride=False).form_method_override
    with pytest.raises(PolicyErrors, match=r"spec\.bodyMethodOverride: contradicts"):
        _mapping(bodyMethodOverride=True, formMethodOverride=False)
    with pytest.raises(PolicyErrors, match=r"spec\.bodyMethodOverride: must be `true`"):
        _mapping(bodyMethodOverride="yes")


# -- bounded work ---------------------------------------------------------------------------


def test_many_urlencoded_fields_spelled_like_method_are_refused_after_the_bound() -> None:
    few = "&".join(["[method[x]=1"] * MAX_METHOD_FIELDS)
    assert method_values(few) == []
    with pytest.raises(ValueError, match="fields spelled like"):
        method_values(few + "&[method[x]=1")
    hostile = ("[method[x]=&" * (MAX_FORM_BYTES // 12)).encode()
    assert _reason(_attrs(hostile, "application/x-www-form-urlencoded")) == AMBIGUOUS_METHOD


def test_a_query_of_many_method_look_alikes_is_refused_not_an_error() -> None:
    query = "&".join(["[method[x]=1"] * (MAX_METHOD_FIELDS + 1))
    attrs = HttpAttributes("GET", f"{SEARCH}?{query}", {}, "10.1.2.3")
    t = translate(attrs, LOOSE, None, claims=CLAIMS)
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), t.message
    assert "query: more than" in t.message


@pytest.mark.parametrize(
    "key",
    ["_method", "%5Fmethod", "%5f%6D%65%74%68%6F%64", "+ %20_method", ".method", "[method",
     "_method[]", "_method[a]b", "%2emethod", "%5Bmethod"],
)  # fmt: skip
def test_the_field_scan_finds_every_spelling_among_junk(key: str) -> None:
    text = "&".join(["%41=1"] * 1000 + [f"{key}=DELETE"] + ["b=2"] * 1000)
    assert method_values(text) == ["DELETE"]


def _every_field(text: str) -> list[str]:
    """The field loop the scan replaced: every field split off and decoded, then compared."""
    from urllib.parse import unquote_plus

    values = []
    for pair in text.split("&"):
        key, _, value = pair.partition("=")
        if _is_method_name(unquote_plus(key, encoding="latin-1")):
            values.append(unquote_plus(value, encoding="latin-1"))
    return values


_PIECES = st.sampled_from(
    ["_", ".", "[", "]", " ", "+", "%", "5", "f", "F", "B", "2", "e", "E", "6", "d", "D", "7",
     "4", "8", "m", "t", "h", "o", "&", "=", "method", "%5F", "%6D", "%20", "%2e", "x", "1"]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=40).map("".join))
def test_the_field_scan_finds_what_decoding_every_field_finds(text: str) -> None:
    try:
        found = method_values(text)
    except FormError:
        return  # over MAX_METHOD_FIELDS look-alikes: refused, which never lets one through
    assert found == _every_field(text)


def test_a_multipart_body_is_parsed_to_its_own_smaller_bound() -> None:
    boundary = "XyZb"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\n'.encode()
    tail = f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'
    tail += f"DELETE\r\n--{boundary}--\r\n"
    body = head + b"a" * MAX_PARSED_BYTES + tail.encode()
    attrs = _attrs(body, f"multipart/form-data; boundary={boundary}")
    assert _reason(attrs) == "check"  # past the bound: not read
    assert _reason(attrs, honoured=True) == FORM_BODY_REQUIRED
    small = head + b"a" * 100 + tail.encode()
    assert _reason(_attrs(small, f"multipart/form-data; boundary={boundary}")) == AMBIGUOUS_METHOD
