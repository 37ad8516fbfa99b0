"""Credentials spelt past the decision log's masking, through a real `pdp serve`:

- an attribute key naming a credential (or a `--mask`ed attribute) spelt with lookalike
  letters of scripts beyond Cyrillic and Greek (Cherokee, Lisu, Armenian, Latin extended,
  a Greek capital Eta that casefolds to an `n`-like eta) reached the log verbatim: the
  lookalike table covered common Cyrillic and Greek small letters only;
- a `Basic` or `Digest` credential outside quotes in a refused request's message (a value
  with backticks in it breaks out of the message's quoting) was logged as it stood: only a
  `Bearer` one and JWTs were masked in free text.

Words that only look like a scheme (`Basic validation`, `digest of`) are not masked.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
from authzen.support import pdp_serve
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.telemetry.masking import redact_credentials
from tests.decision_logs import complete_records

CHECK = "/pdp.v1.DecisionService/Check"
KEYS = {
    "\u13aauthorization": "opaque-CHEROKEE-1111",  # Cherokee A
    "AUTHOR\ua4f2ZATION": "opaque-LISU-2222",  # Lisu I
    "t\u0585ken": "opaque-ARMENIAN-3333",  # Armenian o
    "x-\u0251pi-key": "opaque-ALPHA-4444",  # Latin alpha
    "\u0397TTP_AUTHORIZATION": "opaque-ETA-5555",  # Greek capital Eta
    "pass\u051dord": "opaque-KOMI-6666",  # Cyrillic Komi we
}
EMAILS = {"em\u0251\u0131l": "alpha@mask.example"}  # Latin alpha, dotless i
BASIC = "dXNlcjpzM2NyZXQtQkFTSUM="  # base64 of `user:s3cret-BASIC`
DIGEST = "d1g3st-SECRET-7777"
SECRETS = [*KEYS.values(), *EMAILS.values(), BASIC, DIGEST]


def _check(channel: grpc.Channel, request: dict[str, Any]) -> grpc.StatusCode:
    body = json_format.ParseDict(request, pb.CheckRequest()).SerializeToString()
    try:
        channel.unary_unary(CHECK)(body, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def _request(ip: str = "10.1.2.3") -> dict[str, Any]:
    attr = {**KEYS, **EMAILS, "department": "legal"}
    return {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "attr": attr},
        "resources": [{"kind": "document", "id": "d1", "tenant": "acme", "actions": ["read"]}],
        "context": {"ip": ip},
    }


def test_lookalike_keys_and_unquoted_credentials_never_reach_the_log(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    flags = ["--decision-log", str(log), "--telemetry-writer", "thread"]
    flags += ["--mask", "principal.attr.email"]
    with pdp_serve(*flags) as pdp:
        with grpc.insecure_channel(pdp.grpc_address) as channel:
            assert _check(channel, _request()) == grpc.StatusCode.OK
            for ip in (
                f"1` Basic {BASIC} `2",
                f'1` Digest username="u", realm="r", response="{DIGEST}" `2',
            ):
                assert _check(channel, _request(ip)) == grpc.StatusCode.INVALID_ARGUMENT
        end = time.monotonic() + 60
        while len(complete_records(log)) < 3:
            assert time.monotonic() < end, complete_records(log)
            time.sleep(0.05)
    text = log.read_text()
    leaked = [s for s in SECRETS if s in text]
    assert leaked == [], leaked
    records = complete_records(log)
    assert records[0]["request"]["principal"]["attr"]["department"] == "legal"
    errors = [r["error"]["message"] for r in records if "error" in r]
    assert len(errors) == 2 and all("[masked]" in m for m in errors), errors


def test_words_that_only_look_like_a_scheme_stay() -> None:
    for text in (
        "Basic validation failed for `x`",
        "the digest of the bundle changed",
        "we negotiate terms",
        "Basic authentication is off",
    ):
        assert redact_credentials(text) == text
    assert redact_credentials(f"got Basic {BASIC} here") == "got [masked] here"
    assert redact_credentials("NTLM TlRMTVNTUAABAAAAB4IIog== x") == "[masked] x"
