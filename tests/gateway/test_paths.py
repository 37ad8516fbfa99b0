"""The request path pdp decides on: one canonical form, or a refusal with a reason."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdp.gateway.paths import MAX_PATH_CHARS, MAX_SEGMENTS, PathError, canonicalize


@pytest.mark.parametrize(
    ("target", "path", "segments", "query"),
    [
        ("/", "/", (), ""),
        ("/a/b", "/a/b", ("a", "b"), ""),
        ("/a/b/", "/a/b/", ("a", "b"), ""),  # one trailing slash: same resource
        ("/a/%41%62%7e%7E%2d%5F%2e1", "/a/Ab~~-_.1", ("a", "Ab~~-_.1"), ""),  # unreserved decoded
        ("/a/%3b%3a%40%2b%20", "/a/%3B%3A%40%2B%20", ("a", ";:@+ "), ""),  # reserved kept, upper
        ("/a/%c3%a9", "/a/%C3%A9", ("a", "é"), ""),
        ("/a/'()*!$&+,=:@", "/a/'()*!$&+,=:@", ("a", "'()*!$&+,=:@"), ""),
        ("/a/...", "/a/...", ("a", "..."), ""),  # not a dot segment
        ("/a?x=%2f..&y", "/a", ("a",), "x=%2f..&y"),  # the query is not the path
    ],
)
def test_canonical(target, path, segments, query):
    c = canonicalize(target)
    assert (c.path, c.segments, c.query) == (path, segments, query)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/u/bob/c1%2f..%2f..%2falice", "path_encoded_slash"),
        ("/a%2Fb", "path_encoded_slash"),
        ("/a%5cb", "path_encoded_slash"),
        ("/a%5C", "path_encoded_slash"),
        ("/a/..", "path_dot_segment"),
        ("/a/./b", "path_dot_segment"),
        ("/a/%2e%2e/b", "path_dot_segment"),
        ("/a/.%2E", "path_dot_segment"),
        ("/a/%2E", "path_dot_segment"),
        ("/a//b", "path_empty_segment"),
        ("//a", "path_empty_segment"),
        ("//", "path_empty_segment"),
        ("/a;x=y/b", "path_parameter"),
        ("/a/b;", "path_parameter"),
        ("/a/%zz", "path_bad_escape"),
        ("/a/%2", "path_bad_escape"),
        ("/a/%", "path_bad_escape"),
        ("/a/%ff", "path_bad_escape"),  # not UTF-8
        ("/a/%c0%af", "path_bad_escape"),  # overlong UTF-8 for `/`
        ("/a/%2541", "path_double_encoding"),
        ("/a/%00", "path_control_char"),
        ("/a/%0d%0a", "path_control_char"),
        ("/a/%7F", "path_control_char"),
        ("/a/%C2%85", "path_control_char"),  # NEL
        ("/a/\x00", "path_control_char"),
        ("/a/\t", "path_control_char"),
        ("/a\\b", "path_backslash"),
        ("/a/é", "path_invalid_char"),  # raw non-ASCII must be escaped
        ("/a b", "path_invalid_char"),
        ("/a/<b>", "path_invalid_char"),
        ("/a#frag", "path_invalid_char"),
        ("/a?x=1 2", "path_invalid_char"),
        ("/a/%EF%BC%8F", "path_unicode_form"),  # fullwidth solidus
        ("/a/%EF%BC%8E%EF%BC%8E", "path_unicode_form"),  # fullwidth `..`
        ("/a/%E2%84%AA", "path_unicode_form"),  # Kelvin sign -> K
        ("a/b", "path_not_absolute"),
        ("", "path_not_absolute"),
        ("*", "path_not_absolute"),
        ("http://evil/a", "path_not_absolute"),
        ("/" + "a" * MAX_PATH_CHARS, "path_too_long"),
        ("/a" * (MAX_SEGMENTS + 1), "path_too_long"),
    ],
)
def test_refused(target, reason):
    with pytest.raises(PathError) as e:
        canonicalize(target)
    assert e.value.reason == reason


_PIECES = st.sampled_from(
    ["a", "B", "%41", "%7e", "%2e", "%2E", ".", "..", "/", "%2f", "%5C", "\\", ";", "%3b", "%25",
     "%", "%c3%a9", "%e9", "%EF%BC%8F", "%00", "é", " ", "~", "?", "#", "%zz", "%2541"]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=12).map(lambda xs: "/" + "".join(xs)))
def test_canonical_form_invariants(target):
    """Whatever is accepted: segments are what the canonical path decodes to, none is empty,
    `.`, `..` or holds `/`, and canonicalizing again changes nothing."""
    try:
        c = canonicalize(target)
    except PathError as e:
        assert e.reason.startswith("path_")
        return
    decoded = tuple(unquote(s, errors="strict") for s in c.path[1:].split("/") if s)
    assert c.segments == decoded
    assert all(s not in ("", ".", "..") and "/" not in s and "\\" not in s for s in c.segments)
    assert canonicalize(c.target) == c
