"""`pdp health [--address HOST:PORT]`: ask a server's `grpc.health.v1` service; exit 0 when
SERVING. The container image's HEALTHCHECK and scripts use it (Kubernetes probes use their
built-in gRPC probe against the same service)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_ADDRESS = "127.0.0.1:50051"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("health", help="ask a server whether it is SERVING")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"HOST:PORT ({DEFAULT_ADDRESS})")
    p.add_argument("--service", default="", help="service name to ask about ('' = the server)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="deadline (3)")
    p.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting this CA")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if args.tls_ca:
        try:
            creds = grpc.ssl_channel_credentials(Path(args.tls_ca).read_bytes())
        except OSError as exc:
            print(f"error: cannot read `{args.tls_ca}`: {exc.strerror or exc}", file=sys.stderr)
            return 2
        channel = grpc.secure_channel(args.address, creds)
    else:
        channel = grpc.insecure_channel(args.address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name.lower()}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
