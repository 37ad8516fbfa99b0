"""Whatever bytes arrive, the loader answers with a PolicySource or PolicyErrors, quickly."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_files
from pdp.model.policy import PolicySource

# PDP_FUZZ_EXAMPLES=5000 for a deeper local run.
FUZZ = settings(
    max_examples=int(os.environ.get("PDP_FUZZ_EXAMPLES", "300")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)

NAMES = st.sampled_from(
    ["p.yaml", "x_test.yaml", "data/d.json", "data/d.yaml", "a/b.yml", "README.md", "data/e.yml"]
)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "apiVersion", "kind", "metadata", "spec", "id", "resource", "actions", "rules", "effect",
        "condition", "all", "any", "none", "roles", "derivedRoles", "imports", "cases", "expect",
        "principal", "resources", "now", "scopes", "reason", "tenancy", "crossTenant", "variables",
    ]
)  # fmt: skip
VALUES = st.sampled_from(
    ["pdp/v1", "ResourcePolicy", "GuardPolicy", "Definitions", "TestSuite", "RouteMapping",
     "allow", "deny", "*", "read", "tenant", "global", "2026-01-01T00:00:00Z", "a == b"]
)  # fmt: skip
# Documents built from the format's own vocabulary reach much deeper than random text.
shaped = st.recursive(
    json_scalars | VALUES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=40,
)
YAMLISH = st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#,? \n\t.%@`\\0")), max_size=200)


def check(files: dict[str, bytes]) -> None:
    try:
        result = load_policy_files(files)
    except PolicyErrors as e:
        assert e.errors
        for err in e.errors:
            assert err.location is not None and err.location.line >= 1 and err.location.column >= 1
            assert err.message and not err.message.endswith(".")
        return
    assert isinstance(result, PolicySource)


@FUZZ
@given(st.dictionaries(NAMES, st.binary(max_size=300), max_size=3))
def test_random_bytes(files: dict[str, bytes]) -> None:
    check(files)


@FUZZ
@given(st.dictionaries(NAMES, YAMLISH.map(str.encode), max_size=3))
def test_random_yamlish_text(files: dict[str, bytes]) -> None:
    check(files)


@FUZZ
@given(st.dictionaries(NAMES, json_values.map(lambda v: json.dumps(v).encode()), max_size=3))
def test_random_json_documents(files: dict[str, bytes]) -> None:
    check(files)


@FUZZ
@given(NAMES, shaped)
def test_random_shaped_documents(name: str, doc: Any) -> None:
    check({name: json.dumps(doc).encode()})


@FUZZ
@given(shaped)
def test_random_spec_under_valid_envelope(spec: Any) -> None:
    for kind, name in (
        ("ResourcePolicy", "p.yaml"),
        ("GuardPolicy", "g.yaml"),
        ("Definitions", "d.yaml"),
        ("TestSuite", "t_test.yaml"),
    ):
        doc = {"apiVersion": "pdp/v1", "kind": kind, "metadata": {"id": "x"}, "spec": spec}
        check({name: json.dumps(doc).encode()})


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for text in (
        "[" * 50_000,
        "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 300)),
        '{"a":' * 5000,
    ):
        check({"p.yaml": text.encode(), "data/x.json": text.encode()})
