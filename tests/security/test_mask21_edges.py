"""Decision-log masking at its edges (session 21).

- A `Basic` credential whose token is under 8 characters (`Basic YTpi` is `a:b`) was logged:
  only tokens of 8 or more were read as one. Any length that decodes to `user:password` is
  masked now, in either base64 alphabet.
- A scheme word that swallowed the next scheme as its "token" (`Basic Negotiate YIIx…`,
  `Basic Bearer abc`) hid the credential after it: the search went on past it.
- `Bearer` (or `DPoP`) before a hand-picked prose word (`of`, `token`, `invalid`, ...) was not
  masked; a word is a valid bearer token, so the next word is masked whatever it is.
- An `EYJ…` (upper-case) token was masked by the pattern, which read `eyJ` in any case, and
  hidden from it by the pre-filter, which did not: a real JWT starts `eyJ` exactly (base64url
  of `{"`), so both read it so, and a property test holds the pre-filter to never hiding what
  the patterns (all three) would mask.
"""

from __future__ import annotations

import base64
import functools
import re
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pdp.telemetry.masking import (
    _CREDENTIAL_VALUE,
    _INNER_CREDENTIAL,
    _SCHEME_NAMES,
    MASKED,
    Masker,
    _redact_spans,
    _spans,
    may_hold_credential,
    redact_credentials,
)


def _as_attribute(text: str) -> Any:
    request = {"principal": {"id": "p", "attr": {"note": text}}}
    return Masker().mask_request(request).request["principal"]["attr"]["note"]


_USERPASS = st.text(alphabet=string.ascii_letters + string.digits + "-._~!$", max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    user=_USERPASS,
    password=_USERPASS,
    padded=st.booleans(),
    urlsafe=st.booleans(),
    before=st.sampled_from(["", "call me, ", "Authorization: ", "x\t"]),
    after=st.sampled_from(["", " thanks", ", then", "\n"]),
)
@example(user="a", password="b", padded=False, urlsafe=False, before="", after="")
@example(user="", password="", padded=True, urlsafe=False, before="", after="")
def test_a_short_basic_credential_is_masked(
    user: str, password: str, padded: bool, urlsafe: bool, before: str, after: str
) -> None:
    raw = f"{user}:{password}".encode()
    token = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    if not padded:
        token = token.rstrip("=")
    text = f"{before}Basic {token}{after}"
    assert redact_credentials(text) == f"{before}{MASKED}{after}"
    assert _as_attribute(text) == MASKED


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Basic Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag", "YIIGhgYGKwYBBQUCoIIGejCCBnag"),
        ("Basic Bearer abc", "abc"),
        ('basic digest username="u", response="r0-SECRET"', "r0-SECRET"),
        ("Basic NTLM TlRMTVNTUAABAAAAB4IIog==", "TlRMTVNTUAABAAAAB4IIog"),
    ],
)
def test_a_scheme_word_does_not_swallow_the_credential_after_it(text: str, secret: str) -> None:
    assert secret not in redact_credentials(text)
    assert _as_attribute(text) == MASKED


# The words that used to end a `Bearer …` as prose, and any other word.
_FORMER_PROSE = st.sampled_from(
    ["of", "the", "a", "is", "not", "no", "token", "tokens", "scheme", "auth", "header",
     "credential", "missing", "required", "expected", "invalid", "value"]
)  # fmt: skip
_WORD = st.text(alphabet=string.ascii_letters + string.digits + "-._~+/", min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    scheme=st.sampled_from(["Bearer", "bearer", "BEARER", "DPoP"]),
    word=_FORMER_PROSE | _WORD,
    end=st.sampled_from(["", ".", " was sent", ", thanks"]),
)
@example(scheme="Bearer", word="of", end=" bad news")
def test_bearer_and_any_word_after_it_is_masked(scheme: str, word: str, end: str) -> None:
    text = f"the {scheme} {word}{end}"
    assert f" {word}{end}" not in redact_credentials(text)
    assert _as_attribute(text) == MASKED


def test_only_a_real_jwts_case_is_a_jwt() -> None:
    jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
    assert redact_credentials(f"url?t={jwt}") == f"url?t={MASKED}"
    for fake in (jwt.upper(), "EYJhbGci.x.y", "eyjafjallajokull.is.big"):
        assert redact_credentials(fake) == fake
        assert _as_attribute(fake) == fake


@functools.cache
def _case_variants() -> dict[str, str]:
    """Every character `re.IGNORECASE` reads as each letter of the scheme names (the long s, the
    Kelvin sign, dotted and dotless i, ...), found by asking `re` itself."""
    letters = sorted({c for name in _SCHEME_NAMES for c in name if c.isalpha()} | set("eyj"))
    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    out = {}
    for letter in letters:
        out[letter] = "".join(re.findall(letter, everything, re.IGNORECASE))
    return out


@st.composite
def _spelt(draw: st.DrawFn, word: str) -> str:
    """`word` with each letter in any case `re.IGNORECASE` reads as it."""
    variants = _case_variants()
    return "".join(draw(st.sampled_from(variants[c])) if c in variants else c for c in word)


_PIECES = st.one_of(
    st.sampled_from(_SCHEME_NAMES).flatmap(_spelt),
    st.sampled_from(["eyJ", "eyj"]).flatmap(_spelt),  # `eyJ` in every case, `EYJ` included
    # The heads of a header opening `{` and whitespace (`{ "` is `eyAi`), in every case.
    st.sampled_from(["eyAi", "eyAg", "ewog", "ewoK", "ewki", "ewkJ", "ew0K", "ew0i"]).flatmap(
        _spelt
    ),
    st.sampled_from(
        [".", "-", "=", ",", ":", '"', "`", "x=1", "YTpi", "Og==", "abc", "dXNlcjpwYXNz",
         "abcdefgh12", "sig"]
    ),
)  # fmt: skip
_SPACES = st.sampled_from(
    ["", "", " ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c", "\x85", "\u2028"]
)


@settings(max_examples=600, deadline=None)
@given(parts=st.lists(st.tuples(_PIECES, _SPACES), max_size=8), tail=st.text(max_size=6))
@example(parts=[("EYJhbGciOiJIUzI1NiJ9", ""), (".", ""), ("abc", ""), (".", ""), ("sig", "")],
         tail="")  # fmt: skip
@example(parts=[("ba\u017fic", "\u00a0"), ("YTpi", "")], tail="")
@example(parts=[("ewoK", ""), (".", ""), ("abc", ""), (".", ""), ("sig", "")], tail="")
@example(parts=[("x=1", " "), ("ew0K", ""), (".", ""), ("abc", ""), (".", "")], tail="")
@example(parts=[("eyAi", ""), (".", ""), ("abc", ""), (".", "")], tail="")
@example(parts=[("ewki", ""), (".", ""), ("abc", ""), (".", "")], tail="")
def test_the_pre_filter_never_hides_what_the_patterns_mask(
    parts: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(a + b for a, b in parts) + tail
    found = bool(_CREDENTIAL_VALUE.match(text) or _INNER_CREDENTIAL.search(text) or _spans(text))
    if found:
        assert may_hold_credential(text)
    assert redact_credentials(text) == _redact_spans(text)
    # The scrub inlines the pre-filter: it masks exactly what the patterns find.
    assert (_as_attribute(text) == MASKED) is found or text == MASKED
