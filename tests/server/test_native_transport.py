"""The native transport (pdp.server.native, `pdp serve --transport native`) in this process,
beside the grpcio one on the same engine: the same answers, byte for byte but the ids; health;
deadlines from grpc-timeout; the peer; grpcurl. (Hostile input, drain and the CLI's refusals:
tests/security/test_native_transport.py, against a real `pdp serve`.)

The extension runs one server per process, so this module holds one for all its tests.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.connection
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security.native_h2 import HEADERS, frame, raw_call, with_header
from security.serving import HEAVY_PRINCIPAL, heavy_resources, write_heavy_policies

from pdp.client._convert import request_to_proto
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.server import PdpServer, ServerConfig
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.service import CHECK_RPC

from .conftest import ALICE, BUNDLE, DOC, OTHER_DOC, running, running_native, write_policies
from .test_server import grpcurl_binary

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer

ROOT = Path(__file__).resolve().parents[2]
BOB = {**ALICE, "id": "bob", "scopes": ["docs:read"], "attr": {"level": 5}}


@pytest.fixture(scope="module")
def engine_heavy(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = write_heavy_policies(write_policies(tmp_path_factory.mktemp("native")))
    return Engine(compile_policy_set(load_policy_dir(root)), BUNDLE)


@pytest.fixture(scope="module")
def native(engine_heavy: Engine) -> Iterator[NativeServer]:
    # One decision thread: test_calls_of_a_vanished_client_are_not_decided queues calls behind
    # a slow one (several threads: tests/security/test_native_threads.py).
    config = ServerConfig(listen=("127.0.0.1:0",), threads=1)
    with running_native(EngineHolder(engine_heavy), config) as server:
        yield server


@pytest.fixture(scope="module")
def grpcio(engine_heavy: Engine) -> Iterator[PdpServer]:
    with running(EngineHolder(engine_heavy)) as s:
        yield s


def _call(port: int, data: bytes, **kw: Any) -> tuple[Any, ...]:
    """(reply without its ids) or (code, details, details-bin) of one Check."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            reply = pb.CheckResponse.FromString(ch.unary_unary(CHECK_RPC)(data, timeout=30, **kw))
        except grpc.RpcError as exc:
            meta = dict(exc.trailing_metadata() or ())
            return exc.code(), exc.details(), meta.get("grpc-status-details-bin")
        for name in ("decision_id", "evaluated_at"):
            reply.ClearField(name)
        return (reply.SerializeToString(deterministic=True),)


def _without_principal_id() -> bytes:
    msg = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}])
    msg.principal.id = ""
    return msg.SerializeToString()


SAMPLE = [
    request_to_proto(p, [{**r, "actions": list(a)}], c, request_id=rid).SerializeToString()
    for p in (ALICE, BOB)
    for r in (DOC, OTHER_DOC, {**DOC, "attr": {"owner": "alice", "legal_hold": True}})
    for a in (("read",), ("read", "write", "delete"))
    for c, rid in ((None, ""), ({"ip": "10.0.0.1"}, "r-7"))
] + [
    request_to_proto(HEAVY_PRINCIPAL, heavy_resources(1, "one")).SerializeToString(),
    b"\xff\xff\xff",  # not protobuf: INVALID_ARGUMENT naming `request`, with details
    _without_principal_id(),  # a bad field
    request_to_proto(ALICE, [{**DOC, "actions": ["read"]}] * 2000).SerializeToString(),  # limit
]


def test_the_same_answers_as_the_grpcio_transport(native: NativeServer, grpcio: PdpServer) -> None:
    for data in SAMPLE * 2:  # twice: the second round from the decision cache
        mine, theirs = _call(native.port, data), _call(grpcio.port, data)
        assert mine == theirs, data
    errors = [_call(native.port, d) for d in SAMPLE[-3:]]
    assert [e[0] for e in errors] == [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]
    assert all(e[2] for e in errors)  # google.rpc.BadRequest travels in details-bin


