"""The example platform in `policies/`: every suite passes, every rule is exercised, and every
reference request in `policies/requests/` parses and gets a decision for each action asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdp.engine import Engine, compile_policy_set, run_test_suites
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

POLICIES = Path(__file__).resolve().parents[2] / "policies"
REQUESTS = sorted((POLICIES / "requests").glob("*.json"))

# Engine outcomes the suites must demonstrate, besides the rules' own reasons.
ENGINE_REASONS = {
    "tenant_mismatch",
    "missing_tenant",
    "missing_scope",
    "actor_missing_scope",
    "no_matching_rule",
    "cross_tenant_exception",
    "condition_error",
}


@pytest.fixture(scope="module")
def source():
    return load_policy_dir(POLICIES)


@pytest.fixture(scope="module")
def policy_set(source):
    return compile_policy_set(source)


@pytest.fixture(scope="module")
def report(source, policy_set):
    return run_test_suites(policy_set, source.test_suites)


def test_every_case_passes(report):
    failures = [
        f"{r.file}:{r.line} {r.suite} / {r.case} [{r.action}]: {r.failure} (actual: {r.actual})"
        for r in report.results
        if not r.passed
    ]
    assert not failures, "\n".join(failures)
    assert report.passed >= 150


def test_full_rule_coverage(report):
    uncovered = [f"{r.policy}/{r.rule} ({r.stage}) {r.file}:{r.line}" for r in report.uncovered]
    assert not uncovered, "rules no test case matched:\n" + "\n".join(uncovered)
    assert report.coverage == 1.0


def test_every_kind_of_rule_is_present(policy_set):
    stages = {r.stage for r in policy_set.rules}
    assert {"guard", "deny", "allow", "cross_tenant"} <= stages


def test_the_mission_kinds_are_governed(policy_set):
    kinds = set(policy_set.kinds)
    assert {
        "model",
        "knowledge_base",
        "document",
        "conversation",
        "agent_tool",
        "api_key",
        "catalog_model",
    } <= kinds
    assert policy_set.kinds["catalog_model"].tenancy == "global"
    assert policy_set.kinds["document"].tenancy == "tenant"


def test_suites_show_the_engine_outcomes(source):
    expected = {
        reason
        for suite in source.test_suites
        for case in suite.cases
        for exp in case.expect.values()
        for reason in (exp.reasons or ())
    }
    missing = ENGINE_REASONS - expected
    assert not missing, f"no case expects {sorted(missing)}"


def test_there_are_reference_requests():
    assert len(REQUESTS) >= 6
    sizes = [
        sum(len(r["actions"]) for r in json.loads(p.read_text())["resources"]) for p in REQUESTS
    ]
    assert 60 in sizes  # the 20 resources x 3 actions batch


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_reference_request_decides(policy_set, path):
    raw = json.loads(path.read_text())
    request = parse_check_request(raw)
    response = Engine(policy_set).check(request)
    assert len(response.results) == len(raw["resources"])
    for asked, got in zip(raw["resources"], response.results, strict=True):
        assert (got.kind, got.id) == (asked["kind"], asked["id"])
        assert set(got.actions) == set(asked["actions"])
        for action, decision in got.actions.items():
            assert decision.effect in ("allow", "deny")
            # No reference request should trip a condition error or an unknown kind/action.
            assert not decision.errors, (path.name, got.id, action, decision.errors)
            assert "unknown_resource_kind" not in decision.reasons
            assert "unknown_action" not in decision.reasons
            assert "internal_error" not in decision.reasons


def _effects(policy_set, name: str) -> dict[tuple[str, str], str]:
    """(resource id, action) -> "effect" or "effect:last reason" for a reference request."""
    raw = json.loads((POLICIES / "requests" / name).read_text())
    response = Engine(policy_set).check(parse_check_request(raw))
    return {
        (r.id, a): f"{d.effect}:{d.reasons[-1]}" if d.reasons else d.effect
        for r in response.results
        for a, d in r.actions.items()
    }


def test_object_level_request(policy_set):
    got = _effects(policy_set, "object_level.json")
    assert got[("d-150", "read")].startswith("allow")
    assert got[("d-100", "read")] == "allow:explicit_share"
    assert got[("d-100", "write")] == "deny:no_matching_rule"
    assert got[("d-200", "read")] == "deny:no_matching_rule"
    assert got[("g-900", "read")] == "deny:tenant_mismatch"


def test_support_request(policy_set):
    got = _effects(policy_set, "support_cross_tenant.json")
    assert got[("c-9", "read")] == "allow:support_ticket"
    assert got[("c-9", "export")] == "deny:tenant_mismatch"
    assert got[("g-900", "read")] == "allow:support_ticket"
    assert got[("g-901", "read")] == "deny:classification_above_support_clearance"
    assert got[("c-1", "read")] == "deny:tenant_mismatch"


def test_geo_ip_request(policy_set):
    got = _effects(policy_set, "geo_ip.json")
    assert got[("m-large", "invoke")] == "allow"
    assert got[("m-large", "deploy")] == "deny:outside_corporate_network"
    assert got[("k-9", "revoke")] == "deny:outside_corporate_network"
    assert got[("k-9", "read")] == "allow:owner"
    assert got[("c-5", "export")] == "deny:export_blocked_country"
    assert got[("d-102", "read")] == "deny:secret_outside_corporate_network"
    assert got[("frontier-x", "read")] == "deny:region_restricted"


def test_agent_request(policy_set):
    got = _effects(policy_set, "agent_on_behalf.json")
    assert got[("d-100", "read")] == "allow:owner"
    assert got[("d-100", "write")] == "deny:actor_missing_scope"
    assert got[("d-100", "delete")] == "deny:agent_action_forbidden"
    assert got[("web_search", "call")] == "allow:agent_on_behalf_of_user"
    assert got[("send_email", "call")] == "deny:human_approval_required"
    assert got[("c-1", "read")] == "deny:actor_missing_scope"


def test_step_up_request(policy_set):
    got = _effects(policy_set, "step_up.json")
    assert got[("d-200", "read")] == "allow:tenant_admin"
    for resource, action in (
        ("d-200", "delete"),
        ("kb-sales", "delete"),
        ("k-2", "revoke"),
        ("m-large", "deploy"),
    ):
        assert got[(resource, action)] == "deny:step_up_required", (resource, action)
