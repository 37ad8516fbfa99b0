"""The native transport's other unary services and listeners, beside grpcio's on the same
policies: Envoy ext_authz and the rate-limit service answer alike (ids aside), over two TCP
listeners and a Unix socket at once; the peer a Unix caller has is grpcio's (`unix:`); grpcurl
reaches Check over the Unix socket. (Through a real Envoy: tests/gateway/test_envoy.py; drain:
tests/gateway/test_ext_authz_drain.py; a slow store: tests/security/test_native_threads.py.)

The extension runs one server per process, so this module holds one for all its tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.engine.counters import MemoryCounters
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway.ratelimit import SERVICE_NAME as RLS_SERVICE
from pdp.gateway.ratelimit import rate_limit_registrar
from pdp.gateway.servicer import SERVICE_NAME as EXT_SERVICE
from pdp.gateway.servicer import ext_authz_registrar
from pdp.model.loader import load_policy_dir
from pdp.server import PdpServer, ServerConfig, build_server
from pdp.server.hooks import CheckObservation
from tests.gateway.test_servicer import KEYS, _policy_dir, _request, _token
from tests.limits.conftest import LIMITED

from .conftest import running, running_native
from .test_server import grpcurl_binary

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer

ROOT = Path(__file__).resolve().parents[2]
DOC = "/v1/tenants/acme/kb/k1/docs/d1"


class Recorder:
    """An observer keeping what it is told (the decision log's records)."""

    def __init__(self) -> None:
        self.records: list[CheckObservation] = []

    def on_check(self, record: CheckObservation) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def _holder(root: Path) -> EngineHolder:
    holder = EngineHolder(counters=MemoryCounters())
    holder.swap(Engine(compile_policy_set(load_policy_dir(root))))
    return holder


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _policy_dir(tmp_path_factory.mktemp("native-services"), with_keys=True)
    for name, text in LIMITED.items():  # notes and their rate limits, for the RLS
        (root / name).write_text(text)
    return root


def _extra(holder: EngineHolder, observer: Recorder) -> list[Any]:
    return [ext_authz_registrar(holder, observer=observer), rate_limit_registrar(holder)]


@pytest.fixture(scope="module")
def native(policies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServer]:
    holder, recorder = _holder(policies), Recorder()
    sock = tmp_path_factory.mktemp("sock") / "native.sock"
    config = ServerConfig(listen=("127.0.0.1:0", "127.0.0.1:0"), unix=(str(sock),), threads=2)
    with running_native(holder, config, extra_services=_extra(holder, recorder)) as server:
        server.recorder = recorder  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def grpcio(policies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PdpServer]:
    holder, recorder = _holder(policies), Recorder()
    sock = tmp_path_factory.mktemp("sock") / "grpcio.sock"
    config = ServerConfig(listen=("127.0.0.1:0",), unix=(str(sock),))
    with running(holder, config, extra_services=_extra(holder, recorder)) as server:
        server.recorder = recorder  # type: ignore[attr-defined]
        yield server


def _authz(target: str, request: ext.CheckRequest | bytes) -> tuple[Any, ...]:
    """ext_authz's answer without its decision ids, or (code, details) of a failed call."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(target) as ch:
        try:
            raw = ch.unary_unary(f"/{EXT_SERVICE}/Check")(data, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    reply = ext.CheckResponse.FromString(raw)
    reply.dynamic_metadata.fields.pop("decision_id", None)
    which = reply.WhichOneof("http_response")  # touching the other one would set it
    if which is not None:
        answer = getattr(reply, which)
        kept = [h for h in answer.headers if h.header.key != "x-pdp-decision-id"]
        del answer.headers[:]
        answer.headers.extend(kept)
    if which == "denied_response" and reply.denied_response.body:
        body = json.loads(reply.denied_response.body)
        body.pop("decision_id", None)
        reply.denied_response.body = json.dumps(body, sort_keys=True)
    return (reply.SerializeToString(deterministic=True),)


def _rls(target: str, data: bytes) -> tuple[Any, ...]:
    with grpc.insecure_channel(target) as ch:
        try:
            return (ch.unary_unary(f"/{RLS_SERVICE}/ShouldRateLimit")(data, timeout=30),)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()


def _descriptor(user: str, action: str = "read", **more: str) -> bytes:
    message = rls.RateLimitRequest(domain="pdp")
    d = message.descriptors.add()
    for key, value in (("kind", "note"), ("action", action), ("principal.id", user), *more.items()):
        d.entries.add(key=key, value=value)
    return message.SerializeToString()


AUTHZ = [
    _request(DOC, _token(KEYS)),  # allowed
    _request(DOC, _token(KEYS), method="DELETE"),  # denied by a guard (not corporate)
    _request(DOC, _token(KEYS), method="DELETE", source="10.1.2.3"),
    _request("/v1/tenants/globex/kb/k1/docs/d1", _token(KEYS)),  # tenant mismatch
    _request(DOC),  # no token: 401
    _request(DOC, "not.a.token"),  # malformed: 401
    _request("/v1/tenants/acme/kb/k1/docs/d1%2f..%2fd2", _token(KEYS)),  # an encoded slash
    _request("/nowhere", _token(KEYS)),  # no route
    b"\xff\xff\xff",  # not protobuf: INVALID_ARGUMENT naming `request`
]
RLS = [
    *(_descriptor("kim") for _ in range(7)),  # 5 a day: the last two OVER_LIMIT
    _descriptor("lee", action="archive", **{"context.ip": "not-an-ip"}),  # invalid descriptor
    _descriptor("lee", action="nothing"),  # no limit applies
    rls.RateLimitRequest(domain="pdp").SerializeToString(),  # no descriptors
    b"\x0a\x02\xff\xfe",  # a domain that is not UTF-8
    b"\xff\xff\xff",  # not protobuf
]


def _targets(server: Any) -> list[str]:
    return [
        a if a.startswith("unix:") else a.replace("0.0.0.0", "127.0.0.1") for a in server.addresses
    ]


def test_ext_authz_answers_as_on_grpcio_on_every_listener(
    native: NativeServer, grpcio: PdpServer
) -> None:
    assert len(native.addresses) == 3 and native.addresses[2].startswith("unix:")
    for request in AUTHZ:
        theirs = _authz(_targets(grpcio)[0], request)
        for target in _targets(native):
            assert _authz(target, request) == theirs, (target, request)
    assert _authz(_targets(native)[0], AUTHZ[-1])[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_the_rate_limit_service_answers_as_on_grpcio(
    native: NativeServer, grpcio: PdpServer
) -> None:
    # One listener each (the buckets count per server); the Unix socket on both.
    mine = [_rls(_targets(native)[2], data) for data in RLS]
    theirs = [_rls(_targets(grpcio)[1], data) for data in RLS]
    assert mine == theirs
    codes = [rls.RateLimitResponse.FromString(m[0]).overall_code for m in mine]
    assert codes[:7] == [rls.RateLimitResponse.OK] * 5 + [rls.RateLimitResponse.OVER_LIMIT] * 2


def test_health_names_the_extra_services(native: NativeServer) -> None:
    with grpc.insecure_channel(_targets(native)[1]) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", EXT_SERVICE, RLS_SERVICE):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_the_decision_log_sees_the_unix_peer_as_on_grpcio(
    native: NativeServer, grpcio: PdpServer
) -> None:
    seen = []
    for server in (native, grpcio):
        records = server.recorder.records  # type: ignore[attr-defined]
        del records[:]
        with grpc.insecure_channel(_targets(server)[-1]) as ch:
            ext_grpc.AuthorizationStub(ch).Check(
                AUTHZ[0], timeout=30, metadata=(("x-request-id", "r-1"),)
            )
        (record,) = records
        seen.append((record.peer, record.rpc, dict(record.metadata)["x-request-id"]))
    assert seen[0] == seen[1] == ("unix:", f"/{EXT_SERVICE}/Check", "r-1")


def test_grpcurl_over_the_unix_socket(native: NativeServer) -> None:
    binary = grpcurl_binary()
    if not shutil.which(binary):
        pytest.skip("no grpcurl")
    path = native.addresses[2].removeprefix("unix:")
    done = subprocess.run(
        [binary, "-plaintext", "-unix", "-import-path", str(ROOT / "proto"), "-proto",
         "pdp/v1/decision.proto", "-d", '{"principal": {"id": "kim", "roles": ["member"]}, '
         '"resources": [{"kind": "note", "id": "n1", "actions": ["write"]}]}',
         path, "pdp.v1.DecisionService/Check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"decisionId"' in done.stdout and '"write"' in done.stdout


def test_the_rate_limit_service_without_policies_aborts_as_on_grpcio() -> None:
    """`context.abort` (the rate-limit service before any bundle) on the native `_Context`:
    the status and message grpcio sends."""
    from pdp.gateway.ratelimit import RateLimitServicer
    from pdp.server.native.server import _Aborted, _Context

    holder = EngineHolder()
    with pytest.raises(_Aborted) as aborted:
        RateLimitServicer(holder).ShouldRateLimit(
            rls.RateLimitRequest(domain="pdp"), _Context(None, "ipv4:127.0.0.1:1", b"")
        )
    config = ServerConfig(listen=("127.0.0.1:0",))
    server = build_server(holder, config, extra_services=[rate_limit_registrar(holder)])
    server.start()
    try:
        code, details = _rls(
            server.addresses[0], rls.RateLimitRequest(domain="pdp").SerializeToString()
        )
    finally:
        server.stop(0)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert aborted.value.reply == (code.value[0], details, None)
