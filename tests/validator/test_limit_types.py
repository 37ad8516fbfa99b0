"""Rate limits through the type checker: a LimitPolicy's key, cost and condition (with its
variables and imports) are checked where they run, once per kind a limit covers with that
kind's schemas, so a limit that would deny every call it covers (or count the wrong buckets)
is refused by `pdp validate` instead of failing closed in production."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cel import (
    CelEnv,
    CelEvalError,
    TypeEnv,
    check_cel,
    compile_cel,
    may_be,
    type_from_schema,
)
from pdp.cli.main import main
from pdp.engine import Engine, compile_policy_set
from pdp.errors import PolicyErrors
from pdp.lint import CODES, analyze
from pdp.lint.typecheck import _COST, _KEY, _may_be_wanted
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request

from .checker_strategies import SCHEMAS, activation, expressions, values
from .corpus import findings_of, shown
from .test_checker_property import validator

ROOT = Path(__file__).resolve().parents[2]

DOCS = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: document
  schemas:
    resource: doc.json
    context: ctx.json
  actions:
    read: {}
  rules:
    - id: members
      actions: [read]
      effect: allow
      roles: [user]
"""
# The same kind without schemas: its attributes are `dyn`.
NOTES = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {}
  rules:
    - id: members
      actions: [read]
      effect: allow
      roles: [user]
"""
COMMON = """\
apiVersion: pdp/v1
kind: Definitions
metadata: {id: common}
spec:
  constants:
    weights: {read: 2}
  variables:
    tenant_key: P.tenant
    is_anonymous: P.id == "anonymous"
"""
BASE = {
    "docs.yaml": DOCS,
    "notes.yaml": NOTES,
    "common.yaml": COMMON,
    "schemas/doc.json": '{"type": "object", "properties": '
    '{"owner": {"type": "string"}, "size": {"type": "integer"}}}',
    "schemas/ctx.json": '{"type": "object", "properties": {"tokens": {"type": "integer"}}}',
}
# The limit's own lines start at line 12 (`key:`); column 7 is where its keys start.
HEAD = """\
apiVersion: pdp/v1
kind: LimitPolicy
metadata: {id: lim}
spec:
  imports: [common]
  limits:
    - id: l1
      resources: [RESOURCES]
      actions: [read]
      limit: 5
      per: 1m
