"""Every kind of mistake is reported with file:line:column, and all of them at once."""

from __future__ import annotations

import textwrap

import pytest

from pdp.errors import PolicyErrors
from pdp.model import _yaml
from pdp.model.loader import load_policy_files

DEFS = """\
apiVersion: pdp/v1
kind: Definitions
metadata: {id: common}
spec:
  derivedRoles:
    owner: {parentRoles: ["*"], condition: V.is_owner}
"""


def policy(rules: str = "", extra: str = "", head: str = "") -> str:
    """A valid resource policy for kind `doc`, with `rules` (dedented) appended."""
    text = (
        "apiVersion: pdp/v1\n"
        "kind: ResourcePolicy\n"
        "metadata: {id: docs}\n"
        "spec:\n"
        "  resource: doc\n"
        "  imports: [common]\n"
        "  actions: {read: {}, write: {scopes: [w]}}\n"
    )
    text = head + text if head else text
    text += textwrap.indent(textwrap.dedent(extra), "  ")
    text += "  rules:\n" + textwrap.indent(textwrap.dedent(rules), "    ") if rules else ""
    return text


def errors(files: dict[str, str | bytes], *, with_defs: bool = True) -> list[str]:
    raw = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    if with_defs:
        raw.setdefault("common.yaml", DEFS.encode())
    with pytest.raises(PolicyErrors) as info:
        load_policy_files(raw)
    return [e.render() for e in info.value.errors]


def test_policy_helper_is_valid() -> None:
    load_policy_files(
        {
            "common.yaml": DEFS.encode(),
            "p.yaml": policy("- {id: r, actions: [read], effect: allow}\n").encode(),
        }
    )


# -- YAML level --------------------------------------------------------------------------------


def test_malformed_yaml_reports_parser_position() -> None:
    assert errors({"p.yaml": "a: [1, 2\nb: c\n"}) == [
        "p.yaml:2:2: malformed yaml: while parsing a flow sequence expected `,` or `]`, but got `:`"
    ]


def test_tab_indentation() -> None:
    [e] = errors({"p.yaml": "a:\n\tb: 1\n"})
    assert e.startswith("p.yaml:2:1: malformed yaml:") and "`\\t`" in e


def test_aliases_are_rejected() -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\n"
    assert errors({"p.yaml": bomb}) == [
        "p.yaml:2:8: malformed yaml: yaml aliases (`*name`) are not supported"
    ]


def test_duplicate_keys() -> None:
    text = policy("- {id: r, actions: [read], effect: allow, effect: deny}\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:47: duplicate key `effect` (first defined at line 9)"
    ]


def test_non_string_keys() -> None:
    text = policy(extra="variables: {1: x}\n")
    assert errors({"p.yaml": text}) == ["p.yaml:8:15: mapping keys must be strings, got a number"]


def test_file_too_large() -> None:
    big = b"# " + b"x" * _yaml.MAX_FILE_BYTES
    assert errors({"p.yaml": big}) == [
        f"p.yaml:1:1: file is larger than {_yaml.MAX_FILE_BYTES} bytes"
    ]


def test_nesting_too_deep() -> None:
    deep = "a: " + "[" * 100 + "]" * 100 + "\n"
    [e] = errors({"p.yaml": deep})
    assert e.startswith("p.yaml:1:") and e.endswith(f"nesting deeper than {_yaml.MAX_DEPTH} levels")


def test_not_utf8_and_control_characters() -> None:
    assert errors({"a.yaml": b"a: \xff\n", "b.yaml": b"a: \x01\n"}) == [
        "a.yaml:1:1: file is not valid utf-8 (byte offset 3)",
        "b.yaml:1:1: malformed yaml: unacceptable character #x0001: special characters are not allowed",
    ]


def test_empty_file_and_multiple_documents() -> None:
    assert errors({"a.yaml": "", "b.yaml": "a: 1\n---\nb: 2\n"}) == [
        "a.yaml:1:1: file is empty",
        "b.yaml:2:1: malformed yaml: expected a single document in the stream but found another document",
    ]


def test_unsupported_tags() -> None:
    text = policy(
        "- {id: r, actions: [read], effect: allow, obligations: {x: !!python/name:os.system a}}\n"
    )
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:64: unsupported yaml tag `tag:yaml.org,2002:python/name:os.system`"
    ]


