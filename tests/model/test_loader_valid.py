"""Valid policy directories load into the exact model values, with exact positions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pdp.errors import SourceLocation
from pdp.model.loader import load_policy_dir, load_policy_files
from pdp.model.policy import (
    ActionSpec,
    ConditionGroup,
    DerivedRole,
    Expr,
    Rule,
)
from pdp.model.testsuite import Expectation

VALID = Path(__file__).parent / "fixtures" / "valid"


def loc(file: str, line: int, col: int) -> SourceLocation:
    return SourceLocation(file, line, col)


def test_loads_every_kind() -> None:
    src = load_policy_dir(VALID)
    assert [p.id for p in src.resource_policies] == ["documents"]
    assert [p.id for p in src.guard_policies] == ["geo-fence"]
    assert [d.id for d in src.definitions] == ["common"]
    assert [s.id for s in src.test_suites] == ["documents-tests"]
    assert src.route_mapping_file == "mapping.yaml"
    assert src.route_mapping is not None and src.route_mapping["kind"] == "RouteMapping"
    # README.md is not a policy file, so it is neither loaded nor carried in the bundle.
    assert sorted(src.files) == [
        "common.yaml",
        "data/corp.json",
        "data/geoip.yaml",
        "docs/documents.yaml",
        "docs/documents_test.yaml",
        "guard.yaml",
        "mapping.yaml",
    ]
    assert src.files["guard.yaml"] == (VALID / "guard.yaml").read_bytes()


def test_data_files_keep_yaml_12_scalars() -> None:
    src = load_policy_dir(VALID)
    assert src.data == {
        "corp": {"networks": ["10.0.0.0/8"], "count": 1, "ratio": 0.5},
        # YAML 1.2 core schema: `NO` (Norway) stays a string.
        "geoip": {"ranges": [{"cidr": "10.0.0.0/8", "country": "NO"}]},
    }


def test_resource_policy_values() -> None:
    p = load_policy_dir(VALID).resource_policies[0]
    f = "docs/documents.yaml"
    assert p.resource == "document"
    assert p.tenancy == "tenant"
    assert p.imports == ("common",)
    assert p.file == f and p.location == loc(f, 1, 1)
    assert p.actions == {
        "read": ActionSpec("read", ("kb:read",), loc(f, 8, 5)),
        "delete": ActionSpec("delete", ("kb:write", "kb:delete"), loc(f, 9, 5)),
        "share": ActionSpec("share", (), loc(f, 10, 5)),
        "archive": ActionSpec("archive", (), loc(f, 11, 5)),
    }
    assert p.variables == {
        "is_shared": Expr("principal.id in resource.attr.shared_with", loc(f, 13, 16))
    }
    assert p.rules[0] == Rule(
        id="owner-full-access",
        actions=("*",),
        effect="allow",
        location=loc(f, 21, 7),
        derived_roles=("owner",),
        obligations={"mask_fields": ["email", "phone"]},
    )
    ct = p.cross_tenant[0]
    assert (ct.id, ct.actions, ct.roles, ct.reason) == (
        "support-read",
        ("read",),
        ("support",),
        "support_cross_tenant",
    )
    assert ct.condition == Expr('context.attr.ticket != ""', loc(f, 18, 18))


def test_block_scalar_condition_location() -> None:
    rule = load_policy_dir(VALID).resource_policies[0].rules[1]
    # `condition: |` is on line 31; the expression starts on line 32 at its indentation.
    assert rule.condition == Expr(
        "V.is_shared &&\n  context.attr.mfa == true\n", loc("docs/documents.yaml", 32, 9)
    )
    assert rule.roles == ("user",)


def test_quoted_scalars_and_groups() -> None:
    rule = load_policy_dir(VALID).resource_policies[0].rules[2]
    f = "docs/documents.yaml"
    assert rule.condition == ConditionGroup(
        "any",
        (
            # double quote at column 13: the expression starts one column later
            Expr("resource.attr.classification == 'secret'", loc(f, 39, 14)),
            ConditionGroup(
                "all",
                (Expr("resource.attr.locked", loc(f, 41, 18)), Expr("true", loc(f, 42, 17))),
                loc(f, 40, 13),
            ),
        ),
        loc(f, 38, 9),
    )
    assert rule.reason == "classified" and rule.effect == "deny"


def test_guard_and_definitions() -> None:
    src = load_policy_dir(VALID)
    g = src.guard_policies[0].rules[0]
    assert (g.resources, g.actions, g.roles, g.reason) == (
        ("*",),
        ("delete",),
        ("admin",),
        "outside_corporate_network",
    )
    assert g.condition == Expr("!inCIDRs(context.ip, C.corporate_cidrs)", loc("guard.yaml", 11, 19))
    d = src.definitions[0]
    assert d.description == "shared definitions"
    assert d.constants == {"corporate_cidrs": ["10.0.0.0/8", "192.168.0.0/16"], "max_size": 10}
    assert d.derived_roles == {
        "owner": DerivedRole(
            "owner",
            ("*",),
            loc("common.yaml", 13, 5),
            Expr("V.is_owner", loc("common.yaml", 15, 18)),
        )
    }


def test_suite_cases() -> None:
    suite = load_policy_dir(VALID).test_suites[0]
    jan = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert suite.now == jan
    first, many_a, many_b = suite.cases
    assert first.principal == {
        "id": "alice",
        "tenant": "acme",
        "roles": ["user"],
        "scopes": ["kb:read"],
        "attr": {},
    }
    assert first.resource == {
        "kind": "document",
        "id": "d1",
        "tenant": "acme",
        "attr": {"owner": "alice"},
    }
    assert first.context == {"ip": "10.1.2.3", "attr": {"mfa": True}}
    assert first.now == jan
    assert first.expect == {
        "read": Expectation("allow"),
        "delete": Expectation(
            "deny", rule="no-delete-classified", reasons=("classified",), obligations={"a": 1}
        ),
    }
    # `resources: [...]` expands into one case per resource, with the case's own `now`.
    assert [c.name for c in (many_a, many_b)] == [
        "inline and many [alice_doc]",
        "inline and many [other_doc]",
    ]
    assert [c.resource["id"] for c in (many_a, many_b)] == ["d1", "d2"]
    assert many_a.now == datetime(2026, 5, 31, 22, tzinfo=UTC)
    assert many_a.principal == {"id": "bob", "tenant": "acme"}
    assert many_a.context == {}


def test_dir_and_files_agree_and_are_deterministic() -> None:
    files = {
        p.relative_to(VALID).as_posix(): p.read_bytes() for p in VALID.rglob("*") if p.is_file()
    }
    reversed_files = dict(reversed(list(files.items())))
    assert load_policy_files(reversed_files) == load_policy_dir(VALID)


def test_empty_directory(tmp_path: Path) -> None:
    src = load_policy_dir(tmp_path)
    assert src.resource_policies == () and src.files == {}


def test_hidden_entries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "bad.yaml").write_text("{{{")
    assert load_policy_dir(tmp_path).files == {}