"""


def type_findings(files: dict[str, bytes]) -> list:
    """The findings of `files` but PDP201: every case imports `common` (HEAD), used or not
    (PDP201 on limits: test_limit_lint.py)."""
    return [f for f in findings_of(files) if f.code != "PDP201"]


def limit_files(*lines: str, resources: str = "document", tail: str = "") -> dict[str, bytes]:
    text = HEAD.replace("RESOURCES", resources) + "".join(f"      {x}\n" for x in lines) + tail
    return {name: body.encode() for name, body in {**BASE, "lim.yaml": text}.items()}


BAD = [
    # what the engine refuses at run time: every covered call would be denied
    pytest.param(("key: P.id", "cost: P.id"), "document", "", ["PDP127 lim.yaml:13:15"], id="cost-string"),
    pytest.param(("key: P.id", "cost: \"'ten'\""), "document", "", ["PDP127 lim.yaml:13:14"], id="cost-string-literal"),
    pytest.param(("key: P.id", "cost: P.roles"), "document", "", ["PDP127 lim.yaml:13:15"], id="cost-list"),
    pytest.param(("key: P.id", "cost: C.weights"), "document", "", ["PDP127 lim.yaml:13:15"], id="cost-constant-map"),
    pytest.param(("key: P.id", "cost: context.time"), "document", "", ["PDP127 lim.yaml:13:21"], id="cost-timestamp"),
    pytest.param(("key: \"null\"",), "document", "", ["PDP126 lim.yaml:12:13"], id="key-null"),
    # what the engine counts wrongly: two buckets for everyone, or one per spelling
    pytest.param(("key: P.id == 'x'",), "document", "", ["PDP126 lim.yaml:12:12"], id="key-bool"),
    pytest.param(("key: R.attr",), "document", "", ["PDP126 lim.yaml:12:14"], id="key-schema-map"),
    pytest.param(("key: R.attr",), "note", "", ["PDP126 lim.yaml:12:14"], id="key-untyped-map"),
    pytest.param(("key: P.roles",), "document", "", ["PDP126 lim.yaml:12:14"], id="key-list"),
    pytest.param(("key: \"{'t': P.tenant}\"",), "document", "", ["PDP126 lim.yaml:12:13"], id="key-map-literal"),
    pytest.param(("key: double(R.attr.size)",), "document", "", ["PDP126 lim.yaml:12:12"], id="key-double"),
    # conditions, as everywhere
    pytest.param(("key: P.id", "condition: P.id"), "document", "", ["PDP123 lim.yaml:13:20"], id="condition-string"),
    pytest.param(("key: P.id", "condition: context.attr"), "note", "", ["PDP123 lim.yaml:13:26"], id="condition-map"),
    pytest.param(("key: P.id", "condition: 1 == 2"), "document", "", ["PDP108 lim.yaml:7:7"], id="condition-never"),
    # typos: request fields, schema attributes (only where the kind has a schema)
    pytest.param(("key: P.tenat",), "document", "", ["PDP120 lim.yaml:12:14"], id="key-field-typo"),
    pytest.param(("key: R.attr.ownr",), "document", "", ["PDP122 lim.yaml:12:19"], id="key-schema-typo"),
    pytest.param(("key: R.attr.ownr",), '"*"', "", ["PDP122 lim.yaml:12:19"], id="key-schema-typo-wildcard"),
    pytest.param(("key: P.id", "cost: context.attr.tokns"), "document", "", ["PDP122 lim.yaml:13:26"], id="cost-schema-typo"),
    pytest.param(("key: P.id", "condition: R.attr.ownr == P.id"), "document", "", ["PDP122 lim.yaml:13:25"], id="condition-schema-typo"),
    # a type only the schema knows, checked per kind
    pytest.param(("key: P.id", "cost: R.attr.owner"), "document", "", ["PDP127 lim.yaml:13:20"], id="cost-schema-string"),
    pytest.param(("key: P.id", "cost: R.attr.owner"), "document, note", "", ["PDP127 lim.yaml:13:20"], id="cost-schema-string-one-of-two"),
    pytest.param(("key: P.id", "cost: R.attr.owner"), '"*"', "", ["PDP127 lim.yaml:13:20"], id="cost-schema-string-wildcard"),
    pytest.param(("key: R.attr.owner + 1",), "document", "", ["PDP121 lim.yaml:12:12"], id="key-no-overload"),
    # variables: local and imported, reported where their text is
    pytest.param(("key: V.who",), "document", "  variables:\n    who: P.tenat\n", ["PDP120 lim.yaml:14:12"], id="local-variable-typo"),
    pytest.param(("key: V.whole",), "document", "  variables:\n    whole: R.attr\n", ["PDP126 lim.yaml:12:14"], id="local-variable-map-key"),
    pytest.param(("key: V.is_anonymous",), "document", "", ["PDP126 lim.yaml:12:14"], id="imported-variable-bool-key"),
    pytest.param(("key: P.id", "cost: V.tenant_key"), "note", "", ["PDP127 lim.yaml:13:15"], id="imported-variable-string-cost"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "resources", "tail", "expected"), BAD)
def test_a_mistyped_limit_gives_its_finding(lines, resources, tail, expected) -> None:
    files = limit_files(*lines, resources=resources, tail=tail)
    assert sorted(shown(f) for f in type_findings(files)) == expected
    # All of them load and compile: only the type checker sees them before a request does.
    compile_policy_set(load_policy_files(files))


@pytest.mark.parametrize(("lines", "resources", "tail", "expected"), BAD[:1])
def test_the_finding_renders_the_line_and_a_caret(lines, resources, tail, expected) -> None:
    (f,) = type_findings(limit_files(*lines, resources=resources, tail=tail))
    assert f.render().splitlines() == [
        "lim.yaml:13:15: error PDP127: a rate-limit cost must be a number, this is `string`",
        "  13 |       cost: P.id",
        "     |               ^",
    ]


GOOD = [
    pytest.param(("key: P.tenant",), "document", "", id="string-key"),
    pytest.param(("key: P.tenant + \"/\" + actor.id", "condition: actor != null"), '"*"', "", id="example-agent"),
    pytest.param(("key: P.tenant", "cost: \"has(context.attr.tokens) ? context.attr.tokens : 1\""), "document, note", "", id="example-tokens"),
    pytest.param(("key: \"'global'\"",), "document", "", id="constant-key"),
    pytest.param(("key: R.attr.size", "cost: R.attr.size"), "document", "", id="schema-int-key-and-cost"),
    pytest.param(("key: P.id", "cost: R.attr.owner"), "note", "", id="untyped-cost"),
    pytest.param(("key: R.attr.team", "cost: context.attr.units"), "note", "", id="untyped-key"),
    pytest.param(("key: V.tenant_key", "cost: C.weights.read"), "document", "", id="imported"),
    pytest.param(("key: P.id", "cost: double(C.weights.read) * 1.5"), "document", "", id="double-cost"),
    pytest.param(("key: P.id", "cost: uint(2)"), "document", "", id="uint-cost"),
    pytest.param(("key: V.who", "condition: V.big"), "document", "  variables:\n    who: P.id + \"@\" + P.tenant\n    big: R.attr.size > 10\n", id="local-variables"),
    pytest.param(("key: \"has(context.attr.k) ? context.attr.k : null\"",), "note", "", id="maybe-null-key"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "resources", "tail"), GOOD)
def test_a_well_typed_limit_gives_no_finding(lines, resources, tail) -> None:
    files = limit_files(*lines, resources=resources, tail=tail)
    findings = type_findings(files)
    assert not findings, "\n".join(f.render() for f in findings)
    compile_policy_set(load_policy_files(files))


def test_an_undefined_variable_is_a_compile_error_at_its_position() -> None:
    """Not a finding: the compiler refuses it (every CLI verb does), at the variable."""
    with pytest.raises(PolicyErrors) as err:
        compile_policy_set(load_policy_files(limit_files("key: P.id", "cost: V.nope")))
    assert [e.render().splitlines()[0] for e in err.value.errors] == [
        "lim.yaml:13:15: undefined variable `V.nope`"
    ]


def test_the_type_checked_cost_does_deny_every_call_at_run_time() -> None:
    """Why PDP127 is an error: the engine would deny every call the limit covers."""
    files = limit_files("key: P.id", "cost: R.attr.owner")
    engine = Engine(compile_policy_set(load_policy_files(files)))
    request = parse_check_request(
        {
            "principal": {"id": "ann", "tenant": "acme", "roles": ["user"]},
            "resources": [
                {
                    "kind": "document",
                    "id": "d1",
                    "tenant": "acme",
                    "attr": {"owner": "ann", "size": 3},
                    "actions": ["read"],
                }
            ],
            "context": {"time": datetime(2026, 3, 10, tzinfo=UTC).isoformat()},
        }
    )
    d = engine.check(request).results[0].actions["read"]
    assert (d.effect, d.reasons) == ("deny", ("rate_limit_error",))


def write(root: Path, files: dict[str, bytes]) -> Path:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return root


@pytest.mark.parametrize(
    ("lines", "line"),
    [
        (("key: R.attr",), "lim.yaml:12:14: error PDP126: "),
        (("key: P.id", "cost: R.attr.owner"), "lim.yaml:13:20: error PDP127: "),
        (("key: P.id", "condition: P.id"), "lim.yaml:13:20: error PDP123: "),
    ],
)
def test_validate_exits_non_zero_on_a_mistyped_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: tuple[str, ...], line: str
) -> None:
    src = write(tmp_path, limit_files(*lines))
    assert main(["validate", str(src)]) == 1
    out = capsys.readouterr()
    assert line in out.err and "ok:" not in out.out
    assert main(["bundle", "build", str(src), "-o", str(tmp_path / "o"), "--no-strict"]) == 1


def test_validate_exits_non_zero_on_an_undefined_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(write(tmp_path, limit_files("key: V.nope")))]) == 1
    assert "lim.yaml:12:14: undefined variable `V.nope`" in capsys.readouterr().err


def test_the_example_limits_pass_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "policies"), "--strict"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ok: ") and out.err == ""


# -- the checker only rejects: a refused key or cost can never count right --------------------


def _a_cost(value: Any) -> bool:
    """What the engine takes as a cost (pdp.engine.limits): a number, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _a_key(value: Any) -> bool:
    """What names one bucket whoever sends it: a string or a whole number, not a bool. (A list
    of them does when its order is the author's: PDP126 accepts only a list written out.)"""
    return isinstance(value, str | int) and not isinstance(value, bool)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # as the checker's property: CI neither passes nor fails by luck
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(data=st.data(), which=st.sampled_from([(_KEY, _a_key), (_COST, _a_cost)]))
def test_a_refused_key_or_cost_never_has_a_type_that_counts(data: st.DataObject, which) -> None:
    """No false alarm: what PDP126/PDP127 refuse, on attributes that satisfy the schema,
    errors or gives a value of another type, whatever the attributes."""
    want, counts = which
    schema = data.draw(SCHEMAS, label="schema")
    expr = data.draw(expressions(schema), label="expr")
    try:
        result = check_cel(expr, TypeEnv(resource_attr=type_from_schema(schema, schema, "s")))
        compiled = compile_cel(expr, CelEnv())
    except Exception:  # does not compile
        return
    if _may_be_wanted(result.type, want, expr):
        return  # accepted: the engine's own checks at run time still apply
    attr = data.draw(values(schema), label="attr")
    validator(json.dumps(schema, sort_keys=True))(attr)
    try:
        value = compiled(activation(attr))
    except CelEvalError:
        return
    assert not counts(value), f"{expr!r} refused but gave {value!r} on {attr!r}"


