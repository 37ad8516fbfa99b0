"""`pdp serve`: the decision service over gRPC, with health and reflection.

    pdp serve --policies DIR [--listen HOST:PORT]... [--unix PATH]... [--tls-cert F --tls-key F
              [--client-ca F [--allow-identity ID]...]] [limits] [--workers N|auto]

The server starts NOT_SERVING, a policy source fills the engine holder (then SERVING), and
SIGTERM/SIGINT stop it gracefully: refuse new calls, finish in-flight ones, exit 0. With
several workers (the default: one per usable CPU, pdp.cli.cpus) this process only supervises N
copies of itself sharing the port, dealt connections round-robin (pdp.server.balance), holding
the one set of in-memory rate-limit buckets (pdp.limits.supervised) and polling a --bundle
source for all of them (pdp.bundle.handoff); health says SERVING once every one serves the
same bundle (pdp.cli.ready). docs/SERVING.md has the details.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pdp.model.request import DEFAULT_LIMITS, Limits

from .bounds import MAX_WORKERS

log = logging.getLogger("pdp.serve")

DEFAULT_LISTEN = "127.0.0.1:50051"
# Descriptors a server needs beside its connections: policy files, logs, pipes to the writer
# and workers, a bundle cache.
FD_RESERVE = 256
# How long the exit waits for the policy source to stop after the server has (a poll in
# progress is abandoned). The exit comes at most this long after the server's own bound.
_SOURCE_STOP_WAIT_S = 1.0
SHUTDOWN_BOUND = (
    "SIGTERM/SIGINT: health NOT_SERVING and new calls refused (UNAVAILABLE) at once; calls in "
    "flight get --grace seconds; the process exits within --grace + 3 s, plus the time the "
    "telemetry writer takes to flush queued records (at most 30 s)"
)
# A worker that dies before it activates a bundle, or sooner than this after its start, is
# failing, not crashing: give up (a start takes seconds on a loaded machine).
_MIN_WORKER_LIFETIME_S = 5.0

# Limit flags: (flag, Limits field, help).
_LIMIT_FLAGS = (
    ("--max-checks", "max_checks", "most resource x action checks per request"),
    ("--max-resources", "max_resources", "most resources per request"),
    ("--max-attr-depth", "max_attr_depth", "deepest attribute nesting"),
    ("--max-attr-values", "max_attr_values", "most attribute values per request"),
    ("--max-string-length", "max_string_length", "longest attribute string"),
    ("--max-id-length", "max_id_length", "longest id, kind, action, role or scope"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from pdp.server import DEFAULT_GRACE_S, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_THREADS
    from pdp.server.cache import DEFAULT_CACHE_ENTRIES

    p = subparsers.add_parser("serve", help="serve decisions over gRPC")
    src = p.add_argument_group("policy source")
    src.add_argument("--policies", metavar="DIR", help="serve the policy directory DIR")
    src.add_argument(
        "--watch",
        action="store_true",
        help="with --policies: reload on every edit that compiles, passes the validator and "
        "its tests",
    )
    from .serve_bundle import add_serve_arguments  # --bundle SOURCE and its flags

    add_serve_arguments(src)
    net = p.add_argument_group("listeners")
    net.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help=f"TCP address, repeatable (default {DEFAULT_LISTEN} unless --unix is given)",
    )
    net.add_argument("--unix", action="append", metavar="PATH", help="Unix socket, repeatable")
    from .serve_native import DECISION_THREADS, TRANSPORTS

    net.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="auto",
        help="auto (the default: native when its C extension was built at install, else "
        "grpcio), native (HTTP/2 and gRPC in C on libnghttp2, about a quarter of grpcio's "
        "server CPU per call: docs/NATIVE.md) or grpcio; both serve the same services and "
        "options",
    )
    tls = p.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="PEM", help="server certificate chain")
    tls.add_argument("--tls-key", metavar="PEM", help="server private key")
    tls.add_argument("--client-ca", metavar="PEM", help="require client certificates from it")
    tls.add_argument(
        "--allow-identity",
        action="append",
        metavar="ID",
        help="allowed client identity, repeatable: spiffe://... or uri:URI match a URI SAN only, "
        "dns:NAME or a bare NAME a DNS SAN only",
    )
    lim = p.add_argument_group("limits")
    for flag, name, text in _LIMIT_FLAGS:
        default = getattr(DEFAULT_LIMITS, name)
        lim.add_argument(flag, type=int, default=default, metavar="N", help=f"{text} ({default})")
    lim.add_argument(
        "--allow-client-time",
        action="store_true",
        help="FOR TESTING ONLY: let requests fix `context.time` (by default the server's clock "
        "decides and a request that sets it is refused)",
    )
    lim.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        metavar="N",
        help=f"largest request message ({DEFAULT_MAX_MESSAGE_BYTES})",
    )
    from pdp.server.config import (
        DEFAULT_IDLE_TIMEOUT_S,
        DEFAULT_KEEPALIVE_TIME_S,
        DEFAULT_KEEPALIVE_TIMEOUT_S,
        DEFAULT_MAX_CONCURRENT_RPCS,
        DEFAULT_MAX_CONNECTIONS,
    )

    lim.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="open connections each gRPC and HTTP listening address of a worker accepts; a new "
        f"one past it is closed at once; 0: no limit ({DEFAULT_MAX_CONNECTIONS})",
    )
    lim.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_RPCS,
        metavar="N",
        help="gRPC calls a worker runs or queues at once; one more is answered "
        f"RESOURCE_EXHAUSTED; 0: no limit ({DEFAULT_MAX_CONCURRENT_RPCS})",
    )
    lim.add_argument(
        "--grpc-idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT_S,
        metavar="SECONDS",
        help="close a gRPC connection that carries no call, or has not completed its "
        f"handshake, for this long; 0: never ({DEFAULT_IDLE_TIMEOUT_S:g})",
    )
    lim.add_argument(
        "--grpc-keepalive-time",
        type=float,
        default=DEFAULT_KEEPALIVE_TIME_S,
        metavar="SECONDS",
        help="send a PING on a gRPC connection nothing has come from for this long, calls "
        f"open or not; 0: never ({DEFAULT_KEEPALIVE_TIME_S:g}, as grpc)",
    )
    lim.add_argument(
        "--grpc-keepalive-timeout",
        type=float,
        default=DEFAULT_KEEPALIVE_TIMEOUT_S,
        metavar="SECONDS",
        help="close the connection, and its calls, when the PING is not answered within this "
        f"({DEFAULT_KEEPALIVE_TIMEOUT_S:g})",
    )
    gw = p.add_argument_group("gateway (Envoy ext_authz, served on the same port)")
    gw.add_argument("--no-ext-authz", action="store_true", help="do not serve ext_authz")
    gw.add_argument(
        "--gateway-mapping", metavar="FILE", help="route mapping to use instead of the bundle's"
    )
    gw.add_argument("--jwks", metavar="FILE", help="JWKS to use instead of data/jwks.json")
    gw.add_argument("--jwt-issuer", action="append", metavar="ISS", help="accepted `iss`")
    gw.add_argument("--jwt-audience", action="append", metavar="AUD", help="accepted `aud`")
    gw.add_argument("--jwt-leeway", type=float, metavar="SECONDS", help="clock skew allowed")
    gw.add_argument(
        "--trusted-hops", type=int, metavar="N", help="proxies trusted in x-forwarded-for"
    )
    gw.add_argument(
        "--body-method-override",
        choices=("on", "off"),
        help="on: the upstream runs `_method` of form and JSON bodies, so such a request whose "
        "body pdp did not get in full is refused; off: it does not (default: the mapping's "
        "`bodyMethodOverride`)",
    )
    rl = p.add_argument_group("rate limits (LimitPolicy)")
    rl.add_argument(
        "--limits-store",
        default="memory",
        metavar="URL",
        help="rate-limit counters: `memory` (this server, one count shared by its workers; the default) or redis://HOST:PORT/DB "
        "(shared by every replica and worker)",
    )
    rl.add_argument(
        "--limits-require-noeviction",
        action="store_true",
        help="with a redis:// store, refuse to start unless Redis's maxmemory-policy is "
        "`noeviction` (read with CONFIG GET): an evicted bucket comes back full",
    )
    rl.add_argument(
        "--no-rate-limit-service",
        action="store_true",
        help="do not serve Envoy's envoy.service.ratelimit.v3.RateLimitService",
    )
    run_ = p.add_argument_group("process")
    run_.add_argument(
        "--workers",
        default="auto",
        metavar="N",
        help="processes sharing the port; auto (the default): one per CPU this process may use "
        "(affinity and cgroup quota), 1 where several cannot share the listeners",
    )
    run_.add_argument(
        "--no-pin-workers",
        dest="pin_workers",
        action="store_false",
        help="let the OS move the server's threads between cores (default: a lone server, or "
        "each of N <= cores workers, runs on one core of its own)",
    )
    run_.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"on the native transport (the default when built) the decision threads per process "
        f"(default {DECISION_THREADS}); on grpcio's, its RPC threads (default {DEFAULT_THREADS})",
    )
    run_.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"time in-flight calls get to finish at shutdown ({DEFAULT_GRACE_S:g}); "
        + SHUTDOWN_BOUND.replace("%", "%%"),
    )
    run_.add_argument(
        "--decision-cache",
        type=int,
        default=DEFAULT_CACHE_ENTRIES,
        metavar="N",
        help=f"cached decisions for repeated requests, 0 = off ({DEFAULT_CACHE_ENTRIES})",
    )
    run_.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    # Set by the supervisor for its workers only.
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ready-fds", help=argparse.SUPPRESS)  # pdp.cli.ready: REPORT,CTL pipes
    p.add_argument("--limits-fd", type=int, help=argparse.SUPPRESS)  # pdp.limits.supervised
    p.add_argument("--siblings", type=int, help=argparse.SUPPRESS)  # N: this worker's group
    # How workers share connections (pdp.server.balance); the others are for bench/spread.py.
    p.add_argument("--balance", default="round-robin", help=argparse.SUPPRESS)
    # --decision-log, --mask, --log-queue-size, --otel, --prometheus, ... (pdp.telemetry owns them)
    from pdp.telemetry.cli import add_telemetry_arguments

    add_telemetry_arguments(p)
    from pdp.http.cli import add_http_arguments  # --http-listen, ... (AuthZEN; pdp.http)

    add_http_arguments(p)
    p.set_defaults(func=run, serve_parser=p)
    # Last, so it sees every flag above: each one gets a key in --config and a PDP_* variable,
    # and every number its range (pdp.cli.bounds).
    from . import bounds
    from .config import record_argv

    conf = p.add_argument_group("configuration")
    conf.add_argument(
        "--config", metavar="FILE", help="YAML file: a key per flag (deploy/pdp.yaml lists them)"
    )
    conf.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (flags, PDP_* variables, file) and exit",
    )
    bounds.apply(p)
    bounds.one_line_errors(p)
    record_argv(p)


def resolve_workers(args: argparse.Namespace, cpus: int | None = None) -> tuple[int, str]:
    """The number of processes `--workers` means here, and why (for the log and
    --print-config). `auto` falls back to 1 where several workers cannot share a listener."""
    if args.workers != "auto":
        return int(args.workers), "given"
    if cpus is None:
        from .cpus import usable_cpus

        cpus = usable_cpus()
    if cpus <= 1:
        return 1, "auto: 1 usable CPU"
    if args.unix:
        return 1, "auto: 1, as --unix sockets cannot be shared by several workers"
    if args.prometheus:
        # One scrape endpoint shows one process's metrics; N workers would each need a port.
        return 1, "auto: 1, as --prometheus serves one process's metrics"
    listen = [*(args.listen or [DEFAULT_LISTEN]), *(args.http_listen or [])]
    if any(a.rsplit(":", 1)[-1] == "0" for a in listen):
        return 1, "auto: 1, as port 0 would be a different port in each worker"
    if cpus > MAX_WORKERS:
        return MAX_WORKERS, f"auto: {MAX_WORKERS}, the most --workers takes ({cpus} usable CPUs)"
    return cpus, f"auto: {cpus} usable CPUs"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        **{name: getattr(args, name) for _flag, name, _help in _LIMIT_FLAGS},
        allow_client_time=args.allow_client_time,
    )


def server_config(args: argparse.Namespace):  # -> ServerConfig, or str (an error)
    """The server configuration `pdp serve` runs with for `args` (listeners, TLS, limits,
    message size, decision cache), or the message naming the flag it refuses."""
    from pdp.server import ServerConfig, TlsConfig

    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    if args.client_ca and not args.tls_cert:
        return "--client-ca needs --tls-cert and --tls-key"
    if args.allow_identity and not args.client_ca:
        return "--allow-identity needs --client-ca (identities come from client certificates)"
    from pdp.server.identity import parse_allow_list

    try:
        parse_allow_list(args.allow_identity or ())
    except ValueError as exc:
        return f"--allow-identity: {exc}"
    tls: TlsConfig | None = None
    if args.tls_cert:
        from pdp.server.tls_files import TlsFileError, load_tls_files

        try:  # checked here: grpc would only say `Failed to bind to address`
            tls = load_tls_files(args.tls_cert, args.tls_key, args.client_ca)
        except TlsFileError as exc:
            return str(exc)
    if args.max_connections < 0 or args.max_concurrent_rpcs < 0:
        return "--max-connections and --max-concurrent-rpcs take 0 (no limit) or more"
    if not args.grpc_idle_timeout >= 0:  # NaN too
        return "--grpc-idle-timeout takes 0 (never) or a positive number of seconds"
    listen = args.listen or ([] if args.unix else [DEFAULT_LISTEN])
    return ServerConfig(
        listen=tuple(listen),
        unix=tuple(args.unix or ()),
        tls=tls,
        allow_identities=frozenset(args.allow_identity or ()),
        limits=_limits(args),
        max_message_bytes=args.max_message_bytes,
        threads=args.threads,
        reuse_port=args.reuse_port,
        decision_cache=args.decision_cache,
        max_connections=args.max_connections,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        idle_timeout_s=args.grpc_idle_timeout,
        keepalive_time_s=args.grpc_keepalive_time,
        keepalive_timeout_s=args.grpc_keepalive_timeout,
    )


# -- policy sources ---------------------------------------------------------------------------
# A starter fills the holder (now or later) and returns a function that stops it, or raises.
# Another source (a bundle path or URL, polled) is one more branch in `start_policy_source`.

Stopper = Callable[[], None]


def _load_policy_dir(directory: str):  # -> Engine; raises PolicyErrors, OSError, ValueError
    from pdp.cel import shared_parses
    from pdp.engine import Engine
    from pdp.errors import PolicyErrors
    from pdp.lint import validator_errors

    from ._common import load_and_compile, start_directory_bundle_info

    # Decisions name the git revision of the directory, as a bundle's would: git runs while
    # the policies load.
    bundle_info = start_directory_bundle_info(directory)
    with shared_parses():  # the validator reads the trees the compiler parsed
        # Without its test suites: nothing here runs them (`--watch` does, through its own
        # load), and a broken test file does not stop the policies being served, as in
        # Cerbos's server.
        source, policy_set = load_and_compile(directory, tests=False)
        # A directory served directly gets the validator's verdict a bundle gets when it is
        # built: its errors refuse the set, its warnings are logged.
        if errors := validator_errors(source):
            raise PolicyErrors(errors)
    return Engine(policy_set, bundle_info())


def _start_policy_dir(directory: str, holder, engine=None) -> Stopper:  # holder: EngineHolder
    """`engine`: the directory's, loaded by the supervisor before it forked this worker."""
    if engine is None:
        engine = _load_policy_dir(directory)
    holder.swap(engine)
    revision = engine.bundle.revision or "unknown"
    log.info("serving policies from %s (revision %s)", directory, revision)
    return lambda: None


