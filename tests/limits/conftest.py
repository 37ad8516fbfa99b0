from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.engine.counters import MemoryCounters
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from pdp.gateway.ratelimit import rate_limit_registrar
from pdp.model.loader import load_policy_dir
from pdp.server import ServerConfig, build_server

from ._procs import start_redis, stop


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop(proc)


LIMITED = {
    "note.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: []}
    write: {scopes: []}
    archive: {scopes: []}
  rules:
    - {id: blocked, actions: ["*"], effect: deny, condition: "P.id == 'mallory'", reason: blocked}
    - {id: members, actions: ["*"], effect: allow, roles: [member]}
""",
    "limits.yaml": """
apiVersion: pdp/v1
kind: LimitPolicy
metadata: {id: limits}
spec:
  limits:
    - {id: per-user-reads, resources: [note], actions: [read], key: P.id, limit: 5, per: 1d}
    - id: tenant-write-units
      resources: [note]
      actions: [write]
      key: P.tenant
      cost: context.attr.units
      limit: 10
      per: 1d
    - id: per-ip-archive
      resources: [note]
      actions: [archive]
      key: context.ip
      limit: 3
      per: 1d
      onStoreError: allow
""",
}


def write_policies(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


TRANSPORTS = ("grpcio", "native")


@contextmanager
def limits_server(root: Path, transport: str = "grpcio") -> Iterator[str]:
    """The address of a real server on a loopback port deciding with the policies in `root`
    (in-memory counters): Check, and Envoy's rate limit service beside it, on `transport`
    (`native`: pdp.server.native, one per process)."""
    holder = EngineHolder(counters=MemoryCounters())
    holder.swap(Engine(compile_policy_set(load_policy_dir(root))))
    config, extra = ServerConfig(listen=("127.0.0.1:0",)), [rate_limit_registrar(holder)]
    if transport == "native":
        pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
        from pdp.server.native.server import NativeServer

        server: Any = NativeServer(holder, config, extra_services=extra)
    else:
        server = build_server(holder, config, extra_services=extra)
    server.start()
    try:
        yield server.addresses[0]
    finally:
        server.stop(0)


@contextmanager
def rls_stub(root: Path, transport: str = "grpcio") -> Iterator[rls_grpc.RateLimitServiceStub]:
    """A `limits_server` for the policies in `root`, and a rate limit stub connected to it."""
    with limits_server(root, transport) as address, grpc.insecure_channel(address) as channel:
        yield rls_grpc.RateLimitServiceStub(channel)
