"""The Plan RPC on a real gRPC server (127.0.0.1, a free port), observed like Check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_files
from pdp.plan.sqlalchemy import where_clause
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from . import _gen as g

ENGINE = Engine(compile_policy_set(load_policy_files(g.policy_files_with_refusal())))


class Recorder:
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.closed = threading.Event()

    def on_check(self, record: Any) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed.set()


@contextmanager
def stub(observer: Any = None) -> Iterator[pb_grpc.DecisionServiceStub]:
    server = build_server(
        EngineHolder(ENGINE), ServerConfig(listen=("127.0.0.1:0",)), observer=observer
    )
    server.start()
    try:
        with grpc.insecure_channel(server.addresses[0]) as ch:
            yield pb_grpc.DecisionServiceStub(ch)
    finally:
        server.stop(0)


def _req(**kw: Any) -> pb.PlanRequest:
    principal = pb.Principal(id="alice", tenant="acme", roles=["user"], scopes=["docs:read"])
    msg = pb.PlanRequest(principal=principal, resource_kind="document", action="read",
                         context=pb.Context(ip="10.20.30.40"), request_id="r-1")  # fmt: skip
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


def test_plan_rpc_answers_and_is_logged() -> None:
    rec = Recorder()
    with stub(rec) as s:
        resp = s.Plan(_req())
        assert resp.kind == pb.PlanResponse.CONDITIONAL and resp.plan_version == 1
        assert resp.request_id == "r-1" and resp.plan_id and "R.tenant" in resp.cel
        filt = json_format.MessageToDict(resp.filter)
        assert filt["op"] == "and"
        # The filter a client receives runs as SQL: alice's own documents of her tenant.
        rows = [{"kind": "document", "id": "1", "tenant": "acme",
                 "attr": {"owner": "alice", "classification": "internal"}},
                {"kind": "document", "id": "2", "tenant": "globex",
                 "attr": {"owner": "alice", "classification": "internal"}}]  # fmt: skip
        assert g.selected(g.sqlite_table(rows), where_clause(filt, g.COLUMNS)) == {"1"}
        denied = s.Plan(_req(action="write"))
        assert denied.kind == pb.PlanResponse.ALWAYS_DENIED and denied.reason == "missing_scope"
        with pytest.raises(grpc.RpcError) as e:
            s.Plan(_req(resource_kind=""))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "resource_kind" in e.value.details()
        refused = _req(resource_kind="note")
        with pytest.raises(grpc.RpcError) as e:
            s.Plan(refused)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "startsWith" in e.value.details()
    assert rec.closed.is_set()
    ok, deny, bad, ref = rec.records
    assert ok.rpc == "/pdp.v1.DecisionService/Plan" and ok.error_code == ""
    res = ok.response.results[0]
    assert (res.kind, res.id) == ("document", "*")
    assert res.actions["read"].reasons[0] == "plan_conditional"
    assert ok.request.principal["id"] == "alice"
    assert deny.response.results[0].actions["write"].reasons == (
        "plan_always_denied", "missing_scope")  # fmt: skip
    assert deny.response.results[0].actions["write"].effect == "deny"
    assert bad.error_code == "INVALID_ARGUMENT" and bad.response is None
    assert ref.error_code == "FAILED_PRECONDITION" and ref.response is None


def test_decision_log_record_of_a_plan() -> None:
    """The telemetry record (as the decision log writes it) names kind, action, plan kind."""
    from pdp.telemetry.decision_log import build_record
    from pdp.telemetry.masking import Masker

    rec = Recorder()
    with stub(rec) as s:
        s.Plan(_req())
    record = build_record(rec.records[0], Masker())
    assert record["rpc"].endswith("/Plan")
    assert record["decisions"][0]["kind"] == "document"
    assert record["decisions"][0]["actions"]["read"]["reasons"][0] == "plan_conditional"
