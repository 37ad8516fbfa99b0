"""An HTTP decision stops at its deadline: a real `pdp serve --http-listen --http-timeout`
whose two decision threads are both taken by heavy batches (500 resources of about 0.1 s
each, tests/security/serving.py) answers each batch 504 at its deadline, frees the threads,
and decides an ordinary call next, long before the batches would have finished. The probes
never wait for the decision threads."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, Reply, assert_error, pdp_serve

from pdp.bundle.load import compile_files
from pdp.engine import Engine, EngineHolder
from pdp.http.api import Call, HttpApi
from pdp.http.server import HttpServer
from pdp.model.request import Limits
from tests.decision_logs import complete_records

from .serving import HEAVY_POLICY, HEAVY_PRINCIPAL, heavy_resources, write_heavy_policies
from .test_http_stall import SUBJECT, cpu_seconds

TIMEOUT = 5  # --http-timeout: far below the ~50 s of CPU one batch would take
RESOURCES = 500
WAIT_CAP = 120.0
CHECK_RPC = "POST /v1/check"
BATCH_RPC = "POST /access/v1/evaluations"
ONE_RPC = "POST /access/v1/evaluation"


def _check_batch() -> dict[str, Any]:
    return {"principal": HEAVY_PRINCIPAL, "resources": heavy_resources(RESOURCES, "check")}


def _authzen_batch() -> dict[str, Any]:
    return {
        "subject": SUBJECT,
        "action": {"name": "read"},
        "evaluations": [
            {"resource": {"type": "report", "id": f"az-{i}", "properties": {"tenant": "acme"}}}
            for i in range(RESOURCES)
        ],
    }


def _records_until(log: Path, rpc: str) -> list[dict[str, Any]]:
    """The decision log up to and with the first record of `rpc` (fails at the cap)."""
    end = time.monotonic() + WAIT_CAP
    while True:
        records = complete_records(log)
        for n, r in enumerate(records):
            if r.get("rpc") == rpc:
                return records[: n + 1]
        assert time.monotonic() < end, f"no `{rpc}` record in {records}"
        time.sleep(0.05)


def test_heavy_batches_stop_at_the_deadline_and_free_the_decision_threads(
    tmp_path: Path,
) -> None:
    log = tmp_path / "decisions.jsonl"
    flags = ["--http-timeout", str(TIMEOUT), "--decision-log", str(log)]
    flags += ["--telemetry-writer", "thread"]
    with pdp_serve(*flags, policies=write_heavy_policies(tmp_path)) as pdp:
        replies: dict[str, Reply] = {}
        done = {"check": threading.Event(), "authzen": threading.Event()}

        def send(name: str, path: str, body: dict[str, Any]) -> None:
            try:
                replies[name] = pdp.post(path, body)
            finally:
                done[name].set()

        before = cpu_seconds(pdp.proc.pid)
        senders = [
            threading.Thread(target=send, args=("check", "/v1/check", _check_batch())),
            threading.Thread(
                target=send, args=("authzen", "/access/v1/evaluations", _authzen_batch())
            ),
        ]
        for t in senders:
            t.start()
        # The event: the server is deciding (half a second of CPU spent on the batches).
        cap = time.monotonic() + WAIT_CAP
        while cpu_seconds(pdp.proc.pid) - before < 0.5:
            assert not any(e.is_set() for e in done.values()), replies
            assert time.monotonic() < cap, "the batches never started"
            time.sleep(0.01)
        # The probes run on the listener's loop, not behind the busy decision threads.
        healthz, readyz = pdp.get("/healthz"), pdp.get("/readyz")
        probes_meanwhile = not any(e.is_set() for e in done.values())
        for t in senders:
            t.join(WAIT_CAP)
        assert all(e.is_set() for e in done.values()), "a batch got no answer"
        # Sent once both batches were answered: decided at once, on a freed thread.
        one = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": SUBJECT,
                "action": {"name": "read"},
                "resource": {"type": "report", "id": "one", "properties": {"tenant": "acme"}},
            },
        )
        records = _records_until(log, ONE_RPC)

    assert healthz.status == 200 and readyz.status == 200, (healthz.body, readyz.body)
    assert probes_meanwhile, "a probe waited for the decision threads"
    for name in ("check", "authzen"):
        err = assert_error(replies[name], 504)
        m = re.fullmatch(
            r"deadline exceeded before the decision was complete \(decided (\d+) of (\d+) "
            r"resources\)",
            err["message"],
        )
        assert m is not None, err
        assert int(m.group(2)) == RESOURCES and 0 < int(m.group(1)) < RESOURCES, err
        assert "evaluations" not in replies[name].json and "results" not in replies[name].json
    assert one.status == 200 and one.json["decision"] is True, one.body
    # The order shows the threads were freed: before the ordinary call was decided, each batch
    # left one record, its deadline error, and no decision (a thread that had kept deciding
    # would have logged the whole batch first: the ordinary call waited for a thread).
    heavy = [r for r in records if r.get("rpc") in (CHECK_RPC, BATCH_RPC)]
    assert sorted(r["rpc"] for r in heavy) == sorted([CHECK_RPC, BATCH_RPC]), heavy
    assert all(r["error"]["code"] == "DEADLINE_EXCEEDED" for r in heavy), heavy
    assert records[-1]["rpc"] == ONE_RPC and "error" not in records[-1], records[-1]


def test_a_call_that_waited_for_a_thread_past_its_deadline_is_not_decided() -> None:
    """Both decision threads of a real listener held (a route that waits on an event): an
    evaluation sent meanwhile waits its turn past its deadline, and when a thread takes it it
    is refused 504, undecided, as gRPC refuses a call that waited in its queue too long."""
    holder = EngineHolder()
    holder.swap(Engine(compile_files({"heavy.yaml": dedent(HEAVY_POLICY).encode()}).policy_set))
    api = HttpApi(holder, Limits(), 1 << 20)
    release, held = threading.Event(), threading.Semaphore(0)

    def hold(call: Call) -> tuple[int, Any]:
        held.release()
        release.wait(WAIT_CAP)
        return 200, {}

    api.add("POST", "/hold", hold)
    srv = HttpServer(api, ("127.0.0.1:0",), grace=1.0, timeout=0.2)
    srv.start()
    pdp = Pdp(None, "", f"127.0.0.1:{srv.port}")  # type: ignore[arg-type]
    try:
        holders = [threading.Thread(target=pdp.post, args=("/hold", {})) for _ in range(2)]
        for t in holders:
            t.start()
        for _ in holders:  # the event: both threads are in the route
            assert held.acquire(timeout=WAIT_CAP)
        reply: dict[str, Reply] = {}
        body = {
            "subject": {"type": "user", "id": "bob", "properties": {"tenant": "acme"}},
            "action": {"name": "read"},
            "resource": {"type": "report", "id": "r", "properties": {"tenant": "acme"}},
        }
        sender = threading.Thread(
            target=lambda: reply.setdefault("r", pdp.post("/access/v1/evaluation", body))
        )
        sender.start()
        # Ten times its 0.2 s deadline: waiting longer only makes it more certain.
        time.sleep(2.0)
        release.set()
        sender.join(WAIT_CAP)
        for t in holders:
            t.join(WAIT_CAP)
    finally:
        release.set()
        srv.stop()
    err = assert_error(reply["r"], 504)
    assert err["message"] == "deadline exceeded before the decision was complete", err
    assert "decision" not in reply["r"].json


@pytest.mark.parametrize("semantic", ["execute_all", "deny_on_first_deny"])
def test_an_evaluations_call_answered_504_logs_none_of_its_decisions(
    tmp_path: Path, semantic: str
) -> None:
    """A batch decided in parts (a group per subject; one evaluation at a time when it may
    stop early) whose deadline passes after some parts were decided: the caller gets a 504
    and no decision, so the decision log holds one record of the call, its deadline error,
    and no decision of the parts decided before, as gRPC logs a DEADLINE_EXCEEDED batch.

    `execute_all`: the first group, another subject's one evaluation, is decided at once;
    the second, 100 heavy evaluations, is stopped. `deny_on_first_deny`: the heavy
    evaluations are allowed one by one until the deadline."""
    log = tmp_path / "decisions.jsonl"
    flags = ["--http-timeout", "3", "--decision-log", str(log), "--telemetry-writer", "thread"]
    heavy = [
        {"resource": {"type": "report", "id": f"az-{i}", "properties": {"tenant": "acme"}}}
        for i in range(100)
    ]
    first = {
        "subject": {"type": "user", "id": "bob", "properties": {"tenant": "acme"}},
        "resource": {"type": "report", "id": "bob-1", "properties": {"tenant": "acme"}},
    }
    evaluations = [first, *heavy] if semantic == "execute_all" else heavy
    body = {
        "subject": SUBJECT,
        "action": {"name": "read"},
        "evaluations": evaluations,
        "options": {"evaluations_semantic": semantic},
    }
    with pdp_serve(*flags, policies=write_heavy_policies(tmp_path)) as pdp:
        reply = pdp.post("/access/v1/evaluations", body)
        # Then an ordinary call: the log is written in order, so its record comes last.
        one = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": SUBJECT,
                "action": {"name": "read"},
                "resource": {"type": "report", "id": "one", "properties": {"tenant": "acme"}},
            },
        )
        records = _records_until(log, ONE_RPC)

    err = assert_error(reply, 504)
    m = re.fullmatch(
        r"deadline exceeded before the decision was complete \(decided (\d+) of (\d+) "
        r"resources\)",
        err["message"],
    )
    assert m is not None, err
    # Some part was decided before the deadline: its decision was made, and not answered.
    assert 0 < int(m.group(1)) < len(evaluations) == int(m.group(2)), err
    assert one.status == 200 and one.json["decision"] is True, one.body
    batch = [r for r in records if r.get("rpc") == BATCH_RPC]
    assert len(batch) == 1, batch
    assert batch[0]["error"] == {"code": "DEADLINE_EXCEEDED", "message": err["message"]}
    assert "decisions" not in batch[0] and batch[0]["decision_id"] == "", batch[0]
