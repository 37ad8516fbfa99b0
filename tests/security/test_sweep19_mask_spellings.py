"""A caller cannot spell a credential or a masked attribute past the decision log's masking.

Through a real `pdp serve --decision-log FILE --mask ...` over gRPC and AuthZEN, each of these
reached FILE verbatim before:

- credential keys spelt with a Cyrillic or Greek lookalike (`Authorization` with a Cyrillic A), in full width
  (`authorization` in full-width letters), with a zero-width space or soft hyphen inside, `%`-encoded
  (`authorizati%6Fn`) or with a `:` (`x-api:key`); the scrub lower-cased and dropped only
  `-`, `_`, `.` and spaces. The same spellings of a `--mask principal.attr.email` key;
- a `Bearer` credential sent as a resource kind or an action name: masked in the record's
  `request`, written out in `decisions[]`;
- the value a refused request's error message quotes (`context.ip: `eyJ…` is not an IP
  address`), and that of a field an operator path masks: a refused request has no parsed
  request to learn masked values from, so its message was logged as it stood.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
from authzen.support import pdp_serve
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from tests.decision_logs import complete_records

CHECK = "/pdp.v1.DecisionService/Check"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnLUpXVC1TRUNSRVQ"
KEYS = {
    "\u0410uthorization": "opaque-CYR-1111",
    "\uff41\uff55\uff54\uff48\uff4f\uff52\uff49\uff5a\uff41\uff54\uff49\uff4f\uff4e": "opaque-FW-2222",
    "author\u200bization": "opaque-ZW-3333",
    "pass\u00adword": "opaque-SHY-4444",
    "authorizati%6Fn": "opaque-PCT-5555",
    "x-api:key": "opaque-COLON-6666",
    "\u0391PI_KEY": "opaque-GRK-7777",
    "Authorizatio\u0301n": "opaque-MARK-8888",
}
EMAILS = {
    "\uff45\uff4d\uff41\uff49\uff4c": "fw@mask.example",
    "em%61il": "pct@mask.example",
    "em\u0430il": "cyr@mask.example",
}
SECRETS = [*KEYS.values(), *EMAILS.values(), "opaque-KIND-aaaa", "opaque-ACT-bbbb"]
SECRETS += ["c2lnLUpXVC1TRUNSRVQ", "db7.internal.example", "opaque-AZ-cccc", "az@mask.example"]


def _check(channel: grpc.Channel, request: dict[str, Any]) -> grpc.StatusCode:
    body = json_format.ParseDict(request, pb.CheckRequest()).SerializeToString()
    try:
        channel.unary_unary(CHECK)(body, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def _request(**over: Any) -> dict[str, Any]:
    attr = {**KEYS, **EMAILS, "department": "legal"}
    body: dict[str, Any] = {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "attr": attr},
        "resources": [{"kind": "document", "id": "d1", "tenant": "acme", "actions": ["read"]}],
        "context": {"ip": "10.1.2.3"},
    }
    body.update(over)
    return body


def test_no_spelling_of_a_secret_reaches_the_decision_log(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    flags = ["--decision-log", str(log), "--telemetry-writer", "thread"]
    flags += ["--mask", "principal.attr.email", "--mask", "context.ip"]
    kind = {"kind": "Bearer opaque-KIND-aaaa", "id": "d2", "actions": ["read"]}
    action = {
        "kind": "document",
        "id": "d3",
        "tenant": "acme",
        "actions": ["Bearer opaque-ACT-bbbb"],
    }
    with pdp_serve(*flags) as pdp:
        with grpc.insecure_channel(pdp.grpc_address) as channel:
            assert _check(channel, _request()) == grpc.StatusCode.OK
            assert _check(channel, _request(resources=[kind, action])) == grpc.StatusCode.OK
            refused = _check(channel, _request(context={"ip": JWT}))
            assert refused == grpc.StatusCode.INVALID_ARGUMENT
            # A field an operator masks, refused: the message quotes a value that is no
            # credential, but the operator said it is not for the log.
            masked_refused = _check(channel, _request(context={"ip": "db7.internal.example"}))
            assert masked_refused == grpc.StatusCode.INVALID_ARGUMENT
        reply = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": {
                    "type": "user",
                    "id": "alice",
                    "properties": {
                        "tenant": "acme",
                        "\u0410uthorization": "opaque-AZ-cccc",
                        "\uff45\uff4d\uff41\uff49\uff4c": "az@mask.example",
                    },
                },
                "action": {"name": "read"},
                "resource": {"type": "document", "id": "d4", "properties": {"tenant": "acme"}},
            },
        )
        assert reply.status == 200, reply.body[:300]
        refused_ip = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": {"type": "user", "id": "alice"},
                "action": {"name": "read"},
                "resource": {"type": "document", "id": "d5"},
                "context": {"ip": JWT},
            },
        )
        assert refused_ip.status == 400, refused_ip.body[:300]
        end = time.monotonic() + 60
        while len(complete_records(log)) < 6:
            assert time.monotonic() < end, complete_records(log)
            time.sleep(0.05)
    records = complete_records(log)
    text = log.read_text()
    leaked = [s for s in SECRETS if s in text]
    assert leaked == [], leaked
    # What was decided is still there: the attributes that are no secret, every decision.
    first = records[0]
    assert first["request"]["principal"]["attr"]["department"] == "legal"
    assert first["decisions"][0]["actions"]["read"]["effect"] in ("allow", "deny")
    second = records[1]["decisions"]
    assert second[0]["kind"] == "[masked]" and list(second[1]["actions"]) == ["[masked]"]
    errors = [r["error"]["message"] for r in records if "error" in r]
    assert (
        len(
            [
                m
                for m in errors
                if "context.ip` `[masked]`" in m or m.startswith("context.ip: `[masked]`")
            ]
        )
        == 3
    ), errors
