"""Run-time schema enforcement: a request whose attributes break a kind's schema is denied with
`schema_violation` (the default) or rejected with INVALID_ARGUMENT naming the path (`reject`),
in the engine, through a real gRPC server, in test suites and in a built bundle."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pdp.bundle import build_bundle, load_bundle
from pdp.bundle.archive import pack, unpack
from pdp.client import Client
from pdp.engine import Engine, EngineHolder, compile_policy_set, run_test_suites
from pdp.engine.schemas import SchemaViolation
from pdp.errors import BundleError
from pdp.model.decision import ALLOW, DENY
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request
from pdp.server import ServerConfig, build_server

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: conversations}
spec:
  resource: conversation
  schemas:
    principal: principal.json
    resource: conversation.json
    context: context.json
    enforcement: MODE
  actions:
    read: {}
    append: {}
  rules:
    - id: archived-is-read-only
      actions: [append]
      effect: deny
      condition: has(R.attr.archived) && R.attr.archived != false
      reason: conversation_archived
    - id: owner
      actions: [read, append]
      effect: allow
      condition: R.attr.owner == P.id
"""
NOTES = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {}
  rules:
    - id: anyone
      actions: [read]
      effect: allow
"""
SCHEMAS = {
    "schemas/principal.json": '{"type": "object", "properties": {"level": {"type": "integer"}}}',
    "schemas/conversation.json": """{
      "type": "object",
      "required": ["owner"],
      "properties": {"owner": {"type": "string"}, "archived": {"type": "boolean"}}
    }""",
    "schemas/context.json": '{"type": "object", "properties": {"mfa": {"type": "boolean"}}}',
}


def files(mode: str) -> dict[str, bytes]:
    out = {"conversation.yaml": POLICY.replace("MODE", mode), "notes.yaml": NOTES, **SCHEMAS}
    return {k: textwrap.dedent(v).lstrip().encode() for k, v in out.items()}


def engine(mode: str) -> Engine:
    return Engine(compile_policy_set(load_policy_files(files(mode))))


ALICE = {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": [], "attr": {"level": 2}}


def conv(attr: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "conversation", "id": "c1", "tenant": "acme", "attr": attr, "actions": ["read", "append"]}  # fmt: skip


def request(*resources: dict[str, Any], principal=ALICE, context=None) -> Any:
    body: dict[str, Any] = {"principal": principal, "resources": list(resources)}
    if context is not None:
        body["context"] = context
    return parse_check_request(body)


@pytest.mark.parametrize("bad", ["true", 0, None, 1.5, [True], {"x": True}])
def test_deny_mode_denies_every_action_on_a_violating_resource(bad: Any) -> None:
    note = {"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}
    resp = engine("deny").check(request(conv({"owner": "alice", "archived": bad}), note))
    for decision in resp.results[0].actions.values():
        assert decision.effect == DENY
        assert decision.reasons == ("schema_violation",)
        assert "`resources[0].attr.archived` must be boolean" in decision.message
        assert "schema `conversation.json`: `type: boolean`" in decision.message
    # The rest of the batch is decided as usual.
    assert resp.results[1].actions["read"].effect == ALLOW


def test_conforming_attributes_are_decided_by_the_rules() -> None:
    e = engine("deny")
    ok = e.check(request(conv({"owner": "alice", "archived": False}))).results[0].actions
    assert ok["read"].effect == ALLOW and ok["append"].effect == ALLOW
    archived = e.check(request(conv({"owner": "alice", "archived": True}))).results[0].actions
    assert archived["read"].effect == ALLOW
    assert archived["append"].effect == DENY
    assert archived["append"].reasons == ("conversation_archived",)


def test_missing_required_attribute_and_principal_and_context_paths() -> None:
    e = engine("deny")
    d = e.check(request(conv({}))).results[0].actions["read"]
    assert d.effect == DENY and d.reasons == ("schema_violation",)
    assert "`resources[0].attr` must contain" in d.message and "required" in d.message
    bad_principal = {**ALICE, "attr": {"level": "high"}}
    d = e.check(request(conv({"owner": "alice"}), principal=bad_principal)).results[0]
    assert d.actions["read"].effect == DENY
    assert "`principal.attr.level` must be integer" in d.actions["read"].message
    d = e.check(request(conv({"owner": "alice"}), context={"attr": {"mfa": "yes"}})).results[0]
    assert d.actions["append"].effect == DENY
    assert "`context.attr.mfa` must be boolean" in d.actions["append"].message


def test_reject_mode_raises_a_request_error_naming_the_path() -> None:
    note = {"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}
    with pytest.raises(SchemaViolation) as info:
        engine("reject").check(request(note, conv({"owner": "alice", "archived": "true"})))
    assert info.value.field == "resources[1].attr.archived"
    assert "must be boolean" in info.value.message and "type: boolean" in info.value.message


def test_reject_mode_is_invalid_argument_over_grpc() -> None:
    holder = EngineHolder(engine("reject"))
    server = build_server(holder, ServerConfig(listen=("127.0.0.1:0",)))
    server.start()
    try:
        with Client(f"127.0.0.1:{server.port}") as c:
            good = c.check(ALICE, [conv({"owner": "alice", "archived": False})])
            assert good.results[0].actions["read"].effect == ALLOW
            with pytest.raises(grpc.RpcError) as info:
                c.check(ALICE, [conv({"owner": "alice", "archived": 0})])
        err = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("resources[0].attr.archived: must be boolean")
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        detail = error_details_pb2.BadRequest()
        assert status is not None and status.details[0].Unpack(detail)
        assert detail.field_violations[0].field == "resources[0].attr.archived"
    finally:
        server.stop(0)


def test_a_rejected_test_case_fails_rather_than_crashing() -> None:
    suite = """
    apiVersion: pdp/v1
    kind: TestSuite
    metadata: {id: t}
    spec:
      principals:
        alice: {id: alice, tenant: acme, roles: [user], scopes: []}
      cases:
        - name: archived as a string
          principal: alice
          resource: {kind: conversation, id: c1, tenant: acme, attr: {owner: alice, archived: "true"}}
          expect: {append: deny}
    """
    fs = {**files("reject"), "conv_test.yaml": textwrap.dedent(suite).lstrip().encode()}
    source = load_policy_files(fs)
    report = run_test_suites(compile_policy_set(source), source.test_suites)
    assert report.failed == 1
    assert "resources[0].attr.archived" in report.results[0].failure


def test_schema_files_are_bundled_hashed_and_enforced(tmp_path: Path) -> None:
    root = tmp_path / "p"
    for name, content in files("deny").items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    built = build_bundle(root, version="1.0.0", env={"SOURCE_DATE_EPOCH": "0"})
    assert set(SCHEMAS) <= set(built.manifest.files)
    loaded = load_bundle(built.archive)
    d = loaded.engine.check(request(conv({"owner": "alice", "archived": "true"})))
    assert d.results[0].actions["read"].reasons == ("schema_violation",)
    # A schema file altered after the build no longer matches its manifest digest.
    raw = unpack(built.archive)
    changed = dict(raw.files)
    name = "schemas/conversation.json"
    changed[name] = changed[name].replace(b'"boolean"', b'"string"')
    assert changed[name] != raw.files[name]
    tampered = pack(raw.manifest, changed, None, 0)
    with pytest.raises(BundleError, match=r"schemas/conversation\.json"):
        load_bundle(tampered)
