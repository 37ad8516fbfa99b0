"""`inCIDRs` and `country` refuse an IPv6 address with a zone, as `ip()` does, and keep no
request-sized string in their parse cache.

`ip("fe80::1%eth0")` is an error, but `inCIDRs` and `country` parse a string through a memo of
4,096 entries with `ipaddress`, which reads `fe80::1%<zone>` with a zone of any length. So
`inCIDRs(R.attr.addr, ['fe80::/10'])` allowed `fe80::1%` followed by 60 KB of anything, and the
memo kept each such string and its zone: a real server's worker grew by 116 KB a call, ~480 MB
at 4,096 distinct calls, kept for good. Now a zone is the same error as in `ip()`, and a valid
address without one is at most 45 characters.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.cel import CelEnv, compile_cel
from pdp.client._convert import request_to_proto
from pdp.errors import CelEvalError
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: net}
spec:
  resource: device
  actions:
    read: {}
  rules:
    - id: link-local
      actions: [read]
      effect: allow
      condition: inCIDRs(R.attr.addr, ['fe80::/10'])
      reason: link-local
"""

CALLS = 800
PAD = "a" * 60_000
# Before: ~116 KB kept per call, ~90 MB over the calls; now what the process churns.
MAX_GROWTH_KB = 40 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("zones")
    (root / "net.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root, "--decision-cache", "0", "--workers", "1") as s:
        yield s


def device(addr: str) -> pb.CheckRequest:
    resource = {"kind": "device", "id": "d", "tenant": "t", "attr": {"addr": addr}}
    return request_to_proto({"id": "eve", "tenant": "t"}, [{**resource, "actions": ["read"]}])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_zone_is_refused_and_a_plain_address_decided(served: Served) -> None:
    decision = served.check(device("fe80::1%eth0")).results[0].actions["read"]
    assert decision.effect == pb.EFFECT_DENY
    assert any("zone value is not allowed" in e for e in decision.errors), decision
    decision = served.check(device("fe80::1")).results[0].actions["read"]
    assert decision.effect == pb.EFFECT_ALLOW and list(decision.reasons) == ["link-local"]


def test_long_zoned_strings_are_not_kept(served: Served) -> None:
    for i in range(20):  # warm up: the first calls allocate what every call reuses
        served.check(device(f"fe80::{i}"))
    before = rss_kb(served.proc.pid)
    for i in range(CALLS):
        decision = served.check(device(f"fe80::1%{i}{PAD}"), timeout=30).results[0]
        assert decision.actions["read"].effect == pb.EFFECT_DENY
    growth = rss_kb(served.proc.pid) - before
    assert growth < MAX_GROWTH_KB, f"the worker grew by {growth} KB over {CALLS} calls"


@pytest.mark.parametrize(
    "expr",
    [
        "inCIDRs('fe80::1%eth0', ['fe80::/10'])",
        "inCIDRs(addr, ['fe80::/10'])",
        "ip('fe80::1%eth0')",
    ],
)
def test_every_ip_reader_refuses_a_zone(expr: str) -> None:
    f = compile_cel(expr, CelEnv(names=["addr"]))
    with pytest.raises(CelEvalError, match="zone value is not allowed"):
        f({"addr": "fe80::1%25eth0"})


def test_country_of_a_zoned_address_is_unknown() -> None:
    geoip = {"ranges": [{"cidr": "fe80::/10", "country": "FR"}]}
    env = CelEnv(data={"geoip": geoip}, names=["addr"])
    f = compile_cel("country(addr)", env)
    assert f({"addr": "fe80::1"}) == "FR"
    assert f({"addr": "fe80::1%eth0"}) == ""