def test_health_and_other_paths(native: NativeServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{native.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == serving
        service = health_pb2.HealthCheckRequest(service="pdp.v1.DecisionService")
        assert stub.Check(service, timeout=10).status == serving
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        unserved = ("/envoy.service.auth.v3.Authorization/Check", "/grpc.health.v1.Health/Nope")
        for path in unserved:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(path)(b"", timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_timeout_is_the_calls_deadline(native: NativeServer) -> None:
    """No client-side deadline here (a raw call): the DEADLINE_EXCEEDED, and how far the
    decision got, come from the servicer reading the grpc-timeout the C side parsed."""
    slow = request_to_proto(HEAVY_PRINCIPAL, heavy_resources(40, "deadline")).SerializeToString()
    got = raw_call(native.port, [*HEADERS, ("grpc-timeout", "200m")], [frame(slow)])
    assert got["grpc-status"] == "4", got
    assert "deadline exceeded before the decision was complete (decided" in got["grpc-message"]
    malformed = raw_call(native.port, [*HEADERS, ("grpc-timeout", "soon")], [frame(slow)])
    assert malformed["grpc-status"] == "13", malformed
    fine = raw_call(native.port, with_header(":path", CHECK_RPC), [frame(SAMPLE[0])])
    assert fine["grpc-status"] == "0"


def test_the_peer_reaches_python(native: NativeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    decide = native.decisions._decide  # what `check` calls (the server holds `check` itself)

    def spying(data: bytes, observed: bool, context: Any) -> Any:
        seen.append(context.peer())
        return decide(data, observed, context)

    monkeypatch.setattr(native.decisions, "_decide", spying)
    assert len(_call(native.port, SAMPLE[0])) == 1
    assert seen and seen[0].startswith("ipv4:127.0.0.1:"), seen


def test_grpcurl_calls_check_from_the_proto_file(native: NativeServer) -> None:
    """No reflection on this transport: grpcurl reads the service from proto/."""
    if not shutil.which(grpcurl_binary()):
        pytest.skip("no grpcurl")
    body = '{"principal": {"id": "alice", "roles": ["user"], "attr": {"owner": "x"}}, '
    body += '"resources": [{"kind": "document", "id": "d1", "actions": ["read"]}]}'
    done = subprocess.run(
        [grpcurl_binary(), "-plaintext", "-import-path", str(ROOT / "proto"), "-proto",
         "pdp/v1/decision.proto", "-d", body, f"127.0.0.1:{native.port}",
         "pdp.v1.DecisionService/Check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"decisionId"' in done.stdout and '"read"' in done.stdout


def test_calls_of_a_vanished_client_are_not_decided(
    native: NativeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls queued behind a slow one whose connection is then reset are dropped when the
    decision thread reaches them: a client cannot queue work and leave."""
    decided: list[bytes] = []
    decide = native.decisions._decide

    def spying(data: bytes, observed: bool, context: Any) -> Any:
        decided.append(data)
        return decide(data, observed, context)

    monkeypatch.setattr(native.decisions, "_decide", spying)
    slow = request_to_proto(HEAVY_PRINCIPAL, heavy_resources(15, "vanish")).SerializeToString()
    caller = threading.Thread(target=_call, args=(native.port, slow))
    caller.start()
    while not decided:  # the slow call is being decided
        time.sleep(0.01)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    for i in range(5):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, HEADERS)
        body = request_to_proto(ALICE, [{**DOC, "id": f"gone-{i}", "actions": ["read"]}])
        conn.send_data(sid, frame(body.SerializeToString()), end_stream=True)
    with socket.create_connection(("127.0.0.1", native.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(conn.data_to_send())
        while native._h2.outstanding() < 6:  # all five queued behind the slow one
            assert caller.is_alive()
            time.sleep(0.001)
    caller.join(60)
    while native._h2.outstanding():  # the five dropped, not decided
        time.sleep(0.01)
    assert decided == [slow]


def test_a_reply_leaves_when_decided_not_when_its_batch_ends(
    native: NativeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call taken in the same batch as a slow one, and decided before it, is answered while
    the slow one is still deciding. Replies left with the whole batch's (answer()), so one slow
    call (a rate-limit store that stalls, a heavy request) held every reply taken with it."""
    cap = 30.0  # a cap on every wait, not a measured duration
    body = {  # unique requests: none is a decision cache hit
        name: request_to_proto(
            ALICE, [{**DOC, "id": f"batch-{name}", "actions": ["read"]}]
        ).SerializeToString()
        for name in ("first", "quick", "slow")
    }
    busy, gate, slow_deciding, slow_may_end = (threading.Event() for _ in range(4))
    decide = native.decisions._decide
    seen: dict[str, Any] = {}

    def held(data: bytes, observed: bool, context: Any) -> Any:
        if data == body["first"]:  # holds the (only) decision thread while the next two queue
            busy.set()
            gate.wait(cap)
        elif data == body["slow"]:  # on the decision thread, the batch [quick, slow] taken
            h2 = native._h2
            seen["active"] = h2.active(0), h2.active(1)  # quick handed back: no longer active
            try:
                h2.reply(0, b"")
            except IndexError:
                seen["replied again"] = "refused"
            slow_deciding.set()
            slow_may_end.wait(cap)
        return decide(data, observed, context)

    monkeypatch.setattr(native.decisions, "_decide", held)
    with grpc.insecure_channel(f"127.0.0.1:{native.port}") as ch:
        check = ch.unary_unary(CHECK_RPC)
        try:
            first = check.future(body["first"], timeout=2 * cap)
            assert busy.wait(cap), "the first call was never decided"
            quick = check.future(body["quick"], timeout=2 * cap)
            while native._h2.outstanding() < 2:  # queued in this order: one batch, quick first
                time.sleep(0.001)
            slow = check.future(body["slow"], timeout=2 * cap)
            while native._h2.outstanding() < 3:
                time.sleep(0.001)
            gate.set()
            assert slow_deciding.wait(cap), "the slow call was never decided"
            pb.CheckResponse.FromString(quick.result(timeout=cap))  # while the slow one decides
            assert not slow.done() and not slow_may_end.is_set()
            assert seen == {"active": (False, True), "replied again": "refused"}
            slow_may_end.set()
            for future in (first, slow):
                pb.CheckResponse.FromString(future.result(timeout=cap))
        finally:
            gate.set()
            slow_may_end.set()


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
METADATA = (
    ("x-request-id", "req-42"),
    ("traceparent", TRACEPARENT),
    ("tracestate", "vendor=1"),
    ("baggage", "k=v"),
    ("x-blob-bin", b"\x00\x01\xff"),
)


def _seen_metadata(server: Any, monkeypatch: pytest.MonkeyPatch, port: int, **kw: Any) -> Any:
    """The call's invocation_metadata() and auth_context() as the servicer reads them."""
    seen: list[Any] = []
    decide = server.decisions._decide  # what both transports' `check` calls, each time

    def spying(data: bytes, observed: bool, context: Any) -> Any:
        seen.append((sorted(context.invocation_metadata()), context.auth_context()))
        return decide(data, observed, context)

    monkeypatch.setattr(server.decisions, "_decide", spying)
    _call(port, SAMPLE[0], **kw)
    monkeypatch.undo()
    assert len(seen) == 1, seen
    return seen[0]


def test_the_calls_metadata_reaches_python_as_on_grpcio(
    native: NativeServer, grpcio: PdpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same pairs as grpcio hands its servicer (user-agent included; pseudo-headers,
    content-type, te and grpc-* not; a -bin value as bytes), which the observer reads."""
    ours = _seen_metadata(native, monkeypatch, native.port, metadata=METADATA)
    theirs = _seen_metadata(grpcio, monkeypatch, grpcio.port, metadata=METADATA)
    assert ours == theirs
    keys = [k for k, _ in ours[0]]
    assert "user-agent" in keys and "x-request-id" in keys
    assert dict(ours[0])["x-blob-bin"] == b"\x00\x01\xff"
    assert _seen_metadata(native, monkeypatch, native.port) == _seen_metadata(
        grpcio, monkeypatch, grpcio.port
    )


def test_raw_metadata_is_bounded_and_checked(native: NativeServer) -> None:
    """What a grpc client would not send: a reserved grpc-* header is not metadata, a value
    that is not UTF-8 reads as Latin-1 (as grpcio), malformed base64 under -bin fails the call
    in C, and a header block over 16 KiB resets the stream."""
    body = [frame(SAMPLE[0])]
    fine = raw_call(native.port, [*HEADERS, ("grpc-custom", "x"), ("x-ok", "1")], body)
    assert fine["grpc-status"] == "0", fine
    bad = raw_call(native.port, [*HEADERS, ("x-blob-bin", "!!not base64")], body)
    assert bad["grpc-status"] == "13" and "-bin" in bad["grpc-message"], bad
    unpadded = raw_call(native.port, [*HEADERS, ("x-blob-bin", "AAH/")], body)
    assert unpadded["grpc-status"] == "0", unpadded
    big = raw_call(native.port, [*HEADERS, *[(f"x-{i}", "v" * 1000) for i in range(20)]], body)
    assert "reset" in big, big


def test_metadata_values_read_as_grpcio_reads_them() -> None:
    """Not UTF-8: Latin-1, as grpcio; -bin: base64, padding optional."""
    from pdp.server.native.server import _metadata

    packed = b"x-a\0caf\xe9\0x-b-bin\0AAH/\0x-c-bin\0AA\0x-d\0\0"
    assert _metadata(packed) == (
        ("x-a", "café"), ("x-b-bin", b"\x00\x01\xff"), ("x-c-bin", b"\x00"), ("x-d", ""),
    )  # fmt: skip
    assert _metadata(b"") == ()


PLAN = f"/{pb.DESCRIPTOR.services_by_name['DecisionService'].full_name}/Plan"
SERVER_INFO = PLAN.replace("/Plan", "/ServerInfo")


def _unary(port: int, path: str, data: bytes, reply: Any, *ids: str) -> tuple[Any, ...]:
    """(reply without `ids`) or (code, details, details-bin) of one unary call."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            message = reply.FromString(ch.unary_unary(path)(data, timeout=30))
        except grpc.RpcError as exc:
            meta = dict(exc.trailing_metadata() or ())
            return exc.code(), exc.details(), meta.get("grpc-status-details-bin")
        for name in ids:
            message.ClearField(name)
        return (message.SerializeToString(deterministic=True),)


def test_plan_answers_as_on_grpcio(native: NativeServer, grpcio: PdpServer) -> None:
    principal = pb.Principal(id="alice", tenant="acme", roles=["user"], scopes=["docs:read"])
    plans = [
        pb.PlanRequest(principal=principal, resource_kind="document", action=action,
                       request_id="p-1").SerializeToString()
        for action in ("read", "write", "delete")
    ] + [
        b"\xff\xff\xff",  # not protobuf: INVALID_ARGUMENT naming `request`
        pb.PlanRequest(principal=principal, action="read").SerializeToString(),  # no kind
    ]  # fmt: skip
    ids = ("plan_id", "evaluated_at")
    for data in plans:
        ours = _unary(native.port, PLAN, data, pb.PlanResponse, *ids)
        assert ours == _unary(grpcio.port, PLAN, data, pb.PlanResponse, *ids), data
    assert len(_unary(native.port, PLAN, plans[0], pb.PlanResponse)) == 1
    assert _unary(native.port, PLAN, plans[3], pb.PlanResponse)[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


WHEN = ("activated_at", "last_attempt_at")  # each server's own holder's times


def test_server_info_answers_as_on_grpcio(native: NativeServer, grpcio: PdpServer) -> None:
    data = pb.ServerInfoRequest().SerializeToString()
    ours = _unary(native.port, SERVER_INFO, data, pb.ServerInfoResponse, *WHEN)
    assert len(ours) == 1, ours
    theirs = _unary(grpcio.port, SERVER_INFO, data, pb.ServerInfoResponse, *WHEN)
    assert ours == theirs
    bad = _unary(native.port, SERVER_INFO, b"\xff\xff\xff", pb.ServerInfoResponse)
    assert bad == _unary(grpcio.port, SERVER_INFO, b"\xff\xff\xff", pb.ServerInfoResponse)
