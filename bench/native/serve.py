"""pdp's Check behind the native transport's C side (pdp/server/native/_h2.c), for the bench.

    make bench-native ARGS=--help      # builds pdp's extension, then the bench
    .venv/bin/python bench/native/serve.py --port P [--policies DIR] [--empty]

`pdp serve --transport native` is the product (pdp.server.native.server); this bench server
drives the same extension with a bare loop, to measure the transport's own floor (`--empty`)
and to keep the prototype's figures reproducible.

The decision is `pdp serve`'s own: the options come from `pdp serve`'s parser given only
--policies (so limits, message size and decision cache are its defaults: 10,000 entries
today), the policies are loaded by its policy source, and each request goes through the very
function grpcio calls per Check, `DecisionService.check` (parse, convert with
`request_from_proto`, the decision cache, `Engine.check`, `response_to_proto`, serialize).
Only the transport differs: _h2's I/O thread queues every complete request, this process
takes them in batches (one GIL acquisition each) and hands the replies back to be sent. `--empty`
answers an empty CheckResponse without reading the request: the C transport's own floor.

On SIGUSR1, and on SIGTERM before it exits, it prints `batches N requests M` to stderr: the
calls of `handle` (GIL acquisitions with work) and the requests they carried, so far.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

from pdp.server.native.server import load_extension  # noqa: E402

POLICIES = HERE.parent / "peers" / "pdp"  # what bench/compare.py serves


class Context:
    """What `DecisionService.check` reads of grpc's ServicerContext on the uninstrumented path:
    the time left (no deadline here: the load driver sends none). It fails a call by raising
    `pdp.server.status.Aborted`."""

    def time_remaining(self) -> float | None:
        return None


def decision_handler(policies: Path) -> Any:
    """handle(list[bytes]) -> list[bytes | (code, message)] deciding like `pdp serve`."""
    from pdp.cli import serve as cli
    from pdp.engine import EngineHolder
    from pdp.limits import counters_from_url
    from pdp.server.cache import DecisionCache
    from pdp.server.service import DecisionService
    from pdp.server.status import Aborted
    from pdp.telemetry.cli import options_from_args

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--policies", str(policies), "--workers", "1"])
    config = cli.server_config(args)
    if isinstance(config, str):
        raise SystemExit(config)
    if options_from_args(args).enabled:  # `pdp serve` would build an observer for these
        raise SystemExit("telemetry is on by default here (OTEL_* set?): not measured")
    holder = EngineHolder(counters=counters_from_url(args.limits_store))
    cli.start_policy_source(args, holder)
    # As pdp.server.server.build_server makes it, without an observer (the default).
    service = DecisionService(
        holder,
        config.limits,
        config.max_message_bytes,
        None,
        cache=DecisionCache(config.decision_cache) if config.decision_cache > 0 else None,
        client_identities=False,
    )
    check, context = service.check, Context()

    def one(body: bytes) -> bytes | tuple[int, str, None]:
        try:
            return check(body, context)
        except Aborted as exc:
            return exc.reply[0], exc.reply[1], None

    def handle(bodies: list[bytes]) -> list[bytes | tuple[int, str, None]]:
        return [one(b) for b in bodies]

    return handle, config.max_message_bytes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="on 127.0.0.1; 0 picks one")
    ap.add_argument("--policies", type=Path, default=POLICIES)
    ap.add_argument("--empty", action="store_true", help="answer an empty CheckResponse")
    ap.add_argument("--max-streams", type=int, default=100, help="per connection")
    ap.add_argument(
        "--processes",
        type=int,
        default=1,
        help="N processes forked once the policies are loaded, sharing the port (SO_REUSEPORT, "
        "connections dealt round-robin as `pdp serve --workers N` deals them); needs --port",
    )
    args = ap.parse_args()
    if args.processes > 1 and args.port == 0:
        ap.error("--processes needs a --port: 0 would be another port in each process")
    if args.empty:
        max_message = 4 << 20

        def handle(bodies: list[bytes]) -> list[bytes]:
            return [b""] * len(bodies)  # an empty CheckResponse serializes to no bytes

    else:
        handle, max_message = decision_handler(args.policies)
    h2 = load_extension()

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    def counts(_signum: int, _frame: object) -> None:
        batches, requests = h2.stats()
        print(f"batches {batches} requests {requests}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, counts)
    for _ in range(args.processes - 1):
        if os.fork() == 0:  # a child serves; the parent forks the next one, then serves too
            from pdp.cli.serve import exit_with_parent

            exit_with_parent()  # SIGTERM when the parent dies: no orphan on the port
            break
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.processes > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    if args.processes > 1:
        from pdp.server.balance import deal_connections

        print(deal_connections(args.processes), file=sys.stderr, flush=True)
    print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    h2.start(sock.fileno(), max_message=max_message, max_streams=args.max_streams)
    try:
        while True:  # a signal handler's SystemExit ends it (take waits 0.25 s at most)
            batch = h2.take(0.25)
            if batch:
                h2.answer(handle([item[1] for item in batch]))  # (method, body, ...)
    finally:
        counts(0, None)
        with contextlib.suppress(RuntimeError, ValueError):
            h2.answer(None)  # a batch a signal interrupted: answered INTERNAL
        h2.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
