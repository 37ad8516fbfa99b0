"""Decision semantics, one outcome per test, through load → compile → check."""

from __future__ import annotations

from pdp.engine import Engine
from pdp.model.decision import TraceStep
from pdp.model.request import parse_check_request

from .conftest import alice, decide, doc


def test_owner_is_allowed_by_derived_role(engine: Engine) -> None:
    d = decide(engine, alice(), doc(), ["read"])["read"]
    assert (d.effect, d.policy, d.rule) == ("allow", "documents", "owner-all")
    assert (d.reasons, d.errors, d.trace) == ((), (), ())  # no trace unless asked


def test_other_user_cannot_read_unshared_object(engine: Engine) -> None:
    d = decide(engine, alice(id="bob"), doc(), ["read"])["read"]
    assert (d.effect, d.policy, d.rule, d.reasons) == (
        "deny",
        "documents",
        "",
        ("no_matching_rule",),
    )


def test_explicit_share_allows_with_obligations(engine: Engine) -> None:
    d = decide(
        engine, alice(id="bob"), doc(attr={"owner": "alice", "shared_with": ["bob"]}), ["read"]
    )["read"]
    assert (d.effect, d.rule) == ("allow", "shared-read")
    assert dict(d.obligations) == {"mask_fields": ["email"]}


def test_tenant_mismatch_denied_before_rules(engine: Engine) -> None:
    d = decide(engine, alice(tenant="globex"), doc(), ["read"])["read"]
    assert d.effect == "deny"
    assert d.reasons == ("tenant_mismatch",)
    assert "globex" in d.message and "acme" in d.message


def test_missing_tenant_is_an_error_not_a_match(engine: Engine) -> None:
    p = alice()
    del p["tenant"]
    r = doc()
    del r["tenant"]
    d = decide(engine, p, r, ["read"])["read"]
    assert (d.effect, d.reasons) == ("deny", ("missing_tenant",))


def test_cross_tenant_exception_is_audited(engine: Engine) -> None:
    support = alice(id="sam", tenant="vendor", roles=["support"])
    with_ticket = decide(engine, support, doc(), ["read"], {"attr": {"ticket": "T-1"}})["read"]
    assert (with_ticket.effect, with_ticket.rule, with_ticket.reasons) == (
        "allow",
        "support-read",
        ("cross_tenant_exception", "support_ticket"),
    )
    assert dict(with_ticket.obligations) == {"audit": True}
    without = decide(engine, support, doc(), ["read"], {"attr": {"ticket": ""}})["read"]
    assert (without.effect, without.reasons) == ("deny", ("tenant_mismatch",))
    # The exception covers `read` only.
    other = decide(engine, support, doc(), ["write"], {"attr": {"ticket": "T-1"}})["write"]
    assert (other.effect, other.reasons) == ("deny", ("tenant_mismatch",))


def test_global_kind_skips_tenant_isolation(engine: Engine) -> None:
    p = alice()
    del p["tenant"]
    d = decide(engine, p, {"kind": "catalog_model", "id": "gpt"}, ["list"])["list"]
    assert (d.effect, d.rule) == ("allow", "anyone-lists")


def test_missing_scope_names_the_scope(engine: Engine) -> None:
    d = decide(engine, alice(scopes=["docs:read", "docs:write"]), doc(), ["delete"])["delete"]
    assert (d.effect, d.reasons) == ("deny", ("missing_scope",))
    assert "`docs:delete`" in d.message


def test_actor_needs_its_own_scope(engine: Engine) -> None:
    agent = {"id": "agent-7", "type": "ai_agent", "scopes": ["docs:read"]}
    ok = decide(engine, alice(actor=agent), doc(), ["read"])["read"]
    assert ok.effect == "allow"
    denied = decide(engine, alice(actor=agent), doc(), ["write"])["write"]
    assert (denied.effect, denied.policy, denied.reasons) == (
        "deny",
        "documents",
        ("actor_missing_scope",),
    )
    assert denied.message == "actor lacks scope `docs:write`"
    explained = decide(engine, alice(actor=agent), doc(), ["write"], explain=True)["write"]
    assert explained.trace[-1] == TraceStep(
        "default", "documents", "", "deny", "actor lacks scope `docs:write`"
    )


