"""Adversarial input to the planner's entry points: plan requests, AuthZEN searches, filters
received over the wire. Bad input is a clear error naming the field, never a plan built from
it, never an unexpected exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.engine import Engine, compile_policy_set
from pdp.errors import LimitExceeded, RequestError
from pdp.model.loader import load_policy_dir
from pdp.plan import PlanRefused
from pdp.plan import tree as t
from pdp.plan.api import plan_json, search_resource

ENGINE = Engine(compile_policy_set(load_policy_dir(Path(__file__).parents[2] / "policies")))

json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["principal", "resource", "action", "context", "request_id", "x"])
bodies = st.one_of(
    json_values,
    st.dictionaries(keys, json_values, max_size=5),
    st.fixed_dictionaries(
        {
            "principal": st.one_of(
                json_values, st.just({"id": "a", "tenant": "acme", "scopes": ["docs:read"]})
            ),
            "resource": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"kind": st.one_of(st.sampled_from(["document", "model"]), json_values)},
                    optional={"tenant": json_values},
                ),
            ),
            "action": st.one_of(st.sampled_from(["read", "invoke"]), json_values),
        },
        optional={"context": json_values},
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_plan_json_answers_or_names_the_field(body: Any) -> None:
    try:
        out = plan_json(ENGINE, body)
    except RequestError as e:  # LimitExceeded included
        assert e.field and e.message
        return
    except PlanRefused as e:
        assert e.message
        return
    assert out["planVersion"] == 1 and out["kind"] in ("ALWAYS_ALLOWED", "ALWAYS_DENIED",
                                                       "CONDITIONAL")  # fmt: skip


def test_huge_and_nested_principal_attributes_hit_the_limits() -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    body = {"principal": {"id": "a", "attr": {"d": deep}}, "resource": {"kind": "document"},
            "action": "read"}  # fmt: skip
    with pytest.raises(LimitExceeded) as e:
        plan_json(ENGINE, body)
    assert e.value.field.startswith("principal.attr")
    long = {"principal": {"id": "a"}, "resource": {"kind": "document", "tenant": "t" * 10_000},
            "action": "read"}  # fmt: skip
    with pytest.raises(LimitExceeded) as e:
        plan_json(ENGINE, long)
    assert e.value.field == "resource.tenant"


def test_a_cel_looking_attribute_is_only_a_value() -> None:
    """Principal attributes reach the plan as constants, never as code."""
    body = {"principal": {"id": "R.attr.owner || true", "tenant": "acme", "roles": ["user"],
                          "scopes": ["docs:read"]},
            "resource": {"kind": "document"}, "action": "read"}  # fmt: skip
    out = plan_json(ENGINE, body)
    owner = {"op": "eq", "args": [{"field": "resource.attr.owner"},
                                  {"value": "R.attr.owner || true"}]}  # fmt: skip
    assert out["kind"] == "CONDITIONAL" and owner in out["filter"]["args"][-1]["args"]
    assert '"R.attr.owner || true"' in out["cel"]


@settings(max_examples=300, deadline=None)
@given(filt=st.one_of(json_values, st.fixed_dictionaries({"op": st.sampled_from(
    sorted(t.ATOM_OPS | {"and", "or", "not", "true", "false"})), "args": json_values})))  # fmt: skip
def test_filters_from_the_wire_parse_or_fail_cleanly(filt: Any) -> None:
    try:
        f = t.from_json(filt)
    except ValueError:
        return
    assert t.from_json(t.to_json(f)) == f


def test_a_deeply_nested_filter_is_refused() -> None:
    f: Any = {"op": "true"}
    for _ in range(1000):
        f = {"op": "not", "args": [f]}
    with pytest.raises(ValueError):
        t.from_json(f)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(page=json_values, subject=json_values)
def test_search_resource_bad_pages_and_subjects(page: Any, subject: Any) -> None:
    body = {"subject": subject, "action": {"name": "read"}, "resource": {"type": "document"},
            "page": page}  # fmt: skip
    seen: list[Any] = []
    try:
        out = search_resource(ENGINE, body, lambda p, after, n: seen.append(after) or [])
    except RequestError as e:
        assert e.field
        return
    assert out["results"] == []
