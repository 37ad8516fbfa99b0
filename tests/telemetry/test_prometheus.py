"""The opt-in Prometheus endpoint, scraped over HTTP on loopback."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pdp.telemetry import TelemetryOptions, build_observer

from .conftest import ObsFactory


def scrape(host: str, port: int) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def samples_of(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["effect"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "pdp_decisions_total"
    }


def test_scrape_endpoint_serves_decision_metrics(make_obs: ObsFactory) -> None:
    observer = build_observer(TelemetryOptions(otel=False, prometheus="127.0.0.1:0"))
    assert observer.otel is not None and observer.otel.prometheus_address is not None
    host, port = observer.otel.prometheus_address
    try:
        for i in range(4):
            observer.on_check(make_obs(decision_id=f"d{i}"))
        deadline = time.monotonic() + 5
        samples = samples_of(scrape(host, port))
        while ("allow", "reader") not in samples and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer thread records metrics shortly after on_check
            samples = samples_of(scrape(host, port))
        assert samples[("allow", "reader")] == 8.0
        assert samples[("deny", "missing_scope")] == 4.0
        text = scrape(host, port)
        assert "pdp_decision_duration_seconds_count" in text
        assert "pdp_check_batch_size_count" in text
        histograms = {
            (s.name, s.labels.get("outcome", ""), s.labels.get("le", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith(("pdp_decision_duration_seconds", "pdp_check_batch_size"))
        }
        # Each call took 0.42 ms and asked 3 checks (conftest).
        latency = "pdp_decision_duration_seconds"
        assert histograms[(f"{latency}_count", "ok", "")] == 4.0
        assert histograms[(f"{latency}_sum", "ok", "")] == pytest.approx(4 * 0.00042)
        assert histograms[(f"{latency}_bucket", "ok", "0.00025")] == 0.0
        assert histograms[(f"{latency}_bucket", "ok", "0.0005")] == 4.0
        assert histograms[(f"{latency}_bucket", "ok", "+Inf")] == 4.0
        assert histograms[("pdp_check_batch_size_count", "", "")] == 4.0
        assert histograms[("pdp_check_batch_size_sum", "", "")] == 12.0
        assert histograms[("pdp_check_batch_size_bucket", "", "2")] == 0.0
        assert histograms[("pdp_check_batch_size_bucket", "", "5")] == 4.0
    finally:
        observer.close()
    with pytest.raises(urllib.error.URLError):
        scrape(host, port)  # closed with the observer
