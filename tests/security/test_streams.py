"""Streaming calls must not starve decisions: health `Watch` and reflection streams opened by
the dozen against a real `pdp serve` (8 RPC threads, the default).

A Watch stream holds no RPC thread (grpc_health answers through a callback); a regression had
each one hold a thread for its life, so eight streams from any caller stopped every decision.
Reflection streams do hold a thread each, so at most a quarter of the threads serve them; past
that, and past 100 Watch streams, a new stream is RESOURCE_EXHAUSTED, and decisions go on."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server.conftest import ALICE, DOC, free_port, write_policies

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.streams import MAX_WATCHERS, max_reflection_streams

from .serving import CHECK, pdp_serve, wait_serving

WAIT_CAP = 60.0
THREADS = 8  # `pdp serve`'s default
REQUEST = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString()


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    policies = write_policies(tmp_path)
    # One worker: the bounds are per server process, and a client past 100 streams on one
    # connection (the native transport's SETTINGS_MAX_CONCURRENT_STREAMS) opens another, which
    # the round-robin deal would hand to the other worker.
    args = ("--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--workers", "1")
    with pdp_serve(*args) as served:
        wait_serving(port, served)
        yield port


def decided(ch: grpc.Channel) -> bool:
    reply = pb.CheckResponse.FromString(ch.unary_unary(CHECK)(REQUEST, timeout=WAIT_CAP))
    return reply.results[0].actions["read"].effect == pb.EFFECT_ALLOW


def watch(ch: grpc.Channel) -> grpc.Call:
    """An open Watch stream that has answered its first status (or failed)."""
    request = health_pb2.HealthCheckRequest()
    stream = health_pb2_grpc.HealthStub(ch).Watch(request, timeout=2 * WAIT_CAP)
    first = next(stream)  # type: ignore[call-overload]
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    return stream


def test_watch_streams_hold_no_rpc_thread(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        # Each first answer within the cap: a stream that held a thread would leave the ninth
        # waiting for one for ever.
        streams = [watch(ch) for _ in range(3 * THREADS)]
        assert decided(ch)
        for s in streams:
            s.cancel()


def test_watch_streams_past_the_bound_are_refused_and_decisions_go_on(port: int) -> None:
    # The bound's watchers on one connection, the one past it on another (a channel of its own
    # subchannel pool: grpc shares connections between channels to one address): the native
    # transport lets a connection open 100 streams at once (SETTINGS_MAX_CONCURRENT_STREAMS),
    # and a grpc client queues its 101st call until one of them ends.
    address = f"127.0.0.1:{port}"
    own = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(address) as ch, grpc.insecure_channel(address, own) as other:
        streams = [watch(ch) for _ in range(MAX_WATCHERS)]
        with pytest.raises(grpc.RpcError) as refused:
            watch(other)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert decided(other)
        streams.pop().cancel()
        # The slot comes back once grpc has seen the cancellation.
        end = time.monotonic() + WAIT_CAP
        while True:
            try:
                streams.append(watch(other))
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < end, "the cancelled stream's slot never came back"
                time.sleep(0.05)
        for s in streams:
            s.cancel()


class ReflectionStream:
    """A reflection stream that has answered one request and is kept open, as a client that
    never half-closes keeps it."""

    def __init__(self, ch: grpc.Channel) -> None:
        self._requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        self.call = stub.ServerReflectionInfo(iter(self._requests.get, None), timeout=2 * WAIT_CAP)
        self._requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        self.first = next(self.call)

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()


def test_reflection_streams_cannot_take_every_thread(port: int) -> None:
    bound = max_reflection_streams(THREADS)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        opened = [ReflectionStream(ch) for _ in range(bound)]
        assert all(o.first.list_services_response.service for o in opened)
        extra: list[ReflectionStream] = []
        errors: list[grpc.RpcError] = []

        def one_more() -> None:
            try:
                extra.append(ReflectionStream(ch))
            except grpc.RpcError as err:
                errors.append(err)

        # Past the bound, and as many again as there are threads: had each held a thread, the
        # decision below would wait behind them.
        tries = [threading.Thread(target=one_more) for _ in range(THREADS)]
        for t in tries:
            t.start()
        for t in tries:
            t.join(WAIT_CAP)
        assert not extra
        assert [e.code() for e in errors] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * THREADS
        assert decided(ch)
        for o in opened:
            o.close()
