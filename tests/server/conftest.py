"""A small real policy directory, a real engine, and servers on free loopback ports."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_dir
from pdp.server import PdpServer, ServerConfig, build_server

if TYPE_CHECKING:
    from pdp.server.native.server import NativeServer

POLICIES = {
    "common.yaml": """
        apiVersion: pdp/v1
        kind: Definitions
        metadata: {id: common}
        spec:
          derivedRoles:
            owner:
              parentRoles: ["*"]
              condition: resource.attr.owner == principal.id
    """,
    "document.yaml": """
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: documents}
        spec:
          resource: document
          imports: [common]
          actions:
            read: {scopes: ["docs:read"]}
            write: {scopes: ["docs:write"]}
            delete: {scopes: ["docs:write"]}
          rules:
            - id: owner-all
              actions: ["*"]
              effect: allow
              derivedRoles: [owner]
              reason: owner
              obligations: {mask_fields: [email], max_rows: 10}
            - id: reader-level
              actions: [read]
              effect: allow
              roles: [user]
              condition: principal.attr.level >= 3
              reason: clearance
            - id: legal-hold
              actions: [delete]
              effect: deny
              condition: has(resource.attr.legal_hold) && resource.attr.legal_hold == true
              reason: legal_hold
    """,
}

BUNDLE = BundleInfo(name="test-policies", version="1.0.0", revision="abc123")

ALICE: dict[str, Any] = {
    "id": "alice",
    "tenant": "acme",
    "roles": ["user"],
    "scopes": ["docs:read", "docs:write"],
    "attr": {"level": 1},
}
DOC = {"kind": "document", "id": "d1", "tenant": "acme", "attr": {"owner": "alice"}}
OTHER_DOC = {"kind": "document", "id": "d2", "tenant": "acme", "attr": {"owner": "bob"}}


def write_policies(root: Path) -> Path:
    for name, text in POLICIES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("policies"))


@pytest.fixture(scope="session")
def engine(policy_dir: Path) -> Engine:
    return Engine(compile_policy_set(load_policy_dir(policy_dir)), BUNDLE)


@contextmanager
def running(
    holder: EngineHolder, config: ServerConfig | None = None, **kw: Any
) -> Iterator[PdpServer]:
    server = build_server(holder, config or ServerConfig(listen=("127.0.0.1:0",)), **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop(0)


@contextmanager
def running_native(
    holder: EngineHolder, config: ServerConfig | None = None, **kw: Any
) -> Iterator[NativeServer]:
    """`running`'s twin on the native transport (pdp.server.native.server)."""
    from pdp.server.native.server import NativeServer

    server = NativeServer(holder, config or ServerConfig(listen=("127.0.0.1:0",)), **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop(0)


@pytest.fixture
def server(engine: Engine) -> Iterator[PdpServer]:
    with running(EngineHolder(engine)) as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