def _start_policy_watch(directory: str, holder) -> Stopper:  # holder: EngineHolder
    from pdp.bundle.watch import DirectoryWatcher

    from ._common import directory_bundle_info, policy_checks

    if not Path(directory).is_dir():
        raise ValueError(f"`{directory}` is not a directory")

    watcher = DirectoryWatcher(
        directory,
        holder,
        bundle_info=lambda: directory_bundle_info(directory),
        checks=policy_checks(),
    )  # it logs each activation, and each refusal with every error (file:line:column)
    watcher.start()  # a bad first set leaves the server NOT_SERVING until an edit fixes it
    log.info("watching %s for edits", directory)
    return watcher.stop


def start_policy_source(args: argparse.Namespace, holder, gate=None, preloaded=None) -> Stopper:
    """`gate`: a worker's pdp.cli.ready.WorkerGate (a bundle follows the supervisor's);
    `preloaded`: the --policies directory's Engine, loaded by the supervisor before the fork."""
    if args.policies and args.bundle:
        raise ValueError("give one policy source: --policies DIR or --bundle SOURCE")
    if getattr(args, "bundle_handoff", None):  # a worker: its supervisor polls or watches
        from .serve_bundle import start_bundle_source

        return start_bundle_source(args, holder, gate)
    if args.policies and getattr(args, "watch", False):
        return _start_policy_watch(args.policies, holder)
    if getattr(args, "watch", False):
        raise ValueError("--watch needs --policies DIR (bundle sources are always polled)")
    if args.policies:
        return _start_policy_dir(args.policies, holder, preloaded)
    if args.bundle:  # polled bundles, hot-swapped (pdp.cli.bundle, bundle engineer)
        from .serve_bundle import start_bundle_source

        return start_bundle_source(args, holder, gate)
    raise ValueError("no policy source: give --policies DIR or --bundle SOURCE")


