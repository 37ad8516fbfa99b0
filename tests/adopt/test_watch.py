"""`pdp serve --policies DIR --watch`: served decisions follow good edits over real gRPC; a
broken edit (bad YAML, or tests that fail) is refused with its reason and the last good set
keeps serving."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pdp.bundle.reloader import Outcome
from pdp.bundle.watch import DirectoryWatcher
from pdp.client import Client
from pdp.engine import EngineHolder
from pdp.model.decision import BundleInfo
from pdp.model.request import parse_check_request

from ._support import Served, free_port, wait_serving, wait_until

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: ["notes:read"]}
  rules:
    - id: owner-read
      actions: [read]
      effect: allow
      condition: resource.attr.owner == principal.id
"""
SUITE = """
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: notes-tests}
spec:
  principals:
    ann: {id: ann, tenant: t1, roles: [user], scopes: ["notes:read"]}
  resources:
    mine: {kind: note, id: n1, tenant: t1, attr: {owner: ann}}
  cases:
    - name: owner reads
      principal: ann
      resource: mine
      expect: {read: allow}
"""
ANYONE = POLICY.replace("resource.attr.owner == principal.id", "true")
BROKEN_YAML = POLICY + "  oops: [\n"
FAILS_ITS_TESTS = POLICY.replace("effect: allow", "effect: deny")
# Passes its tests (the owner still reads) but lets every holder of the scope read: the
# unconditional rule placed first makes the owner rule dead, which the validator calls PDP109.
SHADOWED = POLICY.replace(
    "  rules:\n",
    "  rules:\n    - id: anyone-read\n      actions: [read]\n      effect: allow\n",
)

BOB = {"id": "bob", "tenant": "t1", "roles": ["user"], "scopes": ["notes:read"]}
ANNS_NOTE = {"kind": "note", "id": "n1", "tenant": "t1", "attr": {"owner": "ann"}}


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text).lstrip())


def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    write(d, "notes.yaml", POLICY)
    write(d, "notes_test.yaml", SUITE)
    return d


def test_served_decisions_follow_edits_and_broken_edits_are_refused(tmp_path: Path) -> None:
    d = policy_dir(tmp_path)
    port = free_port()
    args = ["--policies", str(d), "--watch", "--listen", f"127.0.0.1:{port}", "--workers", "1"]
    with Served(args) as served, Client(f"127.0.0.1:{port}", timeout=10) as client:
        wait_serving(port, served)

        def bob_reads() -> str:
            return (
                client.check(BOB, [{**ANNS_NOTE, "actions": ["read"]}])
                .results[0]
                .actions["read"]
                .effect
            )

        assert bob_reads() == "deny"

        write(d, "notes.yaml", ANYONE)  # a good edit: anyone with the scope reads
        wait_until(lambda: bob_reads() == "allow", "the edit to be served")

        write(d, "notes.yaml", BROKEN_YAML)
        refused = served.wait_line(lambda line: "refused policies" in line)
        assert "still serving the last good set" in refused
        served.wait_line(lambda line: "notes.yaml:" in line)  # where the error is
        assert bob_reads() == "allow"

        write(d, "notes.yaml", FAILS_ITS_TESTS)
        refused = served.wait_line(lambda line: "refused policies" in line)
        assert "1 test case(s) failed" in refused
        served.wait_line(lambda line: "FAIL" in line and "owner reads" in line)
        assert bob_reads() == "allow"

        write(d, "notes.yaml", POLICY)  # fixed: back to owners only
        wait_until(lambda: bob_reads() == "deny", "the fix to be served")
        response = client.check(BOB, [{**ANNS_NOTE, "actions": ["read"]}])
        assert response.bundle.name == "policies"
    assert "Traceback" not in served.output()


def test_an_edit_that_passes_its_tests_but_not_the_validator_is_refused(tmp_path: Path) -> None:
    d = policy_dir(tmp_path)
    port = free_port()
    args = ["--policies", str(d), "--watch", "--listen", f"127.0.0.1:{port}", "--workers", "1"]
    with Served(args) as served, Client(f"127.0.0.1:{port}", timeout=10) as client:
        wait_serving(port, served)

        def bob_reads() -> str:
            reply = client.check(BOB, [{**ANNS_NOTE, "actions": ["read"]}])
            return reply.results[0].actions["read"].effect

        assert bob_reads() == "deny"
        write(d, "notes.yaml", SHADOWED)
        refused = served.wait_line(lambda line: "refused policies" in line)
        assert "1 validator error" in refused and "still serving the last good set" in refused
        served.wait_line(lambda line: "notes.yaml:12:7: error PDP109" in line)
        assert bob_reads() == "deny"  # the edit would have let bob read ann's note

        write(d, "notes.yaml", ANYONE)  # only a warning (PDP203): served, and the warning logged
        wait_until(lambda: bob_reads() == "allow", "the edit with a warning to be served")
        served.wait_line(lambda line: "warning PDP203" in line)
    assert "Traceback" not in served.output()


def watching(d: Path) -> tuple[EngineHolder, DirectoryWatcher, list[str]]:
    """An empty holder, a watcher of `d` feeding it, and the reports the watcher makes."""
    holder = EngineHolder()
    reports: list[str] = []
    watcher = DirectoryWatcher(
        d, holder, bundle_info=lambda: BundleInfo("policies", "0.0.0", ""), report=reports.append
    )
    return holder, watcher, reports


def test_validator_errors_and_warnings_in_the_watcher(tmp_path: Path) -> None:
    d = policy_dir(tmp_path)
    write(d, "notes.yaml", SHADOWED)
    holder, watcher, reports = watching(d)
    assert watcher.poll_once(settle=False) is Outcome.REFUSED
    assert holder.current is None
    assert "error PDP109" in reports[-1] and "never reached" in reports[-1]
    assert "validator error" in holder.status.last_error

    write(d, "notes.yaml", ANYONE)
    assert watcher.poll_once() is Outcome.UNCHANGED
    assert watcher.poll_once() is Outcome.ACTIVATED
    assert watcher.last_error == ""


def test_a_bad_first_set_serves_nothing_until_fixed(tmp_path: Path) -> None:
    d = policy_dir(tmp_path)
    write(d, "notes.yaml", BROKEN_YAML)
    holder, watcher, reports = watching(d)
    assert watcher.poll_once(settle=False) is Outcome.REFUSED
    assert holder.current is None
    assert "nothing yet" in reports[-1] and "notes.yaml:" in reports[-1]
    assert holder.status.last_error.startswith("refused policies")

    write(d, "notes.yaml", POLICY)
    # Settling: the first poll after an edit only notes it; the next one judges it.
    assert watcher.poll_once() is Outcome.UNCHANGED
    assert watcher.poll_once() is Outcome.ACTIVATED
    assert watcher.poll_once() is Outcome.UNCHANGED
    request = parse_check_request(
        {
            "principal": {"id": "ann", "tenant": "t1", "scopes": ["notes:read"]},
            "resources": [{**ANNS_NOTE, "actions": ["read"]}],
        }
    )
    assert holder.require().check(request).results[0].actions["read"].effect == "allow"


def test_watch_without_policies_is_an_error(tmp_path: Path) -> None:
    from pdp.cli.main import main

    assert main(["serve", "--bundle", str(tmp_path), "--watch", "--listen", "127.0.0.1:0"]) == 2