def test_non_finite_numbers() -> None:
    text = policy("- {id: r, actions: [read], effect: allow, obligations: {x: .inf}}\n")
    assert errors({"p.yaml": text}) == ["p.yaml:9:64: numbers must be finite (no `.inf` or `.nan`)"]


# -- document level ----------------------------------------------------------------------------


def test_missing_api_version_and_kind() -> None:
    assert errors({"p.yaml": "metadata: {id: x}\nspec: {}\n"}) == [
        "p.yaml:1:1: missing required field `apiVersion`",
        "p.yaml:1:1: missing required field `kind`",
    ]


def test_unknown_api_version_and_kind() -> None:
    assert errors({"p.yaml": "apiVersion: pdp/v2\nkind: Resourcepolicy\n"}) == [
        "p.yaml:1:13: unknown apiVersion `pdp/v2`, expected `pdp/v1`",
        "p.yaml:2:7: unknown kind `Resourcepolicy` (did you mean `ResourcePolicy`?), expected one of "
        "`ResourcePolicy`, `GuardPolicy`, `LimitPolicy`, `Definitions`, `TestSuite`, `RouteMapping`",
    ]


def test_unknown_key_with_suggestion() -> None:
    text = policy("- id: r\n  actons: [read]\n  actions: [read]\n  effect: allow\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:10:7: unknown key `actons` in a rule (did you mean `actions`?)"
    ]


def test_wrong_type() -> None:
    text = policy("- id: r\n  actions: {read: 1}\n  effect: allow\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:10:16: `actions` must be a list of strings, got a mapping"
    ]


def test_lone_string_is_not_a_list() -> None:
    text = policy("- {id: r, actions: read, effect: allow}\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:24: `actions` must be a list of strings, got a string"
    ]


def test_missing_required_fields() -> None:
    text = policy("- {actions: [read]}\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:7: missing required field `id`",
        "p.yaml:9:7: missing required field `effect`",
    ]
    assert errors(
        {"q.yaml": "apiVersion: pdp/v1\nkind: ResourcePolicy\nmetadata: {}\nspec: {}\n"}
    ) == [
        "q.yaml:3:11: missing required field `id`",
        "q.yaml:4:7: missing required field `resource`",
        "q.yaml:4:7: missing required field `actions`",
    ]


def test_non_string_id() -> None:
    text = policy("- {id: 7, actions: [read], effect: allow}\n").replace("id: docs", "id: 123")
    assert errors({"p.yaml": text}) == [
        "p.yaml:3:16: `id` must be a string, got a number",
        "p.yaml:9:12: `id` must be a string, got a number",
    ]


def test_duplicate_rule_id() -> None:
    text = policy(
        "- {id: r, actions: [read], effect: allow}\n- {id: r, actions: [write], effect: deny}\n"
    )
    assert errors({"p.yaml": text}) == [
        "p.yaml:10:12: duplicate rule id `r` (first defined at line 9)"
    ]


def test_duplicate_policy_id_and_resource_kind() -> None:
    a = policy("- {id: r, actions: [read], effect: allow}\n")
    b = a.replace("resource: doc", "resource: other")
    c = a.replace("id: docs", "id: docs2")
    assert errors({"a.yaml": a, "b.yaml": b, "c.yaml": c}) == [
        "b.yaml:3:16: duplicate ResourcePolicy id `docs` (first defined at a.yaml:3:16)",
        "c.yaml:5:13: resource kind `doc` already has a policy (at a.yaml:5:13)",
    ]


def test_same_id_in_different_kinds_is_fine() -> None:
    guard = "apiVersion: pdp/v1\nkind: GuardPolicy\nmetadata: {id: common}\nspec:\n  rules: []\n"
    load_policy_files({"common.yaml": DEFS.encode(), "g.yaml": guard.encode()})


def test_undeclared_action() -> None:
    text = policy("- {id: r, actions: [raed, '*'], effect: allow}\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:25: action `raed` is not declared in the policy's `actions` (did you mean `read`?)"
    ]


