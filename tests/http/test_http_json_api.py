"""The JSON mirror of pdp.v1 (`/v1/check`, `/v1/server-info`), health, routing errors and the
decision log, over a real `pdp serve --http-listen`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from authzen.support import Pdp, assert_error, client_time_flags, pdp_serve
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.decision_logs import complete_records

CHECK = {
    "requestId": "json-1",
    "principal": {
        "id": "carol",
        "tenant": "acme",
        "roles": ["user"],
        "scopes": ["docs:read"],
        "attr": {"kbs": ["kb-eng"]},
    },
    "resources": [
        {
            "kind": "document",
            "id": "d-100",
            "tenant": "acme",
            "attr": {
                "owner": "alice",
                "shared_with": ["carol"],
                "classification": "internal",
                "kb": "kb-eng",
            },
            "actions": ["read", "write"],
        }
    ],
    "context": {"ip": "10.20.30.40", "time": "2026-03-10T12:00:00Z"},
}


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "decisions.jsonl"


@pytest.fixture(scope="module")
def pdp(log_file: Path) -> Iterator[Pdp]:
    flags = ["--decision-log", str(log_file), "--telemetry-writer", "thread", *client_time_flags()]
    with pdp_serve(*flags) as p:
        yield p


def grpc_check(pdp: Pdp, body: dict) -> pb.CheckResponse:
    msg = json_format.ParseDict(body, pb.CheckRequest())
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        return pb_grpc.DecisionServiceStub(ch).Check(msg, timeout=10)


def _strip_ids(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("decisionId", "evaluatedAt")}


def test_v1_check_answers_what_grpc_answers_in_canonical_json(pdp: Pdp) -> None:
    reply = pdp.post("/v1/check", CHECK)
    assert reply.status == 200, reply.body
    answer = reply.json
    assert answer["requestId"] == "json-1"
    actions = answer["results"][0]["actions"]
    assert actions["read"]["effect"] == "EFFECT_ALLOW"
    assert actions["read"]["rule"] == "shared-read"
    assert actions["read"]["obligations"] == {"mask_fields": ["email", "phone"]}
    assert actions["write"]["effect"] == "EFFECT_DENY"
    assert actions["write"]["reasons"] == ["missing_scope"]
    over_grpc = json_format.MessageToDict(grpc_check(pdp, CHECK))
    assert _strip_ids(answer) == _strip_ids(over_grpc)


def test_v1_check_takes_proto_field_names_too(pdp: Pdp) -> None:
    snake = {**CHECK, "request_id": CHECK["requestId"]}
    del snake["requestId"]
    reply = pdp.post("/v1/check", snake)
    assert reply.status == 200
    assert reply.json["requestId"] == "json-1"


def test_v1_check_refuses_unknown_fields_and_bad_values(pdp: Pdp) -> None:
    bad = json.loads(json.dumps(CHECK))
    bad["principal"]["colour"] = "blue"
    assert_error(pdp.post("/v1/check", bad), 400, "principal.colour")
    assert_error(pdp.post("/v1/check", {**CHECK, "bogus": 1}), 400, "bogus")
    no_id = json.loads(json.dumps(CHECK))
    del no_id["principal"]["id"]
    assert_error(pdp.post("/v1/check", no_id), 400, "principal.id")
    no_res_id = json.loads(json.dumps(CHECK))
    del no_res_id["resources"][0]["id"]
    assert_error(pdp.post("/v1/check", no_res_id), 400, "resources[0].id")
    wrong_type = json.loads(json.dumps(CHECK))
    wrong_type["resources"][0]["actions"] = "read"
    assert_error(pdp.post("/v1/check", wrong_type), 400)
    bad_ip = json.loads(json.dumps(CHECK))
    bad_ip["context"]["ip"] = "10.0.0.999"
    assert_error(pdp.post("/v1/check", bad_ip), 400, "context.ip")


def test_v1_check_limits_are_the_grpc_limits(pdp: Pdp) -> None:
    limits = pdp.get("/v1/server-info").json["limits"]
    many = json.loads(json.dumps(CHECK))
    many["resources"] = many["resources"] * (limits["maxResources"] + 1)
    assert_error(pdp.post("/v1/check", many), 400, "resources")
    with grpc.insecure_channel(pdp.grpc_address) as ch, pytest.raises(grpc.RpcError) as info:
        pb_grpc.DecisionServiceStub(ch).Check(
            json_format.ParseDict(many, pb.CheckRequest()), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_info_is_the_grpc_server_info(pdp: Pdp) -> None:
    reply = pdp.get("/v1/server-info")
    assert reply.status == 200
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        info = pb_grpc.DecisionServiceStub(ch).ServerInfo(pb.ServerInfoRequest(), timeout=10)
    assert reply.json == json_format.MessageToDict(info)
    assert reply.json["activeBundle"]["name"] == "policies"
    assert reply.json["limits"]["maxMessageBytes"] > 0


def test_health_and_ready(pdp: Pdp) -> None:
    assert pdp.get("/healthz").status == 200
    ready = pdp.get("/readyz")
    assert ready.status == 200
    assert ready.json["ready"] is True
    assert ready.json["bundle"]["name"] == "policies"


def test_not_ready_without_a_bundle_and_never_an_allow() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again at once: nothing serves a bundle there
    with pdp_serve("--bundle", f"http://127.0.0.1:{dead}/b.tar.gz", wait_ready=False) as p:
        assert p.get("/healthz").status == 200
        ready = p.get("/readyz")
        assert ready.status == 503
        assert ready.json["ready"] is False
        body = {
            "subject": {"type": "user", "id": "a"},
            "action": {"name": "read"},
            "resource": {"type": "document", "id": "d"},
        }
        for path in ("/access/v1/evaluation", "/access/v1/evaluations", "/access/v1/search/action"):
            reply = p.post(path, body)
            assert_error(reply, 503)
            assert b'"decision"' not in reply.body
        assert_error(p.post("/v1/check", CHECK), 503)
        assert p.get("/v1/server-info").json.get("activeBundle") is None


def test_unknown_routes_and_methods(pdp: Pdp) -> None:
    assert_error(pdp.get("/nope"), 404, "path")
    assert_error(pdp.get("/access/v1/evaluation"), 405, "method")
    assert_error(pdp.request("DELETE", "/v1/check"), 405, "method")
    assert_error(pdp.post("/.well-known/authzen-configuration", {}), 405, "method")
    assert_error(pdp.get("/access/v1/search/subject"), 404)  # not served: not advertised either


def test_content_type_must_be_json(pdp: Pdp) -> None:
    reply = pdp.post(
        "/v1/check", CHECK, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_error(reply, 400, "Content-Type")
    ok = pdp.post("/v1/check", CHECK, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 200


def _records(log_file: Path, rpc: str, n: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        found = [r for r in complete_records(log_file) if r.get("rpc") == rpc]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_http_calls_reach_the_decision_log(pdp: Pdp, log_file: Path) -> None:
    body = {
        "subject": {
            "type": "user",
            "id": "carol",
            "properties": {
                "tenant": "acme",
                "roles": ["user"],
                "scopes": ["docs:read"],
                "kbs": ["kb-eng"],
            },
        },
        "action": {"name": "read"},
        "resource": {
            "type": "document",
            "id": "d-100",
            "properties": CHECK["resources"][0]["attr"] | {"tenant": "acme"},
        },
        "context": {"ip": "10.20.30.40", "time": "2026-03-10T12:00:00Z"},
    }
    headers = {
        "X-Request-ID": "log-me",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    reply = pdp.post("/access/v1/evaluation", body, headers=headers)
    assert reply.status == 200
    records = [
        r
        for r in _records(log_file, "POST /access/v1/evaluation", 1)
        if r.get("request_id") == "log-me"
    ]
    assert len(records) == 1
    record = records[0]
    assert record["decision_id"] == reply.json["context"]["decision_id"]
    assert record["caller"]["address"].startswith("ipv4:127.0.0.1:")
    assert record["principal"]["id"] == "carol"
    assert record["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    # A refused call is logged as gRPC logs one: an error, no decision.
    pdp.post(
        "/access/v1/evaluation", {"subject": {"type": "user"}}, headers={"X-Request-ID": "bad-one"}
    )
    errors = [r for r in _records(log_file, "POST /access/v1/evaluation", 2) if "error" in r]
    assert errors and errors[-1]["error"]["code"] == "INVALID_ARGUMENT"
    assert "decisions" not in errors[-1]


def test_the_writer_process_logs_http_calls_too(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    flags = ["--decision-log", str(log), "--telemetry-writer", "process", *client_time_flags()]
    body = {
        "subject": {
            "type": "user",
            "id": "carol",
            "properties": {
                "tenant": "acme",
                "roles": ["user"],
                "scopes": ["docs:read"],
                "kbs": ["kb-eng"],
            },
        },
        "action": {"name": "read"},
        "resource": {
            "type": "document",
            "id": "d-100",
            "properties": CHECK["resources"][0]["attr"] | {"tenant": "acme"},
        },
    }
    with pdp_serve(*flags) as p:
        reply = p.post("/access/v1/evaluation", body, headers={"X-Request-ID": "via-writer"})
        assert reply.status == 200
        records = [
            r
            for r in _records(log, "POST /access/v1/evaluation", 1)
            if r.get("request_id") == "via-writer"
        ]
    assert len(records) == 1
    assert records[0]["decision_id"] == reply.json["context"]["decision_id"]
