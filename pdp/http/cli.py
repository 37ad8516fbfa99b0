"""`pdp serve` flags of the HTTP listener, and the listener built from them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder
    from pdp.server import ServerConfig

    from .server import HttpServer


class HttpConfigError(ValueError):
    """HTTP flags that cannot be used as given (the message names the flag)."""


def add_http_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HTTP (AuthZEN 1.0, JSON pdp.v1, health; docs/AUTHZEN.md)")
    g.add_argument(
        "--http-listen",
        action="append",
        metavar="HOST:PORT",
        help="serve HTTP here too, repeatable (off by default); TLS, allow-list, limits and "
        "decision log as for gRPC",
    )
    g.add_argument(
        "--http-hide-reasons",
        action="store_true",
        help="answer AuthZEN decisions without reasons, policy, rule or message (for "
        "untrusted callers); obligations and the decision id stay",
    )
    g.add_argument(
        "--http-reject-unknown-fields",
        action="store_true",
        help="refuse (400) AuthZEN keys the spec does not define outside `properties` and "
        "`context`, which the spec otherwise has receivers ignore",
    )
    g.add_argument(
        "--http-public-url",
        metavar="URL",
        help="this PDP's AuthZEN identifier (`policy_decision_point`); default: the scheme "
        "and Host header of each metadata request",
    )
    g.add_argument(
        "--http-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a caller must send a request's headers, and then its body, within this many "
        "seconds (else 408 or a closed connection), and read the answer within it; idle "
        "connections close after it too (default 60)",
    )
    g.add_argument(
        "--search-db",
        metavar="URL",
        help="serve AuthZEN resource search over this SQLAlchemy database URL "
        "(sqlite:///path.db; needs the `sqlalchemy` extra and --search-map)",
    )
    g.add_argument(
        "--search-map",
        metavar="FILE",
        help="YAML: per resource type its table, id, tenant and attribute columns, for "
        "--search-db (docs/AUTHZEN.md)",
    )


def http_server_from_args(
    args: argparse.Namespace,
    holder: EngineHolder,
    config: ServerConfig,
    observer: Any,
    held: Callable[[], str] = lambda: "",
) -> HttpServer | None:
    """The listener (not started), or None without `--http-listen`. `held`: why the gRPC
    server's health is held NOT_SERVING (`PdpServer.held_reason`), which `/readyz` follows."""
    if not args.http_listen:
        if args.search_db or args.search_map:
            raise HttpConfigError("--search-db and --search-map need --http-listen")
        return None
    if not args.http_timeout > 0:  # NaN too
        raise HttpConfigError("--http-timeout must be a positive number of seconds")
    from .api import HttpApi
    from .search import search_source
    from .server import HttpServer, HttpTls

    api = HttpApi(
        holder,
        config.limits,
        config.max_message_bytes,
        observer,
        hide_reasons=args.http_hide_reasons,
        public_url=args.http_public_url or "",
        allow_identities=config.allow_identities,
        reject_unknown_fields=args.http_reject_unknown_fields,
        search=search_source(args.search_db, args.search_map),
        held=held,
    )
    tls = None
    if config.tls is not None:
        tls = HttpTls(config.tls.cert_pem, config.tls.key_pem, config.tls.client_ca_pem)
    return HttpServer(
        api,
        tuple(args.http_listen),
        tls=tls,
        reuse_port=config.reuse_port,
        grace=args.grace,
        timeout=args.http_timeout,
        max_connections=config.max_connections,
    )
