"""Decision-log masking reads a JWT whose header JSON has whitespace after its `{`.

The JWT pattern wanted `eyJ`, base64url of `{"`. A header written `{ "alg": …}` encodes to
`eyAi…`, `{\\n  "alg"` to `ewog…`, `{\\t` to `ewk…`, `{\\r\\n` to `ew0K…`: JSON all the same,
which a verifier parses, and such tokens reached the log whole (an attribute, a message, an
obligation's text). Now the first three bytes of the first part are read: `{`, whitespace,
whitespace or `"`. Words that merely start so (`ewok.example.com`) stay.
"""

from __future__ import annotations

import base64

import pytest

from pdp.telemetry.decision_log import _text
from pdp.telemetry.masking import MASKED, Masker, holds_credential, redact_credentials

HEADERS = [
    '{ "alg": "HS256", "typ": "JWT" }',
    '{\n  "alg": "RS256",\n  "kid": "k1"\n}',
    '{\t"alg":"ES256"}',
    '{\r\n"alg":"HS256"}',
    '{\n\n"alg":"none"}',
    '{ \t"alg":"HS256"}',
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _token(header: str) -> str:
    return ".".join(_b64(part) for part in (header.encode(), b'{"sub":"ann"}', b"signature"))


@pytest.mark.parametrize("header", HEADERS)
def test_a_jwt_with_a_spaced_header_is_masked(header: str) -> None:
    token = _token(header)
    assert not token.startswith("eyJ")
    assert redact_credentials(f"token {token} refused") == f"token {MASKED} refused"
    assert holds_credential(f"url?t={token}")
    # In a request attribute: the whole string masked, and in the decision half's text.
    request = {"principal": {"id": "p", "attr": {"note": token, "url": f"/x?t={token}"}}}
    assert Masker().mask_request(request).request["principal"]["attr"] == {
        "note": MASKED,
        "url": MASKED,
    }
    assert _text(f"bad {token}", None) == f"bad {MASKED}"
    assert _text(f"x-{token}", None) == f"x-{MASKED}"  # no space: past the inlined pre-filter
    assert token not in Masker().redact_refused(f"context.ip: `{token}` is not an IP address")


@pytest.mark.parametrize(
    "text", ["ewok.example.com", "new.key.they", "eyAx.b.c", "ew0-1.2.3", "EWOK.a.b"]
)
def test_words_that_only_start_alike_stay(text: str) -> None:
    assert redact_credentials(text) == text
    assert _text(text, None) == text
