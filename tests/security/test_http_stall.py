"""One caller's slow batch must not stall every other HTTP caller: a real `pdp serve
--http-listen` deciding a batch of heavy evaluations (about 0.1 s each, tests/security/serving.py)
still answers a health check, and a small decision, on other connections meanwhile."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, Reply, pdp_serve

from .serving import HEAVY_PRINCIPAL, write_heavy_policies

EVALUATIONS = 40  # ~4 s of deciding on a quiet machine
SUBJECT = {
    "type": "user",
    "id": HEAVY_PRINCIPAL["id"],
    "properties": {
        "tenant": HEAVY_PRINCIPAL["tenant"],
        "roles": HEAVY_PRINCIPAL["roles"],
        **HEAVY_PRINCIPAL["attr"],
    },
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def heavy_batch(tag: str) -> dict[str, Any]:
    return {
        "subject": SUBJECT,
        "action": {"name": "read"},
        "evaluations": [
            {"resource": {"type": "report", "id": f"{tag}-{i}", "properties": {"tenant": "acme"}}}
            for i in range(EVALUATIONS)
        ],
    }


def test_a_slow_batch_does_not_stall_other_connections(tmp_path: Path) -> None:
    with pdp_serve(policies=write_heavy_policies(tmp_path)) as pdp:
        batch: dict[str, Reply] = {}
        done = threading.Event()

        def send(p: Pdp) -> None:
            batch["reply"] = p.post("/access/v1/evaluations", heavy_batch("slow"))
            done.set()

        before = cpu_seconds(pdp.proc.pid)
        sender = threading.Thread(target=send, args=(pdp,))
        sender.start()
        # The event: the server is deciding the batch (it has spent half a second of CPU on it,
        # about a tenth of the batch), so the listener's loop has it in hand.
        cap = time.monotonic() + 120
        while cpu_seconds(pdp.proc.pid) - before < 0.5:
            assert not done.is_set(), batch["reply"].body[:500]
            assert time.monotonic() < cap, "the batch never started"
            time.sleep(0.01)

        ready = pdp.get("/readyz")
        # Without the heavy attributes the condition is an error: a deny, decided at once.
        small = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": {"type": "user", "id": "bob", "properties": {"tenant": "acme"}},
                "action": {"name": "read"},
                "resource": {"type": "report", "id": "r", "properties": {"tenant": "acme"}},
            },
        )
        # Both answered while the batch was still being decided.
        answered_meanwhile = not done.is_set()
        sender.join(180)

    assert ready.status == 200, ready.body
    assert small.status == 200 and small.json["decision"] is False, small.body
    reply = batch["reply"]
    assert reply.status == 200, reply.body[:500]
    assert [e["decision"] for e in reply.json["evaluations"]] == [True] * EVALUATIONS
    assert answered_meanwhile, "a health check and a small decision waited for the slow batch"
