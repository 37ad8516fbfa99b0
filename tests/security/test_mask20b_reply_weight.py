"""What a queued record keeps alive of its reply counts against the log queue's byte budget.

`reply_weight` estimates a decided call's reply where no reply bytes exist to count: the HTTP
adapter's (`/v1/check`, AuthZEN, `/v1/plan`) and, now, the gRPC Plan's and an ext_authz call's
(which counted their request alone). It counted messages and errors only: the obligations a
policy computes (an ext_authz answer's headers: any number, any size) and `/v1/check`'s explain
traces were free, so a stalled sink could queue 10,000 records of them by count alone.
"""

from __future__ import annotations

import http.client
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

from pdp.model.decision import (
    ActionDecision,
    BundleInfo,
    CheckResponse,
    LimitStatus,
    ResourceDecision,
    TraceStep,
)
from pdp.server.hooks import reply_weight

from . import test_redteam20_log_replies as replies
from .test_redteam16_log_queue import _free_port, _peak_rss_mb

HEADERS = {f"x-h{i}": "v" * 1000 for i in range(64)}  # 64 KB of answer headers


def _response(d: ActionDecision, n: int = 1) -> CheckResponse:
    results = tuple(ResourceDecision("doc", f"d{i}", {"read": d}) for i in range(n))
    return CheckResponse("r", "id", BundleInfo("b", "1", ""), results)


def test_obligations_count_as_the_headers_they_set() -> None:
    plain = reply_weight(_response(ActionDecision("allow")))
    heavy = reply_weight(_response(ActionDecision("allow", obligations={"headers": HEADERS})))
    assert heavy - plain >= 64 * 1000
    nested = {"a": [{"b": "x" * 5000}, 1, True, None], "c": ("y" * 3000,)}
    assert reply_weight(_response(ActionDecision("allow", obligations=nested))) - plain >= 8000


def test_explain_traces_and_limits_count() -> None:
    steps = tuple(
        TraceStep("allow_rule", "p", f"r{i}", "not_matched", "d" * 200) for i in range(50)
    )
    plain = reply_weight(_response(ActionDecision("deny"), 100))
    traced = reply_weight(_response(ActionDecision("deny", trace=steps), 100))
    assert traced - plain >= 100 * 50 * 200
    limit = LimitStatus("l", "p", 10, 1.0, 5, 1)
    limited = reply_weight(_response(ActionDecision("deny", limits=(limit,) * 10), 100))
    assert limited > plain


# `/v1/check` with `explain`: a small request (500 resources x 2 actions) whose reply holds
# eight explain steps per decision (~1 MB of trace objects per call, queued with the record)
# and no errors, so the estimate from messages and errors alone (~70 KB) let ~800 of them in
# under the 64 MiB budget: ~850 MB. Under the test's 8 MiB budget (`replies.QUEUE_BYTES`)
# 120 calls show it: ~1.4 MB of server memory each, queued, when the trace is not counted.
EXPLAIN_CALLS = 120


def _explained_batch() -> bytes:
    body = {
        "principal": {"id": "eve", "tenant": "t", "attr": {"level": "x" * 180}},
        "resources": [
            {"kind": "doc", "id": f"d{k}", "tenant": "t", "actions": ["read", "edit"]}
            for k in range(500)
        ],
        "explain": True,
    }
    return json.dumps(body).encode()


def test_explained_http_checks_to_a_stalled_log_keep_memory_bounded(tmp_path: Path) -> None:
    policy = textwrap.dedent(replies.POLICY).lstrip()
    (tmp_path / "doc.yaml").write_text(
        policy.replace("int(P.attr.level) >=", "size(P.attr.level) <")
    )
    body = _explained_batch()
    assert len(body) < 40 * 1024  # ~40 KB of request for ~1 MB of reply kept alive
    http_port = _free_port()
    flags = ["--telemetry-writer", "thread", "--http-listen", f"127.0.0.1:{http_port}"]
    with replies.serve_with_stalled_stdout(tmp_path, *flags) as (served, _grpc_port):
        failures: list[BaseException] = []

        def caller(n: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=120)
            try:
                for _ in range(n):
                    connection.request(
                        "POST", "/v1/check", body, {"Content-Type": "application/json"}
                    )
                    reply = connection.getresponse()
                    data = reply.read()
                    assert reply.status == 200, data[:200]
                    assert len(json.loads(data)["results"][0]["actions"]["read"]["trace"]) >= 8
            except BaseException as exc:
                failures.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=caller, args=(EXPLAIN_CALLS // 4,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        assert failures == [], failures[:1]
        peak = _peak_rss_mb(served.proc.pid)
        assert peak < replies.MAX_PEAK_RSS_MB, f"pdp serve peaked at {peak} MB"


class _Recorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def on_check(self, record: Any) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


class _Context:
    """What the observing code reads of a gRPC call's context."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def invocation_metadata(self) -> tuple[()]:
        return ()


def test_an_ext_authz_record_counts_the_headers_its_decision_sets() -> None:
    from pdp.gateway.response import Outcome
    from pdp.gateway.servicer import ExtAuthzServicer

    recorder = _Recorder()
    servicer = ExtAuthzServicer(None, observer=recorder)  # type: ignore[arg-type]
    decision = _response(ActionDecision("allow", obligations={"headers": HEADERS}))
    outcome = Outcome(True, 0, 200, "", "id", headers=HEADERS)
    servicer._observe(_Context(), outcome, [(None, decision)], 0.0, 0.0, 300)  # type: ignore[arg-type]
    assert recorder.records[0].request_size >= 300 + 64 * 1000


def test_a_plan_record_counts_its_decision() -> None:
    from pdp.engine import EngineHolder
    from pdp.model.request import DEFAULT_LIMITS
    from pdp.server.service import DecisionService

    class Plan:
        def as_response(self) -> CheckResponse:
            return _response(ActionDecision("deny", message="m" * 50_000))

    recorder = _Recorder()
    service = DecisionService(EngineHolder(), DEFAULT_LIMITS, 4 << 20, recorder)
    service._observe_plan(_Context(), None, Plan(), None, 0.0, 0.0, 300)
    assert recorder.records[0].request_size >= 300 + 50_000
