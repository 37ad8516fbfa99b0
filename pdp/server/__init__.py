"""The gRPC face of pdp: the decision service, health, reflection, and the server around them.

The only grpc importer besides `pdp.client` and `pdp.gateway`; imports nothing from YAML.
"""

from .hooks import CheckObservation, Observer, ServiceRegistrar
from .server import (
    DEFAULT_GRACE_S,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_THREADS,
    PdpServer,
    ServerConfig,
    TlsConfig,
    build_server,
)
from .service import SERVICE_NAME

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