def test_unknown_derived_role_and_import() -> None:
    text = policy("- {id: r, actions: [read], effect: allow, derivedRoles: [owner, onwer]}\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:69: derived role `onwer` is not defined in any imported Definitions (did you mean `owner`?)"
    ]
    text = text.replace("imports: [common]", "imports: [comon]")
    assert errors({"p.yaml": text}) == [
        "p.yaml:6:13: imports unknown Definitions `comon` (did you mean `common`?)"
    ]


def test_derived_role_from_a_definitions_not_imported() -> None:
    text = policy("- {id: r, actions: [read], effect: allow, derivedRoles: [owner]}\n")
    text = text.replace("  imports: [common]\n", "")
    assert errors({"p.yaml": text}) == [
        "p.yaml:8:62: derived role `owner` is not defined in any imported Definitions"
    ]


def test_bad_effect_and_tenancy() -> None:
    text = policy("- {id: r, actions: [read], effect: permit}\n", extra="tenancy: nobody\n")
    assert errors({"p.yaml": text}) == [
        "p.yaml:8:12: `tenancy` must be `tenant` or `global`, got `nobody`",
        "p.yaml:10:40: `effect` must be `allow` or `deny`, got `permit`",
    ]


GUARD = """\
apiVersion: pdp/v1
kind: GuardPolicy
metadata: {id: g}
spec:
  rules:
"""


def test_guard_cannot_allow_and_needs_a_reason() -> None:
    text = GUARD + "    - {id: r, resources: ['*'], actions: ['*'], effect: allow}\n"
    assert errors({"g.yaml": text}) == [
        "g.yaml:6:7: missing required field `reason`",
        "g.yaml:6:57: a guard rule can never allow: `effect` must be `deny` or omitted",
    ]


def test_bad_conditions() -> None:
    text = policy(
        "- {id: a, actions: [read], effect: allow, condition: {all: [x], any: [y]}}\n"
        "- {id: b, actions: [read], effect: allow, condition: 12}\n"
        "- {id: c, actions: [read], effect: allow, condition: {none: []}}\n"
        "- {id: d, actions: [read], effect: allow, condition: ''}\n"
    )
    assert errors({"p.yaml": text}) == [
        "p.yaml:9:58: `condition` must be a CEL string or a mapping with one key of `all`, `any`, `none`, got a mapping",
        "p.yaml:10:58: `condition` must be a CEL string or a mapping with one key of `all`, `any`, `none`, got a number",
        "p.yaml:11:65: `none` must be a non-empty list of conditions",
        "p.yaml:12:58: `condition` must not be empty",
    ]


def test_kind_and_file_name_must_agree() -> None:
    suite = "apiVersion: pdp/v1\nkind: TestSuite\nmetadata: {id: t}\nspec: {cases: []}\n"
    assert errors({"suite.yaml": suite, "p_test.yaml": DEFS}, with_defs=False) == [
        "p_test.yaml:2:7: a `_test.yaml` file must hold a `TestSuite`, got `Definitions`",
        "suite.yaml:2:7: a `TestSuite` must be in a file whose name ends in `_test.yaml`",
    ]


def test_data_errors() -> None:
    assert errors(
        {
            "a/data/x.json": '{"a": 1, "a": 2}',
            "b/data/x.yaml": "a: 1",
            "data/y.json": '{"a": [1,\n 2',
            "data/z.json": '{"a": NaN}',
        }
    ) == [
        "a/data/x.json:1:1: malformed json: duplicate key `a`",
        "b/data/x.yaml:1:1: duplicate data name `data.x` (also defined by `a/data/x.json`)",
        "data/y.json:2:3: malformed json: expecting ',' delimiter",
        "data/z.json:1:1: malformed json: `NaN` is not valid json",
    ]


def test_two_route_mappings() -> None:
    mapping = "apiVersion: pdp/v1\nkind: RouteMapping\nspec: {}\n"
    assert errors({"a/mapping.yaml": mapping, "b/mapping.yaml": mapping}) == [
        "b/mapping.yaml:1:1: more than one RouteMapping (first in `a/mapping.yaml`)"
    ]


# -- test suites -------------------------------------------------------------------------------

SUITE = """\
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: t}
spec:
  now: "2026-01-01T00:00:00Z"
  principals: {alice: {id: alice, tenant: acme}}
  resources: {d: {kind: doc, id: d1, tenant: acme}}
  contexts: {office: {ip: 10.0.0.1}}
  cases:
"""


