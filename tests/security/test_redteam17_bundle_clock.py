"""A bundle's test suites decide the same whenever it loads: a case that reads the clock fixes it.

A bundle is activated only if its suites pass, and a refused bundle is not tried again until
its bytes change. A case without `now` was decided at the wall-clock time of each load, so a
suite over `now.getHours("Europe/Paris") < 18` passed on the worker (or replica) that polled
at 17:59 and failed on the one that polled at 18:00: one served the new bundle, the other kept
the old one, until the next bundle was published, each answering with its own policies.
(`pdp bundle build` passing at 10:00 said nothing of the load at 18:00 either.) Now a case
whose decision reads the clock while neither it nor its suite gives `now` fails, naming the
case, at `pdp test`, `pdp bundle build` and load alike; through a real `pdp serve --bundle
URL` such a bundle is refused (the previous one keeps serving) and the same policies with a
frozen `now` are activated. The rule below reads the clock but passes whatever the hour, so
the old behaviour (accepted) is what the test sees before the fix.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

# tests/bundle on the path for its bundle server (a real HTTP server on 127.0.0.1).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import serve_bundles

from pdp.bundle.archive import pack
from pdp.bundle.manifest import FileEntry, Manifest, sha256_hex
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .real_pdp import pdp_serve_bundle

# Caps on waits, never durations under test.
START_CAP_S = 60.0
SWAP_CAP_S = 60.0

POLICY = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: reports}
spec:
  resource: report
  actions:
    read: {}
  rules:
    - id: after-the-embargo
      actions: [read]
      effect: allow
      roles: [analyst]
      condition: now > timestamp("2020-01-01T00:00:00Z")
      reason: released
"""
SUITE = """\
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: reports-tests}
spec:
NOW
  principals:
    ann: {id: ann, tenant: acme, roles: [analyst]}
  resources:
    r1: {kind: report, id: r1, tenant: acme}
  cases:
    - name: released reports are read
      principal: ann
      resource: r1
      expect: {read: allow}
    - name: the tenant decides before the clock
      principal: {id: bob, tenant: other, roles: [analyst]}
      resource: r1
      expect: {read: deny}
"""


def files(frozen: bool) -> dict[str, bytes]:
    now = '  now: "2026-03-01T12:00:00Z"' if frozen else "  # no now: the wall clock"
    return {
        "reports.yaml": POLICY.encode(),
        "reports_test.yaml": SUITE.replace("NOW", now).encode(),
    }


def bundle(version: int, frozen: bool) -> bytes:
    """Packed directly (no build-time test run), as an older pdp built it."""
    content = files(frozen)
    manifest = Manifest(
        name="reports",
        version=f"{version}.0.0",
        revision=f"rev{version}",
        dirty=False,
        build_time="2026-01-01T00:00:00Z",
        builder="pdp test",
        files={p: FileEntry(sha256_hex(c), len(c)) for p, c in content.items()},
    )
    return pack(manifest.canonical_bytes(), content, None, 1767225600)


def info(stub: pb_grpc.DecisionServiceStub) -> pb.ServerInfoResponse:
    return stub.ServerInfo(pb.ServerInfoRequest(), timeout=10)


def wait_for(stub: pb_grpc.DecisionServiceStub, what: str, ok: object) -> pb.ServerInfoResponse:
    deadline = time.monotonic() + SWAP_CAP_S
    while True:
        got = info(stub)
        if ok(got):  # type: ignore[operator]
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}"
        time.sleep(0.05)


def test_a_bundle_whose_suite_reads_the_wall_clock_is_refused_by_a_serving_pdp() -> None:
    with serve_bundles(bundle(1, frozen=True)) as source, pdp_serve_bundle(source.url) as served:
        stub, log = served.stub, served.log
        wait_for(stub, "1.0.0", lambda i: i.active_bundle.version == "1.0.0")
        source.set(bundle(2, frozen=False))
        got = wait_for(stub, "the refusal of 2.0.0", lambda i: "fixes no time" in i.last_error)
        assert got.active_bundle.version == "1.0.0"
        assert "released reports are read [read]" in got.last_error
        # The case decided by the tenant, before any rule reads the clock, is no failure.
        assert "the tenant decides before the clock" not in got.last_error
        source.set(bundle(3, frozen=True))
        wait_for(stub, "3.0.0", lambda i: i.active_bundle.version == "3.0.0")
        assert not any("Traceback" in line for line in log)


@pytest.mark.parametrize("verb", ["test", "bundle build"])
def test_the_authors_tools_say_which_case_to_freeze(tmp_path: Path, verb: str) -> None:
    for frozen in (False, True):
        root = tmp_path / f"frozen-{frozen}"
        root.mkdir()
        for name, content in files(frozen).items():
            (root / name).write_bytes(content)
        argv = [sys.executable, "-m", "pdp.cli.main", *verb.split(), str(root)]
        if verb == "bundle build":
            argv += ["-o", str(tmp_path / f"out-{frozen}"), "--version", "1.0.0"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        assert "Traceback" not in output
        if frozen:
            assert done.returncode == 0, output
        else:
            assert done.returncode != 0, output
            assert "released reports are read" in output and "fixes no time" in output


MAPPING = """\
apiVersion: pdp/v1
kind: RouteMapping
metadata: {id: gw}
spec:
  unmapped: deny
  claims: {id: sub, tenant: tid, roles: roles}
  routes:
    - path: /v1/tenants/{tenant}/reports/{id}
      methods: {GET: read}
      resource: {kind: report, id: "{id}", tenant: "{tenant}"}
  tests:
    - name: an analyst reads a released report
      request: {method: GET, path: /v1/tenants/acme/reports/r1, claims: CLAIMS}
      expect: {effect: allow, status: 200}
    - name: the route names the report
      request: {method: GET, path: /v1/tenants/acme/reports/r1, claims: CLAIMS}
      expect: {kind: report, id: r1, action: read}
""".replace("CLAIMS", "{sub: ann, tid: acme, roles: [analyst]}")


def test_a_mapping_case_that_reads_the_wall_clock_fails(tmp_path: Path) -> None:
    """Mapping cases (run at load with the suites) cannot fix the time: a case expecting the
    decision of a route that reads the clock fails; one expecting the translation passes."""
    (tmp_path / "reports.yaml").write_text(POLICY)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    argv = [sys.executable, "-m", "pdp.cli.main", "test", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "an analyst reads a released report" in output and "cannot fix the time" in output
    assert "1 passed, 1 failed" in output
    assert "Traceback" not in output
