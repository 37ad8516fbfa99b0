"""Health and readiness probes answer on their own merits, whatever `X-Request-ID` they carry.

A bad `X-Request-ID` (a control character, bytes that are no UTF-8, longer than
`--max-id-length`) was a 400 on every route, `/healthz` and `/readyz` included: a load balancer
probing with a junk or over-long id took the instance out of rotation. As Envoy and Cerbos
do, a probe's answer depends on the server only: there the header is ignored, and not echoed
back. A decision route keeps its 400 naming the header (and does not echo it either). Over a
real `pdp serve --http-listen`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve

from pdp.model.request import DEFAULT_LIMITS

# What HTTP parsers pass on: an inner tab, a C1 control (U+0085 as UTF-8), a byte that is no
# UTF-8 (sent as latin-1 by http.client), and one character past the id length limit.
JUNK = {
    "tab": "probe\t1",
    "c1 control": "probe\u00c2\u00851",
    "not utf-8": "probe\u00ff1",
    "over-long": "p" * (DEFAULT_LIMITS.max_id_length + 1),
}

CHECK = {
    "principal": {"id": "alice", "roles": ["user"]},
    "resources": [{"kind": "document", "id": "d-1", "actions": ["read"]}],
}


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve() as p:
        yield p


@pytest.mark.parametrize("name", sorted(JUNK))
def test_a_probe_with_a_junk_request_id_answers_on_its_own_merits(pdp: Pdp, name: str) -> None:
    junk = {"X-Request-ID": JUNK[name]}
    health = pdp.get("/healthz", headers=junk)
    assert health.status == 200 and health.json == {"status": "ok"}, health.body
    assert "x-request-id" not in health.headers, health.headers
    ready = pdp.get("/readyz", headers=junk)
    assert ready.status == 200 and ready.json["ready"] is True, ready.body
    assert ready.json["bundle"]["name"], ready.body
    assert "x-request-id" not in ready.headers, ready.headers


def test_a_probe_echoes_a_good_request_id(pdp: Pdp) -> None:
    reply = pdp.get("/readyz", headers={"X-Request-ID": "probe-1"})
    assert reply.status == 200 and reply.headers["x-request-id"] == "probe-1"


@pytest.mark.parametrize("name", sorted(JUNK))
def test_other_routes_still_refuse_a_junk_request_id(pdp: Pdp, name: str) -> None:
    junk = {"X-Request-ID": JUNK[name]}
    for reply in (
        pdp.post("/v1/check", CHECK, headers=junk),
        pdp.get("/v1/server-info", headers=junk),
        pdp.get("/.well-known/authzen-configuration", headers=junk),
    ):
        assert_error(reply, 400, "X-Request-ID")
        assert "x-request-id" not in reply.headers, reply.headers