def _observer(args: argparse.Namespace, holder, cpus: frozenset[int]):  # -> Observer | None
    """The telemetry observer built from the operator's flags (None when all of it is off).

    Raises ValueError (a bad flag, mask path or OTEL_* setting) or OSError (a log file or the
    Prometheus port cannot be opened). `cpus`: the cores this process was allowed before it
    pinned itself, where a telemetry writer process may run.
    """
    from pdp.telemetry.cli import observer_from_args, options_from_args

    options = options_from_args(args)
    if not options.enabled:
        return None
    mode = args.telemetry_writer
    if mode == "thread" or (mode == "auto" and len(cpus) < 2):
        return observer_from_args(args, holder)
    from pdp.server.wire import encode_observation
    from pdp.telemetry.offload import OffloadObserver

    # The writer runs on the cores this server is not pinned to (all of them when unpinned).
    own = os.sched_getaffinity(0)
    others = cpus - own if len(own) == 1 and len(cpus) > 1 else cpus
    observer = OffloadObserver(
        options,
        encode=encode_observation,
        child=[sys.executable, "-m", "pdp.cli.telemetry_writer"],
        cpus=others,
    )
    observer.watch_holder(holder)
    return observer


def _ext_authz_eager(args: argparse.Namespace) -> bool:
    """Whether ext_authz's servicer is made at start: on grpcio's transport, and where a flag
    must be checked then (a bad one refuses to start). Else on its first call (the gateway's
    modules, ~20 ms of a start, imported then: pdp.gateway.lazy)."""
    return args.transport != "native" or bool(args.gateway_mapping or args.jwks)


