"""The server's keepalive PINGs (`--grpc-keepalive-time`, `--grpc-keepalive-timeout`), on both
transports. The idle timeout spares a connection with a call open, so a client gone without
closing its connection (host powered off, NAT entry forgotten) while it holds a health Watch —
which a grpc client doing client-side health checks keeps open for its connection's life —
would otherwise keep the connection, and a Watch slot, for ever."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server.conftest import free_port

from tests.security.native_h2 import HEADERS, frame
from tests.security.serving import Served, pdp_serve, wait_serving

POLICIES = str(Path(__file__).resolve().parents[2] / "policies")
WATCH = [(n, "/grpc.health.v1.Health/Watch" if n == ":path" else v) for n, v in HEADERS]
CHECK = [(n, "/grpc.health.v1.Health/Check" if n == ":path" else v) for n, v in HEADERS]
CAP_S = 30.0  # grpcio's own ping timeout, which our flag must override, is 60 s


@pytest.fixture(scope="module", params=["native", "grpcio"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Served, int, str]]:
    port = free_port()
    with pdp_serve(
        "--policies", POLICIES, "--listen", f"127.0.0.1:{port}", "--workers", "1",
        "--transport", request.param, "--grpc-idle-timeout", "0",
        "--grpc-keepalive-time", "1", "--grpc-keepalive-timeout", "1",
    ) as s:  # fmt: skip
        wait_serving(port, s)
        yield s, port, request.param


class Client:
    """One connection with a health Watch open; `answers`: whether it goes on sending what h2
    queues (the ACK of each PING), or falls silent once the Watch's first message came."""

    def __init__(self, port: int, answers: bool) -> None:
        self.answers = answers
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CAP_S)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, WATCH)
        self.conn.send_data(sid, frame(health_pb2.HealthCheckRequest().SerializeToString()), True)
        self.sock.sendall(self.conn.data_to_send())
        self.pings = 0
        self.statuses = 0  # Watch messages received
        self.goaway: bytes | None = None
        self.trailers: dict[int, dict[str, str]] = {}
        self.silent = False
        self.closed = False

    def read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:  # frames after a GOAWAY in the same read: h2 is
            self.goaway = self.goaway or b""  # closed, its events lost (grpcio sends trailers)
            return
        for ev in events:
            if isinstance(ev, h2.events.PingReceived):
                self.pings += 1
            elif isinstance(ev, h2.events.DataReceived):
                self.statuses += 1
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                self.trailers[ev.stream_id] = dict(ev.headers)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.additional_data or b""
        out = self.conn.data_to_send()
        if out and not self.silent:
            self.sock.sendall(out)
        # A client that vanishes does so once its call works: it answered what came until then.
        self.silent = not self.answers and self.statuses > 0

    def check(self) -> int:
        """A health Check on a new stream of this connection; its stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, CHECK)
        self.conn.send_data(sid, frame(health_pb2.HealthCheckRequest().SerializeToString()), True)
        self.sock.sendall(self.conn.data_to_send())
        return sid


def test_a_client_gone_silent_is_closed_and_one_that_answers_is_kept(
    served: tuple[Served, int, str],
) -> None:
    s, port, transport = served
    alive, gone = Client(port, answers=True), Client(port, answers=False)
    end = time.monotonic() + CAP_S
    try:
        while not gone.closed:
            assert time.monotonic() < end, f"a silent client was kept: {vars(gone)}\n{s.output()}"
            ready, _, _ = select.select([alive.sock, gone.sock], [], [], 0.5)
            for client in (alive, gone):
                if client.sock in ready and not client.closed:
                    client.read()
        assert gone.statuses >= 1 and gone.pings >= 1  # its Watch was open; it got a PING
        if transport == "native":  # grpcio's GOAWAY comes with frames h2 refuses after it
            assert gone.goaway == b"keepalive_timeout"
        assert alive.pings >= 1 and not alive.closed and alive.goaway is None
        # The answering client's connection still carries calls.
        sid = alive.check()
        while sid not in alive.trailers:
            assert time.monotonic() < end and not alive.closed, s.output()
            alive.read()
        assert alive.trailers[sid].get("grpc-status") == "0"
    finally:
        alive.sock.close()
        gone.sock.close()


def test_a_grpc_client_keeps_its_watch_through_the_pings(
    served: tuple[Served, int, str],
) -> None:
    """grpc's own client answers the PINGs: its Watch stays open through several, paced by a
    raw client on the same server counting the PINGs it gets."""
    s, port, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=CAP_S
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        clock = Client(port, answers=True)
        end = time.monotonic() + CAP_S
        try:
            while clock.pings < 3:
                assert time.monotonic() < end and not clock.closed, s.output()
                clock.read()
        finally:
            clock.sock.close()
        assert watch.is_active(), watch.code()
        watch.cancel()
