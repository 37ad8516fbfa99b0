"""Telemetry benchmark (not a test): Check throughput with the decision log and tracing on vs off.

Reproduce:  .venv/bin/python bench/telemetry.py            (from the repository root)
            .venv/bin/python bench/telemetry.py --quick    (shorter runs)

In-process, without the gRPC transport: each call does what the decision servicer does for
one Check — decode the request message, convert it, decide with the engine on the example
policies (policies/), encode the answer — on `--threads` threads, for `--seconds`.

- **off**: no observer (the servicer's bare path).
- **on**: the servicer's observed path (a `CheckObservation` per call) and a
  `TelemetryObserver` with a rotating JSON-lines file sink, one mask path, a tracer whose
  batch span processor exports to a discarding exporter (the OTLP encode/send is not
  measured: it runs on the SDK's export thread), and the metrics on an SDK meter.

The writer thread competes for the GIL with the request threads, so the throughput ratio
includes telemetry's whole CPU cost, not only `on_check`. Leaving the transport out makes each
call cheaper than a real one, so the ratio is an upper bound on what telemetry costs a server.
Also reported: `on_check` alone (µs), the writer's cost per record (µs), and records dropped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from google.protobuf import json_format  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from pdp.engine import Engine, compile_policy_set  # noqa: E402
from pdp.model.loader import load_policy_dir  # noqa: E402
from pdp.model.request import DEFAULT_LIMITS  # noqa: E402
from pdp.server._gen.pdp.v1 import decision_pb2 as pb  # noqa: E402
from pdp.server.convert import request_from_proto, response_to_proto  # noqa: E402
from pdp.server.hooks import CheckObservation  # noqa: E402
from pdp.telemetry import Masker, Metrics, RotatingFileSink, TelemetryObserver  # noqa: E402
from pdp.telemetry.otel import setup_otel  # noqa: E402

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
METADATA = (("traceparent", TRACEPARENT), ("user-agent", "grpc-python/bench"))


class DiscardSpans(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def load_messages() -> list[bytes]:
    out = []
    for path in sorted((ROOT / "policies" / "requests").glob("*.json")):
        out.append(
            json_format.ParseDict(
                json.loads(path.read_text()), pb.CheckRequest()
            ).SerializeToString()
        )
    return out


def make_call(engine: Engine, observer: TelemetryObserver | None) -> Callable[[bytes], bytes]:
    def bare(data: bytes) -> bytes:
        request = request_from_proto(pb.CheckRequest.FromString(data), DEFAULT_LIMITS)
        return response_to_proto(engine.check(request)).SerializeToString()

    if observer is None:
        return bare

    def observed(data: bytes) -> bytes:
        start = time.time()
        t0 = time.perf_counter()
        request = request_from_proto(pb.CheckRequest.FromString(data), DEFAULT_LIMITS)
        response = engine.check(request)
        out = response_to_proto(response).SerializeToString()
        observer.on_check(
            CheckObservation(
                request=request,
                response=response,
                error_code="",
                error_message="",
                peer="ipv4:127.0.0.1:50000",
                peer_identity="",
                metadata=METADATA,
                start_time=start,
                latency_s=time.perf_counter() - t0,
                rpc="/pdp.v1.DecisionService/Check",
            )
        )
        return out

    return observed


def throughput(
    call: Callable[[bytes], bytes], messages: list[bytes], threads: int, seconds: float
) -> float:
    stop = threading.Event()
    counts = [0] * threads

    def worker(i: int) -> None:
        n = 0
        k = i
        while not stop.is_set():
            call(messages[k % len(messages)])
            k += 1
            n += 1
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def build_observer(log_dir: Path) -> TelemetryObserver:
    otel = setup_otel(span_exporters=[DiscardSpans()], metric_readers=[InMemoryMetricReader()])
    return TelemetryObserver(
        sinks=[
            RotatingFileSink(log_dir / "decisions.jsonl", max_bytes=64 * 1024 * 1024, backups=1)
        ],
        masker=Masker(["principal.attr.email"]),
        tracer=otel.tracer,
        metrics=Metrics(otel.meter, otel.histograms) if otel.meter else None,
        otel=otel,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="2 s runs instead of 5 s")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="alternating off/on runs (median kept)")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 5.0

    engine = Engine(compile_policy_set(load_policy_dir(ROOT / "policies")))
    messages = load_messages()
    print(
        f"python {platform.python_version()} on {platform.machine()}, {args.threads} threads, "
        f"{len(messages)} reference requests, {seconds:g} s per run"
    )

    offs, ons, dropped, records = [], [], 0, 0
    writer_us = on_check_us = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            offs.append(throughput(make_call(engine, None), messages, args.threads, seconds))
            observer = build_observer(Path(tmp))
            ons.append(throughput(make_call(engine, observer), messages, args.threads, seconds))
            t = time.perf_counter()
            observer.close()
            dropped += observer.dropped
            print(
                f"  round {r + 1}: off {offs[-1]:8.0f}/s   on {ons[-1]:8.0f}/s   "
                f"(close drained in {time.perf_counter() - t:.2f} s, dropped {observer.dropped})"
            )
        records = sum(len(p.read_text().splitlines()) for p in Path(tmp).glob("decisions.jsonl*"))

        # on_check alone, and the writer's cost per record, single-threaded.
        observer = build_observer(Path(tmp))
        request = request_from_proto(pb.CheckRequest.FromString(messages[0]), DEFAULT_LIMITS)
        obs = CheckObservation(
            request,
            engine.check(request),
            "",
            "",
            "ipv4:127.0.0.1:1",
            "",
            METADATA,
            time.time(),
            0.0002,
            "/pdp.v1.DecisionService/Check",
        )
        n = 20_000
        observer._max = n + 1  # room for all of them: this measures the append, not drops
        t = time.perf_counter()
        for _ in range(n):
            observer.on_check(obs)
        on_check_us = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        observer.close()
        writer_us = (time.perf_counter() - t) / n * 1e6

    off = sorted(offs)[len(offs) // 2]
    on = sorted(ons)[len(ons) // 2]
    print(f"throughput off (median)  {off:10.0f} checks/s")
    print(f"throughput on  (median)  {on:10.0f} checks/s")
    print(
        f"on / off                 {on / off:10.3f}   (cost {100 * (1 - on / off):.1f}%; target <= 15%)"
    )
    print(f"on_check                 {on_check_us:10.2f} µs per call (request thread)")
    print(
        f"writer                   {writer_us:10.1f} µs per record (span + metrics + record + file)"
    )
    print(f"records written {records}, dropped {dropped}")


if __name__ == "__main__":
    sys.exit(main())
