"""The gRPC face of pdp: the decision service, health, reflection, and the server around them.

The only grpc importer besides `pdp.client`, `pdp.cli.health` and the generated `*_pb2_grpc`,
in three modules: grpcio's server (`server`), its edge (`grpc_edge`: pdp's transport-neutral
statuses and methods as grpcio's handlers) and the streaming servicers (`streams`); imports
nothing from YAML.

Names are resolved when first used (PEP 562): `from pdp.server import ServerConfig` must not
import grpcio's server (`.server`), which the native transport, `pdp serve`'s default, never
runs (tests/server/test_serve_imports.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import (
        DEFAULT_GRACE_S,
        DEFAULT_MAX_MESSAGE_BYTES,
        DEFAULT_THREADS,
        ServerConfig,
        TlsConfig,
    )
    from .hooks import CheckObservation, Observer, ServiceRegistrar
    from .server import PdpServer, build_server
    from .service import SERVICE_NAME

# name -> the module of this package that defines it
_WHERE = {
    "DEFAULT_GRACE_S": "config",
    "DEFAULT_MAX_MESSAGE_BYTES": "config",
    "DEFAULT_THREADS": "config",
    "ServerConfig": "config",
    "TlsConfig": "config",
    "CheckObservation": "hooks",
    "Observer": "hooks",
    "ServiceRegistrar": "hooks",
    "PdpServer": "server",
    "build_server": "server",
    "SERVICE_NAME": "service",
}

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_THREADS",
    "SERVICE_NAME",
    "CheckObservation",
    "Observer",
    "PdpServer",
    "ServerConfig",
    "ServiceRegistrar",
    "TlsConfig",
    "build_server",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once
    return value
