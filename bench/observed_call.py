"""What observing a Check costs the serving side's own code, in process, without gRPC.

    .venv/bin/python bench/observed_call.py [--calls 100000] [--rounds 5]

`DecisionService.check` on the example policies, with no observer (off) and with a wire-only
queue like the writer process's (on: the observation is read from the call and appended,
nothing more), answering one repeated request from the decision cache (hits) and, with the
cache off, deciding it every time (misses). The call context is a plain object answering what
a grpcio context would (peer, metadata, no client certificate). Each round times off, then
on; each figure is the median round's µs per call, and `on/off` their ratio.

This is the serving-side code alone. A real server's CPU per call grows by more than this with
telemetry on (`bench/server.py --telemetry`, the `µs/req` columns): the feeder thread, the pipe
and the writer process on the same cores are not in it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


class CallContext:
    """What the decision service reads of a grpcio call context when it observes a call."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:45678"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-c/1.66 (linux)"), ("te", "trailers"))

    def auth_context(self) -> dict[str, Any]:
        return {}

    def time_remaining(self) -> float | None:
        return 30.0  # a caller with a deadline, as pdp.client sets one: the server checks it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="off/on rounds")
    args = parser.parse_args()

    from server import policy_dir, request_bytes  # bench/server.py

    from pdp.cli._common import load_and_compile
    from pdp.engine import Engine, EngineHolder
    from pdp.server.cache import DecisionCache
    from pdp.server.server import ServerConfig
    from pdp.server.service import DecisionService
    from pdp.telemetry.intake import Intake

    class WireQueue(Intake):
        """The server-side half of the writer process's observer (`OffloadObserver`)."""

        wire_only = True
        on_wire = Intake.on_check

    _source, policies = load_and_compile(str(policy_dir()))
    holder = EngineHolder()
    holder.swap(Engine(policies, None))
    config = ServerConfig()
    body = request_bytes(1, pinned_time=True)
    context = CallContext()
    print(f"machine: {platform.machine()}, {platform.python_version()}; 1 resource x 3 actions")
    print(f"reproduce: .venv/bin/python bench/observed_call.py --calls {args.calls}"
          f" --rounds {args.rounds}")  # fmt: skip
    print(f"{'calls':<8} {'off µs':>8} {'on µs':>8} {'on - off':>9} {'on/off':>7}")
    for label, cached in (("hits", True), ("misses", False)):
        queue = WireQueue(args.calls + 1)
        services = {
            name: DecisionService(
                holder,
                config.limits,
                config.max_message_bytes,
                observer,
                cache=DecisionCache(1000) if cached else None,
                client_identities=False,
            )
            for name, observer in (("off", None), ("on", queue))
        }
        times: dict[str, list[float]] = {"off": [], "on": []}
        for service in services.values():
            service.check(body, context)  # fills the cache: later calls are hits
        for _ in range(args.rounds):
            for name, service in services.items():
                queue._queue.clear()
                t = timeit.timeit(lambda s=service: s.check(body, context), number=args.calls)
                times[name].append(t / args.calls * 1e6)
        if queue.dropped:
            raise SystemExit(f"the queue dropped {queue.dropped} observations")
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        print(f"{label:<8} {off:>8.2f} {on:>8.2f} {on - off:>+9.2f} {on / off:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
