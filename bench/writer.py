"""The telemetry writer process's CPU per call (not a test): what `pdp serve` pays on another core.

Reproduce:  .venv/bin/python bench/writer.py [--calls 20000] [--miss] [--traced] [--batch 512]

`pdp serve` hands each observed call to a writer process as plain bytes (pdp.server.wire); the
writer decodes them and writes the span, the metrics and the decision-log record. This runs that
writer's own code on this process's main thread — `decode_observation`, then
`TelemetryObserver.write_now` in batches of 512, as `pdp.telemetry.offload` does — with the
configuration `bench/server.py --telemetry` measures: a rotating JSON-lines file, spans and
metrics exported over OTLP/gRPC to a receiver in a child process (whose CPU is not counted).
Calls are cache hits of one decision (a gateway asking one question) and, with `--miss`,
replies the server decided afresh. Prints the process's CPU µs per call (every thread: the span
and metric exporters included) next to a reference measured in the same run: `json.dumps` of the
same record by the standard library, the least any decision-log writer does per call.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RPC = "/pdp.v1.DecisionService/Check"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _receiver(port_out: multiprocessing.Queue, stop: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    sys.path.insert(0, str(ROOT / "bench"))
    from server import OtlpReceiver

    receiver = OtlpReceiver()
    port_out.put(receiver.port)
    stop.wait()
    port_out.put(receiver.take_spans())
    receiver.stop()


def start_receiver(timeout: float = 60) -> tuple[Any, Any, Any]:
    """An OTLP receiver in a child process, and this process's OTLP exporters pointed at it:
    (the process, the queue it answers on, the event that stops it and makes it answer with
    the spans it received)."""
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_receiver, args=(queue, stop))
    proc.start()
    port = queue.get(timeout=timeout)
    os.environ.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": "pdp-bench",
        }
    )
    return proc, queue, stop


def items(n: int, *, miss: bool, traced: bool, size: int) -> list[bytes]:
    """`n` observations as the server's feeder sends them, pickled in batches of `size`."""
    sys.path.insert(0, str(ROOT / "bench"))
    from server import request_bytes

    from pdp.cli._common import load_and_compile
    from pdp.engine import Engine
    from pdp.model.request import DEFAULT_LIMITS
    from pdp.server._gen.pdp.v1 import decision_pb2 as pb
    from pdp.server.cache import split_request_id
    from pdp.server.convert import request_from_proto, response_to_proto
    from pdp.server.wire import _CHECK, _HIT

    engine = Engine(load_and_compile(ROOT / "policies")[1])
    data = request_bytes(1, pinned_time=True)
    key, _ = split_request_id(data)  # type: ignore[misc]
    response = engine.check(request_from_proto(pb.CheckRequest.FromString(data), DEFAULT_LIMITS))
    reply = response_to_proto(response)
    evaluated_at = reply.evaluated_at
    body = pb.CheckResponse()
    body.CopyFrom(reply)
    for name in ("decision_id", "request_id", "evaluated_at"):
        body.ClearField(name)
    body_bytes = body.SerializeToString()
    meta = (("traceparent", TRACEPARENT),) if traced else ()
    out, batch, now = [], [], time.time()
    for i in range(n):
        decision_id = f"01JBENCH{i:018d}"
        start, latency = now + i * 1e-4, 0.0002 + (i % 7) * 1e-5
        if miss:
            reply.decision_id = decision_id
            item: tuple[object, ...] = (
                _CHECK, RPC, data, reply.SerializeToString(), "", "",
                "ipv4:127.0.0.1:5555", "", meta, start, latency,
            )  # fmt: skip
        else:
            item = (
                _HIT, RPC, key, body_bytes, decision_id, "", evaluated_at,
                "ipv4:127.0.0.1:5555", "", meta, start, latency,
            )  # fmt: skip
        batch.append(item)
        if len(batch) == size:
            out.append(pickle.dumps(("batch", 0, batch), protocol=5))
            batch = []
    if batch:
        out.append(pickle.dumps(("batch", 0, batch), protocol=5))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--miss", action="store_true", help="decided replies instead of cache hits")
    ap.add_argument("--traced", action="store_true", help="callers send a traceparent")
    ap.add_argument(
        "--batch", type=int, default=512, help="calls per batch (the feeder sends up to 512)"
    )
    ap.add_argument("--profile", help="write a cProfile of the timed part to this file")
    args = ap.parse_args()

    proc, queue, stop = start_receiver()
    from pdp.server.wire import decode_observation
    from pdp.telemetry.config import TelemetryOptions
    from pdp.telemetry.decision_log import build_record
    from pdp.telemetry.masking import Masker
    from pdp.telemetry.setup import build_observer

    batches = items(args.calls, miss=args.miss, traced=args.traced, size=args.batch)
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-writer-"))
    log_file = tmp / "decisions.jsonl"
    observer = build_observer(
        TelemetryOptions(decision_log=(str(log_file),), backups=1000), writer_thread=False
    )

    def run(batches: list[bytes]) -> None:
        for blob in batches:
            _, _, batch = pickle.loads(blob)
            observer.write_now([decode_observation(item) for item in batch])

    run(batches[:2])  # warm-up: decoded entries, record shapes, exporter channels
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run(batches)
    assert observer.otel is not None and observer.otel.tracer_provider is not None
    observer.otel.tracer_provider.force_flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    observer.close()
    stop.set()
    spans = queue.get(timeout=60)
    proc.join(30)
    records = sum(f.read_bytes().count(b"\n") for f in tmp.glob("decisions*"))

    # The reference: the standard library's json.dumps of each call's full record.
    sample = [decode_observation(item) for item in pickle.loads(batches[0])[2]]
    masker = Masker()
    t0 = time.process_time()
    rounds = max(1, args.calls // len(sample))
    with open(os.devnull, "w") as sink:
        for _ in range(rounds):
            for obs in sample:
                sink.write(json.dumps(build_record(obs, masker)) + "\n")
    ref_us = (time.process_time() - t0) / (rounds * len(sample)) * 1e6

    n = args.calls + sum(len(pickle.loads(b)[2]) for b in batches[:2])
    per_call = cpu / args.calls * 1e6
    kind = "decided replies" if args.miss else "cache hits"
    print(
        f"{args.calls} {kind}{', traced' if args.traced else ''}: {records} records, {spans} spans"
    )
    print(f"writer CPU per call: {per_call:.1f} µs ({wall / args.calls * 1e6:.1f} µs wall)")
    print(f"reference (build_record + json.dumps per call): {ref_us:.1f} µs")
    print(f"writer / reference: {per_call / ref_us:.2f}x")
    if records != n or spans != n:
        print(f"WARNING: expected {n} records and spans")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
