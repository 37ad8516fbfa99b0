"""`pdp serve` on the native transport makes Envoy's ext_authz servicer on its first call
(pdp.gateway.lazy): the gateway's modules are not imported at start. The first call answers
as a servicer made at start would, concurrent first calls make it once, a drain that began
before it reaches it, reflection describes the service before any call, and a bad
`--gateway-mapping` (checked at start: no lazy servicer then) still refuses to start."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.engine.counters import MemoryCounters
from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway.lazy import (
    RATE_LIMIT_SERVICE_NAME,
    SERVICE_NAME,
    lazy_ext_authz,
    lazy_rate_limit,
)
from pdp.gateway.ratelimit import SERVICE_NAME as RLS_SERVICE
from pdp.gateway.ratelimit import rate_limit_registrar
from pdp.gateway.servicer import SERVICE_NAME as EXT_SERVICE
from pdp.gateway.servicer import ExtAuthzRegistrar, ext_authz_registrar
from pdp.model.loader import load_policy_files
from pdp.server.hooks import on_bytes
from pdp.server.service import taken_while_draining
from pdp.server.status import Aborted, StatusCode
from tests.limits.conftest import LIMITED
from tests.server.conftest import free_port
from tests.server.test_serve_cli import wait_serving

from .test_ext_authz_drain import MAPPING, _request

WAIT_CAP = 60.0


def _holder() -> EngineHolder:
    files = {"mapping.yaml": MAPPING.encode()}
    return EngineHolder(Engine(compile_policy_set(load_policy_files(files))))


class _Counted:
    """Makes the real registrar, counting how often it is asked to."""

    def __init__(self, holder: EngineHolder, pause: float = 0.0) -> None:
        self.holder, self.pause, self.made = holder, pause, 0

    def __call__(self) -> ExtAuthzRegistrar:
        self.made += 1
        time.sleep(self.pause)  # a wider window for a second thread to come first
        return ext_authz_registrar(self.holder)


def _answer(check, path: str = "/memos/m1") -> ext.CheckResponse:  # type: ignore[no-untyped-def]
    return ext.CheckResponse.FromString(check(_request(path).SerializeToString(), None))


def test_the_service_name_is_the_protos() -> None:
    assert SERVICE_NAME == EXT_SERVICE
    assert RATE_LIMIT_SERVICE_NAME == RLS_SERVICE


def test_the_rate_limit_service_made_on_its_first_call_answers_as_one_made_at_start() -> None:
    """Six reads by one principal (the fifth is the limit's last) and an undecodable request,
    to a lazy service and to one made at start, each with counters of its own."""
    source = load_policy_files({k: v.encode() for k, v in LIMITED.items()})

    def holder() -> EngineHolder:
        made = EngineHolder(counters=MemoryCounters())
        made.swap(Engine(compile_policy_set(source)))
        return made

    made: list[int] = []
    lazy_holder = holder()
    lazy = lazy_rate_limit(lambda: made.append(1) or rate_limit_registrar(lazy_holder))
    ours = lazy.service().methods["ShouldRateLimit"].behaviour
    assert made == []
    theirs = on_bytes(rate_limit_registrar(holder()).service().methods["ShouldRateLimit"])
    entries = {"kind": "note", "action": "read", "principal.id": "ann"}
    read = rls.RateLimitRequest(
        domain="pdp",
        descriptors=[
            rl.RateLimitDescriptor(
                entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries.items()]
            )
        ],
    ).SerializeToString()

    def seen(reply: bytes) -> tuple[object, ...]:  # all but the time to the reset, which ticks
        r = rls.RateLimitResponse.FromString(reply)
        statuses = [
            (s.code, s.limit_remaining, s.current_limit.requests_per_unit) for s in r.statuses
        ]
        return r.overall_code, statuses, r.raw_body

    codes = []
    for body in [read] * 6 + [b"\xff"]:
        mine = seen(ours(body, None))
        assert mine == seen(theirs(body, None))
        codes.append(mine[0])
    ok, over = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT
    assert codes == [ok] * 5 + [over, over]
    assert made == [1]


def test_the_first_call_makes_the_servicer_and_answers_as_one_made_at_start() -> None:
    holder = _holder()
    make = _Counted(holder)
    check = lazy_ext_authz(make).service().methods["Check"].behaviour
    assert make.made == 0
    eager = on_bytes(ext_authz_registrar(holder).service().methods["Check"])
    for path in ("/memos/m1", "/nowhere"):
        ours, theirs = _answer(check, path), _answer(eager, path)
        assert ours.status.code == theirs.status.code != 0
        assert ours.denied_response.status.code == theirs.denied_response.status.code
    assert make.made == 1
    with pytest.raises(Aborted) as aborted:  # undecodable: as the eager servicer refuses it
        check(b"\xff", None)
    assert aborted.value.status.code == StatusCode.INVALID_ARGUMENT
    assert aborted.value.status.details == "request: is not a valid protobuf message"


def test_concurrent_first_calls_make_the_servicer_once() -> None:
    make = _Counted(_holder(), pause=0.05)
    check = lazy_ext_authz(make).service().methods["Check"].behaviour
    start = threading.Barrier(8)
    answers: list[int] = []

    def call() -> None:
        start.wait(WAIT_CAP)
        answers.append(_answer(check).status.code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_CAP)
    assert make.made == 1
    assert answers == [7] * 8


def test_a_drain_begun_before_the_first_call_reaches_the_servicer() -> None:
    """A call taken once the drain began is refused (503 `shutting_down`), as by a servicer
    made at start (tests/gateway/test_ext_authz_drain.py)."""
    lazy = lazy_ext_authz(_Counted(_holder()))
    lazy.begin_drain(time.monotonic() + WAIT_CAP)
    taken_while_draining.value = True
    try:
        answer = _answer(lazy.service().methods["Check"].behaviour)
    finally:
        taken_while_draining.value = False
    assert answer.status.code == 14
    assert answer.denied_response.status.code == 503
    assert "shutting_down" in answer.denied_response.body


def _serve(tmp_path: Path, *more: str) -> list[str]:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "mapping.yaml").write_text(MAPPING)
    return [sys.executable, "-m", "pdp.cli.main", "serve", "--transport", "native", "--workers",
            "1", "--policies", str(tmp_path / "policies"), *more]  # fmt: skip


def test_reflection_describes_ext_authz_before_its_first_call(tmp_path: Path) -> None:
    pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
    port = free_port()
    cmd = _serve(tmp_path, "--listen", f"127.0.0.1:{port}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
            (reply,) = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([request]), timeout=WAIT_CAP
            )
            assert reply.WhichOneof("message_response") == "file_descriptor_response", reply
            check = ch.unary_unary(f"/{SERVICE_NAME}/Check")
            answer = ext.CheckResponse.FromString(
                check(_request("/memos/m1").SerializeToString(), timeout=WAIT_CAP)
            )
            assert answer.status.code == 7
    finally:
        proc.terminate()
        proc.wait(WAIT_CAP)


def test_a_bad_gateway_mapping_still_refuses_to_start(tmp_path: Path) -> None:
    pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: pdp/v1\nkind: ResourcePolicy\nmetadata: {id: x}\n")
    cmd = _serve(tmp_path, "--listen", f"127.0.0.1:{free_port()}", "--gateway-mapping", str(bad))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT_CAP, check=False)
    assert done.returncode != 0
    assert "gateway:" in done.stderr and "missing required field `spec`" in done.stderr, done.stderr
    assert f"{bad}:" in done.stderr and "mapping.yaml" not in done.stderr  # the file given
