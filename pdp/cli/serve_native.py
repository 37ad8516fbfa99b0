"""`pdp serve --transport`: which transport serves the calls.

Both serve the same services with the same options: Check, Plan, ServerInfo, health (Check and
Watch), server reflection, Envoy's ext_authz and rate-limit service, on TCP (plaintext or TLS,
mTLS with --client-ca and --allow-identity) and Unix sockets, several at once, every call
observed by telemetry alike. `native` (pdp.server.native, docs/NATIVE.md) does HTTP/2 and gRPC
in C on libnghttp2, about a quarter of grpcio's server CPU per call; `grpcio` is grpc's own
server. `auto`, the default, is native whenever its extension was built at install time (it
needs a C compiler and Debian's libnghttp2, OpenSSL and zlib headers; `make` installs them),
else grpcio, and the start-up log says which and why.
"""

from __future__ import annotations

TRANSPORTS = ("auto", "native", "grpcio")
# `--threads` unless given, for the native transport: its decision threads, each taking its own
# batches. Decisions hold the GIL, so more threads do not decide faster; they let other calls
# be answered while a decision waits outside it (a Redis round trip). Measured (issue 22,
# bench/RESULTS.md, "Decision threads"): 4 cost the same server CPU per uncached 1x3 call as 1.
DECISION_THREADS = 4


def refusal() -> str:
    """Why `--transport native` cannot run here ("" when it can): its extension is not built."""
    try:
        from pdp.server.native.server import load_extension

        load_extension()
    except ImportError as exc:
        return f"--transport native: {exc}"
    return ""


def choose() -> tuple[str, str]:
    """What `--transport auto` runs, and why (for the start-up log and --print-config)."""
    if reason := refusal():
        return "grpcio", reason.removeprefix("--transport native: ")
    return "native", "its extension is built"
