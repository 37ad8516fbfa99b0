"""`pdp serve --transport native` (experimental): what it refuses at start.

The native transport (pdp.server.native) serves Check, Plan, ServerInfo, Health, Envoy's
ext_authz and rate-limit service on TCP listeners (plaintext or TLS; mTLS with --client-ca,
--allow-identity) and Unix sockets, several at once, its calls observed by telemetry (the
decision log, traces, metrics) as on grpcio.
Every option it would not honour is refused before anything starts, with one line naming it,
never silently ignored. The service it does not serve (reflection) answers UNIMPLEMENTED, and
the start-up log says so.
"""

from __future__ import annotations

import argparse

TRANSPORTS = ("grpcio", "native")
# `--threads` unless given, for the native transport: its decision threads, each taking its own
# batches. Decisions hold the GIL, so more threads do not decide faster; they let other calls
# be answered while a decision waits outside it (a Redis round trip). Measured (issue 22,
# bench/RESULTS.md, "Decision threads"): 4 cost the same server CPU per uncached 1x3 call as 1.
DECISION_THREADS = 4

# Options whose part the native transport does not have yet: (dest, why).
_UNSUPPORTED: tuple[tuple[str, str], ...] = ()

NOT_SERVED = (
    "native transport (experimental): serving pdp.v1.DecisionService/Check, Plan and "
    "ServerInfo, grpc.health.v1.Health/Check, Envoy's ext_authz and rate-limit service (unless "
    "turned off); reflection answers UNIMPLEMENTED"
)


def _flag(parser: argparse.ArgumentParser, dest: str) -> str:
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return action.option_strings[0]
    return dest


def refusal(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """Why `pdp serve --transport native` cannot run with `args` ("" when it can)."""
    try:
        from pdp.server.native.server import load_extension

        load_extension()
    except ImportError as exc:
        return f"--transport native: {exc}"
    given = [
        (dest, why)
        for dest, why in _UNSUPPORTED
        if getattr(args, dest, None) not in (None, False, parser.get_default(dest))
    ]
    if given:
        dest, why = given[0]
        return (
            f"--transport native does not support {_flag(parser, dest)} ({why}) yet; "
            "leave it out or use --transport grpcio"
        )
    return ""
