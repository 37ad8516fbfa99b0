"""Red-team 18, AuthZEN resource search: a page token is the caller's bytes.

`page.token` is base64 of `{"v": 1, "after": "<id>"}`, read with `json.loads`; only
`ValueError` was caught. A token of 3,000 `[` (4,000 characters, under the 4,096 cap) raised
`RecursionError` out of the decoder, and `after: "\\ud800"` reached SQLite as a string no
UTF-8 encodes: both a 500 from a real `pdp serve --search-db`. Each is now a 400 naming
`page.token`, like any token the server did not issue.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.search_db import search_setup
from authzen.support import POLICIES, Pdp, assert_error, pdp_serve

SEARCH = "/access/v1/search/resource"
BODY = {
    "subject": {"type": "user", "id": "alice",
                "properties": {"tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]}},
    "action": {"name": "read"},
    "resource": {"type": "document"},
    "context": {"ip": "10.20.30.40"},
}  # fmt: skip


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pdp]:
    tmp = tmp_path_factory.mktemp("redteam18-search")
    flags, _, pol = search_setup(tmp, POLICIES)
    with pdp_serve(*flags, policies=pol) as p:
        yield p


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE = {
    "deep": b"[" * 3000,
    "deep-object": b'{"v":1,"after":' + b"[" * 2900,
    "surrogate": b'{"v":1,"after":"\\ud800"}',
    "surrogate-low": b'{"v":1,"after":"doc-\\udfff"}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_page_token_is_a_400_naming_it(pdp: Pdp, name: str) -> None:
    token = _token(HOSTILE[name])
    assert len(token) <= 4096
    reply = pdp.post(SEARCH, {**BODY, "page": {"limit": 5, "token": token}})
    assert_error(reply, 400, "page.token")
    assert b"Traceback" not in reply.body


def test_a_token_the_server_issued_still_pages(pdp: Pdp) -> None:
    first = pdp.post(SEARCH, {**BODY, "page": {"limit": 1}})
    assert first.status == 200, first.body
    token = first.json["page"]["next_token"]
    assert token, first.json
    second = pdp.post(SEARCH, {**BODY, "page": {"limit": 1, "token": token}})
    assert second.status == 200, second.body
    assert second.json["results"] and second.json["results"] != first.json["results"]


def test_a_cursor_after_any_text_is_only_a_cursor(pdp: Pdp) -> None:
    # NUL, emoji, very long: a cursor, valid text, answered (possibly with no results).
    for after in ("a\u0000", "\U0001f600", "z" * 2000):
        raw = json.dumps({"v": 1, "after": after}).encode()
        reply = pdp.post(SEARCH, {**BODY, "page": {"limit": 5, "token": _token(raw)}})
        assert reply.status == 200, (after[:10], reply.body[:200])
        assert all(r["id"] > after for r in reply.json["results"])
