"""The HTTP face of pdp: OpenID AuthZEN 1.0, the JSON mirror of pdp.v1, and health.

A thin adapter over the same engine call, limits, TLS settings and observer as the gRPC
server (`pdp.server`); the engine imports nothing from here. docs/AUTHZEN.md has the mapping.
"""

from .api import Call, HttpApi, HttpError
from .server import HttpServer, HttpTls

__all__ = ["Call", "HttpApi", "HttpError", "HttpServer", "HttpTls"]
