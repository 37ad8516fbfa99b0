"""A credential in the middle of any logged string never reaches the decision log.

The scrub masked a string value that was a credential, or held `Bearer …` or a JWT; its
pre-filter (`eyJ`, `earer`) let through a `Basic dXNl…`, `Digest …` or `AWS4-HMAC-SHA256 …`
credential mid-string (`note: "call me, token Basic dXNlcjpwYXNz"`), the request id was not
scrubbed at all, an attribute key holding a credential was kept, and a policy's message,
errors and obligations were only cleared of whole masked values. Now every logged string goes
through the same free-text detection (`redact_credentials`) behind one cheap pre-filter, and
words that only look like a scheme (`Basic plan`, `Basic validation failed`) stay. (`Bearer`
and the word after it are masked whatever the word: test_mask21_edges.)
"""

from __future__ import annotations

import base64
import json
import string
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from authzen.support import pdp_serve
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.model.request import parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.hooks import CheckObservation
from pdp.telemetry.decision_log import build_record
from pdp.telemetry.masking import (
    MASKED,
    Masker,
    _redact_spans,
    redact_credentials,
)
from tests.decision_logs import complete_records

CHECK = "/pdp.v1.DecisionService/Check"
BASIC = base64.b64encode(b"user:s3cret-MID-BASIC").decode()
BEARER = "opaque-MID-BEARER-4242"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJNSUQtSldUIn0.c2lnLU1JRC1KV1Q"
DIGEST = "d1g3st-MID-8888"
REQUEST_ID = "opaque-MID-RID-5151"
SECRETS = [BASIC, BEARER, JWT, DIGEST, REQUEST_ID]

# (text, masked?) through `redact_credentials` and as an attribute value.
CASES = [
    (f"call me, token Basic {BASIC} and more", True),
    (f"Authorization: Bearer {BEARER}", True),
    (f"see https://x.example/cb?id_token={JWT}&x=1", True),
    (f'retry with Digest username="u", response="{DIGEST}" later', True),
    ("AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=abcdef0123", True),
    (f"ok\tBearer\u00a0{BEARER}", True),  # any whitespace, tabs and no-break spaces
    ("Bearer x", True),  # the next word, whatever it is
    ("token=bEaReR abcdef123", True),  # the old pre-filter looked for `earer`/`EARER` only
    ("Bearer of-abc123", True),  # a prose word that goes on is a token
    ("the Bearer of bad news", True),  # a word is a valid bearer token (session 21)
    ("no Bearer token was sent", True),
    ("DPoP is required", True),
    ("Basic", False),
    ("Basic plan", False),
    ("Basic validation failed", False),
    ("we digest the report", False),
    ("alice", False),
]


@pytest.mark.parametrize(("text", "masked"), CASES)
def test_what_is_and_is_not_a_credential(text: str, masked: bool) -> None:
    assert (redact_credentials(text) != text) is masked
    request = {"principal": {"id": "p", "attr": {"note": text}}}
    got = Masker().mask_request(request).request["principal"]["attr"]["note"]
    assert got == (MASKED if masked else text)


def _request() -> dict[str, Any]:
    return {
        "request_id": f"rid Bearer {REQUEST_ID}",
        "principal": {
            "id": "alice",
            "tenant": "acme",
            "roles": ["user"],
            "attr": {
                "department": "legal",
                "header": f"Authorization: Bearer {BEARER}",
                "nested": {"list": ["x", {f"Bearer {JWT}": True}]},
            },
        },
        "resources": [
            {
                "kind": "document",
                "id": "d1",
                "tenant": "acme",
                "attr": {"note": f"call me, token Basic {BASIC} and Bearer {JWT}"},
                "actions": ["read"],
            }
        ],
        "context": {"ip": "10.1.2.3", "attr": {"why": f'Digest username="u", response="{DIGEST}"'}},
    }


