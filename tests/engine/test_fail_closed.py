"""The engine's fail-closed corners, written to kill the mutants `make mutation` found alive.

Each test names what a surviving mutant changed (docs/MUTATION.md): parent roles of a derived
role, a derived role that errors under a deny rule, an erroring allow rule followed by a good
one, one missing tenant, an unexpected exception, and the response envelope.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pdp.engine import Engine, compile_policy_set
from pdp.model.decision import BundleInfo, TraceStep
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

from .conftest import alice, decide, write_tree

POLICIES = {
    "defs.yaml": """
        apiVersion: pdp/v1
        kind: Definitions
        metadata: {id: defs}
        spec:
          derivedRoles:
            editor:
              parentRoles: [user]
              condition: resource.attr.editor == principal.id
            flaky:
              parentRoles: ["*"]
              condition: resource.attr.nope.x == 1
            member:
              parentRoles: [user]
    """,
    "things.yaml": """
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: things}
        spec:
          resource: thing
          imports: [defs]
          actions:
            read: {}
            write: {}
            delete: {}
            admin: {scopes: ["things:root", "things:admin"]}
            list: {}
          crossTenant:
            - id: support-window
              actions: [read]
              roles: [support]
              condition: now > timestamp("2020-01-01T00:00:00Z") && context.attr.ticket != ""
              reason: support_ticket
          rules:
            - id: members-list
              actions: [list, admin]
              effect: allow
              derivedRoles: [member]
            - id: after-2020
              actions: [list]
              effect: deny
              condition: now < timestamp("2020-01-01T00:00:00Z")
              reason: too_early
            - id: flaky-deny
              actions: [delete]
              effect: deny
              derivedRoles: [flaky]
              reason: flaky
            - id: users-delete
              actions: [delete]
              effect: allow
              roles: [user]
            - id: broken-allow
              actions: [write]
              effect: allow
              condition: resource.attr.nope.x == 1
            - id: editors-write
              actions: [write]
              effect: allow
              derivedRoles: [editor]
            - id: admins-or-editors-read
              actions: [read]
              effect: allow
              roles: [admin, support]
              derivedRoles: [editor]
    """,
}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(compile_policy_set(load_policy_dir(write_tree(tmp_path, POLICIES))))


def thing(**attr: object) -> dict[str, object]:
    return {"kind": "thing", "id": "t1", "tenant": "acme", "attr": {"editor": "alice", **attr}}


def test_a_derived_role_needs_its_parent_role(engine: Engine) -> None:
    # alice is the editor by attribute, but `editor` also needs the parent role `user`.
    guest = decide(engine, alice(roles=["guest"]), thing(), ["write"])["write"]
    assert (guest.effect, guest.rule, guest.reasons) == (
        "deny",
        "",
        ("no_matching_rule", "condition_error"),
    )
    user = decide(engine, alice(), thing(), ["write"])["write"]
    assert (user.effect, user.rule) == ("allow", "editors-write")


def test_an_erroring_allow_rule_does_not_stop_the_next_one(engine: Engine) -> None:
    d = decide(engine, alice(), thing(), ["write"], explain=True)["write"]
    assert (d.effect, d.policy, d.rule, d.reasons) == ("allow", "things", "editors-write", ())
    assert d.errors == ("rule `things/broken-allow`: no such key: `nope`",)
    assert d.trace == (
        TraceStep("tenant", "things", "", "passed", "tenant `acme`"),
        TraceStep("scope", "things", "", "passed", ""),
        TraceStep(
            "allow",
            "things",
            "broken-allow",
            "error",
            "rule `things/broken-allow`: no such key: `nope`",
        ),
        TraceStep("allow", "things", "editors-write", "matched", ""),
    )


def test_a_rule_with_roles_and_derived_roles_matches_on_either(engine: Engine) -> None:
    d = decide(engine, alice(), thing(), ["read"])["read"]
    assert (d.effect, d.rule) == ("allow", "admins-or-editors-read")
    admin = decide(engine, alice(id="ann", roles=["admin"]), thing(), ["read"])["read"]
    assert (admin.effect, admin.rule) == ("allow", "admins-or-editors-read")
    other = decide(engine, alice(id="bob"), thing(), ["read"])["read"]
    assert (other.effect, other.reasons) == ("deny", ("no_matching_rule",))


def test_a_derived_role_that_errors_under_a_deny_rule_denies(engine: Engine) -> None:
    d = decide(engine, alice(), thing(), ["delete"])["delete"]
    assert (d.effect, d.policy, d.rule, d.reasons) == (
        "deny",
        "things",
        "flaky-deny",
        ("flaky", "condition_error"),
    )
    assert d.errors == ("derived role `flaky`: no such key: `nope`",)
    # With the attribute present the derived role is decided, does not hold, and users delete.
    ok = decide(engine, alice(), thing(nope={"x": 2}), ["delete"])["delete"]
    assert (ok.effect, ok.rule, ok.errors) == ("allow", "users-delete", ())


@pytest.mark.parametrize(
    ("principal_tenant", "resource_tenant", "who"),
    [("acme", None, "resource"), (None, "acme", "principal"), (None, None, "principal")],
)
def test_one_missing_tenant_is_enough_to_deny(
    engine: Engine, principal_tenant: str | None, resource_tenant: str | None, who: str
) -> None:
    p = alice()
    r = thing()
    for obj, tenant in ((p, principal_tenant), (r, resource_tenant)):
        if tenant is None:
            del obj["tenant"]
    d = decide(engine, p, r, ["read"], explain=True)["read"]
    assert (d.effect, d.policy, d.reasons, d.message) == (
        "deny",
        "things",
        ("missing_tenant",),
        f"{who} has no tenant",
    )
    assert d.trace == (TraceStep("default", "things", "", "deny", f"{who} has no tenant"),)


def test_an_unexpected_exception_is_a_deny(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(engine, "_decide", boom)
    d = decide(engine, alice(), thing(), ["read", "write"])
    for action in ("read", "write"):
        assert (d[action].effect, d[action].policy, d[action].reasons, d[action].errors) == (
            "deny",
            "things",
            ("internal_error",),
            ("internal error: RuntimeError",),
        )


def test_the_response_envelope(engine: Engine) -> None:
    raw = {
        "request_id": "req-7",
        "principal": alice(),
        "resources": [
            {**thing(), "actions": ["write"]},  # no rule of `write` reads the clock
            {"kind": "spaceship", "id": "s1", "tenant": "acme", "actions": ["fly"]},
        ],
        "context": {"time": "2026-03-01T12:00:00Z"},
    }
    response = engine.check(parse_check_request(raw))
    assert response.request_id == "req-7"
    assert [(r.kind, r.id) for r in response.results] == [("thing", "t1"), ("spaceship", "s1")]
    assert response.bundle == BundleInfo(name="local", version="0.0.0", revision="")
    assert response.evaluated_at == "2026-03-01T12:00:00+00:00"
    assert response.time_dependent is False
    assert response.results[1].actions["fly"].reasons == ("unknown_resource_kind",)


def test_an_injected_clock_is_used(tmp_path: Path) -> None:
    at = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    engine = Engine(
        compile_policy_set(load_policy_dir(write_tree(tmp_path, POLICIES))), clock=lambda: at
    )
    raw = {"principal": alice(), "resources": [{**thing(), "actions": ["read"]}]}
    assert engine.check(parse_check_request(raw)).evaluated_at == "2026-05-04T03:02:01+00:00"


def test_the_default_clock_gives_the_current_time_in_utc(engine: Engine) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    raw = {"principal": alice(), "resources": [{**thing(), "actions": ["read"]}]}
    text = engine.check(parse_check_request(raw)).evaluated_at
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text), text
    assert datetime.fromisoformat(text) >= before


def test_decision_ids_are_distinct_with_one_process_prefix(engine: Engine) -> None:
    raw = {"principal": alice(), "resources": [{**thing(), "actions": ["read"]}]}
    ids = [engine.check(parse_check_request(raw)).decision_id for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len({i[:16] for i in ids}) == 1
    counters = [int(i[16:], 16) for i in ids]
    assert counters[1] - counters[0] in (1, 1 - 2**64)


def test_a_derived_role_without_a_condition_holds_for_its_parent_roles(engine: Engine) -> None:
    d = decide(engine, alice(), thing(), ["list"])["list"]
    assert (d.effect, d.rule) == ("allow", "members-list")
    guest = decide(engine, alice(roles=["guest"]), thing(), ["list"])["list"]
    assert (guest.effect, guest.reasons) == ("deny", ("no_matching_rule",))


def test_missing_scopes_deny_with_every_scope_named_explained_or_not(engine: Engine) -> None:
    message = "principal lacks scope `things:admin`, `things:root`"
    for _ in range(2):  # the second denial comes from the engine's cache of them
        d = decide(engine, alice(), thing(), ["admin"])["admin"]
        assert (d.effect, d.policy, d.rule, d.reasons, d.message) == (
            "deny",
            "things",
            "",
            ("missing_scope",),
            message,
        )
    explained = decide(engine, alice(), thing(), ["admin"], explain=True)["admin"]
    assert (explained.effect, explained.policy, explained.reasons, explained.message) == (
        "deny",
        "things",
        ("missing_scope",),
        message,
    )
    assert explained.trace == (
        TraceStep("tenant", "things", "", "passed", "tenant `acme`"),
        TraceStep("default", "things", "", "deny", message),
    )
    granted = decide(engine, alice(scopes=["things:admin", "things:root"]), thing(), ["admin"])
    assert (granted["admin"].effect, granted["admin"].rule) == ("allow", "members-list")


def test_the_default_clock_gives_conditions_a_timestamp(engine: Engine) -> None:
    """`now` from the engine's own clock is a real timestamp: the rule comparing it works."""
    raw = {"principal": alice(), "resources": [{**thing(), "actions": ["list"]}]}
    response = engine.check(parse_check_request(raw))
    d = response.results[0].actions["list"]
    assert (d.effect, d.rule, d.errors) == ("allow", "members-list", ())
    assert response.time_dependent is True


