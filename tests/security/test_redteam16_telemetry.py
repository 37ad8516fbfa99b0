"""Secrets a caller puts in a request never reach the decision log of a real `pdp serve`.

The always-on scrub compared attribute keys lower-cased with `-` read as `_`, so the documented
`access_token` was dropped but `accessToken`, `clientSecret`, `X-Auth-Token`, `sessionToken`,
`x.api.key` or `authorization ` (a trailing space) were written out verbatim; a `Bearer` token
after a `token=` prefix was too. Operator paths matched keys exactly: `--mask
context.attr.headers.x-session` missed the same header forwarded as `X-Session`, and no path
could name a key holding a dot. Each secret below goes through gRPC `Check` (and, cached, a
second time) into `--decision-log FILE`, which must not hold any of them anywhere; the
attributes that are not secrets stay, so the record still says what was decided.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import pdp_serve

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MASKS = ("principal.attr.email", "context.attr.headers.x-session", "principal.attr.user.email")

# Key -> a secret value no scrub could catch by the value alone (opaque, no `Bearer`, no JWT).
CREDENTIAL_KEYS = {
    "accessToken": "opaque-AT-1111",
    "refreshToken": "opaque-RT-2222",
    "idToken": "opaque-IT-3333",
    "clientSecret": "opaque-CS-4444",
    "X-Auth-Token": "opaque-XAT-5555",
    "sessionToken": "opaque-ST-6666",
    "csrf_token": "opaque-CSRF-7777",
    "xApiKey": "opaque-XAK-8888",
    "x.api.key": "opaque-DOT-9999",
    "authorization ": "opaque-SPACE-aaaa",
    "ProxyAuthorization": "opaque-PA-bbbb",
    "db_password": "opaque-PW-cccc",
    "private_key": "opaque-PK-dddd",
    "setCookie": "sid=opaque-SC-eeee",
}
OPERATOR_SECRETS = (
    "Alice.Private@acme.example",
    "opaque-XS-ffff",
    "dotted@acme.example",
    "alice@acme.example",
)
INLINE_BEARER = "opaque-INLINE-0000"


def _request() -> dict[str, Any]:
    return {
        "request_id": "redteam16-mask",
        "principal": {
            "id": "alice",
            "tenant": "acme",
            "roles": ["user"],
            "scopes": ["docs:read"],
            "attr": {
                **CREDENTIAL_KEYS,
                "creds": [
                    {"API-KEY": "opaque-LIST-1212"},
                    {"nested": {"AccessToken": "opaque-N-3434"}},
                ],
                "EMAIL": OPERATOR_SECRETS[0],
                "email": OPERATOR_SECRETS[3],
                "user.email": OPERATOR_SECRETS[2],
                "department": "legal",
                "tokens": 12,  # a count, not a credential: it stays
            },
        },
        "resources": [
            {
                "kind": "document",
                "id": "d1",
                "tenant": "acme",
                "attr": {
                    "owner": "alice",
                    "classification": "internal",
                    "note": f"sent with token=Bearer {INLINE_BEARER}",
                },
                "actions": ["read"],
            }
        ],
        "context": {
            "ip": "10.20.30.40",
            "attr": {"headers": {"X-Session": OPERATOR_SECRETS[1], "x-request-id": "r-1"}},
        },
    }


def test_no_caller_secret_reaches_the_decision_log(tmp_path: Path) -> None:
    log_file = tmp_path / "decisions.jsonl"
    flags = ["--decision-log", str(log_file)]
    for path in MASKS:
        flags += ["--mask", path]
    message = json_format.ParseDict(_request(), pb.CheckRequest())
    with pdp_serve(POLICIES, *flags) as served:
        for _ in range(2):  # the second answer is a decision-cache hit, logged as well
            reply = served.check(message)
            assert reply.results[0].actions["read"].effect == pb.EFFECT_ALLOW
        served.proc.send_signal(signal.SIGTERM)  # drains and closes the log
        assert served.proc.wait(30) == 0
    text = log_file.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 2
    secrets = [*CREDENTIAL_KEYS.values(), *OPERATOR_SECRETS, INLINE_BEARER]
    secrets += ["opaque-LIST-1212", "opaque-N-3434"]
    leaked = [s for s in secrets if s in text]
    assert leaked == []
    for record in records:
        attr = record["request"]["principal"]["attr"]
        assert attr["department"] == "legal" and attr["tokens"] == 12
        assert not any(k in attr for k in CREDENTIAL_KEYS)
        assert record["request"]["context"]["attr"]["headers"]["x-request-id"] == "r-1"
        assert record["decisions"][0]["actions"]["read"]["effect"] == "allow"