def test_deny_overrides_allow(engine: Engine) -> None:
    d = decide(engine, alice(), doc(attr={"owner": "alice", "legal_hold": True}), ["delete"])[
        "delete"
    ]
    assert (d.effect, d.rule, d.reasons) == ("deny", "no-delete-legal-hold", ("legal_hold",))


def test_guard_denies_across_kinds_with_country_from_geo_data(engine: Engine) -> None:
    d = decide(engine, alice(), doc(), ["read"], {"ip": "175.45.176.9"})["read"]
    assert (d.effect, d.policy, d.rule, d.reasons) == (
        "deny",
        "geo",
        "blocked-country",
        ("blocked_country",),
    )
    ok = decide(engine, alice(), doc(), ["read"], {"ip": "81.2.69.10"})["read"]
    assert ok.effect == "allow"
    # An explicit country in the request wins over the table.
    explicit = decide(engine, alice(), doc(), ["read"], {"ip": "81.2.69.10", "country": "kp"})[
        "read"
    ]
    assert explicit.effect == "deny"


def test_error_in_deny_rule_denies(engine: Engine) -> None:
    d = decide(engine, alice(), doc(), ["write"])["write"]
    assert (d.effect, d.rule, d.reasons) == ("deny", "broken-deny", ("broken", "condition_error"))
    assert d.errors == ("rule `documents/broken-deny`: no such key: `missing_key`",)


def test_error_in_allow_rule_never_allows(engine: Engine) -> None:
    d = decide(engine, alice(id="bob"), doc(), ["share"])["share"]
    assert (d.effect, d.rule, d.reasons) == ("deny", "", ("no_matching_rule", "condition_error"))
    assert d.errors == ("rule `documents/broken-allow`: no such key: `nope`",)


def test_unknown_kind_and_action(engine: Engine) -> None:
    d = decide(engine, alice(), doc(kind="spaceship"), ["fly"])["fly"]
    assert (d.effect, d.policy, d.rule, d.reasons) == ("deny", "", "", ("unknown_resource_kind",))
    assert d.message == "no policy governs resource kind `spaceship`"
    assert (d.obligations, d.errors) == ({}, ())
    d = decide(engine, alice(), doc(), ["fly"])["fly"]
    assert (d.effect, d.policy, d.rule, d.reasons) == ("deny", "documents", "", ("unknown_action",))
    assert d.message == "resource kind `document` has no action `fly`"
    # A known action beside an unknown one is still decided on its own.
    both = decide(engine, alice(), doc(), ["fly", "read"])
    assert (both["fly"].effect, both["read"].effect) == ("deny", "allow")


def test_batch_many_resources_and_actions(engine: Engine) -> None:
    raw = {
        "principal": alice(id="bob"),
        "resources": [
            {
                **doc(id=f"d{i}", attr={"owner": "alice", "shared_with": ["bob"] if i % 2 else []}),
                "actions": ["read", "write"],
            }
            for i in range(10)
        ],
    }
    response = engine.check(parse_check_request(raw))
    assert [r.id for r in response.results] == [f"d{i}" for i in range(10)]
    for i, r in enumerate(response.results):
        assert r.actions["read"].effect == ("allow" if i % 2 else "deny")
        assert r.actions["write"].effect == "deny"
    assert len(response.decision_id) == 32


