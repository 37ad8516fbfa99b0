"""`pdp serve --transport native` (experimental): what it refuses at start.

The native transport (pdp.server.native) serves Check and Health on one plaintext TCP listener.
Every option it would not honour is refused before anything starts, with one line naming it,
never silently ignored. The services it does not serve (ext_authz, the rate-limit service,
reflection, Plan, ServerInfo) answer UNIMPLEMENTED, and the start-up log says so.
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
    "native transport (experimental): serving pdp.v1.DecisionService/Check and "
    "grpc.health.v1.Health/Check only; ext_authz, the rate-limit service, reflection, Plan and "
    "ServerInfo answer UNIMPLEMENTED"
)


def _flag(parser: argparse.ArgumentParser, dest: str) -> str:
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return action.option_strings[0]
    return dest


def _telemetry_dests() -> set[str]:
    from pdp.telemetry.cli import add_telemetry_arguments

    probe = argparse.ArgumentParser(add_help=False)
    add_telemetry_arguments(probe)
    return {a.dest for a in probe._actions}


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
    from pdp.telemetry.cli import TelemetryArgumentError, options_from_args

    try:
        enabled = options_from_args(args).enabled
    except TelemetryArgumentError:
        enabled = True  # the grpcio path would say why; the native one refuses either way
    if enabled:
        named = [
            _flag(parser, d)
            for d in sorted(_telemetry_dests())
            if getattr(args, d, None) not in (None, False, parser.get_default(d))
        ]
        what = ", ".join(named) if named else "telemetry set by OTEL_* variables"
        return (
            f"--transport native does not feed the decision log, traces or metrics yet "
            f"({what}); leave them out or use --transport grpcio"
        )
    return ""
