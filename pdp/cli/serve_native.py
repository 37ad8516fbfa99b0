"""`pdp serve --transport native` (experimental): what it refuses at start.

The native transport (pdp.server.native) serves Check, Plan, ServerInfo, Health (Check and
Watch) and server reflection on one plaintext TCP listener, its Checks and Plans observed by telemetry (the decision log, traces,
metrics) as on grpcio.
Every option it would not honour is refused before anything starts, with one line naming it,
never silently ignored. The services it does not serve (ext_authz, the rate-limit service)
answer UNIMPLEMENTED, and the start-up log says so.
"""

from __future__ import annotations

import argparse

TRANSPORTS = ("grpcio", "native")

# Options whose part the native transport does not have yet: (dest, why).
_UNSUPPORTED = (
    ("unix", "Unix sockets"),
    ("tls_cert", "TLS"),
    ("tls_key", "TLS"),
    ("client_ca", "mTLS"),
    ("allow_identity", "mTLS"),
    ("gateway_mapping", "ext_authz (not served)"),
    ("jwks", "ext_authz (not served)"),
    ("jwt_issuer", "ext_authz (not served)"),
    ("jwt_audience", "ext_authz (not served)"),
    ("jwt_leeway", "ext_authz (not served)"),
    ("trusted_hops", "ext_authz (not served)"),
    ("body_method_override", "ext_authz (not served)"),
    ("threads", "grpcio's RPC threads (one decision thread takes batches)"),
)

NOT_SERVED = (
    "native transport (experimental): serving pdp.v1.DecisionService/Check, Plan and "
    "ServerInfo, grpc.health.v1.Health/Check and Watch, and server reflection only; ext_authz "
    "and the rate-limit service answer UNIMPLEMENTED"
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
    if args.listen and len(args.listen) > 1:
        return "--transport native serves one --listen address; give one"
    return ""
