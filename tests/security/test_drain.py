"""SIGTERM drains as documented, against a real `pdp serve` with the decision log on.

After the signal no new call is decided (UNAVAILABLE, or the connection is refused), calls in
flight are answered (or, past `--grace`, refused), the process exits 0, and the decision log
holds exactly the calls whose answers were sent, matched by decision id, without a spurious
drop warning. Every wait is for an event, under a generous cap; no duration is asserted.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from server.conftest import ALICE, DOC, free_port, write_policies

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .serving import CHECK, health, heavy_request, pdp_serve, wait_serving, write_heavy_policies

LOAD_THREADS = 8


class Load:
    """Client threads, each on its own connection, calling until their first failure."""

    def __init__(self, port: int, data: bytes) -> None:
        self.port = port
        self.data = data
        self.answered: list[str] = []  # decision ids
        self.failed: list[grpc.RpcError] = []
        self._lock = threading.Lock()
        self._enough = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(LOAD_THREADS)]

    def _run(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            check = ch.unary_unary(CHECK)
            for _ in range(100_000):
                try:
                    reply = pb.CheckResponse.FromString(check(self.data, timeout=120))
                except grpc.RpcError as err:
                    with self._lock:
                        self.failed.append(err)
                    return
                with self._lock:
                    self.answered.append(reply.decision_id)
                    if len(self.answered) >= 300:
                        self._enough.set()

    def start(self) -> None:
        for t in self.threads:
            t.start()
        assert self._enough.wait(120), f"load never got going: {self.failed[:3]}"

    def join(self) -> None:
        for t in self.threads:
            t.join(180)
            assert not t.is_alive()


def logged(tmp_path: Path) -> list[dict]:
    """Every record of every decision-log file (one per worker with --workers N)."""
    records = []
    for path in sorted(tmp_path.glob("decisions*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def assert_log_matches(tmp_path: Path, answered: list[str]) -> None:
    records = logged(tmp_path)
    assert all(r["decision_id"] for r in records), [r for r in records if not r["decision_id"]]
    ids = Counter(r["decision_id"] for r in records)
    assert len(answered) == len(set(answered))
    assert ids == Counter(answered), (
        f"{len(ids - Counter(answered))} logged without an answer, "
        f"{len(Counter(answered) - ids)} answered without a record"
    )


def assert_refused(port: int) -> None:
    """A call on a new connection is not decided: UNAVAILABLE (refused or shutting down)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(CHECK)(
            request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString(),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value


def wait_not_serving(port: int) -> None:
    """Until 20 health checks in a row, each on a new connection (so dealt to any worker),
    answer anything but SERVING: then every worker has begun its drain."""
    in_a_row = 0
    for _ in range(10_000):
        in_a_row = in_a_row + 1 if health(port) != health_pb2.HealthCheckResponse.SERVING else 0
        if in_a_row == 20:
            return
    pytest.fail("health never left SERVING after SIGTERM")


def serve_args(policies: Path, port: int, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--policies",
        str(policies),
        "--listen",
        f"127.0.0.1:{port}",
        "--decision-log",
        str(tmp_path / "decisions.jsonl"),
        "--telemetry-writer",
        "process",
        *extra,
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_logs_exactly_the_answered_calls(tmp_path: Path, workers: int) -> None:
    (tmp_path / "policies").mkdir()
    policies = write_policies(tmp_path / "policies")
    port = free_port()
    batch = [{**DOC, "id": f"d{i}", "actions": ["read", "write"]} for i in range(100)]
    data = request_to_proto(ALICE, batch, None).SerializeToString()
    args = serve_args(policies, port, tmp_path, "--grace", "30", "--workers", str(workers))
    with pdp_serve(*args) as served:
        wait_serving(port, served)
        load = Load(port, data)
        load.start()
        served.proc.send_signal(signal.SIGTERM)
        wait_not_serving(port)
        for _ in range(20):
            assert_refused(port)
        assert served.exit_code() == 0, served.output()
        load.join()
    out = served.output()
    assert served.count("stopped") >= workers, out
    assert "dropped" not in out, out
    # Every load thread ended on a refusal, never on a cancelled or cut-off call.
    assert len(load.failed) == LOAD_THREADS
    assert {e.code() for e in load.failed} == {grpc.StatusCode.UNAVAILABLE}, load.failed
    assert_log_matches(tmp_path, load.answered)


def test_calls_past_the_grace_are_refused_and_not_logged(tmp_path: Path) -> None:
    policies = write_heavy_policies(tmp_path)
    port = free_port()
    # grpcio: each call on a thread of its own, so the marker is answered while the slow calls
    # decide. The native transport decides a batch's calls one after the other, and the three
    # slow calls and the marker arrive as one batch: the marker would wait for them (its drain
    # is tested in test_native_transport.py and test_native_sanitized.py).
    args = serve_args(policies, port, tmp_path, "--grace", "1", "--transport", "grpcio")
    with pdp_serve(*args) as served:
        wait_serving(port, served)
        answered = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            check = ch.unary_unary(CHECK)
            answered.append(pb.CheckResponse.FromString(check(heavy_request(1, "warm"))))
            # Started one after the other from this thread, so the marker's stream follows the
            # slow ones on the connection: once it is answered, the server has taken the slow
            # ones (each about 12 s of work) from the transport. Calls started from threads
            # could be sent after the marker, and such a call met the drain as a new call.
            slow = [check.future(heavy_request(120, f"slow{i}"), timeout=300) for i in range(3)]
            marker = request_to_proto(
                ALICE, [{**DOC, "actions": ["read"]}], None
            ).SerializeToString()
            answered.append(pb.CheckResponse.FromString(check(marker, timeout=120)))
            served.proc.send_signal(signal.SIGTERM)
            results = {i: f.exception(timeout=300) for i, f in enumerate(slow)}
        assert served.exit_code() == 0, served.output()
    for err in results.values():
        assert isinstance(err, grpc.RpcError), "a 12 s call finished within a 1 s grace"
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert "did not finish within the drain grace" in (err.details() or ""), err
    assert len(results) == 3
    assert "dropped" not in served.output(), served.output()
    assert_log_matches(tmp_path, [a.decision_id for a in answered])