def _ext_authz(args: argparse.Namespace, holder, config, observer):  # -> ServiceRegistrar
    """Envoy's ext_authz servicer; its mapping and keys come from the bundle unless overridden."""
    if not _ext_authz_eager(args):
        from pdp.gateway.lazy import lazy_ext_authz

        return lazy_ext_authz(lambda: _ext_authz_now(args, holder, config, observer))
    return _ext_authz_now(args, holder, config, observer)


def _rate_limit_service(args: argparse.Namespace, holder):  # -> ServiceRegistrar
    """Envoy's rate-limit service: made on its first call on the native transport (its
    modules and Envoy's protos, ~14 ms of a start, imported then); at start on grpcio's."""
    if args.transport == "native":
        from pdp.gateway.lazy import lazy_rate_limit

        return lazy_rate_limit(lambda: _rate_limit_now(holder))
    return _rate_limit_now(holder)


def _rate_limit_now(holder):  # -> RateLimitRegistrar
    from pdp.gateway.ratelimit import rate_limit_registrar

    return rate_limit_registrar(holder)


def _ext_authz_now(args: argparse.Namespace, holder, config, observer):  # -> ExtAuthzRegistrar
    import json

    from pdp.gateway.servicer import GatewayOptions, ext_authz_registrar, load_mapping_file

    options = GatewayOptions(
        mapping=load_mapping_file(args.gateway_mapping) if args.gateway_mapping else None,
        mapping_file=args.gateway_mapping or "mapping.yaml",
        jwks=json.loads(Path(args.jwks).read_text()) if args.jwks else None,
        issuer=tuple(args.jwt_issuer) if args.jwt_issuer else None,
        audience=tuple(args.jwt_audience) if args.jwt_audience else None,
        leeway=args.jwt_leeway,
        trusted_hops=args.trusted_hops,
        body_method_override=(
            None if args.body_method_override is None else args.body_method_override == "on"
        ),
    )
    return ext_authz_registrar(holder, options, limits=config.limits, observer=observer)