def test_a_cross_tenant_exception_whose_condition_errors_does_not_open_the_tenant(
    engine: Engine,
) -> None:
    support = alice(id="sam", tenant="vendor", roles=["support"])
    # No `context.attr`: the exception's condition errors, and an error never grants it.
    d = decide(engine, support, thing(), ["read"])["read"]
    assert (d.effect, d.reasons) == ("deny", ("tenant_mismatch",))
    assert d.message == "principal tenant `vendor` differs from resource tenant `acme`"
    raw = {
        "principal": support,
        "resources": [{**thing(), "actions": ["read"]}],
        "context": {"attr": {"ticket": "T-1"}},
    }
    response = engine.check(parse_check_request(raw))
    granted = response.results[0].actions["read"]
    assert (granted.effect, granted.rule, granted.reasons) == (
        "allow",
        "admins-or-editors-read",
        ("cross_tenant_exception", "support_ticket"),
    )
    # The exception read the clock: the answer must not be cached as time-independent.
    assert response.time_dependent is True


def test_an_erroring_allow_rule_is_reported_without_explain(engine: Engine) -> None:
    d = decide(engine, alice(), thing(), ["write"])["write"]
    assert (d.effect, d.rule, d.trace) == ("allow", "editors-write", ())
    assert d.errors == ("rule `things/broken-allow`: no such key: `nope`",)
