"""The validator warns of `in` over bool or number literals on an attribute without a type.

`PDP205` warned of `R.attr.level == 5` in a deny rule: without a schema the attribute may be
the string `"5"`, for which `==` is false, not an error, so the deny does not fire and an
allow decides. `R.attr.level in [4, 5]` is the same test spelt as a list, and `pdp validate
--strict` (and `pdp bundle build`, strict by default) passed it without a word, while a real
`pdp serve` allowed `level: "5"` past it. It is `PDP205` now, with its position; strings in the
list, a schema that declares the attribute, and the repository's policies stay silent.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from pdp.cel._checker import TypeEnv, check
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

REPO = Path(__file__).resolve().parents[2]

POLICY = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: files}
spec:
  resource: file
  actions:
    read: {}
  rules:
    - id: no-restricted-levels
      actions: [read]
      effect: deny
      condition: R.attr.level in [4, 5]
      reason: restricted
    - id: members-read
      actions: [read]
      effect: allow
      roles: [member]
      reason: member
"""


def validate(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pdp.cli.main", "validate", *extra, str(root)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lint17")
    (root / "files.yaml").write_text(POLICY)
    return root


@pytest.fixture(scope="module")
def served(policies: Path) -> Iterator[Served]:
    with pdp_serve(policies) as s:
        yield s


def effect(served: Served, level: Any) -> str:
    raw = {
        "principal": {"id": "ann", "tenant": "acme", "roles": ["member"]},
        "resources": [{"kind": "file", "id": "f1", "tenant": "acme", "actions": ["read"],
                       "attr": {"level": level}}],
    }  # fmt: skip
    got = served.check(json_format.ParseDict(raw, pb.CheckRequest()))
    return pb.Effect.Name(got.results[0].actions["read"].effect)


def test_the_hazard_is_real_and_validate_now_names_it(served: Served, policies: Path) -> None:
    assert effect(served, 5) == "EFFECT_DENY"
    assert effect(served, "5") == "EFFECT_ALLOW"  # the string spelling passes the deny
    done = validate(policies, "--strict")
    assert done.returncode != 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "files.yaml:12:18: warning PDP205: `R.attr.level` has no declared type" in output
    assert '`"4"`' in output


def test_a_declared_type_or_a_list_of_strings_is_silent(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "file.json").write_text(
        '{"type": "object", "properties": {"level": {"type": "integer"}}}'
    )
    typed = POLICY.replace("  actions:\n", "  schemas: {resource: file.json}\n  actions:\n", 1)
    (tmp_path / "files.yaml").write_text(typed)
    done = validate(tmp_path, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "files.yaml").write_text(POLICY.replace("[4, 5]", '["4", "5"]'))
    (tmp_path / "schemas" / "file.json").unlink()
    done = validate(tmp_path, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "root", ["policies", "tests/authzen/todo_policies", "tests/model/fixtures/valid"]
)
def test_the_repositorys_policies_stay_silent(root: str) -> None:
    done = validate(REPO / root)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "`in` a list holding" not in output, output


LITERALS = st.one_of(
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text("abc", max_size=3),
)


def _cel(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


@given(
    values=st.lists(LITERALS, max_size=4),
    attr=st.sampled_from(["R.attr.level", "P.attr.x", "context.attr.y", "P.id"]),
)
def test_in_over_a_list_literal_warns_exactly_when_a_number_or_bool_can_be_missed(
    values: list[Any], attr: str
) -> None:
    source = f"{attr} in [{', '.join(map(_cel, values))}]"
    issues = [i for i in check(source, TypeEnv(), condition=True).issues]
    scalar = any(not isinstance(v, str) for v in values)
    untyped = attr != "P.id"  # P.id is a string: a number in the list is PDP121 instead
    assert any(i.code == "PDP205" for i in issues) == (scalar and untyped), (source, issues)


def test_a_constant_list_of_numbers_warns_too() -> None:
    env = TypeEnv(constants={"levels": [4, 5], "names": ["a"]})
    assert [i.code for i in check("R.attr.level in C.levels", env).issues] == ["PDP205"]
    assert check("R.attr.level in C.names", env).issues == []
    assert check(textwrap.dedent("R.attr.level in {4: 1}"), env).issues == []


@pytest.mark.parametrize("literal", ["4", "4.5", "true", "4u"])
def test_a_number_or_bool_looked_up_in_an_untyped_attribute_warns(literal: str) -> None:
    # `4 in R.attr.levels` is false for `["4"]`: a deny on it misses the string spelling.
    issues = check(f"{literal} in R.attr.levels", TypeEnv()).issues
    assert [i.code for i in issues] == ["PDP205"], issues
    assert check(f'"{literal}" in R.attr.levels', TypeEnv()).issues == []
    assert [i.code for i in check(f"{literal} in P.roles", TypeEnv()).issues] == ["PDP121"]