# -- one server process -----------------------------------------------------------------------


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class _HeapSettler:
    """On each engine swap: freeze what the process holds then (`gc.freeze`), so the cyclic
    collector's passes walk only what calls allocate, never the modules and the policy set
    again. A full pass over them holds the GIL for every call in flight; with heavy cache
    entries it took 25-230 ms on a serving worker (bench/RESULTS.md, session 23).

    A compiled policy set holds no reference cycles (`pdp.cel._compile._define`), so the
    engine a swap replaces is freed by reference counts once its last call ends, frozen or
    not, and a later swap only freezes the new one. Collecting at each swap instead held the
    GIL for a pass over the whole heap: ~1 s at 10,000 policies (bench/swap_pause.py). Should
    something still leave cycles behind, they stay frozen and the frozen heap grows: once it
    holds more than twice what it held when last settled, a swap unfreezes and collects first.
    """

    def __init__(self) -> None:
        self._settled = 0  # objects frozen when last settled; 0: never

    def __call__(self, _engine: object) -> None:
        if self._settled and gc.get_freeze_count() > 2 * self._settled:
            gc.unfreeze()
            gc.collect()
            self._settled = 0
        gc.freeze()
        if not self._settled:
            self._settled = gc.get_freeze_count()


def _raise_fd_limit(args: argparse.Namespace) -> None:
    """Raise the soft file-descriptor limit to the hard one, as Go's runtime does for Cerbos
    and OPA: the soft limit is often 1,024, far below what `--max-connections` lets callers
    open, and a listener out of descriptors fails every accept, pdp's own files too. Warn
    when even the hard limit is below what the connection caps allow."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    listeners = len(args.listen or [DEFAULT_LISTEN]) + len(args.http_listen or [])
    allowed = args.max_connections * listeners
    if allowed and soft != resource.RLIM_INFINITY and soft < allowed + FD_RESERVE:
        log.warning(
            "the file-descriptor limit (%d) is below what --max-connections allows on %d "
            "listening address(es) (%d, plus %d for pdp's own files): lower --max-connections "
            "or raise the limit (ulimit -n)",
            soft, listeners, allowed, FD_RESERVE,
        )  # fmt: skip


def _native_server(holder, config, observer, extra):  # -> pdp.server.native.server.NativeServer
    """`--transport native` (run() has checked that its extension is built)."""
    from pdp.server.native.server import NativeServer

    return NativeServer(holder, config, observer, extra_services=extra)


def serve(args: argparse.Namespace, *, recheck_eviction: bool = False, preloaded=None) -> int:
    """One server process. `recheck_eviction`: Redis was unreachable when `run` checked its
    maxmemory-policy, so the counters check again once Redis answers a take. `preloaded`: a
    forked worker's --policies Engine, loaded by its supervisor (`supervise`)."""
    from pdp.engine import EngineHolder
    from pdp.errors import PdpError, PolicyErrors

    from ._common import print_policy_errors

    if args.reuse_port:
        exit_with_parent()
    machine_cpus = frozenset(os.sched_getaffinity(0))  # before pinning: the writer's cores
    cpu = args.cpu
    if cpu is None and args.pin_workers and args.workers == 1:
        # A lone server is one GIL too: its threads on one core spend about half the CPU per
        # call they spend handing the GIL between cores. The last core: other processes
        # started without pinning tend to land on the first.
        cpu = max(machine_cpus) if len(machine_cpus) > 1 else None
    if cpu is not None:
        # Before any thread exists, so every thread of this worker inherits it.
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:  # a CPU this process may not use (`--cpu`, a worker's flag)
            return _fail(f"--cpu {cpu}: cannot run on it ({exc.strerror or exc})")
    config = server_config(args)
    if isinstance(config, str):
        return _fail(config)
    _raise_fd_limit(args)
    stop = threading.Event()
    _install_stop_handlers(stop)
    from pdp.limits import counters_from_url

    try:
        if args.limits_fd is not None and args.limits_store == "memory":
            # A worker: the supervisor holds the one set of buckets (pdp.limits.supervised).
            from pdp.limits.supervised import SupervisedCounters

            counters = SupervisedCounters(args.limits_fd)
        else:
            counters = counters_from_url(args.limits_store)
            if recheck_eviction:
                counters.check_eviction_later()  # type: ignore[attr-defined]
        holder = EngineHolder(counters=counters)
    except ValueError as exc:
        return _fail(f"rate limits: {exc}")
    try:
        observer = _observer(args, holder, machine_cpus)
    except (OSError, ValueError) as exc:
        return _fail(f"telemetry: {exc}")
    try:
        extra = [] if args.no_ext_authz else [_ext_authz(args, holder, config, observer)]
        if not args.no_rate_limit_service:
            extra.append(_rate_limit_service(args, holder))
        if args.transport == "native":
            server = _native_server(holder, config, observer, extra)
        else:
            from pdp.server import build_server  # grpcio's: the native transport never needs it

            server = build_server(holder, config, observer=observer, extra_services=extra)
    except (OSError, ValueError, PdpError) as exc:
        if observer is not None:
            observer.close()
        return _fail(f"gateway: {exc}")
    except RuntimeError as exc:  # grpc: cannot bind (pdp.server names the address)
        if observer is not None:
            observer.close()
        return _fail(str(exc))
    from .main import resume_gc

    resume_gc()  # what serving needs is imported; the policies load as they always have
    gate = None
    if args.ready_fds:  # a worker: SERVING once the supervisor says every worker is ready
        from .ready import gate_worker

        gate = gate_worker(args.ready_fds, server, holder)
    try:
        server.start()
    except ValueError as exc:
        if not str(exc).startswith("TLS: "):
            raise
        # The native transport's OpenSSL refusing files tls_files passed (a chain signed with
        # SHA-1 under Debian's security level 2, say): one line, not a traceback.
        if observer is not None:
            observer.close()
        return _fail(f"{exc} (--tls-cert `{args.tls_cert}`, --tls-key `{args.tls_key}`)")
    how = f"{args.transport} transport; {getattr(args, 'transport_source', 'given')}"
    for address in server.addresses:
        log.info("listening on %s (%s)", address, how)
    from pdp.http.cli import HttpConfigError, http_server_from_args

    try:
        http = http_server_from_args(args, holder, config, observer, held=server.held_reason)
        if http is not None:
            http.start()
            for address in http.addresses:
                log.info("http listening on %s", address)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        server.stop(0)
        return _fail(str(exc) if isinstance(exc, HttpConfigError) else f"cannot listen: {exc}")
    if args.siblings and args.siblings > 1:
        from pdp.server.balance import deal_connections

        log.info("%s", deal_connections(args.siblings, args.balance))
    holder.on_swap(_HeapSettler())  # after the servers' own listeners
    try:
        stop_source = start_policy_source(args, holder, gate, preloaded)
    except PolicyErrors as exc:
        print_policy_errors(exc)
        if http is not None:
            http.stop()
        server.stop(0)
        return 1
    except (OSError, ValueError) as exc:
        if http is not None:
            http.stop()
        server.stop(0)
        return _fail(str(exc))
    while not stop.wait(0.5):
        pass
    # Refuse new calls first; stop the policy source meanwhile (a swap now leaves health
    # alone; a poll in progress must not delay the exit: its thread is a daemon), then wait
    # for in-flight calls and flush telemetry (server.stop). Bound: see SHUTDOWN_BOUND.
    server.begin_stop(args.grace)
    log.info("draining: new calls refused, in-flight calls have %gs", args.grace)
    stopper = threading.Thread(target=stop_source, name="pdp-source-stop", daemon=True)
    stopper.start()
    if http is not None:
        http.stop()  # before the gRPC server, which closes the observer both share
    server.stop(args.grace)
    stopper.join(_SOURCE_STOP_WAIT_S)
    log.info("stopped")
    return 0


