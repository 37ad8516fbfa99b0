"""Rate limits in the telemetry: a metric per limit id and outcome from a real `pdp serve`
(scraped over HTTP, through the writer process), and near-limit warnings on the span."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from pdp.client import Client
from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request
from pdp.telemetry.decision_log import summarize
from pdp.telemetry.tracing import _call_attributes

from ._procs import free_port, start_pdp, stop
from .conftest import LIMITED, write_policies


def rate_limit_samples(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.labels["limit"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "pdp_rate_limit_decisions_total"
    }


def test_limited_and_granted_counts_per_limit_id(tmp_path) -> None:
    policies = write_policies(tmp_path / "policies", LIMITED)
    prometheus = free_port()
    proc, port = start_pdp(
        policies, tmp_path / "pdp.log", "--prometheus", f"127.0.0.1:{prometheus}"
    )
    try:
        with Client(f"127.0.0.1:{port}", timeout=10) as c:
            for _ in range(7):
                c.check(
                    {"id": "ann", "tenant": "acme", "roles": ["member"]},
                    [{"kind": "note", "id": "n", "tenant": "acme", "actions": ["read"]}],
                )
        expected = {("per-user-reads", "granted"): 5.0, ("per-user-reads", "limited"): 2.0}
        deadline = time.monotonic() + 30
        while (samples := rate_limit_samples(prometheus)) != expected:
            assert time.monotonic() < deadline, samples
            time.sleep(0.1)
    finally:
        stop(proc)


def test_the_span_names_limits_near_and_over(tmp_path) -> None:
    engine = Engine(compile_policy_set(load_policy_dir(write_policies(tmp_path, LIMITED))))
    t0 = datetime(2026, 3, 10, tzinfo=UTC)

    def read(i: int):
        return engine.check(
            parse_check_request(
                {
                    "principal": {"id": "ann", "tenant": "acme", "roles": ["member"]},
                    "resources": [
                        {"kind": "note", "id": "n", "tenant": "acme", "actions": ["read"]}
                    ],
                    "context": {"time": (t0 + timedelta(seconds=i)).isoformat()},
                }
            )
        )

    attrs = [
        _call_attributes("/pdp.v1.DecisionService/Check", "", "d", "r", summarize(read(i)))
        for i in range(6)
    ]
    # 5 a day: 4, 3, 2, 1 left, then 0 (under a tenth of the limit), then refused.
    assert [a.get("pdp.rate_limit.near") for a in attrs] == [None] * 4 + ["per-user-reads"] * 2
    assert [a.get("pdp.rate_limit.limited") for a in attrs] == [None] * 5 + ["per-user-reads"]
    assert summarize(read(6)).limits == (("per-user-reads", "limited", 1),)
