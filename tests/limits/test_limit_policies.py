"""Hostile and mistaken LimitPolicy documents: every problem with file:line:column, never a
limit that silently counts nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdp.engine import compile_policy_set
from pdp.errors import PolicyErrors
from pdp.model._limits import parse_period
from pdp.model.loader import load_policy_files

from .conftest import LIMITED

NOTE = LIMITED["note.yaml"]
HEAD = "apiVersion: pdp/v1\nkind: LimitPolicy\nmetadata: {id: l}\nspec:\n  limits:\n"


def problems(limit_yaml: str, *, compile_too: bool = True) -> list[str]:
    files = {"note.yaml": NOTE.encode(), "l.yaml": (HEAD + limit_yaml).encode()}
    try:
        source = load_policy_files(files)
        if compile_too:
            compile_policy_set(source)
    except PolicyErrors as exc:
        return [e.render().splitlines()[0] for e in exc.errors]
    return []


def test_a_good_limit_loads() -> None:
    assert (
        problems(
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: 1m}\n"
        )
        == []
    )


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: fortnight}\n",
            "fortnight `per` must be a duration such as `1s`, `10m`, `1h`, `1d` (at most 366 days) or one of `second`, `minute`, `hour`, `day`, got `fortnight`",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 0, per: 1m}\n",
            "0, `limit` must be between 1 and 1000000000000, got 0",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: '5', per: 1m}\n",
            "'5' `limit` must be a whole number, got a string",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: 1m, burst: 2.5}\n",
            "2.5 `burst` must be a whole number, got a number",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], limit: 5, per: 1m}\n",
            "{id: missing required field `key`",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: 400d}\n",
            "400d `per` must be a duration such as `1s`, `10m`, `1h`, `1d` (at most 366 days) or one of `second`, `minute`, `hour`, `day`, got `400d`",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: 1m, onStoreError: open}\n",
            "open `onStoreError` must be `deny` or `allow`, got `open`",
        ),
        (
            "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: 1m, window: 3}\n",
            "window unknown key `window` in a limit",
        ),
    ],
    ids=[
        "per",
        "zero",
        "string-limit",
        "float-burst",
        "no-key",
        "too-long",
        "store",
        "unknown-key",
    ],
)
def test_bad_limits_are_load_errors(limit: str, expected: str) -> None:
    token, message = expected.split(" ", 1)
    column = limit.index(token) + 1  # the error points at the offending value or key
    assert f"l.yaml:6:{column}: {message}" in problems(limit, compile_too=False)


def test_duplicate_limit_ids() -> None:
    found = problems(
        "    - {id: a, resources: [note], actions: [read], key: P.id, limit: 5, per: 1m}\n"
        "    - {id: a, resources: [note], actions: [write], key: P.id, limit: 5, per: 1m}\n"
    )
    assert found == ["l.yaml:7:12: duplicate limit id `a` (first defined at line 6)"]


def test_a_limit_on_an_unknown_kind_is_an_error() -> None:
    found = problems(
        "    - {id: a, resources: [nots], actions: [read], key: P.id, limit: 5, per: 1m}\n"
    )
    assert found == ["l.yaml:6:7: limit `a` names unknown resource kind `nots`"]


def test_a_limit_covering_no_declared_action_is_an_error() -> None:
    found = problems(
        "    - {id: a, resources: [note], actions: [raed], key: P.id, limit: 5, per: 1m}\n"
    )
    assert found == ["l.yaml:6:7: limit `a` covers no declared action of its resource kinds"]


def test_cel_errors_in_keys_and_costs_point_at_the_text() -> None:
    found = problems(
        "    - id: a\n      resources: [note]\n      actions: [read]\n      key: P.id +\n"
        "      cost: nosuch(1)\n      limit: 5\n      per: 1m\n"
    )
    assert len(found) == 2
    assert found[0].startswith("l.yaml:9:")
    assert found[1].startswith("l.yaml:10:")


def test_an_after_without_now_is_an_error() -> None:
    suite = (
        "apiVersion: pdp/v1\nkind: TestSuite\nmetadata: {id: t}\nspec:\n  cases:\n"
        "    - name: c\n      principal: {id: a, tenant: t, roles: [member]}\n"
        "      resource: {kind: note, id: n, tenant: t}\n      after: {calls: 3, within: 1s}\n"
        "      expect: {read: allow}\n"
    )
    with pytest.raises(PolicyErrors) as info:
        load_policy_files({"note.yaml": NOTE.encode(), "t_test.yaml": suite.encode()})
    assert [e.render().splitlines()[0] for e in info.value.errors] == [
        "t_test.yaml:9:14: a case with `after` needs a `now` (on the case or the suite)"
    ]


@given(st.text(max_size=12))
def test_periods_are_positive_and_bounded(text: str) -> None:
    seconds = parse_period(text)
    assert seconds is None or 0 < seconds <= 366 * 86400