# -- supervisor for --workers N ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """This process gets SIGTERM (a graceful stop) when its parent dies, even by SIGKILL: a
    worker whose supervisor is gone leaves no orphan serving the port alone."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Forked:
    """A worker forked by the supervisor, with the part of Popen's interface it uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _pid, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def _fork_worker(args: argparse.Namespace, recheck_eviction: bool, **worker: object) -> _Forked:
    """Fork a worker that runs `serve` with `args` changed by `worker`. Forked, not executed:
    the worker starts with every module the supervisor imported (most of start-up), where a
    new interpreter would import them all again. The supervisor has created no grpc object, so
    the child's grpc starts from nothing."""
    close = worker.pop("close", ())
    preloaded = worker.pop("preloaded", None)
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:
        # Until serve() installs its graceful handlers, a stop signal just ends the worker
        # (the supervisor's handlers, inherited, would only set its flag here).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # the supervisor's stops it, not a worker
        for fd in close:  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):
                os.close(fd)
        code = serve(
            argparse.Namespace(**{**vars(args), **worker}),
            recheck_eviction=recheck_eviction,
            preloaded=preloaded,
        )
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _exec_worker(
    args: argparse.Namespace, recheck_eviction: bool, **worker: object
) -> subprocess.Popen[bytes]:
    """Start a worker as a new interpreter (pdp.cli.worker), for a supervisor that runs
    threads: a fork would copy the locks they hold. The settings cross in a memfd; the
    worker's descriptors are inherited at the same numbers, every other one is closed."""
    from .worker import encode

    worker.pop("close", None)  # close_fds: only pass_fds cross
    worker.pop("preloaded", None)  # a new interpreter loads the policies itself
    settings = argparse.Namespace(**{**vars(args), **worker})
    payload = encode(settings, recheck_eviction)
    fd = os.memfd_create("pdp-worker-settings")
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        passed = [fd, *(int(x) for x in str(settings.ready_fds or "").split(",") if x)]
        if settings.limits_fd is not None:
            passed.append(int(settings.limits_fd))
        env = dict(os.environ)
        # Where this pdp is, first: the new interpreter imports the same one.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return subprocess.Popen(
            [sys.executable, "-m", "pdp.cli.worker", str(fd)],
            pass_fds=passed,
            close_fds=True,
            env=env,
        )
    finally:
        os.close(fd)


