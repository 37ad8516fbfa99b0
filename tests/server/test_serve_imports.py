"""What `pdp serve` imports: start-up is mostly imports, so features a deployment does not use
must not be imported until used. Read from the real server's `-v` trace, which names every
module loaded however it was imported (`-X importtime` misses `importlib.import_module`'s: the
verbs of pdp.cli.main, pdp.server's names)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pdp.client import Client
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .conftest import ALICE, DOC, free_port
from .test_serve_cli import wait_serving

# Each is imported only by the feature named: signed bundles and JWT verification (cryptography,
# PyJWT), HTTP bundle sources (urllib.request), attribute schemas beyond the common keywords
# (jsonschema), Plan (pdp.plan), bundle sources and archives (the reloader, tarfile), a
# multipart body sent to ext_authz (email).
NOT_AT_START_UP = (
    "cryptography", "jwt", "urllib.request", "jsonschema", "pdp.plan", "pdp.bundle.reloader",
    "pdp.bundle.archive", "tarfile", "email",
)  # fmt: skip
# grpcio's server (pdp.server.server, and grpc's own server core under it): the native
# transport, `pdp serve`'s default, serves without it, and importing it cost its start-up a tenth.
GRPCIO_SERVER = ("pdp.server.server", "grpc._server")
# grpcio's Python package (grpc, grpc.aio, its Cython core), its status helpers, reflection and
# health servicers, and pdp's edge to them: the native transport serves its unary calls
# without them, and importing them cost its start-up 30-45 ms. grpc_health.v1.health_pb2, the
# messages alone, is protobuf and stays.
GRPC = (
    "grpc", "grpc_status", "grpc_reflection", "grpc_health.v1.health",
    "grpc_health.v1.health_pb2_grpc", "pdp.server.grpc_edge", "pdp.server.streams",
)  # fmt: skip
# Envoy ext_authz's servicer, its route mapping, request translation and protos, and the
# rate-limit service with its protos: each made on its first call on the native transport
# (pdp.gateway.lazy).
GATEWAY = (
    "pdp.gateway.servicer", "pdp.gateway.mapping", "pdp.gateway.request",
    "pdp.gateway._gen.envoy.service.auth", "pdp.gateway.ratelimit",
    "pdp.gateway._gen.envoy.service.ratelimit",
)  # fmt: skip


def imported(trace: str) -> set[str]:
    return set(re.findall(r"^import '([^']+)' # ", trace, re.MULTILINE))


@pytest.mark.parametrize("transport", ["grpcio", "native"])
def test_a_policy_directory_server_imports_no_unused_feature(
    policy_dir: Path, tmp_path: Path, transport: str
) -> None:
    if transport == "native":
        pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
    policies = tmp_path / "policies"
    shutil.copytree(policy_dir, policies)
    # An attribute schema of the common keywords is checked without jsonschema
    # (pdp.model._metaschema); one it cannot judge would import it.
    (policies / "schemas").mkdir()
    schema = {"type": "object", "properties": {"level": {"type": "integer"}}}
    (policies / "schemas" / "principal.json").write_text(json.dumps(schema))
    port = free_port()
    serve = ["serve", "--workers", "1", "--listen", f"127.0.0.1:{port}"]
    serve += ["--policies", str(policies), "--transport", transport]
    log = tmp_path / "imports.txt"
    with log.open("w") as stderr:  # a file, not a pipe nobody reads while the server runs
        proc = subprocess.Popen(
            [sys.executable, "-v", "-m", "pdp.cli.main", *serve],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_serving(port, proc)
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            assert client.is_allowed(ALICE, DOC, "read")  # a decision was made, and allowed
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    modules = imported(log.read_text())
    assert "pdp.server.service" in modules  # the trace is the server's
    unused = NOT_AT_START_UP + (GRPCIO_SERVER + GRPC + GATEWAY if transport == "native" else ())
    if transport == "native":
        assert "pdp.server.native.server" in modules
    else:
        assert set(GRPCIO_SERVER) <= modules  # what the native check looks for is named right
    assert not named(modules, unused), json.dumps(sorted(named(modules, unused)))


def named(modules: set[str], names: tuple[str, ...]) -> set[str]:
    """The modules that are one of `names` or inside one."""
    return {m for m in modules for n in names if m == n or m.startswith(f"{n}.")}


def _first_calls(target: str) -> None:
    """One of each unary call the native transport serves (answers and refusals alike): Check,
    an undecodable Check, Plan, ServerInfo, health Check, Envoy's ext_authz and rate-limit
    service, each on a connection of its own (so with workers, on either)."""
    for method, body, ok in [
        ("/pdp.v1.DecisionService/Check", b"\xff", False),  # INVALID_ARGUMENT, its details
        ("/pdp.v1.DecisionService/Plan", pb.PlanRequest().SerializeToString(), False),
        ("/pdp.v1.DecisionService/ServerInfo", b"", True),
        ("/grpc.health.v1.Health/Check", b"", True),
        ("/envoy.service.auth.v3.Authorization/Check", ext.CheckRequest().SerializeToString(), True),
        ("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
         rls.RateLimitRequest(domain="pdp").SerializeToString(), True),
    ]:  # fmt: skip
        with grpc.insecure_channel(target) as ch:
            call = ch.unary_unary(method)
            if ok:
                call(body, timeout=10)
            else:
                with pytest.raises(grpc.RpcError) as err:
                    call(body, timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_native_transport_answers_its_first_calls_without_grpc(
    policy_dir: Path, tmp_path: Path, workers: str
) -> None:
    """`pdp serve --transport native`, alone (`--workers 1`) and as a supervisor forking two
    workers: the first decisions of every unary service leave grpc unimported in every process
    (the `-v` trace is all of theirs); the streaming calls then still answer, grpc imported
    for them (which shows the trace would name it)."""
    pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
    port = free_port()
    serve = ["serve", "--workers", workers, "--listen", f"127.0.0.1:{port}", "--transport"]
    serve += ["native", "--policies", str(policy_dir)]
    log = tmp_path / "imports.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-v", "-m", "pdp.cli.main", *serve],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    target = f"127.0.0.1:{port}"
    try:
        wait_serving(port, proc)
        with Client(target, timeout=10) as client:
            assert client.is_allowed(ALICE, DOC, "read")
        _first_calls(target)
        modules = imported(log.read_text())
        assert "pdp.server.native.server" in modules and "pdp.server.service" in modules
        assert not named(modules, GRPC), json.dumps(sorted(named(modules, GRPC)))
        # Then a Watch and a reflection stream: their servicers (grpcio's) are made now.
        with grpc.insecure_channel(target) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            reflect = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
            listed = {s.name for r in reflect for s in r.list_services_response.service}
        assert {"pdp.v1.DecisionService", "envoy.service.auth.v3.Authorization"} <= listed
        assert "grpc" in imported(log.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# Run as `python -c PROBE ASK ANSWER serve ...`: `pdp serve` through pdp.cli.main, with a thread
# that writes whether the collector is on into ANSWER once the test creates ASK.
PROBE = """
import gc, pathlib, sys, threading, time
ask, answer = map(pathlib.Path, sys.argv[1:3])
def probe():
    while not ask.exists():
        time.sleep(0.01)
    part = answer.with_suffix(".part")  # renamed whole: the test never reads half of it
    part.write_text("on" if gc.isenabled() else "off")
    part.rename(answer)
threading.Thread(target=probe, daemon=True).start()
from pdp.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def test_a_serving_process_runs_with_the_collector_on(tmp_path: Path, policy_dir: Path) -> None:
    """pdp.cli.main pauses the garbage collector for start-up's imports; serve turns it on
    once they are done. Asked of the real `pdp serve --workers 1` once it serves: a collector
    left paused would let every cycle a call leaves pile up for the life of the server."""
    port = free_port()
    ask, answer = tmp_path / "ask", tmp_path / "answer"
    serve = ["serve", "--workers", "1", "--listen", f"127.0.0.1:{port}"]
    serve += ["--policies", str(policy_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(ask), str(answer), *serve],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_serving(port, proc)
        ask.touch()
        end = time.monotonic() + 30
        while not answer.exists() and time.monotonic() < end:
            time.sleep(0.01)
        assert answer.read_text() == "on"
    finally:
        proc.terminate()
        proc.wait(30)