def test_explain_returns_trace(engine: Engine) -> None:
    d = decide(
        engine,
        alice(id="bob"),
        doc(attr={"owner": "alice", "shared_with": ["bob"]}),
        ["read"],
        explain=True,
    )["read"]
    assert (d.effect, d.rule, dict(d.obligations)) == (
        "allow",
        "shared-read",
        {"mask_fields": ["email"]},
    )
    assert d.trace == (
        TraceStep("tenant", "documents", "", "passed", "tenant `acme`"),
        TraceStep("scope", "documents", "", "passed", "docs:read"),
        TraceStep(
            "guard",
            "geo",
            "blocked-country",
            "not_matched",
            "context.country in C.blocked_countries",
        ),
        TraceStep("allow", "documents", "owner-all", "skipped", "roles"),
        TraceStep(
            "allow",
            "documents",
            "shared-read",
            "matched",
            "principal.id in resource.attr.shared_with",
        ),
    )
    p = alice()
    del p["tenant"]
    listed = decide(engine, p, {"kind": "catalog_model", "id": "gpt"}, ["list"], explain=True)
    assert listed["list"].trace == (
        TraceStep("scope", "catalog", "", "passed", ""),
        TraceStep(
            "guard",
            "geo",
            "blocked-country",
            "not_matched",
            "context.country in C.blocked_countries",
        ),
        TraceStep("allow", "catalog", "anyone-lists", "matched", ""),
    )


def test_unrelated_policies_are_not_consulted(engine: Engine) -> None:
    compiled = engine.policy_set.kinds["document"].actions["read"]
    rule_ids = {r.id for r in (*compiled.guards, *compiled.denies, *compiled.allows)}
    assert rule_ids == {"blocked-country", "owner-all", "shared-read", "support-read"}
    assert "anyone-lists" not in rule_ids


PER_ACTION = {
    "defs.yaml": """
        apiVersion: pdp/v1
        kind: Definitions
        metadata: {id: defs}
        spec:
          derivedRoles:
            reader:
              parentRoles: ["*"]
              condition: action == "read"
    """,
    "notes.yaml": """
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: notes}
        spec:
          resource: note
          imports: [defs]
          actions: {read: {}, write: {}, tag: {}}
          rules:
            - id: readers
              actions: ["*"]
              effect: allow
              derivedRoles: [reader]
            - id: not-a-bool
              actions: [tag]
              effect: allow
              condition: resource.attr.label
    """,
}


def _notes_engine(tmp_path) -> Engine:
    from pdp.engine import compile_policy_set
    from pdp.model.loader import load_policy_dir

    from .conftest import write_tree

    return Engine(compile_policy_set(load_policy_dir(write_tree(tmp_path, PER_ACTION))))


def test_derived_role_reading_action_is_decided_per_action(tmp_path) -> None:
    engine = _notes_engine(tmp_path)
    note = {"kind": "note", "id": "n", "tenant": "acme", "attr": {}}
    for order in (["read", "write"], ["write", "read"]):
        got = decide(engine, alice(), note, order)
        assert (got["read"].effect, got["write"].effect) == ("allow", "deny"), order


def test_non_bool_condition_is_an_error_not_an_allow(tmp_path) -> None:
    engine = _notes_engine(tmp_path)
    note = {"kind": "note", "id": "n", "tenant": "acme", "attr": {"label": "yes"}}
    d = decide(engine, alice(), note, ["tag"])["tag"]
    assert (d.effect, d.reasons) == ("deny", ("no_matching_rule", "condition_error"))
    assert d.errors == (
        "rule `notes/not-a-bool`: condition yields a value of type `string`, want bool",
    )


def test_time_dependence_is_reported_only_when_the_clock_could_matter() -> None:
    """`time_dependent` gates caching: true once a clock-reading rule was evaluated."""
    from pathlib import Path

    from pdp.engine import compile_policy_set
    from pdp.model.loader import load_policy_dir

    root = Path(__file__).resolve().parents[2] / "policies"
    engine = Engine(compile_policy_set(load_policy_dir(root)))
    principal = alice(scopes=["docs:read"])  # no docs:delete
    document = doc(attr={"owner": "alice", "classification": "internal"})
    raw = {"principal": principal, "resources": [{**document, "actions": ["delete"]}]}
    # Denied by the missing scope before the step-up guard (which reads `now`) runs.
    assert engine.check(parse_check_request(raw)).time_dependent is False
    principal["scopes"].append("docs:delete")
    assert engine.check(parse_check_request(raw)).time_dependent is True