def test_the_property_sees_both_outcomes() -> None:
    env = TypeEnv()
    assert not may_be(check_cel("P.id == 'x'", env).type, *_KEY.types)
    assert may_be(check_cel("R.attr.x", env).type, *_KEY.types)
    assert not may_be(check_cel("'1'", env).type, *_COST.types)
    assert may_be(check_cel("1u", env).type, *_COST.types)
    for key in ("[P.tenant, P.id]", "[P.tenant, 7]", "[1.5, 2.5]", "[P.id == 'x']", "P.roles"):
        accepted = _may_be_wanted(check_cel(key, env).type, _KEY, key)
        assert accepted is (key in ("[P.tenant, P.id]", "[P.tenant, 7]")), key


# -- hostile limits: the validator answers with positioned errors, never a crash --------------


@pytest.mark.parametrize(
    ("lines", "tail", "error"),
    [
        (
            ("key: P.id", "cost: " + json.dumps("[" * 400 + "1" + "]" * 400)),
            "",
            "lim.yaml:13:14: error PDP127: a rate-limit cost must be a number, this is `list(list(",
        ),
        (
            ("key: P.id", "cost: " + json.dumps("[" * 600 + "1" + "]" * 600)),
            "",
            "lim.yaml:13:14: expression nests too deeply",
        ),
        (("key: V.a",), "  variables:\n    a: V.b\n    b: V.a\n", "variable cycle"),
        (("key: P.id", "cost: size(R.attr.x) +"), "", "lim.yaml:13:"),
    ],
    ids=["deeply-nested", "too-deeply-nested", "variable-cycle", "syntax-error"],
)
def test_hostile_limits_fail_validate_with_a_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines, tail, error
) -> None:
    assert main(["validate", str(write(tmp_path, limit_files(*lines, tail=tail)))]) == 1
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err
    assert all(len(line) < 300 for line in err.splitlines() if "error" in line)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.text(alphabet="PRC.V()[]{}'\"+-*/<>=!?:, attridkeyn0123456789u", max_size=40),
    cost=st.text(alphabet="PRC.V()[]{}'\"+-*/<>=!?:, attridkeyn0123456789u", max_size=40),
)
def test_any_key_and_cost_text_gives_findings_or_load_errors(key: str, cost: str) -> None:
    files = limit_files(f"key: {json.dumps(key)}", f"cost: {json.dumps(cost)}")
    try:
        source = load_policy_files(files)
    except PolicyErrors:
        return
    for f in analyze(source):
        assert f.code in CODES and f.location is not None and f.location.file == "lim.yaml"
