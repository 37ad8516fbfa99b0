"""PDP208 and the constant conditions it makes visible: a comparison whose result never depends
on the request (`R.tenant == R.tenant`, `P.id != ""`, `size(R.id) == 0`) and conditions that
fold once constants are substituted (`size(C.admins) == 0`).

Folding is sound or absent: a comparison folds only when every request that evaluates it gets
that value (the field is always there and never empty); one that may error instead (a missing
attribute, a null actor) is reported but left unknown, so no rule-level finding claims more.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pdp.cel import NOT_CONST, TypeEnv, check_cel
from pdp.cli.main import main
from pdp.engine import compile_policy_set
from pdp.lint import analyze
from pdp.model.loader import load_policy_files
from pdp.model.request import RequestError, parse_check_request

ENV = TypeEnv(constants={"admins": [], "names": ["alice"], "flag": "on"})


def fixed(source: str) -> tuple[object, list[tuple[str, int, str]]]:
    r = check_cel(source, ENV, condition=True)
    return r.const, [(i.code, i.column, i.message) for i in r.issues]


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("R.tenant == R.tenant", True),
        ("resource.tenant != R.tenant", False),
        ("P.id <= principal.id", True),
        ("P.id < P.id", False),
        ("action >= action", True),
        ("P.roles == P.roles", True),
        ("context.country != context.country", False),
        ("now == now", True),
    ],
)
def test_a_field_compared_with_itself_folds(source: str, value: bool) -> None:
    const, issues = fixed(source)
    assert const is value
    assert [(c, col) for c, col, _ in issues] == [("PDP208", 1)]
    assert "with itself" in issues[0][2] and f"`{str(value).lower()}`" in issues[0][2]


@pytest.mark.parametrize(
    "source",
    [
        "R.attr.x == R.attr.x",  # errors (so denies) when `x` is missing: not "always true"
        "actor.id == actor.id",  # errors when there is no actor
        "context.time == context.time",  # not always in the request
        "V.missing == V.missing",
        "double(R.attr.n) + 1.0 == double(R.attr.n) + 1.0",  # NaN is not equal to itself
    ],
)
def test_a_self_comparison_that_may_error_is_reported_but_not_folded(source: str) -> None:
    const, issues = fixed(source)
    assert const is NOT_CONST
    assert [c for c, _, _ in issues] == ["PDP208"]
    assert "whenever" in issues[0][2]


@pytest.mark.parametrize(
    ("source", "value", "column"),
    [
        ('P.id != ""', True, 1),
        ('"" == R.id', False, 1),
        ('R.kind == ""', False, 1),
        ('action != ""', True, 1),
        ("size(P.id) == 0", False, 1),
        ("P.id.size() > 0", True, 1),
        ("0 < size(action)", True, 1),
        ("size(R.id) >= 1", True, 1),
        ("1 > size(R.id)", False, 1),
        ('R.attr.a == "x" && P.id == ""', False, 20),
    ],
)
def test_an_id_never_empty_compared_with_emptiness_folds(
    source: str, value: bool, column: int
) -> None:
    const, issues = fixed(source)
    assert const is value
    assert [(c, col) for c, col, _ in issues] == [("PDP208", column)]
    assert "never empty" in issues[0][2]


@pytest.mark.parametrize(
    "source",
    [
        'P.tenant == ""',  # a tenant may be empty
        'R.tenant != ""',
        'context.ip != ""',
        'context.country == ""',
        "size(R.id) >= 2",
        "size(P.id) < 64",
        "size(P.tenant) > 0",
        'actor.id != ""',  # no actor: an error, not `true`
        "R.tenant == P.tenant",
        "R.attr.a == R.attr.b",
        "P.attr.owner == R.attr.owner",
        '[["x"]].exists(R, R[0] == "")',
        "R.attr.items.exists(P, P.id != P.id2)",
        '"1" == 1 || P.id == "x"',
    ],
)
def test_comparisons_that_depend_on_the_request_are_left_alone(source: str) -> None:
    const, issues = fixed(source)
    assert const is NOT_CONST
    assert not [i for i in issues if i[0] == "PDP208"]


def test_a_comprehension_variable_shadowing_a_root_is_not_the_request() -> None:
    # `R` here is each element, which may be missing `id`: reported, not folded.
    const, issues = fixed("R.attr.docs.exists(R, R.id == R.id)")
    assert const is NOT_CONST
    assert [c for c, _, _ in issues] == ["PDP208"] and "whenever" in issues[0][2]
    const, issues = fixed('R.attr.docs.exists(P, P.id != "")')
    assert const is NOT_CONST and issues == []


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("size(C.admins) == 0", True),
        ("C.admins.size() > 0", False),
        ('C.flag.startsWith("o")', True),
        ("size(C.names) == 1 && 'alice' in C.names", True),
        ("int(C.flag == 'on') == 1", True),
    ],
)
def test_pure_functions_of_constants_fold(source: str, value: bool) -> None:
    const, issues = fixed(source)
    assert const is value
    assert issues == []


def test_the_never_empty_ids_are_what_the_request_parser_refuses_empty() -> None:
    """The rule's premise, checked against the real parser: each of these empty is refused;
    an empty tenant, ip and country are accepted (so they are not in the list)."""
    base = {
        "principal": {"id": "u", "tenant": "t", "roles": []},
        "resources": [{"kind": "doc", "id": "d", "tenant": "t", "actions": ["read"]}],
    }

    def with_(path: str, value: str) -> dict:
        req = {
            "principal": dict(base["principal"]),
            "resources": [dict(base["resources"][0])],
            "context": {"ip": "10.0.0.1", "country": "FR"},
        }
        where, key = path.split(".")
        if where == "principal":
            req["principal"][key] = value
        elif where == "context":
            req["context"][key] = value
        elif key == "actions":
            req["resources"][0]["actions"] = [value]
        else:
            req["resources"][0][key] = value
        return req

    for path in ("principal.id", "resource.kind", "resource.id", "resource.actions"):
        with pytest.raises(RequestError):
            parse_check_request(with_(path, ""))
    for path in ("principal.tenant", "resource.tenant", "context.ip", "context.country"):
        parse_check_request(with_(path, ""))


POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: document
  actions:
    read: {}
  rules:
    - id: same-tenant-read
      actions: [read]
      effect: allow
      condition: '"reader" in P.roles && R.tenant == R.tenant'
"""


def test_the_findings_say_where_and_why() -> None:
    files = {"docs.yaml": textwrap.dedent(POLICY).lstrip().encode()}
    source = load_policy_files(files)
    compile_policy_set(source)  # it compiles: only the validator catches it
    (f,) = analyze(source)
    assert f.code == "PDP208" and f.severity == "warning"
    assert str(f.location) == "docs.yaml:12:42"
    assert "`==` compares `R.tenant` with itself: it is always `true`" in f.message


def test_validate_strict_fails_on_a_self_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    assert main(["validate", str(tmp_path)]) == 0
    assert main(["validate", str(tmp_path), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "docs.yaml:12:42: warning PDP208:" in err
    fixed_text = textwrap.dedent(POLICY).replace("R.tenant == R.tenant", "R.tenant == P.tenant")
    (tmp_path / "docs.yaml").write_text(fixed_text.lstrip())
    assert main(["validate", str(tmp_path), "--strict"]) == 0