def test_mid_string_credentials_never_reach_a_real_servers_log(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    with pdp_serve("--decision-log", str(log), "--telemetry-writer", "thread") as pdp:
        body = json_format.ParseDict(_request(), pb.CheckRequest()).SerializeToString()
        with grpc.insecure_channel(pdp.grpc_address) as channel:
            channel.unary_unary(CHECK)(body, timeout=10)
        end = time.monotonic() + 60
        while not complete_records(log):
            assert time.monotonic() < end
            time.sleep(0.05)
    text = log.read_text()
    assert [s for s in SECRETS if s in text] == []
    record = complete_records(log)[0]
    assert record["request"]["principal"]["attr"]["department"] == "legal"
    assert record["request"]["resources"][0]["attr"]["note"] == MASKED
    assert record["request"]["principal"]["attr"]["nested"] == {"list": ["x", {}]}


def _credential(secret: str) -> st.SearchStrategy[str]:
    basic = base64.b64encode(f"u:{secret}".encode()).decode().rstrip("=")
    return st.sampled_from(
        [
            f"Bearer {secret}",
            f"bearer\t{secret}",
            f"DPoP {secret}",
            f"Authorization: Bearer {secret}",
            f"Basic {basic}",
            f'Digest username="u", response="{secret}"',
            f"AWS4-HMAC-SHA256 Credential=AKIA/{secret}, Signature=0a1b2c3d",
            f"eyJhbGciOiJub25lIn0.eyJzIjoie{secret}.sig",
        ]
    )


_WORDS = st.text(alphabet=string.ascii_letters + string.digits + " .,:;-/=()", max_size=20)


@st.composite
def _embedded(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A request with one credential, between separators, somewhere in one of its strings."""
    secret = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=24))
    secret = "SECRET" + secret
    credential = draw(_credential(secret))
    text = draw(_WORDS) + " " + credential + " " + draw(_WORDS)
    request = {
        "request_id": "r1",
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "attr": {}},
        "resources": [{"kind": "doc", "id": "d1", "tenant": "acme", "actions": ["read"]}],
        "context": {"attr": {}},
    }
    where = draw(st.sampled_from(["principal", "resource", "context", "id", "request_id"]))
    if where == "id":
        request["resources"][0]["id"] = text
        return request, _secret_part(credential, secret)
    if where == "request_id":
        request["request_id"] = text[:120]
        return request, _secret_part(credential, secret)
    holder = {
        "principal": request["principal"]["attr"],
        "resource": request["resources"][0].setdefault("attr", {}),
        "context": request["context"]["attr"],
    }[where]
    node: Any = holder
    for depth in range(draw(st.integers(0, 3))):
        child: dict[str, Any] = {}
        if draw(st.booleans()):
            node[f"k{depth}"] = ["x", child]
        else:
            node[f"k{depth}"] = child
        node = child
    if draw(st.booleans()):
        node["value"] = text
    else:
        node[text] = 1  # a key holding the credential
    return request, _secret_part(credential, secret)


def _secret_part(credential: str, secret: str) -> str:
    if credential.startswith("Basic "):
        return credential.split(" ", 1)[1]
    return secret


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_embedded())
def test_a_credential_anywhere_in_any_string_never_reaches_the_record(
    case: tuple[dict[str, Any], str],
) -> None:
    request, secret = case
    try:
        parsed = parse_check_request(request)
    except Exception:
        return  # refused requests are covered by redact_refused's own tests
    obs = CheckObservation(parsed, None, "", "", "peer", "", (), 0.0, 0.0, CHECK)
    record = json.dumps(build_record(obs, Masker()))
    assert secret not in record


_TRICKY = st.sampled_from(
    ["Bearer", "bAsIc", "ba\u017fic", "Digest", "DPoP", "eyJ", "\u212a", "negot\u0131ate",
     "negot\u0130ate", "AWS4-HMAC-SHA256", "scram-sha-1", "NTLM", "x=1", "=", ",", "\"",
     "dXNlcjpwYXNz", "abcdefgh12", ".", "`"]
)  # fmt: skip
_SPACES = st.sampled_from([" ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c", ""])


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.tuples(_TRICKY, _SPACES), max_size=8), tail=st.text(max_size=10))
def test_the_pre_filter_never_hides_a_credential(parts: list[tuple[str, str]], tail: str) -> None:
    """The pre-filter only saves work: with or without it, the same text comes out."""
    text = "".join(a + b for a, b in parts) + tail
    assert redact_credentials(text) == _redact_spans(text)