def suite(cases: str) -> str:
    return SUITE + textwrap.indent(textwrap.dedent(cases), "    ")


def test_suite_unknown_fixtures() -> None:
    text = suite(
        "- {name: c, principal: alise, resource: e, context: home, expect: {read: allow}}\n"
    )
    assert errors({"p.yaml": policy(), "t_test.yaml": text}) == [
        "t_test.yaml:10:28: unknown principal fixture `alise` (did you mean `alice`?)",
        "t_test.yaml:10:45: unknown resource fixture `e`",
        "t_test.yaml:10:57: unknown context fixture `home`",
    ]


def test_suite_undeclared_expected_action_and_bad_effect() -> None:
    text = suite(
        "- name: c\n"
        "  principal: alice\n"
        "  resource: d\n"
        "  expect: {raed: allow, write: maybe}\n"
        "- {name: e, principal: alice, resource: d, expect: {write: {effect: allow, rul: x}}}\n"
        "- {name: f, principal: alice, resource: {kind: other, id: o}, expect: {anything: deny}}\n"
        "- {name: g, principal: alice, resource: d, expect: {raed: deny}}\n"
    )
    assert errors({"p.yaml": policy(), "t_test.yaml": text}) == [
        "t_test.yaml:13:36: expected effect must be `allow` or `deny`, got `maybe`",
        "t_test.yaml:14:80: unknown key `rul` in the expectation of `write` (did you mean `rule`?)",
        "t_test.yaml:16:57: action `raed` is not declared by the policy of resource kind `doc` "
        "(did you mean `read`?)",
    ]


def test_suite_bad_now() -> None:
    text = suite(
        "- {name: c, principal: alice, resource: d, now: '2026-01-01T00:00:00', expect: {read: allow}}\n"
    )
    text = text.replace('now: "2026-01-01T00:00:00Z"', "now: yesterday")
    assert errors({"p.yaml": policy(), "t_test.yaml": text}) == [
        "t_test.yaml:5:8: bad `now`: `yesterday` is not an RFC 3339 timestamp",
        "t_test.yaml:10:53: bad `now`: `2026-01-01T00:00:00` has no time zone offset",
    ]


def test_suite_fixture_shape() -> None:
    text = suite(
        "- {name: c, principal: {tenant: acme, role: [x]}, resource: {kind: doc, id: 1, actions: [read]}, expect: {read: deny}}\n"
    )
    text = text.replace("{ip: 10.0.0.1}", "{ip: nope}")
    assert errors({"p.yaml": policy(), "t_test.yaml": text}) == [
        "t_test.yaml:8:27: `nope` is not an IP address",
        "t_test.yaml:10:28: missing required field `id`",
        "t_test.yaml:10:43: unknown key `role` in a principal (did you mean `roles`?)",
        "t_test.yaml:10:84: a resource fixture does not list `actions`: the case's `expect` names them",
    ]


# -- all at once -------------------------------------------------------------------------------


def test_every_error_of_every_file_in_one_raise() -> None:
    found = errors(
        {
            "a.yaml": "a: [\n",
            "b.yaml": policy("- {id: r, actions: [read], effect: allow}\n").replace("pdp/v1", "v0"),
            "c/g.yaml": GUARD
            + "    - {id: r, resources: ['*'], actions: ['*'], reason: x, effect: allow}\n",
            "t_test.yaml": suite(
                "- {name: c, principal: bob, resource: d, expect: {read: allow}}\n"
            ),
        }
    )
    assert [e.split(":")[0] for e in found] == ["a.yaml", "b.yaml", "c/g.yaml", "t_test.yaml"]


def test_paths_that_are_not_relative_posix_paths_are_refused() -> None:
    good = policy()
    bad = ["/abs/p.yaml", "a/../p.yaml", "../p.yaml", "a\\p.yaml", "./../x/p.yaml"]
    got = errors({path: good for path in bad})
    assert got == [f"{p}:1:1: `{p}` is not a relative posix path" for p in sorted(bad)]
    # `.` components and doubled slashes are still relative paths inside the tree.
    assert load_policy_files({"./a//p.yaml": good.encode(), "common.yaml": DEFS.encode()})