def supervise(args: argparse.Namespace, *, recheck_eviction: bool = False) -> int:
    if args.unix:
        return _fail("--unix cannot be combined with --workers > 1")
    listen = [*(args.listen or [DEFAULT_LISTEN]), *(args.http_listen or [])]
    if any(a.rsplit(":", 1)[-1] == "0" for a in listen):
        return _fail("--workers > 1 needs fixed ports (port 0 would differ per worker)")
    from .worker import encode

    try:  # what a replacement worker is given (pdp.cli.worker): checked before any starts
        encode(args, recheck_eviction)
    except (TypeError, ValueError) as exc:
        return _fail(f"--workers: the settings cannot be handed to a new worker: {exc}")
    counter_server = None
    if args.limits_store == "memory":
        # One set of buckets for all workers, here: N private ones would admit N times each
        # limit (pdp.limits.supervised).
        from pdp.limits.supervised import CounterServer

        counter_server = CounterServer()
    cpus = sorted(os.sched_getaffinity(0))
    # A worker whose threads migrate between cores hands the GIL across them on every call;
    # measured here, pinning each worker to its own core nearly halves the CPU per call. With
    # more workers than cores they are left to the OS: two busy workers pinned to one core
    # switch contexts, which a trial here found costlier than letting the OS place them.
    pin = args.pin_workers and 1 < args.workers <= len(cpus)
    # What every worker needs beyond the parser's imports, imported once here, before forking.
    import ctypes  # noqa: F401  (exit_with_parent)
    import encodings.idna  # noqa: F401  (the listeners' getaddrinfo)

    import pdp.gateway.lazy  # the gateway's services, made on their first call
    import pdp.server.balance
    from pdp.engine import EngineHolder  # noqa: F401

    from . import _common  # noqa: F401

    if not args.no_ext_authz and _ext_authz_eager(args):
        import pdp.gateway.servicer
    if not args.no_rate_limit_service and args.transport != "native":
        import pdp.gateway.ratelimit
    if args.transport == "grpcio":  # grpc (the native transport serves without it)
        import pdp.server.grpc_edge  # noqa: F401
    from .main import resume_gc

    resume_gc()  # frozen before the forks: the workers share those pages
    preloaded = _preload_policy_dir(args)
    stopping = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A lost terminal stops the supervisor as SIGTERM does (its default would end it at once,
    # leaving the hand-off directory behind and the workers to PR_SET_PDEATHSIG).
    signal.signal(signal.SIGHUP, forward)
    from .ready import Coordinator

    ready = Coordinator(args.workers)
    bundles = None
    watch = bool(args.policies and getattr(args, "watch", False))
    if watch and not _bundle_name_ok(args.policies):
        watch = False  # each worker watches on its own, as before (it says why)
    if (args.bundle and not args.policies) or watch:
        # One poller (or watcher) for all workers, so all serve one revision, compiled and
        # tested here once more (pdp.bundle.handoff).
        from .serve_bundle import SupervisorBundles

        try:
            bundles = SupervisorBundles(args, watch=watch)
        except (OSError, ValueError) as exc:  # a flag, a key file: before any worker starts
            return _fail(str(exc))
        args.bundle_handoff = str(bundles.directory)
        ready.follow(bundles.publisher)

    def spawn(i: int) -> _Forked | subprocess.Popen[bytes]:
        spec, fds = ready.pipes_for(i)
        channel = counter_server.connect() if counter_server is not None else None
        # Forked (fast: every module is imported already) only while this process has no
        # thread but this one: the first workers. A replacement is forked while the bundle
        # poller and the counter threads run, and a fork copies the locks they hold, so it
        # is a new interpreter instead (pdp.cli.worker).
        start = _fork_worker if threading.active_count() == 1 else _exec_worker
        proc = start(
            args,
            recheck_eviction,
            workers=1,
            reuse_port=True,
            siblings=args.workers,
            cpu=cpus[i] if pin else None,
            pin_workers=bool(pin),
            ready_fds=spec,
            limits_fd=channel.fileno() if channel is not None else None,
            close=ready.supervisor_fds(),  # the other workers' pipes are not the worker's
            preloaded=preloaded,
        )
        ready.spawned(fds, i, proc.pid)
        if channel is not None:
            channel.close()  # the worker's copy is its own now
        return proc

    try:
        workers: list[tuple[_Forked | subprocess.Popen[bytes], float]] = []
        if counter_server is not None:
            counter_server.hold()  # no thread before the first forks
        for i in range(args.workers):
            workers.append((spawn(i), time.monotonic()))
        preloaded = None  # the forked workers have it; a replacement loads its own
        log.info("supervising %d workers: %s", args.workers, [p.pid for p, _ in workers])
        # Threads only from here on (the counter server's, the bundle poller): a worker
        # started later is a new interpreter (spawn).
        if counter_server is not None:
            counter_server.release()
        if bundles is not None:
            bundles.start()
        status = 0
        while not stopping.is_set():
            ready.wait(0.2)
            if bundles is not None:
                if bundles.tick():
                    ready.poke_all()
                ready.check()
            for i, (proc, started) in enumerate(workers):
                code = proc.poll()
                if code is None:
                    continue
                ready.wait(0)  # its last reports, if any, before judging it
                if not ready.activated(i) or time.monotonic() - started < _MIN_WORKER_LIFETIME_S:
                    log.error("worker %d exited with %d at start; stopping", proc.pid, code)
                    status = code or 1
                    stopping.set()
                    break
                log.warning("worker %d exited with %d; restarting it", proc.pid, code)
                workers[i] = (spawn(i), time.monotonic())
                log.info("worker %d replaced by worker %d", proc.pid, workers[i][0].pid)
        for proc, _ in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        if bundles is not None:
            bundles.stop(_SOURCE_STOP_WAIT_S)
        for proc, _ in workers:
            code = proc.wait()
            if code != 0 and status == 0:
                status = code
        ready.close()
        return status
    finally:
        # Every exit, an unexpected exception's too: the hand-off directory goes with this
        # supervisor (one killed by SIGKILL leaves it for the next to remove at start).
        if bundles is not None:
            from pdp.bundle.handoff import remove_handoff_dir

            remove_handoff_dir(bundles.directory)


def _preload_policy_dir(args: argparse.Namespace):  # -> Engine | None
    """A plain --policies directory (not watched), loaded, validated and compiled once here,
    before the first workers are forked: each starts with it (copy-on-write) rather than
    doing it again beside its siblings, about a fifth of a worker's start-up CPU (bench/
    RESULTS.md, session 23). None for any other source, and when it fails: the workers then
    load it themselves and report why, as they always have."""
    if not args.policies or args.bundle or getattr(args, "watch", False):
        return None
    from pdp.errors import PdpError

    try:
        return _load_policy_dir(args.policies)
    except (PdpError, OSError, ValueError):
        return None


def _bundle_name_ok(directory: str) -> bool:
    """Whether `--watch`'s directory name can name the archive the supervisor hands its
    workers; a name that cannot leaves each worker watching on its own."""
    from pdp.bundle.manifest import validate_name
    from pdp.errors import BundleError

    try:
        validate_name(Path(directory).resolve().name)
    except BundleError:
        log.warning(
            "--watch: the directory name `%s` is no bundle name (letters, digits, `.`, `_`, "
            "`-`), so each worker watches it on its own and may serve an edit a moment before "
            "its siblings",
            Path(directory).resolve().name,
        )
        return False
    return True


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def _warn_exposure(args: argparse.Namespace, unknown: list[str]) -> None:
    """Legitimate but risky settings, said once at start-up (they are not errors: a mesh
    sidecar may terminate TLS, a pod network may be private)."""
    for name in unknown:
        log.warning(
            "%s is not a pdp setting and is ignored (`pdp serve --print-config` lists them)", name
        )
    if not args.tls_cert:
        for flag, addresses in (
            ("--listen", args.listen or [DEFAULT_LISTEN]),
            ("--http-listen", args.http_listen or []),
        ):
            for address in addresses:
                if not _is_loopback(address):
                    log.warning(
                        "%s %s is reachable from the network without TLS: requests, principals "
                        "and decisions travel in clear text (set --tls-cert and --tls-key, or "
                        "let a sidecar terminate TLS)",
                        flag, address,
                    )  # fmt: skip
    if args.prometheus and not _is_loopback(args.prometheus):
        log.warning(
            "--prometheus %s serves /metrics without authentication or TLS to whatever reaches "
            "it (policy, rule and bundle names, call rates); bind it to 127.0.0.1 or a network "
            "only the scraper reaches",
            args.prometheus,
        )


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, apply, render, unknown_env

    try:  # --config FILE and PDP_* variables fill what the command line left out
        sources = apply(args, args.serve_parser)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.transport == "auto":
        from .serve_native import choose

        args.transport, why = choose()
        sources["transport"] = f"{sources.get('transport', 'default')}, auto: {why}"
    if args.transport == "native" and "threads" not in sources:
        from .serve_native import DECISION_THREADS

        args.threads = DECISION_THREADS  # decision threads there, not grpcio's RPC threads
        sources["threads"] = "default for --transport native"
    if args.print_config:
        # The effective count, with why: `auto` depends on the CPUs and the listeners here.
        workers, why = resolve_workers(args)
        if why != "given":
            args.workers = workers
            sources["workers"] = f"{sources.get('workers', 'default')}, {why}"
        print(render(args, args.serve_parser, sources), end="")
        return 0
    if getattr(args, "watch", False) and not args.policies:
        return _fail("--watch needs --policies DIR (bundle sources are always polled)")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    workers, why = resolve_workers(args)
    if workers < 1:
        return _fail("--workers must be at least 1")
    if workers > MAX_WORKERS:
        return _fail(f"--workers must be at most {MAX_WORKERS}, not {workers}")
    _warn_exposure(args, unknown_env(args.serve_parser))
    args.workers = workers
    if why != "given":
        log.info("workers: %d (%s; --workers N overrides)", workers, why)
    # Said by each server with its addresses, once its settings are known to serve.
    args.transport_source = sources.get("transport", "default")
    if args.transport == "native":
        from .serve_native import refusal

        if reason := refusal():
            return _fail(reason)
    refused, recheck = _check_redis_eviction(args)
    if refused:
        return _fail(refused)
    if workers > 1:
        return supervise(args, recheck_eviction=recheck)
    return serve(args, recheck_eviction=recheck)


def _check_redis_eviction(args: argparse.Namespace) -> tuple[str, bool]:
    """Warn, once before any worker starts, when Redis may evict rate-limit buckets. Returns
    the reason to refuse to start (with `--limits-require-noeviction`, also when it cannot
    tell; "" to go on) and whether the servers must check again once Redis answers (it was
    unreachable)."""
    if not args.limits_store.startswith(("redis://", "rediss://", "unix://")):
        return "", False
    from pdp.limits.redis import SAFE, UNREACHABLE, RedisCounters

    try:
        probe = RedisCounters.from_url(args.limits_store)
    except ValueError:
        return "", False  # a malformed URL: serve() says so
    try:
        outcome, message = probe.check_eviction()
    finally:
        probe.close()
    recheck = outcome == UNREACHABLE
    if args.limits_require_noeviction and outcome != SAFE:
        return f"--limits-require-noeviction: {message.removeprefix('rate limits: ')}", recheck
    return "", recheck
